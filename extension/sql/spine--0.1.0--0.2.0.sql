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

-- The outbox is partitioned by the emitting transaction's start (tx_started_at).
-- The 0.1.0 tables become the default partitions, so their rows, keys and
-- indexes stay where they are (renamed only; no copy, no rebuild); the new
-- column's constant default is a catalog change, not a rewrite. The rows of 0.1.0
-- get tx_started_at '-infinity' in both tables, so the pairs still match;
-- spine.purge_events trims them by DELETE as before, and new events go to time
-- partitions.
DO $partition$
DECLARE
    next_seq bigint;
    called boolean;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'spine.events'::regclass) = 'p' THEN
        RETURN;
    END IF;
    SELECT last_value, is_called INTO next_seq, called FROM spine.events_seq_seq;

    -- spine.events → spine.events_default
    DROP POLICY events_owner_reads ON spine.events;
    REVOKE ALL ON spine.events FROM authenticated, service_role;
    DROP TRIGGER events_register_transaction ON spine.events;
    COMMENT ON TABLE spine.events IS NULL;
    COMMENT ON COLUMN spine.events.seq IS NULL;
    COMMENT ON COLUMN spine.events.id IS NULL;
    COMMENT ON COLUMN spine.events.type IS NULL;
    COMMENT ON COLUMN spine.events.subject IS NULL;
    COMMENT ON COLUMN spine.events.owner_id IS NULL;
    COMMENT ON COLUMN spine.events.correlation_id IS NULL;
    COMMENT ON COLUMN spine.events.causation_id IS NULL;
    COMMENT ON COLUMN spine.events.txid IS NULL;
    ALTER TABLE spine.events ADD COLUMN tx_started_at timestamptz NOT NULL DEFAULT '-infinity';
    ALTER TABLE spine.events ALTER COLUMN tx_started_at SET DEFAULT transaction_timestamp();
    -- Out of the extension first, so its entry in the dump configuration goes too.
    ALTER EXTENSION spine DROP SEQUENCE spine.events_seq_seq;
    ALTER TABLE spine.events ALTER COLUMN seq DROP IDENTITY;
    ALTER TABLE spine.events RENAME TO events_default;
    ALTER TABLE spine.events_default RENAME CONSTRAINT events_pkey TO events_default_pkey;
    ALTER TABLE spine.events_default RENAME CONSTRAINT events_id_key TO events_default_id_key;
    ALTER INDEX spine.events_txid_seq_idx RENAME TO events_default_txid_seq_idx;
    ALTER INDEX spine.events_owner_seq_idx RENAME TO events_default_owner_seq_idx;

    CREATE TABLE spine.events (
        seq            bigint GENERATED ALWAYS AS IDENTITY,
        id             uuid        NOT NULL,
        type           text        NOT NULL,
        source         text        NOT NULL DEFAULT '/spine',
        subject        text,
        owner_id       uuid,
        data           jsonb       NOT NULL DEFAULT '{}'::jsonb,
        correlation_id uuid        NOT NULL,
        causation_id   uuid,
        txid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
        occurred_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
        tx_started_at  timestamptz NOT NULL DEFAULT transaction_timestamp()
    ) PARTITION BY RANGE (tx_started_at);
    ALTER TABLE spine.events ATTACH PARTITION spine.events_default DEFAULT;
    PERFORM setval(pg_get_serial_sequence('spine.events', 'seq'), next_seq, called);
    PERFORM pg_extension_config_dump(pg_get_serial_sequence('spine.events', 'seq')::regclass, '');
    CREATE TRIGGER events_register_transaction
        AFTER INSERT ON spine.events
        FOR EACH STATEMENT EXECUTE FUNCTION spine.register_event_transaction();
    ALTER TABLE spine.events ENABLE ROW LEVEL SECURITY;
    CREATE POLICY events_owner_reads ON spine.events
        FOR SELECT TO authenticated USING (owner_id = auth.uid());
    GRANT SELECT ON spine.events TO authenticated, service_role;
    COMMENT ON TABLE spine.events IS
        'Transactional outbox: immutable events, written with spine.emit() in the transaction that caused them.';
    COMMENT ON COLUMN spine.events.seq IS 'Insert order; order within one transaction.';
    COMMENT ON COLUMN spine.events.id IS 'UUIDv7; the idempotency key of all work the event causes (Nats-Msg-Id).';
    COMMENT ON COLUMN spine.events.type IS 'domain.PastTenseName, e.g. data.EntityCreated.';
    COMMENT ON COLUMN spine.events.subject IS 'What the event is about (CloudEvents subject), e.g. an entity id.';
    COMMENT ON COLUMN spine.events.owner_id IS 'Owning user (auth.uid() of the emitter); NULL for system events.';
    COMMENT ON COLUMN spine.events.correlation_id IS 'Id of the first event of the causal chain.';
    COMMENT ON COLUMN spine.events.causation_id IS 'Id of the event that directly caused this one.';
    COMMENT ON COLUMN spine.events.txid IS 'Emitting transaction; joins spine.event_commits.';
    COMMENT ON COLUMN spine.events.tx_started_at IS
        'Start of the emitting transaction (the same for all its events): the partition key, shared with spine.event_commits.';

    -- spine.event_commits → spine.event_commits_default
    REVOKE ALL ON spine.event_commits FROM service_role;
    DROP TRIGGER event_commits_stamp ON spine.event_commits;
    COMMENT ON TABLE spine.event_commits IS NULL;
    ALTER TABLE spine.event_commits ADD COLUMN tx_started_at timestamptz NOT NULL DEFAULT '-infinity';
    ALTER TABLE spine.event_commits ALTER COLUMN tx_started_at SET DEFAULT transaction_timestamp();
    ALTER TABLE spine.event_commits RENAME TO event_commits_default;
    ALTER TABLE spine.event_commits_default RENAME CONSTRAINT event_commits_pkey TO event_commits_default_pkey;
    ALTER TABLE spine.event_commits_default
        RENAME CONSTRAINT event_commits_commit_seq_key TO event_commits_default_commit_seq_key;

    CREATE TABLE spine.event_commits (
        txid          xid8 NOT NULL,
        commit_seq    bigint,
        committed_at  timestamptz,
        tx_started_at timestamptz NOT NULL DEFAULT transaction_timestamp()
    ) PARTITION BY RANGE (tx_started_at);
    ALTER TABLE spine.event_commits ATTACH PARTITION spine.event_commits_default DEFAULT;
    ALTER TABLE spine.event_commits ENABLE ROW LEVEL SECURITY;
    GRANT SELECT ON spine.event_commits TO service_role;
    COMMENT ON TABLE spine.event_commits IS
        'Commit order of emitting transactions: commit_seq is assigned at commit, under a lock held until the commit is visible.';
