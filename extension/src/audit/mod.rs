//! Audit: `spine.audit_log`, append-only and hash-chained (`sql/audit.sql` holds the
//! tables and the triggers that refuse UPDATE, DELETE and TRUNCATE).
//!
//! [`record`] writes a row in the transaction of the action it records, into
//! `spine.audit_pending`: an action that rolls back leaves no row, one that commits
//! cannot lose its row. Rows join the chain when a sealer ([`seal`]) appends every
//! committed pending row to `spine.audit_log` with consecutive `seq`s and `hash =
//! link(prev_hash, row)`, under the lock of the chain's head (`spine.audit_head`,
//! one row). Each auditing transaction seals at its COMMIT (a deferred trigger)
//! when the head is free; when another committer holds it, it does not wait — its
//! rows are sealed by the next sealer (the next auditing commit, `spine.audit_seal()`,
//! or the pg_cron sweep). Committers therefore never queue behind each other's WAL
//! flushes, and the chain stays one line: only the head's holder appends.

pub mod anchor;

use spine_core::audit_chain as chain;

use crate::caller;
use crate::error::{internal, SpineError};
use crate::spi_ext::run_prepared;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::{JSONBOID, TEXTOID, TIMESTAMPTZOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::JsonB;

/// Longest accepted action or target.
const MAX_NAME_LEN: usize = 200;

/// Largest `details` (as JSON text): the log is append-only, so what goes in stays.
const MAX_DETAILS_BYTES: usize = 16 * 1024;

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

/// Records one audit row in the current transaction; it joins the chain when the
/// transaction commits. The actor is `auth.uid()`, the role the one the request
/// acts as.
pub fn record(
    action: &str,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<(), SpineError> {
    check_action(action)?;
    if target.is_some_and(|t| t.len() > MAX_NAME_LEN) {
        return Err(SpineError::InvalidParameter {
            name: "audit target",
            reason: format!("longer than {MAX_NAME_LEN} bytes"),
        });
    }
    let size = spine_core::json::text_len(&details);
    if size > MAX_DETAILS_BYTES {
        return Err(SpineError::TooLarge {
            what: "audit details",
            actual: size,
            limit: MAX_DETAILS_BYTES,
        });
    }
    let actor = caller::request_user()?;
    let role = caller::outer_role_name();
    // SAFETY: reads the backend's clock; valid in any transaction.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let at = TimestampWithTimeZone::try_from(now).map_err(|e| SpineError::Internal {
        context: "audit: clock",
        message: format!("{e:?}"),
    })?;
    register_transaction()?;
    run_prepared(
        "INSERT INTO spine.audit_pending (at, actor, role, action, target, details) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[TIMESTAMPTZOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID],
        &[
            at.into(),
            actor.into(),
            role.as_str().into(),
            action.into(),
            target.into(),
            JsonB(details).into(),
        ],
    )
    .map_err(internal("audit: record"))
}

// The transaction whose seal-at-commit trigger this backend registered last (a
// backend is one thread). A registration lost to a rolled-back savepoint only
// means the rows wait for the next sealer, never that they are lost.
thread_local! {
    static REGISTERED: std::cell::Cell<pg_sys::TransactionId> =
        const { std::cell::Cell::new(pg_sys::TransactionId::INVALID) };
}

/// Makes sure the current transaction seals at COMMIT (its row in
/// `spine.audit_transactions` carries the deferred trigger).
fn register_transaction() -> Result<(), SpineError> {
    // SAFETY: assigns the transaction an id if it has none; we are about to write.
    let xid = unsafe { pg_sys::GetTopTransactionId() };
    if REGISTERED.get() == xid {
        return Ok(());
    }
    run_prepared(
        "INSERT INTO spine.audit_transactions (txid) VALUES (pg_current_xact_id()) \
         ON CONFLICT (txid) DO NOTHING",
        &[],
        &[],
    )
    .map_err(internal("audit: record"))?;
    REGISTERED.set(xid);
    Ok(())
}

/// Seals: appends every committed (and this transaction's own) pending audit row to
/// the chain, waiting for the head's lock. Returns how many rows it appended.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn audit_seal() -> Result<i64, ErrorReport> {
    Ok(seal(Wait::Block)?)
}

/// What the COMMIT trigger calls: seals when the head is free, otherwise leaves the
/// rows to the head's holder or the next sealer. Under REPEATABLE READ it leaves
/// them too (taking a head moved since the snapshot would fail the commit).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn audit_seal_at_commit() -> Result<i64, ErrorReport> {
    if crate::spi_ext::snapshot_per_transaction() {
        return Ok(0);
    }
    Ok(seal(Wait::Skip)?)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Block,
    Skip,
}

/// Most entries in one `audit.EntriesSealed` event: a sweep that seals thousands
/// of rows publishes them in parts, each under the event size limit (25 entries
/// of the largest details, 16 KiB, make ~400 KiB of the 512 KiB).
const ENTRIES_PER_EVENT: usize = 25;

