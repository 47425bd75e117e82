//! Who a request acts as: the API key (`apikey` header, as supabase-js sends it)
//! and the bearer token, mapped to a Postgres role and the claims RLS reads.
//!
//! Keys are what Supabase issues: an anon and a service-role key (JWTs signed
//! with the project secret, verified like any token) and the newer opaque
//! `sb_publishable_…` / `sb_secret_…` keys, mapped to `anon` / `service_role`.
//! A bearer token, when present, decides; without one the request is anon.

use serde_json::{json, Value};
use spine_core::auth::{Claims, JwtError};
use spine_functions::jwt::{KeySettings, Keys};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The role a request runs as, and the claims passed as `request.jwt.claims`.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub role: String,
    pub claims: Value,
}

impl Caller {
    pub fn anon() -> Caller {
        Caller {
            role: "anon".into(),
            claims: json!({"role": "anon"}),
        }
    }

    pub fn is_anon(&self) -> bool {
        self.role == "anon"
    }

    /// The user id (`sub`), for a signed-in user.
    pub fn user_id(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
}

/// Every key a token may be checked against: the project's JWT secret, the
/// gateway's own signing key, a JWKS (fetched again when a token names a key
/// it lacks) and the opaque `sb_…` keys. The same [`Keys`] serve
/// `/functions/v1`, so a key works on every path of the base URL.
pub struct ApiKeys {
    keys: Arc<Keys>,
}

impl ApiKeys {
    pub fn new(keys: Arc<Keys>) -> Self {
        ApiKeys { keys }
    }

    /// Only the project's JWT secret and these opaque keys: for tests.
    pub async fn with_secret(
        jwt_secret: &str,
        publishable: Option<String>,
        secret: Option<String>,
    ) -> anyhow::Result<Self> {
        let keys = Keys::load(KeySettings {
            secret: Some(jwt_secret.to_string()),
            api_keys: spine_core::auth::ApiKeys {
                publishable,
                secret,
            },
            ..Default::default()
        })
        .await?;
        Ok(ApiKeys::new(Arc::new(keys)))
    }

    /// The keys themselves, shared with the function host.
    pub fn keys(&self) -> Arc<Keys> {
        self.keys.clone()
    }

    /// The caller of a request from its `Authorization` header (`Bearer …`);
    /// without one, from its `apikey`; with neither, anon.
    pub async fn caller(
        &self,
        authorization: Option<&str>,
        apikey: Option<&str>,
    ) -> Result<Caller, JwtError> {
        let token = match authorization {
            Some(h) => Some(spine_core::auth::bearer_token(h)?),
            None => apikey.map(str::trim),
        };
        match token {
            None => Ok(Caller::anon()),
            // The verifier refuses any role but Supabase's three, so a valid
            // signature on `role: postgres` never makes a superuser.
            Some(t) => {
                let Claims { role, all, .. } = self.keys.verify(t).await?;
                Ok(Caller { role, claims: all })
            }
        }
    }

    /// The caller of an HTTP request: its `Authorization` and `apikey` headers.
    pub async fn from_headers(&self, headers: &axum::http::HeaderMap) -> Result<Caller, JwtError> {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        self.caller(get("authorization"), get("apikey")).await
    }
}

/// The anon and service-role keys, as Supabase shapes them: long-lived JWTs
/// with `role`, `iss` and `iat`/`exp` (ten years).
pub fn project_keys(jwt_secret: &str) -> (String, String) {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let exp = iat + 10 * 365 * 24 * 3600;
    let key = |role: &str| {
        spine_core::auth::sign(
            &json!({"iss": "spine", "role": role, "iat": iat, "exp": exp}),
            jwt_secret.as_bytes(),
        )
    };
    (key("anon"), key("service_role"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

    async fn keys() -> ApiKeys {
        ApiKeys::with_secret(
            SECRET,
            Some("sb_publishable_abc".into()),
            Some("sb_secret_xyz".into()),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn bearer_decides_else_apikey_else_anon() {
        let (anon, service) = project_keys(SECRET);
        let k = keys().await;
        assert_eq!(k.caller(None, None).await.unwrap(), Caller::anon());
        assert_eq!(k.caller(None, Some(&anon)).await.unwrap().role, "anon");
        let bearer = format!("Bearer {service}");
        assert_eq!(
            k.caller(Some(&bearer), Some(&anon)).await.unwrap().role,
            "service_role"
        );
        assert_eq!(
            k.caller(Some("Bearer sb_publishable_abc"), None)
                .await
                .unwrap()
                .role,
            "anon"
        );
        assert_eq!(
            k.caller(None, Some("sb_secret_xyz")).await.unwrap().role,
            "service_role"
        );
    }

    #[tokio::test]
    async fn forged_and_foreign_tokens_are_refused() {
        let k = keys().await;
        assert!(k
            .caller(Some("Bearer sb_secret_wrong"), None)
            .await
            .is_err());
        assert!(k.caller(Some("Basic abc"), None).await.is_err());
        let other = spine_core::auth::sign(
            &json!({"role": "service_role", "exp": 4_000_000_000u64}),
            b"another-secret-another-secret-another",
        );
        assert!(k
            .caller(Some(&format!("Bearer {other}")), None)
            .await
            .is_err());
        let superuser = spine_core::auth::sign(
            &json!({"role": "postgres", "exp": 4_000_000_000u64}),
            SECRET.as_bytes(),
        );
        assert!(k
            .caller(Some(&format!("Bearer {superuser}")), None)
            .await
            .is_err());
        // alg none: header {"alg":"none"}, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.";
        assert!(k
            .caller(Some(&format!("Bearer {none}")), None)
            .await
            .is_err());
    }
}
