//! Authenticated encryption of secrets: XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`), a fresh random 192-bit nonce per encryption (random nonces
//! are safe at this size), and the secret's id and key version as associated data,
//! so a ciphertext copied onto another row, or relabelled with another key version,
//! fails to decrypt instead of yielding another secret.

use super::keys::RootKey;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

pub const NONCE_LEN: usize = 24;

/// A sealed secret: what `vault.secrets` stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_version: i32,
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte Poly1305 tag.
    pub ciphertext: Vec<u8>,
}

fn associated_data(id: &[u8; 16], key_version: i32) -> [u8; 34] {
    let mut aad = [0u8; 34];
    aad[..14].copy_from_slice(b"spine.vault.v1");
    aad[14..30].copy_from_slice(id);
    aad[30..].copy_from_slice(&key_version.to_be_bytes());
    aad
}

/// Encrypts `plaintext` for the secret `id` under `key` (version `key_version`).
pub fn seal(
    key: &RootKey,
    key_version: i32,
    id: &[u8; 16],
    plaintext: &[u8],
) -> Result<Sealed, String> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
    let aad = associated_data(id, key_version);
    let ciphertext = XChaCha20Poly1305::new((&key.0).into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| "encryption failed".to_string())?;
    Ok(Sealed {
        key_version,
        nonce,
        ciphertext,
    })
}

/// Decrypts a sealed secret; `None` when the key is wrong or anything (ciphertext,
/// nonce, id, key version) was altered — never garbage.
pub fn open(key: &RootKey, id: &[u8; 16], sealed: &Sealed) -> Option<Vec<u8>> {
    let aad = associated_data(id, sealed.key_version);
    XChaCha20Poly1305::new((&key.0).into())
        .decrypt(
            XNonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 16] = [7; 16];

    #[test]
    fn round_trip_and_every_alteration_fails() {
        let key = RootKey([1; 32]);
        let sealed = seal(&key, 1, &ID, b"sk_live_123").unwrap();
        assert!(!sealed.ciphertext.windows(11).any(|w| w == b"sk_live_123"));
        assert_eq!(
            open(&key, &ID, &sealed).as_deref(),
            Some(&b"sk_live_123"[..])
        );

        assert_eq!(open(&RootKey([2; 32]), &ID, &sealed), None, "wrong key");
        assert_eq!(open(&key, &[8; 16], &sealed), None, "another row's id");
        let mut other = sealed.clone();
        other.key_version = 2;
        assert_eq!(open(&key, &ID, &other), None, "relabelled key version");
        let mut other = sealed.clone();
        other.ciphertext[0] ^= 1;
        assert_eq!(open(&key, &ID, &other), None, "flipped bit");
        let mut other = sealed.clone();
        other.nonce[0] ^= 1;
        assert_eq!(open(&key, &ID, &other), None, "other nonce");
    }

    #[test]
    fn nonces_differ() {
        let key = RootKey([1; 32]);
        let a = seal(&key, 1, &ID, b"x").unwrap();
        let b = seal(&key, 1, &ID, b"x").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }
}
