//! The agent bridge end to end, against the dev stack's Postgres with Spine
//! and `bridge-supervisor` processes. One test, its parts in order: the
//! supervisors share one queue, so a part that kills one must not disturb the
//! timing another part checks.

use serde_json::json;
use spine_tests::cluster::psql;
use spine_tests::proc::{free_port, wait_until, ChildGuard};
use spine_tests::{connect, database_url};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;
use uuid::Uuid;

/// Settings the test runs with (the defaults are 5 s, 60 s, 60 a minute).
const QUIET: &str = "1 second";
const MAX_DEFER: &str = "3 seconds";
const POSTS_PER_MINUTE: i32 = 30;

fn apply_schema() {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.sql");
    psql(&database_url(), &["-f", schema.to_str().unwrap()]);
}

struct Supervisor {
    child: ChildGuard,
    port: u16,
}

fn supervisor(db_url: &str, crash_after_delivery: bool) -> Supervisor {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_bridge-supervisor"))
        .env("DATABASE_URL", db_url)
        .env("BRIDGE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("BRIDGE_LEASE_SECS", "2")
        .env("BRIDGE_POLL_MS", "100")
        .env(
            "BRIDGE_CRASH_AFTER_DELIVERY",
            crash_after_delivery.to_string(),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("start bridge-supervisor");
    Supervisor {
        child: ChildGuard(child),
        port,
    }
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// A session acting as `user` (the SQL API with Supabase's role and claims).
async fn as_user(user: Uuid) -> Client {
    let db = connect().await;
    let claims = json!({"sub": user.to_string(), "role": "authenticated"}).to_string();
    db.execute(
        "SELECT set_config('request.jwt.claims', $1, false)",
        &[&claims],
    )
    .await
    .unwrap();
    db.batch_execute("SET ROLE authenticated").await.unwrap();
    db
}

async fn post(
    db: &Client,
    thread: Uuid,
    body: &str,
    key: Option<&str>,
) -> Result<i64, tokio_postgres::Error> {
    db.query_one(
        "SELECT seq FROM public.bridge_post($1, $2, $3)",
        &[&thread, &body, &key],
    )
    .await
    .map(|r| r.get(0))
}

async fn thread(owner: Uuid, humans: &[Uuid], agents: &[Uuid]) -> Uuid {
    as_user(owner)
        .await
        .query_one(
            "SELECT public.bridge_create_thread('a thread', $1, $2)",
            &[&agents.to_vec(), &humans.to_vec()],
        )
        .await
        .unwrap()
        .get(0)
}

/// The thread's deliveries: (up to seq, delivered at in epoch seconds), oldest first.
async fn deliveries(db: &Client, thread: Uuid) -> Vec<(i64, f64)> {
    db.query(
        "SELECT d.upto_seq, extract(epoch FROM d.delivered_at)::float8 FROM public.bridge_deliveries d
          WHERE d.thread_id = $1 ORDER BY d.delivered_at",
        &[&thread],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

async fn mark_read(db: &Client, thread: Uuid, seq: i64) -> i64 {
    db.query_one("SELECT public.bridge_mark_read($1, $2)", &[&thread, &seq])
        .await
        .unwrap()
        .get(0)
}

async fn live_sessions(db: &Client) -> i64 {
    db.query_one("SELECT count(*) FROM public.bridge_live_sessions", &[])
        .await
        .unwrap()
        .get(0)
}

async fn epoch(db: &Client, sql: &str, thread: Uuid) -> f64 {
    db.query_one(sql, &[&thread]).await.unwrap().get(0)
}

/// A TCP proxy in front of Postgres, to take "the database" away from one
/// process without stopping the one every test shares.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the database is down
                }
                let (target, cut) = (target.clone(), cut2.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Proxy { port, up, cut }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bridge_end_to_end() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    apply_schema();
    let service = connect().await;
    service
        .execute(
            &format!(
                "UPDATE public.bridge_settings SET quiet_window = '{QUIET}', max_defer = '{MAX_DEFER}', \
                 posts_per_minute = {POSTS_PER_MINUTE}"
            ),
            &[],
        )
        .await
        .unwrap();
    let sup = supervisor(&database_url(), false);
    wait_until(
        "the supervisor is ready",
        Duration::from_secs(30),
        || async {
            get(sup.port, "/health/ready")
                .await
                .is_some_and(|(s, _)| s == 200)
        },
    )
    .await;

    // 1. Twenty posts at once from four people: seq 1..20, no gap, each audited.
    let people: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let agent = Uuid::new_v4();
    // A participant who only reads: their cursor is what they mark.
    let reader_id = Uuid::new_v4();
    let humans: Vec<Uuid> = people[1..].iter().copied().chain([reader_id]).collect();
    let t = thread(people[0], &humans, &[agent]).await;
    let mut posts = Vec::new();
    for i in 0..20 {
        let who = people[i % 4];
        posts.push(tokio::spawn(async move {
            post(&as_user(who).await, t, &format!("post {i}"), None)
                .await
                .unwrap()
        }));
    }
    let mut seqs: Vec<i64> = Vec::new();
    for p in posts {
        seqs.push(p.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=20).collect::<Vec<i64>>(), "gap-free, each once");
    let audited: i64 = service
        .query_one(
            "SELECT count(*) FROM spine.audit_log WHERE action = 'bridge.posted' AND target = $1",
            &[&format!("thread:{t}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 20, "every post audited");

    // 2. The same idempotency key twice (at once): one message.
    let alice = as_user(people[0]).await;
    let (a, b) = tokio::join!(
        async {
            post(&as_user(people[0]).await, t, "once", Some("k-1"))
                .await
                .unwrap()
        },
        async {
            post(&as_user(people[0]).await, t, "once", Some("k-1"))
                .await
                .unwrap()
        },
    );
    assert_eq!(a, b, "the same message");
    let rows: i64 = service
        .query_one("SELECT count(*) FROM public.bridge_messages WHERE thread_id = $1 AND idempotency_key = 'k-1'", &[&t])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);

    // 3. Cursors only move forward, and never past the last message.
    let reader = as_user(reader_id).await;
    assert_eq!(mark_read(&reader, t, 10).await, 10);
    assert_eq!(mark_read(&reader, t, 5).await, 10, "never back");
    assert_eq!(
        mark_read(&reader, t, 999).await,
        21,
        "never past the thread's last message"
    );

    // 4. A stranger cannot post; a rate guard stops a flood.
    let stranger = as_user(Uuid::new_v4()).await;
    let err = post(&stranger, t, "hi", None).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    let flooder = Uuid::new_v4();
    let ft = thread(flooder, &[], &[]).await;
    let fdb = as_user(flooder).await;
    for i in 0..POSTS_PER_MINUTE {
        post(&fdb, ft, &format!("{i}"), None).await.unwrap();
    }
    let err = post(&fdb, ft, "one more", None).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "54000", "{err}");

    // 5. Agent sessions: alive while they beat.
    let agent_db = as_user(agent).await;
    let session: Uuid = agent_db
        .query_one(
            "INSERT INTO public.bridge_sessions (agent) VALUES ('claude') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live_sessions(&agent_db).await, 1);
    agent_db
        .execute("UPDATE public.bridge_sessions SET heartbeat_at = now() - interval '1 minute' WHERE id = $1", &[&session])
        .await
        .unwrap();
    assert_eq!(
        live_sessions(&agent_db).await,
        0,
        "silent for a minute: gone"
    );
    agent_db
        .execute("SELECT public.bridge_heartbeat($1)", &[&session])
        .await
        .unwrap();
    assert_eq!(live_sessions(&agent_db).await, 1, "back after a heartbeat");
    assert_eq!(
        live_sessions(&alice).await,
        0,
        "a user sees their own sessions only"
    );

    // 6. A burst of five: one delivery, after the quiet window.
    let burst = thread(people[0], &[], &[agent]).await;
    for i in 0..5 {
        post(&alice, burst, &format!("burst {i}"), None)
            .await
            .unwrap();
    }
    wait_until("the burst's delivery", Duration::from_secs(15), || async {
        !deliveries(&service, burst).await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // room for a wrong second one
    let got = deliveries(&service, burst).await;
    assert_eq!(got.len(), 1, "one delivery for the burst: {got:?}");
    assert_eq!(got[0].0, 5, "up to the burst's last message");
    let last_post = epoch(&service, "SELECT extract(epoch FROM max(created_at))::float8 FROM public.bridge_messages WHERE thread_id = $1", burst).await;
    assert!(
        got[0].1 >= last_post + 1.0,
        "after the quiet window: {got:?}, last post {last_post}"
    );

    // 6b. A trigger enqueued by hand by someone outside the thread wakes no one.
    let quiet_thread = thread(people[0], &[], &[]).await;
    post(&alice, quiet_thread, "nobody is triggered by this", None)
        .await
        .unwrap();
    stranger
        .execute(
            "SELECT spine.enqueue_debounced('bridge_triggers', jsonb_build_object('thread', $1::uuid), 'x', '0 seconds')",
            &[&quiet_thread],
        )
        .await
        .unwrap();
    wait_until(
        "the forged trigger is run",
        Duration::from_secs(15),
        || async {
            get(sup.port, "/metrics")
                .await
                .is_some_and(|(_, m)| m.contains("bridge_refused_total 1"))
        },
    )
    .await;
    assert!(
        deliveries(&service, quiet_thread).await.is_empty(),
        "refused"
    );

    // 7. Steady traffic (a post every 300 ms for 6 s, never quiet for 1 s): a
    //    delivery at the max defer, while the traffic goes on.
    let steady = thread(people[1], &[], &[agent]).await;
    let bob = as_user(people[1]).await;
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(6) {
        post(&bob, steady, &format!("steady {n}"), None)
            .await
            .unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_until(
        "the steady thread's delivery",
        Duration::from_secs(15),
        || async { !deliveries(&service, steady).await.is_empty() },
    )
    .await;
    let got = deliveries(&service, steady).await;
    let first_post = epoch(&service, "SELECT extract(epoch FROM min(created_at))::float8 FROM public.bridge_messages WHERE thread_id = $1", steady).await;
    let last_post = epoch(&service, "SELECT extract(epoch FROM max(created_at))::float8 FROM public.bridge_messages WHERE thread_id = $1", steady).await;
    assert!(
        got[0].1 >= first_post + 3.0,
        "not before the max defer: {got:?} first post {first_post}"
    );
    assert!(
        got[0].1 < last_post,
        "during the traffic, not after it went quiet: {got:?} last post {last_post}"
    );
    // Every trigger so far run (the steady thread's last one too), so the next
    // supervisor's first job is the one part 8 makes.
    wait_until("no trigger pending", Duration::from_secs(20), || async {
        service
            .query_one(
                "SELECT count(*) FROM spine.jobs WHERE queue = 'bridge_triggers'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
    })
    .await;
    let deferrals = get(sup.port, "/metrics").await.unwrap().1;
    println!(
        "steady: {n} posts, first delivery {:.1} s after the first post; {deferrals}",
        got[0].1 - first_post
    );
    drop(sup);

    // 8. kill -9 between recording a delivery and completing its job: exactly
    //    one delivery. The crashing supervisor exits right after the record.
    let crashing = supervisor(&database_url(), true);
    let killed = thread(people[2], &[], &[agent]).await;
    post(&as_user(people[2]).await, killed, "deliver me once", None)
        .await
        .unwrap();
    let mut child = crashing.child;
    let status = tokio::task::spawn_blocking(move || {
        let status = child.0.wait().unwrap();
        (child, status)
    });
    let (_child, status) = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "it died after delivering");
    assert_eq!(deliveries(&service, killed).await.len(), 1);
    let after = supervisor(&database_url(), false);
    wait_until("the job completes after its lease", Duration::from_secs(20), || async {
        service
            .query_one(
                "SELECT count(*) FROM spine.jobs_archive WHERE queue = 'bridge_triggers' AND state = 'completed' \
                   AND payload->>'thread' = $1",
                &[&killed.to_string()],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    assert_eq!(
        deliveries(&service, killed).await.len(),
        1,
        "exactly one delivery"
    );
    let triggered: i64 = service
        .query_one(
            "SELECT count(*) FROM spine.events WHERE type = 'bridge.AgentTriggered' AND subject = $1",
            &[&format!("thread/{killed}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggered, 1, "one AgentTriggered event");
    drop(after);

    // 9. /health/ready is 503 while the database is away, and back after.
    let url = database_url();
    let parsed = url::Url::parse(&url).unwrap();
    let target = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(target).await;
    let mut through = parsed.clone();
    through.set_port(Some(proxy.port)).unwrap();
    let watched = supervisor(through.as_str(), false);
    wait_until(
        "ready through the proxy",
        Duration::from_secs(30),
        || async {
            get(watched.port, "/health/ready")
                .await
                .is_some_and(|(s, _)| s == 200)
        },
    )
    .await;
    proxy.down();
    wait_until(
        "not ready while the database is away",
        Duration::from_secs(10),
        || async {
            get(watched.port, "/health/ready")
                .await
                .is_some_and(|(s, _)| s == 503)
        },
    )
    .await;
    assert_eq!(
        get(watched.port, "/health/live").await.unwrap().0,
        200,
        "alive all the same"
    );
    assert!(get(watched.port, "/metrics")
        .await
        .unwrap()
        .1
        .contains("bridge_ready 0"));
    proxy.restore();
    wait_until("ready again", Duration::from_secs(20), || async {
        get(watched.port, "/health/ready")
            .await
            .is_some_and(|(s, _)| s == 200)
    })
    .await;
}
