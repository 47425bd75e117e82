//! `realtime`: what /realtime/v1 delivers with RLS on, 1,000 subscribers (1,000
//! distinct users), each on its own websocket, on this machine together with
//! the gateway and Postgres. Two workloads at a rising change rate:
//!
//! - (a) shared visibility, as in Supabase's own benchmark: each row is visible
//!   to 100 subscribers through a membership policy (`room` in the user's
//!   rooms) — the `check` path, its decisions cached per (user, room) since
//!   the membership table is published (a first change per room asks
//!   `spine.realtime_visible` for all 1,000);
//! - (b) owner policy (`auth.uid() = owner_id`): each row visible to its owner
//!   only — decided in the gateway without a query;
//!
//! and a broadcast fan-out (1 sender, every subscriber receives). Each step
//! prints delivered messages/s, commit→client latency p50/p99 and loss. The
//! write limit (rows/s Postgres takes into the published table from 8
//! connections, no subscriber) is measured in the same run as the baseline.

use crate::stats::{per_second, quantile};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use spine_tests::proc::{free_port, ChildGuard as Guard};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

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
    /// The spine-gateway binary to run (cargo xtask bench passes the release build).
    #[arg(long, env = "SPINE_GATEWAY_BIN", value_name = "SPINE_GATEWAY_BIN")]
    pub gateway_bin: String,
    /// The project's JWT secret.
    #[arg(
        long,
        env = "SPINE_JWT_SECRET",
        hide_env_values = true,
        value_name = "SPINE_JWT_SECRET"
    )]
    pub jwt_secret: String,
    /// Subscribers (distinct users, one websocket each).
    #[arg(
        long,
        env = "SPINE_BENCH_SUBSCRIBERS",
        default_value_t = 1000,
        value_name = "N"
    )]
    pub subscribers: usize,
    /// Seconds per step.
    #[arg(
        long,
        env = "SPINE_BENCH_SECONDS",
        default_value_t = 5,
        value_name = "S"
    )]
    pub seconds: u64,
}

/// Subscribers who see each row of the shared workload.
const ROOM_SIZE: usize = 100;

const SETUP: &str = "
    CREATE TABLE IF NOT EXISTS public.bench_rt_members (room int NOT NULL, user_id uuid NOT NULL, PRIMARY KEY (room, user_id));
    ALTER TABLE public.bench_rt_members ENABLE ROW LEVEL SECURITY;
    DROP POLICY IF EXISTS own ON public.bench_rt_members;
    CREATE POLICY own ON public.bench_rt_members FOR SELECT TO authenticated USING (user_id = auth.uid());
    GRANT SELECT ON public.bench_rt_members TO authenticated;
    CREATE TABLE IF NOT EXISTS public.bench_rt_shared (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, room int NOT NULL,
        t bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    ALTER TABLE public.bench_rt_shared ENABLE ROW LEVEL SECURITY;
    DROP POLICY IF EXISTS members ON public.bench_rt_shared;
    CREATE POLICY members ON public.bench_rt_shared FOR SELECT TO authenticated
        USING (room IN (SELECT m.room FROM public.bench_rt_members m WHERE m.user_id = auth.uid()));
    GRANT SELECT ON public.bench_rt_shared TO authenticated;
    CREATE TABLE IF NOT EXISTS public.bench_rt_owned (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner_id uuid NOT NULL,
        t bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    ALTER TABLE public.bench_rt_owned ENABLE ROW LEVEL SECURITY;
    DROP POLICY IF EXISTS own ON public.bench_rt_owned;
    CREATE POLICY own ON public.bench_rt_owned FOR SELECT TO authenticated USING (auth.uid() = owner_id);
    GRANT SELECT ON public.bench_rt_owned TO authenticated;
    TRUNCATE public.bench_rt_members, public.bench_rt_shared, public.bench_rt_owned;
    SELECT spine.realtime_publish('public.bench_rt_members');
    SELECT spine.realtime_publish('public.bench_rt_shared');
    SELECT spine.realtime_publish('public.bench_rt_owned');";

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// What the subscribers saw during a step.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

/// Opens `users.len()` sockets, each joining `topic` with `binding` as its user.
async fn subscribe(
    addr: &str,
    anon: &str,
    tokens: &[String],
    topic: &str,
    bindings: Value,
    seen: Arc<Seen>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for token in tokens {
        let url = format!("ws://{addr}/realtime/v1/websocket?apikey={anon}&vsn=2.0.0");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        let join = json!(["1", "1", topic, "phx_join",
            {"config": {"postgres_changes": bindings, "broadcast": {"self": false}}, "access_token": token}]);
        ws.send(Message::Text(join.to_string().into())).await?;
        // The join reply first: the step starts only when everyone is live.
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                anyhow::bail!("socket closed during join");
            };
            let v: Value = serde_json::from_str(&t)?;
            if v[3] == "phx_reply" {
                anyhow::ensure!(v[4]["status"] == "ok", "join failed: {v}");
                break;
            }
        }
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_secs(20));
            let mut r = 10u64;
            loop {
                tokio::select! {
                    next = ws.next() => {
                        let Some(Ok(Message::Text(t))) = next else { return };
                        let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                        let sent = match v[3].as_str() {
                            Some("postgres_changes") => v[4]["data"]["record"]["t"].as_i64(),
                            Some("broadcast") => v[4]["payload"]["t"].as_i64(),
                            _ => None,
                        };
                        if let Some(sent) = sent {
                            seen.count.fetch_add(1, Ordering::Relaxed);
                            let lat = Duration::from_micros((now_micros() - sent).max(0) as u64);
                            seen.latencies.lock().unwrap().push(lat);
                        }
                    }
                    _ = beat.tick() => {
                        r += 1;
                        let hb = json!([null, r.to_string(), "phoenix", "heartbeat", {}]);
                        if ws.send(Message::Text(hb.to_string().into())).await.is_err() { return }
                    }
                }
            }
        }));
    }
    Ok(tasks)
}

