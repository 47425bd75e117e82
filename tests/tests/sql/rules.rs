//! Rules against the real cluster, as users call them through PostgREST: the
//! founding call flow, every action kind with templates, validation errors, the
//! loop guard, idempotent replay, cache invalidation across sessions, RLS and
//! explain. Every test uses fresh users, so tests do not see each other's rules.

use serde_json::{json, Value};
use spine_tests::{act_as, as_user, column, connect, one, sqlstate};
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

fn claims(user: Uuid) -> Value {
    json!({"sub": user.to_string(), "role": "authenticated"})
}

async fn user_queue(db: &Client) -> String {
    let q = format!("r{}", Uuid::new_v4().simple());
    db.execute("SELECT spine.create_queue($1, user_enqueue => true)", &[&q])
        .await
        .unwrap();
    q
}

async fn save_rule(
    tx: &Transaction<'_>,
    name: &str,
    on_event: &str,
    condition: Value,
    actions: Value,
) -> Uuid {
    one(
        tx,
        "SELECT spine.save_rule($1, $2, $3, $4)",
        &[&name, &on_event, &condition, &actions],
    )
    .await
}

async fn emit(tx: &Transaction<'_>, event_type: &str, data: Value) -> Uuid {
    one(
        tx,
        "SELECT spine.emit($1, $2, 'call/1')",
        &[&event_type, &data],
    )
    .await
}

