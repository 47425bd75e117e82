//! Bearer tokens as Supabase issues them, verified the same way by every HTTP
//! surface: HS256 with the project's JWT secret (Supabase's legacy key), and
//! ES256/RS256 with the public keys of a JWKS (Supabase's signing keys, served at
//! `/auth/v1/.well-known/jwks.json`). Signatures, `exp` and `nbf` are checked by
//! `jsonwebtoken`; this module decides which key a token may use, refuses
//! algorithm confusion (an HMAC token is never checked against a public key, `none`
//! is never accepted), checks `iat` (which `jsonwebtoken` does not) and reads the
//! claims RLS needs.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;
use std::collections::HashSet;

/// The roles a token may carry: PostgREST's, as Supabase issues them.
pub const ROLES: [&str; 3] = ["anon", "authenticated", "service_role"];

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds: PostgREST's.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

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
    Invalid(String),
    #[error("Invalid JWT: bad signature")]
    BadSignature,
    /// The token names a key (`kid`) the JWKS does not have: the keys may have
    /// been rotated since they were loaded.
    #[error("Invalid JWT: no signing key with kid {0:?}")]
    UnknownKey(String),
    #[error("JWT expired")]
    Expired,
    #[error("JWT not valid yet (nbf or iat in the future)")]
    NotYetValid,
}

/// A JWKS entry made usable: its id, the one algorithm it verifies, the key.
struct PublicKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys a surface accepts tokens from.
pub struct Verifier {
    secret: Option<DecodingKey>,
    public: Vec<PublicKey>,
    api_keys: ApiKeys,
    leeway: u64,
}

/// Supabase's opaque API keys: `sb_publishable_…` acts as anon, `sb_secret_…`
/// as service_role. They are not JWTs; only an exact match counts.
#[derive(Default, Clone)]
pub struct ApiKeys {
    pub publishable: Option<String>,
    pub secret: Option<String>,
}

impl ApiKeys {
    /// The role an opaque key stands for, if it is one of ours.
    fn role_of(&self, token: &str) -> Option<&'static str> {
        let same = |k: &Option<String>| {
            k.as_deref()
                .is_some_and(|k| constant_time_eq(k.as_bytes(), token.as_bytes()))
        };
        if same(&self.publishable) {
            Some("anon")
        } else if same(&self.secret) {
            Some("service_role")
        } else {
            None
        }
    }
}

/// Compares without stopping at the first difference, so the time taken does
/// not tell how much of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The prefix of Supabase's opaque API keys.
pub const OPAQUE_KEY_PREFIX: &str = "sb_";

