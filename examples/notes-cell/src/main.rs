//! `notes-cell`: the notes service of the cells platform, as a Rust cell.
//!
//! It answers `cbs.notes.{create,get,list}` in the queue group `notes` (start
//! several: each request is answered by one), checks `create`'s input against
//! `schemas/note-create.json` (VALIDATION with the offending JSON Pointers, as
//! Spine answers), and stores through Spine's verbs `notes_store.*` **as the
//! caller** (their token goes along, so RLS decides: another user's note is
//! NOT_FOUND) and **in the caller's chain** (the request's correlation id ends
//! up on the `notes.NoteCreated` event). Share links are signed with a key from
//! Spine's vault, which the cell fetches with its service token at start.

use anyhow::Context as _;
use base64::Engine as _;
use clap::Parser;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use spine_cell::{Cell, CellError, ErrorCode, Handlers, NamedContract, Reply, Request};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "The notes service as a cell: cbs.notes.{create,get,list} over Spine")]
struct Args {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:54391")]
    nats_url: String,
    /// Subjects this cell answers on (the cells platform's).
    #[arg(long, env = "CELL_SUBJECT", default_value = "cbs.{service}.{verb}")]
    subject: String,
    /// Subjects Spine's worker answers on (`SPINE_SERVICES_SUBJECT`).
    #[arg(
        long,
        env = "SPINE_SERVICES_SUBJECT",
        default_value = "svc.{service}.{verb}"
    )]
    spine_subject: String,
    /// A service_role token: only to read the share key from the vault.
    #[arg(long, env = "SPINE_SERVICE_KEY", hide_env_values = true)]
    service_key: String,
    /// Most requests this instance has in flight at Spine at once.
    #[arg(long, env = "CELL_MAX_IN_FLIGHT", default_value_t = 16)]
    max_in_flight: usize,
    /// This instance's name, in every reply's `served_by`.
    #[arg(long, env = "CELL_NAME", default_value = "notes-cell")]
    name: String,
}

const CREATE_SCHEMA: &str = include_str!("../schemas/note-create.json");

struct Notes {
    /// Calls Spine with no token of its own: each request carries its caller's.
    spine: Cell,
    /// Requests to Spine in flight from this instance: beyond, callers wait
    /// here instead of being refused by the worker (its
    /// SPINE_SERVICES_MAX_IN_FLIGHT, 64 by default, is shared by every cell).
    in_flight: tokio::sync::Semaphore,
    share_key: Vec<u8>,
    name: String,
}

impl Notes {
    /// `notes_store.<verb>` as the caller of `req`, in its chain. UNAVAILABLE
    /// means Spine did not run it (too many requests in flight at the worker, a
    /// serialization failure rolled back): tried again, at most 5 times.
    async fn store(&self, verb: &str, req: &Request, data: Value) -> Result<Value, CellError> {
        let mut call = Request::new(data);
        call.correlation_id = Some(req.correlation_id.unwrap_or(req.id));
        call.causation_id = Some(req.id);
        call.authorization = req.authorization.clone();
        let _permit = self.in_flight.acquire().await.expect("never closed");
        let mut pause = Duration::from_millis(20);
        for _ in 1..5 {
            match self.spine.send("notes_store", verb, call.clone()).await {
                Err(e) if e.code() == Some(ErrorCode::Unavailable) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
        self.spine.send("notes_store", verb, call).await
    }

    /// The note with a share link signed by the vault's key, and who served it.
    fn present(&self, mut note: Value) -> Value {
        if let Some(id) = note["id"].as_str() {
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(&self.share_key).expect("any key length");
            mac.update(id.as_bytes());
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(mac.finalize().into_bytes());
            note["share"] = json!(format!("{id}.{sig}"));
        }
        note["served_by"] = json!(self.name);
        note
    }
}

/// Spine's typed error, passed on as this cell's.
fn reply(result: Result<Value, CellError>, ok: impl FnOnce(Value) -> Value) -> Reply {
    match result {
        Ok(v) => Reply::data(ok(v)),
        Err(CellError::Service {
            code,
            message,
            details,
        }) => Reply::error(code, message, details),
        Err(e) => Reply::error(ErrorCode::Unavailable, e.to_string(), Value::Null),
    }
}

/// NOTES_SHARE_KEY from the vault (`notes_store.share_key`, service_role only),
/// waiting up to 30 s for Spine's worker to answer (it may start after us).
async fn share_key(spine: &Cell) -> anyhow::Result<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match spine
            .request::<_, Option<String>>("notes_store", "share_key", &json!({}))
            .await
        {
            Ok(Some(key)) => return Ok(key.into_bytes()),
            Ok(None) => anyhow::bail!("NOTES_SHARE_KEY is not in the vault: apply schema.sql"),
            Err(CellError::NoAnswer(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e).context("reading NOTES_SHARE_KEY (notes_store.share_key)"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nats = spine_cell::Cell::connect(&args.nats_url, &args.subject)
        .await
        .context("connecting to NATS")?;
    let spine =
        Cell::new(nats.nats().clone(), &args.spine_subject)?.with_timeout(Duration::from_secs(10));
    let key = share_key(&spine.clone().with_token(&args.service_key)).await?;
    let notes = Arc::new(Notes {
        spine,
        in_flight: tokio::sync::Semaphore::new(args.max_in_flight.max(1)),
        share_key: key,
        name: args.name.clone(),
    });
    let create = NamedContract::compile("notes.create", &serde_json::from_str(CREATE_SCHEMA)?)
        .map_err(|e| anyhow::anyhow!("schemas/note-create.json: {e}"))?;

    let handlers = Handlers::new()
        .contract("create", create)
        .verb("create", {
            let notes = notes.clone();
            move |req| {
                let notes = notes.clone();
                async move {
                    let data = req.data.clone();
                    reply(notes.store("create", &req, data).await, |n| {
                        notes.present(n)
                    })
                }
            }
        })
        .verb("get", {
            let notes = notes.clone();
            move |req| {
                let notes = notes.clone();
                async move {
                    let Some(id) = req.data["id"]
                        .as_str()
                        .filter(|s| uuid::Uuid::parse_str(s).is_ok())
                    else {
                        return Reply::error(
                            ErrorCode::Validation,
                            "id must be a uuid",
                            json!({"pointer": "/id"}),
                        );
                    };
                    let data = json!({"id": id});
                    reply(notes.store("get", &req, data).await, |n| notes.present(n))
                }
            }
        })
        .verb("list", {
            let notes = notes.clone();
            move |req| {
                let notes = notes.clone();
                async move {
                    let limit = req.data["limit"].as_i64().unwrap_or(50).clamp(1, 500);
                    reply(
                        notes.store("list", &req, json!({"limit": limit})).await,
                        |list| json!({"notes": list, "served_by": notes.name}),
                    )
                }
            }
        });
    let _serving = nats.serve("notes", handlers).await?;
    println!(
        "{} serving {} in queue group notes",
        args.name,
        args.subject
            .replace("{service}", "notes")
            .replace("{verb}", "*")
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
