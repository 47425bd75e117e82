//! JSON Schema contracts (`sql/contracts.sql`): `spine.define_schema`,
//! `spine.bind_schema`, `spine.validate`, `spine.schema_violations`, and the
//! checks [`crate::events`] and [`crate::jobs`] run on event data and job payloads.
//!
//! Compiled schemas are kept per backend (a backend is one thread) and dropped
//! when `spine.schemas` or `spine.schema_bindings` changes (see
//! [`crate::invalidation`]). With nothing bound, a check is one flag test and an
//! empty-map test: emits and enqueues of unbound types pay nothing else.

use crate::error::{internal, SpineError};
use crate::invalidation::{self, Watched};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use spine_core::contract::{Contract, Violation};
use spine_core::names::{NameRule, PLUGIN, QUEUE};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Schema names: `order`, `crm.contact-v2`.
const SCHEMA_NAME: NameRule = NameRule {
    max_len: 100,
    extra: "_.-",
};

/// A schema, compiled (or why it does not compile: a row written with plain
/// SQL, bypassing `spine.define_schema`).
struct Compiled {
    name: String,
    contract: Result<Contract, String>,
}

impl Compiled {
    fn new(name: String, schema: &Value) -> Compiled {
        let contract = Contract::compile(schema);
        Compiled { name, contract }
    }

    /// Checks `value`, described as `what` in the error.
    fn check(&self, what: impl FnOnce() -> String, value: &Value) -> Result<(), SpineError> {
        let contract = self
            .contract
            .as_ref()
            .map_err(|reason| SpineError::InvalidParameter {
                name: "schema",
                reason: format!("\"{}\" does not compile: {reason}", self.name),
            })?;
        contract
            .check(value)
            .map_err(|violations| SpineError::Violates {
                what: what(),
                schema: self.name.clone(),
                violations,
            })
    }
}

/// This backend's copy of the bindings the extension checks, and of the schemas
/// named so far by `spine.validate`.
#[derive(Default)]
struct Copy {
    /// Event type (or `domain.*`) → its data's schema.
    events: HashMap<String, Rc<Compiled>>,
    /// Queue → its payloads' schema.
    queues: HashMap<String, Rc<Compiled>>,
}

/// Most schemas `spine.validate` keeps compiled; beyond it the map starts over.
const MAX_NAMED: usize = 1024;

thread_local! {
    static COPY: RefCell<Option<Rc<Copy>>> = const { RefCell::new(None) };
    /// Schema name → compiled, filled by `spine.validate`; cleared with [`COPY`].
    static NAMED: RefCell<HashMap<String, Rc<Compiled>>> = RefCell::new(HashMap::new());
}

/// The current copy, reloaded after a change of either table.
fn current() -> Result<Rc<Copy>, SpineError> {
    // Under REPEATABLE READ the transaction's snapshot may predate a change other
    // sessions see: read for this transaction only.
    if crate::spi_ext::snapshot_per_transaction() {
        return Ok(Rc::new(load()?));
    }
    // Both flags are read (and reset) every time: `|`, not `||`.
    let changed = invalidation::changed_since_last_look(Watched::Schemas)?
        | invalidation::changed_since_last_look(Watched::SchemaBindings)?;
    if !changed {
        if let Some(copy) = COPY.with(|c| c.borrow().clone()) {
            return Ok(copy);
        }
    }
    let copy = Rc::new(load()?);
    COPY.with(|c| *c.borrow_mut() = Some(copy.clone()));
    NAMED.with(|n| n.borrow_mut().clear());
    Ok(copy)
}

fn load() -> Result<Copy, SpineError> {
    let rows: Vec<(String, String, String, Value)> = Spi::connect(|client| {
        client
            .select(
                // Qualified: spine.enqueue runs with the caller's search_path.
                "SELECT b.target_kind, b.target, s.name, s.schema \
                   FROM spine.schema_bindings b \
                   JOIN spine.schemas s ON s.name OPERATOR(pg_catalog.=) b.schema_name \
                  WHERE b.target_kind OPERATOR(pg_catalog.=) ANY ('{event,queue}'::pg_catalog.text[]) \
                    AND b.direction OPERATOR(pg_catalog.=) 'input'",
                None,
                &[],
            )?
            .map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                    row.get::<JsonB>(4)?.map_or(Value::Null, |j| j.0),
                ))
            })
            .collect::<Result<_, pgrx::spi::SpiError>>()
    })
    .map_err(internal("contracts: load"))?;
    let mut copy = Copy::default();
    let mut compiled: HashMap<String, Rc<Compiled>> = HashMap::new();
    for (kind, target, name, schema) in rows {
        let schema = compiled
            .entry(name.clone())
            .or_insert_with(|| Rc::new(Compiled::new(name, &schema)))
            .clone();
        match kind.as_str() {
            "event" => copy.events.insert(target, schema),
            _ => copy.queues.insert(target, schema),
        };
    }
    Ok(copy)
}

