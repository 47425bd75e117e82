//! NATS request/reply into Spine against a real nats-server: SQL verbs run as
//! the token's user under RLS, errors come back as typed envelopes, the events
//! a request writes join its chain, two workers in a queue group answer 1,000
//! requests exactly once between them — and after one is killed with SIGKILL,
//! the other answers everything. An edge function serves a verb too; the
//! in-flight bound and the timeout answer UNAVAILABLE and TIMEOUT; a verb
//! nothing here serves is left to whoever else serves it.

use bytes::Bytes;
use serde_json::{json, Value};
use spine_tests::connect;
use spine_tests::daemons::{Nats, Worker};
use std::time::Duration;
use uuid::Uuid;

const SECRET: &str = "services-test-secret-with-at-least-32-chars";

fn token(user: Uuid) -> String {
    spine_core::auth::sign(
        &json!({"sub": user.to_string(), "role": "authenticated", "exp": 4_000_000_000u64}),
        SECRET.as_bytes(),
    )
}

struct Client {
    nats: async_nats::Client,
    prefix: String,
}

impl Client {
    /// The reply to `data` sent to `service.verb`, as `token`'s user (or anon).
    async fn call(&self, service: &str, verb: &str, data: Value, token: Option<&str>) -> Value {
        self.raw(
            service,
            verb,
            json!({"data": data}).to_string().into(),
            token,
        )
        .await
        .expect("a reply")
    }

    async fn raw(
        &self,
        service: &str,
        verb: &str,
        payload: Bytes,
        token: Option<&str>,
    ) -> Result<Value, async_nats::RequestError> {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(t) = token {
            headers.insert("Authorization", format!("Bearer {t}").as_str());
        }
        let reply = self
            .nats
            .request_with_headers(
                format!("{}.{service}.{verb}", self.prefix),
                headers,
                payload,
            )
            .await?;
        Ok(serde_json::from_slice(&reply.payload).expect("a JSON reply"))
    }
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("ok")
}

