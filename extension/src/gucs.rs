//! Every `spine.*` setting: declared here with its documentation, registered in
//! `_PG_init`, and read through a typed accessor that validates it.

use crate::error::SpineError;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// `spine.notify_channel`: the LISTEN/NOTIFY channel that wakes outbox consumers.
/// One notification per transaction that emitted events; it carries no data (the
/// consumer reads the outbox), so a lost notification only delays, never loses.
pub static NOTIFY_CHANNEL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"spine_events"));

/// `spine.jobs_channel`: the LISTEN/NOTIFY channel that wakes idle job runners.
/// Enqueues notify it after commit with the queue's name as payload, once per
/// transaction and queue; runners also poll, so a lost notification only delays.
pub static JOBS_CHANNEL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"spine_jobs"));

/// `spine.event_retention`: how long delivered events stay in `spine.events` before
/// `spine.purge_events()` (scheduled by pg_cron) deletes them. An interval, e.g. `3 days`.
/// Set it for the database (`ALTER DATABASE … SET`) so the pg_cron job sees it.
pub static EVENT_RETENTION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"7 days"));

/// `spine.event_partition_interval`: the time range each partition of
/// `spine.events` (and `spine.event_commits`) covers. `spine.purge_events()` makes
/// partitions four ranges ahead and drops whole ones once delivered and past
/// retention. Days, hours, minutes or seconds; keep it longer than the pg_cron
/// period of `spine-purge-events` (15 minutes).
pub static EVENT_PARTITION_INTERVAL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1 day"));

/// `spine.job_archive_partition_interval`: the time range each partition of
/// `spine.jobs_archive` covers; `spine.jobs_maintenance()` makes them ahead and
/// drops whole ones past the longest queue retention.
pub static JOB_ARCHIVE_PARTITION_INTERVAL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1 day"));

/// `spine.event_commit_registered`: the transaction that has registered its row
/// in `spine.event_commits` (set LOCAL by the register trigger, so it goes with a
/// rolled-back savepoint, as the row does). It replaces a lookup in the
/// partitioned table per INSERT statement: 20,000 single-event emits in one
/// transaction took a median 490 ms with the lookup and 355 ms with this
/// (interleaved, 3 × 5 rounds, release build, 2026-12-07); 368 ms before
/// partitioning (an ON CONFLICT insert, measured separately). Superuser-only, so
/// a user cannot skip their transaction's registration (and with it its
/// delivery).
pub static EVENT_COMMIT_REGISTERED: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

/// `spine.vault_key_file`: path of the file holding the vault's root keys
/// (`version:64 hex digits` per line). Set in postgresql.conf; superuser-only, and
/// hidden from other roles. Read by the backend, never exposed to SQL.
pub static VAULT_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `spine.vault_key_command`: a shell command that prints the keys in the key
/// file's format (for a KMS or secret manager), used when no key file is set.
pub static VAULT_KEY_COMMAND: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

/// `spine.rules_max_depth`: how often one rule may fire along one causal chain
/// (an event caused by its own actions, directly or through other rules, jobs or
/// functions that pass the causation id on). 1 means a rule never fires again
/// because of itself. Superuser-only: a user must not lift the guard.
pub static RULES_MAX_DEPTH: GucSetting<i32> = GucSetting::<i32>::new(1);