/// Names the keys, never their material.
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secret", &self.secret.as_ref().map(|_| "(set)"))
            .field(
                "public",
                &self
                    .public
                    .iter()
                    .map(|k| (&k.kid, k.alg))
                    .collect::<Vec<_>>(),
            )
            .field(
                "api_keys",
                &[&self.api_keys.publishable, &self.api_keys.secret].map(|k| k.is_some()),
            )
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Verifier {
    /// Accepts HS256 tokens signed with `secret` (when given); add public keys
    /// with [`Verifier::with_jwks`].
    pub fn new(secret: Option<&[u8]>) -> Self {
        Verifier {
            secret: secret.map(DecodingKey::from_secret),
            public: Vec::new(),
            api_keys: ApiKeys::default(),
            leeway: DEFAULT_LEEWAY_SECS,
        }
    }

    /// Also accepts these opaque `sb_…` keys (empty ones are ignored).
    pub fn with_api_keys(mut self, keys: ApiKeys) -> Self {
        self.api_keys = ApiKeys {
            publishable: keys.publishable.filter(|k| !k.is_empty()),
            secret: keys.secret.filter(|k| !k.is_empty()),
        };
        self
    }

    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    /// Adds the asymmetric keys of a JWKS document. Symmetric (`oct`) entries are
    /// refused: a shared secret is configured as the secret, not published.
    pub fn with_jwks(mut self, jwks: &str) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_str(jwks).map_err(|e| format!("the JWKS is not valid: {e}"))?;
        for jwk in &set.keys {
            let alg = algorithm_of(jwk)?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                format!(
                    "JWKS key {:?} cannot be used: {e}",
                    jwk.common.key_id.as_deref().unwrap_or("(no kid)")
                )
            })?;
            self.public.push(PublicKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        Ok(self)
    }

    /// Whether any key at all is configured.
    pub fn has_keys(&self) -> bool {
        self.secret.is_some() || !self.public.is_empty()
    }

    /// Verifies `Authorization: Bearer <token>`.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Claims, JwtError> {
        self.verify(bearer_token(header.ok_or(JwtError::Missing)?)?)
    }

    /// A JWT, or one of the opaque API keys given to [`Verifier::with_api_keys`].
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        if token.starts_with(OPAQUE_KEY_PREFIX) {
            let role = self
                .api_keys
                .role_of(token)
                .ok_or_else(|| JwtError::Invalid("unknown API key".into()))?;
            return Ok(Claims {
                role: role.to_string(),
                sub: None,
                all: serde_json::json!({ "role": role }),
            });
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| JwtError::Invalid(format!("malformed header: {e}")))?;
        let mut last = JwtError::Invalid(format!("alg {:?} is not accepted", header.alg));
        for key in self.keys_for(&header)? {
            match self.decode(token, header.alg, key) {
                Err(JwtError::BadSignature) => last = JwtError::BadSignature,
                outcome => return outcome.and_then(|all| self.claims(all)),
            }
        }
        Err(last)
    }

    /// The keys that may have signed a token with this header, most specific first.
    fn keys_for(&self, header: &Header) -> Result<Vec<&DecodingKey>, JwtError> {
        if header.alg == Algorithm::HS256 {
            return Ok(self.secret.iter().collect());
        }
        let same_alg = self.public.iter().filter(|k| k.alg == header.alg);
        match &header.kid {
            Some(kid) => {
                let key = same_alg
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .map(|k| &k.key)
                    .next();
                key.map(|k| vec![k])
                    .ok_or_else(|| JwtError::UnknownKey(kid.clone()))
            }
            None => Ok(same_alg.map(|k| &k.key).collect()),
        }
    }

    fn decode(&self, token: &str, alg: Algorithm, key: &DecodingKey) -> Result<Value, JwtError> {
        let mut validation = Validation::new(alg);
        validation.required_spec_claims = HashSet::new();
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        // Supabase puts `aud: "authenticated"` in user tokens; PostgREST checks it
        // only when configured to, and so do we (not yet).
        validation.validate_aud = false;
        match jsonwebtoken::decode::<Value>(token, key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtError::BadSignature,
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => JwtError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                _ => JwtError::Invalid(e.to_string()),
            }),
        }
    }

    fn claims(&self, mut all: Value) -> Result<Claims, JwtError> {
        let invalid = |m: &str| JwtError::Invalid(m.to_string());
        if !all.is_object() {
            return Err(invalid("payload is not an object"));
        }
        match all.get("iat") {
            None => {}
            Some(iat) => {
                let iat = iat.as_f64().ok_or_else(|| invalid("iat is not a number"))?;
                if iat > (now_secs() + self.leeway) as f64 {
                    return Err(JwtError::NotYetValid);
                }
            }
        }
        // As PostgREST: a verified token without a role acts as anon, and the
        // claims passed on say so.
        if all.get("role").is_none_or(Value::is_null) {
            all["role"] = Value::String("anon".into());
        }
        let role = all
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("role is not a string"))?;
        if !ROLES.contains(&role) {
            return Err(invalid("role must be anon, authenticated or service_role"));
        }
        let sub = match all.get("sub") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("sub is not a string")),
        };
        if role == "authenticated" && sub.is_none() {
            return Err(invalid("an authenticated token needs a sub"));
        }
        let role = role.to_string();
        Ok(Claims { role, sub, all })
    }
}

/// The one algorithm a JWKS key verifies: its `alg`, or what its type implies.
fn algorithm_of(jwk: &Jwk) -> Result<Algorithm, String> {
    let kid = jwk.common.key_id.as_deref().unwrap_or("(no kid)");
    let implied = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Algorithm::ES384,
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        AlgorithmParameters::OctetKey(_) => {
            return Err(format!(
                "JWKS key {kid:?} is a shared secret: configure it as the JWT secret instead"
            ))
        }
        AlgorithmParameters::EllipticCurve(p) => {
            return Err(format!(
                "JWKS key {kid:?} uses unsupported curve {:?}",
                p.curve
            ))
        }
    };
    let Some(declared) = jwk.common.key_algorithm else {
        return Ok(implied);
    };
    let alg = match declared {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        other => return Err(format!("JWKS key {kid:?} has unsupported alg {other:?}")),
    };
    let same_family = matches!(
        (&jwk.algorithm, alg),
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ) | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
    ) || alg == implied;
    if !same_family {
        return Err(format!(
            "JWKS key {kid:?} declares alg {declared:?}, which its key type cannot verify"
        ));
    }
    Ok(alg)
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in
/// either case PostgREST accepts), trimmed.
pub fn bearer_token(header: &str) -> Result<&str, JwtError> {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(JwtError::NotBearer)
}

