//! Audit: `spine.audit_log`, append-only and hash-chained (`sql/audit.sql` holds the
//! tables and the triggers that refuse UPDATE, DELETE and TRUNCATE).
//!
//! Every row is written by [`record`], in the transaction of the action it records:
//! one statement moves the chain head (`spine.audit_head`, a single row, locked until
//! the transaction ends) and inserts the row with `hash = link(prev_hash, row)`.
//! The head row is what serialises writers; it also lets `audit_verify()` notice a
//! row cut off the end of the log. Readers of the log are not blocked.

pub mod chain;

use crate::caller;
use crate::error::SpineError;
use crate::spi_ext::optional_row;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};

/// Longest accepted action or target.
const MAX_NAME_LEN: usize = 200;

/// Actions are lowercase dotted names, `domain.what_happened`, e.g. `consent.granted`.
pub fn check_action(action: &str) -> Result<(), SpineError> {
    let ok = !action.is_empty()
        && action.len() <= MAX_NAME_LEN
        && action.contains('.')
        && action.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_lowercase())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(SpineError::InvalidParameter {
            name: "audit action",
            reason: format!(
                "\"{action}\" must be lowercase dotted words such as consent.granted (at most {MAX_NAME_LEN} bytes)"
            ),
        })
    }
}

/// Appends one row to the audit log in the current transaction and returns its
/// sequence number. The actor is `auth.uid()`, the role the one the request acts as.
pub fn record(
    action: &str,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<i64, SpineError> {
    check_action(action)?;
    if target.is_some_and(|t| t.len() > MAX_NAME_LEN) {
        return Err(SpineError::InvalidParameter {
            name: "audit target",
            reason: format!("longer than {MAX_NAME_LEN} bytes"),
        });
    }
    let actor =
        Spi::get_one::<Uuid>("SELECT auth.uid()").map_err(|e| SpineError::InvalidParameter {
            name: "request.jwt.claims",
            reason: format!("claim \"sub\" is not a uuid ({e})"),
        })?;
    let role = caller::outer_role_name();
    // SAFETY: reads the backend's clock; valid in any transaction.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let at = TimestampWithTimeZone::try_from(now).map_err(|e| SpineError::Internal {
        context: "audit: clock",
        message: format!("{e:?}"),
    })?;
    // One statement: the head moves and the row is inserted with the hash computed
    // from the head's current (locked, latest committed) hash.
    let append = || {
        optional_row(Spi::get_one_with_args::<i64>(
            "WITH head AS ( \
                 UPDATE spine.audit_head h \
                    SET seq = h.seq + 1, prev_hash = h.hash, \
                        hash = spine.audit_link(h.hash, h.seq + 1, $1, $2::text, $3, $4, $5, $6::text) \
                 RETURNING h.seq, h.prev_hash, h.hash) \
             INSERT INTO spine.audit_log (seq, at, actor, role, action, target, details, prev_hash, hash) \
             SELECT head.seq, $1, $2, $3, $4, $5, $6, head.prev_hash, head.hash FROM head \
             RETURNING seq",
            &[
                at.into(),
                actor.into(),
                role.as_str().into(),
                action.into(),
                target.into(),
                JsonB(details.clone()).into(),
            ],
        ))
        .map(Option::flatten)
        .map_err(internal)
    };
    if let Some(seq) = append()? {
        return Ok(seq);
    }
    // The first audit write of a database creates the head row. CREATE EXTENSION
    // does not: a database restored from pg_dump gets the dumped head row, which
    // must not collide with a fresh one.
    Spi::run(
        "INSERT INTO spine.audit_head (seq, prev_hash, hash) \
         SELECT 0, decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex') \
         ON CONFLICT DO NOTHING",
    )
    .map_err(internal)?;
    append()?.ok_or_else(|| SpineError::Internal {
        context: "audit: append",
        message: "spine.audit_head has no row".into(),
    })
}

fn internal(e: pgrx::spi::SpiError) -> SpineError {
    SpineError::Internal {
        context: "audit: append",
        message: e.to_string(),
    }
}

/// The hash of an audit row given the previous row's hash (used by the insert).
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe)]
fn audit_link(
    prev_hash: &[u8],
    seq: i64,
    at: TimestampWithTimeZone,
    actor: Option<&str>,
    role: &str,
    action: &str,
    target: Option<&str>,
    details: &str,
) -> Vec<u8> {
    chain::link(
        prev_hash,
        &chain::Row {
            seq,
            at_micros: at.into_inner(),
            actor,
            role,
            action,
            target,
            details,
        },
    )
    .to_vec()
}

/// Appends a row to the audit log (for SQL callers: service_role and Spine's own
/// functions). Returns its sequence number.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn audit(
    action: &str,
    target: default!(Option<&str>, "NULL"),
    details: default!(Option<JsonB>, "'{}'"),
) -> Result<i64, ErrorReport> {
    let details = details
        .map(|d| d.0)
        .unwrap_or_else(|| serde_json::json!({}));
    Ok(record(action, target, details)?)
}