/// (payload, owner) of the jobs in a queue, oldest first.
async fn jobs_in(db: &Client, queue: &str) -> Vec<(Value, Option<Uuid>, Option<String>)> {
    db.query(
        "SELECT payload, owner_id, idempotency_key FROM spine.jobs WHERE queue = $1 ORDER BY id",
        &[&queue],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn partner_at_work() -> Value {
    json!({"and": [
        {"==": [{"var": "event.data.caller"}, "Partner"]},
        {"==": [{"var": "state.location"}, "Work"]}
    ]})
}

/// The founding flow: a call from "Partner" while Alice's location is "Work"
/// enqueues a message job for Alice — not for another caller, not at home, and
/// never for Bob's events. The firing is recorded with its inputs and announced as
/// rules.RuleFired, caused by the call.
#[tokio::test]
async fn founding_call_flow() {
    let mut db = connect().await;
    let queue = user_queue(&db).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let q = queue.clone();
    as_user(&mut db, alice, async |tx| {
        tx.execute("SELECT spine.set_state('location', '\"Work\"')", &[]).await.unwrap();
        save_rule(
            tx,
            "partner-at-work",
            "communication.CallStarted",
            partner_at_work(),
            json!([{"enqueue": {"queue": q, "priority": "realtime",
                "payload": {"to": "{{event.data.caller}}", "text": "In a meeting at {{state.location}}, call you back"}}}]),
        )
        .await;
    })
    .await;

    let call = as_user(&mut db, alice, async |tx| {
        emit(
            tx,
            "communication.CallStarted",
            json!({"caller": "Partner"}),
        )
        .await
    })
    .await;
    as_user(&mut db, alice, async |tx| {
        emit(tx, "communication.CallStarted", json!({"caller": "Mom"})).await;
        tx.execute("SELECT spine.set_state('location', '\"Home\"')", &[])
            .await
            .unwrap();
        emit(
            tx,
            "communication.CallStarted",
            json!({"caller": "Partner"}),
        )
        .await;
    })
    .await;
    as_user(&mut db, bob, async |tx| {
        emit(
            tx,
            "communication.CallStarted",
            json!({"caller": "Partner"}),
        )
        .await;
    })
    .await;

    let jobs = jobs_in(&db, &queue).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (payload, owner, key) = &jobs[0];
    assert_eq!(
        payload,
        &json!({"to": "Partner", "text": "In a meeting at Work, call you back"})
    );
    assert_eq!(*owner, Some(alice));
    assert!(
        key.as_deref().unwrap().contains(&call.to_string()),
        "{key:?}"
    );

    let firing = db
        .query_one(
            "SELECT inputs, actions FROM spine.rule_firings WHERE event_id = $1",
            &[&call],
        )
        .await
        .unwrap();
    assert_eq!(
        firing.get::<_, Value>(0),
        json!({"event.data.caller": "Partner", "state.location": "Work"})
    );
    assert_eq!(
        firing.get::<_, Value>(1)[0]["enqueue"]["queue"],
        json!(queue)
    );
    let announced: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events WHERE type = 'rules.RuleFired' AND causation_id = $1 \
            AND owner_id = $2 AND data->>'rule' = 'partner-at-work'",
        &[&call, &alice],
    )
    .await;
    assert_eq!(announced, 1);
}

/// emit, set_state, call_function and webhook, each with templates; the firing
/// lists what every action did.
#[tokio::test]
async fn every_action_kind() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let event = as_user(&mut db, alice, async |tx| {
        save_rule(
            tx,
            "all-kinds",
            "order.*",
            json!({">=": [{"var": "event.data.total"}, 100]}),
            json!([
                {"set_state": {"key": "last_big_order", "value": "{{event.data}}"}},
                {"emit": {"type": "assistant.OrderFlagged", "data": {"order": "{{event.subject}}", "total": "{{event.data.total}}"}}},
                {"call_function": {"name": "notify-owner", "payload": {"text": "Order of {{event.data.total}} EUR"}}},
                {"webhook": {"url": "https://hooks.example.com/orders", "headers": {"X-Kind": "big"},
                             "payload": {"id": "{{event.id}}", "state": "{{state.last_big_order.total}}"}}}
            ]),
        )
        .await;
        emit(tx, "order.OrderPlaced", json!({"total": 250})).await
    })
    .await;
    let (state, flagged, function_job, webhook_job): (Value, Value, Value, Value) = {
        let r = db
            .query_one(
                "SELECT (SELECT value FROM spine.state WHERE owner_id = $1 AND key = 'last_big_order'), \
                        (SELECT data FROM spine.events WHERE type = 'assistant.OrderFlagged' AND causation_id = $2), \
                        (SELECT payload FROM spine.jobs WHERE queue = 'function' AND owner_id = $1), \
                        (SELECT payload FROM spine.jobs WHERE queue = 'http' AND owner_id = $1)",
                &[&alice, &event],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(state, json!({"total": 250}));
    assert_eq!(flagged, json!({"order": "call/1", "total": 250}));
    assert_eq!(function_job["function"], json!("notify-owner"));
    assert_eq!(function_job["payload"], json!({"text": "Order of 250 EUR"}));
    assert_eq!(function_job["event_id"], json!(event.to_string()));
    assert_eq!(
        webhook_job["url"],
        json!("https://hooks.example.com/orders")
    );
    assert_eq!(webhook_job["headers"], json!({"X-Kind": "big"}));
    // set_state ran first: the webhook's template sees the new value.
    assert_eq!(
        webhook_job["body"],
        json!({"id": event.to_string(), "state": 250})
    );
    let kinds: Vec<String> = column(
        &db,
        "SELECT jsonb_object_keys(a) FROM spine.rule_firings f, jsonb_array_elements(f.actions) a \
             WHERE f.event_id = $1",
        &[&event],
    )
    .await;
    assert_eq!(kinds, ["set_state", "emit", "call_function", "webhook"]);
}

/// `call_function` with a queue of its own: the job lands there with the given
/// priority and keeps the event (what a plain `enqueue` of a function job lost);
/// a queue closed to users is refused when the rule fires, as for `enqueue`.
#[tokio::test]
async fn a_function_call_goes_to_its_queue_in_the_events_chain() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let queue = user_queue(&db).await;
    let event = as_user(&mut db, alice, async |tx| {
        save_rule(
            tx,
            "sms on call",
            "communication.CallStarted",
            json!(true),
            json!([{"call_function": {"name": "sms", "queue": queue, "priority": "realtime",
                                       "payload": {"to": "{{event.data.from}}"}}}]),
        )
        .await;
        emit(
            tx,
            "communication.CallStarted",
            json!({"from": "+49305550100"}),
        )
        .await
    })
    .await;
    let r = db
        .query_one(
            "SELECT payload, priority::text FROM spine.jobs WHERE queue = $1 AND owner_id = $2",
            &[&queue, &alice],
        )
        .await
        .unwrap();
    let (payload, priority): (Value, String) = (r.get(0), r.get(1));
    assert_eq!(priority, "realtime");
    assert_eq!(payload["function"], json!("sms"));
    assert_eq!(payload["payload"], json!({"to": "+49305550100"}));
    assert_eq!(payload["event_id"], json!(event.to_string()));

    let closed = format!("r{}", Uuid::new_v4().simple());
    db.execute("SELECT spine.create_queue($1)", &[&closed])
        .await
        .unwrap();
    let tx = db.transaction().await.unwrap();
    spine_tests::act_as(
        &tx,
        "authenticated",
        json!({"sub": alice.to_string(), "role": "authenticated"}),
    )
    .await;
    save_rule(
        &tx,
        "into a closed queue",
        "communication.CallEnded",
        json!(true),
        json!([{"call_function": {"name": "sms", "queue": closed, "payload": {}}}]),
    )
    .await;
    let err = tx
        .query_one("SELECT spine.emit('communication.CallEnded', '{}')", &[])
        .await
        .unwrap_err();
    assert_eq!(spine_tests::sqlstate(&err), Some("42501"), "{err:?}");
}

/// Rules are validated when saved; each problem is a clear error.
#[tokio::test]
async fn bad_rules_are_refused_when_saved() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let queue = user_queue(&db).await;
    let ok_actions = json!([{"set_state": {"key": "k", "value": 1}}]);
    let cases = [
        (
            "x.Happened",
            json!({"frobnicate": [1]}),
            ok_actions.clone(),
            "22023",
            "unknown operator",
        ),
        (
            "x.Happened",
            json!({"==": [{"var": "user.id"}, 1]}),
            ok_actions.clone(),
            "22023",
            "must start with event",
        ),
        (
            "x.Happened",
            json!({"==": [1]}),
            ok_actions.clone(),
            "22023",
            "takes at least 2 arguments",
        ),
        (
            "x.Happen",
            json!(true),
            ok_actions.clone(),
            "22023",
            "past tense",
        ),
        (
            "x.Happened",
            json!(true),
            json!([{"emit": {"type": "data.EntityCreated"}}]),
            "22023",
            "reserved",
        ),
        (
            "x.Happened",
            json!(true),
            json!([{"enqueue": {"queue": "http"}}]),
            "42501",
            "does not accept users",
        ),
        (
            "x.Happened",
            json!(true),
            json!([{"enqueue": {"queue": "no-such-queue"}}]),
            "42704",
            "does not exist",
        ),
        (
            "x.Happened",
            json!(true),
            json!([{"webhook": {"url": "https://10.0.0.1/"}}]),
            "22023",
            "public host",
        ),
        (
            "x.Happened",
            json!(true),
            json!([{"enqueue": {"queue": queue, "payload": "{{secrets.x}}"}}]),
            "22023",
            "must start with",
        ),
    ];
    for (on_event, condition, actions, code, text) in cases {
        let tx = db.transaction().await.unwrap();
        act_as(&tx, "authenticated", claims(alice)).await;
        let err = tx
            .execute(
                "SELECT spine.save_rule('r', $1, $2, $3)",
                &[&on_event, &condition, &actions],
            )
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some(code), "{condition} {actions}: {err:?}");
        assert!(
            err.as_db_error().unwrap().message().contains(text),
            "{err:?}"
        );
        tx.rollback().await.unwrap();
    }
    for (role, claim, sql, code) in [
        (
            "anon",
            json!({"role": "anon"}),
            "SELECT spine.save_rule('r', 'x.Happened', 'true', '[]')",
            "42501",
        ),
        (
            "authenticated",
            claims(alice),
            "SELECT spine.save_rule(NULL, 'x.Happened', 'true', '[]')",
            "22004",
        ),
        (
            "authenticated",
            claims(alice),
            "SELECT spine.save_rule('r', 'x.Happened', 'true', '[]', owner => gen_random_uuid())",
            "42501",
        ),
        (
            "authenticated",
            claims(alice),
            "SELECT spine.replay_event(gen_random_uuid())",
            "42501",
        ),
        (
            "authenticated",
            claims(alice),
            "SELECT spine.set_state('big', to_jsonb(repeat('x', 70000)))",
            "54000",
        ),
        (
            "authenticated",
            claims(alice),
            "SELECT spine.set_state('', '1')",
            "22023",
        ),
    ] {
        let tx = db.transaction().await.unwrap();
        act_as(&tx, role, claim).await;
        let err = tx.execute(sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some(code), "{sql}: {err:?}");
        tx.rollback().await.unwrap();
    }
}