/// Signs `claims` with HS256: for tests, benchmarks and `spine-functions token`.
pub fn sign(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signs any JSON object")
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use serde_json::json;

    const KEY: &[u8] = b"super-secret-jwt-token-with-at-least-32-characters-long";
    const EC_PEM: &[u8] = include_bytes!("../tests/data/jwt/es256-test-only.pem");
    const RSA_PEM: &[u8] = include_bytes!("../tests/data/jwt/rs256-test-only.pem");

    fn now() -> u64 {
        now_secs()
    }

    fn hs() -> Verifier {
        Verifier::new(Some(KEY))
    }

    /// A signer for `alg` with its private key, and the JWKS entry for it.
    fn keypair(alg: Algorithm, kid: &str) -> (EncodingKey, Value) {
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(EC_PEM).unwrap(),
            _ => EncodingKey::from_rsa_pem(RSA_PEM).unwrap(),
        };
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        (key, serde_json::to_value(jwk).unwrap())
    }

    fn signed(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn user(exp_in: i64) -> Value {
        json!({"role": "authenticated", "sub": "u1", "exp": now() as i64 + exp_in})
    }

    #[test]
    fn accepts_a_valid_hs256_token() {
        let t = sign(&user(600), KEY);
        let c = hs().verify_header(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(
            (c.role.as_str(), c.sub.as_deref()),
            ("authenticated", Some("u1"))
        );
        let anon = sign(&json!({"role": "anon"}), KEY);
        assert_eq!(hs().verify(&anon).unwrap().role, "anon");
    }

    #[test]
    fn rejects_bad_tokens() {
        let good = sign(&json!({"role": "anon", "exp": now() + 600}), KEY);
        assert_eq!(hs().verify_header(None), Err(JwtError::Missing));
        assert_eq!(hs().verify_header(Some(&good)), Err(JwtError::NotBearer));
        assert_eq!(
            Verifier::new(Some(b"other key")).verify(&good),
            Err(JwtError::BadSignature)
        );
        let mut tampered = good.clone();
        tampered.insert(good.find('.').unwrap() + 2, 'x');
        assert!(hs().verify(&tampered).is_err());
        let b64 = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
        };
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none"}"#),
            b64(r#"{"role":"service_role"}"#)
        );
        assert!(matches!(hs().verify(&none), Err(JwtError::Invalid(_))));
        let admin = sign(&json!({"role": "postgres"}), KEY);
        assert!(matches!(hs().verify(&admin), Err(JwtError::Invalid(_))));
        let roleless = hs().verify(&sign(&json!({"sub": "u1"}), KEY)).unwrap();
        assert_eq!(roleless.role, "anon", "PostgREST: no role claim is anon");
        assert_eq!(roleless.all["role"], "anon");
        assert!(hs().verify(&sign(&json!({"role": 5}), KEY)).is_err());
        let nosub = sign(&json!({"role": "authenticated"}), KEY);
        assert!(matches!(hs().verify(&nosub), Err(JwtError::Invalid(_))));
        assert!(matches!(hs().verify("a.b"), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn opaque_api_keys_stand_for_their_roles() {
        let v = hs().with_api_keys(ApiKeys {
            publishable: Some("sb_publishable_abc".into()),
            secret: Some("sb_secret_xyz".into()),
        });
        assert_eq!(v.verify("sb_publishable_abc").unwrap().role, "anon");
        let service = v.verify_header(Some("Bearer sb_secret_xyz")).unwrap();
        assert_eq!((service.role.as_str(), service.sub), ("service_role", None));
        assert_eq!(service.all, json!({"role": "service_role"}));
        for wrong in ["sb_secret_xy", "sb_secret_xyzz", "sb_", "sb_publishable_"] {
            assert!(
                matches!(v.verify(wrong), Err(JwtError::Invalid(_))),
                "{wrong}"
            );
        }
        // Empty keys configure nothing, and a verifier without keys knows none.
        let none = hs().with_api_keys(ApiKeys {
            publishable: Some(String::new()),
            secret: None,
        });
        assert!(none.verify("sb_publishable_abc").is_err());
        assert!(none.verify("sb_").is_err());
    }

    /// `exp`, `nbf` and `iat` are checked with the leeway on either side of it.
    #[test]
    fn times_are_checked_with_a_leeway() {
        let v = hs().with_leeway(30);
        let at = |claims: Value| v.verify(&sign(&claims, KEY));
        let n = now() as i64;
        assert!(at(json!({"role": "anon", "exp": n - 10})).is_ok());
        assert_eq!(
            at(json!({"role": "anon", "exp": n - 60})),
            Err(JwtError::Expired)
        );
        assert!(at(json!({"role": "anon", "nbf": n + 10})).is_ok());
        assert_eq!(
            at(json!({"role": "anon", "nbf": n + 60})),
            Err(JwtError::NotYetValid)
        );
        assert!(at(json!({"role": "anon", "iat": n + 10})).is_ok());
        assert_eq!(
            at(json!({"role": "anon", "iat": n + 60})),
            Err(JwtError::NotYetValid)
        );
        assert!(matches!(
            at(json!({"role": "anon", "exp": "tomorrow"})),
            Err(JwtError::Invalid(_))
        ));
    }

    #[test]
    fn asymmetric_tokens_verify_against_the_jwks() {
        let (ec, ec_jwk) = keypair(Algorithm::ES256, "ec-1");
        let (rsa, rsa_jwk) = keypair(Algorithm::RS256, "rsa-1");
        let jwks = json!({"keys": [ec_jwk, rsa_jwk]}).to_string();
        let v = hs().with_jwks(&jwks).unwrap();
        for (alg, key, kid) in [
            (Algorithm::ES256, &ec, "ec-1"),
            (Algorithm::RS256, &rsa, "rsa-1"),
        ] {
            let c = v.verify(&signed(alg, Some(kid), key, user(600))).unwrap();
            assert_eq!(c.sub.as_deref(), Some("u1"), "{alg:?}");
            assert_eq!(
                v.verify(&signed(alg, Some(kid), key, user(-600))),
                Err(JwtError::Expired)
            );
            // Without a kid, every key of the token's algorithm is tried.
            assert!(v.verify(&signed(alg, None, key, user(600))).is_ok());
        }
        // HS256 tokens still verify with the secret beside the JWKS.
        assert!(v.verify(&sign(&user(600), KEY)).is_ok());
        assert_eq!(
            v.verify(&signed(Algorithm::ES256, Some("gone"), &ec, user(600))),
            Err(JwtError::UnknownKey("gone".into()))
        );
        // The RSA key cannot verify a token that names it with another algorithm.
        assert_eq!(
            v.verify(&signed(Algorithm::ES256, Some("rsa-1"), &ec, user(600))),
            Err(JwtError::UnknownKey("rsa-1".into()))
        );
        // Signed by a key that is not in the set.
        let only_rsa = Verifier::new(None)
            .with_jwks(&json!({"keys": [keypair(Algorithm::RS256, "rsa-1").1]}).to_string())
            .unwrap();
        assert_eq!(
            only_rsa.verify(&signed(Algorithm::ES256, None, &ec, user(600))),
            Err(JwtError::Invalid("alg ES256 is not accepted".into()))
        );
    }

    /// The classic confusion: an HS256 token whose "secret" is the public key.
    #[test]
    fn public_keys_never_verify_hmac_tokens() {
        let (_, ec_jwk) = keypair(Algorithm::ES256, "ec-1");
        let v = Verifier::new(None)
            .with_jwks(&json!({"keys": [ec_jwk.clone()]}).to_string())
            .unwrap();
        let forged_key = serde_json::to_vec(&ec_jwk).unwrap();
        let forged = jsonwebtoken::encode(
            &Header {
                kid: Some("ec-1".into()),
                ..Header::new(Algorithm::HS256)
            },
            &user(600),
            &EncodingKey::from_secret(&forged_key),
        )
        .unwrap();
        assert!(v.verify(&forged).is_err());
    }

    #[test]
    fn bad_jwks_are_refused_with_a_reason() {
        let v = || Verifier::new(None);
        assert!(v().with_jwks("{").unwrap_err().contains("not valid"));
        let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}).to_string();
        assert!(v().with_jwks(&oct).unwrap_err().contains("shared secret"));
        let (_, mut ec_jwk) = keypair(Algorithm::ES256, "ec-1");
        ec_jwk["alg"] = json!("RS256");
        let mismatch = json!({"keys": [ec_jwk]}).to_string();
        assert!(v()
            .with_jwks(&mismatch)
            .unwrap_err()
            .contains("cannot verify"));
    }
}
