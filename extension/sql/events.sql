-- Events: the transactional outbox.
--
-- Every significant state change writes an immutable row to spine.events in the same
-- transaction (spine.emit). Consumers (sinks) read "everything after my cursor".
--
-- Ordering and the "no skipped event" rule. Sequence numbers are handed out when a
-- row is inserted, not when its transaction commits, so a cursor over `seq` alone can
-- step over an event whose transaction commits late. Spine therefore stamps each
-- emitting transaction with a `commit_seq` at commit time, under a transaction-level
-- advisory lock that is released only after the commit is visible. So:
--   * commit_seq order is commit order (per subject too);
--   * a reader that sees commit_seq N also sees every committed M < N;
--   * a reader orders by (commit_seq, seq) and keeps that pair as its cursor.
-- The lock serialises the commit of emitting transactions, which NOTIFY already does
-- (PostgreSQL takes a database-wide lock in PreCommit_Notify), so it costs little more.

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
-- Keys and indexes are each partition's own (spine.index_event_partition), not
-- the parent's: a partition that pg_restore brings back gets exactly the indexes
-- the dump holds, where the parent's would be cloned on ATTACH and then made a
-- second time (pg_restore fails). Unique within a partition; seq is unique by its
-- identity, id by construction (UUIDv7s from spine.emit).

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

-- One row per emitting transaction; commit_seq is set at commit.
CREATE SEQUENCE spine.event_commit_seq AS bigint;
CREATE TABLE spine.event_commits (
    txid          xid8 NOT NULL,
    commit_seq    bigint,
    committed_at  timestamptz,
    tx_started_at timestamptz NOT NULL DEFAULT transaction_timestamp()
) PARTITION BY RANGE (tx_started_at);
COMMENT ON TABLE spine.event_commits IS
    'Commit order of emitting transactions: commit_seq is assigned at commit, under a lock held until the commit is visible.';

-- Registers the transaction once per INSERT statement into spine.events: the
-- first statement inserts its row, later ones see the transaction-local flag
-- spine.event_commit_registered (superuser-only, so users cannot set it). SET
-- LOCAL, the flag is undone with a rolled-back savepoint, as the row is, and the
-- next statement registers again. Statement-level, so a 10k-row INSERT pays once.
CREATE FUNCTION spine.register_event_transaction() RETURNS trigger
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
COMMENT ON FUNCTION spine.register_event_transaction() IS
    'Trigger: records that the current transaction emitted events.';
CREATE TRIGGER events_register_transaction
    AFTER INSERT ON spine.events
    FOR EACH STATEMENT EXECUTE FUNCTION spine.register_event_transaction();

-- Runs at COMMIT (deferred), once per emitting transaction.
--
-- Only for rows registered without a commit_seq: pg_restore copies spine.events
-- and spine.event_commits back with their own txids and commit_seqs, and those
-- must keep them (renumbering would reorder history and move every sink's
-- cursor). The restore's COPY into spine.events still registers the restoring
-- transaction, which has no events of its own: that registration is dropped
-- here instead of stamped (tests/tests/backup.rs).
CREATE FUNCTION spine.stamp_event_commit() RETURNS trigger
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
COMMENT ON FUNCTION spine.stamp_event_commit() IS
    'Deferred trigger: assigns commit_seq in commit order and sends one NOTIFY per transaction.';
CREATE CONSTRAINT TRIGGER event_commits_stamp
    AFTER INSERT ON spine.event_commits
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.commit_seq IS NULL) EXECUTE FUNCTION spine.stamp_event_commit();

