//! The QuickJS engine (rquickjs): one fresh runtime and context per invocation.
//!
//! Isolation comes from never reusing anything: every call builds a runtime with
//! its own heap (capped by `set_memory_limit`), evaluates the Web API prelude and
//! the function's module, runs the handler, and drops the runtime. An interrupt
//! handler stops the script when the thread's CPU time or the wall clock passes
//! its limit. Host calls block this thread; the JS side sees promises.

use super::{
    BodySink, Capabilities, Engine, InvokeError, Limits, OpError, Request, Response, SinkClosed,
};
use base64::Engine as _;
use rquickjs::{Context, Ctx, Function, Module, Object, Promise, Runtime, TypedArray, Value};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const PRELUDE: &str = include_str!("prelude.js");
/// Compiled function modules kept per process (by SHA-256 of their source).
const MAX_COMPILED: usize = 256;
/// Native stack for JS recursion; deep recursion throws a RangeError instead of
/// overflowing the host thread's stack.
const MAX_STACK: usize = 512 * 1024;
/// `console.*` lines kept per invocation: a logging loop must not flood the host.
const MAX_LOG_LINES: u32 = 200;
const MAX_LOG_LINE: usize = 4096;

/// The QuickJS-ng engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuickJs;

impl Engine for QuickJs {
    fn invoke_into(
        &self,
        module_source: &str,
        request: Request,
        limits: Limits,
        capabilities: Box<dyn Capabilities>,
        sink: Option<&mut dyn BodySink>,
    ) -> Result<Response, InvokeError> {
        // Whatever goes wrong inside stays an error of this invocation.
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            invoke(module_source, request, limits, capabilities, sink)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(InvokeError::Threw(format!(
                "host error in the sandbox: {what}"
            )))
        })
    }

    fn prepare(&self) {
        let _ = std::panic::catch_unwind(prepare_warm);
    }
}

/// Compiles `source` as an ES module without running it: what deploy checks.
pub fn check_module(source: &str) -> Result<(), String> {
    compile(source, "index.js").map(|_| ())
}

/// The bytecode of `source`, compiled on first use and kept (by SHA-256).
fn compiled(source: &str, name: &str) -> Result<Arc<Vec<u8>>, String> {
    type Cache = Mutex<HashMap<[u8; 32], Arc<Vec<u8>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key: [u8; 32] = Sha256::digest(source.as_bytes()).into();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(bytes) = cache.lock().expect("cache lock").get(&key) {
        return Ok(bytes.clone());
    }
    let bytes = Arc::new(compile(source, name)?);
    let mut cache = cache.lock().expect("cache lock");
    if cache.len() >= MAX_COMPILED {
        cache.clear();
    }
    cache.insert(key, bytes.clone());
    Ok(bytes)
}

/// Compiles `source` as a module in a scratch runtime and writes its bytecode.
fn compile(source: &str, name: &str) -> Result<Vec<u8>, String> {
    let runtime = Runtime::new().map_err(|e| e.to_string())?;
    runtime.set_memory_limit(64 << 20);
    let context = Context::full(&runtime).map_err(|e| e.to_string())?;
    context.with(|ctx| {
        let module = Module::declare(ctx.clone(), name, source).map_err(|e| exception(&ctx, e))?;
        module
            .write(rquickjs::module::WriteOptions::default())
            .map_err(|e| exception(&ctx, e))
    })
}

/// Instantiates compiled module bytecode in this context.
fn load<'js>(ctx: &Ctx<'js>, bytes: &[u8], name: &str) -> Result<Module<'js>, String> {
    // SAFETY: the bytes were written by `compile` in this process (same QuickJS
    // build), and the caller keeps them alive longer than the runtime (they are
    // declared before it), as JS_READ_OBJ_ROM_DATA requires.
    unsafe { Module::load(ctx.clone(), bytes) }
        .map_err(|e| format!("{name}: {}", exception(ctx, e)))
}

/// What stopped the script, set by the interrupt handler.
type Tripped = Rc<Cell<Option<&'static str>>>;

