//! NATS ingress against a real nats-server: messages published to ingress
//! subjects are written exactly once — when the worker dies between its commit
//! and its acks (the redelivered batch is recognised), and when it is killed
//! with SIGKILL mid-stream and another takes over; a message that cannot be
//! written is kept with its reason; `….ingest.{source}` lands records through
//! spine.ingest as the token's user.

use async_nats::jetstream;
use serde_json::json;
use spine_tests::daemons::{Nats, Worker};
use spine_tests::proc::wait_until;
use spine_tests::{connect, one};
use std::time::Duration;
use uuid::Uuid;

const SECRET: &str = "ingress-test-secret-with-at-least-32-chars";

struct Ingress {
    tag: String,
    stream: String,
    env: Vec<(String, String)>,
}

impl Ingress {
    fn new() -> Ingress {
        let tag = Uuid::new_v4().simple().to_string()[..10].to_string();
        let stream = format!("IN_{tag}");
        let env = vec![
            ("SPINE_INGRESS_SUBJECTS".into(), format!("t{tag}.>")),
            ("SPINE_INGRESS_STREAM".into(), stream.clone()),
            ("SPINE_JWT_SECRET".into(), SECRET.into()),
            // What a killed worker had fetched comes again after this.
            ("SPINE_INGRESS_ACK_WAIT_SECS".into(), "3".into()),
        ];
        Ingress { tag, stream, env }
    }

    fn worker(&self, nats: &Nats, extra: &[(&str, &str)]) -> Worker {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend_from_slice(extra);
        Worker::start(&format!("t_{}", Uuid::new_v4().simple()), &nats.url(), &env)
    }

