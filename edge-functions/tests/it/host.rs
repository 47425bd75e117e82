//! The function host as a real process (`spine-functions serve`) against the dev
//! stack's Postgres: JWT errors, limits through HTTP, permission denials for each
//! capability, RLS through ctx.db.query, and the connector example landing data.

use serde_json::{json, Value};
use spine_functions::jwt;
use spine_tests::{as_user, connect, database_url, one};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

pub fn secret() -> String {
    std::env::var("SPINE_JWT_SECRET").expect("SPINE_JWT_SECRET: run via `cargo xtask test`")
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token_for(user: Uuid) -> String {
    jwt::sign(
        &json!({"sub": user.to_string(), "role": "authenticated", "exp": now() + 600}),
        secret().as_bytes(),
    )
}

/// A `spine-functions serve` process on a free port, killed on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With extra environment variables.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = spine_tests::proc::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_spine-functions"))
            .arg("serve")
            .env("DATABASE_URL", database_url())
            .env("SPINE_JWT_SECRET", secret())
            .env("SPINE_FUNCTIONS_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("start spine-functions");
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{}/healthz", server.url))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "spine-functions did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    pub async fn call(&self, name: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(format!("{}/functions/v1/{name}", self.url))
            .body(body.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text })),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deploys `source` as a new function with `permissions` and `limits`; its name.
pub async fn deploy(
    db: &tokio_postgres::Client,
    permissions: Value,
    limits: Value,
    source: &str,
) -> String {
    let name = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
    let manifest =
        json!({"name": name, "version": "1.0.0", "permissions": permissions, "limits": limits});
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[&manifest, &source],
    )
    .await
    .unwrap();
    name
}

/// Missing, malformed, wrongly signed and expired tokens: 401 with a JSON body.
#[tokio::test]
async fn jwt_errors_are_401_json() {
    let db = connect().await;
    let name = deploy(
        &db,
        json!({}),
        json!({}),
        "Deno.serve(() => new Response('ok'))",
    )
    .await;
    let server = Server::start().await;
    let expired = jwt::sign(
        // Past the 30-s leeway.
        &json!({"role": "anon", "exp": now() - 120}),
        secret().as_bytes(),
    );
    let forged = jwt::sign(
        &json!({"role": "service_role"}),
        b"not the project's secret",
    );
    for (token, message) in [
        (None, "Missing authorization header"),
        (Some("not-a-jwt"), "Invalid JWT"),
        (Some(forged.as_str()), "bad signature"),
        (Some(expired.as_str()), "JWT expired"),
    ] {
        let (status, body) = server.call(&name, token, json!({})).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["code"], "UNAUTHORIZED");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{body}"
        );
    }
    let anon = jwt::sign(&json!({"role": "anon"}), secret().as_bytes());
    assert_eq!(server.call(&name, Some(&anon), json!({})).await.0, 200);
    let (status, body) = server
        .call("no-such-function", Some(&anon), json!({}))
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));
}

/// Over-limit functions answer 546 (Supabase's WORKER_LIMIT) or 500 with JSON,
/// and the host keeps serving others.
#[tokio::test]
async fn limits_through_http() {
    let db = connect().await;
    let tight = json!({"cpu_ms": 100, "memory_mb": 16, "wall_ms": 2000});
    let lp = deploy(
        &db,
        json!({}),
        tight.clone(),
        "Deno.serve(() => { for (;;) {} })",
    )
    .await;
    let bomb = deploy(
        &db,
        json!({}),
        tight.clone(),
        "Deno.serve(() => { const a = []; for (;;) a.push('x'.repeat(65536) + a.length); })",
    )
    .await;
    let hang = deploy(
        &db,
        json!({}),
        tight.clone(),
        "Deno.serve(() => new Promise(() => {}))",
    )
    .await;
    let fine = deploy(
        &db,
        json!({}),
        tight,
        "Deno.serve(() => Response.json({fine: true}))",
    )
    .await;
    let server = Server::start().await;
    let token = token_for(Uuid::new_v4());
    let (status, body) = server.call(&lp, Some(&token), json!({})).await;
    assert_eq!(
        (status, body["limit"].as_str()),
        (546, Some("cpu")),
        "{body}"
    );
    let (status, body) = server.call(&bomb, Some(&token), json!({})).await;
    assert_eq!(
        (status, body["limit"].as_str()),
        (546, Some("memory")),
        "{body}"
    );
    let (status, body) = server.call(&hang, Some(&token), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("FUNCTION_ERROR")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("never settled"));
    assert_eq!(
        server.call(&fine, Some(&token), json!({})).await,
        (200, json!({"fine": true}))
    );
}