END
$partition$;

-- spine.jobs_archive is partitioned by finished_at the same way: the 0.1.0 table
-- becomes its default partition (renames only).
DO $partition$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'spine.jobs_archive'::regclass) = 'p' THEN
        RETURN;
    END IF;
    DROP POLICY jobs_archive_owner_reads ON spine.jobs_archive;
    REVOKE ALL ON spine.jobs_archive FROM authenticated, service_role;
    COMMENT ON TABLE spine.jobs_archive IS NULL;
    ALTER TABLE spine.jobs_archive RENAME TO jobs_archive_default;
    ALTER TABLE spine.jobs_archive_default RENAME CONSTRAINT jobs_archive_pkey TO jobs_archive_default_pkey;
    ALTER INDEX spine.jobs_archive_finished_idx RENAME TO jobs_archive_default_finished_idx;
    ALTER INDEX spine.jobs_archive_idempotency_idx RENAME TO jobs_archive_default_idempotency_idx;
    ALTER INDEX spine.jobs_archive_owner_idx RENAME TO jobs_archive_default_owner_idx;

    CREATE TABLE spine.jobs_archive (
        id              bigint NOT NULL,
        queue           text NOT NULL,
        owner_id        uuid,
        priority        spine.job_priority NOT NULL,
        -- Named: the default partition's own check already has the generated name.
        state           spine.job_state NOT NULL
                        CONSTRAINT jobs_archive_state_check CHECK (state IN ('completed', 'cancelled')),
        payload         jsonb NOT NULL,
        attempts        integer NOT NULL,
        max_attempts    integer NOT NULL,
        idempotency_key text,
        errors          jsonb NOT NULL,
        created_at      timestamptz NOT NULL,
        finished_at     timestamptz NOT NULL DEFAULT now()
    ) PARTITION BY RANGE (finished_at);
    ALTER TABLE spine.jobs_archive ATTACH PARTITION spine.jobs_archive_default DEFAULT;
    ALTER TABLE spine.jobs_archive ENABLE ROW LEVEL SECURITY;
    CREATE POLICY jobs_archive_owner_reads ON spine.jobs_archive
        FOR SELECT TO authenticated USING (owner_id = auth.uid());
    GRANT SELECT ON spine.jobs_archive TO authenticated, service_role;
    COMMENT ON TABLE spine.jobs_archive IS
        'Finished jobs (completed, cancelled), kept for their queue''s retention; their idempotency keys stay taken meanwhile.';
END
$partition$;

