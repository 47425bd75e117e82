//! Passwords: bcrypt as GoTrue writes it (`$2a$`, cost 10), hashed and checked
//! on the blocking pool so a sign-in storm does not stall the async workers.
//!
//! A sign-in for an unknown email still runs one bcrypt check, against a dummy
//! hash of the same cost, so the answer takes as long as a wrong password and
//! does not tell which emails exist. Passwords are never logged.

use super::error::AuthError;
use std::sync::LazyLock;

/// GoTrue's cost (Go `bcrypt.DefaultCost`).
pub const COST: u32 = 10;
/// GoTrue's default minimum length.
pub const MIN_LENGTH: usize = 6;
/// bcrypt reads at most 72 bytes; GoTrue refuses longer passwords.
pub const MAX_LENGTH: usize = 72;

/// A hash no password matches in practice (random, discarded input), of cost
/// [`COST`]: what unknown emails are checked against.
static DUMMY: LazyLock<String> = LazyLock::new(|| {
    let mut secret = [0u8; 32];
    let _ = getrandom::getrandom(&mut secret);
    bcrypt::hash_with_result(secret, COST)
        .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        .unwrap_or_default()
});

/// GoTrue's checks: at most 72 bytes (400 `validation_failed`), at least six
/// characters (422 `weak_password`).
pub fn check_strength(password: &str) -> Result<(), AuthError> {
    if password.len() > MAX_LENGTH {
        return Err(AuthError::validation(format!(
            "Password cannot be longer than {MAX_LENGTH} characters"
        )));
    }
    if password.chars().count() < MIN_LENGTH {
        return Err(AuthError::weak_password(format!(
            "Password should be at least {MIN_LENGTH} characters."
        )));
    }
    Ok(())
}

/// The `$2a$` bcrypt hash of `password`.
pub async fn hash(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || {
        bcrypt::hash_with_result(password.as_bytes(), COST)
            .map(|h| h.format_for_version(bcrypt::Version::TwoA))
    })
    .await
    .map_err(|_| AuthError::internal())?
    .map_err(|e| {
        tracing::error!(error = %e, "auth: bcrypt failed");
        AuthError::internal()
    })
}

/// Whether `password` matches `stored` (`$2a$`/`$2b$`/`$2y$`). With no usable
/// hash (unknown user, no password set) it checks against [`DUMMY`] and
/// answers false, taking the same time.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, AuthError> {
    tokio::task::spawn_blocking(move || {
        let real = stored.filter(|h| h.starts_with("$2"));
        let hash = real.as_deref().unwrap_or(DUMMY.as_str());
        let ok = bcrypt::verify(password.as_bytes(), hash).unwrap_or(false);
        ok && real.is_some()
    })
    .await
    .map_err(|_| AuthError::internal())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_as_gotrue_and_reads_2b() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$2a$10$"), "{h}");
        assert!(verify("correct horse".into(), Some(h.clone()))
            .await
            .unwrap());
        assert!(!verify("wrong".into(), Some(h.clone())).await.unwrap());
        let b = h.replacen("$2a$", "$2b$", 1);
        assert!(verify("correct horse".into(), Some(b)).await.unwrap());
        assert!(!verify("correct horse".into(), None).await.unwrap());
        assert!(!verify("".into(), Some(String::new())).await.unwrap());
    }

    #[test]
    fn strength() {
        assert_eq!(check_strength("12345").unwrap_err().code, "weak_password");
        assert!(check_strength("123456").is_ok());
        assert_eq!(
            check_strength(&"x".repeat(73)).unwrap_err().code,
            "validation_failed"
        );
    }
}