/// What the native `__host` function reaches for; filled in per invocation, so a
/// context can be built (with its prelude) before anyone asks for it.
#[derive(Default)]
struct HostSlot {
    capabilities: RefCell<Option<Box<dyn Capabilities>>>,
    deadline: Cell<Option<Instant>>,
    logged: Cell<u32>,
}

/// A runtime and context with the prelude evaluated and nothing else: what an
/// invocation starts from. Never reused: an invocation consumes it.
struct Warm {
    // Field order is drop order: the context before its runtime.
    context: Context,
    runtime: Runtime,
    slot: Rc<HostSlot>,
}

thread_local! {
    /// One fresh context per thread, built after the previous invocation answered
    /// (see [`QuickJs::prepare`]), so building it is off the next call's path.
    static WARM: RefCell<Option<Warm>> = const { RefCell::new(None) };
}

/// The prelude's bytecode, compiled once and kept for the life of the process
/// (loaded bytecode may point into it).
fn prelude_bytecode() -> Result<&'static [u8], InvokeError> {
    static BYTES: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    BYTES
        .get_or_init(|| compile(PRELUDE, "prelude"))
        .as_deref()
        .map_err(|e| InvokeError::Threw(format!("prelude: {e}")))
}

impl Warm {
    fn build() -> Result<Warm, InvokeError> {
        let fail = |what: &str, e: String| InvokeError::Threw(format!("{what}: {e}"));
        let prelude = prelude_bytecode()?;
        let runtime = Runtime::new().map_err(|e| fail("no runtime", e.to_string()))?;
        runtime.set_max_stack_size(MAX_STACK);
        let context = Context::full(&runtime).map_err(|e| fail("no context", e.to_string()))?;
        let slot = Rc::new(HostSlot::default());
        context.with(|ctx| -> Result<(), InvokeError> {
            install_host(&ctx, slot.clone())
                .map_err(|e| fail("installing the host", e.to_string()))?;
            let module = load(&ctx, prelude, "prelude").map_err(|e| fail("prelude", e))?;
            let (_, done) = module
                .eval()
                .map_err(|e| fail("prelude", exception(&ctx, e)))?;
            match done.result::<Value>() {
                Some(Err(e)) => Err(fail("prelude", exception(&ctx, e))),
                _ => Ok(()),
            }
        })?;
        Ok(Warm {
            context,
            runtime,
            slot,
        })
    }

    /// This thread's prepared context, or a new one.
    fn take() -> Result<Warm, InvokeError> {
        match WARM.with(|w| w.borrow_mut().take()) {
            Some(warm) => Ok(warm),
            None => Warm::build(),
        }
    }
}

/// Builds this thread's next context now (see [`Engine::prepare`]).
fn prepare_warm() {
    if WARM.with(|w| w.borrow().is_some()) {
        return;
    }
    if let Ok(warm) = Warm::build() {
        WARM.with(|w| *w.borrow_mut() = Some(warm));
    }
}