/// A rule that emits the event it listens to fires once per causal chain by
/// default, and `spine.rules_max_depth` times when an administrator raises it
/// (users cannot).
#[tokio::test]
async fn loop_guard_stops_a_rule_retriggering_itself() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    as_user(&mut db, alice, async |tx| {
        save_rule(
            tx,
            "echo",
            "loop.Pinged",
            json!(true),
            json!([{"emit": {"type": "loop.Pinged", "data": {"n": "{{event.data.n}}"}}}]),
        )
        .await;
    })
    .await;
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", claims(alice)).await;
    let err = tx
        .batch_execute("SET LOCAL spine.rules_max_depth = 16")
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some("42501"),
        "a user lifting the guard: {err:?}"
    );
    tx.rollback().await.unwrap();
    for depth in [1i64, 3] {
        db.batch_execute(&format!("SET spine.rules_max_depth = {depth}"))
            .await
            .unwrap();
        let first = as_user(&mut db, alice, async |tx| {
            emit(tx, "loop.Pinged", json!({"n": 0})).await
        })
        .await;
        let (pings, firings) = chain_counts(&db, first, "loop.Pinged").await;
        assert_eq!(firings, depth, "max depth {depth}");
        assert_eq!(pings, depth + 1, "max depth {depth}");
        // The match the guard stopped is on record, with why.
        let stopped: Vec<String> = db
            .query(
                "SELECT stopped FROM spine.rule_firings WHERE correlation_id = $1 AND stopped IS NOT NULL",
                &[&first],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(stopped.len(), 1, "max depth {depth}: {stopped:?}");
        assert!(
            stopped[0].contains(
                "spine.rules_max_depth = {depth}"
                    .replace("{depth}", &depth.to_string())
                    .as_str()
            ),
            "{stopped:?}"
        );
    }
    db.batch_execute("RESET spine.rules_max_depth")
        .await
        .unwrap();
}