/// Each capability is refused unless the manifest declares it and the user
/// consented: an undeclared secret, a declared but unconsented one, an undeclared
/// host, an undeclared event type; db.query sees only what the user's role and
/// RLS allow. Granting consent (and storing the secret) makes the same calls work,
/// and every decision is in the audit log.
#[tokio::test]
async fn capabilities_are_checked() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let name = deploy(
        &db,
        json!({"secrets": ["API_KEY"], "network": ["127.0.0.1"], "events": {"emit": ["probe.Checked"]},
               "entities": {"read": ["note"]}}),
        json!({"wall_ms": 5000}),
        r#"
        const attempt = async (f) => { try { return { ok: await f() }; } catch (e) { return { err: e.name, message: e.message }; } };
        Deno.serve(async (req, ctx) => Response.json({
          undeclared_secret: await attempt(() => ctx.secrets.get("OTHER")),
          secret: await attempt(() => ctx.secrets.get("API_KEY")),
          undeclared_host: await attempt(async () => (await fetch("http://example.org/")).status),
          declared_host: await attempt(async () => (await fetch("http://127.0.0.1:1/")).status),
          undeclared_event: await attempt(() => ctx.emit("other.ThingHappened", {})),
          event: await attempt(async () => (await ctx.emit("probe.Checked", {n: 1})).id),
          vault: await attempt(() => ctx.db.select("vault.secrets")),
          jobs: await attempt(() => ctx.db.select("spine.jobs", { limit: 5 })),
          plugins: await attempt(() => ctx.db.insert("spine.plugins", { name: "x", version: "1.0.0", manifest: {} })),
          own_entities: await attempt(async () => (await ctx.db.select("spine.entities", { columns: ["id"] })).rows.length),
          privileged: await attempt(async () => (await ctx.db.rpc("spine.caller_is_privileged")).rows[0]),
          sql_text: await attempt(() => ctx.db.query("SELECT set_config('role', 'service_role', true)")),
          escape: await attempt(() => ctx.db.rpc("pg_catalog.set_config", { setting_name: "role", new_value: "service_role", is_local: true })),
        }));"#,
    )
    .await;
    let server = Server::start().await;
    let token = token_for(alice);

    let (status, before) = server.call(&name, Some(&token), json!({})).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        before["undeclared_secret"]["err"], "PermissionDenied",
        "{before}"
    );
    assert!(before["undeclared_secret"]["message"]
        .as_str()
        .unwrap()
        .contains("not declared"));
    assert_eq!(
        before["secret"]["err"], "PermissionDenied",
        "no consent yet: {before}"
    );
    assert_eq!(
        before["undeclared_host"]["err"], "PermissionDenied",
        "{before}"
    );
    assert_eq!(
        before["declared_host"]["err"], "PermissionDenied",
        "no consent yet: {before}"
    );
    assert_eq!(
        before["undeclared_event"]["err"], "PermissionDenied",
        "{before}"
    );
    assert_eq!(before["event"]["err"], "PermissionDenied", "{before}");
    // Schemas the host does not expose are out of reach, as is SQL text; what
    // the caller may not do in an exposed schema Postgres refuses (42501); RLS
    // filters the rest; the calls run as the caller, not privileged.
    for refused in ["vault", "sql_text", "escape"] {
        assert_eq!(before[refused]["err"], "TypeError", "{refused}: {before}");
    }
    assert!(before["vault"]["message"]
        .as_str()
        .unwrap()
        .contains("not exposed"));
    assert_eq!(before["plugins"]["err"], "DatabaseError", "{before}");
    assert!(before["plugins"]["message"]
        .as_str()
        .unwrap()
        .contains("42501"));
    assert_eq!(before["jobs"]["ok"]["rows"], json!([]), "RLS: {before}");
    assert_eq!(before["privileged"]["ok"], json!(false), "{before}");

    // Consent, a stored secret of alice's, and an entity of hers that db.query may count.
    db.execute(
        "SELECT vault.create_secret('k-123', $1)",
        &[&format!("{alice}/API_KEY")],
    )
    .await
    .unwrap();
    as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.grant_consent($1, ARRAY['secrets.read:API_KEY', 'network.fetch:127.0.0.1', 'events.emit:probe.Checked', 'entities.read:note'])",
            &[&name],
        )
        .await
        .unwrap();
        tx.execute("SELECT spine.upsert_entity('note', '{\"t\": 1}')", &[])
            .await
            .unwrap();
        // Hers too, but of a kind the plugin does not declare: never visible to it.
        tx.execute("SELECT spine.upsert_entity('diary', '{\"t\": 2}')", &[])
            .await
            .unwrap();
    })
    .await;
    let (_, after) = server.call(&name, Some(&token), json!({})).await;
    assert_eq!(after["secret"]["ok"], "k-123", "{after}");
    // Allowed now: the request goes out and fails to connect (nobody on port 1).
    assert_eq!(after["declared_host"]["err"], "TypeError", "{after}");
    assert!(after["event"]["ok"].is_string(), "{after}");
    assert_eq!(after["undeclared_event"]["err"], "PermissionDenied");
    assert_eq!(
        after["own_entities"]["ok"], 1,
        "RLS and entities.read: alice's notes only, not her diary: {after}"
    );
    let event_owner: Option<Uuid> = one(
        &db,
        "SELECT owner_id FROM spine.events WHERE id = $1::text::uuid",
        &[&after["event"]["ok"].as_str().unwrap()],
    )
    .await;
    assert_eq!(event_owner, Some(alice));

    let denials: i64 = one(
        &db,
        "SELECT count(*) FROM spine.audit_log WHERE action = 'policy.denied' AND target = $1",
        &[&format!("plugin:{name}")],
    )
    .await;
    assert!(denials >= 5, "denials audited: {denials}");
}

