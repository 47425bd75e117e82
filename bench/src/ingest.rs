//! `ingest`: records/s through `spine.ingest` with a 10-field mapping and identity
//! keys (email, phone), batches of 1,000 new records, side by side on one cluster
//! with two baselines:
//! - a plain INSERT of the same JSON records into a bare table (landing only);
//! - the same writes done by hand in one SQL statement per batch, the way a team
//!   without Spine would write them: the landing row, the mapped entity, its two
//!   identity keys, its provenance edge and its `data.EntityCreated` event, into
//!   Spine's own tables (same indexes and triggers). It skips what Spine adds:
//!   identity resolution against existing keys, merging, per-record validation
//!   and error capture, so it is the floor for new records.

use crate::stats::per_second;
use serde_json::{json, Value};
use std::time::Instant;
use tokio_postgres::Client;
use uuid::Uuid;

/// Settings without a default are required; their value names are their
/// variables, so that a missing one is named in the error.
#[derive(Debug, clap::Args)]
pub struct Settings {
    /// The database, with the extension (the dev stack's).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "DATABASE_URL"
    )]
    pub database_url: String,
    /// Records per figure.
    #[arg(
        long,
        env = "SPINE_BENCH_RECORDS",
        default_value_t = 20_000,
        value_name = "N"
    )]
    pub records: usize,
}

const BATCH: usize = 1000;

fn mapping() -> Value {
    json!({
        "kind": "person",
        "fields": {
            "name": {"path": "name", "normalize": ["trim"], "required": true},
            "email": {"path": "contact.email", "normalize": ["email"]},
            "phone": {"path": "contact.phone", "normalize": [{"phone": {"region": "DE"}}]},
            "born": {"path": "dob", "normalize": ["timestamp"]},
            "score": {"path": "score", "normalize": ["number"]},
            "vip": {"path": "vip", "normalize": ["boolean"]},
            "city": {"path": "address.city", "normalize": ["trim", "lowercase"]},
            "company": {"path": "company", "normalize": ["trim"]},
            "origin": {"constant": "bench"},
            "display": {"concat": [{"path": "name"}, " <", {"path": "contact.email"}, ">"]}
        },
        "identity": ["email", "phone"]
    })
}

fn batch(run: Uuid, start: usize) -> Value {
    Value::Array(
        (start..start + BATCH)
            .map(|i| {
                json!({"id": format!("{run}-{i}"), "name": format!(" Person {i} "),
                       "contact": {"email": format!("P{i}.{}@Example.com", run.simple()),
                                   "phone": format!("030 {:07}", i % 10_000_000)},
                       "dob": "1990-05-17", "score": format!("{}", i % 100), "vip": if i % 2 == 0 { "yes" } else { "no" },
                       "address": {"city": " Berlin "}, "company": "ACME"})
            })
            .collect(),
    )
}

/// The by-hand baseline: every write `spine.ingest` makes for a new record,
/// with the mapping written out in SQL. `owner` and `source` are UUIDs, formatted
/// in (the statement takes the batch as its one parameter, like the others).
fn by_hand_sql(owner: Uuid, source: Uuid) -> String {
    format!(
        "WITH r AS ( \
           SELECT rec, rec->>'id' AS external_id, gen_random_uuid() AS entity, gen_random_uuid() AS event, \
                  jsonb_build_object( \
                    'name', btrim(rec->>'name'), \
                    'email', lower(btrim(rec#>>'{{contact,email}}')), \
                    'phone', '+49' || regexp_replace(substr(rec#>>'{{contact,phone}}', 2), '\\D', '', 'g'), \
                    'born', (rec->>'dob') || 'T00:00:00Z', \
                    'score', (rec->>'score')::numeric, \
                    'vip', (rec->>'vip') IN ('yes', 'true', '1'), \
                    'city', lower(btrim(rec#>>'{{address,city}}')), \
                    'company', btrim(rec->>'company'), \
                    'origin', 'bench', \
                    'display', concat(rec->>'name', ' <', rec#>>'{{contact,email}}', '>')) AS data \
             FROM jsonb_array_elements($1::jsonb) AS rec), \
         landed AS ( \
           INSERT INTO spine.raw_records (owner_id, source, external_id, payload, payload_hash, status, entity_id, processed_at) \
           SELECT '{owner}', 'by_hand', external_id, rec, sha256(convert_to(rec::text, 'UTF8')), 'processed', entity, now() FROM r), \
         created AS ( \
           INSERT INTO spine.entities (id, owner_id, kind, data) \
           SELECT entity, '{owner}', 'person', data FROM r RETURNING id), \
         keyed AS ( \
           INSERT INTO spine.entity_keys (owner_id, key_type, key_value, entity_id) \
           SELECT '{owner}', k.t, k.v, r.entity FROM r, \
                  LATERAL (VALUES ('email', r.data->>'email'), ('phone', r.data->>'phone')) AS k(t, v) \
            WHERE r.entity IN (SELECT id FROM created)), \
         linked AS ( \
           INSERT INTO spine.edges (owner_id, from_id, rel, to_id) \
           SELECT '{owner}', id, 'described_by', '{source}' FROM created) \
         INSERT INTO spine.events (id, type, subject, owner_id, data, correlation_id) \
         SELECT event, 'data.EntityCreated', 'entity/' || entity, '{owner}', \
                jsonb_build_object('id', entity, 'kind', 'person', 'fields', data), event FROM r"
    )
}

