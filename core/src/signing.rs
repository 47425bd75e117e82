//! The key access tokens are signed with, as GoTrue offers it: the project's
//! HS256 secret (Supabase's legacy JWT secret), or an ES256 key whose public
//! half is published as a JWKS at `/auth/v1/.well-known/jwks.json` (Supabase's
//! JWT signing keys), so clients (`auth.getClaims()`) and other services verify
//! tokens without sharing a secret.

use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// What [`Signer::es256_from_pem`] refuses.
#[derive(Debug, thiserror::Error)]
#[error("the JWT signing key: {0}")]
pub struct SigningKeyError(String);

pub enum Signer {
    Hs256(EncodingKey),
    Es256 {
        key: EncodingKey,
        /// The JWKS entry: the public key, `kid`, `alg`, `use`.
        public: Box<Jwk>,
    },
}

/// Names the algorithm and key id, never the key.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Hs256(_) => f.write_str("Signer::Hs256"),
            Signer::Es256 { public, .. } => {
                write!(f, "Signer::Es256({:?})", public.common.key_id)
            }
        }
    }
}

impl Signer {
    pub fn hs256(secret: &[u8]) -> Signer {
        Signer::Hs256(EncodingKey::from_secret(secret))
    }

    /// An ES256 signer from a PKCS#8 PEM P-256 private key (what
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes).
    /// Its `kid` is the key's RFC 7638 thumbprint, so the same key always has
    /// the same id and a new key a new one.
    pub fn es256_from_pem(pem: &[u8]) -> Result<Signer, SigningKeyError> {
        let key = EncodingKey::from_ec_pem(pem)
            .map_err(|e| SigningKeyError(format!("not a PKCS#8 PEM EC private key ({e})")))?;
        let mut public = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .map_err(|e| SigningKeyError(format!("not a P-256 key ({e})")))?;
        public.common.key_id = Some(public.thumbprint(ThumbprintHash::SHA256));
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        public.common.key_algorithm = Some(KeyAlgorithm::ES256);
        // A key of another curve yields a JWK ES256 cannot verify: refuse it
        // now rather than issue tokens nobody accepts.
        let probe = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &json!({}), &key)
            .map_err(|e| SigningKeyError(format!("cannot sign ES256 ({e})")))?;
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&public)
            .map_err(|e| SigningKeyError(format!("its public key is unusable ({e})")))?;
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.required_spec_claims = Default::default();
        jsonwebtoken::decode::<Value>(&probe, &decoding, &validation)
            .map_err(|e| SigningKeyError(format!("not a P-256 key ({e})")))?;
        Ok(Signer::Es256 {
            key,
            public: Box::new(public),
        })
    }

    /// A signed token with these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let (header, key) = match self {
            Signer::Hs256(key) => (Header::new(Algorithm::HS256), key),
            Signer::Es256 { key, public } => (
                Header {
                    kid: public.common.key_id.clone(),
                    ..Header::new(Algorithm::ES256)
                },
                key,
            ),
        };
        jsonwebtoken::encode(&header, claims, key).expect("a loaded key signs any JSON object")
    }

    /// The JWKS to publish: the public key, or no key for a shared secret
    /// (GoTrue publishes none then either).
    pub fn jwks(&self) -> Value {
        match self {
            Signer::Hs256(_) => json!({ "keys": [] }),
            Signer::Es256 { public, .. } => json!({ "keys": [public] }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;

    const EC_PEM: &[u8] = include_bytes!("../tests/data/jwt/es256-test-only.pem");
    const RSA_PEM: &[u8] = include_bytes!("../tests/data/jwt/rs256-test-only.pem");

    fn claims() -> Value {
        json!({"role": "authenticated", "sub": "u1",
               "exp": jsonwebtoken::get_current_timestamp() + 600})
    }

    #[test]
    fn es256_tokens_verify_with_the_published_jwks_alone() {
        let signer = Signer::es256_from_pem(EC_PEM).unwrap();
        let token = signer.sign(&claims());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        let jwks = signer.jwks();
        assert_eq!(header.kid.as_deref(), jwks["keys"][0]["kid"].as_str());
        assert_eq!(jwks["keys"][0]["use"], "sig");
        assert_eq!(jwks["keys"][0]["crv"], "P-256");
        assert!(jwks["keys"][0].get("d").is_none(), "no private part");
        let verifier = Verifier::new(None).with_jwks(&jwks.to_string()).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().sub.as_deref(), Some("u1"));
        // Same key, same id.
        let again = Signer::es256_from_pem(EC_PEM).unwrap();
        assert_eq!(again.jwks(), jwks);
        // Without the JWKS, only the secret: refused.
        assert!(Verifier::new(Some(b"x".repeat(32).as_slice()))
            .verify(&token)
            .is_err());
    }

    #[test]
    fn hs256_publishes_no_key() {
        let signer = Signer::hs256(b"a-secret-of-at-least-thirty-two-bytes!!");
        assert_eq!(signer.jwks(), json!({"keys": []}));
        let v = Verifier::new(Some(b"a-secret-of-at-least-thirty-two-bytes!!"));
        assert_eq!(
            v.verify(&signer.sign(&claims())).unwrap().role,
            "authenticated"
        );
    }

    #[test]
    fn other_keys_are_refused_with_a_reason() {
        let e = Signer::es256_from_pem(RSA_PEM).unwrap_err().to_string();
        assert!(e.contains("signing key"), "{e}");
        assert!(Signer::es256_from_pem(b"not a pem").is_err());
    }
}
