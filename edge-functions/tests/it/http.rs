//! The host's HTTP surface as a browser and an operator meet it: CORS preflights
//! answered before authentication, tokens signed with Supabase's asymmetric keys
//! verified against a JWKS served over HTTP (and a rotated key picked up while
//! running), and a SIGTERM that lets calls in progress finish.

use crate::host::{deploy, now, secret, Server};
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use spine_functions::jwt;
use spine_tests::connect;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EC_PEM: &[u8] = include_bytes!("../../../core/tests/data/jwt/es256-test-only.pem");
const RSA_PEM: &[u8] = include_bytes!("../../../core/tests/data/jwt/rs256-test-only.pem");

async fn hello(db: &tokio_postgres::Client, source: &str) -> String {
    deploy(db, json!({}), json!({"wall_ms": 10_000}), source).await
}

/// A browser's preflight gets the CORS answer without a token; the call itself
/// carries one `Access-Control-Allow-Origin`, even when the function sets its own
/// (as Supabase's examples tell functions to).
#[tokio::test]
async fn browsers_can_call_functions() {
    let db = connect().await;
    let name = hello(
        &db,
        "Deno.serve(() => new Response('ok', {headers: {'Access-Control-Allow-Origin': '*'}}))",
    )
    .await;
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/functions/v1/{name}", server.url);

    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, x-client-info, apikey, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(header(&preflight, "access-control-allow-origin"), ["*"]);
    let allowed = header(&preflight, "access-control-allow-headers").join(",");
    for h in ["authorization", "x-client-info", "apikey", "content-type"] {
        assert!(allowed.contains(h), "{h} not allowed: {allowed}");
    }
    assert!(header(&preflight, "access-control-allow-methods")
        .join(",")
        .contains("POST"));

    let anon = jwt::sign(&json!({"role": "anon"}), secret().as_bytes());
    let call = client
        .post(&url)
        .header("origin", "http://localhost:3000")
        .bearer_auth(&anon)
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
    assert_eq!(header(&call, "access-control-allow-origin"), ["*"]);

    // Errors of the host carry the headers too, or a browser could not read them.
    let refused = client
        .post(&url)
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(header(&refused, "access-control-allow-origin"), ["*"]);
}

/// A configured origin list answers only those origins.
#[tokio::test]
async fn cors_origins_can_be_restricted() {
    let server = Server::start_with(&[("SPINE_CORS_ORIGINS", "https://app.example")]).await;
    let preflight = |origin: &'static str| {
        reqwest::Client::new()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/functions/v1/any", server.url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "https://app.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

/// A JWKS served over HTTP, whose keys a test can change.
struct KeyServer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<Mutex<usize>>,
}

