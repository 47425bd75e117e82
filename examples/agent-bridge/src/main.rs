//! `bridge-supervisor`: runs the agent bridge's thread triggers.
//!
//! Each post to a thread with an agent debounces the thread's job in Spine's
//! queue `bridge_triggers` (`spine.enqueue_debounced`: due a quiet window after
//! the last post, never later than the max defer after the first). This process
//! leases those jobs (`spine.fetch_jobs`), checks again that the thread has been
//! quiet (a post that landed while the job was being leased defers it:
//! `spine.snooze_job`, within the max defer), and delivers: one transaction
//! records the delivery (unique per job) and emits `bridge.AgentTriggered`,
//! which the relay sends to the agents over NATS. Then the job completes. A
//! supervisor killed between the two leaves the job leased; when the lease runs
//! out, a supervisor runs it again and finds it delivered: exactly one delivery.
//!
//! `/health/live` (the process runs), `/health/ready` (the database answers,
//! within a second), `/metrics` (Prometheus text).

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(about = "Runs the agent bridge's thread triggers from Spine's job queue")]
struct Args {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, env = "BRIDGE_HTTP_ADDR", default_value = "127.0.0.1:54398")]
    http_addr: std::net::SocketAddr,
    /// How long a leased trigger is this process's before another may run it.
    #[arg(long, env = "BRIDGE_LEASE_SECS", default_value_t = 30)]
    lease_secs: u64,
    #[arg(long, env = "BRIDGE_POLL_MS", default_value_t = 200)]
    poll_ms: u64,
    /// Test hook: exit (as if killed) right after recording a delivery, before
    /// the job completes.
    #[arg(long, env = "BRIDGE_CRASH_AFTER_DELIVERY", default_value_t = false)]
    crash_after_delivery: bool,
}

#[derive(Default)]
struct Metrics {
    deliveries: AtomicU64,
    deferrals: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    ready: AtomicBool,
}

