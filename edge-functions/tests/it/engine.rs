//! The QuickJS sandbox on its own: Web API behaviour, limits and isolation, with a
//! recording stand-in for the host's capabilities (the database-backed host is
//! tested in `host` against the real stack).

use serde_json::{json, Value};
use spine_functions::engine::{
    Capabilities, Engine, InvokeError, Limits, OpError, QuickJs, Request, Response,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Answers `secret` for ALLOWED only and records every call and log line.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Capabilities for Recorder {
    fn call(&mut self, op: &str, arg: Value, _deadline: Instant) -> Result<Value, OpError> {
        self.0.lock().unwrap().push(format!("{op} {arg}"));
        match (op, arg.as_str()) {
            ("user", _) => Ok(json!({"id": "u1", "role": "authenticated"})),
            ("secret", Some("ALLOWED")) => Ok(json!("s3cret")),
            ("secret", Some(name)) => Err(OpError::new(
                "PermissionDenied",
                format!("secret {name} is not declared"),
            )),
            _ => Err(OpError::new("Error", format!("no op {op}"))),
        }
    }

    fn log(&mut self, level: &str, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("log {level} {message}"));
    }
}

fn post(body: &str) -> Request {
    Request {
        method: "POST".into(),
        url: "http://localhost/functions/v1/f?x=1&y=a+b".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

fn limits(cpu_ms: u64, wall_ms: u64, memory_mb: usize) -> Limits {
    Limits {
        memory_bytes: memory_mb << 20,
        cpu_ms,
        wall_ms,
    }
}

fn run(source: &str, request: Request, limits: Limits) -> Result<Response, InvokeError> {
    QuickJs.invoke(source, request, limits, Box::new(Recorder::default()))
}

fn json_body(r: &Response) -> Value {
    serde_json::from_slice(&r.body).expect("a JSON body")
}

/// Deno.serve(handler): the handler sees method, URL, query, headers and body,
/// and its Response.json comes back with status and headers.
#[test]
fn deno_serve_handler_round_trip() {
    let src = r#"
        Deno.serve(async (req) => {
          const url = new URL(req.url);
          const body = await req.json();
          return Response.json({
            method: req.method, path: url.pathname, x: url.searchParams.get("x"),
            y: url.searchParams.get("y"), ct: req.headers.get("Content-Type"), n: body.n * 2,
          }, { status: 201, headers: { "x-made-by": "test" } });
        });"#;
    let r = run(src, post(r#"{"n": 21}"#), Limits::default()).unwrap();
    assert_eq!(r.status, 201);
    assert!(r.headers.contains(&("x-made-by".into(), "test".into())));
    assert!(r
        .headers
        .contains(&("content-type".into(), "application/json".into())));
    assert_eq!(
        json_body(&r),
        json!({"method": "POST", "path": "/functions/v1/f", "x": "1", "y": "a b",
               "ct": "application/json", "n": 42})
    );
}

/// `export default { fetch(req, ctx) }` is the other accepted shape.
#[test]
fn default_export_fetch() {
    let src = r#"export default { async fetch(req, ctx) {
        return new Response("hi " + ctx.user.id + " " + (await req.text()));
    } };"#;
    let r = run(src, post("there"), Limits::default()).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hi u1 there");
}

/// UTF-8 and binary bodies survive the boundary byte for byte.
#[test]
fn text_and_bytes() {
    let src = r#"Deno.serve(async (req) => {
        const bytes = new Uint8Array(await req.arrayBuffer());
        const text = new TextDecoder().decode(bytes);
        const again = new TextEncoder().encode(text);
        const out = new Uint8Array(again.length + 1);
        out.set(again); out[again.length] = 0xff;
        return new Response(out);
    });"#;
    let r = run(src, post("héllo 🌍"), Limits::default()).unwrap();
    let mut expected = "héllo 🌍".as_bytes().to_vec();
    expected.push(0xff);
    assert_eq!(r.body, expected);
}