impl KeyServer {
    async fn start(keys: Vec<Value>) -> Self {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(Mutex::new(0));
        let (k, f) = (keys.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/auth/v1/.well-known/jwks.json",
            get(move || {
                let (k, f) = (k.clone(), f.clone());
                async move {
                    *f.lock().unwrap() += 1;
                    axum::Json(json!({"keys": *k.lock().unwrap()}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/auth/v1/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        KeyServer { url, keys, fetches }
    }
}

fn signer(alg: Algorithm, kid: &str) -> (EncodingKey, Value) {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC_PEM).unwrap(),
        _ => EncodingKey::from_rsa_pem(RSA_PEM).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    (key, serde_json::to_value(jwk).unwrap())
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey, user: &str) -> String {
    let header = Header {
        kid: Some(kid.into()),
        ..Header::new(alg)
    };
    let claims = json!({"role": "authenticated", "sub": user, "exp": now() + 600});
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// ES256 and RS256 tokens verify against keys fetched from a JWKS URL, the HS256
/// secret keeps working beside them, and a key added to the JWKS later (a
/// rotation) is found by fetching again, no more often than configured.
#[tokio::test]
async fn asymmetric_tokens_verify_against_a_jwks_url() {
    let db = connect().await;
    let name = hello(
        &db,
        "Deno.serve((req, ctx) => Response.json({user: ctx.user.id}))",
    )
    .await;
    let (ec, ec_jwk) = signer(Algorithm::ES256, "ec-1");
    let (rsa, rsa_jwk) = signer(Algorithm::RS256, "rsa-1");
    let keys = KeyServer::start(vec![ec_jwk]).await;
    let server = Server::start_with(&[
        ("SPINE_JWKS_URL", keys.url.as_str()),
        ("SPINE_JWKS_REFETCH_SECS", "1"),
    ])
    .await;
    let user = uuid::Uuid::new_v4().to_string();

    let es = token(Algorithm::ES256, "ec-1", &ec, &user);
    let (status, body) = server.call(&name, Some(&es), json!({})).await;
    assert_eq!(
        (status, body["user"].as_str()),
        (200, Some(user.as_str())),
        "{body}"
    );
    let hs = jwt::sign(
        &json!({"role": "authenticated", "sub": user, "exp": now() + 600}),
        secret().as_bytes(),
    );
    assert_eq!(server.call(&name, Some(&hs), json!({})).await.0, 200);

    // A key the JWKS does not have (yet): refused with a reason.
    let rs = token(Algorithm::RS256, "rsa-1", &rsa, &user);
    let (status, body) = server.call(&name, Some(&rs), json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("rsa-1"),
        "{body}"
    );

    // Rotation: the key server publishes the new key; after the refetch interval
    // the host fetches again on the first token that names it.
    keys.keys.lock().unwrap().push(rsa_jwk);
    let fetches_before = *keys.fetches.lock().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.call(&name, Some(&rs), json!({})).await;
        if status == 200 {
            assert_eq!(body["user"].as_str(), Some(user.as_str()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated key was never fetched: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Tokens naming unknown keys do not make the host fetch on every call.
    let bogus = token(Algorithm::ES256, "made-up", &ec, &user);
    let before = *keys.fetches.lock().unwrap();
    for _ in 0..20 {
        assert_eq!(server.call(&name, Some(&bogus), json!({})).await.0, 401);
    }
    let during = *keys.fetches.lock().unwrap() - before;
    assert!(during <= 1, "{during} fetches for 20 unknown-key calls");
    assert!(*keys.fetches.lock().unwrap() > fetches_before);
}

/// SIGTERM: the host stops accepting connections, the call in progress finishes
/// with its answer, and the process exits cleanly.
#[tokio::test]
async fn sigterm_lets_calls_in_progress_finish() {
    let db = connect().await;
    let slow = hello(
        &db,
        "Deno.serve(async () => { await new Promise(r => setTimeout(r, 1500)); return new Response('finished'); })",
    )
    .await;
    let mut server = Server::start().await;
    let anon = jwt::sign(&json!({"role": "anon"}), secret().as_bytes());
    let url = format!("{}/functions/v1/{slow}", server.url);
    let call = tokio::spawn({
        let anon = anon.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(anon)
                .send()
                .await
                .expect("the call in progress is answered");
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", server.url))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection was accepted after SIGTERM"
    );
    assert_eq!(call.await.unwrap(), (200, "finished".to_string()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the host did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// `/metrics` counts invocations by function and outcome, times them, and shows
/// the database pool.
#[tokio::test]
async fn metrics_count_invocations() {
    let db = connect().await;
    let name = hello(&db, "Deno.serve(() => new Response('ok'))").await;
    let server = Server::start().await;
    let anon = jwt::sign(&json!({"role": "anon"}), secret().as_bytes());
    assert_eq!(server.call(&name, Some(&anon), json!({})).await.0, 200);
    assert_eq!(
        server.call("no-such-fn", Some(&anon), json!({})).await.0,
        404
    );
    let text = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        format!("spine_function_invocations_total{{function=\"{name}\",outcome=\"ok\"}} 1\n"),
        "spine_function_invocations_total{function=\"no-such-fn\",outcome=\"not_found\"} 1\n"
            .to_string(),
        format!("spine_function_invocation_seconds_count{{function=\"{name}\"}} 1\n"),
    ] {
        assert!(text.contains(&line), "{line} missing from:\n{text}");
    }
    assert!(text.contains("spine_function_db_pool_size "), "{text}");
}

/// A `ReadableStream` body reaches the client chunk by chunk while the function
/// still produces it (server-sent events, an LLM's tokens); a failure after the
/// head cuts the body off instead of ending it as if complete, and the limits
/// still stop an endless stream. `/metrics` counts each by its real outcome.
#[tokio::test]
async fn streamed_bodies_arrive_as_they_are_produced() {
    let db = connect().await;
    let sse = hello(
        &db,
        r#"Deno.serve(() => new Response(new ReadableStream({
             start(c) {
               const enc = new TextEncoder();
               let i = 0;
               const tick = () => {
                 if (i === 3) return c.close();
                 c.enqueue(enc.encode(`data: ${i++}\n\n`));
                 setTimeout(tick, 300);
               };
               tick();
             },
           }), { headers: { "content-type": "text/event-stream" } }));"#,
    )
    .await;
    let broken = hello(
        &db,
        r#"Deno.serve(() => new Response(new ReadableStream({
             start(c) { c.enqueue("partial"); setTimeout(() => c.error(new Error("upstream broke")), 50); },
           })));"#,
    )
    .await;
    let endless = deploy(
        &db,
        json!({}),
        json!({"wall_ms": 500}),
        r#"Deno.serve(() => new Response(new ReadableStream({
             pull(c) { return new Promise((ok) => setTimeout(() => { c.enqueue("tick\n"); ok(); }, 20)); },
           })));"#,
    )
    .await;
    let server = Server::start().await;
    let anon = jwt::sign(&json!({"role": "anon"}), secret().as_bytes());
    let client = reqwest::Client::new();
    let call = |name: &str| {
        client
            .post(format!("{}/functions/v1/{name}", server.url))
            .bearer_auth(&anon)
            .send()
    };