/// (events of `event_type`, rule firings) in the chain that started with `first`;
/// matches the loop guard stopped are not firings.
async fn chain_counts(db: &Client, first: Uuid, event_type: &str) -> (i64, i64) {
    let r = db
        .query_one(
            "SELECT (SELECT count(*) FROM spine.events WHERE correlation_id = $1 AND type = $2), \
                    (SELECT count(*) FROM spine.rule_firings WHERE correlation_id = $1 AND stopped IS NULL)",
            &[&first, &event_type],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// Rules whose actions emit several events multiply without any rule repeating;
/// `spine.rules_max_chain_firings` caps the whole chain.
#[tokio::test]
async fn loop_guard_caps_fan_out() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    as_user(&mut db, alice, async |tx| {
        for r in ["a", "b", "c", "d"] {
            save_rule(
                tx,
                r,
                "fan.*",
                json!(true),
                json!([{"emit": {"type": "fan.Forked", "data": {}}},
                       {"emit": {"type": "fan.Forked", "data": {}}},
                       {"emit": {"type": "fan.Forked", "data": {}}}]),
            )
            .await;
        }
    })
    .await;
    db.batch_execute("SET spine.rules_max_chain_firings = 20")
        .await
        .unwrap();
    let first = as_user(&mut db, alice, async |tx| {
        emit(tx, "fan.Started", json!({})).await
    })
    .await;
    db.batch_execute("RESET spine.rules_max_chain_firings")
        .await
        .unwrap();
    let (_, firings) = chain_counts(&db, first, "fan.Forked").await;
    assert_eq!(firings, 20);
}

/// The guard holds across transactions: a rule enqueues a job, and what runs the
/// job emits the next event with the job's cause — the rule does not fire again.
#[tokio::test]
async fn loop_guard_holds_through_jobs() {
    let mut db = connect().await;
    let queue = user_queue(&db).await;
    let alice = Uuid::new_v4();
    let q = queue.clone();
    let first = as_user(&mut db, alice, async |tx| {
        save_rule(
            tx,
            "through-a-job",
            "relay.Pinged",
            json!(true),
            json!([{"enqueue": {"queue": q, "payload": {"cause": "{{event.id}}"}}}]),
        )
        .await;
        emit(tx, "relay.Pinged", json!({})).await
    })
    .await;
    // What a job handler (say an edge function) does later, in its own
    // transaction: emit for the user, caused by the event the job came from.
    for _ in 0..2 {
        let cause: Uuid = one(
            &db,
            "SELECT (payload->>'cause')::uuid FROM spine.jobs WHERE queue = $1 ORDER BY id DESC LIMIT 1",
            &[&queue],
        )
        .await;
        as_user(&mut db, alice, async |tx| {
            tx.execute(
                "SELECT spine.emit('relay.Pinged', '{}', causation_id => $1)",
                &[&cause],
            )
            .await
            .unwrap();
        })
        .await;
    }
    assert_eq!(jobs_in(&db, &queue).await.len(), 1);
    let (_, firings) = chain_counts(&db, first, "relay.Pinged").await;
    assert_eq!(firings, 1);
}

/// Replaying an event fires only rules that have not fired for it, and never
/// enqueues a job twice.
#[tokio::test]
async fn replay_is_idempotent() {
    let mut db = connect().await;
    let queue = user_queue(&db).await;
    let alice = Uuid::new_v4();
    let q = queue.clone();
    let event = as_user(&mut db, alice, async |tx| {
        save_rule(
            tx,
            "first",
            "order.OrderPlaced",
            json!(true),
            json!([{"enqueue": {"queue": q, "payload": {"rule": "first"}}}]),
        )
        .await;
        emit(tx, "order.OrderPlaced", json!({})).await
    })
    .await;
    let replay =
        async |db: &Client| -> i64 { one(db, "SELECT spine.replay_event($1)", &[&event]).await };
    assert_eq!(replay(&db).await, 0, "already fired");
    let q = queue.clone();
    as_user(&mut db, alice, async |tx| {
        save_rule(
            tx,
            "second",
            "order.OrderPlaced",
            json!(true),
            json!([{"enqueue": {"queue": q, "payload": {"rule": "second"}}}]),
        )
        .await;
    })
    .await;
    assert_eq!(replay(&db).await, 1, "the new rule fires");
    assert_eq!(replay(&db).await, 0);
    let payloads: Vec<Value> = jobs_in(&db, &queue)
        .await
        .into_iter()
        .map(|j| j.0)
        .collect();
    assert_eq!(
        payloads,
        [json!({"rule": "first"}), json!({"rule": "second"})]
    );
}

/// A rule saved, disabled or deleted in one session takes effect in another
/// session's next event (the per-backend cache is invalidated at commit).
#[tokio::test]
async fn rule_changes_reach_other_sessions() {
    let mut writer = connect().await;
    let mut emitter = connect().await;
    let alice = Uuid::new_v4();
    let save = async |db: &mut Client, enabled: bool| {
        as_user(db, alice, async |tx| {
            tx.execute(
                "SELECT spine.save_rule('count', 'tick.Ticked', 'true', \
                 '[{\"set_state\": {\"key\": \"ticks\", \"value\": \"{{event.data.n}}\"}}]', enabled => $1)",
                &[&enabled],
            )
            .await
            .unwrap();
        })
        .await
    };
    let tick = async |db: &mut Client, n: i64| {
        as_user(db, alice, async |tx| {
            tx.execute(
                "SELECT spine.emit('tick.Ticked', jsonb_build_object('n', $1::bigint))",
                &[&n],
            )
            .await
            .unwrap();
        })
        .await;
        let v: Option<Value> = one(
            db,
            "SELECT (SELECT value FROM spine.state WHERE owner_id = $1 AND key = 'ticks')",
            &[&alice],
        )
        .await;
        v
    };
    assert_eq!(tick(&mut emitter, 1).await, None, "no rule yet");
    save(&mut writer, true).await;
    assert_eq!(tick(&mut emitter, 2).await, Some(json!(2)));
    save(&mut writer, false).await;
    assert_eq!(tick(&mut emitter, 3).await, Some(json!(2)), "disabled");
    save(&mut writer, true).await;
    assert_eq!(tick(&mut emitter, 4).await, Some(json!(4)));
    as_user(&mut writer, alice, async |tx| {
        let deleted: bool = one(tx, "SELECT spine.delete_rule('count')", &[]).await;
        assert!(deleted);
    })
    .await;
    assert_eq!(tick(&mut emitter, 5).await, Some(json!(4)), "deleted");
}

/// Users see only their own rules, state and firings; explaining someone else's
/// event is "not found".
#[tokio::test]
async fn rules_are_private_to_their_owner() {
    let mut db = connect().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let event = as_user(&mut db, alice, async |tx| {
        tx.execute("SELECT spine.set_state('mood', '\"ok\"')", &[])
            .await
            .unwrap();
        save_rule(
            tx,
            "private",
            "diary.EntryWritten",
            json!(true),
            json!([{"set_state": {"key": "entries", "value": 1}}]),
        )
        .await;
        emit(tx, "diary.EntryWritten", json!({})).await
    })
    .await;
    as_user(&mut db, bob, async |tx| {
        let seen: i64 = one(
            tx,
            "SELECT (SELECT count(*) FROM spine.rules) + (SELECT count(*) FROM spine.state) \
                  + (SELECT count(*) FROM spine.rule_firings)",
            &[],
        )
        .await;
        assert_eq!(seen, 0);
        let err = tx
            .query("SELECT * FROM spine.explain($1)", &[&event])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("42704"));
    })
    .await;
    as_user(&mut db, alice, async |tx| {
        let seen: i64 = one(
            tx,
            "SELECT (SELECT count(*) FROM spine.rules) + (SELECT count(*) FROM spine.state) \
                  + (SELECT count(*) FROM spine.rule_firings)",
            &[],
        )
        .await;
        assert_eq!(seen, 1 + 2 + 1);
    })
    .await;
}

