//! Public functions (`verify_jwt: false`): inbound webhooks that carry no token
//! — Twilio's call webhook, Stripe's events, Microsoft Graph's change
//! notifications — verified in the function with
//! crypto.subtle and a secret from the vault, then acting for the resource's
//! owner with `ctx.actAs`, which the owner consents to.

use crate::host::{now, Server};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use spine_tests::{as_user, connect, one, seal_audit};
use uuid::Uuid;

/// The signature Twilio sends in `X-Twilio-Signature`, as its docs compute it:
/// the full URL, then each POST parameter's name and value sorted by name,
/// HMAC-SHA1 with the account's auth token, base64.
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Stripe's `Stripe-Signature`: `t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`.
fn stripe_signature(secret: &str, t: u64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// `application/x-www-form-urlencoded`, as Twilio posts it.
fn form_encode(params: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn post_form(
    url: &str,
    params: &[(&str, &str)],
    headers: &[(&str, String)],
) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_encode(params));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

const TWILIO: &str = r#"
const enc = new TextEncoder();
const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)));
Deno.serve(async (req, ctx) => {
  const form = new URLSearchParams(await req.text());
  const names = [...new Set([...form.keys()])].sort();
  const signed = req.url + names.map((k) => k + form.get(k)).join("");
  const key = await crypto.subtle.importKey("raw", enc.encode(ctx.secrets.get("TOKEN_NAME")),
    { name: "HMAC", hash: "SHA-1" }, false, ["sign"]);
  const expected = enc.encode(b64(await crypto.subtle.sign("HMAC", key, enc.encode(signed))));
  const given = enc.encode(req.headers.get("x-twilio-signature") ?? "");
  if (!crypto.subtle.timingSafeEqual(expected, given)) return new Response("bad signature", { status: 403 });
  const { rows } = await ctx.db.rpc("public.OWNER_FN", { number: form.get("To") });
  if (!rows[0]) return new Response("unknown number", { status: 404 });
  try { await ctx.actAs(rows[0]); } catch (e) { return new Response(e.name + ": " + e.message, { status: 403 }); }
  await ctx.emit("communication.CallStarted", { from: form.get("From"), sid: form.get("CallSid"), user: ctx.user.id });
  return new Response("<Response><Say>Hello</Say></Response>", { headers: { "content-type": "text/xml" } });
});"#;

