//! Database webhooks: row changes of a table delivered durably to a URL or an edge
//! function. Tables and the trigger are in `sql/webhooks.sql`; creating one is
//! decided here (validation, its queue, its signing secret, its trigger).
//!
//! Each webhook gets its own queue `webhook.<name>`: the queue's max_concurrency is
//! the webhook's concurrency cap, and its retries, backoff and dead letter are the
//! webhook's. The worker signs each delivery with the webhook's vault secret.

pub mod target;

use crate::audit;
use crate::caller::require_privileged;
use crate::error::{internal, SpineError};
use crate::spi_ext::{optional_row, returning_one, returning_two};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;
use spine_core::names;
use target::{parse_events, Target};

/// Schemas whose tables may not have webhooks: a webhook on the queue it feeds
/// would feed itself, and catalogs are not row data.
const CLOSED_SCHEMAS: [&str; 6] = [
    "spine",
    "vault",
    "cron",
    "pg_catalog",
    "information_schema",
    "pg_toast",
];

/// Webhook names become queue, trigger and secret names ([`names::WEBHOOK`]).
const MAX_NAME_LEN: usize = names::WEBHOOK.max_len;

fn check_name(name: &str) -> Result<(), SpineError> {
    if names::WEBHOOK.accepts(name) {
        Ok(())
    } else {
        Err(SpineError::InvalidParameter {
            name: "webhook name",
            reason: format!(
                "\"{name}\" must be lowercase letters, digits and _, start with a letter, at most {MAX_NAME_LEN} bytes"
            ),
        })
    }
}

/// What `spine.create_webhook` calls (it takes the table as regclass).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn webhook_create(
    name: Option<&str>,
    table_oid: Option<pg_sys::Oid>,
    events: Option<Vec<Option<String>>>,
    target: Option<JsonB>,
    max_concurrency: Option<i32>,
    max_attempts: Option<i32>,
) -> Result<pgrx::Uuid, ErrorReport> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    let table_oid = table_oid.ok_or(SpineError::NullArgument("table_name"))?;
    let events = events.ok_or(SpineError::NullArgument("events"))?;
    let target = target.ok_or(SpineError::NullArgument("target"))?;
    require_privileged("create webhooks")?;
    check_name(name)?;
    let invalid =
        |name: &'static str| move |reason: String| SpineError::InvalidParameter { name, reason };
    let events = parse_events(&events).map_err(invalid("events"))?;
    let target = target::parse(&target.0).map_err(invalid("target"))?;
    let max_attempts = max_attempts.unwrap_or(5);
    if !(1..=100).contains(&max_attempts) {
        Err(invalid("max_attempts")("must be 1 to 100".into()))?;
    }
    if max_concurrency.is_some_and(|c| c < 1) {
        Err(invalid("max_concurrency")(
            "must be at least 1, or NULL for no cap".into(),
        ))?;
    }

    let relation = optional_row(Spi::get_three_with_args::<String, String, String>(
        "SELECT n.nspname::text, c.relkind::text, format('%I.%I', n.nspname, c.relname) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        &[table_oid.into()],
    ))
    .map_err(internal("webhook: table"))?;
    let Some((Some(schema), Some(kind), Some(qualified))) = relation else {
        Err(SpineError::NotFound {
            kind: "table",
            name: table_oid.to_u32().to_string(),
        })?
    };
    if !matches!(kind.as_str(), "r" | "p") {
        Err(invalid("table_name")(format!("{qualified} is not a table")))?;
    }
    if CLOSED_SCHEMAS.contains(&schema.as_str()) || schema.starts_with("pg_") {
        Err(invalid("table_name")(format!(
            "{qualified} is in schema {schema}, which cannot have webhooks"
        )))?;
    }
    if let Target::Function { function } = &target {
        let deployed = optional_row(Spi::get_one_with_args::<bool>(
            "SELECT true FROM spine.functions WHERE name = $1",
            &[function.as_str().into()],
        ))
        .map_err(internal("webhook: function"))?
        .flatten();
        if deployed.is_none() {
            Err(SpineError::NotFound {
                kind: "edge function",
                name: function.clone(),
            })?;
        }
    }
    let exists = optional_row(Spi::get_one_with_args::<bool>(
        "SELECT true FROM spine.webhooks WHERE name = $1",
        &[name.into()],
    ))
    .map_err(internal("webhook: exists"))?
    .flatten();
    if exists.is_some() {
        Err(SpineError::AlreadyExists {
            kind: "webhook",
            name: name.into(),
        })?;
    }

    let queue = format!("webhook.{name}");
    Spi::run_with_args(
        "SELECT spine.create_queue($1, $2, '7 days')",
        &[queue.as_str().into(), max_concurrency.into()],
    )
    .map_err(internal("webhook: queue"))?;
    let secret_id = create_signing_secret(name)?;
    let events_sql: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    Spi::run_with_args(
        "INSERT INTO spine.webhooks (name, table_name, events, target, queue, secret_id, max_attempts) \
         VALUES ($1, $2::regclass, $3, $4, $5, $6, $7)",
        &[
            name.into(),
            table_oid.into(),
            events_sql.clone().into(),
            JsonB(target.to_value()).into(),
            queue.as_str().into(),
            secret_id.into(),
            max_attempts.into(),
        ],
    )
    .map_err(internal("webhook: insert"))?;
    // The table's name comes quoted from the catalog (format %I), the trigger's
    // and the argument's from a name that passed check_name, quoted again anyway.
    let trigger = trigger_name(name);
    Spi::run(&format!(
        "CREATE TRIGGER {} AFTER {} ON {qualified} FOR EACH ROW EXECUTE FUNCTION spine.webhook_fire({})",
        quote_ident(&trigger),
        events_sql.join(" OR "),
        quote_literal(name),
    ))
    .map_err(internal("webhook: trigger"))?;
    audit::record(
        "webhook.created",
        Some(&format!("webhook:{name}")),
        json!({"table": qualified, "events": events_sql, "target": target.redacted(), "max_concurrency": max_concurrency, "max_attempts": max_attempts}),
    )?;
    Ok(secret_id)
}