/// TextEncoder and TextDecoder (native in the host) as WHATWG defines them: a
/// lone surrogate encodes as U+FFFD, each invalid sequence's maximal part
/// decodes as one U+FFFD, and a view decodes only its own bytes.
#[test]
fn text_codecs_follow_whatwg() {
    let src = r#"Deno.serve(() => {
        const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
        const codes = (s) => Array.from(s, (c) => c.codePointAt(0).toString(16)).join(" ");
        const enc = new TextEncoder(), dec = new TextDecoder();
        const big = new Uint8Array([0x41, 0xe2, 0x82, 0xac, 0x42]);
        return Response.json({
          lone: hex(enc.encode("a\ud800b")),
          pair: hex(enc.encode("\u{1f30d}")),
          truncated: codes(dec.decode(new Uint8Array([0xe2, 0x82, 0x41]))),
          invalid: codes(dec.decode(new Uint8Array([0xff, 0xc0, 0x80]))),
          view: dec.decode(big.subarray(1, 4)),
          empty: dec.decode(),
        });
    });"#;
    let r = run(src, post(""), Limits::default()).unwrap();
    let got: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(got["lone"], "61 ef bf bd 62");
    assert_eq!(got["pair"], "f0 9f 8c 8d");
    assert_eq!(got["truncated"], "fffd 41", "one U+FFFD for E2 82");
    assert_eq!(got["invalid"], "fffd fffd fffd");
    assert_eq!(got["view"], "€");
    assert_eq!(got["empty"], "");
}

/// Timers work: a handler may wait on setTimeout.
#[test]
fn timers_resolve() {
    let src = r#"Deno.serve(async () => {
        const t0 = Date.now();
        await new Promise((r) => setTimeout(r, 30));
        return new Response(String(Date.now() - t0 >= 25));
    });"#;
    assert_eq!(run(src, post(""), Limits::default()).unwrap().body, b"true");
}

/// An infinite loop is stopped by the CPU limit, quickly.
#[test]
fn infinite_loop_hits_cpu_limit() {
    let t = Instant::now();
    let err = run(
        "Deno.serve(() => { for (;;) {} });",
        post(""),
        limits(100, 10_000, 32),
    )
    .unwrap_err();
    assert_eq!(err, InvokeError::LimitExceeded("cpu"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// A loop that catches the interrupt still stops: the interrupt is uncatchable.
#[test]
fn catching_does_not_escape_the_limit() {
    let src = "Deno.serve(() => { for (;;) { try { for (;;) {} } catch (e) {} } });";
    assert_eq!(
        run(src, post(""), limits(100, 10_000, 32)).unwrap_err(),
        InvokeError::LimitExceeded("cpu")
    );
}

/// A memory bomb fails with the memory limit, not a crash of the host.
#[test]
fn memory_bomb_hits_memory_limit() {
    let src =
        r#"Deno.serve(() => { const a = []; for (;;) a.push("x".repeat(1 << 16) + a.length); });"#;
    assert_eq!(
        run(src, post(""), limits(10_000, 10_000, 16)).unwrap_err(),
        InvokeError::LimitExceeded("memory")
    );
}

/// A promise nothing can resolve is reported at once, not after the wall limit.
#[test]
fn never_resolving_promise() {
    let t = Instant::now();
    let err = run(
        "Deno.serve(() => new Promise(() => {}));",
        post(""),
        limits(1_000, 60_000, 32),
    )
    .unwrap_err();
    assert_eq!(err, InvokeError::NeverSettled);
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// Timers that keep rescheduling themselves run into the wall-clock limit.
#[test]
fn endless_timers_hit_wall_limit() {
    let src = r#"Deno.serve(() => new Promise(() => { const tick = () => setTimeout(tick, 10); tick(); }));"#;
    let t = Instant::now();
    assert_eq!(
        run(src, post(""), limits(1_000, 300, 32)).unwrap_err(),
        InvokeError::LimitExceeded("wall")
    );
    assert!(t.elapsed() < Duration::from_secs(3));
}

/// A throwing handler, a bad return value and a syntax error are each a clear error.
#[test]
fn errors_are_reported() {
    let threw = run(
        "Deno.serve(() => { throw new TypeError('boom'); });",
        post(""),
        Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&threw, InvokeError::Threw(m) if m.contains("TypeError: boom")),
        "{threw:?}"
    );
    let wrong = run("Deno.serve(() => 42);", post(""), Limits::default()).unwrap_err();
    assert!(
        matches!(&wrong, InvokeError::Threw(m) if m.contains("not a Response")),
        "{wrong:?}"
    );
    let syntax = run("Deno.serve(() => {", post(""), Limits::default()).unwrap_err();
    assert!(matches!(syntax, InvokeError::BadModule(_)), "{syntax:?}");
    let none = run("const x = 1;", post(""), Limits::default()).unwrap_err();
    assert!(
        matches!(&none, InvokeError::BadModule(m) if m.contains("Deno.serve")),
        "{none:?}"
    );
    let import = run(
        "import fs from 'fs'; Deno.serve(() => new Response(''));",
        post(""),
        Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(import, InvokeError::BadModule(_)), "{import:?}");
}

/// A refused host call throws an Error named after the refusal, which the
/// function can catch; an allowed one returns the value.
#[test]
fn capability_denials_are_catchable_errors() {
    let src = r#"Deno.serve(async (req, ctx) => {
        const ok = ctx.secrets.get("ALLOWED");
        try { Deno.env.get("OTHER"); return new Response("leak"); }
        catch (e) { return Response.json({ ok, name: e.name, message: e.message }, { status: 403 }); }
    });"#;
    let recorder = Recorder::default();
    let r = QuickJs
        .invoke(src, post(""), Limits::default(), Box::new(recorder.clone()))
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        json_body(&r),
        json!({"ok": "s3cret", "name": "PermissionDenied", "message": "secret OTHER is not declared"})
    );
    let calls = recorder.0.lock().unwrap().clone();
    assert!(
        calls.contains(&r#"secret "OTHER""#.to_string()),
        "{calls:?}"
    );
}

/// Nothing survives an invocation: globals set by one call are gone in the next,
/// and a call that blew a limit does not affect the one after it.
#[test]
fn invocations_are_isolated() {
    let src = r#"Deno.serve(() => {
        const seen = globalThis.counter === undefined ? "fresh" : "reused";
        globalThis.counter = 1; Object.prototype.polluted = true;
        return new Response(seen);
    });"#;
    assert_eq!(
        run(src, post(""), Limits::default()).unwrap().body,
        b"fresh"
    );
    let _ = run(
        "Deno.serve(() => { for (;;) {} });",
        post(""),
        limits(50, 1_000, 16),
    );
    assert_eq!(
        run(src, post(""), Limits::default()).unwrap().body,
        b"fresh"
    );
}