fn invoke(
    source: &str,
    request: Request,
    limits: Limits,
    capabilities: Box<dyn Capabilities>,
    sink: Option<&mut dyn BodySink>,
) -> Result<Response, InvokeError> {
    // Declared before the runtime so it is dropped after it: loaded bytecode may
    // point into this buffer while the runtime lives.
    let module = compiled(source, "index.js").map_err(InvokeError::BadModule)?;
    let warm = Warm::take()?;
    let wall_deadline = Instant::now() + Duration::from_millis(limits.wall_ms);
    let cpu_budget = Duration::from_millis(limits.cpu_ms);
    let cpu_start = thread_cpu_time();
    let tripped: Tripped = Rc::new(Cell::new(None));

    warm.runtime.set_memory_limit(limits.memory_bytes);
    let flag = tripped.clone();
    warm.runtime.set_interrupt_handler(Some(Box::new(move || {
        if flag.get().is_some() {
            return true;
        }
        if Instant::now() >= wall_deadline {
            flag.set(Some("wall"));
        } else if thread_cpu_time().saturating_sub(cpu_start) >= cpu_budget {
            flag.set(Some("cpu"));
        }
        flag.get().is_some()
    })));
    *warm.slot.capabilities.borrow_mut() = Some(capabilities);
    warm.slot.deadline.set(Some(wall_deadline));

    let mut run = Run {
        module: &module,
        wall_deadline,
        tripped: tripped.clone(),
        sink,
        max_collected: limits.memory_bytes,
    };
    let outcome = warm.context.with(|ctx| run.call(&ctx, &request));
    drop(warm);
    // A limit explains whatever error it caused (an uncatchable interrupt, or the
    // allocation failure of a memory bomb).
    match (tripped.get(), outcome) {
        (Some(limit), Err(_)) => Err(InvokeError::LimitExceeded(limit)),
        (_, Err(InvokeError::Threw(m) | InvokeError::BadModule(m))) if is_out_of_memory(&m) => {
            Err(InvokeError::LimitExceeded("memory"))
        }
        (_, outcome) => outcome,
    }
}

struct Run<'a, 's> {
    /// The function's module bytecode (compiled once per process and source).
    module: &'a [u8],
    wall_deadline: Instant,
    tripped: Tripped,
    /// Where a streamed body goes; without one it is collected.
    sink: Option<&'s mut dyn BodySink>,
    /// Most bytes of a streamed body collected without a sink (the memory limit:
    /// the bytes live in the host instead of the heap, but the function made them).
    max_collected: usize,
}

