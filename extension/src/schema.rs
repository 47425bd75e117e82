//! Order in which the SQL files become part of `CREATE EXTENSION spine`.
//! Rust functions (`#[pg_extern]`) are placed by pgrx between bootstrap and finalize.

use pgrx::prelude::*;

// Roles anon/authenticated/service_role and auth.uid()/role()/jwt(), created only
// where missing, so the extension works on plain Postgres and on Supabase alike.
extension_sql_file!(
    "../../supabase/compat.sql",
    name = "supabase_compat",
    bootstrap
);

// Time partitions of the outbox and the job archive: ranges made ahead, whole
// partitions dropped by retention.
extension_sql_file!(
    "../sql/partitions.sql",
    name = "partitions",
    requires = ["supabase_compat"]
);

// The outbox: events, commit order, sinks, retention.
extension_sql_file!(
    "../sql/events.sql",
    name = "events",
    requires = ["supabase_compat", "partitions"]
);

// The job queue. Its functions call the Rust helpers check_queue_name, check_cron
// and retry_backoff, which pgrx defines before this file.
extension_sql_file!(
    "../sql/jobs.sql",
    name = "jobs",
    requires = [
        "supabase_compat",
        "partitions",
        check_queue_name,
        check_cron,
        cached_table_changed,
        retry_backoff
    ]
);

// The audit log (append-only, hash-chained).
extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = ["supabase_compat"]
);

// Plugins and consents.
extension_sql_file!(
    "../sql/policy.sql",
    name = "policy",
    requires = ["supabase_compat", "audit"]
);

// The vault schema (unless supabase_vault's exists). Its view and functions call
// the Rust functions below, which pgrx must define first.
extension_sql_file!(
    "../sql/vault.sql",
    name = "vault",
    requires = [
        "supabase_compat",
        "audit",
        vault_decrypt,
        vault_create_secret,
        vault_update_secret
    ]
);

// Entities, identity keys, edges (and embeddings where pgvector is installed).
extension_sql_file!(
    "../sql/entities.sql",
    name = "entities",
    requires = ["supabase_compat", caller_is_privileged, plugin_may]
);

// Connector sources and raw records.
extension_sql_file!("../sql/etl.sql", name = "etl", requires = ["entities"]);

// Rules, state and firings.
extension_sql_file!(
    "../sql/rules.sql",
    name = "rules",
    requires = ["supabase_compat", "jobs", cached_table_changed]
);

// Edge function sources and database webhooks. spine.create_webhook wraps the
// Rust webhook_create, which pgrx defines first.
extension_sql_file!(
    "../sql/webhooks.sql",
    name = "webhooks",
    requires = ["policy", "jobs", webhook_create]
);

// Search: the Meilisearch URL and search key tenant tokens are signed with.
extension_sql_file!(
    "../sql/search.sql",
    name = "search",
    requires = ["supabase_compat"]
);

// Realtime: published tables' row changes and broadcasts, captured as events.
extension_sql_file!(
    "../sql/realtime.sql",
    name = "realtime",
    requires = ["events", caller_is_privileged, realtime_emit]
);

// Embeddings: which kinds, their text, and the `embed` jobs writes queue.
extension_sql_file!(
    "../sql/embeddings.sql",
    name = "embeddings",
    requires = ["entities", "jobs"]
);

// NATS service verbs served by SQL functions.
extension_sql_file!(
    "../sql/services.sql",
    name = "services",
    requires = ["supabase_compat"]
);

// JSON Schema contracts: named schemas and what they are bound to.
extension_sql_file!(
    "../sql/contracts.sql",
    name = "contracts",
    requires = ["supabase_compat", cached_table_changed]
);

// NATS ingress: keys of consumed messages (exactly once) and rejections.
extension_sql_file!(
    "../sql/ingress.sql",
    name = "ingress",
    requires = ["supabase_compat"]
);

// pg_net's SQL API (net.http_get/post/delete, net._http_response) on the durable
// `net` job queue, where the real pg_net is not installed.
extension_sql_file!("../sql/net.sql", name = "net", requires = ["jobs"]);

extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);