    /// Publishes events `from..to` (every other one with a Nats-Msg-Id).
    async fn publish(&self, js: &jetstream::Context, from: i32, to: i32) {
        let mut acks = Vec::new();
        for i in from..to {
            let body = json!({"type": format!("t{}.ThingArrived", self.tag),
                              "data": {"i": i}, "subject": format!("in/{i}")});
            let subject = format!("t{}.events", self.tag);
            let ack = if i % 2 == 0 {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("{}-{i}", self.tag).as_str());
                js.publish_with_headers(subject, headers, body.to_string().into())
                    .await
            } else {
                js.publish(subject, body.to_string().into()).await
            };
            acks.push(ack.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }

    /// (events written, distinct subjects among them).
    async fn written(&self, db: &tokio_postgres::Client) -> (i64, i64) {
        let row = db
            .query_one(
                "SELECT count(*), count(DISTINCT subject) FROM spine.events WHERE type = $1",
                &[&format!("t{}.ThingArrived", self.tag)],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// Waits until the durable consumer has nothing pending or unacknowledged.
    async fn drained(&self, js: &jetstream::Context) {
        wait_until(
            "the ingress consumer drained",
            Duration::from_secs(60),
            || async {
                let Ok(stream) = js.get_stream(&self.stream).await else {
                    return false;
                };
                let Ok(mut consumer) = stream
                    .get_consumer::<jetstream::consumer::pull::Config>("spine-ingress")
                    .await
                else {
                    return false;
                };
                let info = consumer.info().await.unwrap();
                info.num_pending == 0 && info.num_ack_pending == 0
            },
        )
        .await;
    }
}

async fn stream_ready(js: &jetstream::Context, name: &str) {
    wait_until("the ingress stream", Duration::from_secs(30), || async {
        js.get_stream(name).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn ingress_writes_each_message_once_across_crashes() {
    let db = connect().await;
    let nats = Nats::start();
    let ingress = Ingress::new();
    let js = nats.jetstream().await;

    // 1. The worker dies right after committing its first batch, before
    //    acking it: those messages come again, and must write nothing again.
    let mut crashing = ingress.worker(&nats, &[("SPINE_INGRESS_CRASH_AFTER_COMMIT", "true")]);
    stream_ready(&js, &ingress.stream).await;
    ingress.publish(&js, 0, 50).await;
    let status = crashing.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "it aborted after its commit");
    let committed = ingress.written(&db).await.0;
    assert!(committed > 0, "the batch committed before the crash");
    let _second = ingress.worker(&nats, &[]);
    ingress.drained(&js).await;
    assert_eq!(
        ingress.written(&db).await,
        (50, 50),
        "the {committed} redelivered messages wrote nothing again"
    );

    // 2. Killed with SIGKILL mid-stream while the second worker shares the load.
    let mut victim = ingress.worker(&nats, &[]);
    ingress.publish(&js, 50, 1050).await;
    wait_until(
        "some of the stream written",
        Duration::from_secs(30),
        || async { ingress.written(&db).await.0 >= 350 },
    )
    .await;
    victim.kill9();
    eprintln!(
        "ingress: killed one worker with {} of 1,050 written",
        ingress.written(&db).await.0
    );
    ingress.drained(&js).await;
    assert_eq!(ingress.written(&db).await, (1050, 1050));
    let keys: i64 = one(
        &db,
        "SELECT count(*) FROM spine.ingress_log WHERE subject = $1 AND status = 'written'",
        &[&format!("t{}.events", ingress.tag)],
    )
    .await;
    assert_eq!(keys, 1050);
}

#[tokio::test]
async fn bad_messages_are_kept_and_ingest_acts_as_the_token() {
    let db = connect().await;
    let nats = Nats::start();
    let ingress = Ingress::new();
    let js = nats.jetstream().await;
    let _worker = ingress.worker(&nats, &[]);
    stream_ready(&js, &ingress.stream).await;
    let tag = &ingress.tag;

    let alice = Uuid::new_v4();
    let source = format!("crm{tag}");
    db.execute(
        "SELECT spine.save_source($1, $2, $3)",
        &[
            &source,
            &json!({"kind": "person", "fields": {"name": {"path": "full_name", "required": true}}}),
            &alice,
        ],
    )
    .await
    .unwrap();
    let token = spine_core::auth::sign(
        &json!({"sub": alice.to_string(), "role": "authenticated", "exp": 4_000_000_000u64}),
        SECRET.as_bytes(),
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    js.publish_with_headers(
        format!("t{tag}.ingest.{source}"),
        headers,
        json!([{"id": 1, "full_name": "Ada Lovelace"}])
            .to_string()
            .into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    for body in ["not json", r#"{"type": "not a type", "data": {}}"#] {
        js.publish(format!("t{tag}.bad"), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut forged = async_nats::HeaderMap::new();
    forged.insert("Authorization", "Bearer not.a.token");
    js.publish_with_headers(
        format!("t{tag}.bad"),
        forged,
        json!({"type": format!("t{tag}.ThingArrived"), "data": {}})
            .to_string()
            .into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    ingress.drained(&js).await;

    let owner: Option<Uuid> = db
        .query_opt(
            "SELECT owner_id FROM spine.entities WHERE kind = 'person' AND data->>'name' = 'Ada Lovelace' \
              AND owner_id = $1",
            &[&alice],
        )
        .await
        .unwrap()
        .map(|r| r.get(0));
    assert_eq!(owner, Some(alice), "the record landed as Alice's");
    let rejected: Vec<(String, String)> = db
        .query(
            "SELECT error, payload FROM spine.ingress_log WHERE subject = $1 AND status = 'rejected' \
              ORDER BY stream_seq",
            &[&format!("t{tag}.bad")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(rejected[0].0.contains("not JSON") && rejected[0].1 == "not json");
    assert!(rejected[1].0.contains("22023"), "{rejected:?}");
    assert!(rejected[2].0.contains("token"), "{rejected:?}");
    assert_eq!(
        ingress.written(&db).await.0,
        0,
        "the forged message wrote nothing"
    );
}
