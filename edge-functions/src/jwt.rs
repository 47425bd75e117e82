//! Supabase-style bearer tokens: HS256 JWTs signed with the project's JWT secret,
//! whose `role` claim is `anon`, `authenticated` or `service_role` and whose `sub`
//! is the user. Only HS256 is accepted (no `none`, no algorithm confusion).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The roles a token may carry: PostgREST's, as Supabase issues them.
pub const ROLES: [&str; 3] = ["anon", "authenticated", "service_role"];

/// Who a request acts as, from a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub role: String,
    pub sub: Option<String>,
    /// Every claim, passed on as `request.jwt.claims` so RLS sees what PostgREST
    /// would give it.
    pub all: Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("Missing authorization header")]
    Missing,
    #[error("Authorization header must be \"Bearer <JWT>\"")]
    NotBearer,
    #[error("Invalid JWT: {0}")]
    Invalid(&'static str),
    #[error("Invalid JWT: bad signature")]
    BadSignature,
    #[error("JWT expired")]
    Expired,
}

/// Verifies `Authorization: Bearer <token>` against `secret` at time `now` (Unix s).
pub fn verify_header(header: Option<&str>, secret: &[u8], now: u64) -> Result<Claims, JwtError> {
    let header = header.ok_or(JwtError::Missing)?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or(JwtError::NotBearer)?;
    verify(token.trim(), secret, now)
}

pub fn verify(token: &str, secret: &[u8], now: u64) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Invalid("not three dot-separated parts"));
    };
    let header: Value =
        decode_json(head).ok_or(JwtError::Invalid("header is not base64url JSON"))?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::Invalid("alg must be HS256"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| JwtError::Invalid("signature is not base64url"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(head.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| JwtError::BadSignature)?;
    let claims: Value =
        decode_json(body).ok_or(JwtError::Invalid("payload is not base64url JSON"))?;
    if !claims.is_object() {
        return Err(JwtError::Invalid("payload is not an object"));
    }
    match claims.get("exp") {
        None => {}
        Some(exp) => {
            let exp = exp
                .as_f64()
                .ok_or(JwtError::Invalid("exp is not a number"))?;
            if exp <= now as f64 {
                return Err(JwtError::Expired);
            }
        }
    }
    let role = claims
        .get("role")
        .and_then(Value::as_str)
        .ok_or(JwtError::Invalid("no role claim"))?;
    if !ROLES.contains(&role) {
        return Err(JwtError::Invalid(
            "role must be anon, authenticated or service_role",
        ));
    }
    let sub = match claims.get("sub") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(JwtError::Invalid("sub is not a string")),
    };
    if role == "authenticated" && sub.is_none() {
        return Err(JwtError::Invalid("an authenticated token needs a sub"));
    }
    Ok(Claims {
        role: role.to_string(),
        sub,
        all: claims,
    })
}

fn decode_json(part: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// Signs `claims` with HS256: for tests, benchmarks and `spine-functions token`.
pub fn sign(claims: &Value, secret: &[u8]) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(head.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[u8] = b"super-secret-jwt-token-with-at-least-32-characters-long";

    #[test]
    fn accepts_a_valid_token() {
        let t = sign(
            &json!({"role": "authenticated", "sub": "u1", "exp": 2000}),
            KEY,
        );
        let c = verify_header(Some(&format!("Bearer {t}")), KEY, 1000).unwrap();
        assert_eq!(
            (c.role.as_str(), c.sub.as_deref()),
            ("authenticated", Some("u1"))
        );
        let anon = sign(&json!({"role": "anon"}), KEY);
        assert_eq!(verify(&anon, KEY, 0).unwrap().role, "anon");
    }

    #[test]
    fn rejects_bad_tokens() {
        let good = sign(&json!({"role": "anon", "exp": 2000}), KEY);
        assert_eq!(verify_header(None, KEY, 0), Err(JwtError::Missing));
        assert_eq!(verify_header(Some(&good), KEY, 0), Err(JwtError::NotBearer));
        assert_eq!(verify(&good, b"other key", 0), Err(JwtError::BadSignature));
        assert_eq!(verify(&good, KEY, 2000), Err(JwtError::Expired));
        let mut tampered = good.clone();
        tampered.insert(good.find('.').unwrap() + 2, 'x');
        assert!(verify(&tampered, KEY, 0).is_err());
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"role":"service_role"}"#)
        );
        assert_eq!(
            verify(&none, KEY, 0),
            Err(JwtError::Invalid("alg must be HS256"))
        );
        let admin = sign(&json!({"role": "postgres"}), KEY);
        assert!(matches!(verify(&admin, KEY, 0), Err(JwtError::Invalid(_))));
        let nosub = sign(&json!({"role": "authenticated"}), KEY);
        assert!(matches!(verify(&nosub, KEY, 0), Err(JwtError::Invalid(_))));
        assert!(matches!(verify("a.b", KEY, 0), Err(JwtError::Invalid(_))));
    }
}