-- What consumers read: committed events in commit order after a cursor.
--
-- Written so that one plan is right whatever the tables' statistics: the next
-- commits in order (at most max_events of them: each has an event), then each
-- commit's events by the (txid, seq) index of the one partition that holds them.
-- The plan is generic (planned without the arguments' values) and cached for
-- the session: a plain join's plan followed the statistics (once autovacuum had
-- analyzed a few thousand small commits beside a backlog of large ones, the
-- planner hashed all of spine.events on every read, 20-50 ms each: auto_explain,
-- 2026-12-06), and planning over a partitioned table each call cost the relay
-- 0.4-0.5 ms per read next to the unpartitioned table (`bench scale`, SQL
-- function, 2026-12-07). Never in parallel: a partition just filled and not yet
-- analyzed made the planner gather the commits with two workers, and launching
-- them took 47 of the read's 55 ms. Never JIT-compiled: the generic plan's cost
-- estimate (1.2M for a 1.4 ms walk) passed jit_above_cost, and compiling took
-- 48 ms of each read at 333k events a day (auto_explain, `bench scale`).
CREATE FUNCTION spine.events_after(
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

-- Sinks: one cursor per consumer (nats relay, search sync, …).
CREATE TABLE spine.sinks (
    name              text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    kind              text NOT NULL,
    cursor_commit_seq bigint NOT NULL DEFAULT 0,
    cursor_seq        bigint NOT NULL DEFAULT 0,
    delivered         bigint NOT NULL DEFAULT 0,
    advanced_at       timestamptz,
    last_error        text,
    last_error_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE spine.sinks IS
    'Consumers of spine.events and their cursors (commit_seq, seq): everything up to the cursor is delivered.';

-- Creates the sink if missing (from the start of retained history, or from now).
CREATE FUNCTION spine.ensure_sink(sink_name text, sink_kind text, from_start boolean DEFAULT true)
    RETURNS spine.sinks
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s spine.sinks;
BEGIN
    IF sink_name IS NULL OR sink_name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid sink name %', quote_nullable(sink_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use lowercase letters, digits and _, starting with a letter.';
    END IF;
    INSERT INTO spine.sinks AS t (name, kind, cursor_commit_seq)
    VALUES (sink_name, sink_kind,
            CASE WHEN from_start THEN 0
                 ELSE coalesce((SELECT max(commit_seq) FROM spine.event_commits), 0) END)
    ON CONFLICT (name) DO NOTHING;
    SELECT * INTO s FROM spine.sinks WHERE name = sink_name;
    RETURN s;
END
$$;
COMMENT ON FUNCTION spine.ensure_sink(text, text, boolean) IS
    'Creates a sink if missing and returns it; from_start=false starts at the current head.';

CREATE FUNCTION spine.drop_sink(sink_name text) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM spine.sinks WHERE name = sink_name RETURNING 1)
    SELECT count(*) > 0 FROM gone
$$;
COMMENT ON FUNCTION spine.drop_sink(text) IS
    'Removes a sink and its cursor (it no longer holds back retention); true if it existed.';

-- Moves a sink's cursor forward after its consumer delivered up to (commit_seq, seq).
-- Never moves it backwards: a stale relay that lost its lock cannot rewind progress.
CREATE FUNCTION spine.advance_sink(sink_name text, to_commit_seq bigint, to_seq bigint, delivered_count bigint)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE spine.sinks
       SET cursor_commit_seq = to_commit_seq, cursor_seq = to_seq,
           delivered = delivered + delivered_count, advanced_at = now(), last_error = NULL
     WHERE name = sink_name
       AND (to_commit_seq, to_seq) > (cursor_commit_seq, cursor_seq);
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM spine.sinks WHERE name = sink_name) THEN
        RAISE EXCEPTION 'sink "%" does not exist', sink_name USING ERRCODE = 'undefined_object';
    END IF;
END
$$;
COMMENT ON FUNCTION spine.advance_sink(text, bigint, bigint, bigint) IS
    'Advances a sink cursor (forward only) after delivery.';

CREATE FUNCTION spine.record_sink_error(sink_name text, error text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE spine.sinks SET last_error = left(error, 2000), last_error_at = now()
     WHERE name = sink_name
$$;
COMMENT ON FUNCTION spine.record_sink_error(text, text) IS
    'Records the last delivery error of a sink (shown by spine.sink_status).';

CREATE VIEW spine.sink_status AS
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

-- Partitions and retention.
--
-- spine.events and spine.event_commits are partitioned by range of tx_started_at
-- with the same bounds (partitions.sql), so a transaction's events and its
-- commit row sit in partitions of one range, and events_after's lookup by
-- (txid, tx_started_at) touches a single partition. Rows written before a
-- partition exists for their range (a fresh install before its first
-- maintenance, a database upgraded from 0.1.0) go to the default partitions,
-- which purge_events still trims by DELETE.
CREATE TABLE spine.events_default PARTITION OF spine.events DEFAULT;
CREATE TABLE spine.event_commits_default PARTITION OF spine.event_commits DEFAULT;
SELECT spine.index_partition('spine.events_default');
SELECT spine.index_partition('spine.event_commits_default');

-- A function, not a view: a write to a view that cannot be updated fails with
-- 55000 before the privilege check; a function is simply not granted.
CREATE FUNCTION spine.event_partitions() RETURNS TABLE (
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

CREATE FUNCTION spine.create_event_partitions("at" timestamptz DEFAULT now()) RETURNS integer
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
CREATE FUNCTION spine.drop_event_partitions(keep interval, "at" timestamptz DEFAULT now(),
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
CREATE FUNCTION spine.event_partition_delivered(commits_part regclass) RETURNS boolean
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
CREATE FUNCTION spine.purge_events(keep interval DEFAULT NULL) RETURNS bigint
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

-- Access. Users read their own events; only spine.emit() writes.
ALTER TABLE spine.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.event_commits ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.sinks ENABLE ROW LEVEL SECURITY;
CREATE POLICY events_owner_reads ON spine.events
    FOR SELECT TO authenticated USING (owner_id = auth.uid());
GRANT SELECT ON spine.events TO authenticated, service_role;
GRANT SELECT ON spine.event_commits, spine.sinks, spine.sink_status TO service_role;

-- The Spine processes connected to this database, from pg_stat_activity: each
-- names itself in application_name ('spine-worker/0.2.0', see spine_db::DbConfig).
-- What `spine status` and the Studio's overview show as process health: a
-- process that is not here is not running (or cannot reach the database).
-- SECURITY DEFINER: without pg_read_all_stats, other roles' sessions show no
-- times or addresses.
CREATE FUNCTION spine.processes() RETURNS TABLE (
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
