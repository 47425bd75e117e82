//! NATS request/reply into Spine: round trip and requests/s of a verb served by
//! a SQL function (`spine.expose_service`) and by an edge function, at 1 and 16
//! concurrent clients, next to a bare NATS request/reply echo on the same
//! server (a responder in this process that sends the payload back: the limit).

use crate::stats::{per_second, quantile};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use spine_tests::proc::{free_port, ChildGuard as Guard};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The dev stack's NATS.
    #[arg(long, env = "NATS_URL", value_name = "NATS_URL")]
    pub nats_url: String,
    /// The spine-worker binary to run (cargo xtask bench passes the release build).
    #[arg(long, env = "SPINE_WORKER_BIN", value_name = "SPINE_WORKER_BIN")]
    pub worker_bin: String,
    /// Requests per figure.
    #[arg(
        long,
        env = "SPINE_BENCH_CALLS",
        default_value_t = 5_000,
        value_name = "N"
    )]
    pub calls: usize,
}

const PAYLOAD: &str = r#"{"data": {"note": "buy milk", "n": 42}}"#;

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (db, connection) = tokio_postgres::connect(&s.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let tag = std::process::id();
    let function = format!("bench-echo-{tag}");
    db.batch_execute(
        "CREATE OR REPLACE FUNCTION public.bench_svc_echo(data jsonb) RETURNS jsonb
             LANGUAGE sql STABLE AS 'SELECT data';
         GRANT EXECUTE ON FUNCTION public.bench_svc_echo(jsonb) TO anon;
         SELECT spine.expose_service('bench', 'echo', 'public.bench_svc_echo(jsonb)');",
    )
    .await?;
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[
            &json!({"name": function, "version": "1.0.0", "verify_jwt": false}),
            &"Deno.serve(async (req) => new Response(await req.text(), \
               { headers: { 'content-type': 'application/json' } }));",
        ],
    )
    .await?;
    let prefix = format!("bsvc{tag}");
    let _worker = Guard(
        Command::new(&s.worker_bin)
            .env("DATABASE_URL", &s.database_url)
            .env("NATS_URL", &s.nats_url)
            .env("SPINE_RELAY_SINK", format!("bench_svc_{tag}"))
            .env("SPINE_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("SPINE_JOB_QUEUES", "")
            .env(
                "SPINE_SERVICES_SUBJECT",
                format!("{prefix}.{{service}}.{{verb}}"),
            )
            .env("RUST_LOG", "error")
            .spawn()?,
    );
    let nats = async_nats::connect(&s.nats_url).await?;
    // The bare echo: what request/reply costs with nothing behind it.
    let echo_subject = format!("becho{tag}.x");
    let mut echo = nats.subscribe(echo_subject.clone()).await?;
    let responder = nats.clone();
    tokio::spawn(async move {
        while let Some(m) = echo.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    let sql = format!("{prefix}.bench.echo");
    let func = format!("{prefix}.{function}.echo");
    // Ready when the worker answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while nats.request(sql.clone(), PAYLOAD.into()).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the worker does not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!(
        "services: {} requests per figure, payload {} bytes",
        s.calls,
        PAYLOAD.len()
    );
    let mut rates = Vec::new();
    for (label, subject) in [
        ("bare NATS echo (the limit)", &echo_subject),
        ("SQL function verb", &sql),
        ("edge function verb", &func),
    ] {
        // Warm-up: the function's first call loads and compiles it.
        for _ in 0..50 {
            check(
                &nats.request(subject.clone(), PAYLOAD.into()).await?.payload,
                label,
            )?;
        }
        let mut samples = Vec::with_capacity(s.calls);
        let started = Instant::now();
        for _ in 0..s.calls {
            let t = Instant::now();
            let reply = nats.request(subject.clone(), PAYLOAD.into()).await?;
            samples.push(t.elapsed());
            check(&reply.payload, label)?;
        }
        let one = per_second(s.calls, started.elapsed());
        let p50 = quantile(&mut samples, 0.5);
        let p99 = quantile(&mut samples, 0.99);
        let sixteen = concurrent(&nats, subject, s.calls, 16, label).await?;
        println!(
            "  {label:<28} 1 client: p50 {:>7.3} ms  p99 {:>7.3} ms {one:>8.0}/s   16 clients: {sixteen:>8.0}/s",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
        );
        rates.push((one, sixteen));
    }
    // The same work done by hand: the verb's four statements (BEGIN, the
    // settings, the call, COMMIT) pipelined on a connection of one's own per
    // client, no NATS, no envelope.
    let mut samples = Vec::with_capacity(s.calls);
    let one_conn = by_hand_client(&s.database_url).await?;
    let started = Instant::now();
    for _ in 0..s.calls {
        let t = Instant::now();
        one_conn.call().await?;
        samples.push(t.elapsed());
    }
    let one = per_second(s.calls, started.elapsed());
    let sixteen = by_hand_concurrent(&s.database_url, s.calls, 16).await?;
    println!(
        "  {:<28} 1 client: p50 {:>7.3} ms  p99 {:>7.3} ms {one:>8.0}/s   16 clients: {sixteen:>8.0}/s",
        "same SQL by hand (Postgres)",
        quantile(&mut samples, 0.5).as_secs_f64() * 1e3,
        quantile(&mut samples, 0.99).as_secs_f64() * 1e3,
    );
    let hand = (one, sixteen);
    let (echo, sqlv, funcv) = (rates[0], rates[1], rates[2]);
    println!(
        "\n  SQL verb ÷ same SQL by hand: {:.0} % (1 client), {:.0} % (16 clients)",
        100.0 * sqlv.0 / hand.0,
        100.0 * sqlv.1 / hand.1
    );
    println!(
        "  SQL verb ÷ bare echo: {:.0} % (1 client), {:.0} % (16 clients; goal ≥ 50 %)",
        100.0 * sqlv.0 / echo.0,
        100.0 * sqlv.1 / echo.1
    );
    println!(
        "  function verb ÷ bare echo: {:.0} % (1 client), {:.0} % (16 clients)",
        100.0 * funcv.0 / echo.0,
        100.0 * funcv.1 / echo.1
    );
    db.execute("SELECT spine.unexpose_service('bench', 'echo')", &[])
        .await?;
    Ok(())
}

/// One connection doing the SQL verb's work directly.
struct ByHand {
    client: tokio_postgres::Client,
    act_as: tokio_postgres::Statement,
    verb: tokio_postgres::Statement,
    data: serde_json::Value,
}

async fn by_hand_client(url: &str) -> anyhow::Result<ByHand> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let act_as = client
        .prepare(
            "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
             set_config('spine.causation_id', $3, true), set_config('spine.correlation_id', $4, true), \
             set_config('statement_timeout', $5, true)",
        )
        .await?;
    let verb = client
        .prepare("SELECT to_jsonb(public.bench_svc_echo($1::jsonb))")
        .await?;
    let data: serde_json::Value = serde_json::from_str(PAYLOAD)?;
    Ok(ByHand {
        client,
        act_as,
        verb,
        data: data["data"].clone(),
    })
}