/// Inserts `rate` rows/s for `seconds`, each its own transaction, spread over
/// the `writers` connections (one connection commits about 1,000/s here), the
/// value of row i being `arg(i)`; returns the rows written.
async fn write<P>(
    writers: &[tokio_postgres::Client],
    sql: &str,
    rate: usize,
    seconds: u64,
    arg: impl Fn(usize) -> P,
) -> anyhow::Result<usize>
where
    P: tokio_postgres::types::ToSql + Sync,
{
    let mut statements = Vec::new();
    for w in writers {
        statements.push(w.prepare(sql).await?);
    }
    let started = Instant::now();
    let (mut written, mut owed) = (0usize, 0f64);
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    while started.elapsed() < Duration::from_secs(seconds) {
        interval.tick().await;
        owed += rate as f64 / 100.0;
        let n = owed as usize;
        owed -= n as f64;
        let values: Vec<[P; 1]> = (0..n).map(|k| [arg(written + k)]).collect();
        written += n;
        let calls = values.iter().enumerate().map(|(k, v)| {
            let w = k % writers.len();
            writers[w].execute_raw(&statements[w], v.iter())
        });
        for r in futures_util::future::join_all(calls).await {
            r?;
        }
    }
    Ok(written)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Waits until `expected` arrived or nothing new came for 3 s; prints the row.
async fn report(label: &str, seen: &Seen, expected: u64, started: Instant) {
    let mut last = (seen.count.load(Ordering::Relaxed), Instant::now());
    while seen.count.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = seen.count.load(Ordering::Relaxed);
        if c != last.0 {
            last = (c, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let got = seen.count.swap(0, Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *seen.latencies.lock().unwrap());
    let elapsed = started.elapsed();
    println!(
        "{label:<40} {:>10.0} {:>9} {:>9} {:>9}",
        per_second(got as usize, elapsed),
        ms(quantile(&mut lat, 0.5)),
        ms(quantile(&mut lat, 0.99)),
        expected.saturating_sub(got)
    );
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = spine_tests::connect_to(&s.database_url).await?;
    db.batch_execute(SETUP).await?;
    let users: Vec<uuid::Uuid> = (0..s.subscribers).map(|_| uuid::Uuid::new_v4()).collect();
    let rooms = s.subscribers.div_ceil(ROOM_SIZE);
    for (i, u) in users.iter().enumerate() {
        db.execute(
            "INSERT INTO public.bench_rt_members VALUES ($1, $2)",
            &[&((i / ROOM_SIZE) as i32), u],
        )
        .await?;
    }
    let exp = (now_micros() / 1_000_000) as u64 + 3600;
    let sign = |claims: Value| spine_functions::jwt::sign(&claims, s.jwt_secret.as_bytes());
    let anon = sign(json!({"role": "anon", "exp": exp}));
    let tokens: Vec<String> = users
        .iter()
        .map(|u| sign(json!({"role": "authenticated", "sub": u.to_string(), "exp": exp})))
        .collect();

    // The write limit: rows/s into the published table (trigger and outbox
    // included) from 8 connections, single-row transactions, no subscriber.
    let limit = {
        let mut tasks = Vec::new();
        let started = Instant::now();
        for c in 0..8 {
            let url = s.database_url.clone();
            let owner = users[c % users.len()];
            tasks.push(tokio::spawn(async move {
                let db = spine_tests::connect_to(&url).await?;
                let st = db
                    .prepare("INSERT INTO public.bench_rt_owned (owner_id) VALUES ($1)")
                    .await?;
                let mut n = 0usize;
                while started.elapsed() < Duration::from_secs(3) {
                    db.execute(&st, &[&owner]).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await??;
        }
        per_second(n, started.elapsed())
    };

    let mut writers = Vec::new();
    for _ in 0..8 {
        writers.push(spine_tests::connect_to(&s.database_url).await?);
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _gateway = Guard(
        Command::new(&s.gateway_bin)
            .env("DATABASE_URL", &s.database_url)
            .env("SPINE_JWT_SECRET", &s.jwt_secret)
            .env("SPINE_GATEWAY_ADDR", &addr)
            .env("RUST_LOG", "warn")
            .spawn()?,
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("http://{addr}/health/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "spine-gateway did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "realtime benchmark: {} subscribers (distinct users, one websocket each), {} s per step, release build\n",
        s.subscribers, s.seconds
    );
    println!("baseline: the write limit (rows/s into the published table, 8 connections, no subscriber): {limit:.0}\n");
    println!(
        "{:<40} {:>10} {:>9} {:>9} {:>9}",
        "", "msgs/s", "p50 ms", "p99 ms", "lost"
    );

    // (a) shared visibility: every row visible to ROOM_SIZE subscribers.
    let seen = Arc::new(Seen::default());
    let shared = json!([{"event": "INSERT", "schema": "public", "table": "bench_rt_shared"}]);
    let tasks = subscribe(
        &addr,
        &anon,
        &tokens,
        "realtime:bench-shared",
        shared,
        seen.clone(),
    )
    .await?;
    for rate in [10usize, 30, 100, 300, 400] {
        let started = Instant::now();
        let rows = write(
            &writers,
            "INSERT INTO public.bench_rt_shared (room) VALUES ($1)",
            rate,
            s.seconds,
            |i| (i % rooms) as i32,
        )
        .await?;
        let per_row = ROOM_SIZE.min(s.subscribers) as u64;
        report(
            &format!("(a) shared, {rate} rows/s x {per_row} readers"),
            &seen,
            rows as u64 * per_row,
            started,
        )
        .await;
    }
    tasks.iter().for_each(|t| t.abort());

    // (b) owner policy: every row visible to its owner only.
    let seen = Arc::new(Seen::default());
    let owned = json!([{"event": "INSERT", "schema": "public", "table": "bench_rt_owned"}]);
    let tasks = subscribe(
        &addr,
        &anon,
        &tokens,
        "realtime:bench-owned",
        owned,
        seen.clone(),
    )
    .await?;
    for rate in [500usize, 1000, limit as usize] {
        let started = Instant::now();
        let rows = write(
            &writers,
            "INSERT INTO public.bench_rt_owned (owner_id) VALUES ($1)",
            rate,
            s.seconds,
            |i| users[i % users.len()],
        )
        .await?;
        report(
            &format!("(b) owner, {rate} rows/s x 1 reader"),
            &seen,
            rows as u64,
            started,
        )
        .await;
    }
    tasks.iter().for_each(|t| t.abort());

    // Broadcast fan-out: one sender, every subscriber receives.
    let seen = Arc::new(Seen::default());
    let tasks = subscribe(
        &addr,
        &anon,
        &tokens,
        "realtime:bench-fanout",
        json!([]),
        seen.clone(),
    )
    .await?;
    let (mut sender, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/realtime/v1/websocket?apikey={anon}&vsn=2.0.0"
    ))
    .await?;
    sender
        .send(Message::Text(
            json!(["1", "1", "realtime:bench-fanout", "phx_join", {"config": {}}])
                .to_string()
                .into(),
        ))
        .await?;
    for per_second_sent in [30u64, 100, 300] {
        let started = Instant::now();
        let mut sent = 0u64;
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        let mut owed = 0f64;
        while started.elapsed() < Duration::from_secs(s.seconds) {
            interval.tick().await;
            owed += per_second_sent as f64 / 100.0;
            while owed >= 1.0 {
                owed -= 1.0;
                sent += 1;
                let m = json!(["1", sent.to_string(), "realtime:bench-fanout", "broadcast",
                    {"type": "broadcast", "event": "tick", "payload": {"t": now_micros()}}]);
                sender.send(Message::Text(m.to_string().into())).await?;
            }
        }
        report(
            &format!(
                "broadcast, {per_second_sent} msgs/s x {} receivers",
                s.subscribers
            ),
            &seen,
            sent * s.subscribers as u64,
            started,
        )
        .await;
    }
    tasks.iter().for_each(|t| t.abort());
    println!("\nSupabase's published figures (their hardware, RLS on): 3,000 msgs/s micro-small, 4,000 msgs/s large-16XL (docs: realtime/throughput.json)");
    Ok(())
}
