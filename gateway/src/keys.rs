//! Who a request acts as: the API key (`apikey` header, as supabase-js sends it)
//! and the bearer token, mapped to a Postgres role and the claims RLS reads.
//!
//! Keys are what Supabase issues: an anon and a service-role key (JWTs signed
//! with the project secret, verified like any token) and the newer opaque
//! `sb_publishable_…` / `sb_secret_…` keys, mapped to `anon` / `service_role`.
//! A bearer token, when present, decides; without one the request is anon.

use serde_json::{json, Value};
use spine_core::auth::{Claims, JwtError, Verifier, ROLES};
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

pub struct ApiKeys {
    verifier: Verifier,
    publishable: Option<String>,
    secret: Option<String>,
}

impl ApiKeys {
    pub fn new(jwt_secret: &str, publishable: Option<String>, secret: Option<String>) -> Self {
        ApiKeys {
            verifier: Verifier::new(Some(jwt_secret.as_bytes())),
            publishable: publishable.filter(|k| !k.is_empty()),
            secret: secret.filter(|k| !k.is_empty()),
        }
    }

    /// The caller of a request from its `Authorization` header (`Bearer …`);
    /// without one, from its `apikey`; with neither, anon.
    pub fn caller(
        &self,
        authorization: Option<&str>,
        apikey: Option<&str>,
    ) -> Result<Caller, JwtError> {
        let token = match authorization {
            Some(h) => Some(
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
                    .ok_or(JwtError::NotBearer)?
                    .trim(),
            ),
            None => apikey.map(str::trim),
        };
        match token {
            None => Ok(Caller::anon()),
            Some(t) => self.token(t),
        }
    }

    /// The caller of an HTTP request: its `Authorization` and `apikey` headers.
    pub fn from_headers(&self, headers: &axum::http::HeaderMap) -> Result<Caller, JwtError> {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        self.caller(get("authorization"), get("apikey"))
    }

    /// A token: an opaque key, or a JWT whose role must be one of Supabase's.
    fn token(&self, token: &str) -> Result<Caller, JwtError> {
        if token.starts_with("sb_") {
            let same = |k: &Option<String>| {
                k.as_deref()
                    .is_some_and(|k| constant_time_eq(k.as_bytes(), token.as_bytes()))
            };
            let role = if same(&self.publishable) {
                "anon"
            } else if same(&self.secret) {
                "service_role"
            } else {
                return Err(JwtError::Invalid("unknown API key".into()));
            };
            return Ok(Caller {
                role: role.into(),
                claims: json!({"role": role}),
            });
        }
        let Claims { role, all, .. } = self.verifier.verify(token)?;
        // A valid signature on `role: postgres` must not make a superuser.
        if !ROLES.contains(&role.as_str()) {
            return Err(JwtError::Invalid(format!(
                "role {role:?} is not anon, authenticated or service_role"
            )));
        }
        Ok(Caller { role, claims: all })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    fn keys() -> ApiKeys {
        ApiKeys::new(
            SECRET,
            Some("sb_publishable_abc".into()),
            Some("sb_secret_xyz".into()),
        )
    }

    #[test]
    fn bearer_decides_else_apikey_else_anon() {
        let (anon, service) = project_keys(SECRET);
        let k = keys();
        assert_eq!(k.caller(None, None).unwrap(), Caller::anon());
        assert_eq!(k.caller(None, Some(&anon)).unwrap().role, "anon");
        let bearer = format!("Bearer {service}");
        assert_eq!(
            k.caller(Some(&bearer), Some(&anon)).unwrap().role,
            "service_role"
        );
        assert_eq!(
            k.caller(Some("Bearer sb_publishable_abc"), None)
                .unwrap()
                .role,
            "anon"
        );
        assert_eq!(
            k.caller(None, Some("sb_secret_xyz")).unwrap().role,
            "service_role"
        );
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let k = keys();
        assert!(k.caller(Some("Bearer sb_secret_wrong"), None).is_err());
        assert!(k.caller(Some("Basic abc"), None).is_err());
        let other = spine_core::auth::sign(
            &json!({"role": "service_role", "exp": 4_000_000_000u64}),
            b"another-secret-another-secret-another",
        );
        assert!(k.caller(Some(&format!("Bearer {other}")), None).is_err());
        let superuser = spine_core::auth::sign(
            &json!({"role": "postgres", "exp": 4_000_000_000u64}),
            SECRET.as_bytes(),
        );
        assert!(k
            .caller(Some(&format!("Bearer {superuser}")), None)
            .is_err());
        // alg none: header {"alg":"none"}, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.";
        assert!(k.caller(Some(&format!("Bearer {none}")), None).is_err());
    }
}