impl ByHand {
    async fn call(&self) -> anyhow::Result<()> {
        let (id, claims) = (uuid::Uuid::new_v4().to_string(), r#"{"role":"anon"}"#);
        let settings: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&"anon", &claims, &id, &id, &"5000ms"];
        let data: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&self.data];
        let (begin, set, answer, commit) = tokio::join!(
            self.client.batch_execute("BEGIN"),
            self.client.execute(&self.act_as, &settings),
            self.client.query_one(&self.verb, &data),
            self.client.batch_execute("COMMIT"),
        );
        begin?;
        set?;
        let answer: serde_json::Value = answer?.get(0);
        commit?;
        anyhow::ensure!(answer["note"] == "buy milk", "by hand: {answer}");
        Ok(())
    }
}

async fn by_hand_concurrent(url: &str, calls: usize, clients: usize) -> anyhow::Result<f64> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(by_hand_client(url).await?);
    }
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(calls));
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let left = left.clone();
            tokio::spawn(async move {
                while left
                    .fetch_update(
                        std::sync::atomic::Ordering::AcqRel,
                        std::sync::atomic::Ordering::Acquire,
                        |n| n.checked_sub(1),
                    )
                    .is_ok()
                {
                    conn.call().await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(per_second(calls, started.elapsed()))
}

/// Requests/s with `clients` requests always in flight.
async fn concurrent(
    nats: &async_nats::Client,
    subject: &str,
    calls: usize,
    clients: usize,
    label: &str,
) -> anyhow::Result<f64> {
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(calls));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (nats, subject, left) = (nats.clone(), subject.to_string(), left.clone());
            let label = label.to_string();
            tokio::spawn(async move {
                while left
                    .fetch_update(
                        std::sync::atomic::Ordering::AcqRel,
                        std::sync::atomic::Ordering::Acquire,
                        |n| n.checked_sub(1),
                    )
                    .is_ok()
                {
                    let reply = nats.request(subject.clone(), PAYLOAD.into()).await?;
                    check(&reply.payload, &label)?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(per_second(calls, started.elapsed()))
}

/// The echo answers the payload, the verbs an ok envelope with its data: both
/// carry the note under `data`.
fn check(payload: &Bytes, label: &str) -> anyhow::Result<()> {
    let v: serde_json::Value = serde_json::from_slice(payload)?;
    let fine = v["data"]["note"] == "buy milk" && v["ok"] != false;
    anyhow::ensure!(fine, "{label}: unexpected reply {v}");
    Ok(())
}
