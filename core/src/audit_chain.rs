//! The audit log's hash chain, as pure functions: what a row's hash covers and
//! how it is computed. The extension's sealer and `audit_verify()` share this, so
//! a row written by one and checked by the other can only disagree if the row
//! changed; a consumer of the `audit.EntriesSealed` events verifies the chain
//! outside the database with the same [`link`].

use sha2::{Digest, Sha256};

/// The hash the chain starts from (the `prev_hash` of row 1): 32 zero bytes.
pub const GENESIS: [u8; 32] = [0; 32];

/// The canonical content of one audit row. Text fields are hashed with a length
/// prefix, so moving bytes from one field to the next changes the hash; `details`
/// is the jsonb's own text form, which PostgreSQL normalises (key order,
/// whitespace), so the same value always hashes the same.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub seq: i64,
    /// Microseconds since 2000-01-01 UTC (PostgreSQL's timestamptz).
    pub at_micros: i64,
    pub actor: Option<&'a str>,
    pub role: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub details: &'a str,
}

/// `sha256(prev_hash ‖ seq ‖ at ‖ actor ‖ role ‖ action ‖ target ‖ details)`.
pub fn link(prev_hash: &[u8], row: &Row<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"spine.audit.v1");
    h.update(prev_hash);
    h.update(row.seq.to_be_bytes());
    h.update(row.at_micros.to_be_bytes());
    field(&mut h, row.actor);
    field(&mut h, Some(row.role));
    field(&mut h, Some(row.action));
    field(&mut h, row.target);
    field(&mut h, Some(row.details));
    h.finalize().into()
}

/// Relinks the entries of one published `audit.EntriesSealed` part from
/// `prev_hash`: each entry's hash must be the link of the one before; returns
/// the last hash (the next part's `prev_hash`), or which entry breaks the chain.
pub fn relink(prev_hash: &[u8], entries: &serde_json::Value) -> Result<[u8; 32], String> {
    let entries = entries.as_array().ok_or("entries is not an array")?;
    let mut prev: [u8; 32] = prev_hash
        .try_into()
        .map_err(|_| "prev_hash is not 32 bytes")?;
    for e in entries {
        let text = |k: &str| e[k].as_str();
        let row = Row {
            seq: e["seq"].as_i64().ok_or("an entry without seq")?,
            at_micros: e["at_micros"]
                .as_i64()
                .ok_or("an entry without at_micros")?,
            actor: text("actor"),
            role: text("role").ok_or("an entry without role")?,
            action: text("action").ok_or("an entry without action")?,
            target: text("target"),
            details: text("details").ok_or("an entry without details")?,
        };
        let hash = link(&prev, &row);
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        if text("hash") != Some(hex.as_str()) {
            return Err(format!("entry {} does not link to the one before", row.seq));
        }
        prev = hash;
    }
    Ok(prev)
}

/// A NULL field and an empty one hash differently.
fn field(h: &mut Sha256, value: Option<&str>) {
    match value {
        None => h.update([0u8]),
        Some(v) => {
            h.update([1u8]);
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(seq: i64, action: &'a str, details: &'a str) -> Row<'a> {
        Row {
            seq,
            at_micros: 1_000,
            actor: Some("6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11"),
            role: "authenticated",
            action,
            target: Some("plugin:sms"),
            details,
        }
    }

    #[test]
    fn published_entries_relink_and_a_changed_one_does_not() {
        let first = row(1, "consent.granted", "{}");
        let h1 = link(&GENESIS, &first);
        let hex = |h: &[u8]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut entries = serde_json::json!([{
            "seq": 1, "at_micros": 1_000, "actor": first.actor, "role": "authenticated",
            "action": "consent.granted", "target": "plugin:sms", "details": "{}",
            "hash": hex(&h1)
        }]);
        assert_eq!(relink(&GENESIS, &entries), Ok(h1));
        entries[0]["details"] = "{\"n\": 1}".into();
        assert!(relink(&GENESIS, &entries).unwrap_err().contains("entry 1"));
    }

    #[test]
    fn every_field_and_the_previous_hash_are_covered() {
        let base = link(&GENESIS, &row(1, "consent.granted", "{}"));
        assert_ne!(base, link(&[1; 32], &row(1, "consent.granted", "{}")));
        assert_ne!(base, link(&GENESIS, &row(2, "consent.granted", "{}")));
        assert_ne!(base, link(&GENESIS, &row(1, "consent.revoked", "{}")));
        assert_ne!(
            base,
            link(&GENESIS, &row(1, "consent.granted", "{\"a\": 1}"))
        );
        let mut other = row(1, "consent.granted", "{}");
        other.actor = None;
        assert_ne!(base, link(&GENESIS, &other));
        other = row(1, "consent.granted", "{}");
        other.at_micros += 1;
        assert_ne!(base, link(&GENESIS, &other));
        assert_eq!(base, link(&GENESIS, &row(1, "consent.granted", "{}")));
    }

    #[test]
    fn field_boundaries_are_part_of_the_hash() {
        let mut a = row(1, "ab", "{}");
        a.target = Some("c");
        let mut b = row(1, "a", "{}");
        b.target = Some("bc");
        assert_ne!(link(&GENESIS, &a), link(&GENESIS, &b));
        let mut empty = row(1, "x", "{}");
        empty.target = Some("");
        let mut null = row(1, "x", "{}");
        null.target = None;
        assert_ne!(link(&GENESIS, &empty), link(&GENESIS, &null));
    }
}