/// Walks the whole log in order and recomputes every link. Returns the sequence
/// number of the first row that is missing, altered, forged or out of place — or
/// NULL when the chain is intact up to the head. The reason goes out as a WARNING.
#[pg_extern(security_definer, stable)]
#[search_path(pg_catalog, pg_temp)]
fn audit_verify() -> Result<Option<i64>, ErrorReport> {
    Ok(verify()?.map(|(seq, reason)| {
        pgrx::warning!("audit log broken at seq {seq}: {reason}");
        seq
    }))
}

/// Rows read per cursor fetch while verifying.
const VERIFY_BATCH: i64 = 10_000;

/// The chain's tip as `spine.audit_head` records it: `(seq, hash)`, or `(0,
/// GENESIS)` before the first write.
fn read_head(client: &pgrx::spi::SpiClient<'_>) -> Result<(i64, Vec<u8>), pgrx::spi::SpiError> {
    let table = client.select("SELECT seq, hash FROM spine.audit_head", Some(1), &[])?;
    if table.is_empty() {
        return Ok((0, chain::GENESIS.to_vec()));
    }
    let (seq, hash) = table.first().get_two::<i64, Vec<u8>>()?;
    Ok((seq.unwrap_or(0), hash.unwrap_or_default()))
}

/// Walks the log; `Some((seq, reason))` for the first broken row.
///
/// Writers may commit while the walk runs, so the head is read before and after
/// it: rows are never missing below the first reading, and never beyond the second
/// (seqs only grow), whatever snapshot each query gets.
fn verify() -> Result<Option<(i64, String)>, SpineError> {
    let internal = |e: pgrx::spi::SpiError| SpineError::Internal {
        context: "audit_verify",
        message: e.to_string(),
    };
    Spi::connect(|client| {
        let (head_before, _) = read_head(client).map_err(internal)?;
        let mut last_seq = 0_i64;
        let mut prev: Vec<u8> = chain::GENESIS.to_vec();
        let mut cursor = client.open_cursor(
            "SELECT seq, at, actor::text, role, action, target, details::text, prev_hash, hash \
             FROM spine.audit_log ORDER BY seq",
            &[],
        );
        loop {
            let rows = cursor.fetch(VERIFY_BATCH).map_err(internal)?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let seq: i64 = row.get(1).map_err(internal)?.unwrap_or_default();
                let expected = last_seq + 1;
                if seq != expected {
                    return Ok(Some((
                        expected,
                        format!("row {expected} is missing (the next row is {seq})"),
                    )));
                }
                let at: Option<TimestampWithTimeZone> = row.get(2).map_err(internal)?;
                let actor: Option<String> = row.get(3).map_err(internal)?;
                let role: Option<String> = row.get(4).map_err(internal)?;
                let action: Option<String> = row.get(5).map_err(internal)?;
                let target: Option<String> = row.get(6).map_err(internal)?;
                let details: Option<String> = row.get(7).map_err(internal)?;
                let prev_hash: Option<Vec<u8>> = row.get(8).map_err(internal)?;
                let hash: Option<Vec<u8>> = row.get(9).map_err(internal)?;
                if prev_hash.as_deref() != Some(prev.as_slice()) {
                    return Ok(Some((
                        seq,
                        "prev_hash is not the previous row's hash".into(),
                    )));
                }
                let computed = chain::link(
                    &prev,
                    &chain::Row {
                        seq,
                        at_micros: at.map(|t| t.into_inner()).unwrap_or_default(),
                        actor: actor.as_deref(),
                        role: role.as_deref().unwrap_or_default(),
                        action: action.as_deref().unwrap_or_default(),
                        target: target.as_deref(),
                        details: details.as_deref().unwrap_or_default(),
                    },
                );
                if hash.as_deref() != Some(computed.as_slice()) {
                    return Ok(Some((seq, "hash does not match the row's content".into())));
                }
                prev = computed.to_vec();
                last_seq = seq;
            }
        }
        if last_seq < head_before {
            return Ok(Some((
                last_seq + 1,
                format!(
                    "the log ends at row {last_seq} but its head says {head_before}: rows were removed from the end"
                ),
            )));
        }
        let (head_after, head_hash) = read_head(client).map_err(internal)?;
        if head_after < last_seq {
            return Ok(Some((
                head_after + 1,
                format!(
                    "rows {}..={last_seq} lie beyond the chain's head ({head_after}): not written by Spine",
                    head_after + 1
                ),
            )));
        }
        if head_after == last_seq && head_hash != prev {
            return Ok(Some((
                last_seq,
                "the head's hash is not the last row's hash".into(),
            )));
        }
        Ok(None)
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Rows chain and verify passes over them.
    #[pg_test]
    fn chain_verifies() {
        Spi::run("SELECT spine.audit('test.happened', 'x', '{\"n\": 1}')").unwrap();
        Spi::run("SELECT spine.audit('test.happened', NULL, '{\"n\": 2}')").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT spine.audit_verify()").unwrap(),
            None
        );
    }

    /// A bad action name is refused with 22023.
    #[pg_test(
        error = "invalid value for audit action: \"Bad\" must be lowercase dotted words such as consent.granted (at most 200 bytes)"
    )]
    fn bad_action_is_refused() {
        Spi::run("SELECT spine.audit('Bad')").unwrap();
    }
}
