//! NATS ingress: messages on `SPINE_INGRESS_SUBJECTS`, kept in a JetStream
//! stream of their own and consumed by a durable pull consumer that the
//! workers share, are written into Spine exactly once.
//!
//! - `….ingest.{source}` (the next-to-last token `ingest`): `spine.ingest(source,
//!   records, owner)`; the body is an array of records or `{records, owner}`.
//! - Any other subject: `spine.emit(type, data, subject)`; the body is
//!   `{type, data, subject?}` (a CloudEvent has those fields).
//!
//! A batch is written in one transaction, each message under a savepoint, acting
//! as the message's `Authorization: Bearer <jwt>` (verified like the gateway's)
//! or as service_role without one. Each message's key — its `Nats-Msg-Id`, else
//! `stream:sequence` — is recorded in that transaction (`spine.ingress_accept`);
//! the acks go out after COMMIT. A crash before the commit writes nothing; after
//! it and before the acks, the redelivered messages find their keys and are only
//! acknowledged. A message that cannot be written is kept with its reason
//! (`spine.ingress_reject`) and acknowledged: it would fail again.

use crate::config::{Config, IngressConfig};
use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream, Message};
use futures_util::StreamExt;
use serde_json::{json, Value};
use spine_functions::jwt::Keys;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The durable consumer every worker reads the ingress stream through.
pub const CONSUMER: &str = "spine-ingress";

/// Messages fetched and written per transaction.
const BATCH: usize = 200;

/// How often old keys are pruned (`spine.ingress_prune`, 7 days).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub async fn run(config: Arc<Config>, keys: Option<Arc<Keys>>, shutdown: watch::Receiver<bool>) {
    let Some(ingress) = config.ingress.clone() else {
        return;
    };
    let (config, keys, ingress) = (&config, &keys, &ingress);
    crate::supervise::restart_with_backoff("ingress", shutdown, |mut stop| async move {
        session(config, ingress, keys.as_deref(), &mut stop).await
    })
    .await
}

async fn session(
    config: &Config,
    ingress: &IngressConfig,
    keys: Option<&Keys>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (mut db, connection) = crate::db::connect(&config.database).await?;
    let _connection = crate::db::AbortOnDrop(tokio::spawn(connection));
    let client = config.nats.connect().await?;
    let replicas = config.nats_replicas.wanted(&client.server_info());
    let js = jetstream::new(client);
    // Created with the replicas the server reached has room for; an existing
    // stream is left as it is (it holds what publishers sent: an operator's).
    let stream = js
        .get_or_create_stream(stream::Config {
            name: ingress.stream.clone(),
            subjects: ingress.subjects.clone(),
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating JetStream stream {}", ingress.stream))?;
    let consumer = stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ingress.ack_wait,
                ..Default::default()
            },
        )
        .await
        .context("creating the ingress consumer")?;
    tracing::info!(stream = %ingress.stream, subjects = ?ingress.subjects, "consuming NATS ingress");
    let mut pruned = Instant::now() - PRUNE_EVERY;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            db.execute("SELECT spine.ingress_prune()", &[]).await?;
            pruned = Instant::now();
        }
        let mut fetched = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(Duration::from_secs(1))
            .messages()
            .await?;
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                next = fetched.next() => match next {
                    Some(message) => batch.push(message.map_err(|e| anyhow::anyhow!("{e}"))?),
                    None => break,
                },
                _ = stop.changed() => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        write(&mut db, &batch, keys).await?;
        // The crash this design is for, on demand: the kill test stops the
        // process here, between the commit and the acks.
        if ingress.crash_after_commit {
            tracing::error!("SPINE_INGRESS_CRASH_AFTER_COMMIT: aborting before the acks");
            std::process::abort();
        }
        // After the commit: a crash before these acks redelivers messages whose
        // keys are recorded, and they are only acknowledged then.
        for message in &batch {
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("acknowledging: {e}"))?;
        }
    }
}

/// What a message asks for.
#[derive(Debug)]
enum Write {
    Emit {
        event_type: String,
        data: Value,
        subject: Option<String>,
    },
    Ingest {
        source: String,
        records: Value,
        owner: Option<String>,
    },
}

/// Who a message acts as, from its `Authorization` header.
struct Acting {
    role: String,
    claims: Value,
}

/// One message's key, and what to write or why not.
struct Parsed<'a> {
    key: String,
    subject: &'a str,
    stream_seq: i64,
    payload: &'a [u8],
    outcome: Result<(Acting, Write), String>,
}

async fn parse<'a>(message: &'a Message, keys: Option<&Keys>) -> anyhow::Result<Parsed<'a>> {
    let info = message
        .info()
        .map_err(|e| anyhow::anyhow!("a message without JetStream info: {e}"))?;
    let stream_seq = info.stream_sequence as i64;
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let key = match header("Nats-Msg-Id") {
        Some(id) => format!("msg:{id}"),
        None => format!("seq:{}:{stream_seq}", info.stream),
    };
    let subject = message.subject.as_str();
    let acting = match header("Authorization") {
        None => Ok(Acting {
            role: "service_role".into(),
            claims: json!({"role": "service_role"}),
        }),
        Some(authorization) => match keys {
            None => Err("this worker has no JWT keys (SPINE_JWT_SECRET, SPINE_JWKS_URL)".into()),
            Some(keys) => keys
                .verify_header(Some(&authorization))
                .await
                .map(|claims| Acting {
                    role: claims.role,
                    claims: claims.all,
                })
                .map_err(|e| format!("the token does not verify: {e}")),
        },
    };
    let outcome = acting.and_then(|acting| Ok((acting, what_to_write(subject, &message.payload)?)));
    Ok(Parsed {
        key,
        subject,
        stream_seq,
        payload: &message.payload,
        outcome,
    })
}