/// The connector example: the CRM posts contacts, they land through spine.ingest
/// as the calling user, and the response carries ingest's counts.
#[tokio::test]
async fn connector_plugin_lands_data() {
    let mut db = connect().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/functions");
    let status = Command::new(env!("CARGO_BIN_EXE_spine-functions"))
        .args(["deploy", dir])
        .env("DATABASE_URL", database_url())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let alice = Uuid::new_v4();
    as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.save_source('crm', $1)",
            &[&json!({"kind": "person", "fields": {
                "name": {"path": "name", "normalize": ["trim"], "required": true},
                "email": {"path": "email", "normalize": ["email"]}},
              "identity": ["email"]})],
        )
        .await
        .unwrap();
        tx.execute(
            "SELECT spine.grant_consent('crm-connector', ARRAY['events.emit:crm.SyncCompleted', 'entities.write:person'])",
            &[],
        )
        .await
        .unwrap();
    })
    .await;
    let server = Server::start().await;
    let (status, result) = server
        .call(
            "crm-connector",
            Some(&token_for(alice)),
            json!({"source": "crm", "contacts": [
                {"id": "c1", "name": " Ada ", "email": "ADA@example.org"},
                {"id": "c2", "email": "nobody@example.org"}]}),
        )
        .await;
    assert_eq!(status, 207, "one record rejected: {result}");
    assert_eq!(
        (result["created"].as_i64(), result["rejected"].as_i64()),
        (Some(1), Some(1)),
        "{result}"
    );
    let names: i64 = one(
        &db,
        "SELECT count(*) FROM spine.entities WHERE owner_id = $1 AND data->>'name' = 'Ada'",
        &[&alice],
    )
    .await;
    assert_eq!(names, 1);
    let synced: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events WHERE owner_id = $1 AND type = 'crm.SyncCompleted'",
        &[&alice],
    )
    .await;
    assert_eq!(synced, 1);
}