/// Checks an event's data against the schema bound to its type (or its
/// domain's `domain.*`), if any.
pub fn check_event(event_type: &str, data: &Value) -> Result<(), SpineError> {
    let copy = current()?;
    if copy.events.is_empty() {
        return Ok(());
    }
    let bound = copy.events.get(event_type).or_else(|| {
        let domain = event_type.split('.').next().unwrap_or_default();
        copy.events.get(&format!("{domain}.*"))
    });
    match bound {
        Some(schema) => schema.check(|| format!("data of event {event_type}"), data),
        None => Ok(()),
    }
}

/// Whether payloads of `queue` have a schema: [`crate::jobs`] reads a payload
/// into a JSON value only then.
pub fn queue_has_contract(queue: &str) -> Result<bool, SpineError> {
    Ok(current()?.queues.contains_key(queue))
}

/// Checks a job's payload against its queue's schema, if any.
pub fn check_payload(queue: &str, payload: &Value) -> Result<(), SpineError> {
    match current()?.queues.get(queue) {
        Some(schema) => schema.check(|| format!("payload for queue \"{queue}\""), payload),
        None => Ok(()),
    }
}

/// `check_payload` for Spine's SQL enqueue paths (`enqueue_keyed`,
/// `enqueue_batch`, `enqueue_debounced`); not granted to clients.
#[pg_extern(
    sql = r#"
CREATE FUNCTION spine.check_job_payload(queue text, payload jsonb)
RETURNS void
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, spine, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'check_job_payload_wrapper';
"#,
    requires = ["contracts"]
)]
fn check_job_payload(queue: Option<&str>, payload: Option<JsonB>) -> Result<(), ErrorReport> {
    Ok(check_job_payload_checked(queue, payload)?)
}

fn check_job_payload_checked(
    queue: Option<&str>,
    payload: Option<JsonB>,
) -> Result<(), SpineError> {
    match (queue, payload) {
        (Some(queue), Some(payload)) => check_payload(queue, &payload.0),
        _ => Ok(()), // the caller reports its own NULLs
    }
}

/// The schema named `name`, compiled once per backend until the table changes.
fn named(name: &str) -> Result<Rc<Compiled>, SpineError> {
    let per_transaction = crate::spi_ext::snapshot_per_transaction();
    current()?; // clears NAMED after a change
    if let Some(found) = NAMED.with(|n| n.borrow().get(name).cloned()) {
        return Ok(found);
    }
    let schema = Spi::get_one_with_args::<JsonB>(
        "SELECT schema FROM spine.schemas WHERE name = $1",
        &[name.into()],
    )
    .map_err(internal("contracts: schema"))?
    .ok_or_else(|| SpineError::NotFound {
        kind: "schema",
        name: name.to_string(),
    })?;
    let compiled = Rc::new(Compiled::new(name.to_string(), &schema.0));
    if !per_transaction {
        NAMED.with(|n| {
            let mut n = n.borrow_mut();
            if n.len() >= MAX_NAMED {
                n.clear();
            }
            n.insert(name.to_string(), compiled.clone());
        });
    }
    Ok(compiled)
}

/// Defines (or replaces) a named JSON Schema; refuses one that does not compile,
/// saying where. Replacing a bound schema takes effect for the next value checked.
#[pg_extern(
    sql = r#"
CREATE FUNCTION spine.define_schema(name text, schema jsonb, description text DEFAULT NULL)
RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, spine, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'define_schema_wrapper';
"#,
    requires = ["contracts"]
)]
fn define_schema(
    name: Option<&str>,
    schema: Option<JsonB>,
    description: default!(Option<&str>, "NULL"),
) -> Result<(), ErrorReport> {
    Ok(define_schema_checked(name, schema, description)?)
}