/// Tables and verbs of one test, named apart from other tests'.
async fn fixture(db: &tokio_postgres::Client, tag: &str) {
    db.batch_execute(&format!(
        "CREATE TABLE public.notes_{tag} (
             id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
             owner uuid NOT NULL DEFAULT auth.uid(),
             body text NOT NULL CHECK (length(body) > 0));
         ALTER TABLE public.notes_{tag} ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own ON public.notes_{tag} USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
         GRANT SELECT, INSERT ON public.notes_{tag} TO authenticated;
         CREATE FUNCTION public.create_{tag}(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         DECLARE n public.notes_{tag};
         BEGIN
             INSERT INTO public.notes_{tag} (body) VALUES (data->>'body') RETURNING * INTO n;
             PERFORM spine.emit('notes.NoteCreated', jsonb_build_object('id', n.id), 'note/' || n.id);
             RETURN to_jsonb(n);
         END $$;
         CREATE FUNCTION public.get_{tag}(data jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
             SELECT to_jsonb(n) FROM public.notes_{tag} n WHERE n.id = (data->>'id')::uuid $$;
         REVOKE EXECUTE ON FUNCTION public.create_{tag}(jsonb), public.get_{tag}(jsonb) FROM PUBLIC;
         GRANT EXECUTE ON FUNCTION public.create_{tag}(jsonb), public.get_{tag}(jsonb) TO authenticated;
         CREATE TABLE public.hits_{tag} (n bigint NOT NULL);
         INSERT INTO public.hits_{tag} VALUES (0);
         CREATE FUNCTION public.hit_{tag}(data jsonb) RETURNS jsonb LANGUAGE sql SECURITY DEFINER
             SET search_path = pg_catalog AS $$
             UPDATE public.hits_{tag} SET n = n + 1 RETURNING to_jsonb(n) $$;
         CREATE FUNCTION public.nap_{tag}(data jsonb) RETURNS jsonb LANGUAGE sql AS $$
             SELECT to_jsonb(pg_sleep((data->>'s')::float)::text) $$;
         GRANT EXECUTE ON FUNCTION public.hit_{tag}(jsonb), public.nap_{tag}(jsonb) TO anon;
         SELECT spine.expose_service('notes', 'create{tag}', 'public.create_{tag}(jsonb)');
         SELECT spine.expose_service('notes', 'get{tag}', 'public.get_{tag}(jsonb)');
         SELECT spine.expose_service('hits', 'hit{tag}', 'public.hit_{tag}(jsonb)');
         SELECT spine.expose_service('naps', 'nap{tag}', 'public.nap_{tag}(jsonb)');"
    ))
    .await
    .unwrap();
}

fn worker(nats: &Nats, prefix: &str, extra: &[(&str, &str)]) -> Worker {
    let subject = format!("{prefix}.{{service}}.{{verb}}");
    let mut env = vec![
        ("SPINE_SERVICES_SUBJECT", subject.as_str()),
        ("SPINE_JWT_SECRET", SECRET),
    ];
    env.extend_from_slice(extra);
    Worker::start(&format!("t_{}", Uuid::new_v4().simple()), &nats.url(), &env)
}

async fn client(nats: &Nats, prefix: &str, tag: &str) -> Client {
    let client = Client {
        nats: async_nats::connect(nats.url()).await.unwrap(),
        prefix: prefix.to_string(),
    };
    // Ready when a worker answers a verb it serves (its subscription is up).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let probe = format!("get{tag}");
    while client
        .raw("notes", &probe, "{}".into(), None)
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "no worker answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
}

#[tokio::test]
async fn sql_verbs_answer_as_the_tokens_user_with_typed_errors() {
    let db = connect().await;
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    fixture(&db, tag).await;
    let nats = Nats::start();
    let prefix = format!("t{tag}");
    let _worker = worker(&nats, &prefix, &[]);
    let c = client(&nats, &prefix, tag).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (ta, tb) = (token(alice), token(bob));
    let (create, get) = (format!("create{tag}"), format!("get{tag}"));

    // A request with its own chain: the reply and the event it writes join it.
    let request_id = Uuid::new_v4();
    let chain = Uuid::new_v4();
    let envelope = json!({"id": request_id, "correlation_id": chain, "type": "notes.create",
                          "data": {"body": "buy milk"}});
    let reply = c
        .raw("notes", &create, envelope.to_string().into(), Some(&ta))
        .await
        .unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["data"]["body"], "buy milk");
    assert_eq!(reply["data"]["owner"], alice.to_string());
    assert_eq!(reply["causation_id"], request_id.to_string());
    assert_eq!(reply["correlation_id"], chain.to_string());
    let note: Uuid = reply["data"]["id"].as_str().unwrap().parse().unwrap();
    let event = db
        .query_one(
            "SELECT owner_id, causation_id, correlation_id FROM spine.events \
              WHERE type = 'notes.NoteCreated' AND subject = 'note/' || $1::uuid::text",
            &[&note],
        )
        .await
        .unwrap();
    assert_eq!(event.get::<_, Option<Uuid>>(0), Some(alice));
    assert_eq!(event.get::<_, Option<Uuid>>(1), Some(request_id));
    assert_eq!(event.get::<_, Uuid>(2), chain);

    let reply = c.call("notes", &get, json!({"id": note}), Some(&ta)).await;
    assert_eq!(reply["data"]["body"], "buy milk", "{reply}");
    // Bob cannot see it: RLS, reported as NOT_FOUND.
    let reply = c.call("notes", &get, json!({"id": note}), Some(&tb)).await;
    assert_eq!(code(&reply), "NOT_FOUND", "{reply}");
    for (verb, data, token, expected) in [
        (
            &get,
            json!({"id": "not-a-uuid"}),
            Some(ta.as_str()),
            "VALIDATION",
        ),
        (
            &create,
            json!({"body": ""}),
            Some(ta.as_str()),
            "VALIDATION",
        ),
        (&create, json!({"body": "x"}), None, "FORBIDDEN"),
        (
            &create,
            json!({"body": "x"}),
            Some("not.a.token"),
            "FORBIDDEN",
        ),
    ] {
        let reply = c.call("notes", verb, data.clone(), token).await;
        assert_eq!(reply["ok"], false, "{verb} {data}: {reply}");
        assert_eq!(code(&reply), expected, "{verb} {data}: {reply}");
        assert!(reply["error"]["message"].is_string());
    }
    // A verb nothing here serves gets no answer from Spine: cells serving other
    // services on the same subjects answer those (spine-cell's test).
    let unanswered = tokio::time::timeout(
        Duration::from_secs(1),
        c.raw(
            "notes",
            "nothing",
            json!({"data": {}}).to_string().into(),
            Some(&ta),
        ),
    )
    .await;
    assert!(unanswered.is_err() || unanswered.unwrap().is_err());
    // Not an envelope at all.
    let reply = c
        .raw("notes", &get, "nope".into(), Some(&ta))
        .await
        .unwrap();
    assert_eq!(code(&reply), "VALIDATION", "{reply}");
    // No internals leak: the database's text of an unmapped error stays inside.
    assert!(!reply.to_string().contains("SQLSTATE XX"), "{reply}");
}