impl Run<'_, '_> {
    fn call<'js>(&mut self, ctx: &Ctx<'js>, request: &Request) -> Result<Response, InvokeError> {
        let internals: Object = ctx
            .globals()
            .get("__spine")
            .map_err(|e| InvokeError::Threw(format!("prelude: {e}")))?;

        let module = load(ctx, self.module, "index.js").map_err(InvokeError::BadModule)?;
        let (module, evaluated) = module
            .eval()
            .map_err(|e| InvokeError::BadModule(exception(ctx, e)))?;
        self.settle(ctx, &internals, &evaluated)
            .map_err(|e| match e {
                InvokeError::Threw(m) => InvokeError::BadModule(m),
                other => other,
            })?;
        let default_export: Value = module
            .namespace()
            .and_then(|ns| ns.get("default"))
            .unwrap_or_else(|_| Value::new_undefined(ctx.clone()));
        let handler: Value = call_internal(ctx, &internals, "handler", (default_export,))
            .map_err(InvokeError::BadModule)?;

        let wire = ctx
            .json_parse(request_json(request).to_string())
            .map_err(|e| InvokeError::Threw(exception(ctx, e)))?;
        let pending: Promise = call_internal(ctx, &internals, "dispatch", (handler, wire))
            .map_err(InvokeError::Threw)?;
        let answer = self.settle(ctx, &internals, &pending)?;
        let answer: String = answer
            .get()
            .map_err(|e| InvokeError::Threw(format!("response: {e}")))?;
        let mut response = response_from_json(&answer).map_err(InvokeError::Threw)?;
        if response.streamed {
            self.pump(ctx, &internals, &mut response)?;
        }
        Ok(response)
    }

    /// Reads the response's stream chunk by chunk (running the function between
    /// chunks, under its limits) into the sink, or into the body without one.
    fn pump<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        internals: &Object<'js>,
        response: &mut Response,
    ) -> Result<(), InvokeError> {
        match self.sink.as_deref_mut() {
            Some(sink) => sink.head(response.status, &response.headers),
            None => response.streamed = false,
        }
        loop {
            let next: Promise =
                call_internal(ctx, internals, "read", ()).map_err(InvokeError::Threw)?;
            let chunk = self.settle(ctx, internals, &next)?;
            if chunk.is_undefined() || chunk.is_null() {
                return Ok(());
            }
            let bytes = chunk_bytes(chunk).map_err(InvokeError::Threw)?;
            if bytes.is_empty() {
                continue;
            }
            let Some(sink) = self.sink.as_deref_mut() else {
                if response.body.len() + bytes.len() > self.max_collected {
                    return Err(InvokeError::LimitExceeded("memory"));
                }
                response.body.extend_from_slice(&bytes);
                continue;
            };
            match sink.chunk(bytes, self.wall_deadline) {
                Ok(()) => {}
                Err(SinkClosed::Deadline) => return Err(InvokeError::LimitExceeded("wall")),
                Err(SinkClosed::Gone) => {
                    // The reader left: tell the stream (its cancel callback runs),
                    // and stop; what it would still produce has nobody to go to.
                    let cancelled: Result<Promise, String> =
                        call_internal(ctx, internals, "cancel", ());
                    if let Ok(cancelled) = cancelled {
                        let _ = self.settle(ctx, internals, &cancelled);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Runs jobs and timers until `promise` settles, the wall clock runs out, or
    /// nothing is left that could settle it.
    fn settle<'js>(
        &self,
        ctx: &Ctx<'js>,
        internals: &Object<'js>,
        promise: &Promise<'js>,
    ) -> Result<Value<'js>, InvokeError> {
        loop {
            while ctx.execute_pending_job() {
                if let Some(limit) = self.tripped.get() {
                    return Err(InvokeError::LimitExceeded(limit));
                }
            }
            match promise.result::<Value>() {
                Some(Ok(value)) => return Ok(value),
                Some(Err(e)) => return Err(InvokeError::Threw(exception(ctx, e))),
                None => {}
            }
            let next: f64 =
                call_internal(ctx, internals, "nextTimer", ()).map_err(InvokeError::Threw)?;
            if next < 0.0 {
                return Err(InvokeError::NeverSettled);
            }
            // Whatever the script did to the prelude's numbers, wait a sane time.
            let next = if next.is_finite() {
                next.min(86_400_000.0)
            } else {
                0.0
            };
            let left = self.wall_deadline.saturating_duration_since(Instant::now());
            let wait = Duration::from_secs_f64(next / 1000.0);
            if wait >= left {
                std::thread::sleep(left);
                return Err(InvokeError::LimitExceeded("wall"));
            }
            std::thread::sleep(wait);
            call_internal::<()>(ctx, internals, "fireTimers", ()).map_err(InvokeError::Threw)?;
        }
    }
}

/// A chunk the prelude's `read` produced: a fresh `Uint8Array` (the prelude
/// copies whatever the stream enqueued), or a string sent as UTF-8.
fn chunk_bytes(chunk: Value<'_>) -> Result<Vec<u8>, String> {
    if let Some(text) = chunk.as_string() {
        return text
            .to_string()
            .map(String::into_bytes)
            .map_err(|e| e.to_string());
    }
    let array = TypedArray::<u8>::from_value(chunk)
        .map_err(|_| "a stream chunk must be a Uint8Array or a string".to_string())?;
    // SAFETY: the slice is copied out before any JavaScript runs again.
    let bytes = unsafe { array.as_bytes() }.ok_or("the chunk's buffer was detached")?;
    Ok(bytes.to_vec())
}

/// `__host(op, json)`: the one native function the prelude builds on. Before an
/// invocation fills the slot, only the self-contained operations answer.
fn install_host(ctx: &Ctx<'_>, slot: Rc<HostSlot>) -> rquickjs::Result<()> {
    let host = Function::new(ctx.clone(), move |op: String, arg: String| -> String {
        let arg: Json = serde_json::from_str(&arg).unwrap_or(Json::Null);
        let answer = match op.as_str() {
            "now" => Ok(json!(now_ms())),
            "uuid" => Ok(json!(uuid::Uuid::new_v4().to_string())),
            "random" => random_bytes(&arg),
            "subtle" => crypto_subtle(&arg),
            "log" => {
                let n = slot.logged.get();
                slot.logged.set(n + 1);
                if n < MAX_LOG_LINES {
                    let level = arg["level"].as_str().unwrap_or("info");
                    let message = arg["message"].as_str().unwrap_or_default();
                    let cut: String = message.chars().take(MAX_LOG_LINE).collect();
                    if let Ok(mut caps) = slot.capabilities.try_borrow_mut() {
                        if let Some(caps) = caps.as_mut() {
                            caps.log(level, &cut);
                        }
                    }
                }
                Ok(Json::Null)
            }
            _ => match (slot.capabilities.try_borrow_mut(), slot.deadline.get()) {
                (Ok(mut caps), Some(deadline)) => match caps.as_mut() {
                    Some(caps) => caps.call(&op, arg, deadline),
                    None => Err(OpError::new("Error", "no invocation is running")),
                },
                (Err(_), _) => Err(OpError::new("Error", "host calls do not nest")),
                (_, None) => Err(OpError::new("Error", "no invocation is running")),
            },
        };
        match answer {
            Ok(value) => json!({ "ok": value }).to_string(),
            Err(e) => json!({ "err": e.message, "kind": e.kind }).to_string(),
        }
    })?;
    ctx.globals().set("__host", host)?;
    // Byte conversions, natively: in JavaScript they cost about a second of
    // the function's CPU per MiB (measured in a debug build: UTF-8 encoding
    // 1.1 MiB 857 ms, decoding it 1,517 ms; base64 chunks of a streamed fetch,
    // 11 MiB in 16 s) — enough for a 2 MiB body to hit the default CPU limit.
    let native = Object::new(ctx.clone())?;
    native.set("bytes", Function::new(ctx.clone(), b64_bytes)?)?;
    native.set("utf8", Function::new(ctx.clone(), utf8_bytes)?)?;
    native.set("text", Function::new(ctx.clone(), utf8_text)?)?;
    ctx.globals().set("__native", native)
}

/// Base64 to a Uint8Array (a streamed fetch body's chunks).
fn b64_bytes<'js>(ctx: Ctx<'js>, b64: String) -> rquickjs::Result<TypedArray<'js, u8>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| rquickjs::Error::new_from_js_message("string", "bytes", e.to_string()))?;
    TypedArray::new(ctx, bytes)
}

