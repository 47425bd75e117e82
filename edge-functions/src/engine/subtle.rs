//! `crypto.subtle` for functions, natively: SHA digests, HMAC sign and verify
//! (keys imported `raw`), and a constant-time compare — what verifying an inbound
//! webhook takes (Twilio's `X-Twilio-Signature` is HMAC-SHA1, Stripe's and
//! Standard Webhooks' HMAC-SHA256). Written in Rust on the RustCrypto crates, not
//! in JavaScript: a script HMAC is slower by orders of magnitude and its compare
//! would not be constant-time.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;

/// The hashes WebCrypto names (`SHA-1`, `SHA-256`, `SHA-384`, `SHA-512`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn parse(name: &str) -> Result<Hash, String> {
        match name.to_ascii_uppercase().as_str() {
            "SHA-1" => Ok(Hash::Sha1),
            "SHA-256" => Ok(Hash::Sha256),
            "SHA-384" => Ok(Hash::Sha384),
            "SHA-512" => Ok(Hash::Sha512),
            _ => Err(format!(
                "hash {name} is not supported (SHA-1, SHA-256, SHA-384, SHA-512)"
            )),
        }
    }
}

pub fn digest(hash: Hash, data: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha1 => Sha1::digest(data).to_vec(),
        Hash::Sha256 => Sha256::digest(data).to_vec(),
        Hash::Sha384 => Sha384::digest(data).to_vec(),
        Hash::Sha512 => Sha512::digest(data).to_vec(),
    }
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> M {
    let mut m =
        <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m
}

pub fn hmac_sign(hash: Hash, key: &[u8], data: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha1 => mac::<Hmac<Sha1>>(key, data)
            .finalize()
            .into_bytes()
            .to_vec(),
        Hash::Sha256 => mac::<Hmac<Sha256>>(key, data)
            .finalize()
            .into_bytes()
            .to_vec(),
        Hash::Sha384 => mac::<Hmac<Sha384>>(key, data)
            .finalize()
            .into_bytes()
            .to_vec(),
        Hash::Sha512 => mac::<Hmac<Sha512>>(key, data)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}

/// Whether `signature` is the HMAC of `data`, compared in constant time.
pub fn hmac_verify(hash: Hash, key: &[u8], signature: &[u8], data: &[u8]) -> bool {
    match hash {
        Hash::Sha1 => mac::<Hmac<Sha1>>(key, data).verify_slice(signature).is_ok(),
        Hash::Sha256 => mac::<Hmac<Sha256>>(key, data)
            .verify_slice(signature)
            .is_ok(),
        Hash::Sha384 => mac::<Hmac<Sha384>>(key, data)
            .verify_slice(signature)
            .is_ok(),
        Hash::Sha512 => mac::<Hmac<Sha512>>(key, data)
            .verify_slice(signature)
            .is_ok(),
    }
}

/// Deno's `crypto.subtle.timingSafeEqual`: equal length and bytes, in time that
/// does not depend on where they differ.
pub fn timing_safe_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// FIPS 180 "abc" vectors.
    #[test]
    fn digests_match_the_standard_vectors() {
        assert_eq!(
            hex(&digest(Hash::Sha1, b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&digest(Hash::Sha256, b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// RFC 4231 test case 2 (HMAC-SHA256), and RFC 2202 test case 2 (HMAC-SHA1).
    #[test]
    fn hmacs_match_the_rfc_vectors() {
        let data = b"what do ya want for nothing?";
        let s256 = hmac_sign(Hash::Sha256, b"Jefe", data);
        assert_eq!(
            hex(&s256),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sign(Hash::Sha1, b"Jefe", data)),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert!(hmac_verify(Hash::Sha256, b"Jefe", &s256, data));
        assert!(!hmac_verify(Hash::Sha256, b"Jefe", &s256[..31], data));
        assert!(!hmac_verify(Hash::Sha256, b"jefe", &s256, data));
        assert!(Hash::parse("md5").is_err());
        assert_eq!(Hash::parse("sha-256"), Ok(Hash::Sha256));
    }

    #[test]
    fn compares_by_length_and_content() {
        assert!(timing_safe_equal(b"abc", b"abc"));
        assert!(!timing_safe_equal(b"abc", b"abd"));
        assert!(!timing_safe_equal(b"abc", b"abcd"));
    }
}