/// A new signing secret in the vault, named `spine.webhook.<name>`, in the form
/// Standard Webhooks libraries take as is: `whsec_` and 32 random bytes in base64.
fn create_signing_secret(name: &str) -> Result<pgrx::Uuid, SpineError> {
    use base64::Engine as _;
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key)
        .map_err(|e| SpineError::Unavailable(format!("no randomness: {e}")))?;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    Spi::get_one_with_args::<pgrx::Uuid>(
        "SELECT vault.create_secret($1, $2, $3)",
        &[
            secret.into(),
            format!("spine.webhook.{name}").into(),
            format!("signs deliveries of webhook {name}").into(),
        ],
    )
    .map_err(internal("webhook: secret"))?
    .ok_or_else(|| SpineError::Internal {
        context: "webhook: secret",
        message: "vault.create_secret returned NULL".into(),
    })
}

/// Gives a webhook a new signing secret and returns its vault id. Until
/// `now() + overlap` deliveries carry a Standard Webhooks signature with each
/// secret (`webhook-signature: v1,<new> v1,<old>`), so receivers can switch
/// without refusing a delivery; `X-Spine-Signature` uses the new one at once. A
/// secret replaced by an earlier rotation is deleted.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn rotate_webhook_secret(
    name: Option<&str>,
    overlap: default!(Option<pgrx::datum::Interval>, "'1 day'"),
) -> Result<pgrx::Uuid, ErrorReport> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    let overlap = overlap.ok_or(SpineError::NullArgument("overlap"))?;
    require_privileged("rotate webhook secrets")?;
    let row = optional_row(Spi::get_two_with_args::<pgrx::Uuid, pgrx::Uuid>(
        "SELECT secret_id, previous_secret_id FROM spine.webhooks WHERE name = $1 FOR UPDATE",
        &[name.into()],
    ))
    .map_err(internal("webhook: rotate"))?;
    let Some((Some(current), earlier)) = row else {
        Err(SpineError::NotFound {
            kind: "webhook",
            name: name.into(),
        })?
    };
    let negative =
        Spi::get_one_with_args::<bool>("SELECT $1::interval < interval '0'", &[overlap.into()])
            .map_err(internal("webhook: rotate"))?
            .unwrap_or(false);
    if negative {
        Err(SpineError::InvalidParameter {
            name: "overlap",
            reason: "must not be negative".into(),
        })?;
    }
    if let Some(earlier) = earlier {
        Spi::run_with_args("DELETE FROM vault.secrets WHERE id = $1", &[earlier.into()])
            .map_err(internal("webhook: rotate"))?;
    }
    // The replaced secret keeps its id under a new name; the new one takes the name.
    Spi::run_with_args(
        "UPDATE vault.secrets SET name = $2 WHERE id = $1",
        &[
            current.into(),
            format!("spine.webhook.{name}.previous").into(),
        ],
    )
    .map_err(internal("webhook: rotate"))?;
    let fresh = create_signing_secret(name)?;
    Spi::run_with_args(
        "UPDATE spine.webhooks SET secret_id = $2, previous_secret_id = $3, \
           previous_valid_until = now() + $4::interval WHERE name = $1",
        &[name.into(), fresh.into(), current.into(), overlap.into()],
    )
    .map_err(internal("webhook: rotate"))?;
    audit::record(
        "webhook.secret_rotated",
        Some(&format!("webhook:{name}")),
        json!({"overlap": overlap.to_string()}),
    )?;
    Ok(fresh)
}