/// explain says, per rule, whether it was considered, matches, fired, and why not.
#[tokio::test]
async fn explain_says_why() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let event = as_user(&mut db, alice, async |tx| {
        tx.execute("SELECT spine.set_state('location', '\"Work\"')", &[])
            .await
            .unwrap();
        let set = json!([{"set_state": {"key": "seen", "value": true}}]);
        save_rule(
            tx,
            "a-partner-at-work",
            "communication.CallStarted",
            partner_at_work(),
            set.clone(),
        )
        .await;
        save_rule(
            tx,
            "b-any-call",
            "communication.*",
            json!(true),
            set.clone(),
        )
        .await;
        save_rule(tx, "c-orders", "order.OrderPlaced", json!(true), set).await;
        emit(tx, "communication.CallStarted", json!({"caller": "Mom"})).await
    })
    .await;
    let rows = as_user(&mut db, alice, async |tx| {
        tx.query(
            "SELECT rule, considered, matches, fired, reason, inputs FROM spine.explain($1) ORDER BY rule",
            &[&event],
        )
        .await
        .unwrap()
    })
    .await;
    let got: Vec<(String, bool, bool, bool, String, Value)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(got.len(), 3, "{got:#?}");
    let (name, considered, matches, fired, reason, inputs) = &got[0];
    assert_eq!(
        (name.as_str(), *considered, *matches, *fired),
        ("a-partner-at-work", true, false, false)
    );
    assert!(
        reason.contains("condition is false") && reason.contains("Partner"),
        "{reason}"
    );
    assert_eq!(
        inputs,
        &json!({"event.data.caller": "Mom", "state.location": "Work"})
    );
    assert_eq!(
        (got[1].1, got[1].2, got[1].3),
        (true, true, true),
        "{:?}",
        got[1]
    );
    assert!(got[1].4.starts_with("fired at"), "{}", got[1].4);
    assert_eq!((got[2].1, got[2].3), (false, false));
    assert!(got[2].4.contains("does not match"), "{}", got[2].4);
}