/// A string's UTF-8 as a Uint8Array; undefined for a string with a lone
/// surrogate (not UTF-8: the prelude's encoder replaces it with U+FFFD).
fn utf8_bytes<'js>(ctx: Ctx<'js>, text: rquickjs::String<'js>) -> rquickjs::Result<Value<'js>> {
    match text.to_string() {
        Ok(text) => Ok(TypedArray::new(ctx, text.into_bytes())?.into_value()),
        Err(_) => Ok(Value::new_undefined(ctx)),
    }
}

/// Bytes as text, each invalid sequence one U+FFFD (TextDecoder's default).
fn utf8_text<'js>(
    ctx: Ctx<'js>,
    bytes: TypedArray<'js, u8>,
) -> rquickjs::Result<rquickjs::String<'js>> {
    // SAFETY: the slice is read before any JavaScript runs again.
    let raw = unsafe { bytes.as_bytes() }.unwrap_or_default();
    rquickjs::String::from_str(ctx, &String::from_utf8_lossy(raw))
}

/// QuickJS reports a failed allocation under the memory limit as this error
/// (which a function may catch; if it does not, the invocation failed for memory).
fn is_out_of_memory(message: &str) -> bool {
    message.starts_with("InternalError: out of memory")
}

fn call_internal<'js, T: rquickjs::FromJs<'js>>(
    ctx: &Ctx<'js>,
    internals: &Object<'js>,
    name: &str,
    args: impl rquickjs::function::IntoArgs<'js>,
) -> Result<T, String> {
    let f: Function = internals.get(name).map_err(|e| e.to_string())?;
    f.call(args).map_err(|e| exception(ctx, e))
}