async fn timed(
    db: &Client,
    sql: &str,
    run: Uuid,
    records: usize,
    claims: &str,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut done = 0;
    while done < records {
        db.batch_execute("BEGIN").await?;
        db.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            &[&claims],
        )
        .await?;
        db.execute(sql, &[&batch(run, done)]).await?;
        db.batch_execute("COMMIT").await?;
        done += BATCH;
    }
    Ok(per_second(done, started.elapsed()))
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let db = spine_tests::connect_to(&s.database_url).await?;
    let owner = Uuid::new_v4();
    let claims = json!({"sub": owner.to_string(), "role": "authenticated"}).to_string();
    db.batch_execute(
        "DROP TABLE IF EXISTS spine_bench_raw_records; \
         CREATE TABLE spine_bench_raw_records (id bigserial PRIMARY KEY, payload jsonb NOT NULL)",
    )
    .await?;
    db.execute(
        "SELECT spine.save_source('bench', $1, owner => $2)",
        &[&mapping(), &owner],
    )
    .await?;
    // The by-hand baseline writes for its own owner, whose source entity it
    // describes its records by.
    let hand_owner = Uuid::new_v4();
    let hand_source = Uuid::new_v4();
    db.execute(
        "INSERT INTO spine.entities (id, owner_id, kind, data) VALUES ($1, $2, 'source', '{}')",
        &[&hand_source, &hand_owner],
    )
    .await?;
    println!(
        "ingest benchmark: {} records per figure, batches of {BATCH}, 10-field mapping, identity email + phone\n",
        s.records
    );
    let plain = timed(
        &db,
        "INSERT INTO spine_bench_raw_records (payload) SELECT jsonb_array_elements($1::jsonb)",
        Uuid::new_v4(),
        s.records,
        &claims,
    )
    .await?;
    let by_hand = timed(
        &db,
        &by_hand_sql(hand_owner, hand_source),
        Uuid::new_v4(),
        s.records,
        &claims,
    )
    .await?;
    let ingest = timed(
        &db,
        "SELECT spine.ingest('bench', $1::jsonb)",
        Uuid::new_v4(),
        s.records,
        &claims,
    )
    .await?;
    let replay_run = Uuid::new_v4();
    timed(
        &db,
        "SELECT spine.ingest('bench', $1::jsonb)",
        replay_run,
        BATCH,
        &claims,
    )
    .await?;
    let replay = timed(
        &db,
        "SELECT spine.ingest('bench', $1::jsonb)",
        replay_run,
        BATCH,
        &claims,
    )
    .await?;
    println!("{:<46} {:>10}  compared with", "figure", "records/s");
    println!(
        "{:<46} {plain:>10.0}  the baseline",
        "plain INSERT of the same JSON rows"
    );
    println!(
        "{:<46} {by_hand:>10.0}  {:.0}% of the plain insert",
        "the same writes by hand in SQL (floor)",
        100.0 * by_hand / plain
    );
    println!(
        "{:<46} {ingest:>10.0}  {:.0}% of the plain insert (target ≥ 50%), {:.0}% of by hand",
        "spine.ingest, new records (create + keys + edge)",
        100.0 * ingest / plain,
        100.0 * ingest / by_hand
    );
    println!(
        "{:<46} {replay:>10.0}  unchanged: landing only",
        "spine.ingest, the same batch again"
    );
    let created: i64 = db
        .query_one(
            "SELECT count(*) FROM spine.entities WHERE owner_id = $1 AND kind = 'person'",
            &[&owner],
        )
        .await?
        .get(0);
    let by_hand_created: i64 = db
        .query_one(
            "SELECT count(*) FROM spine.entities WHERE owner_id = $1 AND kind = 'person'",
            &[&hand_owner],
        )
        .await?
        .get(0);
    println!("\n{created} entities created by spine.ingest, {by_hand_created} by hand");
    // The by-hand rows are not Spine's: remove them (their keys and edges cascade).
    db.execute(
        "DELETE FROM spine.raw_records WHERE owner_id = $1",
        &[&hand_owner],
    )
    .await?;
    db.execute(
        "DELETE FROM spine.entities WHERE owner_id = $1",
        &[&hand_owner],
    )
    .await?;
    db.batch_execute("DROP TABLE spine_bench_raw_records")
        .await?;
    Ok(())
}
