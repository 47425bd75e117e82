//! Streamed responses in the sandbox: a handler returning `new Response(stream)`
//! has its chunks handed to the host's sink as they are produced, under the
//! same limits as any call; without a sink (a job) the stream is collected.
//! The Web streams API the functions use (readers, async iteration,
//! `ReadableStream.from`, `pipeThrough` with text streams) behaves as in Deno.

use serde_json::{json, Value};
use spine_functions::engine::{
    BodySink, Capabilities, Engine, InvokeError, Limits, OpError, QuickJs, Request, SinkClosed,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every event of an invocation, in order: the function's log lines, the head
/// and the chunks the sink took.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Capabilities for Journal {
    fn call(&mut self, op: &str, _arg: Value, _deadline: Instant) -> Result<Value, OpError> {
        Err(OpError::new("Error", format!("no op {op}")))
    }
    fn log(&mut self, _level: &str, message: &str) {
        self.push(format!("log {message}"));
    }
}

/// A sink that writes to the journal; after `gone_after` chunks the reader has
/// left, and with `stall` it never takes a chunk before the deadline.
struct Sink {
    journal: Journal,
    gone_after: Option<usize>,
    stall: bool,
    taken: usize,
}

impl Sink {
    fn new(journal: &Journal) -> Self {
        Sink {
            journal: journal.clone(),
            gone_after: None,
            stall: false,
            taken: 0,
        }
    }
}

impl BodySink for Sink {
    fn head(&mut self, status: u16, headers: &[(String, String)]) {
        let ct = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str())
            .unwrap_or("-");
        self.journal.push(format!("head {status} {ct}"));
    }

    fn chunk(&mut self, bytes: Vec<u8>, deadline: Instant) -> Result<(), SinkClosed> {
        if self.stall {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            return Err(SinkClosed::Deadline);
        }
        if self.gone_after.is_some_and(|n| self.taken >= n) {
            return Err(SinkClosed::Gone);
        }
        self.taken += 1;
        self.journal
            .push(format!("chunk {}", String::from_utf8_lossy(&bytes)));
        Ok(())
    }
}

fn post() -> Request {
    Request {
        method: "POST".into(),
        url: "http://localhost/functions/v1/f".into(),
        headers: vec![],
        body: vec![],
    }
}

fn limits(cpu_ms: u64, wall_ms: u64, memory_mb: usize) -> Limits {
    Limits {
        memory_bytes: memory_mb << 20,
        cpu_ms,
        wall_ms,
    }
}

/// Runs `source` into `sink`; the journal holds what happened, in order.
fn stream(
    source: &str,
    limits: Limits,
    journal: &Journal,
    sink: &mut Sink,
) -> Result<spine_functions::engine::Response, InvokeError> {
    QuickJs.invoke_into(
        source,
        post(),
        limits,
        Box::new(journal.clone()),
        Some(sink),
    )
}

/// Server-sent events as an LLM proxy produces them, one token per timer tick.
const TOKENS: &str = r#"
    Deno.serve(() => {
      const enc = new TextEncoder();
      const tokens = ["Hel", "lo", " wor", "ld"];
      const body = new ReadableStream({
        start(controller) {
          let i = 0;
          const next = () => {
            if (i === tokens.length) { console.log("closing"); controller.close(); return; }
            console.log("producing " + tokens[i]);
            controller.enqueue(enc.encode(`data: ${tokens[i++]}\n\n`));
            setTimeout(next, 5);
          };
          next();
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    });"#;

/// Each chunk reaches the sink before the function produces the next one: the
/// body is streamed, not buffered until the handler's stream ends.
#[test]
fn chunks_reach_the_sink_as_they_are_produced() {
    let journal = Journal::default();
    let mut sink = Sink::new(&journal);
    let r = stream(TOKENS, limits(1_000, 5_000, 32), &journal, &mut sink).unwrap();
    assert!(r.streamed);
    assert!(r.body.is_empty());
    assert_eq!(
        journal.lines(),
        [
            "log producing Hel",
            "head 200 text/event-stream",
            "chunk data: Hel\n\n",
            "log producing lo",
            "chunk data: lo\n\n",
            "log producing  wor",
            "chunk data:  wor\n\n",
            "log producing ld",
            "chunk data: ld\n\n",
            "log closing",
        ]
    );
}

/// Without a sink (a job runs the function) the stream is collected whole.
#[test]
fn without_a_sink_the_stream_is_collected() {
    let r = QuickJs
        .invoke(
            TOKENS,
            post(),
            limits(1_000, 5_000, 32),
            Box::new(Journal::default()),
        )
        .unwrap();
    assert!(!r.streamed);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        "data: Hel\n\ndata: lo\n\ndata:  wor\n\ndata: ld\n\n"
    );
}

/// The limits hold while a stream runs: an endless stream hits the wall clock,
/// a busy `pull` the CPU limit, a collected stream the memory limit, and a reader
/// that never takes a chunk the wall clock (the function does not wait forever).
#[test]
fn limits_hold_while_streaming() {
    let endless = r#"Deno.serve(() => new Response(new ReadableStream({
        pull(c) { return new Promise((ok) => setTimeout(() => { c.enqueue("tick\n"); ok(); }, 10)); },
      })));"#;
    let journal = Journal::default();
    let t = Instant::now();
    let err = stream(
        endless,
        limits(1_000, 300, 32),
        &journal,
        &mut Sink::new(&journal),
    );
    assert_eq!(err.unwrap_err(), InvokeError::LimitExceeded("wall"));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(journal.lines().contains(&"chunk tick\n".to_string()));

    let busy = r#"Deno.serve(() => new Response(new ReadableStream({
        pull(c) { c.enqueue("a"); for (;;) {} },
      })));"#;
    let journal = Journal::default();
    let err = stream(
        busy,
        limits(100, 10_000, 32),
        &journal,
        &mut Sink::new(&journal),
    );
    assert_eq!(err.unwrap_err(), InvokeError::LimitExceeded("cpu"));

    let big = r#"Deno.serve(() => new Response(new ReadableStream({
        pull(c) { c.enqueue(new Uint8Array(1 << 20)); },
      })));"#;
    let err = QuickJs.invoke(
        big,
        post(),
        limits(10_000, 10_000, 8),
        Box::new(Journal::default()),
    );
    assert_eq!(err.unwrap_err(), InvokeError::LimitExceeded("memory"));

    let journal = Journal::default();
    let mut stalled = Sink::new(&journal);
    stalled.stall = true;
    let t = Instant::now();
    let err = stream(TOKENS, limits(1_000, 300, 32), &journal, &mut stalled);
    assert_eq!(err.unwrap_err(), InvokeError::LimitExceeded("wall"));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// A reader that leaves stops the function, and the stream's `cancel` runs.
