//! `spine audit verify`, `spine vault rotate`, `spine token`.

use crate::db::Db;
use crate::output::Out;
use crate::{BadInput, Failed};
use serde_json::json;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recomputes the hash chain; with --anchor or --published, also checks a head
    /// published earlier (an audit.HeadAnchored event kept outside the database).
    Verify {
        /// `SEQ:HASH` (hex) from an audit.HeadAnchored event.
        #[arg(long, value_parser = parse_anchor, conflicts_with = "published")]
        anchor: Option<(i64, Vec<u8>)>,
        /// Checks the newest audit.HeadAnchored the relay published to NATS (the
        /// stream and subject the relay routes it to).
        #[arg(long)]
        published: bool,
        #[command(flatten)]
        nats: PublishedIn,
    },
}

/// Where the relay publishes: the worker's own settings.
#[derive(Debug, clap::Args)]
pub struct PublishedIn {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:54391")]
    nats: String,
    #[command(flatten)]
    files: spine_nats::NatsArgs,
    #[arg(long, env = "SPINE_RELAY_STREAM", default_value = "SPINE")]
    relay_stream: String,
    #[arg(long, env = "SPINE_RELAY_STREAMS", default_value = "")]
    relay_streams: String,
}

/// The newest audit.HeadAnchored in NATS: `(seq, hash)`.
async fn published_anchor(at: PublishedIn) -> anyhow::Result<(i64, Vec<u8>)> {
    let map = spine_worker::streams::StreamMap::parse(&at.relay_streams, &at.relay_stream)
        .map_err(|e| BadInput(format!("SPINE_RELAY_STREAMS: {e}")))?;
    let (index, subject) = map.route("audit.HeadAnchored");
    let stream = &map.streams()[index].name;
    let config = spine_nats::NatsConfig::new(&at.nats, at.files)?;
    let js = async_nats::jetstream::new(config.connect().await?);
    let message = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| anyhow::anyhow!("stream {stream} at {config}: {e}"))?
        .get_last_raw_message_by_subject(&subject)
        .await
        .map_err(|e| {
            anyhow::anyhow!("no {subject} in stream {stream} at {config} (has pg_cron's spine-audit-anchor run, and the relay delivered it?): {e}")
        })?;
    let envelope: serde_json::Value = serde_json::from_slice(&message.payload)?;
    let seq = envelope["data"]["seq"].as_i64();
    let hash = envelope["data"]["hash"]
        .as_str()
        .map(|h| format!("{}:{h}", seq.unwrap_or(0)));
    match (seq, hash) {
        (Some(_), Some(anchor)) => parse_anchor(&anchor).map_err(anyhow::Error::msg),
        _ => anyhow::bail!(
            "the newest {subject} in {stream} has no data.seq and data.hash: {envelope}"
        ),
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum VaultCommand {
    /// Re-encrypts every secret under the newest root key version.
    Rotate,
    /// Root key versions: current, loaded, and how many secrets each encrypts.
    Keys,
}

fn parse_anchor(s: &str) -> Result<(i64, Vec<u8>), String> {
    let (seq, hash) = s
        .split_once(':')
        .ok_or("expected SEQ:HASH, e.g. 1042:9f86d0…")?;
    let seq = seq
        .parse()
        .map_err(|_| format!("{seq:?} is not a sequence number"))?;
    let hash = (0..hash.len())
        .step_by(2)
        .map(|i| {
            hash.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .filter(|h| h.len() == 32)
        .ok_or("HASH must be 64 hex digits (sha256)")?;
    Ok((seq, hash))
}

pub async fn audit(db: &Db, out: &Out, command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Verify {
        anchor,
        published,
        nats,
    } = command;
    let anchor = match (anchor, published) {
        (Some(a), _) => Some(a),
        (None, true) => Some(published_anchor(nats).await?),
        (None, false) => None,
    };
    let rows: i64 = db
        .value("SELECT count(*) FROM spine.audit_log", &[])
        .await?;
    let head: Option<i64> = db
        .value("SELECT max(seq) FROM spine.audit_log", &[])
        .await?;
    let broken: Option<i64> = db.value("SELECT spine.audit_verify()", &[]).await?;
    let anchored = match &anchor {
        Some((seq, hash)) => Some(
            db.value::<bool>("SELECT spine.audit_verify_anchor($1, $2)", &[seq, hash])
                .await?,
        ),
        None => None,
    };
    let ok = broken.is_none() && anchored != Some(false);
    out.emit(
        &json!({"ok": ok, "rows": rows, "head_seq": head, "broken_at": broken,
                "anchor_seq": anchor.as_ref().map(|a| a.0), "anchor_matches": anchored}),
        || {
            let mut lines = vec![match broken {
                None => format!("audit chain intact: {rows} rows, head seq {}", head.unwrap_or(0)),
                Some(seq) => format!("audit chain BROKEN at seq {seq} (of {rows} rows)"),
            }];
            if let (Some((seq, _)), Some(m)) = (&anchor, anchored) {
                lines.push(match m {
                    true => format!("anchor at seq {seq}: matches"),
                    false => format!("anchor at seq {seq}: DOES NOT MATCH (rewritten since it was taken, or not this database's)"),
                });
            }
            lines.join("\n")
        },
    );
    if !ok {
        return Err(Failed("the audit log does not verify".into()).into());
    }
    Ok(())
}

pub async fn vault(db: &Db, out: &Out, command: VaultCommand) -> anyhow::Result<()> {
    match command {
        VaultCommand::Rotate => {
            let n: i64 = db.value("SELECT spine.rotate_vault_key()", &[]).await?;
            let current: Option<i32> = db
                .value(
                    "SELECT max(key_version) FILTER (WHERE current) FROM spine.vault_key_versions()",
                    &[],
                )
                .await?;
            out.emit(&json!({"reencrypted": n, "key_version": current}), || {
                format!(
                    "{n} secret(s) re-encrypted under root key version {}",
                    current.map_or("?".into(), |v| v.to_string())
                )
            });
        }
        VaultCommand::Keys => {
            let rows = db
                .rows(
                    "SELECT * FROM spine.vault_key_versions() ORDER BY key_version",
                    &[],
                )
                .await?;
            out.rows(&["key_version", "current", "in_keyring", "secrets"], &rows);
        }
    }
    Ok(())
}

const ROLES: &[&str] = &["anon", "authenticated", "service_role"];

pub fn token(
    out: &Out,
    role: &str,
    sub: Option<uuid::Uuid>,
    secret: Option<&str>,
    ttl: u64,
) -> anyhow::Result<()> {
    if !ROLES.contains(&role) {
        return Err(BadInput(format!(
            "role must be one of {}, not {role:?}",
            ROLES.join(", ")
        ))
        .into());
    }
    if role == "authenticated" && sub.is_none() {
        return Err(BadInput(
            "an authenticated token needs the user's id (spine token authenticated <uuid>)".into(),
        )
        .into());
    }
    let secret =
        secret.ok_or_else(|| BadInput("SPINE_JWT_SECRET (or --secret) is not set".into()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut claims = json!({"role": role, "iat": now, "exp": now + ttl, "iss": "spine"});
    if let Some(sub) = sub {
        claims["sub"] = json!(sub);
    }
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?;
    out.emit(&json!({"token": jwt, "claims": claims}), || jwt.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_parse_or_say_why_not() {
        let hash = "ab".repeat(32);
        assert_eq!(
            parse_anchor(&format!("7:{hash}")).unwrap(),
            (7, vec![0xab; 32])
        );
        assert!(parse_anchor("7").unwrap_err().contains("SEQ:HASH"));
        assert!(parse_anchor("x:ab").unwrap_err().contains("sequence"));
        assert!(parse_anchor("7:abc").unwrap_err().contains("64 hex"));
        assert!(parse_anchor(&format!("7:{}", "zz".repeat(32)))
            .unwrap_err()
            .contains("64 hex"));
    }
}