fn trigger_name(webhook: &str) -> String {
    format!("spine_webhook_{webhook}")
}

/// Double-quotes an identifier (doubling quotes inside), as quote_ident does.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Single-quotes a literal (doubling quotes inside); standard_conforming_strings.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Removes a webhook: its trigger, its row and its signing secret. Jobs already
/// queued fail (the webhook is gone) and end in the dead letter of its queue, where
/// they stay visible; its delivery history stays.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn drop_webhook(name: Option<&str>) -> Result<bool, ErrorReport> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    require_privileged("drop webhooks")?;
    let row = optional_row(returning_two::<String, pgrx::Uuid>(
        "WITH gone AS (DELETE FROM spine.webhooks WHERE name = $1 RETURNING *), \
              previous AS (DELETE FROM vault.secrets WHERE id = (SELECT previous_secret_id FROM gone)) \
         SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = table_name), secret_id \
           FROM gone",
        &[name.into()],
    ))
    .map_err(internal("webhook: drop"))?;
    let Some((table, Some(secret_id))) = row else {
        Err(SpineError::NotFound {
            kind: "webhook",
            name: name.into(),
        })?
    };
    if let Some(table) = table {
        Spi::run(&format!(
            "DROP TRIGGER IF EXISTS {} ON {table}",
            quote_ident(&trigger_name(name))
        ))
        .map_err(internal("webhook: drop trigger"))?;
    }
    Spi::run_with_args(
        "DELETE FROM vault.secrets WHERE id = $1",
        &[secret_id.into()],
    )
    .map_err(internal("webhook: drop secret"))?;
    audit::record(
        "webhook.dropped",
        Some(&format!("webhook:{name}")),
        json!({}),
    )?;
    Ok(true)
}

/// Where the worker delivers a webhook and the key it signs with (service_role).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn webhook_target(
    name: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(target, JsonB),
            name!(signing_key, String),
            name!(previous_key, Option<String>),
        ),
    >,
    ErrorReport,
> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    require_privileged("read webhook targets")?;
    let row = optional_row(Spi::get_three_with_args::<JsonB, String, String>(
        "SELECT w.target, s.decrypted_secret, p.decrypted_secret FROM spine.webhooks w \
           LEFT JOIN vault.decrypted_secrets s ON s.id = w.secret_id \
           LEFT JOIN vault.decrypted_secrets p ON p.id = w.previous_secret_id \
                                              AND w.previous_valid_until > now() \
          WHERE w.name = $1",
        &[name.into()],
    ))
    .map_err(internal("webhook: target"))?;
    match row {
        Some((Some(target), Some(key), previous)) => {
            Ok(TableIterator::once((target, key, previous)))
        }
        Some((Some(_), None, _)) => Err(SpineError::Unavailable(format!(
            "the signing secret of webhook {name} is missing from the vault"
        ))
        .into()),
        _ => Err(SpineError::NotFound {
            kind: "webhook",
            name: name.into(),
        }
        .into()),
    }
}

/// Records one delivery attempt (what the worker calls after each try).
#[allow(clippy::too_many_arguments)]
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn record_webhook_delivery(
    webhook: Option<&str>,
    job_id: Option<i64>,
    attempt: Option<i32>,
    status: Option<i32>,
    succeeded: Option<bool>,
    response: Option<&str>,
    error: Option<&str>,
    duration_ms: Option<i32>,
) -> Result<i64, ErrorReport> {
    let webhook = webhook.ok_or(SpineError::NullArgument("webhook"))?;
    let job_id = job_id.ok_or(SpineError::NullArgument("job_id"))?;
    require_privileged("record webhook deliveries")?;
    // Bounded: a receiver's answer or error is evidence, not storage.
    let cut = |s: Option<&str>| s.map(|s| s.chars().take(2000).collect::<String>());
    let id = returning_one::<i64>(
        "INSERT INTO spine.webhook_deliveries \
           (webhook, job_id, attempt, status, succeeded, response, error, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        &[
            webhook.into(),
            job_id.into(),
            attempt.unwrap_or(0).into(),
            status.into(),
            succeeded.unwrap_or(false).into(),
            cut(response).into(),
            cut(error).into(),
            duration_ms.unwrap_or(0).max(0).into(),
        ],
    )
    .map_err(internal("webhook: record delivery"))?
    .unwrap_or_default();
    Ok(id)
}