#[tokio::test]
async fn two_workers_answer_each_request_once_and_survive_a_kill() {
    let db = connect().await;
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    fixture(&db, tag).await;
    let nats = Nats::start();
    let prefix = format!("t{tag}");
    let limits = [("SPINE_SERVICES_TIMEOUT_MS", "2000")];
    let mut first = worker(&nats, &prefix, &limits);
    let _second = worker(&nats, &prefix, &limits);
    let c = std::sync::Arc::new(client(&nats, &prefix, tag).await);
    let hit = format!("hit{tag}");
    // A request that reached the killed worker before NATS noticed its
    // connection was gone is never answered: it was never run either (the
    // process is dead), so sending it again cannot count it twice. A live
    // worker answers within its 2 s timeout (statement_timeout with it), well
    // inside the 4 s the client waits.
    let fire = |n: usize| {
        let (c, hit) = (c.clone(), hit.clone());
        async move {
            let mut ok = 0;
            for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
                let calls = chunk.iter().map(|_| async {
                    for _ in 0..3 {
                        let call =
                            c.raw("hits", &hit, json!({"data": {}}).to_string().into(), None);
                        if let Ok(Ok(reply)) =
                            tokio::time::timeout(Duration::from_secs(4), call).await
                        {
                            return reply;
                        }
                    }
                    panic!("no answer in three tries");
                });
                for reply in futures_util::future::join_all(calls).await {
                    assert_eq!(reply["ok"], true, "{reply}");
                    ok += 1;
                }
            }
            ok
        }
    };
    assert_eq!(fire(500).await, 500);
    first.kill9();
    // The killed worker's subscription goes with its connection: the survivor
    // answers everything from now on.
    assert_eq!(fire(500).await, 500);
    let hits: i64 = db
        .query_one(&format!("SELECT n FROM public.hits_{tag}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hits, 1000, "each request served exactly once");
}

#[tokio::test]
async fn function_verbs_bounds_and_timeouts() {
    let db = connect().await;
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    fixture(&db, tag).await;
    let function = format!("echo-{tag}");
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[
            &json!({"name": function, "version": "1.0.0", "verify_jwt": false}),
            &r#"Deno.serve(async (req) => {
                  const verb = new URL(req.url).pathname.split("/").pop();
                  const data = await req.json();
                  if (data.fail) return Response.json({ message: "no such thing" }, { status: 404 });
                  return Response.json({ verb, data, chain: req.headers.get("x-correlation-id") });
                });"#,
        ],
    )
    .await
    .unwrap();
    let nats = Nats::start();
    let prefix = format!("t{tag}");
    let _worker = worker(
        &nats,
        &prefix,
        &[
            ("SPINE_SERVICES_MAX_IN_FLIGHT", "2"),
            ("SPINE_SERVICES_TIMEOUT_MS", "700"),
        ],
    );
    let c = std::sync::Arc::new(client(&nats, &prefix, tag).await);

    let reply = c.call(&function, "shout", json!({"x": 1}), None).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["data"]["verb"], "shout");
    assert_eq!(reply["data"]["data"], json!({"x": 1}));
    assert_eq!(reply["data"]["chain"], reply["correlation_id"]);
    let reply = c
        .call(&function, "shout", json!({"fail": true}), None)
        .await;
    assert_eq!(code(&reply), "NOT_FOUND", "{reply}");
    assert_eq!(reply["error"]["message"], "no such thing");

    let nap = format!("nap{tag}");
    let reply = c.call("naps", &nap, json!({"s": 2}), None).await;
    assert_eq!(code(&reply), "TIMEOUT", "{reply}");
    // Five at once against a bound of two: the excess is refused at once.
    let calls = (0..5).map(|_| c.call("naps", &nap, json!({"s": 0.3}), None));
    let replies = futures_util::future::join_all(calls).await;
    let codes: Vec<&str> = replies.iter().map(code).collect();
    assert!(codes.contains(&"ok"), "{codes:?}");
    assert!(codes.contains(&"UNAVAILABLE"), "{codes:?}");
    assert!(
        codes.iter().all(|c| *c == "ok" || *c == "UNAVAILABLE"),
        "{codes:?}"
    );
}

