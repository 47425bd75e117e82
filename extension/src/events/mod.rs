//! Events: `spine.emit()` writes an immutable event into the transactional outbox
//! (`spine.events`, see `sql/events.sql` for ordering and delivery), in the
//! caller's transaction. Other domains emit through [`emit_event`].

mod emitted;
pub mod listener;

pub use emitted::Emitted;

use crate::error::SpineError;
use crate::gucs;
use crate::spi_ext::{one_prepared, run_prepared};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::{TEXTARRAYOID, TEXTOID, TIMESTAMPTZOID, UUIDARRAYOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use spine_core::event_type;

/// Longest accepted subject.
const MAX_SUBJECT_LEN: usize = 1024;

/// Event domains only Spine itself (and service_role) may emit: consumers trust
/// `data.EntityCreated` or `rules.RuleFired` to come from Spine, not from a user.
pub const RESERVED_DOMAINS: &[&str] = &[
    "audit",
    "connector",
    "data",
    "jobs",
    "policy",
    "realtime",
    "rules",
    "spine",
    "vault",
];

/// Largest `data` (as JSON text). The relay publishes each event as one NATS
/// message (1 MiB by default, with the envelope around it): a larger event could
/// never be delivered and would stop its sink.
pub const MAX_DATA_BYTES: usize = 512 * 1024;

/// An event to write; ids and defaults are filled in by [`emit_event`].
pub struct NewEvent<'a> {
    pub event_type: &'a str,
    pub data: JsonB,
    pub subject: Option<&'a str>,
    pub owner_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
}

/// Validates and inserts an event; returns its id (UUIDv7, time-ordered).
///
/// Without a correlation id the event inherits its cause's correlation id, or, when
/// it has no cause, starts a new chain whose correlation id is its own id. An
/// event with neither takes the transaction's cause (`spine.causation_id`) when
/// one is set.
pub fn emit_event(event: NewEvent<'_>) -> Result<Uuid, SpineError> {
    Ok(emit_events(std::slice::from_ref(&event))?[0])
}

/// An event checked and given its ids, ready for the INSERT.
struct Checked {
    id: Uuid,
    data_text: String,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
}

/// The transaction's cause and chain ([`gucs::causation_id`],
/// [`gucs::correlation_id`]), taken by events that name neither of their own.
#[derive(Clone, Copy)]
struct Ambient {
    cause: Option<Uuid>,
    chain: Option<Uuid>,
}

fn check(event: &NewEvent<'_>, ambient: Ambient) -> Result<Checked, SpineError> {
    event_type::validate(event.event_type).map_err(|reason| SpineError::InvalidParameter {
        name: "type",
        reason: format!("\"{}\" {reason}", event.event_type),
    })?;
    if let Some(subject) = event.subject {
        if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN {
            return Err(SpineError::InvalidParameter {
                name: "subject",
                reason: format!("must be 1 to {MAX_SUBJECT_LEN} bytes, or NULL"),
            });
        }
    }
    crate::contracts::check_event(event.event_type, &event.data.0)?;
    // Serialised once: measured here, and parsed by the INSERT.
    let data_text = serde_json::to_string(&event.data.0).map_err(|e| SpineError::Internal {
        context: "emit: data",
        message: e.to_string(),
    })?;
    if data_text.len() > MAX_DATA_BYTES {
        return Err(SpineError::TooLarge {
            what: "event data",
            actual: data_text.len(),
            limit: MAX_DATA_BYTES,
        });
    }
    let id = Uuid::from_bytes(*uuid::Uuid::now_v7().as_bytes());
    let own = event.correlation_id.is_some() || event.causation_id.is_some();
    let causation_id = match own {
        false => ambient.cause,
        true => event.causation_id,
    };
    // A set chain wins over the cause's: the cause may be no event of the outbox
    // (a NATS request), whose chain only the setter knows.
    let chain = (!own).then_some(ambient.chain).flatten();
    let correlation_id = match (event.correlation_id.or(chain), causation_id) {
        (Some(c), _) => c,
        (None, Some(cause)) => correlation_of(cause, event.owner_id)?.unwrap_or(id),
        (None, None) => id,
    };
    Ok(Checked {
        id,
        data_text,
        correlation_id,
        causation_id,
    })
}