/// Twilio calls without a token: a valid signature (computed as Twilio
/// documents it) passes, a forged one is 403; the number's owner is resolved and
/// the function acts for her only once she consented to it (users.act_as), and
/// then emits CallStarted as hers. A function that keeps verify_jwt still wants
/// a token.
#[tokio::test]
async fn a_twilio_webhook_is_verified_and_acts_for_the_numbers_owner() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    let secret_name = format!("TWILIO_{tag}");
    let owner_fn = format!("phone_owner_{tag}");
    let token = format!("tw-{tag}");
    db.batch_execute(&format!(
        "CREATE TABLE public.phones_{tag} (number text PRIMARY KEY, owner uuid NOT NULL);
         INSERT INTO public.phones_{tag} VALUES ('+15550001', '{alice}');
         CREATE FUNCTION public.{owner_fn}(number text) RETURNS uuid
             LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS
             $$ SELECT owner FROM public.phones_{tag} WHERE number = $1 $$;
         GRANT EXECUTE ON FUNCTION public.{owner_fn}(text) TO anon;"
    ))
    .await
    .unwrap();
    db.execute(
        "SELECT vault.create_secret($1, $2)",
        &[&token, &secret_name],
    )
    .await
    .unwrap();
    let name = format!("twilio-{tag}");
    let manifest = json!({"name": name, "version": "1.0.0", "verify_jwt": false,
        "permissions": {"secrets": [secret_name], "users": {"act_as": true},
                        "events": {"emit": ["communication.CallStarted"]}}});
    let source = TWILIO
        .replace("TOKEN_NAME", &secret_name)
        .replace("OWNER_FN", &owner_fn);
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[&manifest, &source],
    )
    .await
    .unwrap();
    let server = Server::start().await;
    let url = format!("{}/functions/v1/{name}", server.url);
    let sid = format!("CA{tag}");
    let params = [
        ("CallSid", sid.as_str()),
        ("From", "+15559999"),
        ("To", "+15550001"),
        ("Direction", "inbound"),
    ];
    let signed = twilio_signature(&token, &url, &params);
    let calls = async |db: &tokio_postgres::Client| -> i64 {
        one(
            db,
            "SELECT count(*) FROM spine.events WHERE type = 'communication.CallStarted' AND data->>'sid' = $1",
            &[&sid],
        )
        .await
    };

    let (status, body) = post_form(&url, &params, &[("x-twilio-signature", signed.clone())]).await;
    assert_eq!(status, 403, "alice has not consented: {body}");
    assert!(body.starts_with("PermissionDenied"), "{body}");
    as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.grant_consent($1, ARRAY['users.act_as:*', 'events.emit:communication.CallStarted'])",
            &[&name],
        )
        .await
        .unwrap();
    })
    .await;
    let forged = twilio_signature("not-the-token", &url, &params);
    let (status, body) = post_form(&url, &params, &[("x-twilio-signature", forged)]).await;
    assert_eq!((status, body.as_str()), (403, "bad signature"));
    let (status, _) = post_form(
        &url,
        &params[..3],
        &[("x-twilio-signature", signed.clone())],
    )
    .await;
    assert_eq!(status, 403, "a parameter dropped breaks the signature");
    assert_eq!(calls(&db).await, 0);

    let (status, body) = post_form(&url, &params, &[("x-twilio-signature", signed)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Say>Hello</Say>"), "{body}");
    let (owner, data): (Option<Uuid>, Value) = {
        let r = db
            .query_one(
                "SELECT owner_id, data FROM spine.events WHERE type = 'communication.CallStarted' AND data->>'sid' = $1",
                &[&sid],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(owner, Some(alice));
    assert_eq!(data["user"], json!(alice.to_string()));
    seal_audit(&db).await;
    let acted: i64 = one(
        &db,
        "SELECT count(*) FROM spine.audit_log WHERE target = $1 AND action = 'policy.allowed' \
            AND details->>'action' = 'users.act_as' AND actor = $2",
        &[&format!("plugin:{name}"), &alice],
    )
    .await;
    assert_eq!(acted, 1, "acting for alice is on record, in her name");

    // A function that keeps verify_jwt (the default) still refuses no token.
    let private = crate::host::deploy(
        &db,
        json!({}),
        json!({}),
        "Deno.serve(() => new Response('ok'))",
    )
    .await;
    let (status, _) = server.call(&private, None, json!({})).await;
    assert_eq!(status, 401);
}

/// Stripe's events: the function checks `Stripe-Signature` against the raw body
/// with the endpoint secret (HMAC-SHA256, hex) and a five-minute tolerance.
#[tokio::test]
async fn a_stripe_webhook_is_verified_against_the_raw_body() {
    let db = connect().await;
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    let secret_name = format!("STRIPE_{tag}");
    let secret = format!("whsec_{tag}");
    db.execute(
        "SELECT vault.create_secret($1, $2)",
        &[&secret, &secret_name],
    )
    .await
    .unwrap();
    let name = format!("stripe-{tag}");
    let manifest = json!({"name": name, "version": "1.0.0", "verify_jwt": false,
        "permissions": {"secrets": [secret_name]}});
    let source = r#"
const enc = new TextEncoder();
const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
Deno.serve(async (req, ctx) => {
  const body = await req.text();
  const parts = Object.fromEntries((req.headers.get("stripe-signature") ?? "").split(",").map((p) => p.split("=")));
  if (Math.abs(Date.now() / 1000 - Number(parts.t)) > 300) return Response.json({ error: "stale" }, { status: 400 });
  const key = await crypto.subtle.importKey("raw", enc.encode(ctx.secrets.get("SECRET_NAME")),
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const expected = hex(await crypto.subtle.sign("HMAC", key, enc.encode(parts.t + "." + body)));
  if (!crypto.subtle.timingSafeEqual(enc.encode(expected), enc.encode(parts.v1 ?? ""))) {
    return Response.json({ error: "bad signature" }, { status: 400 });
  }
  return Response.json({ received: JSON.parse(body).type });
});"#
        .replace("SECRET_NAME", &secret_name);
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[&manifest, &source],
    )
    .await
    .unwrap();
    let server = Server::start().await;
    let url = format!("{}/functions/v1/{name}", server.url);
    let body = r#"{"id":"evt_1","type":"invoice.paid"}"#;
    let send = async |body: &str, signature: String| -> (u16, Value) {
        let res = reqwest::Client::new()
            .post(&url)
            .header("stripe-signature", signature)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            serde_json::from_str(&res.text().await.unwrap()).unwrap(),
        )
    };
    let t = now();
    assert_eq!(
        send(body, stripe_signature(&secret, t, body)).await,
        (200, json!({"received": "invoice.paid"}))
    );
    let tampered = body.replace("paid", "void");
    assert_eq!(
        send(&tampered, stripe_signature(&secret, t, body)).await,
        (400, json!({"error": "bad signature"}))
    );
    assert_eq!(
        send(body, stripe_signature(&secret, t - 600, body)).await,
        (400, json!({"error": "stale"}))
    );
}

/// Microsoft Graph change notifications: subscribing, Graph POSTs
/// `?validationToken=…` and wants it back as `text/plain` with 200 within 10 s;
/// each later notification carries the `clientState` the subscriber set, which
/// the function compares (constant time) with the secret before accepting it,
/// answering 202 as Graph expects.
#[tokio::test]
async fn a_microsoft_graph_subscription_is_validated_and_its_client_state_checked() {
    let db = connect().await;
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    let secret_name = format!("GRAPH_{tag}");
    let client_state = format!("cs-{tag}");
    db.execute(
        "SELECT vault.create_secret($1, $2)",
        &[&client_state, &secret_name],
    )
    .await
    .unwrap();
    let name = format!("graph-{tag}");
    let manifest = json!({"name": name, "version": "1.0.0", "verify_jwt": false,
        "permissions": {"secrets": [secret_name]}});
    let source = r#"
const enc = new TextEncoder();
Deno.serve(async (req, ctx) => {
  const token = new URL(req.url).searchParams.get("validationToken");
  if (token !== null) return new Response(token, { headers: { "content-type": "text/plain" } });
  const expected = enc.encode(ctx.secrets.get("SECRET_NAME"));
  const { value = [] } = await req.json();
  const accepted = value.filter((n) => crypto.subtle.timingSafeEqual(enc.encode(n.clientState ?? ""), expected));
  return Response.json({ accepted: accepted.map((n) => n.resource), ignored: value.length - accepted.length },
    { status: 202 });
});"#
        .replace("SECRET_NAME", &secret_name);
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[&manifest, &source],
    )
    .await
    .unwrap();
    let server = Server::start().await;
    let url = format!("{}/functions/v1/{name}", server.url);
    let client = reqwest::Client::new();

    // The handshake, as Graph sends it: a POST with an empty text/plain body and
    // the token URL-encoded in the query; the answer is the token decoded.
    let token = "Validation: Token=ab+c/d==";
    let encoded: String = token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let res = client
        .post(format!("{url}?validationToken={encoded}"))
        .header("content-type", "text/plain; charset=utf-8")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(res.text().await.unwrap(), token);

    let notification = |state: &str, resource: &str| {
        json!({"subscriptionId": "sub-1", "clientState": state, "changeType": "created",
               "resource": resource, "tenantId": "t-1"})
    };
    let res = client
        .post(&url)
        .header("content-type", "application/json")
        .body(
            json!({"value": [
                notification(&client_state, "Users/1/Messages/a"),
                notification("forged", "Users/1/Messages/b"),
            ]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let body: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"accepted": ["Users/1/Messages/a"], "ignored": 1})
    );
}