/// Appends the committed pending rows to the chain, then publishes them whole
/// ([`publish_sealed`]); returns how many.
fn seal(wait: Wait) -> Result<i64, SpineError> {
    let sealed = append(wait)?;
    publish_sealed(&sealed)?;
    Ok(sealed.len() as i64)
}

/// One row as it joined the chain: everything its hash covers, and the hashes.
struct Sealed {
    row: (i64, Option<String>, String, String, Option<String>, String),
    seq: i64,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

/// `audit.EntriesSealed` events, in chain order, with every field the hash
/// covers in the form it was hashed (`details` as its jsonb text, `at_micros`
/// since 2000-01-01): a consumer outside the database can verify each link
/// (`spine_core::audit_chain::link`) from the first entry's `prev_hash`.
fn publish_sealed(sealed: &[Sealed]) -> Result<(), SpineError> {
    for part in sealed.chunks(ENTRIES_PER_EVENT) {
        let entries: Vec<serde_json::Value> = part
            .iter()
            .map(|e| {
                let (at_micros, actor, role, action, target, details) = &e.row;
                serde_json::json!({
                    "seq": e.seq,
                    "at": spine_core::time::rfc3339_micros(at_micros + spine_core::time::PG_EPOCH_UNIX_MICROS),
                    "at_micros": at_micros,
                    "actor": actor,
                    "role": role,
                    "action": action,
                    "target": target,
                    "details": details,
                    "hash": hex::encode(&e.hash),
                })
            })
            .collect();
        crate::events::emit_event(crate::events::NewEvent {
            event_type: "audit.EntriesSealed",
            data: JsonB(serde_json::json!({
                "first_seq": part[0].seq,
                "last_seq": part[part.len() - 1].seq,
                "prev_hash": hex::encode(&part[0].prev_hash),
                "entries": entries,
            })),
            subject: Some("audit/chain"),
            owner_id: None,
            correlation_id: None,
            causation_id: None,
        })?;
    }
    Ok(())
}

fn append(wait: Wait) -> Result<Vec<Sealed>, SpineError> {
    Spi::connect_mut(|client| {
        // The chain's tip, locked until this transaction ends. A waiting sealer
        // reads the tip its predecessor committed (READ COMMITTED), or fails with
        // a serialization error (REPEATABLE READ): never a fork.
        let head = match wait {
            Wait::Block => "SELECT seq, hash FROM spine.audit_head FOR UPDATE",
            Wait::Skip => "SELECT seq, hash FROM spine.audit_head FOR UPDATE SKIP LOCKED",
        };
        let mut tip = client
            .update(head, Some(1), &[])
            .map_err(internal("audit: seal"))?;
        if tip.is_empty() {
            let exists = client
                .update("SELECT 1 FROM spine.audit_head", Some(1), &[])
                .map_err(internal("audit: seal"))?;
            if !exists.is_empty() {
                // Skip: another sealer holds the head and will take our rows, or
                // the next one will.
                return Ok(Vec::new());
            }
            // The first seal of this database (CREATE EXTENSION makes no head row,
            // so a pg_dump restore brings its own without a collision).
            client
                .update(
                    "INSERT INTO spine.audit_head (seq, prev_hash, hash) \
                     SELECT 0, decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex') \
                     ON CONFLICT DO NOTHING",
                    None,
                    &[],
                )
                .map_err(internal("audit: seal"))?;
            tip = client
                .update(
                    "SELECT seq, hash FROM spine.audit_head FOR UPDATE",
                    Some(1),
                    &[],
                )
                .map_err(internal("audit: seal"))?;
        }
        let (seq, hash) = tip.first().get_two::<i64, Vec<u8>>().map_err(|_| {
            SpineError::Conflict(
                "the audit chain's head row was created concurrently; retry the transaction".into(),
            )
        })?;
        // Every pending row this snapshot sees: committed ones of any transaction,
        // and this transaction's own. Rows of transactions still running are left
        // for a later sealer.
        let pending = client
            .update(
                "SELECT id, at, actor::text, role, action, target, details::text \
                 FROM spine.audit_pending ORDER BY id",
                None,
                &[],
            )
            .map_err(internal("audit: seal"))?;
        let mut rows = Vec::with_capacity(pending.len());
        for row in pending {
            let get_text = |n: usize| -> Result<Option<String>, SpineError> {
                row.get::<String>(n).map_err(internal("audit: seal"))
            };
            let id: i64 = row
                .get(1)
                .map_err(internal("audit: seal"))?
                .unwrap_or_default();
            let at: Option<TimestampWithTimeZone> = row.get(2).map_err(internal("audit: seal"))?;
            rows.push((
                id,
                at.map(|t| t.into_inner()).unwrap_or_default(),
                get_text(3)?,
                get_text(4)?.unwrap_or_default(),
                get_text(5)?.unwrap_or_default(),
                get_text(6)?,
                get_text(7)?.unwrap_or_default(),
            ));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut seq = seq.unwrap_or_default();
        let mut prev = hash.unwrap_or_default();
        let (mut ids, mut seqs, mut prevs, mut hashes) = (vec![], vec![], vec![], vec![]);
        for (id, at_micros, actor, role, action, target, details) in &rows {
            seq += 1;
            let hash = chain::link(
                &prev,
                &chain::Row {
                    seq,
                    at_micros: *at_micros,
                    actor: actor.as_deref(),
                    role,
                    action,
                    target: target.as_deref(),
                    details,
                },
            )
            .to_vec();
            ids.push(*id);
            seqs.push(seq);
            prevs.push(std::mem::replace(&mut prev, hash.clone()));
            hashes.push(hash);
        }
        let last_prev = prevs.last().cloned().unwrap_or_default();
        let ids_sealed = ids.clone();
        let sealed: Vec<Sealed> = rows
            .into_iter()
            .zip(seqs.iter().zip(prevs.iter().zip(&hashes)))
            .map(
                |((_, at, actor, role, action, target, details), (seq, (prev, hash)))| Sealed {
                    row: (at, actor, role, action, target, details),
                    seq: *seq,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                },
            )
            .collect();
        client
            .update(
                "INSERT INTO spine.audit_log (seq, at, actor, role, action, target, details, prev_hash, hash) \
                 SELECT s.seq, p.at, p.actor, p.role, p.action, p.target, p.details, s.prev, s.hash \
                   FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[]) AS s(id, seq, prev, hash) \
                   JOIN spine.audit_pending p ON p.id = s.id \
                  ORDER BY s.seq",
                None,
                &[ids.into(), seqs.into(), prevs.into(), hashes.into()],
            )
            .map_err(internal("audit: seal"))?;
        client
            .update(
                "DELETE FROM spine.audit_pending WHERE id = ANY ($1)",
                None,
                &[ids_sealed.into()],
            )
            .map_err(internal("audit: seal"))?;
        client
            .update(
                "UPDATE spine.audit_head SET seq = $1, prev_hash = $2, hash = $3",
                None,
                &[seq.into(), last_prev.into(), prev.into()],
            )
            .map_err(internal("audit: seal"))?;
        Ok(sealed)
    })
}

/// Records a row for the audit log in the current transaction (for SQL callers:
/// service_role and Spine's own functions); it is appended to the chain at COMMIT.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn audit(
    action: Option<&str>,
    target: default!(Option<&str>, "NULL"),
    details: default!(Option<JsonB>, "'{}'"),
) -> Result<(), ErrorReport> {
    let action = action.ok_or(SpineError::NullArgument("action"))?;
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
    let internal = internal("audit_verify");
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

    /// Sealing (what COMMIT runs) appends the transaction's rows with consecutive
    /// seqs after the head, and verify passes over the result.
    #[pg_test]
    fn seal_appends_a_verifiable_chain() {
        let head = Spi::get_one::<i64>("SELECT coalesce((SELECT seq FROM spine.audit_head), 0)")
            .unwrap()
            .unwrap();
        Spi::run("SELECT spine.audit('test.happened', 'x', '{\"n\": 1}')").unwrap();
        Spi::run("SELECT spine.audit('test.happened', NULL, '{\"n\": 2}')").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT spine.audit_seal()").unwrap(),
            Some(2)
        );
        let seqs = Spi::get_one::<String>(
            "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM spine.audit_log WHERE action = 'test.happened'",
        )
        .unwrap();
        assert_eq!(seqs, Some(format!("{},{}", head + 1, head + 2)));
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM spine.audit_pending").unwrap(),
            Some(0)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT spine.audit_verify()").unwrap(),
            None
        );
    }

    /// Sealed rows are published whole: an `audit.EntriesSealed` event carries
    /// what each hash covers, and relinking the entries from `prev_hash`
    /// reproduces every hash (as a consumer outside the database does).
    #[pg_test]
    fn sealed_entries_are_published_whole_and_verify() {
        Spi::run("SELECT spine.audit('test.published', 'x', '{\"b\": [1, 2], \"a\": \"é\"}')")
            .unwrap();
        Spi::run("SELECT spine.audit('test.published', NULL)").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT spine.audit_seal()").unwrap(),
            Some(2)
        );
        let data = Spi::get_one::<pgrx::JsonB>(
            "SELECT data FROM spine.events WHERE type = 'audit.EntriesSealed' ORDER BY seq DESC LIMIT 1",
        )
        .unwrap()
        .unwrap()
        .0;
        assert_eq!(data["entries"].as_array().unwrap().len(), 2, "{data}");
        let prev = hex::decode(data["prev_hash"].as_str().unwrap()).unwrap();
        let last = spine_core::audit_chain::relink(&prev, &data["entries"]).unwrap();
        let head = Spi::get_one::<Vec<u8>>("SELECT hash FROM spine.audit_head").unwrap();
        assert_eq!(head, Some(last.to_vec()));
    }

    /// A bad action name is refused with 22023.
    #[pg_test(
        error = "invalid value for audit action: \"Bad\" must be lowercase dotted words such as consent.granted (at most 200 bytes)"
    )]
    fn bad_action_is_refused() {
        Spi::run("SELECT spine.audit('Bad')").unwrap();
    }
}