/// The write a message's subject and body ask for, or why it has none.
fn what_to_write(subject: &str, payload: &[u8]) -> Result<Write, String> {
    let body: Value =
        serde_json::from_slice(payload).map_err(|e| format!("the body is not JSON: {e}"))?;
    let tokens: Vec<&str> = subject.split('.').collect();
    if tokens.len() >= 2 && tokens[tokens.len() - 2] == "ingest" {
        let source = tokens[tokens.len() - 1].to_string();
        return match body {
            Value::Array(_) => Ok(Write::Ingest {
                source,
                records: body,
                owner: None,
            }),
            Value::Object(mut o) => Ok(Write::Ingest {
                source,
                records: o.remove("records").unwrap_or(Value::Null),
                owner: o.get("owner").and_then(Value::as_str).map(str::to_string),
            }),
            _ => Err("an ingest body is an array of records or {records, owner}".into()),
        };
    }
    let event_type = body
        .get("type")
        .and_then(Value::as_str)
        .ok_or("an event body needs a string \"type\"")?
        .to_string();
    Ok(Write::Emit {
        event_type,
        data: body.get("data").cloned().unwrap_or(json!({})),
        subject: body
            .get("subject")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// Writes a batch in one transaction, each message under a savepoint.
async fn write(
    db: &mut tokio_postgres::Client,
    batch: &[Message],
    keys: Option<&Keys>,
) -> anyhow::Result<()> {
    let mut parsed = Vec::with_capacity(batch.len());
    for message in batch {
        parsed.push(parse(message, keys).await?);
    }
    let tx = db.transaction().await?;
    let (mut written, mut rejected) = (0, 0);
    for m in &parsed {
        let outcome = match &m.outcome {
            Ok((acting, what)) => one(&tx, m, acting, what).await,
            Err(reason) => Err(reason.clone()),
        };
        match outcome {
            Ok(true) => written += 1,
            Ok(false) => {} // written before a crash: only acknowledged now
            Err(reason) => {
                rejected += 1;
                let payload = String::from_utf8_lossy(m.payload).into_owned();
                tracing::warn!(subject = m.subject, key = %m.key, %reason, "an ingress message was rejected");
                tx.execute(
                    "SELECT spine.ingress_reject($1, $2, $3, $4, $5)",
                    &[&m.key, &m.subject, &m.stream_seq, &reason, &payload],
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    tracing::debug!(written, rejected, "ingress batch written");
    Ok(())
}

/// One message under a savepoint: Ok(true) written, Ok(false) written before,
/// Err(reason) refused by the database (the savepoint undoes its part).
async fn one(
    tx: &tokio_postgres::Transaction<'_>,
    m: &Parsed<'_>,
    acting: &Acting,
    what: &Write,
) -> Result<bool, String> {
    let database = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    tx.batch_execute("SAVEPOINT ingress_message")
        .await
        .map_err(database)?;
    let result = async {
        let new: bool = tx
            .query_one(
                "SELECT spine.ingress_accept($1, $2, $3)",
                &[&m.key, &m.subject, &m.stream_seq],
            )
            .await?
            .get(0);
        if !new {
            return Ok(false);
        }
        tx.execute(
            "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
            &[&acting.role, &acting.claims.to_string()],
        )
        .await?;
        match what {
            Write::Emit {
                event_type,
                data,
                subject,
            } => {
                tx.execute(
                    "SELECT spine.emit($1, $2, $3)",
                    &[event_type, data, subject],
                )
                .await?
            }
            Write::Ingest {
                source,
                records,
                owner,
            } => {
                tx.execute(
                    "SELECT spine.ingest($1, $2, $3::text::uuid)",
                    &[source, records, owner],
                )
                .await?
            }
        };
        tx.batch_execute("SET LOCAL ROLE NONE").await?;
        Ok(true)
    }
    .await;
    match result {
        Ok(new) => {
            tx.batch_execute("RELEASE SAVEPOINT ingress_message")
                .await
                .map_err(database)?;
            Ok(new)
        }
        Err(e) => {
            // Undoes the key, the role and whatever the write did.
            tx.batch_execute("ROLLBACK TO SAVEPOINT ingress_message")
                .await
                .map_err(database)?;
            tx.batch_execute("RELEASE SAVEPOINT ingress_message")
                .await
                .map_err(database)?;
            Err(database(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_choose_the_write() {
        match what_to_write("hub.ingest.crm", br#"[{"id": 1}]"#).unwrap() {
            Write::Ingest { source, owner, .. } => {
                assert_eq!(source, "crm");
                assert_eq!(owner, None);
            }
            Write::Emit { .. } => panic!("an ingest subject"),
        }
        match what_to_write(
            "ingest.crm",
            br#"{"records": [], "owner": "6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11"}"#,
        )
        .unwrap()
        {
            Write::Ingest { owner, .. } => assert!(owner.is_some()),
            Write::Emit { .. } => panic!("an ingest subject"),
        }
        match what_to_write(
            "devices.events",
            br#"{"type": "iot.ReadingTaken", "data": {"t": 1}}"#,
        )
        .unwrap()
        {
            Write::Emit {
                event_type, data, ..
            } => {
                assert_eq!(event_type, "iot.ReadingTaken");
                assert_eq!(data, json!({"t": 1}));
            }
            Write::Ingest { .. } => panic!("an event subject"),
        }
    }

    #[test]
    fn bad_bodies_say_why() {
        assert!(what_to_write("a.b", b"nope")
            .unwrap_err()
            .contains("not JSON"));
        assert!(what_to_write("a.b", b"{}").unwrap_err().contains("type"));
        assert!(what_to_write("x.ingest.crm", b"3")
            .unwrap_err()
            .contains("array"));
    }
}
