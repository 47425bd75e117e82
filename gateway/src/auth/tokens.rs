//! Access and refresh tokens.
//!
//! Access tokens are JWTs (HS256 with the project secret, or ES256 with the
//! gateway's signing key) with GoTrue's claims (`GoTrueClaims`): `sub, aud,
//! exp, iat, iss, email, phone, app_metadata, user_metadata, role, aal, amr,
//! session_id, is_anonymous`. Refresh tokens are 32 random bytes, base64url;
//! only their SHA-256 is stored, so a copy of the table cannot be replayed.

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

/// What every access token says it was issued by.
pub const ISSUER: &str = "spine";

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A new refresh token: what the client gets, and the hash that is stored.
pub fn new_refresh_token() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    Ok((token, hash))
}

/// The stored form of a refresh token: SHA-256, hex. Tokens are 256-bit random
/// values, so a fast hash is enough (nothing to brute-force).
pub fn hash_refresh_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What an access token is made from.
pub struct AccessClaims<'a> {
    pub user: &'a Value,
    pub session_id: &'a str,
    /// When the session signed in (the `amr` timestamp), epoch seconds.
    pub signed_in_at: u64,
    pub now: u64,
    pub exp_secs: u64,
}

pub fn access_claims(c: &AccessClaims<'_>) -> Value {
    let u = c.user;
    json!({
        "iss": ISSUER,
        "sub": u["id"],
        "aud": u["aud"],
        "exp": c.now + c.exp_secs,
        "iat": c.now,
        "email": u["email"],
        "phone": u["phone"],
        "app_metadata": u["app_metadata"],
        "user_metadata": u["user_metadata"],
        "role": u["role"],
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": c.signed_in_at}],
        "session_id": c.session_id,
        "is_anonymous": u["is_anonymous"],
    })
}

/// The body of a successful sign-up, sign-in or refresh, as auth-js reads it.
pub fn session_body(
    signer: &spine_core::signing::Signer,
    claims: &AccessClaims<'_>,
    refresh_token: &str,
) -> Value {
    let token = signer.sign(&access_claims(claims));
    json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": claims.exp_secs,
        "expires_at": claims.now + claims.exp_secs,
        "refresh_token": refresh_token,
        "user": claims.user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_random_and_stored_hashed() {
        let (a, ha) = new_refresh_token().unwrap();
        let (b, _) = new_refresh_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(ha.len(), 64);
        assert_ne!(ha, a);
        assert_eq!(hash_refresh_token(&a), ha);
    }

    #[test]
    fn claims_are_gotrues() {
        let user = json!({"id": "u1", "aud": "authenticated", "role": "authenticated",
            "email": "a@b.c", "phone": "", "app_metadata": {"provider": "email"},
            "user_metadata": {"n": 1}, "is_anonymous": false});
        let c = access_claims(&AccessClaims {
            user: &user,
            session_id: "s1",
            signed_in_at: 5,
            now: 100,
            exp_secs: 3600,
        });
        for key in [
            "sub",
            "aud",
            "exp",
            "iat",
            "iss",
            "email",
            "phone",
            "app_metadata",
            "user_metadata",
            "role",
            "aal",
            "amr",
            "session_id",
            "is_anonymous",
        ] {
            assert!(c.get(key).is_some(), "{key}");
        }
        assert_eq!(c["exp"], 3700);
        assert_eq!(c["amr"][0]["method"], "password");
    }
}