struct Shared {
    db: spine_db::DbConfig,
    /// The readiness probe's own session (reconnected when it broke).
    probe: Mutex<Option<tokio_postgres::Client>>,
    metrics: Metrics,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = spine_db::DbConfig::parse_for_process(&args.database_url, "bridge-supervisor/0.2.0")
        .context("DATABASE_URL")?;
    let shared = Arc::new(Shared {
        db,
        probe: Mutex::new(None),
        metrics: Metrics::default(),
    });
    let http = Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(args.http_addr).await?;
    println!("bridge-supervisor on http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, http).await });
    let worker = format!("bridge-supervisor-{}", uuid::Uuid::new_v4());
    loop {
        // A session per round of work; a broken one (Postgres restarted) is
        // replaced on the next round, after a pause.
        if let Err(e) = run(&shared, &args, &worker).await {
            shared.metrics.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("bridge-supervisor: {e:#}; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn connect(db: &spine_db::DbConfig) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = db.connect().await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Leases and runs triggers until the session fails.
async fn run(shared: &Shared, args: &Args, worker: &str) -> anyhow::Result<()> {
    let mut db = connect(&shared.db).await?;
    let lease = format!("{} seconds", args.lease_secs);
    loop {
        let jobs = db
            .query(
                "SELECT id, payload->>'thread', attempts, created_at, owner_id FROM spine.fetch_jobs(ARRAY['bridge_triggers'], $1, 10, $2::text::interval)",
                &[&worker, &lease],
            )
            .await?;
        if jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
            continue;
        }
        for job in jobs {
            let job = Job {
                id: job.get(0),
                thread: job.get::<_, Option<String>>(1).and_then(|t| t.parse().ok()),
                attempt: job.get(2),
                created: job.get(3),
                owner: job.get(4),
            };
            trigger(&mut db, shared, args, worker, &job).await?;
        }
    }
}

/// A leased trigger.
struct Job {
    id: i64,
    /// None for a payload without a thread id (enqueued by hand): not delivered.
    thread: Option<uuid::Uuid>,
    attempt: i32,
    created: chrono::DateTime<chrono::Utc>,
    /// The poster whose post (re)armed it.
    owner: Option<uuid::Uuid>,
}

async fn trigger(
    db: &mut tokio_postgres::Client,
    shared: &Shared,
    args: &Args,
    worker: &str,
    job: &Job,
) -> anyhow::Result<()> {
    let (id, attempt, created) = (job.id, job.attempt, job.created);
    // Only a participant's post triggers its thread's agents.
    let allowed: bool = match (job.thread, job.owner) {
        (Some(thread), Some(owner)) => db
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM public.bridge_participants WHERE thread_id = $1 AND user_id = $2)",
                &[&thread, &owner],
            )
            .await?
            .get(0),
        _ => false,
    };
    let Some(thread) = job.thread.filter(|_| allowed) else {
        shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
        db.execute(
            "SELECT spine.complete_jobs(ARRAY[$1::bigint], $2)",
            &[&id, &worker],
        )
        .await?;
        return Ok(());
    };
    // Defer re-check: quiet since the last post? If not, and the max defer has
    // not passed, come back when it would be.
    let recheck = db
        .query_one(
            "SELECT (SELECT max(created_at) FROM public.bridge_messages WHERE thread_id = $1) + s.quiet_window,
                    $2::timestamptz + s.max_defer, clock_timestamp()
               FROM public.bridge_settings s",
            &[&thread, &created],
        )
        .await?;
    let (quiet_until, defer_until, now): (
        Option<chrono::DateTime<chrono::Utc>>,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    ) = (recheck.get(0), recheck.get(1), recheck.get(2));
    if let Some(quiet_until) = quiet_until.filter(|q| *q > now && defer_until > now) {
        let until = quiet_until.min(defer_until);
        db.execute(
            "SELECT spine.snooze_job($1, $2, $3)",
            &[&id, &until, &worker],
        )
        .await?;
        shared.metrics.deferrals.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    // Deliver: the record and the event in one transaction, once per job, and
    // only for messages no delivery covered yet (the thread row's lock orders
    // supervisors delivering one thread).
    let tx = db.transaction().await?;
    tx.execute(
        "SELECT 1 FROM public.bridge_threads WHERE id = $1 FOR UPDATE",
        &[&thread],
    )
    .await?;
    let delivered = tx
        .execute(
            "INSERT INTO public.bridge_deliveries (job_id, thread_id, upto_seq, attempt)
             SELECT $1, t.id, t.last_seq, $3 FROM public.bridge_threads t
              WHERE t.id = $2
                AND t.last_seq > coalesce((SELECT max(upto_seq) FROM public.bridge_deliveries WHERE thread_id = $2), 0)
             ON CONFLICT (job_id) DO NOTHING",
            &[&id, &thread, &attempt],
        )
        .await?;
    if delivered == 1 {
        tx.execute(
            "SELECT spine.emit('bridge.AgentTriggered',
                    jsonb_build_object('thread', $1::uuid, 'upto_seq', (SELECT last_seq FROM public.bridge_threads WHERE id = $1), 'job', $2::bigint),
                    'thread/' || $1::uuid)",
            &[&thread, &id],
        )
        .await?;
    }
    tx.commit().await?;
    if delivered == 1 {
        shared.metrics.deliveries.fetch_add(1, Ordering::Relaxed);
        if args.crash_after_delivery {
            eprintln!("bridge-supervisor: delivered job {id}; exiting before it completes (BRIDGE_CRASH_AFTER_DELIVERY)");
            std::process::exit(137);
        }
    }
    db.execute(
        "SELECT spine.complete_jobs(ARRAY[$1::bigint], $2)",
        &[&id, &worker],
    )
    .await?;
    Ok(())
}

/// 200 when the database answers `SELECT 1` within a second, else 503.
async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    let mut probe = shared.probe.lock().await;
    let answered = async {
        if probe.as_ref().is_none_or(|c| c.is_closed()) {
            *probe = Some(connect(&shared.db).await?);
        }
        probe
            .as_ref()
            .expect("set above")
            .simple_query("SELECT 1")
            .await?;
        anyhow::Ok(())
    };
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(1), answered).await,
        Ok(Ok(()))
    );
    if !ok {
        *probe = None;
    }
    shared.metrics.ready.store(ok, Ordering::Relaxed);
    match ok {
        true => (StatusCode::OK, "ready"),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database does not answer",
        ),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> String {
    let m = &shared.metrics;
    format!(
        "# TYPE bridge_deliveries_total counter\nbridge_deliveries_total {}\n\
         # TYPE bridge_deferrals_total counter\nbridge_deferrals_total {}\n\
         # TYPE bridge_refused_total counter\nbridge_refused_total {}\n\
         # TYPE bridge_errors_total counter\nbridge_errors_total {}\n\
         # TYPE bridge_ready gauge\nbridge_ready {}\n",
        m.deliveries.load(Ordering::Relaxed),
        m.deferrals.load(Ordering::Relaxed),
        m.refused.load(Ordering::Relaxed),
        m.errors.load(Ordering::Relaxed),
        u8::from(m.ready.load(Ordering::Relaxed)),
    )
}