/// `ctx.secrets.set` stores the user's own secret (an OAuth connector saving a
/// refreshed token): only names the manifest declares for `secrets.write`, only
/// with the user's consent; the next `get` reads the new value.
#[tokio::test]
async fn a_plugin_stores_the_users_own_secret() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let name = deploy(
        &db,
        json!({"secrets": {"read": ["TOKEN"], "write": ["TOKEN"]}}),
        json!({"wall_ms": 5000}),
        r#"
        const attempt = async (f) => { try { return { ok: await f() }; } catch (e) { return { err: e.name, message: e.message }; } };
        Deno.serve(async (req, ctx) => Response.json({
          undeclared: await attempt(() => ctx.secrets.set("OTHER", "x")),
          set: await attempt(async () => { await ctx.secrets.set("TOKEN", "refreshed-2"); return "stored"; }),
          read_back: await attempt(async () => ctx.secrets.get("TOKEN")),
        }));"#,
    )
    .await;
    let server = Server::start().await;
    let token = token_for(alice);
    let (status, before) = server.call(&name, Some(&token), json!({})).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["undeclared"]["err"], "PermissionDenied", "{before}");
    assert_eq!(
        before["set"]["err"], "PermissionDenied",
        "no consent: {before}"
    );
    as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.grant_consent($1, ARRAY['secrets.read:TOKEN', 'secrets.write:TOKEN'])",
            &[&name],
        )
        .await
        .unwrap();
        tx.execute("SELECT spine.set_my_secret('TOKEN', 'refreshed-1')", &[])
            .await
            .unwrap();
    })
    .await;
    let (_, after) = server.call(&name, Some(&token), json!({})).await;
    assert_eq!(after["undeclared"]["err"], "PermissionDenied", "{after}");
    assert_eq!(after["set"]["ok"], "stored", "{after}");
    assert_eq!(after["read_back"]["ok"], "refreshed-2", "{after}");
    let stored: String = one(
        &db,
        "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = $1",
        &[&format!("{alice}/TOKEN")],
    )
    .await;
    assert_eq!(stored, "refreshed-2");
}