/// Validates and inserts events in one statement, in the order given (their `seq`
/// follows it), then hands them to the [`listener`] (the rules engine, which runs
/// the rules that listen to them); returns their ids. A batch
/// of entity writes (ingest) pays one INSERT and one commit registration instead of
/// one per event. Nothing is written when one of them is invalid.
pub fn emit_events(events: &[NewEvent<'_>]) -> Result<Vec<Uuid>, SpineError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // A bad channel would make the deferred NOTIFY fail the caller's COMMIT; fail now.
    gucs::notify_channel()?;
    let ambient = Ambient {
        cause: gucs::causation_id()?,
        chain: gucs::correlation_id()?,
    };
    let checked = events
        .iter()
        .map(|e| check(e, ambient))
        .collect::<Result<Vec<_>, _>>()?;
    // SAFETY: reads the backend's clock (what clock_timestamp() returns).
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let occurred_at = TimestampWithTimeZone::try_from(now).map_err(|e| SpineError::Internal {
        context: "emit: clock",
        message: format!("{e:?}"),
    })?;
    let ids: Vec<Uuid> = checked.iter().map(|c| c.id).collect();
    write(events, &checked, occurred_at)?;
    // The listener reads the data after the insert took it.
    let occurred_at = now + spine_core::time::PG_EPOCH_UNIX_MICROS;
    let emitted: Vec<Emitted<'_>> = events
        .iter()
        .zip(&checked)
        .map(|(event, c)| Emitted {
            id: c.id,
            event_type: event.event_type,
            subject: event.subject,
            owner_id: event.owner_id,
            data: &event.data.0,
            correlation_id: c.correlation_id,
            causation_id: c.causation_id,
            occurred_at,
        })
        .collect();
    listener::notify(&emitted)?;
    Ok(ids)
}

/// One INSERT for all of them. A single event (every `spine.emit`) takes the
/// plain VALUES form: building and unnesting arrays costs more than it saves there.
fn write(
    events: &[NewEvent<'_>],
    checked: &[Checked],
    occurred_at: TimestampWithTimeZone,
) -> Result<(), SpineError> {
    let failed = |e: pgrx::spi::SpiError| SpineError::Internal {
        context: "emit",
        message: e.to_string(),
    };
    if let ([event], [c]) = (events, checked) {
        return run_prepared(
            "INSERT INTO spine.events \
             (id, type, subject, owner_id, data, correlation_id, causation_id, occurred_at) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)",
            &[
                UUIDOID,
                TEXTOID,
                TEXTOID,
                UUIDOID,
                TEXTOID,
                UUIDOID,
                UUIDOID,
                TIMESTAMPTZOID,
            ],
            &[
                c.id.into(),
                event.event_type.into(),
                event.subject.into(),
                event.owner_id.into(),
                c.data_text.as_str().into(),
                c.correlation_id.into(),
                c.causation_id.into(),
                occurred_at.into(),
            ],
        )
        .map_err(failed);
    }
    run_prepared(
        "INSERT INTO spine.events \
         (id, type, subject, owner_id, data, correlation_id, causation_id, occurred_at) \
         SELECT i, t, s, o, d::jsonb, c, k, $8 \
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::uuid[], $7::uuid[]) \
                WITH ORDINALITY AS u(i, t, s, o, d, c, k, n) \
          ORDER BY n",
        &[
            UUIDARRAYOID,
            TEXTARRAYOID,
            TEXTARRAYOID,
            UUIDARRAYOID,
            TEXTARRAYOID,
            UUIDARRAYOID,
            UUIDARRAYOID,
            TIMESTAMPTZOID,
        ],
        &[
            checked.iter().map(|c| c.id).collect::<Vec<_>>().into(),
            events.iter().map(|e| e.event_type).collect::<Vec<_>>().into(),
            events.iter().map(|e| e.subject).collect::<Vec<_>>().into(),
            events.iter().map(|e| e.owner_id).collect::<Vec<_>>().into(),
            checked
                .iter()
                .map(|c| c.data_text.as_str())
                .collect::<Vec<_>>()
                .into(),
            checked
                .iter()
                .map(|c| c.correlation_id)
                .collect::<Vec<_>>()
                .into(),
            checked
                .iter()
                .map(|c| c.causation_id)
                .collect::<Vec<_>>()
                .into(),
            occurred_at.into(),
        ],
    )
    .map_err(failed)
}

/// The correlation id of an earlier event, if it is (still) in the outbox and the
/// emitter may see it: a user only their own events (emit runs as the extension's
/// owner, so RLS does not do this here), a system caller (no owner) any.
fn correlation_of(event_id: Uuid, owner: Option<Uuid>) -> Result<Option<Uuid>, SpineError> {
    // A cause that is gone (purged) or not the emitter's starts a new chain.
    one_prepared::<Uuid>(
        "SELECT correlation_id FROM spine.events \
         WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2)",
        &[UUIDOID, UUIDOID],
        &[event_id.into(), owner.into()],
    )
    .map_err(|e| SpineError::Internal {
        context: "emit: causation lookup",
        message: e.to_string(),
    })
}

/// Emits an event in the caller's transaction and returns its id. The owner is the
/// calling user (`auth.uid()`); it is delivered only if the transaction commits.
///
/// The SQL is written out because the argument is called `type`, a Rust keyword.
#[pg_extern(sql = r#"
CREATE FUNCTION spine.emit(
    "type" text,
    data jsonb,
    subject text DEFAULT NULL,
    correlation_id uuid DEFAULT NULL,
    causation_id uuid DEFAULT NULL
) RETURNS uuid
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, spine, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'emit_wrapper';
"#)]
fn emit(
    event_type: Option<&str>,
    data: Option<JsonB>,
    subject: default!(Option<&str>, "NULL"),
    correlation_id: default!(Option<Uuid>, "NULL"),
    causation_id: default!(Option<Uuid>, "NULL"),
) -> Result<Uuid, ErrorReport> {
    let event_type = event_type.ok_or_else(|| null_argument("type"))?;
    let data = data.ok_or_else(|| null_argument("data"))?;
    let domain = event_type.split('.').next().unwrap_or_default();
    if RESERVED_DOMAINS.contains(&domain) && !crate::caller::caller_is_privileged() {
        return Err(SpineError::PermissionDenied(format!(
            "event domain \"{domain}\" is reserved for Spine; emit in a domain of your own"
        ))
        .into());
    }
    Ok(emit_event(NewEvent {
        event_type,
        data,
        subject,
        owner_id: crate::caller::request_user()?,
        correlation_id,
        causation_id,
    })?)
}

fn null_argument(name: &'static str) -> ErrorReport {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("{name} must not be NULL"),
        "spine.emit",
    )
    .set_hint(if name == "data" {
        "Pass '{}'::jsonb for an event without data."
    } else {
        "Pass an event type such as 'data.EntityCreated'."
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// emit() writes one row with the given fields, owned by auth.uid().
    #[pg_test]
    fn emit_writes_the_event() {
        Spi::run(
            "SELECT set_config('request.jwt.claims', \
             '{\"sub\":\"6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11\"}', true)",
        )
        .unwrap();
        // Separate statements: a statement does not see rows its own functions insert.
        let id = Spi::get_one::<pgrx::Uuid>(
            "SELECT spine.emit('communication.CallStarted', '{\"from\":\"+4930\"}', 'call/1')",
        )
        .unwrap()
        .unwrap();
        let row = Spi::get_three_with_args::<String, String, String>(
            "SELECT type || ' ' || subject, owner_id::text, data->>'from' FROM spine.events WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(row.0.as_deref(), Some("communication.CallStarted call/1"));
        assert_eq!(
            row.1.as_deref(),
            Some("6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11")
        );
        assert_eq!(row.2.as_deref(), Some("+4930"));
    }

    /// An event caused by another inherits its correlation id.
    /// The envelope rules see carries the `source` the relay reads from the row:
    /// emit leaves it to the column default, which is spine-core's constant.
    #[pg_test]
    fn written_source_is_the_envelope_source() {
        let id = Spi::get_one::<pgrx::Uuid>("SELECT spine.emit('data.EntityCreated', '{}')")
            .unwrap()
            .unwrap();
        let source = Spi::get_one_with_args::<String>(
            "SELECT source FROM spine.events WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(source.as_deref(), Some(spine_core::envelope::SOURCE));
    }

    #[pg_test]
    fn causation_carries_correlation() {
        let first = Spi::get_one::<pgrx::Uuid>("SELECT spine.emit('data.EntityCreated', '{}')")
            .unwrap()
            .unwrap();
        let second = Spi::get_one_with_args::<pgrx::Uuid>(
            "SELECT spine.emit('rules.RuleFired', '{}', causation_id => $1)",
            &[first.into()],
        )
        .unwrap()
        .unwrap();
        let same = Spi::get_one_with_args::<bool>(
            "SELECT correlation_id = $2 AND causation_id = $2 FROM spine.events WHERE id = $1",
            &[second.into(), first.into()],
        )
        .unwrap();
        assert_eq!(same, Some(true));
    }

    /// A command-shaped type is refused with a message that says why.
    #[pg_test(
        error = "invalid value for type: \"data.CreateEntity\" name \"CreateEntity\" must be in the past tense (it is a fact, not a command): \"Entity\" is not, e.g. OrderPlaced, MessageSent"
    )]
    fn command_shaped_type_is_refused() {
        Spi::run("SELECT spine.emit('data.CreateEntity', '{}')").unwrap();
    }

    /// Emitting registers the transaction once, however many events it writes.
    #[pg_test]
    fn one_commit_row_per_transaction() {
        Spi::run("SELECT spine.emit('data.EntityCreated', '{}') FROM generate_series(1, 5)")
            .unwrap();
        Spi::run("SELECT spine.emit('data.EntityUpdated', '{}')").unwrap();
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM spine.event_commits WHERE txid = pg_current_xact_id()",
        )
        .unwrap();
        assert_eq!(n, Some(1));
    }

    /// purge_events deletes what every sink has passed and keeps the rest. The
    /// deferred commit stamp is fired early with SET CONSTRAINTS, as a commit would.
    #[pg_test]
    fn purge_deletes_only_delivered_events() {
        Spi::run("SELECT spine.emit('data.EntityCreated', '{}', 'old')").unwrap();
        Spi::run("SET CONSTRAINTS ALL IMMEDIATE").unwrap();
        // The whole test is one transaction, so now() predates the commit stamp.
        Spi::run("UPDATE spine.event_commits SET committed_at = now() - interval '1 hour'")
            .unwrap();
        Spi::run("SELECT spine.ensure_sink('relay', 'nats')").unwrap();
        let purged = Spi::get_one::<i64>("SELECT spine.purge_events('0 seconds')").unwrap();
        assert_eq!(purged, Some(0), "the sink has not delivered anything yet");
        Spi::run(
            "SELECT spine.advance_sink('relay', commit_seq + 1, 0, 1) FROM spine.event_commits",
        )
        .unwrap();
        let purged = Spi::get_one::<i64>("SELECT spine.purge_events('0 seconds')").unwrap();
        assert_eq!(purged, Some(1));
        let left = Spi::get_one::<i64>("SELECT count(*) FROM spine.events").unwrap();
        assert_eq!(left, Some(0));
    }
}