-- Registers the transaction once per INSERT statement into spine.events: the
-- first statement inserts its row, later ones see the transaction-local flag
-- spine.event_commit_registered (superuser-only, so users cannot set it). SET
-- LOCAL, the flag is undone with a rolled-back savepoint, as the row is, and the
-- next statement registers again. Statement-level, so a 10k-row INSERT pays once.
CREATE OR REPLACE FUNCTION spine.register_event_transaction() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tx text := pg_current_xact_id()::text;
BEGIN
    -- Loading the library defines the setting, which drops a value a user set
    -- before it existed (a placeholder: PostgreSQL checks the setter's rights then).
    PERFORM spine.library_version();
    IF current_setting('spine.event_commit_registered', true) IS DISTINCT FROM tx THEN
        INSERT INTO spine.event_commits (txid) VALUES (tx::xid8);
        PERFORM set_config('spine.event_commit_registered', tx, true);
    END IF;
    RETURN NULL;
END
$$;

-- A restore (pg_restore) keeps the outbox's commit order: restored commits are not
-- stamped again, and the restoring transaction leaves no empty commit behind.
CREATE OR REPLACE FUNCTION spine.stamp_event_commit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM spine.events e
                    WHERE e.txid = NEW.txid AND e.tx_started_at = NEW.tx_started_at) THEN
        DELETE FROM spine.event_commits WHERE txid = NEW.txid AND tx_started_at = NEW.tx_started_at;
        RETURN NULL;
    END IF;
    -- Held until the transaction ends, i.e. after its commit became visible: the
    -- next emitting transaction gets a larger commit_seq only after this one is seen.
    PERFORM pg_advisory_xact_lock(1397770575, 0);
    UPDATE spine.event_commits
       SET commit_seq = nextval('spine.event_commit_seq'), committed_at = clock_timestamp()
     WHERE txid = NEW.txid AND tx_started_at = NEW.tx_started_at;
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

-- Time partitions (partitions.sql), and the outbox's readers and retention,
-- which find a transaction's events by (txid, tx_started_at): one partition each.
-- The range a partition covers, from its bound (NULL for a default partition).
CREATE OR REPLACE FUNCTION spine.partition_range(part regclass) RETURNS tstzrange
    LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT tstzrange(m[1]::timestamptz, m[2]::timestamptz)
      FROM pg_class c,
           regexp_match(pg_get_expr(c.relpartbound, c.oid), $re$FROM \('([^']+)'\) TO \('([^']+)'\)$re$) AS m
     WHERE c.oid = part
$$;
COMMENT ON FUNCTION spine.partition_range(regclass) IS
    'The time range a partition of a Spine table covers; NULL for a default partition.';

-- The partition width a setting holds (default 1 day), checked: date_bin, which
-- aligns the ranges, takes no months or years.
CREATE OR REPLACE FUNCTION spine.partition_width(setting text) RETURNS interval
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    value text := coalesce(nullif(current_setting(setting, true), ''), '1 day');
    width interval;
BEGIN
    BEGIN
        width := value::interval;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION '% is not an interval: %', setting, value
            USING ERRCODE = 'invalid_parameter_value';
    END;
    IF width < interval '1 second' OR extract(month FROM width) <> 0 OR extract(year FROM width) <> 0 THEN
        RAISE EXCEPTION '% must be at least 1 second and given in days, hours, minutes or seconds, not %',
            setting, width
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN width;
END
$$;
COMMENT ON FUNCTION spine.partition_width(text) IS
    'The partition width a setting holds (default 1 day); 22023 unless an interval of at least a second without months or years.';

-- A partition's keys and indexes, the same as the unpartitioned tables of 0.1.0
-- had, and RLS with no policy (users read through the parent and its policy).
CREATE OR REPLACE FUNCTION spine.index_partition(part regclass) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent regclass := (SELECT inhparent FROM pg_inherits WHERE inhrelid = part);
    name text := (SELECT relname FROM pg_class WHERE oid = part);
BEGIN
    IF parent = 'spine.events'::regclass THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY (seq)', part, name || '_pkey');
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I UNIQUE (id)', part, name || '_id_key');
        -- events_after's lookup, and a user's events.
        EXECUTE format('CREATE INDEX %I ON %s (txid, seq)', name || '_txid_seq_idx', part);
        EXECUTE format('CREATE INDEX %I ON %s (owner_id, seq)', name || '_owner_seq_idx', part);
    ELSIF parent = 'spine.event_commits'::regclass THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY (txid)', part, name || '_pkey');
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I UNIQUE (commit_seq)', part, name || '_commit_seq_key');
    ELSIF parent = 'spine.jobs_archive'::regclass THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY (id)', part, name || '_pkey');
        EXECUTE format('CREATE INDEX %I ON %s (finished_at)', name || '_finished_idx', part);
        -- A keyed enqueue's lookup (spine.enqueue_keyed).
        EXECUTE format('CREATE INDEX %I ON %s (queue, coalesce(owner_id, %L::uuid), idempotency_key) '
                       'WHERE idempotency_key IS NOT NULL',
                       name || '_idempotency_idx', part, '00000000-0000-0000-0000-000000000000');
        EXECUTE format('CREATE INDEX %I ON %s (owner_id) WHERE owner_id IS NOT NULL', name || '_owner_idx', part);
    ELSE
        RAISE EXCEPTION '% is not a partition of spine.events, spine.event_commits or spine.jobs_archive', part
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
    -- Nothing is granted; this writes the owner's privileges out, as the
    -- REVOKEs of the upgrade from 0.1.0 leave them on its default partitions.
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', part);
END
$$;
COMMENT ON FUNCTION spine.index_partition(regclass) IS
    'Creates the keys and indexes of a partition of spine.events, spine.event_commits or spine.jobs_archive, and enables RLS on it.';

