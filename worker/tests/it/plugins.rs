//! Functions run by jobs, as real processes (spine-worker running the `function`
//! queue) against the real cluster: causation through a function's writes (the
//! rules' loop guard stops a rule that retriggers itself), a system job acting
//! as service_role within its manifest, and a user's own schedule running a
//! function for her.

use serde_json::{json, Value};
use spine_tests::daemons::job_runner;
use spine_tests::proc::wait_until;
use spine_tests::{as_user, connect, one};
use std::time::Duration;
use uuid::Uuid;

/// Deploys `source` with `permissions` under a new name; the name.
async fn deploy(db: &tokio_postgres::Client, permissions: Value, source: &str) -> String {
    let name = format!("p{}", &Uuid::new_v4().simple().to_string()[..12]);
    let manifest = json!({"name": name, "version": "1.0.0", "permissions": permissions});
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[&manifest, &source],
    )
    .await
    .unwrap();
    name
}

/// A rule on `data.EntityUpdated` calls a function that updates the same entity.
/// Its update descends from the event that triggered it (the host passes the
/// job's event on as `spine.causation_id`), so the loop guard meets the rule's
/// own firing up the chain and stops it — recorded as a stopped firing — instead
/// of looping without bound, as it did while the function's writes started new
/// chains.
#[tokio::test]
async fn a_rule_whose_function_updates_its_entity_stops_at_the_loop_guard() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let name = deploy(
        &db,
        json!({"entities": {"read": ["counter"], "write": ["counter"]}}),
        r#"Deno.serve(async (req, ctx) => {
             const { id } = await req.json();
             const { rows } = await ctx.db.select("spine.entities", { eq: { id }, columns: ["data"] });
             const n = (rows[0]?.data?.n ?? 0) + 1;
             const tp = req.headers.get("traceparent");
             await ctx.db.rpc("spine.upsert_entity", { kind: "counter", id, data: { n, tp } });
             return new Response("ok");
           });"#,
    )
    .await;
    let (rule, entity): (Uuid, Uuid) = as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.grant_consent($1, ARRAY['entities.read:counter', 'entities.write:counter'])",
            &[&name],
        )
        .await
        .unwrap();
        let actions = json!([{"call_function": {"name": name, "payload": {"id": "{{event.data.id}}"}}}]);
        let rule: Uuid = one(
            tx,
            "SELECT spine.save_rule('bump', 'data.EntityUpdated', '{\"==\": [{\"var\": \"event.data.kind\"}, \"counter\"]}', $1)",
            &[&actions],
        )
        .await;
        let entity: Uuid = one(
            tx,
            "SELECT spine.upsert_entity('counter', '{\"n\": 0}')",
            &[],
        )
        .await;
        (rule, entity)
    })
    .await;
    // The update that starts the chain.
    as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.upsert_entity('counter', '{\"n\": 100}', $1)",
            &[&entity],
        )
        .await
        .unwrap();
    })
    .await;
    let _worker = job_runner("function", &[]);
    wait_until(
        "the guard stopped the rule",
        Duration::from_secs(30),
        || async {
            db.query_opt(
                "SELECT 1 FROM spine.rule_firings WHERE rule_id = $1 AND stopped IS NOT NULL",
                &[&rule],
            )
            .await
            .unwrap()
            .is_some()
        },
    )
    .await;
    // Time for a loop to show itself if there were one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM spine.rule_firings WHERE rule_id = $1 AND stopped IS NULL), \
                    (SELECT count(*) FROM spine.rule_firings WHERE rule_id = $1 AND stopped LIKE '%rules_max_depth%'), \
                    (SELECT version FROM spine.entities WHERE id = $2), \
                    (SELECT (data->>'n')::int FROM spine.entities WHERE id = $2)",
            &[&rule, &entity],
        )
        .await
        .unwrap();
    let (fired, stopped, version, n): (i64, i64, i64, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (fired, stopped),
        (1, 1),
        "one firing, then stopped (max depth 1)"
    );
    assert_eq!(
        (version, n),
        (3, 101),
        "created, updated by alice, updated once by the function"
    );
    // The function's update is caused by alice's and shares its correlation id.
    let chain = db
        .query(
            "SELECT id, causation_id, correlation_id FROM spine.events \
              WHERE type = 'data.EntityUpdated' AND subject = 'entity/' || $1::uuid::text ORDER BY seq",
            &[&entity],
        )
        .await
        .unwrap();
    assert_eq!(chain.len(), 2);
    let (first, second) = (&chain[0], &chain[1]);
    assert_eq!(
        second.get::<_, Option<Uuid>>(1),
        Some(first.get::<_, Uuid>(0))
    );
    assert_eq!(second.get::<_, Uuid>(2), first.get::<_, Uuid>(2));
    // The call carried the chain as its W3C trace id.
    let tp: String = one(
        &db,
        "SELECT data->>'tp' FROM spine.entities WHERE id = $1",
        &[&entity],
    )
    .await;
    let trace = first.get::<_, Uuid>(2).simple().to_string();
    assert!(tp.starts_with(&format!("00-{trace}-")), "{tp}");
    // explain says why the second update did not fire the rule.
    let reason: String = one(
        &db,
        "SELECT reason FROM spine.explain($1) WHERE rule = 'bump'",
        &[&second.get::<_, Uuid>(0)],
    )
    .await;
    assert!(reason.starts_with("stopped by the loop guard"), "{reason}");
}

