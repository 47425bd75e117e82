//! `ingest`: records/s through `spine.ingest` with a 10-field mapping and identity
//! keys (email, phone), batches of 1,000 new records, next to a plain INSERT of the
//! same JSON records into a bare table — side by side, same cluster.

use crate::stats::per_second;
use serde_json::{json, Value};
use std::time::Instant;
use tokio_postgres::Client;
use uuid::Uuid;

pub struct Settings {
    pub database_url: String,
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
        "{:<46} {ingest:>10.0}  {:.0}% of the plain insert (target ≥ 50%)",
        "spine.ingest, new records (create + keys + edge)",
        100.0 * ingest / plain
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
    println!("\n{created} entities created");
    db.batch_execute("DROP TABLE spine_bench_raw_records")
        .await?;
    Ok(())
}