-- One partition for [lo, hi): created alone, then attached, which takes a SHARE
-- UPDATE EXCLUSIVE lock on the parent (writers and readers go on), then indexed
-- while still empty. Named after the parent and its start in UTC.
CREATE OR REPLACE FUNCTION spine.attach_partition(parent regclass, lo timestamptz, hi timestamptz) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    child text := format('%s_p%s', (SELECT relname FROM pg_class WHERE oid = parent),
                         to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS'));
BEGIN
    EXECUTE format('CREATE TABLE spine.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', child, parent);
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION spine.%I FOR VALUES FROM (%L) TO (%L)',
                   parent, child, lo, hi);
    PERFORM spine.index_partition(format('spine.%I', child)::regclass);
END
$$;
COMMENT ON FUNCTION spine.attach_partition(regclass, timestamptz, timestamptz) IS
    'Creates one partition of a Spine table for [lo, hi), attaches and indexes it.';

-- Partitions of `parents` (the same bounds for each) for the ranges of `width`
-- from `at` to four ahead, after the last one there is. A range that has rows in
-- a default partition (written before it existed) is left to it: attaching would
-- fail. Returns how many ranges it made.
CREATE OR REPLACE FUNCTION spine.create_partitions(parents regclass[], width interval, "at" timestamptz)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent regclass;
    lo timestamptz;
    hi timestamptz;
    made integer := 0;
BEGIN
    SELECT max(upper(spine.partition_range(p.relid))) INTO lo
      FROM pg_partition_tree(parents[1]) p WHERE p.isleaf;
    lo := greatest(lo, date_bin(width, "at", timestamptz '2000-01-01 00:00:00+00'));
    WHILE lo < "at" + 4 * width LOOP
        hi := lo + width;
        BEGIN
            FOREACH parent IN ARRAY parents LOOP
                PERFORM spine.attach_partition(parent, lo, hi);
            END LOOP;
            made := made + 1;
        EXCEPTION WHEN check_violation THEN
            NULL;
        END;
        lo := hi;
    END LOOP;
    RETURN made;
END
$$;
COMMENT ON FUNCTION spine.create_partitions(regclass[], interval, timestamptz) IS
    'Makes partitions of the given tables (same bounds) for the ranges of width from at to four ahead; returns how many ranges.';

-- Locks partitions and their parents for a DROP, waiting at most lock_wait:
-- DROP of a partition takes an ACCESS EXCLUSIVE lock on its parent, so while it
-- waits every writer and reader of the table queues behind it. A short wait
-- bounds that stall, and stays below deadlock_timeout so that a reader holding
-- one parent and waiting for the other makes this give up, not itself. False when
-- the locks were not had in time (the caller leaves the partition for its next
-- run); once had, they are held to the end of the transaction.
CREATE OR REPLACE FUNCTION spine.lock_for_drop(parents regclass[], parts regclass[], lock_wait interval)
    RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    saved text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', greatest(1, (extract(epoch FROM lock_wait) * 1000)::bigint)::text, true);
    EXECUTE format('LOCK TABLE %s, %s IN ACCESS EXCLUSIVE MODE',
                   (SELECT string_agg('ONLY ' || p::text, ', ') FROM unnest(parents) p),
                   (SELECT string_agg(p::text, ', ') FROM unnest(parts) p));
    PERFORM set_config('lock_timeout', saved, true);
    RETURN true;
EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
    RETURN false;
END
$$;
COMMENT ON FUNCTION spine.lock_for_drop(regclass[], regclass[], interval) IS
    'Locks parents (ONLY) and partitions ACCESS EXCLUSIVE within lock_wait; false if not had in time.';

