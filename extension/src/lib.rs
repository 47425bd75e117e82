//! The `spine` extension: Spine's in-database half.
//!
//! - [`audit`]: the append-only, hash-chained audit log.
//! - [`caller`]: facts about the role a request acts as (privilege checks).
//! - [`entities`]: the unified entity model, identity keys and edges.
//! - [`etl`]: sources, mappings and `spine.ingest` from raw connector records.
//! - [`functions`]: deployed edge function sources (`spine.deploy_function`).
//! - [`gucs`]: every `spine.*` setting, registered in `_PG_init`.
//! - [`error`]: the SQLSTATE mapping every domain's errors go through.
//! - [`events`]: `spine.emit()` and the transactional outbox.
//! - [`jobs`]: retry backoff and validation for the job queue (`sql/jobs.sql`).
//! - [`meta`]: `spine.version()` and other facts about the installed extension.
//! - [`policy`]: plugin manifests, owners' consents, `spine.authorize`.
//! - [`rules`]: JsonLogic rules evaluated on every event, their actions and firings.
//! - [`vault`]: the Supabase-Vault-compatible secret store and key rotation.
//! - [`webhooks`]: database webhooks (`spine.create_webhook`), delivered by the worker.
//! - [`search`]: Meilisearch tenant tokens (`spine.search_key()`).
//! - [`spi_ext`]: small helpers over SPI (optional rows, kept plans).
//!
//! Pure logic and the contracts shared with the worker and the function host
//! (names, event types, the envelope, manifests, JsonLogic, mappings) live in
//! the `spine-core` crate.
//!
//! Modules depend on each other in one direction, in the layers that
//! `cargo xtask layers` checks (xtask/src/layers.rs); `_PG_init` wires the one
//! upward call, events → rules, as a listener.
//!
//! SQL objects (tables, views, policies, grants) live in `sql/*.sql` and in
//! `supabase/compat.sql`, loaded in the order declared in [`schema`].

// `#[pg_extern]` functions return `Result<_, ErrorReport>` so pgrx raises the error
// with its SQLSTATE. ErrorReport is large, but it only exists on the failing path
// at the SQL boundary, once per call: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use pgrx::prelude::*;

pub mod audit;
pub mod caller;
pub mod contracts;
pub mod entities;
pub mod error;
pub mod etl;
pub mod events;
pub mod functions;
pub mod gucs;
pub mod invalidation;
pub mod jobs;
pub mod meta;
pub mod policy;
pub mod realtime;
pub mod rules;
mod schema;
pub mod search;
pub mod spi_ext;
pub mod vault;
pub mod webhooks;

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
extern "C-unwind" fn _PG_init() {
    gucs::init();
    invalidation::register();
    events::listener::set(rules::engine::on_emitted);
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// `spine.version()` reports the version the crate was built as.
    #[pg_test]
    fn version_matches_crate() {
        let v = Spi::get_one::<String>("SELECT spine.version()").unwrap();
        assert_eq!(v.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }

    /// `auth.uid()` reads `sub` from claims set the way PostgREST sets them.
    #[pg_test]
    fn auth_uid_reads_request_jwt_claims() {
        Spi::run(
            "SELECT set_config('request.jwt.claims', \
             '{\"sub\":\"6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11\",\"role\":\"authenticated\"}', true)",
        )
        .unwrap();
        let uid = Spi::get_one::<String>("SELECT auth.uid()::text").unwrap();
        assert_eq!(uid.as_deref(), Some("6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11"));
        let role = Spi::get_one::<String>("SELECT auth.role()").unwrap();
        assert_eq!(role.as_deref(), Some("authenticated"));
    }

    /// Without claims there is no user: `auth.uid()` is NULL, never an error.
    #[pg_test]
    fn auth_uid_is_null_without_claims() {
        let uid = Spi::get_one::<String>("SELECT auth.uid()::text").unwrap();
        assert_eq!(uid, None);
    }

    /// The three PostgREST roles exist, cannot log in, and only service_role bypasses RLS.
    #[pg_test]
    fn supabase_roles_exist() {
        let rows = Spi::get_one::<String>(
            "SELECT string_agg(rolname || ':' || rolcanlogin || ':' || rolbypassrls, ',' ORDER BY rolname) \
             FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role')",
        )
        .unwrap();
        assert_eq!(
            rows.as_deref(),
            Some("anon:false:false,authenticated:false:false,service_role:false:true")
        );
    }

    /// A domain error reaches SQL with its SQLSTATE, not the generic XX000.
    #[pg_test(error = "invalid value for spine.notify_channel: must not be empty")]
    fn errors_carry_their_sqlstate() {
        Spi::run("SET spine.notify_channel = ''").unwrap();
        Spi::run("SELECT spine.settings()").unwrap();
    }
}

/// Required by `cargo pgrx test`: one-off setup and postgresql.conf for the test cluster.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// The test cluster's vault key: a fixed test-only key in a file the `postgres`
    /// user can read (never a key for real data).
    ///
    /// pgrx calls this for every test, while other tests already run and their
    /// backends read the file: it is written only when its content differs, and
    /// then whole (a new file renamed over it). Truncating it in place let a
    /// backend read it empty ("it holds no key") now and then.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        let path = std::env::temp_dir().join("spine-pgtest-vault.key");
        let key = format!("# test key, not secret\n1:{}\n", "5a".repeat(32));
        if std::fs::read_to_string(&path).ok().as_deref() != Some(key.as_str()) {
            // One name per call: tests run on several threads of this process.
            static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let fresh = path.with_extension(format!("key.{}.{call}", std::process::id()));
            std::fs::write(&fresh, &key).expect("write the test vault key");
            std::fs::rename(&fresh, &path).expect("put the test vault key in place");
        }
        let conf = format!("spine.vault_key_file = '{}'", path.display());
        vec![Box::leak(conf.into_boxed_str())]
    }
}