/// The message (and the first stack frames) of the exception behind `error`.
fn exception(ctx: &Ctx<'_>, error: rquickjs::Error) -> String {
    if !matches!(error, rquickjs::Error::Exception) {
        return error.to_string();
    }
    let thrown = ctx.catch();
    if let Some(e) = thrown.as_exception() {
        let name: Option<String> = e.get("name").ok();
        let message = e.message().unwrap_or_default();
        let stack = e.stack().unwrap_or_default();
        let frames: Vec<&str> = stack.lines().take(3).map(str::trim).collect();
        let head = match name {
            Some(n) if !n.is_empty() && n != "Error" => format!("{n}: {message}"),
            _ => message,
        };
        return if frames.is_empty() {
            head
        } else {
            format!("{head} ({})", frames.join(" < "))
        };
    }
    ctx.json_stringify(thrown)
        .ok()
        .flatten()
        .and_then(|s| s.to_string().ok())
        .unwrap_or_else(|| "a value that is not an Error".into())
}

fn request_json(request: &Request) -> Json {
    let body = if request.body.is_empty() {
        Json::Null
    } else {
        match std::str::from_utf8(&request.body) {
            Ok(text) => json!({ "text": text }),
            Err(_) => {
                json!({ "b64": base64::engine::general_purpose::STANDARD.encode(&request.body) })
            }
        }
    };
    json!({
        "method": request.method,
        "url": request.url,
        "headers": request.headers,
        "body": body,
    })
}

fn response_from_json(answer: &str) -> Result<Response, String> {
    #[derive(serde::Deserialize)]
    struct Wire {
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<WireBody>,
        #[serde(default)]
        stream: bool,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum WireBody {
        Text(String),
        B64(String),
    }
    let wire: Wire = serde_json::from_str(answer).map_err(|e| format!("response: {e}"))?;
    let body = match wire.body {
        None => Vec::new(),
        Some(WireBody::Text(t)) => t.into_bytes(),
        Some(WireBody::B64(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| format!("response body: {e}"))?,
    };
    Ok(Response {
        status: wire.status,
        headers: wire.headers,
        body,
        streamed: wire.stream,
    })
}

fn random_bytes(arg: &Json) -> Result<Json, OpError> {
    let n = arg.as_u64().unwrap_or(0);
    if n > 65_536 {
        return Err(OpError::new(
            "QuotaExceededError",
            "getRandomValues: at most 65536 bytes",
        ));
    }
    let mut bytes = vec![0u8; n as usize];
    getrandom::getrandom(&mut bytes).map_err(|e| OpError::new("Error", e.to_string()))?;
    Ok(json!(
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// `crypto.subtle`'s operations ([`super::subtle`]); bytes travel as base64.
fn crypto_subtle(arg: &Json) -> Result<Json, OpError> {
    use super::subtle::{self, Hash};
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = |field: &str| -> Result<Vec<u8>, OpError> {
        b64.decode(arg[field].as_str().unwrap_or_default())
            .map_err(|_| OpError::new("TypeError", format!("crypto.subtle: bad {field}")))
    };
    let hash = || {
        Hash::parse(arg["hash"].as_str().unwrap_or_default())
            .map_err(|e| OpError::new("NotSupportedError", e))
    };
    match arg["op"].as_str().unwrap_or_default() {
        "digest" => Ok(json!(b64.encode(subtle::digest(hash()?, &bytes("data")?)))),
        "sign" => Ok(json!(b64.encode(subtle::hmac_sign(
            hash()?,
            &bytes("key")?,
            &bytes("data")?
        )))),
        "verify" => Ok(json!(subtle::hmac_verify(
            hash()?,
            &bytes("key")?,
            &bytes("signature")?,
            &bytes("data")?
        ))),
        "equal" => Ok(json!(subtle::timing_safe_equal(&bytes("a")?, &bytes("b")?))),
        other => Err(OpError::new(
            "NotSupportedError",
            format!("crypto.subtle has no operation {other}"),
        )),
    }
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or_default()
}

/// CPU time this thread has used: waiting on host calls and timers does not count.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
