//! `rules`: the cost of rules on event insert. For 0, 10, 100 and 1,000 enabled
//! rules of one owner, all listening to the benchmark's event type (each a
//! candidate for every event; the guard index then narrows them to the rules an
//! event's `kind` or `tags` name), half with a simple condition and half nested
//! (`and`/`or`/`in` over event data and the owner's state), the benchmark emits
//! events as that owner — 1,000 per statement — whose `kind` makes about 10 % of
//! them match exactly one rule (which then fires: a firing row, a set_state
//! action, a rules.RuleFired event). Printed: events/s and the per-event overhead
//! against 0 rules.

use crate::stats::per_second;
use serde_json::json;
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
    /// Events per figure.
    #[arg(
        long,
        env = "SPINE_BENCH_EVENTS",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub events: usize,
}

const BATCH: i64 = 1000;

fn condition(j: usize) -> serde_json::Value {
    let kind = format!("k{j}");
    if j.is_multiple_of(2) {
        json!({"==": [{"var": "event.data.kind"}, kind]})
    } else {
        json!({"and": [
            {">=": [{"var": "event.data.n"}, 0]},
            {"or": [
                {"==": [{"var": "event.data.kind"}, kind]},
                {"and": [{"in": [kind, {"var": "event.data.tags"}]}, {"==": [{"var": "state.mode"}, "busy"]}]}
            ]}
        ]})
    }
}

async fn set_rules(db: &Client, owner: Uuid, n: usize) -> anyhow::Result<()> {
    db.execute("DELETE FROM spine.rules WHERE owner_id = $1", &[&owner])
        .await?;
    let save = db
        .prepare("SELECT spine.save_rule($1, 'bench.Measured', $2, $3, owner => $4)")
        .await?;
    let actions = json!([{"set_state": {"key": "last_kind", "value": "{{event.data.kind}}"}}]);
    for j in 0..n {
        db.execute(
            &save,
            &[&format!("r{j:04}"), &condition(j), &actions, &owner],
        )
        .await?;
    }
    Ok(())
}

/// Events per second emitted as `owner` with `rules` rules in place.
async fn emit_rate(db: &Client, owner: Uuid, rules: usize, events: usize) -> anyhow::Result<f64> {
    // Kinds k0..k(10·rules): one in ten events names an existing rule.
    let kinds = (rules * 10).max(1) as i64;
    let claims = json!({"sub": owner.to_string(), "role": "authenticated"}).to_string();
    let started = Instant::now();
    let mut done = 0usize;
    while done < events {
        db.batch_execute("BEGIN").await?;
        db.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            &[&claims],
        )
        .await?;
        db.execute(
            "SELECT spine.emit('bench.Measured', jsonb_build_object( \
                 'kind', 'k' || ((g + $1) % $2), 'n', g, 'tags', '[]'::jsonb)) \
               FROM generate_series(1, $3::bigint) g",
            &[&(done as i64), &kinds, &BATCH],
        )
        .await?;
        db.batch_execute("COMMIT").await?;
        done += BATCH as usize;
    }
    Ok(per_second(done, started.elapsed()))
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let db = spine_tests::connect_to(&s.database_url).await?;
    let owner = Uuid::new_v4();
    db.execute(
        "INSERT INTO spine.state (owner_id, key, value) VALUES ($1, 'mode', '\"idle\"')",
        &[&owner],
    )
    .await?;
    println!(
        "rules benchmark: {} events per figure, emitted {BATCH} per statement by one owner\n",
        s.events
    );
    println!(
        "{:<34} {:>10} {:>16}  compared with",
        "rules of the owner", "events/s", "µs per event"
    );
    let mut base = None;
    for n in [0usize, 10, 100, 1000] {
        set_rules(&db, owner, n).await?;
        // One warm-up batch: the backend compiles the owner's rules once.
        emit_rate(&db, owner, n, BATCH as usize).await?;
        let rate = emit_rate(&db, owner, n, s.events).await?;
        let per_event_us = 1e6 / rate;
        let base_us = *base.get_or_insert(per_event_us);
        let note = match n {
            0 => "a bare emit".to_string(),
            100 => format!("{:.2}× a bare emit (target < 2×)", per_event_us / base_us),
            1000 => format!(
                "+{:.0} µs per event for 1,000 rules (target < 1,000 µs)",
                per_event_us - base_us
            ),
            _ => format!("+{:.0} µs per event", per_event_us - base_us),
        };
        println!("{n:<34} {rate:>10.0} {per_event_us:>16.1}  {note}");
    }
    let fired: i64 = db
        .query_one(
            "SELECT count(*) FROM spine.rule_firings WHERE owner_id = $1",
            &[&owner],
        )
        .await?
        .get(0);
    println!("\n{fired} firings recorded (about 1 in 10 events)");
    db.execute("DELETE FROM spine.rules WHERE owner_id = $1", &[&owner])
        .await?;
    Ok(())
}
