//! What a hostile client sends to /rest/v1, against the real database: each
//! request gets a clear 4xx with a JSON body, and nothing is written.
//!
//! The router runs in process (tower's `oneshot`), on the dev stack's database.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use spine_gateway::config::Cli;
use spine_gateway::server::Gateway;
use tower::ServiceExt;

const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

async fn setup() -> axum::Router {
    let db = spine_tests::connect().await;
    db.batch_execute(
        "BEGIN; SELECT pg_advisory_xact_lock(7340001);
         CREATE TABLE IF NOT EXISTS public.gw_hostile (id int PRIMARY KEY, name text, doc jsonb);
         GRANT ALL ON public.gw_hostile TO authenticated;
         INSERT INTO public.gw_hostile VALUES (1, 'one', '{\"a\": 1}') ON CONFLICT DO NOTHING;
         COMMIT;",
    )
    .await
    .unwrap();
    let url = spine_tests::database_url();
    let cli = Cli::try_parse_from([
        "spine-gateway",
        "--database-url",
        &url,
        "--jwt-secret",
        SECRET,
        "--max-body",
        "4096",
    ])
    .unwrap();
    let gateway = Gateway::start(&cli.config).await.unwrap();
    gateway.router(&cli.config).unwrap()
}

fn token(claims: Value) -> String {
    spine_core::auth::sign(&claims, SECRET.as_bytes())
}

fn user() -> String {
    token(
        json!({"sub": uuid::Uuid::new_v4().to_string(), "role": "authenticated", "exp": 4_000_000_000u64}),
    )
}