    let mut response = call(&sse).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().get("content-length").is_none());
    let mut body = Vec::new();
    let mut first_at = None;
    while let Some(chunk) = response.chunk().await.unwrap() {
        first_at.get_or_insert_with(Instant::now);
        body.extend_from_slice(&chunk);
    }
    let ended_at = Instant::now();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    );
    // The function spends ~900 ms producing: a buffered body would arrive at once.
    let spread = ended_at - first_at.unwrap();
    assert!(
        spread >= Duration::from_millis(500),
        "the first chunk came only {spread:?} before the end: the body was buffered"
    );

    for (name, expect) in [(&broken, "partial"), (&endless, "tick\n")] {
        let mut response = call(name).await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let mut body = Vec::new();
        let end = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(end.is_err(), "{name}: a failed stream must not end cleanly");
        assert!(
            String::from_utf8_lossy(&body).starts_with(expect),
            "{name}: {body:?}"
        );
    }

    let text = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        format!("spine_function_invocations_total{{function=\"{sse}\",outcome=\"ok\"}} 1\n"),
        format!("spine_function_invocations_total{{function=\"{broken}\",outcome=\"threw\"}} 1\n"),
        format!(
            "spine_function_invocations_total{{function=\"{endless}\",outcome=\"limit_wall\"}} 1\n"
        ),
    ] {
        assert!(text.contains(&line), "{line} missing from:\n{text}");
    }
}

/// A stream that is done by the time the host looks (its head and its end
/// both ready) is answered, every time: the host once picked either at
/// random and answered half of such calls 500 "the invocation's thread died"
/// (found by the assistant example, whose skills fail fast when a key is
/// missing).
#[tokio::test]
async fn a_stream_done_at_once_is_always_answered() {
    let db = connect().await;
    let quick = hello(
        &db,
        r#"Deno.serve(() => new Response(new ReadableStream({
             async start(c) { await null; c.enqueue("event: error\ndata: no key\n\n"); c.close(); },
           }), { headers: { "content-type": "text/event-stream" } }));"#,
    )
    .await;
    let server = Server::start().await;
    let anon = jwt::sign(&json!({"role": "anon"}), secret().as_bytes());
    let client = reqwest::Client::new();
    for attempt in 0..40 {
        let response = client
            .post(format!("{}/functions/v1/{quick}", server.url))
            .bearer_auth(&anon)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "attempt {attempt}: {body}");
        assert_eq!(body, "event: error\ndata: no key\n\n", "attempt {attempt}");
    }
}