#[tokio::test]
async fn verb_contracts_refuse_bad_requests_and_replies() {
    let db = connect().await;
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    fixture(&db, tag).await;
    let create = format!("create{tag}");
    let verb = format!("notes.{create}");
    db.execute(
        "SELECT spine.define_schema($1, $2)",
        &[
            &format!("note-in-{tag}"),
            &json!({"type": "object", "required": ["body"],
                    "properties": {"body": {"type": "string", "maxLength": 20}}}),
        ],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT spine.define_schema($1, $2)",
        &[
            &format!("note-out-{tag}"),
            &json!({"type": "object", "required": ["title"]}),
        ],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT spine.bind_schema('verb', $1, $2)",
        &[&verb, &format!("note-in-{tag}")],
    )
    .await
    .unwrap();
    let nats = Nats::start();
    let prefix = format!("t{tag}");
    let _worker = worker(&nats, &prefix, &[]);
    let c = client(&nats, &prefix, tag).await;
    let alice = token(Uuid::new_v4());
    let reply = c
        .call("notes", &create, json!({"body": 42}), Some(&alice))
        .await;
    assert_eq!(code(&reply), "VALIDATION", "{reply}");
    assert_eq!(reply["error"]["details"]["pointer"], "/body", "{reply}");
    assert_eq!(
        reply["error"]["details"]["schema"],
        format!("note-in-{tag}")
    );
    let reply = c
        .call("notes", &create, json!({"body": "buy milk"}), Some(&alice))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let count_sql = format!("SELECT count(*) FROM public.notes_{tag}");
    let count = || async {
        db.query_one(&count_sql, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(count().await, 1, "the refused request wrote nothing");

    // A reply that breaks its output contract: INTERNAL, and the verb's
    // transaction is rolled back (no note, no event).
    db.execute(
        "SELECT spine.bind_schema('verb', $1, $2, 'output')",
        &[&verb, &format!("note-out-{tag}")],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await; // the worker's 1 s cache
    let reply = c
        .call("notes", &create, json!({"body": "call mum"}), Some(&alice))
        .await;
    assert_eq!(code(&reply), "INTERNAL", "{reply}");
    assert_eq!(reply["error"]["details"]["pointer"], "", "{reply}");
    assert_eq!(
        count().await,
        1,
        "the refused reply's writes were rolled back"
    );
}

/// What an edge function verb emits through `ctx` joins the request's chain,
/// with the request as its cause, as a SQL verb's events do.
#[tokio::test]
async fn function_verbs_emit_into_the_requests_chain() {
    let mut db = connect().await;
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    fixture(&db, tag).await;
    let function = format!("filer-{tag}");
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[
            &json!({"name": function, "version": "1.0.0",
                    "permissions": {"events": {"emit": ["notes.NoteFiled"]}}}),
            &r#"Deno.serve(async (req, ctx) => {
                  const data = await req.json();
                  const event = await ctx.emit("notes.NoteFiled", { n: data.n }, data.subject);
                  return Response.json({ event: event.id });
                });"#,
        ],
    )
    .await
    .unwrap();
    let alice = Uuid::new_v4();
    spine_tests::as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.grant_consent($1, ARRAY['events.emit:notes.NoteFiled'])",
            &[&function],
        )
        .await
        .unwrap();
    })
    .await;
    let nats = Nats::start();
    let prefix = format!("t{tag}");
    let _worker = worker(&nats, &prefix, &[]);
    let c = client(&nats, &prefix, tag).await;
    let (request, chain) = (Uuid::new_v4(), Uuid::new_v4());
    let subject = format!("filed/{tag}");
    let envelope = json!({"id": request, "correlation_id": chain,
                          "data": {"n": 1, "subject": subject}});
    let reply = c
        .raw(
            &function,
            "file",
            envelope.to_string().into(),
            Some(&token(alice)),
        )
        .await
        .unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    let row = db
        .query_one(
            "SELECT owner_id, causation_id, correlation_id FROM spine.events \
              WHERE type = 'notes.NoteFiled' AND subject = $1",
            &[&subject],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), Some(alice));
    assert_eq!(row.get::<_, Option<Uuid>>(1), Some(request));
    assert_eq!(row.get::<_, Uuid>(2), chain);
}