fn define_schema_checked(
    name: Option<&str>,
    schema: Option<JsonB>,
    description: Option<&str>,
) -> Result<(), SpineError> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    let schema = schema.ok_or(SpineError::NullArgument("schema"))?;
    if !SCHEMA_NAME.accepts(name) {
        return Err(SpineError::InvalidParameter {
            name: "name",
            reason: format!(
                "\"{name}\" must be 1 to {} lowercase letters, digits, _, . and -, starting with a letter",
                SCHEMA_NAME.max_len
            ),
        });
    }
    Contract::compile(&schema.0).map_err(|reason| SpineError::InvalidParameter {
        name: "schema",
        reason,
    })?;
    Spi::run_with_args(
        "INSERT INTO spine.schemas (name, schema, description) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE \
            SET schema = excluded.schema, description = excluded.description, updated_at = now()",
        &[name.into(), schema.into(), description.into()],
    )
    .map_err(internal("contracts: define"))
}

/// Checks `target`'s input (or output) against the named schema from now on.
#[pg_extern(
    sql = r#"
CREATE FUNCTION spine.bind_schema(target_kind text, target text, schema_name text, direction text DEFAULT 'input')
RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, spine, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'bind_schema_wrapper';
"#,
    requires = ["contracts"]
)]
fn bind_schema(
    target_kind: Option<&str>,
    target: Option<&str>,
    schema_name: Option<&str>,
    direction: default!(Option<&str>, "'input'"),
) -> Result<(), ErrorReport> {
    Ok(bind_schema_checked(
        target_kind,
        target,
        schema_name,
        direction,
    )?)
}

fn bind_schema_checked(
    target_kind: Option<&str>,
    target: Option<&str>,
    schema_name: Option<&str>,
    direction: Option<&str>,
) -> Result<(), SpineError> {
    let kind = target_kind.ok_or(SpineError::NullArgument("target_kind"))?;
    let target = target.ok_or(SpineError::NullArgument("target"))?;
    let schema_name = schema_name.ok_or(SpineError::NullArgument("schema_name"))?;
    let direction = direction.ok_or(SpineError::NullArgument("direction"))?;
    check_target(kind, target, direction)?;
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM spine.schemas WHERE name = $1)",
        &[schema_name.into()],
    )
    .map_err(internal("contracts: bind"))?
    .unwrap_or(false);
    if !exists {
        return Err(SpineError::NotFound {
            kind: "schema",
            name: schema_name.to_string(),
        });
    }
    Spi::run_with_args(
        "INSERT INTO spine.schema_bindings (target_kind, target, direction, schema_name) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (target_kind, target, direction) DO UPDATE SET schema_name = excluded.schema_name",
        &[
            kind.into(),
            target.into(),
            direction.into(),
            schema_name.into(),
        ],
    )
    .map_err(internal("contracts: bind"))
}

/// Why `target` cannot be bound, by the naming rules of its kind.
fn check_target(kind: &str, target: &str, direction: &str) -> Result<(), SpineError> {
    let invalid =
        |name: &'static str, reason: String| SpineError::InvalidParameter { name, reason };
    if direction != "input" && direction != "output" {
        return Err(invalid("direction", "must be input or output".into()));
    }
    let target_ok = match kind {
        "event" => match target.strip_suffix(".*") {
            Some(domain) => spine_core::event_type::validate_domain(domain).is_ok(),
            None => spine_core::event_type::validate(target).is_ok(),
        },
        "queue" => QUEUE.accepts(target),
        "function" => PLUGIN.accepts(target),
        "verb" => target
            .split_once('.')
            .is_some_and(|(s, v)| PLUGIN.accepts(s) && PLUGIN.accepts(v)),
        _ => {
            return Err(invalid(
                "target_kind",
                "must be event, queue, function or verb".into(),
            ))
        }
    };
    if !target_ok {
        let expected = match kind {
            "event" => "an event type (domain.PastTenseName) or domain.*",
            "verb" => "service.verb",
            "queue" => "a queue name",
            _ => "a function name",
        };
        return Err(invalid("target", format!("\"{target}\" is not {expected}")));
    }
    if direction == "output" && (kind == "event" || kind == "queue") {
        return Err(invalid(
            "direction",
            format!("only functions and verbs answer; an {kind} carries one value (its input)"),
        ));
    }
    Ok(())
}

/// Raises 22023 naming each offending value's JSON Pointer when `value` breaks
/// the named schema.
#[pg_extern(
    sql = r#"
CREATE FUNCTION spine.validate(schema_name text, value jsonb)
RETURNS void
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, spine, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'validate_wrapper';
"#,
    requires = ["contracts"]
)]
fn validate(schema_name: Option<&str>, value: Option<JsonB>) -> Result<(), ErrorReport> {
    Ok(validate_checked(schema_name, value)?)
}

fn validate_checked(schema_name: Option<&str>, value: Option<JsonB>) -> Result<(), SpineError> {
    let name = schema_name.ok_or(SpineError::NullArgument("schema_name"))?;
    let value = value.ok_or(SpineError::NullArgument("value"))?;
    named(name)?.check(|| "value".into(), &value.0)
}