/// A chunk enqueued just before a slow `fetch` goes out before the fetch
/// returns (an agent's "thought" while it waits on its model), not with the
/// answer: the host's fetch blocks the function's thread, so it first lets
/// the event loop turn once.
#[tokio::test]
async fn a_chunk_before_a_slow_fetch_goes_out_first() {
    let db = connect().await;
    let model = axum::Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            "the answer"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, model).await.unwrap() });
    let source = format!(
        r#"Deno.serve(() => new Response(new ReadableStream({{
             async start(c) {{
               c.enqueue("thinking\n");
               const r = await fetch("http://127.0.0.1:{port}/slow");
               c.enqueue(await r.text());
               c.close();
             }},
           }}), {{ headers: {{ "content-type": "text/event-stream" }} }}));"#
    );
    let name = deploy(
        &db,
        json!({"network": ["127.0.0.1"]}),
        json!({"wall_ms": 10_000}),
        &source,
    )
    .await;
    let server = Server::start().await;
    let system = jwt::sign(&json!({"role": "service_role"}), secret().as_bytes());
    let mut response = reqwest::Client::new()
        .post(format!("{}/functions/v1/{name}", server.url))
        .bearer_auth(&system)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut chunks = Vec::new();
    let started = Instant::now();
    while let Some(chunk) = response.chunk().await.unwrap() {
        chunks.push((
            started.elapsed(),
            String::from_utf8(chunk.to_vec()).unwrap(),
        ));
    }
    let body: String = chunks.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(body, "thinking\nthe answer");
    let (thought_at, first) = &chunks[0];
    assert_eq!(first, "thinking\n", "{chunks:?}");
    let (answer_at, _) = chunks.last().unwrap();
    assert!(
        *answer_at - *thought_at >= Duration::from_millis(400),
        "the thought came with the answer: {chunks:?}"
    );
}

/// A fetched body is read as it arrives: a function returning `new
/// Response(upstream.body)` relays a provider's stream chunk by chunk (an
/// LLM's tokens), `text()` still reads a body whole, the 10 MiB cap holds
/// for both ways of reading, and past 16 unread bodies the oldest is dropped.
#[tokio::test]
async fn fetched_bodies_stream_as_they_arrive() {
    let db = connect().await;
    let upstream = axum::Router::new()
        .route(
            "/tokens",
            get(|| async {
                let words = futures_util::stream::unfold(0, |i| async move {
                    if i == 3 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Some((Ok::<_, std::io::Error>(format!("data: {i}\n\n")), i + 1))
                });
                axum::body::Body::from_stream(words)
            }),
        )
        .route("/huge", get(|| async { "x".repeat(11 << 20) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, upstream).await.unwrap() });
    let network = json!({"network": ["127.0.0.1"]});
    let relay = deploy(
        &db,
        network.clone(),
        json!({"wall_ms": 10_000}),
        &format!(
            r#"Deno.serve(async () => {{
                 const r = await fetch("http://127.0.0.1:{port}/tokens");
                 return new Response(r.body, {{ headers: {{ "content-type": "text/event-stream" }} }});
               }});"#
        ),
    )
    .await;
    let whole = deploy(
        &db,
        network,
        json!({"wall_ms": 30_000, "memory_mb": 256, "cpu_ms": 10_000}),
        &format!(
            r#"const attempt = async (f) => {{ try {{ return {{ ok: await f() }}; }} catch (e) {{ return {{ err: e.name, message: e.message }}; }} }};
               Deno.serve(async () => Response.json({{
                 text: await attempt(async () => (await fetch("http://127.0.0.1:{port}/tokens")).text()),
                 huge_text: await attempt(async () => (await fetch("http://127.0.0.1:{port}/huge")).text()),
                 unread: await attempt(async () => {{
                   const rs = [];
                   for (let i = 0; i < 17; i++) rs.push(await fetch("http://127.0.0.1:{port}/tokens"));
                   const last = await rs[16].text();
                   try {{ await rs[0].text(); return "the oldest was kept"; }} catch (e) {{ return [e.name, last]; }}
                 }}),
                 huge_stream: await attempt(async () => {{
                   let n = 0;
                   for await (const chunk of (await fetch("http://127.0.0.1:{port}/huge")).body) n += chunk.length;
                   return n;
                 }}),
               }}));"#
        ),
    )
    .await;
    let server = Server::start().await;
    let system = jwt::sign(&json!({"role": "service_role"}), secret().as_bytes());
    let client = reqwest::Client::new();
    let mut response = client
        .post(format!("{}/functions/v1/{relay}", server.url))
        .bearer_auth(&system)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let mut chunks = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        chunks.push((
            started.elapsed(),
            String::from_utf8(chunk.to_vec()).unwrap(),
        ));
    }
    let body: String = chunks.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(body, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    let spread = chunks.last().unwrap().0 - chunks[0].0;
    assert!(
        spread >= Duration::from_millis(400),
        "relayed as it came, not at the end: {chunks:?}"
    );

    let (status, got) = server.call(&whole, Some(&system), json!({})).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["text"]["ok"], "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    assert_eq!(
        got["unread"]["ok"],
        json!(["TypeError", "data: 0\n\ndata: 1\n\ndata: 2\n\n"]),
        "past 16 unread bodies the oldest goes: {got}"
    );
    for way in ["huge_text", "huge_stream"] {
        assert_eq!(got[way]["err"], "TypeError", "{way}: {got}");
        let message = got[way]["message"].as_str().unwrap();
        assert!(
            message.contains("larger than 10485760 bytes"),
            "{way}: {message}"
        );
    }
}

