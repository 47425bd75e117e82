//! How webhook deliveries are signed, twice over:
//!
//! - **Standard Webhooks** (standardwebhooks.com), what receivers' libraries
//!   verify: `webhook-id` (the same on every retry), `webhook-timestamp` (Unix
//!   seconds of this attempt, so receivers can refuse replays) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one
//!   `v1,…` per valid secret, space-separated, so a receiver keeps verifying
//!   while a rotation's two secrets overlap. A `whsec_<base64>` secret keys the
//!   HMAC with its decoded bytes (as the libraries do); any other secret with its
//!   text's bytes, which receivers configure as `whsec_` + base64(text).
//! - **`X-Spine-Signature: sha256=<hex HMAC-SHA256 of the body>`**, keyed with the
//!   secret's text: what receivers written before the standard check.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::borrow::Cow;

const PREFIX: &str = "whsec_";

/// `sha256=<hex>` of `body` keyed with `key`'s text.
pub fn spine_signature(key: &str, body: &[u8]) -> String {
    let digest = mac(key.as_bytes(), &[body]);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The three Standard Webhooks headers for one attempt, signed with every key.
pub fn standard_headers(
    keys: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(String, String); 3] {
    let timestamp = timestamp.to_string();
    let signatures: Vec<String> = keys
        .iter()
        .map(|key| {
            let digest = mac(
                &key_bytes(key),
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
            );
            format!("v1,{}", STANDARD.encode(digest))
        })
        .collect();
    [
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp),
        ("webhook-signature".into(), signatures.join(" ")),
    ]
}

fn key_bytes(secret: &str) -> Cow<'_, [u8]> {
    match secret.strip_prefix(PREFIX).map(|b64| STANDARD.decode(b64)) {
        Some(Ok(bytes)) => Cow::Owned(bytes),
        _ => Cow::Borrowed(secret.as_bytes()),
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 4231 test case 2 vector, in the header's format.
    #[test]
    fn spine_signature_is_hmac_sha256_hex() {
        assert_eq!(
            spine_signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The example of the Standard Webhooks specification (its test vector).
    #[test]
    fn matches_the_specification_example() {
        let [_, _, (_, signature)] = standard_headers(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_key_signs_and_plain_secrets_are_their_bytes() {
        let [_, _, (_, two)] = standard_headers(&["whsec_AAAA", "plain"], "id", 1, b"{}");
        let parts: Vec<&str> = two.split(' ').collect();
        assert_eq!(parts.len(), 2);
        let [_, _, (_, plain)] = standard_headers(&["plain"], "id", 1, b"{}");
        let as_whsec = format!("whsec_{}", STANDARD.encode("plain"));
        let [_, _, (_, same)] = standard_headers(&[as_whsec.as_str()], "id", 1, b"{}");
        assert_eq!((parts[1], plain.as_str()), (same.as_str(), same.as_str()));
    }
}