/// Rules guarded by an equality on the event (which the rule cache indexes, so
/// an event skips the rules that test for another value) fire exactly as if
/// every rule were evaluated: on their value, on a value only loose equality
/// or a substring matches, through `or` and `in`, and in priority order among
/// unguarded rules.
#[tokio::test]
async fn guarded_rules_fire_as_if_every_rule_were_evaluated() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let note = json!([{"set_state": {"key": "n", "value": "{{event.data.n}}"}}]);
    let rules = [
        (
            "a-high",
            json!({"==": [{"var": "event.data.kind"}, "a"]}),
            10,
        ),
        ("any", json!(true), 5),
        (
            "a-low",
            json!({"and": [{">=": [{"var": "event.data.n"}, 0]}, {"===": [{"var": "event.data.kind"}, "a"]}]}),
            1,
        ),
        ("b", json!({"==": ["b", {"var": "event.data.kind"}]}), 0),
        ("one", json!({"==": [{"var": "event.data.kind"}, "1"]}), 0),
        (
            "vip",
            json!({"or": [{"==": [{"var": "event.data.kind"}, "z"]}, {"in": ["vip", {"var": "event.data.tags"}]}]}),
            0,
        ),
    ];
    let cases = [
        (json!({"kind": "a", "n": 1}), vec!["a-high", "any", "a-low"]),
        (json!({"kind": "b", "n": 2}), vec!["any", "b"]),
        // A number: loose equality with "1" holds, so the guard must not skip it.
        (json!({"kind": 1, "n": 3}), vec!["any", "one"]),
        (json!({"n": 4}), vec!["any"]),
        (json!({"kind": "c", "n": 5}), vec!["any"]),
        (
            json!({"kind": "c", "tags": ["x", "vip"]}),
            vec!["any", "vip"],
        ),
        (json!({"kind": "z", "tags": ["x"]}), vec!["any", "vip"]),
        // A text: `in` finds a substring, so the guard must not skip it.
        (
            json!({"kind": "c", "tags": "a vip guest"}),
            vec!["any", "vip"],
        ),
        (json!({"kind": "c", "tags": ["vip-ish"]}), vec!["any"]),
    ];
    let mut events = Vec::new();
    as_user(&mut db, alice, async |tx| {
        for (name, condition, priority) in &rules {
            tx.execute(
                "SELECT spine.save_rule($1, 'sort.Sorted', $2, $3, priority => $4)",
                &[name, condition, &note, priority],
            )
            .await
            .unwrap();
        }
        for (data, _) in &cases {
            events.push(emit(tx, "sort.Sorted", data.clone()).await);
        }
    })
    .await;
    for ((data, expected), event) in cases.iter().zip(&events) {
        let fired: Vec<String> = db
            .query(
                "SELECT r.name FROM spine.rule_firings f JOIN spine.rules r ON r.id = f.rule_id \
                 WHERE f.event_id = $1 ORDER BY f.id",
                &[event],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(&fired, expected, "event {data}");
    }
}