/// A function's input schema refuses a bad body with 400 VALIDATION and the
/// pointers, before the function runs; its output schema turns a reply that
/// breaks it into 500 INVALID_RESPONSE; an error the function answers (4xx) is
/// not checked against the output schema.
#[tokio::test]
async fn function_contracts_check_bodies_in_and_out() {
    let db = connect().await;
    let name = hello(
        &db,
        "Deno.serve(async (req) => { const b = await req.json(); \
           return b.status ? new Response('{}', {status: b.status}) : Response.json({echo: b.n}); })",
    )
    .await;
    let (input, output) = (format!("{name}-in"), format!("{name}-out"));
    db.execute(
        "SELECT spine.define_schema($1, $2)",
        &[
            &input,
            &json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
        ],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT spine.define_schema($1, $2)",
        &[
            &output,
            &json!({"type": "object", "properties": {"echo": {"maximum": 10}}}),
        ],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT spine.bind_schema('function', $1, $2)",
        &[&name, &input],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT spine.bind_schema('function', $1, $2, 'output')",
        &[&name, &output],
    )
    .await
    .unwrap();
    let server = Server::start().await;
    let anon = jwt::sign(&json!({"role": "anon"}), secret().as_bytes());
    let post = |body: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/functions/v1/{name}", server.url))
            .bearer_auth(&anon)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let ok = post(r#"{"n": 3}"#).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&ok.bytes().await.unwrap()).unwrap(),
        json!({"echo": 3})
    );

    let refused = post(r#"{"n": "three"}"#).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(body["code"], "VALIDATION", "{body}");
    assert_eq!(body["details"]["pointer"], "/n", "{body}");
    let not_json = post("n=3").await.unwrap();
    assert_eq!(not_json.status(), 400);

    let broken = post(r#"{"n": 11}"#).await.unwrap();
    assert_eq!(broken.status(), 500);
    let body: Value = serde_json::from_slice(&broken.bytes().await.unwrap()).unwrap();
    assert_eq!(body["code"], "INVALID_RESPONSE", "{body}");
    assert_eq!(body["details"]["pointer"], "/echo", "{body}");

    let answered_error = post(r#"{"status": 422}"#).await.unwrap();
    assert_eq!(answered_error.status(), 422);
}

/// Live while the process serves; ready only while the database answers.
#[tokio::test]
async fn health_is_live_and_ready_only_with_a_database() {
    let server = Server::start().await;
    for path in ["/health/live", "/health/ready", "/healthz"] {
        let r = reqwest::get(format!("{}{path}", server.url)).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    drop(server);
    let server =
        Server::start_with(&[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/spine")]).await;
    let live = reqwest::get(format!("{}/health/live", server.url))
        .await
        .unwrap();
    assert_eq!(live.status().as_u16(), 200);
    let ready = reqwest::get(format!("{}/health/ready", server.url))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = serde_json::from_str(&ready.text().await.unwrap()).unwrap();
    assert_eq!(body["status"], "unavailable", "{body}");
    assert!(body["reason"].is_string(), "{body}");
}