CREATE OR REPLACE FUNCTION spine.events_after(
    after_commit_seq bigint,
    after_seq bigint,
    max_events integer DEFAULT 1000
) RETURNS TABLE (
    commit_seq bigint, seq bigint, id uuid, type text, source text, subject text,
    owner_id uuid, data jsonb, correlation_id uuid, causation_id uuid,
    occurred_at timestamptz, committed_at timestamptz
)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
    SET max_parallel_workers_per_gather = 0
    SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        SELECT c.commit_seq, e.seq, e.id, e.type, e.source, e.subject, e.owner_id, e.data,
               e.correlation_id, e.causation_id, e.occurred_at, c.committed_at
          FROM (SELECT k.commit_seq, k.txid, k.tx_started_at, k.committed_at
                  FROM spine.event_commits k
                 WHERE k.commit_seq >= after_commit_seq
                 ORDER BY k.commit_seq
                 LIMIT max_events) AS c
          CROSS JOIN LATERAL (
                SELECT ev.seq, ev.id, ev.type, ev.source, ev.subject, ev.owner_id, ev.data,
                       ev.correlation_id, ev.causation_id, ev.occurred_at
                  FROM spine.events ev
                 WHERE ev.txid = c.txid AND ev.tx_started_at = c.tx_started_at
                   AND (c.commit_seq, ev.seq) > (after_commit_seq, after_seq)
                 ORDER BY ev.seq
                 LIMIT max_events) AS e
         ORDER BY c.commit_seq, e.seq
         LIMIT max_events;
END
$$;
COMMENT ON FUNCTION spine.events_after(bigint, bigint, integer) IS
    'Committed events after the cursor (commit_seq, seq), in commit order. Never skips a late commit.';

CREATE OR REPLACE VIEW spine.sink_status AS
SELECT s.name,
       s.kind,
       s.cursor_commit_seq,
       s.cursor_seq,
       s.delivered,
       (SELECT count(*)
          FROM spine.event_commits c
            JOIN spine.events e ON e.txid = c.txid AND e.tx_started_at = c.tx_started_at
         WHERE c.commit_seq >= s.cursor_commit_seq
           AND (c.commit_seq, e.seq) > (s.cursor_commit_seq, s.cursor_seq)) AS backlog,
       -- The oldest undelivered event's commit time: the same index walk as
       -- events_after, so it costs one row however long the backlog.
       coalesce(extract(epoch FROM now() - (
           SELECT c.committed_at
             FROM spine.event_commits c
            JOIN spine.events e ON e.txid = c.txid AND e.tx_started_at = c.tx_started_at
            WHERE c.commit_seq >= s.cursor_commit_seq
              AND (c.commit_seq, e.seq) > (s.cursor_commit_seq, s.cursor_seq)
            ORDER BY c.commit_seq, e.seq
            LIMIT 1
       )), 0)::double precision AS lag_seconds,
       s.advanced_at,
       s.last_error,
       s.last_error_at
  FROM spine.sinks s;
COMMENT ON VIEW spine.sink_status IS
    'Per sink: cursor, delivered count, backlog (undelivered events; counting costs time proportional to the backlog), lag in seconds (age of the oldest undelivered event), last error.';

-- A function, not a view: a write to a view that cannot be updated fails with
-- 55000 before the privilege check; a function is simply not granted.
CREATE OR REPLACE FUNCTION spine.event_partitions() RETURNS TABLE (
    name text, range_start timestamptz, range_end timestamptz, events_estimate bigint, total_bytes bigint
)
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT e.relid::regclass::text,
           lower(spine.partition_range(e.relid)),
           upper(spine.partition_range(e.relid)),
           nullif(greatest(c.reltuples, -1), -1)::bigint,
           pg_total_relation_size(e.relid) + coalesce(pg_total_relation_size(k.relid), 0)
      FROM pg_partition_tree('spine.events') e
      JOIN pg_class c ON c.oid = e.relid
      LEFT JOIN pg_partition_tree('spine.event_commits') k
             ON k.isleaf AND spine.partition_range(k.relid) IS NOT DISTINCT FROM spine.partition_range(e.relid)
            AND (spine.partition_range(e.relid) IS NOT NULL OR k.relid = 'spine.event_commits_default'::regclass)
     WHERE e.isleaf
     ORDER BY 2 NULLS FIRST
$$;
COMMENT ON FUNCTION spine.event_partitions() IS
    'Partitions of spine.events (with their spine.event_commits twin): range, estimated events (NULL before ANALYZE), bytes of both. The default partition has no range.';

CREATE OR REPLACE FUNCTION spine.create_event_partitions("at" timestamptz DEFAULT now()) RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT spine.create_partitions(ARRAY['spine.events', 'spine.event_commits']::regclass[],
                                   spine.partition_width('spine.event_partition_interval'), "at")
