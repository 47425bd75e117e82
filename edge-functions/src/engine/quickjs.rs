//! The QuickJS engine (rquickjs): one fresh runtime and context per invocation.
//!
//! Isolation comes from never reusing anything: every call builds a runtime with
//! its own heap (capped by `set_memory_limit`), evaluates the Web API prelude and
//! the function's module, runs the handler, and drops the runtime. An interrupt
//! handler stops the script when the thread's CPU time or the wall clock passes
//! its limit. Host calls block this thread; the JS side sees promises.

use super::{Capabilities, Engine, InvokeError, Limits, OpError, Request, Response};
use base64::Engine as _;
use rquickjs::{Context, Ctx, Function, Module, Object, Promise, Runtime, Value};
use serde_json::{json, Value as Json};
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, Instant};

const PRELUDE: &str = include_str!("prelude.js");
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
    fn invoke(
        &self,
        module_source: &str,
        request: Request,
        limits: Limits,
        capabilities: Box<dyn Capabilities>,
    ) -> Result<Response, InvokeError> {
        // Whatever goes wrong inside stays an error of this invocation.
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            invoke(module_source, request, limits, capabilities)
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
}

/// Compiles `source` as an ES module without running it: what deploy checks.
pub fn check_module(source: &str) -> Result<(), String> {
    let runtime = Runtime::new().map_err(|e| e.to_string())?;
    runtime.set_memory_limit(64 << 20);
    let context = Context::full(&runtime).map_err(|e| e.to_string())?;
    context.with(|ctx| {
        Module::declare(ctx.clone(), "index.js", source)
            .map(|_| ())
            .map_err(|e| exception(&ctx, e))
    })
}

/// What stopped the script, set by the interrupt handler.
type Tripped = Rc<Cell<Option<&'static str>>>;

fn invoke(
    source: &str,
    request: Request,
    limits: Limits,
    capabilities: Box<dyn Capabilities>,
) -> Result<Response, InvokeError> {
    let wall_deadline = Instant::now() + Duration::from_millis(limits.wall_ms);
    let cpu_budget = Duration::from_millis(limits.cpu_ms);
    let cpu_start = thread_cpu_time();
    let tripped: Tripped = Rc::new(Cell::new(None));

    let runtime = Runtime::new().map_err(|e| InvokeError::Threw(format!("no runtime: {e}")))?;
    runtime.set_memory_limit(limits.memory_bytes);
    runtime.set_max_stack_size(MAX_STACK);
    let flag = tripped.clone();
    runtime.set_interrupt_handler(Some(Box::new(move || {
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
    let context =
        Context::full(&runtime).map_err(|e| InvokeError::Threw(format!("no context: {e}")))?;

    let run = Run {
        capabilities: Rc::new(RefCell::new(capabilities)),
        wall_deadline,
        tripped: tripped.clone(),
    };
    let outcome = context.with(|ctx| run.call(&ctx, source, &request));
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

struct Run {
    capabilities: Rc<RefCell<Box<dyn Capabilities>>>,
    wall_deadline: Instant,
    tripped: Tripped,
}

impl Run {
    fn call<'js>(
        &self,
        ctx: &Ctx<'js>,
        source: &str,
        request: &Request,
    ) -> Result<Response, InvokeError> {
        self.install_host(ctx)
            .map_err(|e| InvokeError::Threw(format!("installing the host: {e}")))?;
        ctx.eval::<(), _>(PRELUDE)
            .map_err(|e| InvokeError::Threw(format!("prelude: {}", exception(ctx, e))))?;
        let internals: Object = ctx
            .globals()
            .get("__spine")
            .map_err(|e| InvokeError::Threw(format!("prelude: {e}")))?;

        let module = Module::declare(ctx.clone(), "index.js", source)
            .map_err(|e| InvokeError::BadModule(exception(ctx, e)))?;
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
        response_from_json(&answer).map_err(InvokeError::Threw)
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

    /// `__host(op, json)`: the one native function the prelude builds on.
    fn install_host(&self, ctx: &Ctx<'_>) -> rquickjs::Result<()> {
        let capabilities = self.capabilities.clone();
        let deadline = self.wall_deadline;
        let logged = Cell::new(0u32);
        let host = Function::new(ctx.clone(), move |op: String, arg: String| -> String {
            let arg: Json = serde_json::from_str(&arg).unwrap_or(Json::Null);
            let answer = match op.as_str() {
                "now" => Ok(json!(now_ms())),
                "uuid" => Ok(json!(uuid::Uuid::new_v4().to_string())),
                "random" => random_bytes(&arg),
                "log" => {
                    let n = logged.get();
                    logged.set(n + 1);
                    if n < MAX_LOG_LINES {
                        let level = arg["level"].as_str().unwrap_or("info");
                        let message = arg["message"].as_str().unwrap_or_default();
                        let cut: String = message.chars().take(MAX_LOG_LINE).collect();
                        capabilities.borrow_mut().log(level, &cut);
                    }
                    Ok(Json::Null)
                }
                _ => match capabilities.try_borrow_mut() {
                    Ok(mut caps) => caps.call(&op, arg, deadline),
                    Err(_) => Err(OpError::new("Error", "host calls do not nest")),
                },
            };
            match answer {
                Ok(value) => json!({ "ok": value }).to_string(),
                Err(e) => json!({ "err": e.message, "kind": e.kind }).to_string(),
            }
        })?;
        ctx.globals().set("__host", host)
    }
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