/// console output reaches the host's log, capped per invocation.
#[test]
fn console_is_captured_and_capped() {
    let src = r#"Deno.serve(() => { for (let i = 0; i < 1000; i++) console.log("line", i, {a: 1}); return new Response("ok"); });"#;
    let recorder = Recorder::default();
    QuickJs
        .invoke(src, post(""), Limits::default(), Box::new(recorder.clone()))
        .unwrap();
    let calls = recorder.0.lock().unwrap().clone();
    let logs: Vec<&String> = calls.iter().filter(|c| c.starts_with("log ")).collect();
    assert_eq!(logs.len(), 200);
    assert_eq!(logs[0], r#"log info line 0 {"a":1}"#);
}

/// URL, Headers and base64 behave like the Web APIs they stand for.
#[test]
fn web_api_subset() {
    let src = r#"Deno.serve(() => {
        const u = new URL("../b/c?q=1#h", "https://Example.org:443/a/x");
        const h = new Headers({ "X-A": "1" }); h.append("x-a", "2");
        return Response.json({
          href: u.href, host: u.host, path: u.pathname, q: u.searchParams.get("q"), hash: u.hash,
          h: h.get("x-A"), b64: btoa("hi"), back: atob("aGk="),
          uuid: /^[0-9a-f-]{36}$/.test(crypto.randomUUID()),
          rnd: crypto.getRandomValues(new Uint8Array(8)).length,
        });
    });"#;
    let r = run(src, post(""), Limits::default()).unwrap();
    assert_eq!(
        json_body(&r),
        json!({"href": "https://example.org/b/c?q=1#h", "host": "example.org", "path": "/b/c",
               "q": "1", "hash": "#h", "h": "1, 2", "b64": "aGk=", "back": "hi",
               "uuid": true, "rnd": 8})
    );
}