/// A job without a user — enqueued by service_role, as a system schedule does —
/// runs its function as service_role: what the manifest declares is allowed
/// (nobody to consent; audited as such), what it does not is still refused.
/// Before, every capability was refused ("no user to act for").
#[tokio::test]
async fn a_system_job_acts_as_service_role_within_its_manifest() {
    let db = connect().await;
    let name = deploy(
        &db,
        json!({"events": {"emit": ["sys.Checked"]}}),
        r#"Deno.serve(async (req, ctx) => {
             const { nonce } = await req.json();
             let undeclared = "allowed";
             try { await ctx.emit("other.ThingHappened", {}); } catch (e) { undeclared = e.name; }
             await ctx.emit("sys.Checked", { nonce, role: ctx.user.role, user: ctx.user.id, undeclared });
             return new Response("ok");
           });"#,
    )
    .await;
    let nonce = Uuid::new_v4().to_string();
    db.execute(
        "SELECT spine.enqueue('function', jsonb_build_object('function', $1::text, 'payload', jsonb_build_object('nonce', $2::text)))",
        &[&name, &nonce],
    )
    .await
    .unwrap();
    let _worker = job_runner("function", &[]);
    wait_until("sys.Checked", Duration::from_secs(30), || async {
        db.query_opt(
            "SELECT 1 FROM spine.events WHERE type = 'sys.Checked' AND data->>'nonce' = $1",
            &[&nonce],
        )
        .await
        .unwrap()
        .is_some()
    })
    .await;
    let (data, owner): (Value, Option<Uuid>) = {
        let r = db
            .query_one(
                "SELECT data, owner_id FROM spine.events WHERE type = 'sys.Checked' AND data->>'nonce' = $1",
                &[&nonce],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(owner, None);
    assert_eq!(
        data,
        json!({"nonce": nonce, "role": "service_role", "user": null, "undeclared": "PermissionDenied"})
    );
    spine_tests::seal_audit(&db).await;
    let allowed: i64 = one(
        &db,
        "SELECT count(*) FROM spine.audit_log WHERE target = $1 AND action = 'policy.allowed' \
             AND details->>'as' = 'service_role' AND details->>'resource' = 'sys.Checked'",
        &[&format!("plugin:{name}")],
    )
    .await;
    assert_eq!(allowed, 1, "the allowed emit is audited as service_role's");
}

/// Alice schedules her own function call: the schedule is hers, each firing
/// enqueues a job she owns, and the function acts for her with her consent.
#[tokio::test]
async fn a_users_schedule_runs_her_function_for_her() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let name = deploy(
        &db,
        json!({"events": {"emit": ["digest.Sent"]}}),
        r#"Deno.serve(async (req, ctx) => {
             const body = await req.json();
             await ctx.emit("digest.Sent", { user: ctx.user.id, n: body.n });
             return new Response("ok");
           });"#,
    )
    .await;
    as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.grant_consent($1, ARRAY['events.emit:digest.Sent'])",
            &[&name],
        )
        .await
        .unwrap();
        tx.execute(
            "SELECT spine.schedule('digest', '0 7 * * *', 'function', jsonb_build_object('function', $1::text, 'payload', '{\"n\": 3}'::jsonb))",
            &[&name],
        )
        .await
        .unwrap();
    })
    .await;
    // What pg_cron runs at 07:00, run now.
    let command: String = one(
        &db,
        "SELECT command FROM cron.job WHERE jobname = 'spine:' || $1::uuid::text || ':digest'",
        &[&alice],
    )
    .await;
    db.batch_execute(&command).await.unwrap();
    let _worker = job_runner("function", &[]);
    wait_until("digest.Sent", Duration::from_secs(30), || async {
        db.query_opt(
            "SELECT 1 FROM spine.events WHERE type = 'digest.Sent' AND owner_id = $1 \
                AND data = jsonb_build_object('user', $1::uuid::text, 'n', 3)",
            &[&alice],
        )
        .await
        .unwrap()
        .is_some()
    })
    .await;
    let removed: bool = as_user(&mut db, alice, async |tx| {
        one(tx, "SELECT spine.unschedule('digest')", &[]).await
    })
    .await;
    assert!(removed);
    let left: i64 = one(
        &db,
        "SELECT count(*) FROM cron.job WHERE jobname = 'spine:' || $1::uuid::text || ':digest'",
        &[&alice],
    )
    .await;
    assert_eq!(left, 0);
}
