//! Who may do what: jobs are private to their owner, callers without a user
//! cannot enqueue, and enqueue ignores the caller's search_path.

use super::*;

/// Users enqueue and see only their own jobs, cannot cancel others', and cannot
/// run the worker's functions; service_role sees everything.
#[tokio::test]
async fn jobs_are_private_to_their_owner() {
    let mut db = connect().await;
    let q = new_queue(&db, None).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let as_user = |who: Uuid| json!({"sub": who.to_string(), "role": "authenticated"});

    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(alice)).await;
    let id: i64 = one(&t, "SELECT spine.enqueue($1, '{\"to\":\"mum\"}')", &[&q]).await;
    t.commit().await.unwrap();

    // The http queue can reach any URL the worker can: closed to users.
    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(alice)).await;
    let err = t
        .query_one(
            "SELECT spine.enqueue('http', '{\"url\":\"http://169.254.169.254/\"}')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");
    t.rollback().await.unwrap();

    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(bob)).await;
    let seen = live_jobs(&t, &q).await;
    assert_eq!(seen, 0, "bob sees none of alice's jobs");
    let stats: i64 = one(
        &t,
        "SELECT count(*) FROM spine.queue_stats() WHERE queue = $1",
        &[&q],
    )
    .await;
    assert_eq!(stats, 0);
    let cancelled: bool = one(&t, "SELECT spine.cancel_job($1)", &[&id]).await;
    assert!(!cancelled, "bob cannot cancel alice's job");
    let err = t
        .query("SELECT * FROM spine.fetch_jobs(ARRAY[$1], 'bob', 1)", &[&q])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"));
    t.rollback().await.unwrap();

    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(alice)).await;
    let owner: Uuid = one(&t, "SELECT owner_id FROM spine.jobs WHERE id = $1", &[&id]).await;
    assert_eq!(owner, alice);
    let cancelled: bool = one(&t, "SELECT spine.cancel_job($1)", &[&id]).await;
    assert!(cancelled);
    t.commit().await.unwrap();

    let t = db.transaction().await.unwrap();
    act_as(&t, "service_role", json!({"role": "service_role"})).await;
    let state: String = one(
        &t,
        "SELECT state::text FROM spine.jobs_archive WHERE id = $1",
        &[&id],
    )
    .await;
    assert_eq!(state, "cancelled");
}

/// A token that names no user (anon, or authenticated without a sub) enqueues
/// nothing, not even into a queue open to users: a job without an owner is a
/// system job, which handlers run with the worker's reach. (anon is refused by its
/// missing grant already; authenticated without a sub by the owner check.)
#[tokio::test]
async fn callers_without_a_user_cannot_enqueue() {
    let mut db = connect().await;
    let q = new_queue(&db, None).await;
    for (role, claims) in [
        ("authenticated", json!({"role": "authenticated"})),
        ("anon", json!({"role": "anon"})),
    ] {
        for (how, sql) in [
            ("enqueue", "SELECT spine.enqueue($1, '{}')"),
            (
                "enqueue with a key",
                "SELECT spine.enqueue($1, '{}', idempotency_key => 'k')",
            ),
            (
                "enqueue_batch",
                "SELECT spine.enqueue_batch($1, ARRAY['{}'::jsonb])::text",
            ),
        ] {
            let t = db.transaction().await.unwrap();
            act_as(&t, role, claims.clone()).await;
            let err = t.query_one(sql, &[&q]).await.unwrap_err();
            assert_eq!(sqlstate(&err), Some("42501"), "{role} {how}: {err:?}");
            t.rollback().await.unwrap();
        }
    }
    let jobs = live_jobs(&db, &q).await;
    assert_eq!(jobs, 0);
}

/// spine.enqueue runs with its owner's rights but the caller's search_path (it has
/// no SET clause, for speed): objects a caller puts first on the path — an `=`
/// for text, `now()`, `to_regclass`, temp tables named like Spine's — are never
/// used. The session is fresh, so the path is in force when its plans are made.
#[tokio::test]
async fn enqueue_ignores_the_callers_search_path() {
    let admin = connect().await;
    let q = new_queue(&admin, None).await;
    let schema = format!("evil_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE FUNCTION {schema}.trap(a text, b text) RETURNS boolean LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'trap: text = text'; END $$;
             CREATE OPERATOR {schema}.= (LEFTARG = text, RIGHTARG = text, FUNCTION = {schema}.trap);
             CREATE FUNCTION {schema}.now() RETURNS timestamptz LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'trap: now()'; END $$;
             CREATE FUNCTION {schema}.to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'trap: to_regclass'; END $$;
             GRANT USAGE ON SCHEMA {schema} TO authenticated;
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO authenticated;"
        ))
        .await
        .unwrap();
    let mut user = connect().await;
    let t = user.transaction().await.unwrap();
    t.batch_execute(&format!(
        "CREATE TEMP TABLE queues (name text, user_enqueue boolean);
         CREATE TEMP TABLE jobs (id bigint);
         SET LOCAL search_path = {schema}, pg_catalog"
    ))
    .await
    .unwrap();
    act_as(
        &t,
        "authenticated",
        json!({"sub": Uuid::new_v4().to_string(), "role": "authenticated"}),
    )
    .await;
    let id: i64 = one(
        &t,
        "SELECT spine.enqueue($1, '{\"n\":1}', run_at => NULL)",
        &[&q],
    )
    .await;
    let keyed: i64 = one(
        &t,
        "SELECT spine.enqueue($1, '{}', idempotency_key => 'k1')",
        &[&q],
    )
    .await;
    assert_ne!(keyed, id);
    let refused = t
        .query_one("SELECT spine.enqueue('http', '{}')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), Some("42501"), "{refused:?}");
    t.rollback().await.unwrap();
    assert!(id > 0);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