/// The violations of the named schema by `value`, as `[{pointer, message}]`
/// (empty when it conforms): for a form that shows every problem at once.
#[pg_extern(
    sql = r#"
CREATE FUNCTION spine.schema_violations(schema_name text, value jsonb)
RETURNS jsonb
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, spine, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'schema_violations_wrapper';
"#,
    requires = ["contracts"]
)]
fn schema_violations(
    schema_name: Option<&str>,
    value: Option<JsonB>,
) -> Result<JsonB, ErrorReport> {
    Ok(schema_violations_checked(schema_name, value)?)
}

fn schema_violations_checked(
    schema_name: Option<&str>,
    value: Option<JsonB>,
) -> Result<JsonB, SpineError> {
    let name = schema_name.ok_or(SpineError::NullArgument("schema_name"))?;
    let value = value.ok_or(SpineError::NullArgument("value"))?;
    match named(name)?.check(String::new, &value.0) {
        Ok(()) => Ok(JsonB(json!([]))),
        Err(SpineError::Violates { violations, .. }) => Ok(JsonB(violations_json(&violations))),
        Err(other) => Err(other),
    }
}

/// `[{pointer, message}]`, as `spine.schema_violations` gives them.
fn violations_json(violations: &[Violation]) -> Value {
    serde_json::to_value(violations).unwrap_or(Value::Null)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn define_order() {
        Spi::run(
            r#"SELECT spine.define_schema('order', '{"type":"object","required":["sku"],
                 "properties":{"sku":{"type":"string"},"qty":{"type":"integer","minimum":1}}}')"#,
        )
        .unwrap();
    }

    /// Conforming data and unbound types pass; data that breaks the bound
    /// schema is refused, naming where (the integration tests check DETAIL).
    #[pg_test(
        error = "data of event shop.OrderPlaced does not match schema \"order\": at /qty: value is less than the minimum of 1"
    )]
    fn emit_checks_data_of_a_bound_type() {
        define_order();
        Spi::run("SELECT spine.bind_schema('event', 'shop.OrderPlaced', 'order')").unwrap();
        Spi::run(r#"SELECT spine.emit('shop.OrderPlaced', '{"sku":"a","qty":2}')"#).unwrap();
        Spi::run(r#"SELECT spine.emit('shop.OrderShipped', '{"qty":"x"}')"#).unwrap();
        Spi::run(r#"SELECT spine.emit('shop.OrderPlaced', '{"sku":"a","qty":0}')"#).unwrap();
    }

    /// `shop.*` covers the domain's types; an exact binding wins over it.
    #[pg_test(
        error = "data of event shop.OrderPacked does not match schema \"order\": at /: \"sku\" is a required property"
    )]
    fn a_domain_binding_covers_its_types_and_an_exact_one_wins() {
        define_order();
        Spi::run(r#"SELECT spine.define_schema('anything', 'true')"#).unwrap();
        Spi::run("SELECT spine.bind_schema('event', 'shop.*', 'order')").unwrap();
        Spi::run("SELECT spine.bind_schema('event', 'shop.OrderShipped', 'anything')").unwrap();
        Spi::run(r#"SELECT spine.emit('shop.OrderShipped', '{}')"#).unwrap();
        Spi::run(r#"SELECT spine.emit('shop.OrderPacked', '{}')"#).unwrap();
    }

    #[pg_test]
    fn violations_list_every_pointer() {
        define_order();
        let v = Spi::get_one::<pgrx::JsonB>(
            r#"SELECT spine.schema_violations('order', '{"qty":"x"}')"#,
        )
        .unwrap()
        .unwrap()
        .0;
        let pointers: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert!(pointers.contains(&"") && pointers.contains(&"/qty"), "{v}");
    }

    #[pg_test]
    #[should_panic(expected = "does not exist")]
    fn binding_needs_a_defined_schema() {
        Spi::run("SELECT spine.bind_schema('queue', 'orders', 'nope')").unwrap();
    }

    #[pg_test]
    #[should_panic(expected = "is not an event type")]
    fn binding_checks_the_target_name() {
        define_order();
        Spi::run("SELECT spine.bind_schema('event', 'shop.placeOrder', 'order')").unwrap();
    }

    #[pg_test]
    #[should_panic(expected = "invalid value for schema")]
    fn a_broken_schema_is_refused() {
        Spi::run(r#"SELECT spine.define_schema('bad', '{"type":"whole"}')"#).unwrap();
    }
}