async fn send(
    router: &axum::Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Body,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = auth {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let response = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "{method} {uri}: not JSON: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, body)
}

async fn rows(db: &tokio_postgres::Client) -> (i64, String) {
    let row = db
        .query_one(
            "SELECT count(*), coalesce(string_agg(id || ':' || coalesce(name, ''), ',' ORDER BY id), '') FROM public.gw_hostile",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn hostile_requests_get_clear_errors_and_change_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let router = setup().await;
    let db = spine_tests::connect().await;
    let before = rows(&db).await;
    let u = user();
    let meta = "x\"; DROP TABLE public.gw_hostile; --";
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let cases: Vec<(&str, String, Body, u16, &str)> = vec![
        (
            "POST",
            "/rest/v1/gw_hostile".into(),
            Body::from("{\"id\": 2,"),
            400,
            "PGRST102",
        ),
        (
            "POST",
            "/rest/v1/gw_hostile".into(),
            Body::from("42"),
            400,
            "PGRST102",
        ),
        (
            "POST",
            "/rest/v1/gw_hostile".into(),
            Body::from(format!("{{\"id\": 3, \"name\": \"{}\"}}", "x".repeat(8000))),
            413,
            "PGRST413",
        ),
        (
            "POST",
            "/rest/v1/gw_hostile".into(),
            Body::from(format!(
                "{{\"id\": 4, \"{}\": 1}}",
                meta.replace('"', "\\\"")
            )),
            400,
            "PGRST204",
        ),
        (
            "POST",
            format!("/rest/v1/gw_hostile?columns={}", enc(meta)),
            Body::from("{\"id\": 5}"),
            400,
            "PGRST100",
        ),
        (
            "POST",
            "/rest/v1/gw_hostile?columns=id,nope".into(),
            Body::from("{\"id\": 5}"),
            400,
            "PGRST204",
        ),
        (
            "POST",
            format!("/rest/v1/gw_hostile?on_conflict={}", enc(meta)),
            Body::from("{\"id\": 6}"),
            400,
            "PGRST100",
        ),
        (
            "GET",
            format!("/rest/v1/{}", enc(meta)),
            Body::empty(),
            404,
            "PGRST205",
        ),
        (
            "GET",
            format!("/rest/v1/gw_hostile?select={}", enc(meta)),
            Body::empty(),
            400,
            "PGRST100",
        ),
        (
            "GET",
            format!(
                "/rest/v1/gw_hostile?select=id::{}",
                enc("text; DROP TABLE x")
            ),
            Body::empty(),
            400,
            "PGRST100",
        ),
        (
            "GET",
            format!("/rest/v1/gw_hostile?{}=eq.1", enc(meta)),
            Body::empty(),
            400,
            "42703",
        ),
        (
            "GET",
            format!("/rest/v1/gw_hostile?name=eq.{}", enc(meta)),
            Body::empty(),
            200,
            "",
        ),
        (
            "GET",
            format!("/rest/v1/gw_hostile?{}=eq.1", enc(&format!("doc->{meta}"))),
            Body::empty(),
            200,
            "",
        ),
        (
            "GET",
            format!("/rest/v1/gw_hostile?order={}", enc(meta)),
            Body::empty(),
            400,
            "PGRST100",
        ),
        (
            "GET",
            format!(
                "/rest/v1/gw_hostile?name=fts({}).x",
                enc("english); DROP TABLE x; --")
            ),
            Body::empty(),
            400,
            "42602",
        ),
        (
            "GET",
            format!(
                "/rest/v1/gw_hostile?id=in.({})",
                enc("1,2); DROP TABLE x; --")
            ),
            Body::empty(),
            400,
            "PGRST100",
        ),
        (
            "GET",
            format!(
                "/rest/v1/gw_hostile?or=({})",
                enc("id.eq.1,name.eq.x);DROP TABLE x")
            ),
            Body::empty(),
            400,
            "PGRST100",
        ),
        (
            "GET",
            "/rest/v1/gw_hostile?order=nope.desc".into(),
            Body::empty(),
            400,
            "42703",
        ),
        (
            "GET",
            "/rest/v1/gw_hostile?limit=-1".into(),
            Body::empty(),
            400,
            "PGRST100",
        ),
        (
            "POST",
            format!("/rest/v1/rpc/{}", enc(meta)),
            Body::from("{}"),
            404,
            "PGRST202",
        ),
        (
            "POST",
            "/rest/v1/rpc/now".into(),
            Body::from(format!("{{\"{}\": 1}}", meta.replace('"', "\\\""))),
            404,
            "PGRST202",
        ),
        (
            "PATCH",
            "/rest/v1/gw_hostile".into(),
            Body::from("{\"name\": \"all\"}"),
            400,
            "21000",
        ),
        (
            "DELETE",
            "/rest/v1/gw_hostile".into(),
            Body::empty(),
            400,
            "21000",
        ),
        (
            "PATCH",
            "/rest/v1/gw_hostile?id=eq.1".into(),
            Body::from("[1]"),
            400,
            "PGRST102",
        ),
        (
            "PUT",
            "/rest/v1/gw_hostile".into(),
            Body::empty(),
            405,
            "PGRST117",
        ),
    ];
    let mut wrong = Vec::new();
    for (method, uri, body, status, code) in cases {
        let (got, json) = send(&router, method, &uri, Some(&u), body).await;
        let code_ok = code.is_empty()
            || (json["code"] == code && json["message"].as_str().is_some_and(|m| !m.is_empty()));
        if got.as_u16() != status || !code_ok {
            wrong.push(format!(
                "{method} {uri}: want {status} {code}, got {got} {json}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(rows(&db).await, before, "nothing was written");
}

#[tokio::test]
async fn bad_tokens_are_401_never_anon() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let router = setup().await;
    let now = jsonwebtoken_now();
    let valid = user();
    let forged = format!("{}x", &valid[..valid.len() - 1]);
    let wrong_key = spine_core::auth::sign(
        &json!({"role": "service_role", "exp": now + 600}),
        b"another-secret-of-at-least-thirty-two-chars",
    );
    let expired =
        token(json!({"sub": "u", "role": "authenticated", "iat": now - 7200, "exp": now - 3600}));
    let future =
        token(json!({"sub": "u", "role": "authenticated", "nbf": now + 3600, "exp": now + 7200}));
    let superuser = token(json!({"role": "postgres", "exp": now + 600}));
    // {"alg":"none"}.{"role":"service_role"}. with no signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.";
    for (what, t, code) in [
        ("forged", forged.as_str(), "PGRST301"),
        ("wrong key", wrong_key.as_str(), "PGRST301"),
        ("expired", expired.as_str(), "PGRST303"),
        ("not yet valid", future.as_str(), "PGRST301"),
        ("role postgres", superuser.as_str(), "PGRST301"),
        ("alg none", none, "PGRST301"),
        ("garbage", "not-a-jwt", "PGRST301"),
        ("unknown sb_ key", "sb_secret_guess", "PGRST301"),
    ] {
        let (status, body) = send(
            &router,
            "GET",
            "/rest/v1/gw_hostile",
            Some(t),
            Body::empty(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
    }
    // A valid token without a role is anon, as behind PostgREST: anon has no
    // grant on the table, so the database refuses it (42501 → 401), which a
    // token refused by the gateway (PGRST301) would not reach.
    let roleless = token(json!({"sub": "u", "exp": now + 600}));
    let (status, body) = send(
        &router,
        "GET",
        "/rest/v1/gw_hostile",
        Some(&roleless),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "42501", "{body}");
}

fn jsonwebtoken_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// With `SPINE_AUTH=off` (a Supabase database, where GoTrue owns `auth.*`)
/// `/auth/v1` answers 404 and the gateway reads and writes no auth table,
/// while `/rest/v1` keeps working with the project's tokens. Proof: the auth
/// tables are locked exclusively while it serves; a gateway that touched them
/// would wait for the lock. The control, auth on, does wait.
#[tokio::test]
async fn auth_off_leaves_the_auth_tables_alone() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let auth_on = setup().await;
    let url = spine_tests::database_url();
    let cli = Cli::try_parse_from([
        "spine-gateway",
        "--database-url",
        &url,
        "--jwt-secret",
        SECRET,
        "--auth",
        "off",
    ])
    .unwrap();
    let gateway = Gateway::start(&cli.config).await.unwrap();
    let auth_off = gateway.router(&cli.config).unwrap();
    let mut locker = spine_tests::connect().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute(
        "LOCK TABLE auth.users, auth.sessions, auth.refresh_tokens IN ACCESS EXCLUSIVE MODE",
    )
    .await
    .unwrap();
    let within = |f| tokio::time::timeout(std::time::Duration::from_secs(3), f);
    let body = || Body::from("{\"email\": \"a@example.test\", \"password\": \"secret123\"}");
    for uri in ["/auth/v1/signup", "/auth/v1/token?grant_type=password"] {
        let (status, json) = within(send(&auth_off, "POST", uri, None, body()))
            .await
            .expect("auth off: answered without waiting for auth.*");
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {json}");
        assert_eq!(json["code"], "auth_off");
    }
    let u = user();
    let (status, _) = within(send(
        &auth_off,
        "GET",
        "/auth/v1/user",
        Some(&u),
        Body::empty(),
    ))
    .await
    .expect("answered");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, json) = within(send(
        &auth_off,
        "GET",
        "/rest/v1/gw_hostile?select=id",
        Some(&u),
        Body::empty(),
    ))
    .await
    .expect("answered");
    assert_eq!(status, StatusCode::OK, "{json}");
    // The control: with auth on, a sign-in reads auth.users and waits.
    let blocked = within(send(
        &auth_on,
        "POST",
        "/auth/v1/token?grant_type=password",
        None,
        body(),
    ))
    .await;
    assert!(
        blocked.is_err(),
        "auth on must reach auth.users: {blocked:?}"
    );
    lock.rollback().await.unwrap();
}

/// DDL reloads the schema cache (the `pgrst_ddl_watch` event trigger of the
/// migrations NOTIFYs `pgrst`): a table created after the gateway started is
/// served within seconds, without a restart or a manual NOTIFY.
#[tokio::test]
async fn ddl_reloads_the_schema_cache() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let router = setup().await;
    let db = spine_tests::connect().await;
    // The listener reads the catalog once more when it connects: let that pass,
    // so only a NOTIFY can make the new table appear.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let table = format!("gw_ddl_{}", uuid::Uuid::new_v4().simple());
    let uri = format!("/rest/v1/{table}?select=id");
    let (status, _) = send(&router, "GET", &uri, Some(&user()), Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not there yet");
    db.batch_execute(&format!(
        "CREATE TABLE public.{table} (id int); GRANT SELECT ON public.{table} TO authenticated;"
    ))
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, json) = send(&router, "GET", &uri, Some(&user()), Body::empty()).await;
        if status == StatusCode::OK {
            assert_eq!(json, json!([]));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not served after DDL: {status} {json}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    db.batch_execute(&format!("DROP TABLE public.{table}"))
        .await
        .unwrap();
}

/// When Postgres drops the gateway's connections (a restart, a failover,
/// `pg_terminate_backend`), the gateway keeps answering, and its schema-reload
/// listener reconnects: DDL after that is still seen. Before the fix, the
/// listener spun on its closed connection and the gateway stopped answering.
// A plain thread watches the check: the bug this catches spun the gateway's
// runtime, and a hung runtime fires no timeouts of its own.
#[test]
fn the_gateway_survives_its_connections_being_killed() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(survives_its_connections_being_killed())
        }));
        let _ = done.send(outcome.map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }));
    });
    match finished.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Ok(())) => {}
        Ok(Err(message)) => panic!("{message}"),
        Err(_) => {
            panic!("the gateway stopped answering for 60 s after its connections were killed")
        }
    }
}