#[test]
fn a_reader_that_leaves_cancels_the_stream() {
    let src = r#"Deno.serve(() => new Response(new ReadableStream({
        pull(c) { c.enqueue("more"); },
        cancel(reason) { console.log("cancelled: " + reason); },
      })));"#;
    let journal = Journal::default();
    let mut sink = Sink::new(&journal);
    sink.gone_after = Some(2);
    let r = stream(src, limits(1_000, 5_000, 32), &journal, &mut sink).unwrap();
    assert!(r.streamed);
    assert_eq!(
        journal.lines(),
        [
            "head 200 -",
            "chunk more",
            "chunk more",
            "log cancelled: the client went away"
        ]
    );
}

/// A stream that errors after the head went out fails the invocation (the
/// host cuts the body off); a chunk that is not bytes is a clear error.
#[test]
fn a_stream_error_fails_the_invocation() {
    let src = r#"Deno.serve(() => new Response(new ReadableStream({
        start(c) { c.enqueue("partial"); setTimeout(() => c.error(new RangeError("upstream broke")), 5); },
      })));"#;
    let journal = Journal::default();
    let err = stream(
        src,
        limits(1_000, 5_000, 32),
        &journal,
        &mut Sink::new(&journal),
    );
    assert!(
        matches!(&err, Err(InvokeError::Threw(m)) if m.contains("RangeError: upstream broke")),
        "{err:?}"
    );
    assert_eq!(journal.lines(), ["head 200 -", "chunk partial"]);

    let src = r#"Deno.serve(() => new Response(new ReadableStream({ start(c) { c.enqueue(42); c.close(); } })));"#;
    let journal = Journal::default();
    let err = stream(
        src,
        limits(1_000, 5_000, 32),
        &journal,
        &mut Sink::new(&journal),
    );
    assert!(
        matches!(&err, Err(InvokeError::Threw(m)) if m.contains("must be Uint8Array")),
        "{err:?}"
    );
}

/// The streams API as functions use it: readers, async iteration,
/// `ReadableStream.from` over an async generator, text streams through
/// `pipeThrough`, a character split across chunks, a body read as a stream, and
/// a stream read back whole by `Response.text()`.
#[test]
fn the_streams_api_behaves_as_in_deno() {
    let src = r#"
      async function* words() { yield "a"; await new Promise((ok) => setTimeout(ok, 1)); yield "b"; }
      Deno.serve(async (req) => {
        const out = {};
        const reader = ReadableStream.from(words()).getReader();
        out.reads = [await reader.read(), await reader.read(), await reader.read()];
        const seen = [];
        for await (const w of ReadableStream.from(["x", "y", "z"])) seen.push(w);
        out.iterated = seen;
        // "é" is two bytes, split across chunks; TextDecoderStream joins them.
        const bytes = new TextEncoder().encode("café!");
        const split = new ReadableStream({ start(c) { c.enqueue(bytes.slice(0, 4)); c.enqueue(bytes.slice(4)); c.close(); } });
        const texts = [];
        for await (const t of split.pipeThrough(new TextDecoderStream())) texts.push(t);
        out.decoded = texts;
        const dec = new TextDecoder();
        out.streaming_decode = dec.decode(bytes.slice(0, 4), { stream: true }) + "|" + dec.decode(bytes.slice(4));
        const upper = ReadableStream.from(["ab", "cd"])
          .pipeThrough(new TransformStream({ transform(chunk, c) { c.enqueue(chunk.toUpperCase()); } }))
          .pipeThrough(new TextEncoderStream());
        out.piped = await new Response(upper).text();
        const r = new Response("whole");
        const chunks = [];
        for await (const c of r.body) chunks.push(new TextDecoder().decode(c));
        out.body_stream = chunks;
        out.request_body = await new Response(req.body).text();
        const locked = new ReadableStream();
        locked.getReader();
        try { locked.getReader(); out.locked = "no error"; } catch (e) { out.locked = e.name; }
        return Response.json(out);
      });"#;
    let r = QuickJs
        .invoke(
            src,
            Request {
                body: b"sent".to_vec(),
                ..post()
            },
            limits(2_000, 5_000, 64),
            Box::new(Journal::default()),
        )
        .unwrap();
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body,
        json!({
            "reads": [{"value": "a", "done": false}, {"value": "b", "done": false}, {"done": true}],
            "iterated": ["x", "y", "z"],
            "decoded": ["caf", "é!"],
            "streaming_decode": "caf|é!",
            "piped": "ABCD",
            "body_stream": ["whole"],
            "request_body": "sent",
            "locked": "TypeError",
        })
    );
}