$$;
COMMENT ON FUNCTION spine.create_event_partitions(timestamptz) IS
    'Makes the partitions of spine.events and spine.event_commits for the ranges from at to four spine.event_partition_interval ahead; returns how many ranges it made. Run by spine.purge_events().';

-- Drops the partitions (both twins) whose range ended keep before `at` and whose
-- commits every sink has passed: checked first without locks, then again under
-- the locks (spine.lock_for_drop), when writers that still held the partition
-- are done. Counting happens before the locks, so writers wait only for the
-- drop. Returns the number of events dropped.
CREATE OR REPLACE FUNCTION spine.drop_event_partitions(keep interval, "at" timestamptz DEFAULT now(),
                                            lock_wait interval DEFAULT '100 milliseconds')
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part record;
    parents regclass[] := ARRAY['spine.events', 'spine.event_commits']::regclass[];
    n bigint;
    dropped bigint := 0;
BEGIN
    FOR part IN
        SELECT e.relid AS events_part, k.relid AS commits_part
          FROM pg_partition_tree('spine.events') e
          JOIN pg_partition_tree('spine.event_commits') k
            ON k.isleaf AND spine.partition_range(k.relid) = spine.partition_range(e.relid)
         WHERE e.isleaf AND upper(spine.partition_range(e.relid)) <= "at" - keep
         ORDER BY lower(spine.partition_range(e.relid))
    LOOP
        CONTINUE WHEN NOT spine.event_partition_delivered(part.commits_part);
        EXECUTE format('SELECT count(*) FROM %s', part.events_part) INTO n;
        CONTINUE WHEN NOT spine.lock_for_drop(parents, ARRAY[part.events_part, part.commits_part], lock_wait);
        CONTINUE WHEN NOT spine.event_partition_delivered(part.commits_part);
        EXECUTE format('DROP TABLE %s, %s', part.events_part, part.commits_part);
        dropped := dropped + n;
    END LOOP;
    RETURN dropped;
END
$$;
COMMENT ON FUNCTION spine.drop_event_partitions(interval, timestamptz, interval) IS
    'Drops the partitions of spine.events and spine.event_commits whose range ended keep before at and whose events every sink delivered, waiting at most lock_wait for the locks; returns how many events went. Run by spine.purge_events().';

-- Whether every commit in a partition of spine.event_commits is before every
-- sink's cursor (false without sinks: nothing has been delivered).
CREATE OR REPLACE FUNCTION spine.event_partition_delivered(commits_part regclass) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    horizon bigint := (SELECT min(cursor_commit_seq) FROM spine.sinks);
    undelivered boolean;
BEGIN
    IF horizon IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE commit_seq IS NULL OR commit_seq >= $1)',
                   commits_part)
       INTO undelivered USING horizon;
    RETURN NOT undelivered;
END
$$;
COMMENT ON FUNCTION spine.event_partition_delivered(regclass) IS
    'True when every commit in a partition of spine.event_commits is behind every sink''s cursor.';