async fn survives_its_connections_being_killed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let router = setup().await;
    let db = spine_tests::connect().await;
    let u = user();
    let (status, _) = send(
        &router,
        "GET",
        "/rest/v1/gw_hostile?select=id",
        Some(&u),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    // The schema-reload listeners' connections (LISTEN pgrst): this gateway's
    // and, harmlessly, any other's.
    let killed: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE datname = current_database() AND query = 'LISTEN pgrst') t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        killed >= 1,
        "the listener's connection was found and killed"
    );
    let within = |f| tokio::time::timeout(std::time::Duration::from_secs(5), f);
    let (status, json) = within(send(
        &router,
        "GET",
        "/rest/v1/gw_hostile?select=id",
        Some(&u),
        Body::empty(),
    ))
    .await
    .expect("the gateway still answers");
    assert_eq!(status, StatusCode::OK, "{json}");
    // The listener is back: a new table shows up.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let table = format!("gw_back_{}", uuid::Uuid::new_v4().simple());
    db.batch_execute(&format!(
        "CREATE TABLE public.{table} (id int); GRANT SELECT ON public.{table} TO authenticated;"
    ))
    .await
    .unwrap();
    let uri = format!("/rest/v1/{table}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, _) = within(send(&router, "GET", &uri, Some(&u), Body::empty()))
            .await
            .expect("answers");
        if status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the listener did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    db.batch_execute(&format!("DROP TABLE public.{table}"))
        .await
        .unwrap();
}

/// `Prefer: return=headers-only` on an insert: 201, no body, and the new row's
/// `Location` by primary key, as PostgREST answers.
#[tokio::test]
async fn headers_only_inserts_say_where_the_row_is() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = spine_tests::connect().await;
    db.batch_execute(
        "BEGIN; SELECT pg_advisory_xact_lock(7340001);
         CREATE TABLE IF NOT EXISTS public.gw_located (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, tag text);
         GRANT ALL ON public.gw_located TO authenticated;
         COMMIT;",
    )
    .await
    .unwrap();
    let router = setup().await;
    let tag = uuid::Uuid::new_v4().to_string();
    let request = Request::builder()
        .method("POST")
        .uri("/rest/v1/gw_located")
        .header("content-type", "application/json")
        .header("prefer", "return=headers-only")
        .header("authorization", format!("Bearer {}", user()))
        .body(Body::from(json!({"tag": tag}).to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id: i64 = db
        .query_one("SELECT id FROM public.gw_located WHERE tag = $1", &[&tag])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        response.headers()["location"],
        format!("/gw_located?id=eq.{id}").as_str()
    );
    assert_eq!(
        response.headers()["preference-applied"],
        "return=headers-only"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
}
