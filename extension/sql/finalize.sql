-- Grants and comments applied after every object of the extension exists.

-- Extension tables are left out of pg_dump unless registered: without this a
-- logical backup would lose queued jobs, undelivered events and sink cursors.
-- Of partitioned tables, the default partitions: the partitions maintenance
-- makes later are not members of the extension, so pg_dump keeps them like any
-- table.
SELECT pg_catalog.pg_extension_config_dump('spine.events_default', '');
SELECT pg_catalog.pg_extension_config_dump('spine.event_commits_default', '');
SELECT pg_catalog.pg_extension_config_dump('spine.event_commit_seq', '');
SELECT pg_catalog.pg_extension_config_dump('spine.sinks', '');
SELECT pg_catalog.pg_extension_config_dump('spine.embedding_kinds', '');
SELECT pg_catalog.pg_extension_config_dump('spine.services', '');
SELECT pg_catalog.pg_extension_config_dump('spine.schemas', '');
SELECT pg_catalog.pg_extension_config_dump('spine.schema_bindings', '');
SELECT pg_catalog.pg_extension_config_dump('spine.ingress_log', '');
SELECT pg_catalog.pg_extension_config_dump('spine.realtime_tables', '');
SELECT pg_catalog.pg_extension_config_dump('spine.realtime_messages', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.realtime_messages', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('spine.queues', '');
SELECT pg_catalog.pg_extension_config_dump('spine.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('spine.jobs_archive_default', '');
SELECT pg_catalog.pg_extension_config_dump('spine.schedules', '');
SELECT pg_catalog.pg_extension_config_dump('spine.plugin_health', '');
SELECT pg_catalog.pg_extension_config_dump('spine.queue_rate_windows', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.schedules', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('spine.entities', '');
SELECT pg_catalog.pg_extension_config_dump('spine.entity_keys', '');
SELECT pg_catalog.pg_extension_config_dump('spine.edges', '');
SELECT pg_catalog.pg_extension_config_dump('spine.sources', '');
SELECT pg_catalog.pg_extension_config_dump('spine.raw_records', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.raw_records', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('spine.rules', '');
SELECT pg_catalog.pg_extension_config_dump('spine.state', '');
SELECT pg_catalog.pg_extension_config_dump('spine.rule_firings', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.rule_firings', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('spine.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('spine.audit_head', '');
SELECT pg_catalog.pg_extension_config_dump('spine.audit_anchors', '');
SELECT pg_catalog.pg_extension_config_dump('spine.audit_pending', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.audit_pending', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('spine.plugins', '');
SELECT pg_catalog.pg_extension_config_dump('spine.consents', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.consents', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('spine.functions', '');
SELECT pg_catalog.pg_extension_config_dump('spine.search_config', '');
SELECT pg_catalog.pg_extension_config_dump('spine.search_rejections', '');
SELECT pg_catalog.pg_extension_config_dump('spine.webhooks', '');
SELECT pg_catalog.pg_extension_config_dump('spine.webhook_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.webhook_deliveries', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.events', 'seq')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.jobs', 'id')::regclass, '');

COMMENT ON SCHEMA spine IS
    'Spine: entities, ETL, rules, policy and audit, jobs, outbox and vault.';

-- The schema is reachable by the PostgREST roles; what each role may do with each
-- object is granted per object, and rows are filtered by RLS.
GRANT USAGE ON SCHEMA spine TO anon, authenticated, service_role, spine_functions;

-- Functions are private unless granted: revoke the PUBLIC default, then grant the
-- read-only helpers back.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA spine FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spine.version() TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION spine.library_version() TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION spine.settings() TO authenticated, service_role;

GRANT EXECUTE ON FUNCTION spine.emit(text, jsonb, text, uuid, uuid) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION spine.events_after(bigint, bigint, integer) TO service_role;
GRANT EXECUTE ON FUNCTION
    spine.embed_kind(text, text[], boolean),
    spine.unembed_kind(text),
    spine.record_embedding(uuid, bigint, real[], text)
    TO service_role;
GRANT EXECUTE ON FUNCTION spine.embedding_text(text, jsonb) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION spine.expose_service(text, text, regprocedure), spine.unexpose_service(text, text)
    TO service_role;
GRANT EXECUTE ON FUNCTION
    spine.define_schema(text, jsonb, text),
    spine.drop_schema(text),
    spine.bind_schema(text, text, text, text),
    spine.unbind_schema(text, text, text)
    TO service_role;
GRANT EXECUTE ON FUNCTION spine.validate(text, jsonb), spine.schema_violations(text, jsonb)
    TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    spine.ingress_accept(text, text, bigint),
    spine.ingress_reject(text, text, bigint, text, text),
    spine.ingress_prune(interval)
    TO service_role;
GRANT EXECUTE ON FUNCTION
    spine.realtime_publish(regclass),
    spine.realtime_unpublish(regclass),
    spine.realtime_visibility(regclass, name),
    spine.realtime_policy_inputs(regclass, oid),
    spine.realtime_visible(regclass, jsonb, jsonb[]),
    spine.realtime_retained_from(),
    spine.realtime_channel_access(text, jsonb)
    TO service_role;
GRANT EXECUTE ON FUNCTION spine.realtime_topic() TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION spine.broadcast(text, text, jsonb, boolean) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION spine.ensure_sink(text, text, boolean) TO service_role;
GRANT EXECUTE ON FUNCTION spine.drop_sink(text) TO service_role;
GRANT EXECUTE ON FUNCTION spine.advance_sink(text, bigint, bigint, bigint) TO service_role;
GRANT EXECUTE ON FUNCTION spine.record_sink_error(text, text) TO service_role;
GRANT EXECUTE ON FUNCTION spine.purge_events(interval) TO service_role;
GRANT EXECUTE ON FUNCTION spine.partition_range(regclass) TO service_role;
GRANT EXECUTE ON FUNCTION spine.event_partitions() TO service_role;
GRANT EXECUTE ON FUNCTION spine.processes() TO service_role;
GRANT EXECUTE ON FUNCTION
    spine.enqueue(text, jsonb, spine.job_priority, timestamptz, text, integer),
    spine.enqueue_batch(text, jsonb[], spine.job_priority, timestamptz, integer),
    spine.cancel_job(bigint),
    spine.retry_job(bigint),
    spine.queue_stats(),
    spine.check_queue_name(text),
    spine.check_cron(text),
    spine.retry_backoff(bigint, integer),
    spine.caller_is_privileged()
    TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    spine.create_queue(text, integer, interval, boolean, integer, interval),
    spine.fetch_jobs(text[], text, integer, interval),
    spine.complete_jobs(bigint[], text),
    spine.fail_job(bigint, text, interval, text),
    spine.heartbeat(bigint[], interval, text),
    spine.release_jobs(bigint[], text),
    spine.redrive(text),
    spine.reclaim_expired_leases(text[]),
    spine.jobs_maintenance(),
    spine.snooze_job(bigint, timestamptz, text)
    TO service_role;
GRANT EXECUTE ON FUNCTION
    spine.enqueue_debounced(text, jsonb, text, interval, interval, spine.job_priority, integer)
    TO authenticated, service_role;
-- Users schedule for themselves (checked inside); pg_cron alone fires them.
GRANT EXECUTE ON FUNCTION
    spine.schedule(text, text, text, jsonb, spine.job_priority, uuid),
    spine.unschedule(text, uuid)
    TO authenticated, service_role;

-- Entities and ETL.
GRANT EXECUTE ON FUNCTION
    spine.upsert_entity(text, jsonb, uuid, uuid),
    spine.delete_entity(uuid, uuid),
    spine.add_edge(uuid, text, uuid, uuid),
    spine.save_source(text, jsonb, uuid),
    spine.ingest(text, jsonb, uuid),
    spine.reprocess(text, uuid),
    spine.rekey(text, uuid),
    spine.backfill(text, bigint, integer, uuid)
    TO authenticated, service_role;
COMMENT ON FUNCTION spine.upsert_entity(text, jsonb, uuid, uuid) IS
    'Creates an entity of the user, or replaces the data of one (by id); emits data.EntityCreated/Updated. Returns its id.';
COMMENT ON FUNCTION spine.delete_entity(uuid, uuid) IS 'Deletes an entity of the user (keys and edges too); emits data.EntityDeleted.';
COMMENT ON FUNCTION spine.add_edge(uuid, text, uuid, uuid) IS 'Relates two of the user''s entities.';
COMMENT ON FUNCTION spine.save_source(text, jsonb, uuid) IS
    'Creates or replaces a connector source with its mapping (validated here); returns the source''s entity id.';
COMMENT ON FUNCTION spine.ingest(text, jsonb, uuid) IS
    'Lands, maps and upserts raw records; returns {received, created, updated, unchanged, rejected, errors}.';
COMMENT ON FUNCTION spine.reprocess(text, uuid) IS 'Maps the rejected raw records of a source again.';
COMMENT ON FUNCTION spine.rekey(text, uuid) IS
    'Adds the identity keys today''s normalizers make from a source''s processed records to the entities they built.';
COMMENT ON FUNCTION spine.backfill(text, bigint, integer, uuid) IS
    'Maps a page of a source''s records (latest processed versions, raw id after `after`) again with its current mapping; returns ingest''s counts, last and done.';

-- Rules.
GRANT EXECUTE ON FUNCTION
    spine.save_rule(text, text, jsonb, jsonb, integer, boolean, uuid),
    spine.delete_rule(text, uuid),
    spine.set_state(text, jsonb),
    spine.get_state(text),
    spine.explain(uuid)
    TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION spine.replay_event(uuid) TO service_role;
COMMENT ON FUNCTION spine.save_rule(text, text, jsonb, jsonb, integer, boolean, uuid) IS
    'Creates or replaces (by name) a rule of the user: on_event, JsonLogic condition, actions; validated when saved. Returns its id.';
COMMENT ON FUNCTION spine.delete_rule(text, uuid) IS 'Deletes a rule of the user; its firings stay.';
COMMENT ON FUNCTION spine.set_state(text, jsonb) IS 'Sets (NULL: deletes) a key of the user''s state, which rules read as state.<key>.';
COMMENT ON FUNCTION spine.get_state(text) IS 'A key of the user''s state.';
COMMENT ON FUNCTION spine.explain(uuid) IS
    'For each rule of the event''s owner: considered, matches, fired, and why (not); the inputs its condition read.';
COMMENT ON FUNCTION spine.replay_event(uuid) IS
    'Evaluates the owner''s rules again on a stored event; rules that already fired for it do nothing.';

-- Edge functions and database webhooks (administrators: service_role).
GRANT EXECUTE ON FUNCTION
    spine.deploy_function(jsonb, text),
    spine.create_webhook(text, regclass, text[], jsonb, integer, integer),
    spine.webhook_create(text, oid, text[], jsonb, integer, integer),
    spine.drop_webhook(text),
    spine.rotate_webhook_secret(text, interval),
    spine.webhook_target(text),
    spine.record_webhook_delivery(text, bigint, integer, integer, boolean, text, text, integer),
    spine.webhook_maintenance()
    TO service_role;
GRANT EXECUTE ON FUNCTION spine.function_source(text) TO service_role, spine_functions;
COMMENT ON FUNCTION spine.deploy_function(jsonb, text) IS
    'Registers the plugin a manifest describes and stores its edge function module; returns the module''s SHA-256.';
COMMENT ON FUNCTION spine.function_source(text) IS 'A deployed edge function: module, SHA-256, manifest, enabled.';
COMMENT ON FUNCTION spine.drop_webhook(text) IS 'Removes a webhook (trigger, row, signing secrets); its delivery history stays.';
COMMENT ON FUNCTION spine.rotate_webhook_secret(text, interval) IS
    'Gives a webhook a new signing secret; the replaced one also signs webhook-signature for overlap. Returns the new secret''s vault id.';
COMMENT ON FUNCTION spine.webhook_target(text) IS 'Where the worker delivers a webhook, the key it signs with, and the replaced key while its overlap lasts.';
COMMENT ON FUNCTION spine.record_webhook_delivery(text, bigint, integer, integer, boolean, text, text, integer) IS
    'Records one delivery attempt of a webhook (called by the worker).';
COMMENT ON FUNCTION spine.webhook_maintenance() IS
    'Deletes delivery history past its webhook queue''s retention (7 days for dropped webhooks); pg_cron runs it hourly.';

-- Search.
GRANT EXECUTE ON FUNCTION spine.configure_search(text, uuid, text) TO service_role;
GRANT EXECUTE ON FUNCTION spine.search_key(interval) TO authenticated;
GRANT EXECUTE ON FUNCTION spine.record_search_rejection(text, uuid, text, text),
    spine.clear_search_rejections(text, uuid[]) TO service_role;
COMMENT ON FUNCTION spine.configure_search(text, uuid, text) IS
    'Registers the Meilisearch URL clients use and the search API key tenant tokens are signed with (the worker calls it).';
COMMENT ON FUNCTION spine.search_key(interval) IS
    'A Meilisearch tenant token for the calling user: {url, token, expires_at, indexes}; Meilisearch filters every spine_* index to owner_id = auth.uid().';

-- Trust: audit, policy, vault.
GRANT EXECUTE ON FUNCTION
    spine.audit(text, text, jsonb),
    spine.audit_verify(),
    spine.audit_seal(),
    spine.audit_anchor(),
    spine.audit_verify_anchor(bigint, bytea),
    spine.register_plugin(jsonb),
    spine.set_plugin_enabled(text, boolean),
    spine.rotate_vault_key(),
    spine.vault_key_versions(),
    spine.vault_secrets()
    TO service_role;
GRANT EXECUTE ON FUNCTION
    spine.grant_consent(text, text[], uuid),
    spine.revoke_consent(text, text[], uuid)
    TO authenticated, service_role;
-- The function host (spine_functions) asks for decisions and its plugin's secrets.
GRANT EXECUTE ON FUNCTION
    spine.authorize(text, text, text),
    spine.require(text, text, text),
    spine.plugin_secrets(text)
    TO service_role, spine_functions;
-- Users' own secrets (BYOK): names in, names out, never values out.
GRANT EXECUTE ON FUNCTION
    spine.set_my_secret(text, text),
    spine.delete_my_secret(text),
    spine.my_secrets()
    TO authenticated;
COMMENT ON FUNCTION spine.set_my_secret(text, text) IS
    'Stores or replaces one of the caller''s own secrets as <user id>/<name> in the vault (for plugins the user consents to read it); returns its vault id. Audited.';
COMMENT ON FUNCTION spine.delete_my_secret(text) IS 'Deletes one of the caller''s own secrets; false when there was none. Audited.';
COMMENT ON FUNCTION spine.my_secrets() IS 'Names of the caller''s own secrets (never values), with when each was stored and changed.';
-- The function hosts report per-plugin health.
GRANT EXECUTE ON FUNCTION
    spine.record_plugin_health(text, integer, integer, integer, double precision, integer, text, integer)
    TO service_role, spine_functions;
-- The worker records net requests' responses.
GRANT EXECUTE ON FUNCTION
    spine.net_record_response(bigint, integer, text, jsonb, text, boolean, text)
    TO service_role;
-- The entities RLS policy asks it as the querying user.
GRANT EXECUTE ON FUNCTION spine.plugin_may(text, text) TO authenticated, service_role, spine_functions;
COMMENT ON FUNCTION spine.plugin_may(text, text) IS
    'Whether the plugin this transaction acts for (spine.plugin) may entities.read / entities.write a kind for auth.uid(): manifest AND consent, audited once per transaction and kind; true when no plugin acts.';
-- What vault.decrypted_secrets calls for its readers.
GRANT EXECUTE ON FUNCTION spine.vault_decrypt(uuid, text, integer, bytea) TO service_role;

COMMENT ON FUNCTION spine.audit(text, text, jsonb) IS
    'Records a row (action, target, details) in the current transaction; it joins the audit chain at COMMIT.';
COMMENT ON FUNCTION spine.audit_verify() IS
    'Recomputes the audit hash chain; returns the seq of the first missing, altered or forged row, or NULL when intact.';
COMMENT ON FUNCTION spine.audit_anchor() IS
    'Publishes the audit chain''s head as an audit.HeadAnchored event (unless unchanged); returns the anchored seq.';
COMMENT ON FUNCTION spine.audit_verify_anchor(bigint, bytea) IS
    'Whether the log still has row seq with this hash (an anchor kept outside the database).';
COMMENT ON FUNCTION spine.audit_seal() IS
    'Appends every committed pending audit row to the chain (waits for the head); returns how many.';
COMMENT ON FUNCTION spine.audit_seal_at_commit() IS
    'What the COMMIT trigger runs: spine.audit_seal() unless the head is held (then the holder or the next sealer takes the rows).';
COMMENT ON FUNCTION spine.register_plugin(jsonb) IS
    'Validates a plugin manifest and registers the plugin (or a new version of it). Audited.';
COMMENT ON FUNCTION spine.set_plugin_enabled(text, boolean) IS
    'Enables or disables a plugin; a disabled plugin is denied everything. Audited.';
COMMENT ON FUNCTION spine.grant_consent(text, text[], uuid) IS
    'The user (or, for service_role, owner) allows a plugin scopes within its manifest: action:resource, action:* or *. Audited.';
COMMENT ON FUNCTION spine.revoke_consent(text, text[], uuid) IS
    'Revokes a plugin''s scopes (all when NULL) for the user. Audited.';
COMMENT ON FUNCTION spine.authorize(text, text, text) IS
    'Whether plugin:<name> may do an action on a resource for auth.uid(): manifest AND consent. Each decision is audited.';
COMMENT ON FUNCTION spine.require(text, text, text) IS
    'spine.authorize that raises 42501 with the reason on a denial.';
COMMENT ON FUNCTION spine.plugin_secrets(text) IS
    'The secrets a plugin may read for auth.uid() (declared AND consented); <uid>/<NAME> preferred over <NAME>. Audited.';
COMMENT ON FUNCTION spine.vault_decrypt(uuid, text, integer, bytea) IS
    'Decrypts one vault.secrets row (used by vault.decrypted_secrets); audited; XX001 on a wrong key or altered row.';
COMMENT ON FUNCTION spine.vault_create_secret(text, text, text, uuid) IS 'Behind vault.create_secret.';
COMMENT ON FUNCTION spine.vault_update_secret(uuid, text, text, text, uuid) IS 'Behind vault.update_secret.';
COMMENT ON FUNCTION spine.rotate_vault_key() IS
    'Re-encrypts every secret under the newest root key version; returns how many. Audited.';
COMMENT ON FUNCTION spine.vault_secrets() IS
    'The vault''s secrets by id and name, with description and times, never their values; service_role only.';
COMMENT ON FUNCTION spine.vault_key_versions() IS
    'Root key versions in the keyring, which is current, and how many secrets each encrypts.';

COMMENT ON FUNCTION spine.caller_is_privileged() IS 'True when the caller acts as a superuser or a BYPASSRLS role (service_role).';
COMMENT ON FUNCTION spine.check_queue_name(text) IS 'Raises 22023 unless the name is a valid queue or schedule name.';
COMMENT ON FUNCTION spine.check_cron(text) IS 'Raises 22023, naming the bad field, unless the text is a valid pg_cron schedule.';
COMMENT ON FUNCTION spine.retry_backoff(bigint, integer) IS 'Delay before retrying a job after a failed attempt: 1 s doubling per attempt, capped at 1 h, jittered by job id.';
COMMENT ON FUNCTION spine.emit(text, jsonb, text, uuid, uuid) IS
    'Writes an event (type domain.PastTenseName) into the outbox in the current transaction; returns its id.';
COMMENT ON FUNCTION spine.version() IS
    'Version of the spine extension''s objects in this database (ALTER EXTENSION spine UPDATE moves it).';
COMMENT ON FUNCTION spine.library_version() IS
    'Version of the loaded spine library; differs from spine.version() until ALTER EXTENSION spine UPDATE.';
COMMENT ON FUNCTION spine.settings() IS 'Effective spine.* settings of this session, validated.';
