//! The relay's promise under crashes, with real processes: 100,000 events from
//! concurrent writers while the relay is `kill -9`ed and restarted again and again,
//! then NATS killed and restarted mid-backlog, then Postgres restarted mid-backlog.
//! A JetStream consumer must see every event exactly once, in commit order.
//!
//! Alone in its test binary: it restarts the stack's Postgres, which no other test
//! may share at that moment (cargo runs test binaries one after another).

use spine_tests::daemons::{Nats, Worker};
use spine_tests::proc::wait_until;
use spine_tests::stack::restart_postgres;
use spine_tests::{connect as db, drop_sink, fresh_sink, sink_status};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const WRITERS: usize = 4;
const PER_TXN: i32 = 100;

/// Each writer emits `txns` transactions of PER_TXN events on its own subject,
/// numbering them; returns the ids of committed events.
async fn write(tag: &str, writers: usize, txns: usize, start_n: usize) -> Vec<Uuid> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let subject = format!("{tag}w{w}");
        tasks.push(tokio::spawn(async move {
            let db = db().await;
            let mut ids = Vec::with_capacity(txns * PER_TXN as usize);
            for t in 0..txns {
                let first = (start_n + t * PER_TXN as usize) as i32;
                let rows = db
                    .query(
                        "SELECT spine.emit('test.CountIncremented', jsonb_build_object('n', n), $1) \
                         FROM generate_series($2::int, $2::int + $3 - 1) n",
                        &[&subject, &first, &PER_TXN],
                    )
                    .await
                    .expect("emit batch");
                ids.extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_exactly_once_in_commit_order_across_crashes() {
    let admin = db().await;
    let sink = fresh_sink(&admin).await;
    let mut nats = Nats::start();
    let tag = format!("crash-{}/", Uuid::new_v4().simple());
    let started = Instant::now();

    // Phase 1: 80k events while a chaos loop kill -9s the relay every 0.3–0.9 s.
    let writing = Arc::new(AtomicBool::new(true));
    let chaos = {
        let (sink, url, writing) = (sink.clone(), nats.url(), writing.clone());
        tokio::spawn(async move {
            let mut kills = 0u32;
            let mut i = 0u64;
            while writing.load(Ordering::Relaxed) {
                let mut w = Worker::start(&sink, &url, &[]);
                i += 1;
                tokio::time::sleep(Duration::from_millis(300 + (i * 137) % 600)).await;
                w.kill9();
                kills += 1;
            }
            kills
        })
    };
    let mut emitted = write(&tag, WRITERS, 200, 0).await;
    writing.store(false, Ordering::Relaxed);
    let kills = chaos.await.unwrap();
    assert!(kills >= 3, "the relay was killed only {kills} times");
    let _worker = Worker::start(&sink, &nats.url(), &[]);

    // Phase 2: 10k more, then NATS killed and restarted while the relay drains.
    emitted.extend(write(&tag, WRITERS, 25, 20_000).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    nats.restart();

    // Phase 3: 10k more, then Postgres restarted while the relay drains.
    emitted.extend(write(&tag, WRITERS, 25, 22_500).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    restart_postgres();
    assert_eq!(emitted.len(), 100_000);

    let js = nats.jetstream().await;
    // The sink relays every event of the database, not only this test's (pg_cron
    // maintenance may emit some meanwhile): done when the stream holds at least
    // ours and the sink has nothing left.
    wait_until(
        "the stream holds 100k events and the sink's backlog is empty",
        Duration::from_secs(240),
        || {
            let (js, sink) = (js.clone(), sink.clone());
            async move {
                let enough = match js.get_stream("SPINE").await {
                    Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages >= 100_000),
                    Err(_) => false,
                };
                enough && sink_status(&db().await, &sink).await.backlog == 0
            }
        },
    )
    .await;
    let elapsed = started.elapsed();

    let messages: Vec<_> = nats
        .read_all("SPINE")
        .await
        .into_iter()
        .filter(|(_, _, ce)| ce["subject"].as_str().is_some_and(|s| s.starts_with(&tag)))
        .collect();
    let ids: Vec<Uuid> = messages
        .iter()
        .map(|(_, id, _)| id.parse().expect("Nats-Msg-Id is a uuid"))
        .collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        100_000,
        "exactly 100k messages (no duplicates stored)"
    );
    assert_eq!(unique.len(), 100_000, "no id twice");
    assert_eq!(
        unique,
        emitted.iter().copied().collect(),
        "the very ids that were committed"
    );

    // Per subject (one writer, committing sequentially), n must only increase.
    let mut last: HashMap<String, i64> = HashMap::new();
    for (_, _, ce) in &messages {
        let subject = ce["subject"].as_str().unwrap().to_string();
        let n = ce["data"]["n"].as_i64().unwrap();
        if let Some(prev) = last.insert(subject.clone(), n) {
            assert!(n > prev, "{subject}: {n} arrived after {prev}");
        }
    }
    assert_eq!(last.len(), WRITERS);

    let reconnect = db().await;
    let backlog = sink_status(&reconnect, &sink).await.backlog;
    assert_eq!(backlog, 0);
    println!(
        "crash test: 100000 events, relay killed {kills} times, NATS and Postgres restarted, \
         all delivered exactly once in {:.1}s",
        elapsed.as_secs_f64()
    );
    drop(_worker);
    drop_sink(&reconnect, &sink).await;
}