/// QuickJS-ng before 0.12 let a constructor whose `prototype` getter shrinks a
/// resizable buffer build a typed array longer than that buffer: its elements
/// read and write outside the heap allocation (quickjs-ng issues 1296 and 1305,
/// fixed in the 0.16.2 that rquickjs 0.14 vendors). Plugins are untrusted, so
/// the sandbox must refuse, or give an array that fits the buffer.
#[test]
fn typed_arrays_cannot_outgrow_a_buffer_shrunk_during_construction() {
    let src = r#"Deno.serve(() => {
        const attempt = (build) => {
            const ab = new ArrayBuffer(10, { maxByteLength: 10 });
            try {
                const u8 = build(ab);
                return { length: u8.length, bytes: ab.byteLength };
            } catch (e) {
                return { threw: e.constructor.name };
            }
        };
        const viaBind = attempt((ab) => {
            const evil = (function () {}).bind();
            Object.defineProperty(evil, "prototype", { get: () => { ab.resize(0); return Uint8Array.prototype; } });
            return Reflect.construct(Uint8Array, [ab], evil);
        });
        const viaCopy = attempt((ab) => {
            const src = new Uint8Array(ab, 0);
            const evil = new Proxy(function () {}, { get: (t, p, r) => {
                if (p === "prototype") { ab.resize(0); return Uint8Array.prototype; }
                return Reflect.get(t, p, r);
            } });
            return Reflect.construct(Uint8Array, [src], evil);
        });
        return Response.json({ viaBind, viaCopy });
    });"#;
    let response = run(src, post(""), Limits::default()).expect("the handler answers");
    let body = json_body(&response);
    for case in ["viaBind", "viaCopy"] {
        let outcome = &body[case];
        let safe = match (outcome["length"].as_u64(), outcome["bytes"].as_u64()) {
            (Some(length), Some(bytes)) => length <= bytes,
            _ => outcome["threw"].is_string(),
        };
        assert!(safe, "{case}: a typed array outgrew its buffer: {outcome}");
    }
}

/// crypto.subtle: digests and HMAC match the standard vectors (FIPS 180 "abc",
/// RFC 4231 case 2), verify is exact, timingSafeEqual compares bytes, and what is
/// not supported says so.
#[test]
fn crypto_subtle_signs_verifies_and_digests() {
    let source = r#"
      const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
      const enc = new TextEncoder();
      const attempt = async (f) => { try { return await f(); } catch (e) { return e.name; } };
      Deno.serve(async () => {
        const key = await crypto.subtle.importKey("raw", enc.encode("Jefe"),
          { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
        const data = enc.encode("what do ya want for nothing?");
        const sig = await crypto.subtle.sign("HMAC", key, data);
        const signOnly = await crypto.subtle.importKey("raw", enc.encode("k"),
          { name: "HMAC", hash: { name: "SHA-1" } }, false, ["sign"]);
        return Response.json({
          sha256: hex(await crypto.subtle.digest("SHA-256", enc.encode("abc"))),
          sha1: hex(await crypto.subtle.digest({ name: "SHA-1" }, enc.encode("abc"))),
          hmac: hex(sig),
          verified: await crypto.subtle.verify("HMAC", key, sig, data),
          tampered: await crypto.subtle.verify("HMAC", key, sig, enc.encode("what do ya want for nothing!")),
          key: [key.type, key.algorithm.hash.name, key.extractable],
          equal: crypto.subtle.timingSafeEqual(enc.encode("abc"), enc.encode("abc")),
          unequal: crypto.subtle.timingSafeEqual(enc.encode("abc"), enc.encode("abd")),
          md5: await attempt(() => crypto.subtle.digest("MD5", data)),
          aes: await attempt(() => crypto.subtle.importKey("raw", data, { name: "AES-GCM" }, false, ["encrypt"])),
          usage: await attempt(() => crypto.subtle.verify("HMAC", signOnly, sig, data)),
          string_data: await attempt(() => crypto.subtle.digest("SHA-256", "abc")),
        });
      });"#;
    let r = run(source, post("{}"), limits(2000, 5000, 64)).unwrap();
    assert_eq!(
        json_body(&r),
        json!({
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d",
            "hmac": "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            "verified": true,
            "tampered": false,
            "key": ["secret", "SHA-256", false],
            "equal": true,
            "unequal": false,
            "md5": "NotSupportedError",
            "aes": "NotSupportedError",
            "usage": "InvalidAccessError",
            "string_data": "TypeError",
        })
    );
}