/// `spine.rules_max_chain_firings`: how many firings one chain of events (one
/// correlation id) may have in all; bounds fan-out. Superuser-only.
pub static RULES_MAX_CHAIN_FIRINGS: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `spine.causation_id`: the event this transaction's work descends from. Events
/// written without a cause of their own (entity writes, ingest, `spine.emit`
/// without `causation_id`, row changes) take it as their cause and its
/// correlation id, so a chain followed through a job or a function stays one
/// chain and the rules' loop guard sees it. The function host sets it for the
/// database calls of a function run by a job; anyone may set it for their own
/// transaction (`SET LOCAL`), which can only attach their events to a chain of
/// their own (see `events::correlation_of`).
pub static CAUSATION_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `spine.correlation_id`: the chain this transaction's work belongs to when its
/// cause is not an event in the outbox (a NATS request a worker serves: the
/// request is the cause, and its chain the correlation). Events written without
/// a correlation id of their own take it. Anyone may set it: `spine.emit` takes
/// any correlation id as an argument anyway.
pub static CORRELATION_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `spine.plugin`: the plugin this transaction acts for (set by the function host
/// around a function's `ctx.db` calls). While it is set, reading and writing
/// entities needs the plugin's `entities.read` / `entities.write` permission on
/// the entity's kind (manifest and the user's consent, see `policy::allows_kind`).
/// Setting it only ever narrows what a session may do.
pub static PLUGIN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `spine.max_schedules_per_user`: how many schedules one user may own
/// (`spine.schedule` called as `authenticated`). Superuser-only.
pub static MAX_SCHEDULES_PER_USER: GucSetting<i32> = GucSetting::<i32>::new(20);

pub fn init() {
    GucRegistry::define_int_guc(
        c"spine.max_schedules_per_user",
        c"How many schedules one user may own.",
        c"service_role's schedules (system ones, or made for a user) are not counted against it.",
        &MAX_SCHEDULES_PER_USER,
        0,
        100_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"spine.causation_id",
        c"The event this transaction's work descends from (cause of events written without one).",
        c"Set by the function host for a job's function; SET LOCAL it to chain your own work.",
        &CAUSATION_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"spine.correlation_id",
        c"The chain this transaction's work belongs to (correlation id of events written without one).",
        c"Set by the worker while it serves a NATS request; the request is then spine.causation_id.",
        &CORRELATION_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"spine.plugin",
        c"The plugin this transaction acts for; entity access then needs its entities.read/write permission.",
        c"Set by the function host around a function's database calls.",
        &PLUGIN,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"spine.rules_max_depth",
        c"How often one rule may fire within one causal chain of events (loop guard).",
        c"1: a rule never fires again on events its own actions caused.",
        &RULES_MAX_DEPTH,
        1,
        16,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"spine.rules_max_chain_firings",
        c"How many rule firings one chain of events (one correlation id) may have in all.",
        c"Bounds fan-out: rules whose actions emit several events multiply without repeating.",
        &RULES_MAX_CHAIN_FIRINGS,
        1,
        100_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"spine.vault_key_file",
        c"File holding the vault's root keys (version:hex per line).",
        c"Keys never enter the database; the newest version encrypts, older ones decrypt until rotated away.",
        &VAULT_KEY_FILE,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"spine.vault_key_command",
        c"Shell command printing the vault's root keys, used when spine.vault_key_file is not set.",
        c"Output format as the key file: version:64 hex digits per line.",
        &VAULT_KEY_COMMAND,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"spine.event_retention",
        c"How long delivered events are kept before spine.purge_events() deletes them.",
        c"An interval such as '7 days'. Events not yet delivered to every sink are never purged.",
        &EVENT_RETENTION,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"spine.event_partition_interval",
        c"Time range of each partition of spine.events, made ahead by spine.purge_events().",
        c"An interval in days, hours, minutes or seconds, such as '1 day'. Retention drops whole partitions.",
        &EVENT_PARTITION_INTERVAL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"spine.job_archive_partition_interval",
        c"Time range of each partition of spine.jobs_archive, made ahead by spine.jobs_maintenance().",
        c"An interval in days, hours, minutes or seconds, such as '1 day'. Retention drops whole partitions.",
        &JOB_ARCHIVE_PARTITION_INTERVAL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"spine.event_commit_registered",
        c"Internal: the transaction that registered its row in spine.event_commits.",
        c"Set by spine.register_event_transaction(); not a setting to change.",
        &EVENT_COMMIT_REGISTERED,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_string_guc(
        c"spine.notify_channel",
        c"LISTEN/NOTIFY channel that wakes Spine's outbox consumers.",
        c"Notifications carry no payload; consumers read spine.events after their cursor.",
        &NOTIFY_CHANNEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"spine.jobs_channel",
        c"LISTEN/NOTIFY channel that wakes Spine's idle job runners.",
        c"The payload is the queue's name; runners also poll, so a lost notification only delays.",
        &JOBS_CHANNEL,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// The outbox's notify channel, validated ([`channel`]).
pub fn notify_channel() -> Result<String, SpineError> {
    channel(&NOTIFY_CHANNEL, "spine.notify_channel")
}

/// The job runners' notify channel, validated ([`channel`]).
pub fn jobs_channel() -> Result<String, SpineError> {
    channel(&JOBS_CHANNEL, "spine.jobs_channel")
}

/// A channel setting, validated: a channel name is an identifier and cannot be empty.
fn channel(
    setting: &GucSetting<Option<CString>>,
    name: &'static str,
) -> Result<String, SpineError> {
    let value = setting
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    if value.is_empty() {
        return Err(SpineError::InvalidParameter {
            name,
            reason: "must not be empty".into(),
        });
    }
    if value.len() >= 64 {
        return Err(SpineError::InvalidParameter {
            name,
            reason: format!("{} bytes is longer than an identifier (63)", value.len()),
        });
    }
    Ok(value)
}

fn non_empty(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .map(|c| c.to_string_lossy().trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The vault key file, when set.
pub fn vault_key_file() -> Option<String> {
    non_empty(&VAULT_KEY_FILE)
}

/// The vault key command, when set.
pub fn vault_key_command() -> Option<String> {
    non_empty(&VAULT_KEY_COMMAND)
}

/// The loop guard's depth.
pub fn rules_max_depth() -> usize {
    RULES_MAX_DEPTH.get().max(1) as usize
}

/// The loop guard's cap on a chain's firings.
pub fn rules_max_chain_firings() -> usize {
    RULES_MAX_CHAIN_FIRINGS.get().max(1) as usize
}

/// The ambient cause ([`CAUSATION_ID`]), when set; 22023 when it is not a uuid.
pub fn causation_id() -> Result<Option<pgrx::Uuid>, SpineError> {
    uuid_guc(&CAUSATION_ID, "spine.causation_id")
}

/// The ambient chain ([`CORRELATION_ID`]), when set; 22023 when it is not a uuid.
pub fn correlation_id() -> Result<Option<pgrx::Uuid>, SpineError> {
    uuid_guc(&CORRELATION_ID, "spine.correlation_id")
}

fn uuid_guc(
    setting: &GucSetting<Option<CString>>,
    name: &'static str,
) -> Result<Option<pgrx::Uuid>, SpineError> {
    let Some(text) = non_empty(setting) else {
        return Ok(None);
    };
    crate::caller::pg_uuid(&text)
        .map(|b| Some(pgrx::Uuid::from_bytes(b)))
        .ok_or_else(|| SpineError::InvalidParameter {
            name,
            reason: format!("\"{text}\" is not a uuid"),
        })
}

/// The plugin this transaction acts for ([`PLUGIN`]), when set.
pub fn acting_plugin() -> Option<String> {
    non_empty(&PLUGIN)
}