/// `ctx.db` binds parameters by the catalog's type, as PostgREST does: a
/// timestamptz, an interval, an enum, arrays, a composite, a pgvector, and numbers
/// and booleans given as strings reach a function typed; a value the type's input
/// rejects is that type's error (22007), not a binding failure.
#[tokio::test]
async fn ctx_db_binds_parameters_by_their_catalog_type() {
    let db = connect().await;
    let alice = Uuid::new_v4();
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    let vector: String = one(
        &db,
        "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'",
        &[],
    )
    .await;
    let queue = format!("q{tag}");
    db.batch_execute(&format!(
        "CREATE TYPE public.pair_{tag} AS (a int, b text);
         CREATE FUNCTION public.echo_{tag}(at timestamptz, wait interval, prio spine.job_priority,
                ns int[], tags text[], pair public.pair_{tag}, emb {vector}.vector, n int, ok boolean)
         RETURNS jsonb LANGUAGE sql AS $$
           SELECT jsonb_build_object('at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
             'wait', extract(epoch FROM wait), 'prio', prio, 'ns', ns, 'tags', tags,
             'pair', to_jsonb(pair), 'emb', emb::text, 'n', n, 'ok', ok) $$;
         GRANT EXECUTE ON FUNCTION public.echo_{tag} TO authenticated;
         SELECT spine.create_queue('{queue}', user_enqueue => true);"
    ))
    .await
    .unwrap();
    let name = deploy(
        &db,
        json!({}),
        json!({"wall_ms": 5000}),
        &format!(
            r#"
        const attempt = async (f) => {{ try {{ return {{ ok: await f() }}; }} catch (e) {{ return {{ err: e.name, message: e.message }}; }} }};
        const args = {{
          at: "2026-12-06T10:00:00+01:00", wait: "90 minutes", prio: "background",
          ns: [1, 2, 3], tags: ["a b", "NULL"], pair: {{ a: 7, b: "x,y" }}, emb: [0.5, 1, 2],
          n: "42", ok: "true" }};
        Deno.serve(async (req, ctx) => Response.json({{
          echo: await attempt(async () => (await ctx.db.rpc("public.echo_{tag}", args)).rows[0]),
          bad_time: await attempt(() => ctx.db.rpc("public.echo_{tag}", {{ ...args, at: "not a time" }})),
          enqueue: await attempt(async () => (await ctx.db.rpc("spine.enqueue", {{
            queue: "{queue}", payload: {{ k: 1 }}, priority: "background", run_at: "2030-01-01T00:00:00Z" }})).rows.length),
        }}));"#
        ),
    )
    .await;
    let server = Server::start().await;
    let (status, out) = server.call(&name, Some(&token_for(alice)), json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["echo"]["ok"],
        json!({"at": "2026-12-06 09:00", "wait": 5400, "prio": "background", "ns": [1, 2, 3],
               "tags": ["a b", "NULL"], "pair": {"a": 7, "b": "x,y"}, "emb": "[0.5,1,2]",
               "n": 42, "ok": true}),
        "{out}"
    );
    assert_eq!(out["bad_time"]["err"], "DatabaseError", "{out}");
    assert!(
        out["bad_time"]["message"]
            .as_str()
            .unwrap()
            .contains("22007"),
        "{out}"
    );
    assert_eq!(out["enqueue"]["ok"], 1, "{out}");
    let job: (Option<Uuid>, String, bool) = {
        let r = db
            .query_one(
                "SELECT owner_id, priority::text, run_at > '2029-12-31' FROM spine.jobs WHERE queue = $1",
                &[&queue],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(job, (Some(alice), "background".to_string(), true));
}

/// Per-plugin health: every invocation is counted in spine.plugin_health and
/// /metrics; a plugin that fails SPINE_FUNCTIONS_DISABLE_AFTER times in a row is
/// disabled (audited) and answers 403 until service_role enables it again, which
/// starts its run afresh.
#[tokio::test]
async fn a_plugin_that_keeps_failing_is_disabled() {
    let db = connect().await;
    let name = deploy(
        &db,
        json!({}),
        json!({"wall_ms": 5000}),
        r#"Deno.serve(async (req) => {
             const { fail } = await req.json();
             if (fail) throw new Error("upstream is down");
             return new Response("ok");
           });"#,
    )
    .await;
    let server = Server::start_with(&[("SPINE_FUNCTIONS_DISABLE_AFTER", "3")]).await;
    let token = token_for(Uuid::new_v4());
    let (status, _) = server
        .call(&name, Some(&token), json!({"fail": false}))
        .await;
    assert_eq!(status, 200);
    for _ in 0..3 {
        let (status, body) = server
            .call(&name, Some(&token), json!({"fail": true}))
            .await;
        assert_eq!(status, 500, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = server
            .call(&name, Some(&token), json!({"fail": false}))
            .await;
        if status == 403 {
            assert_eq!(body["code"], "FUNCTION_DISABLED");
            break;
        }
        assert!(Instant::now() < deadline, "not disabled: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let row = db
        .query_one(
            "SELECT h.failures, h.limit_hits, h.failures_in_a_row, h.auto_disabled_at IS NOT NULL, \
                    h.last_error, h.last_ok_at IS NOT NULL, p.enabled \
               FROM spine.plugin_health h JOIN spine.plugins p ON p.name = h.plugin WHERE h.plugin = $1",
            &[&name],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i32>(2),
            row.get::<_, bool>(3),
            row.get::<_, bool>(5),
            row.get::<_, bool>(6),
        ),
        (3, 0, 3, true, true, false)
    );
    assert!(
        row.get::<_, String>(4).contains("upstream is down"),
        "{:?}",
        row.get::<_, String>(4)
    );
    spine_tests::seal_audit(&db).await;
    let audited: i64 = one(
        &db,
        "SELECT count(*) FROM spine.audit_log WHERE action = 'plugin.auto_disabled' AND target = $1",
        &[&format!("plugin:{name}")],
    )
    .await;
    assert_eq!(audited, 1);
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "function_invocations_total{{function=\"{name}\",outcome=\"threw\"}} 3"
        )),
        "{metrics}"
    );

    // Enabled again by the operator: a fresh run, and it answers.
    db.execute("SELECT spine.set_plugin_enabled($1, true)", &[&name])
        .await
        .unwrap();
    let streak: i32 = one(
        &db,
        "SELECT failures_in_a_row FROM spine.plugin_health WHERE plugin = $1",
        &[&name],
    )
    .await;
    assert_eq!(streak, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = server
            .call(&name, Some(&token), json!({"fail": false}))
            .await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