-- Retention: events every sink has delivered and that are older than keep go.
-- keep defaults to the setting spine.event_retention (default 7 days).
CREATE OR REPLACE FUNCTION spine.purge_events(keep interval DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    horizon bigint;
    purged bigint;
BEGIN
    keep := coalesce(keep, nullif(current_setting('spine.event_retention', true), '')::interval,
                     interval '7 days');
    IF keep < interval '0' THEN
        RAISE EXCEPTION 'keep must be a non-negative interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM spine.create_event_partitions(now());
    -- Without sinks nothing has been delivered: keep everything.
    SELECT min(cursor_commit_seq) INTO horizon FROM spine.sinks;
    IF horizon IS NULL THEN
        RETURN 0;
    END IF;
    WITH old AS (
        DELETE FROM spine.event_commits_default
         WHERE commit_seq < horizon AND committed_at < now() - keep
        RETURNING txid, tx_started_at
    ), gone AS (
        DELETE FROM spine.events_default e USING old
         WHERE e.txid = old.txid AND e.tx_started_at = old.tx_started_at
        RETURNING 1
    )
    SELECT count(*) INTO purged FROM gone;
    -- Last: a drop's locks on spine.events stay until this transaction ends.
    RETURN purged + spine.drop_event_partitions(keep, now());
END
$$;
COMMENT ON FUNCTION spine.purge_events(interval) IS
    'Retention, run by pg_cron: makes the partitions ahead, drops those delivered to every sink and older than keep (default: spine.event_retention), and deletes such events from the default partition; returns how many events went.';

-- The job archive's maintenance.
CREATE OR REPLACE FUNCTION spine.jobs_maintenance() RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    reclaimed bigint;
    purged bigint;
    longest interval := (SELECT max(retention) FROM spine.queues);
BEGIN
    reclaimed := spine.reclaim_expired_leases(NULL);
    DELETE FROM spine.jobs_archive a USING spine.queues q
     WHERE q.name = a.queue AND a.finished_at < now() - q.retention
       AND (q.retention < longest OR a.tableoid = 'spine.jobs_archive_default'::regclass);
    GET DIAGNOSTICS purged = ROW_COUNT;
    DELETE FROM spine.queue_rate_windows w WHERE w.window_start < now() - interval '1 day';
    PERFORM spine.create_job_archive_partitions(now());
    -- Last: a drop's locks on spine.jobs_archive stay until this transaction ends.
    purged := purged + spine.drop_job_archive_partitions(now());
    RETURN jsonb_build_object('leases_reclaimed', reclaimed, 'archive_purged', purged);
END
$$;
COMMENT ON FUNCTION spine.jobs_maintenance() IS
    'Returns expired leases to their queues, makes archive partitions ahead and drops (or deletes) archived jobs past retention; run by pg_cron.';

CREATE OR REPLACE FUNCTION spine.create_job_archive_partitions("at" timestamptz DEFAULT now()) RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT spine.create_partitions(ARRAY['spine.jobs_archive']::regclass[],
                                   spine.partition_width('spine.job_archive_partition_interval'), "at")
$$;
COMMENT ON FUNCTION spine.create_job_archive_partitions(timestamptz) IS
    'Makes the partitions of spine.jobs_archive for the ranges from at to four spine.job_archive_partition_interval ahead; returns how many. Run by spine.jobs_maintenance().';

-- Drops the archive partitions whose range ended the longest queue retention
-- before `at` (every queue's jobs in them are past retention); counted before
-- the locks (spine.lock_for_drop). Returns the number of jobs dropped.
CREATE OR REPLACE FUNCTION spine.drop_job_archive_partitions("at" timestamptz DEFAULT now(),
                                                  lock_wait interval DEFAULT '100 milliseconds')
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part regclass;
    longest interval := coalesce((SELECT max(retention) FROM spine.queues), interval '0');
    n bigint;
    dropped bigint := 0;
BEGIN
    FOR part IN
        SELECT p.relid FROM pg_partition_tree('spine.jobs_archive') p
         WHERE p.isleaf AND upper(spine.partition_range(p.relid)) <= "at" - longest
         ORDER BY lower(spine.partition_range(p.relid))
    LOOP
        EXECUTE format('SELECT count(*) FROM %s', part) INTO n;
        CONTINUE WHEN NOT spine.lock_for_drop(ARRAY['spine.jobs_archive']::regclass[], ARRAY[part], lock_wait);
        EXECUTE format('DROP TABLE %s', part);
        dropped := dropped + n;
    END LOOP;
    RETURN dropped;
END
$$;
COMMENT ON FUNCTION spine.drop_job_archive_partitions(timestamptz, interval) IS
    'Drops the partitions of spine.jobs_archive whose range ended the longest queue retention before at, waiting at most lock_wait for the locks; returns how many jobs went. Run by spine.jobs_maintenance().';

REVOKE EXECUTE ON FUNCTION spine.partition_range(regclass), spine.partition_width(text),
    spine.index_partition(regclass), spine.attach_partition(regclass, timestamptz, timestamptz),
    spine.create_partitions(regclass[], interval, timestamptz),
    spine.lock_for_drop(regclass[], regclass[], interval),
    spine.event_partitions(),
    spine.create_event_partitions(timestamptz),
    spine.drop_event_partitions(interval, timestamptz, interval),
    spine.event_partition_delivered(regclass),
    spine.create_job_archive_partitions(timestamptz),
    spine.drop_job_archive_partitions(timestamptz, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spine.partition_range(regclass), spine.event_partitions() TO service_role;

-- Operators' job actions are audited (queue.redriven, job.cancelled,
-- job.retried), and one job can be run again now: spine.retry_job.
CREATE OR REPLACE FUNCTION spine.redrive(queue text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM spine.queues q WHERE q.name = redrive.queue) THEN
        RAISE EXCEPTION 'queue "%" does not exist', queue USING ERRCODE = 'undefined_object';
    END IF;
    UPDATE spine.jobs j SET state = 'queued', attempts = 0, run_at = now(), updated_at = now()
     WHERE j.queue = redrive.queue AND j.state = 'dead';
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM spine.wake_runners(redrive.queue);
        PERFORM spine.audit('queue.redriven', 'queue:' || redrive.queue, jsonb_build_object('jobs', n));
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION spine.redrive(text) IS
    'Puts every dead job of a queue back to queued with fresh attempts (error history kept); returns how many. Audited as queue.redriven.';

CREATE OR REPLACE FUNCTION spine.cancel_job(id bigint) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j spine.jobs;
    privileged boolean := spine.caller_is_privileged();
BEGIN
    PERFORM spine.lock_idempotency_key(k.queue, k.owner_id, k.idempotency_key)
       FROM spine.jobs k WHERE k.id = cancel_job.id AND k.idempotency_key IS NOT NULL;
    DELETE FROM spine.jobs
     WHERE spine.jobs.id = cancel_job.id
       AND (privileged OR owner_id = auth.uid())
    RETURNING * INTO j;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO spine.jobs_archive
        (id, queue, owner_id, priority, state, payload, attempts, max_attempts,
         idempotency_key, errors, created_at)
    VALUES (j.id, j.queue, j.owner_id, j.priority, 'cancelled', j.payload, j.attempts,
            j.max_attempts, j.idempotency_key, j.errors, j.created_at);
    PERFORM spine.audit('job.cancelled', 'job:' || j.id,
                        jsonb_build_object('queue', j.queue, 'was', j.state));
    RETURN true;
END
$$;
COMMENT ON FUNCTION spine.cancel_job(bigint) IS
    'Cancels a job that has not finished (a running one is released; its worker''s completion is then ignored); false if there is no such job of yours. Audited as job.cancelled.';

CREATE OR REPLACE FUNCTION spine.retry_job(id bigint) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j spine.jobs;
    was spine.job_state;
BEGIN
    SELECT k.state INTO was FROM spine.jobs k
     WHERE k.id = retry_job.id
       AND (spine.caller_is_privileged() OR k.owner_id = auth.uid())
       FOR UPDATE;
    UPDATE spine.jobs k
       SET state = 'queued', run_at = now(), updated_at = now(),
           attempts = CASE WHEN k.state = 'dead' THEN 0 ELSE k.attempts END
     WHERE k.id = retry_job.id
       AND k.state IN ('dead', 'retrying')
       AND (spine.caller_is_privileged() OR k.owner_id = auth.uid())
    RETURNING * INTO j;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM spine.wake_runners(j.queue);
    PERFORM spine.audit('job.retried', 'job:' || j.id,
                        jsonb_build_object('queue', j.queue, 'was', was));
    RETURN true;
END
$$;
COMMENT ON FUNCTION spine.retry_job(bigint) IS
    'Runs a dead or retrying job again now (a dead one with fresh attempts; error history kept); false if there is no such job of yours in those states. Audited as job.retried.';
REVOKE EXECUTE ON FUNCTION spine.retry_job(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spine.retry_job(bigint) TO authenticated, service_role;

-- Process health for `spine status` and the Studio: spine.processes.
-- The Spine processes connected to this database, from pg_stat_activity: each
-- names itself in application_name ('spine-worker/0.2.0', see spine_db::DbConfig).
-- What `spine status` and the Studio's overview show as process health: a
-- process that is not here is not running (or cannot reach the database).
-- SECURITY DEFINER: without pg_read_all_stats, other roles' sessions show no
-- times or addresses.
CREATE OR REPLACE FUNCTION spine.processes() RETURNS TABLE (
    process text, version text, sessions bigint, since timestamptz,
    last_active timestamptz, clients text
)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT split_part(a.application_name, '/', 1), split_part(a.application_name, '/', 2),
           count(*), date_trunc('second', min(a.backend_start)),
           date_trunc('second', max(greatest(a.state_change, a.backend_start))),
           string_agg(DISTINCT coalesce(host(a.client_addr), 'local'), ',')
      FROM pg_stat_activity a
     WHERE a.application_name LIKE 'spine-%' AND a.pid <> pg_backend_pid()
       AND a.datname = current_database()
     GROUP BY 1, 2
     ORDER BY 1, 2
$$;
COMMENT ON FUNCTION spine.processes() IS
    'The Spine processes connected to this database (by application_name): sessions, connected since, last active, client addresses.';
REVOKE EXECUTE ON FUNCTION spine.processes() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spine.processes() TO service_role;

-- The vault's secret names for operators (the Studio's trust page): spine.vault_secrets.
-- The vault's secrets by name, never their values: what an operator's console
-- lists (the vault schema is not exposed through /rest/v1).
CREATE OR REPLACE FUNCTION spine.vault_secrets() RETURNS TABLE (
    id uuid, name text, description text, created_at timestamptz, updated_at timestamptz
)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.id, s.name, s.description, s.created_at, s.updated_at
      FROM vault.secrets s
     ORDER BY s.name NULLS LAST, s.created_at
$$;
COMMENT ON FUNCTION spine.vault_secrets() IS
    'The vault''s secrets by id and name, with description and times, never their values; service_role only.';
REVOKE EXECUTE ON FUNCTION spine.vault_secrets() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spine.vault_secrets() TO service_role;
