-- spine 0.1.0 → 0.2.0, run by `ALTER EXTENSION spine UPDATE`.
--
-- Hand-written, and safe to run twice. The upgrade test (tests/tests/upgrade.rs)
-- compares a database upgraded with this script against a fresh install of
-- 0.2.0, object by object: anything the fresh install has and this script does
-- not make (or the other way round) fails it. CHANGELOG.md says what changed.
\echo Use "ALTER EXTENSION spine UPDATE" to load this file. \quit

-- spine.version() reads the catalog instead of the library: between installing
-- a release's files and ALTER EXTENSION UPDATE, the library is already the new one.
ALTER FUNCTION spine.version() STABLE;
COMMENT ON FUNCTION spine.version() IS
    'Version of the spine extension''s objects in this database (ALTER EXTENSION spine UPDATE moves it).';

-- spine.library_version(): the loaded library's version, for `spine doctor`.
CREATE OR REPLACE FUNCTION spine.library_version() RETURNS text
    IMMUTABLE STRICT PARALLEL SAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'library_version_wrapper';
REVOKE EXECUTE ON FUNCTION spine.library_version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spine.library_version() TO anon, authenticated, service_role;
COMMENT ON FUNCTION spine.library_version() IS
    'Version of the loaded spine library; differs from spine.version() until ALTER EXTENSION spine UPDATE.';

-- A restore (pg_restore) keeps the outbox's commit order: restored commits are not
-- stamped again, and the restoring transaction leaves no empty commit behind.
CREATE OR REPLACE FUNCTION spine.stamp_event_commit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM spine.events e WHERE e.txid = NEW.txid) THEN
        DELETE FROM spine.event_commits WHERE txid = NEW.txid;
        RETURN NULL;
    END IF;
    -- Held until the transaction ends, i.e. after its commit became visible: the
    -- next emitting transaction gets a larger commit_seq only after this one is seen.
    PERFORM pg_advisory_xact_lock(1397770575, 0);
    UPDATE spine.event_commits
       SET commit_seq = nextval('spine.event_commit_seq'), committed_at = clock_timestamp()
     WHERE txid = NEW.txid;
    -- Wake-up only: consumers read the table, so a lost notification only delays.
    PERFORM pg_notify(
        coalesce(nullif(current_setting('spine.notify_channel', true), ''), 'spine_events'), '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS event_commits_stamp ON spine.event_commits;
CREATE CONSTRAINT TRIGGER event_commits_stamp
    AFTER INSERT ON spine.event_commits
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.commit_seq IS NULL) EXECUTE FUNCTION spine.stamp_event_commit();

-- spine.backfill(source, after, batch_size): a source's records mapped again with
-- its current mapping, a page per call (`spine backfill` pages with progress).
CREATE OR REPLACE FUNCTION spine.backfill(
    "source" text,
    "after" bigint DEFAULT 0,
    "batch_size" integer DEFAULT 1000,
    "owner" uuid DEFAULT NULL
) RETURNS jsonb
    VOLATILE SECURITY DEFINER
    SET search_path TO pg_catalog, pg_temp
    LANGUAGE c AS 'MODULE_PATHNAME', 'backfill_wrapper';
REVOKE EXECUTE ON FUNCTION spine.backfill(text, bigint, integer, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spine.backfill(text, bigint, integer, uuid) TO authenticated, service_role;
COMMENT ON FUNCTION spine.backfill(text, bigint, integer, uuid) IS
    'Maps a page of a source''s records (latest processed versions, raw id after `after`) again with its current mapping; returns ingest''s counts, last and done.';
