-- Grants and comments applied after every object of the extension exists.

-- Extension tables are left out of pg_dump unless registered: without this a
-- logical backup would lose queued jobs, undelivered events and sink cursors.
SELECT pg_catalog.pg_extension_config_dump('spine.events', '');
SELECT pg_catalog.pg_extension_config_dump('spine.event_commits', '');
SELECT pg_catalog.pg_extension_config_dump('spine.event_commit_seq', '');
SELECT pg_catalog.pg_extension_config_dump('spine.sinks', '');
SELECT pg_catalog.pg_extension_config_dump('spine.queues', '');
SELECT pg_catalog.pg_extension_config_dump('spine.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('spine.jobs_archive', '');
SELECT pg_catalog.pg_extension_config_dump('spine.schedules', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.events', 'seq')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('spine.jobs', 'id')::regclass, '');

COMMENT ON SCHEMA spine IS
    'Spine: entities, ETL, rules, policy and audit, jobs, outbox and vault.';

-- The schema is reachable by the PostgREST roles; what each role may do with each
-- object is granted per object, and rows are filtered by RLS.
GRANT USAGE ON SCHEMA spine TO anon, authenticated, service_role;

-- Functions are private unless granted: revoke the PUBLIC default, then grant the
-- read-only helpers back.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA spine FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spine.version() TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION spine.settings() TO authenticated, service_role;

GRANT EXECUTE ON FUNCTION spine.emit(text, jsonb, text, uuid, uuid) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION spine.events_after(bigint, bigint, integer) TO service_role;
GRANT EXECUTE ON FUNCTION spine.ensure_sink(text, text, boolean) TO service_role;
GRANT EXECUTE ON FUNCTION spine.drop_sink(text) TO service_role;
GRANT EXECUTE ON FUNCTION spine.advance_sink(text, bigint, bigint, bigint) TO service_role;
GRANT EXECUTE ON FUNCTION spine.record_sink_error(text, text) TO service_role;
GRANT EXECUTE ON FUNCTION spine.purge_events(interval) TO service_role;
GRANT EXECUTE ON FUNCTION
    spine.enqueue(text, jsonb, spine.job_priority, timestamptz, text, integer),
    spine.enqueue_batch(text, jsonb[], spine.job_priority, timestamptz, integer),
    spine.cancel_job(bigint),
    spine.queue_stats(),
    spine.check_queue_name(text),
    spine.check_cron(text),
    spine.retry_backoff(bigint, integer),
    spine.caller_is_privileged()
    TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    spine.create_queue(text, integer, interval, boolean),
    spine.fetch_jobs(text[], text, integer, interval),
    spine.complete_jobs(bigint[], text),
    spine.fail_job(bigint, text, interval, text),
    spine.heartbeat(bigint[], interval, text),
    spine.release_jobs(bigint[], text),
    spine.redrive(text),
    spine.reclaim_expired_leases(text[]),
    spine.jobs_maintenance(),
    spine.schedule(text, text, text, jsonb, spine.job_priority),
    spine.unschedule(text)
    TO service_role;

COMMENT ON FUNCTION spine.caller_is_privileged() IS 'True when the caller acts as a superuser or a BYPASSRLS role (service_role).';
COMMENT ON FUNCTION spine.check_queue_name(text) IS 'Raises 22023 unless the name is a valid queue or schedule name.';
COMMENT ON FUNCTION spine.check_cron(text) IS 'Raises 22023, naming the bad field, unless the text is a valid pg_cron schedule.';
COMMENT ON FUNCTION spine.retry_backoff(bigint, integer) IS 'Delay before retrying a job after a failed attempt: 1 s doubling per attempt, capped at 1 h, jittered by job id.';
COMMENT ON FUNCTION spine.emit(text, jsonb, text, uuid, uuid) IS
    'Writes an event (type domain.PastTenseName) into the outbox in the current transaction; returns its id.';
COMMENT ON FUNCTION spine.version() IS 'Version of the installed spine extension.';
COMMENT ON FUNCTION spine.settings() IS 'Effective spine.* settings of this session, validated.';
