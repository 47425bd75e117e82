-- Jobs: a prioritized queue with leases, retries, dead letter and archive.
--
-- Life of a job:  queued ──fetch──► running ──complete──► (archive: completed)
--                   ▲                 │ fail / lease expired
--                   └── retrying ◄────┤ (attempts < max_attempts, after a backoff)
--                                     └──► dead ──redrive──► queued
-- spine.jobs holds only live work (queued, retrying, running, dead); finished jobs
-- move to spine.jobs_archive (kept for the queue's retention, then deleted), so the
-- hot table and its indexes stay the size of the backlog, not of the history.

CREATE TYPE spine.job_priority AS ENUM ('realtime', 'interactive', 'background');
COMMENT ON TYPE spine.job_priority IS
    'realtime > interactive > background: fetch_jobs serves them in this order.';

CREATE TYPE spine.job_state AS ENUM ('queued', 'retrying', 'running', 'dead', 'completed', 'cancelled');
COMMENT ON TYPE spine.job_state IS
    'queued/retrying: waiting for run_at; running: leased; dead: out of attempts; completed/cancelled: archived.';

CREATE TABLE spine.queues (
    name            text PRIMARY KEY,
    max_concurrency integer CHECK (max_concurrency IS NULL OR max_concurrency > 0),
    retention       interval NOT NULL DEFAULT '1 day' CHECK (retention >= interval '0'),
    -- Users (authenticated) may enqueue only into queues that say so: a queue's
    -- handler acts with the worker's reach (the http queue can call any URL).
    user_enqueue    boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- At most rate_limit jobs start per rate_interval (fixed windows, across all
    -- workers: fetch_jobs counts them under the queue's lock).
    rate_limit      integer CHECK (rate_limit IS NULL OR rate_limit > 0),
    rate_interval   interval NOT NULL DEFAULT '1 second' CHECK (rate_interval > interval '0')
);
COMMENT ON TABLE spine.queues IS
    'Job queues: an optional cap on running jobs, how long finished jobs stay in the archive, and whether users may enqueue.';

-- Backends keep a copy of this table for spine.enqueue; any change reaches them,
-- also when replication or a restore runs with session_replication_role = replica.
CREATE TRIGGER queues_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON spine.queues
    FOR EACH STATEMENT EXECUTE FUNCTION spine.cached_table_changed();
ALTER TABLE spine.queues ENABLE ALWAYS TRIGGER queues_changed;

-- spine.caller_is_privileged() is defined in Rust (src/caller.rs).

-- Raises 42704 for an unknown queue, 42501 when a user enqueues into a queue that
-- does not accept users' jobs. Called from SECURITY DEFINER functions (it runs with
-- their rights), among them spine.enqueue, which keeps the caller's search_path:
-- hence a search_path of its own.
CREATE FUNCTION spine.check_enqueue_allowed(queue_name text) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    open_to_users boolean;
BEGIN
    SELECT q.user_enqueue INTO open_to_users FROM spine.queues q WHERE q.name = queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'queue "%" does not exist', queue_name USING ERRCODE = 'undefined_object',
            HINT = 'Create it with spine.create_queue(name).';
    END IF;
    IF NOT open_to_users AND NOT spine.caller_is_privileged() THEN
        RAISE EXCEPTION 'queue "%" does not accept jobs from users', queue_name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Create it with spine.create_queue(name, user_enqueue => true) to allow that.';
    END IF;
END
$$;

CREATE TABLE spine.jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key to spine.queues: enqueue checks the queue, and a key check
    -- would lock the queue's row on every insert (contention between enqueuers).
    queue           text NOT NULL,
    owner_id        uuid,
    priority        spine.job_priority NOT NULL DEFAULT 'interactive',
    -- Live states only: they are the enum's first four, so this reads "not completed
    -- or cancelled". Written as one comparison because PostgreSQL parses a CHECK's
    -- stored expression on every INSERT it checks, and the IN-list form cost ~3 µs
    -- of each single-job enqueue.
    state           spine.job_state NOT NULL DEFAULT 'queued'
                    CHECK (state < 'completed'),
    payload         jsonb NOT NULL,
    run_at          timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    idempotency_key text,
    lease_until     timestamptz,
    worker          text,
    errors          jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- spine.enqueue_debounced's key: while a job with it waits, another enqueue
    -- with the key moves that job (and takes its payload) instead of adding one.
    debounce_key    text
);
-- What fetch_jobs walks: ready jobs (queued, retrying: the enum's first two) of a
-- queue in serving order. One comparison, not an IN list: a FOR UPDATE scan
-- re-evaluates the predicate on every row it reads (measured: +2 % drain).
CREATE INDEX jobs_ready_idx ON spine.jobs (queue, priority, run_at, id)
    WHERE state < 'running';
-- Running jobs: lease expiry and concurrency caps.
CREATE INDEX jobs_running_idx ON spine.jobs (queue, lease_until) WHERE state = 'running';
CREATE INDEX jobs_dead_idx ON spine.jobs (queue) WHERE state = 'dead';
-- Users' own jobs (RLS); system jobs (no owner) stay out of it.
CREATE INDEX jobs_owner_idx ON spine.jobs (owner_id) WHERE owner_id IS NOT NULL;
-- The waiting job of a debounce key (only debounced jobs are in it).
CREATE INDEX jobs_debounce_idx ON spine.jobs (queue, debounce_key)
    WHERE debounce_key IS NOT NULL AND state < 'running';
-- One live job per (queue, owner, key).
CREATE UNIQUE INDEX jobs_idempotency_idx
    ON spine.jobs (queue, coalesce(owner_id, '00000000-0000-0000-0000-000000000000'), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Every job is inserted, updated once per attempt and deleted: dead tuples pile up
-- at the head of jobs_ready_idx, and each fetch walks over them until VACUUM removes
-- them. Vacuum after a fixed number of dead rows, at full speed, so a large backlog
-- does not slow draining down (measured: 1M jobs drain at ~51k/s with this, ~16k/s
-- with the defaults). The cluster's autovacuum_naptime decides how soon it starts.
ALTER TABLE spine.jobs SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_vacuum_cost_delay = 0
);
COMMENT ON TABLE spine.jobs IS
    'Live jobs (queued, retrying, running, dead). Write through spine.enqueue/fetch_jobs/complete_jobs/fail_job.';
COMMENT ON COLUMN spine.jobs.errors IS 'Error history: [{attempt, at, error}], newest last.';
COMMENT ON COLUMN spine.jobs.lease_until IS 'A running job whose lease passes returns to the queue.';

CREATE TABLE spine.jobs_archive (
    id              bigint NOT NULL,
    queue           text NOT NULL,
    owner_id        uuid,
    priority        spine.job_priority NOT NULL,
    state           spine.job_state NOT NULL CHECK (state IN ('completed', 'cancelled')),
    payload         jsonb NOT NULL,
    attempts        integer NOT NULL,
    max_attempts    integer NOT NULL,
    idempotency_key text,
    errors          jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (finished_at);
-- Partitions of spine.job_archive_partition_interval (partitions.sql), made ahead
-- and dropped whole by spine.jobs_maintenance; keys and indexes per partition
-- (spine.index_partition): id, finished_at, the idempotency key, owner_id.
CREATE TABLE spine.jobs_archive_default PARTITION OF spine.jobs_archive DEFAULT;
SELECT spine.index_partition('spine.jobs_archive_default');
-- A queue's finished jobs go with it (maintenance purges by the queue's retention,
-- which a dropped queue no longer has).
CREATE FUNCTION spine.queue_dropped() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM spine.jobs_archive a WHERE a.queue = OLD.name;
    RETURN NULL;
END
$$;
CREATE TRIGGER queue_dropped AFTER DELETE ON spine.queues
    FOR EACH ROW EXECUTE FUNCTION spine.queue_dropped();

COMMENT ON TABLE spine.jobs_archive IS
    'Finished jobs (completed, cancelled), kept for their queue''s retention; their idempotency keys stay taken meanwhile.';

-- Starts per rate-limited queue and window (fetch_jobs writes them under the
-- queue's lock; jobs_maintenance deletes windows older than a day).
CREATE TABLE spine.queue_rate_windows (
    queue        text        NOT NULL,
    window_start timestamptz NOT NULL,
    started      integer     NOT NULL,
    PRIMARY KEY (queue, window_start)
);
COMMENT ON TABLE spine.queue_rate_windows IS
    'How many jobs of a rate-limited queue started in each window (fixed windows of the queue''s rate_interval).';

-- Schedules: pg_cron entries that enqueue jobs (so scheduled work gets retries,
-- dead letter and stats). A schedule belongs to a user (its jobs carry the owner,
-- so a function it calls acts for them, with their consents) or to nobody: a
-- system schedule of service_role, whose function jobs act as service_role.
CREATE TABLE spine.schedules (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id    uuid,
    name        text NOT NULL,
    cron        text NOT NULL,
    queue       text NOT NULL REFERENCES spine.queues (name) ON UPDATE CASCADE,
    payload     jsonb NOT NULL,
    priority    spine.job_priority NOT NULL DEFAULT 'interactive',
    cron_job_id bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (owner_id, name)
);
COMMENT ON TABLE spine.schedules IS
    'Recurring jobs: pg_cron job spine:<name> (a user''s: spine:<owner>:<name>) enqueues payload into queue on the cron schedule, for owner_id (NULL: a system schedule).';

CREATE FUNCTION spine.create_queue(
    queue_name text,
    max_concurrency integer DEFAULT NULL,
    retention interval DEFAULT '1 day',
    user_enqueue boolean DEFAULT false,
    rate_limit integer DEFAULT NULL,
    rate_interval interval DEFAULT '1 second'
) RETURNS spine.queues
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q spine.queues;
BEGIN
    PERFORM spine.check_queue_name(queue_name);
    IF max_concurrency IS NOT NULL AND max_concurrency < 1 THEN
        RAISE EXCEPTION 'max_concurrency must be at least 1, or NULL for no cap'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retention IS NULL OR retention < interval '0' THEN
        RAISE EXCEPTION 'retention must be a non-negative interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rate_limit IS NOT NULL AND rate_limit < 1 THEN
        RAISE EXCEPTION 'rate_limit must be at least 1, or NULL for no limit'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rate_interval IS NULL OR rate_interval <= interval '0' OR rate_interval > interval '1 day' THEN
        RAISE EXCEPTION 'rate_interval must be positive and at most a day'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO spine.queues AS t (name, max_concurrency, retention, user_enqueue, rate_limit, rate_interval)
    VALUES (queue_name, create_queue.max_concurrency, create_queue.retention,
            coalesce(create_queue.user_enqueue, false), create_queue.rate_limit, create_queue.rate_interval)
    ON CONFLICT (name) DO UPDATE
        SET max_concurrency = excluded.max_concurrency, retention = excluded.retention,
            user_enqueue = excluded.user_enqueue, rate_limit = excluded.rate_limit,
            rate_interval = excluded.rate_interval
    RETURNING * INTO q;
    RETURN q;
END
$$;
COMMENT ON FUNCTION spine.create_queue(text, integer, interval, boolean, integer, interval) IS
    'Creates a queue or changes its cap, retention, whether users (authenticated) may enqueue into it, and its rate limit (rate_limit starts per rate_interval).';

-- The owner-scoped key used by the idempotency indexes.
CREATE FUNCTION spine.job_owner_key(owner uuid) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(owner, '00000000-0000-0000-0000-000000000000'::uuid)
$$;

-- Serialises everything that can move an idempotency key between the live table and
-- the archive (enqueue with a key, complete, cancel), so a replayed enqueue never
-- slips between a completion's delete and its archive insert.
CREATE FUNCTION spine.lock_idempotency_key(queue text, owner uuid, key text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(1397770577,
        pg_catalog.hashtext(queue || '/' || coalesce(owner::text, '-') || '/' || key))
$$;

-- The keyed enqueue: a key live or archived for (queue, owner) returns that job.
-- No permission checks of its own: spine.enqueue checks the caller first, and the
-- rules engine checks the rule's owner.
-- Wakes idle job runners of a queue once this transaction commits: NOTIFY on
-- spine.jobs_channel with the queue's name as payload, followed by ' later' when
-- the job is not due yet (spine-core's jobs::wakeup reads it). Postgres sends a
-- transaction's identical notifications once, so a batch of 10,000 jobs costs one,
-- and a rollback sends none. Runners also poll, so a lost wake-up only delays.
-- (spine.enqueue, the hot path in Rust, calls pg_notify directly.)
CREATE FUNCTION spine.wake_runners(queue text, due timestamptz DEFAULT now()) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_notify(coalesce(nullif(current_setting('spine.jobs_channel', true), ''), 'spine_jobs'),
                     wake_runners.queue || CASE WHEN wake_runners.due > now() THEN ' later' ELSE '' END)
$$;
COMMENT ON FUNCTION spine.wake_runners(text, timestamptz) IS
    'Wakes the job runners of a queue after commit (NOTIFY on spine.jobs_channel; payload: the queue, with '' later'' for a job due after now).';

CREATE FUNCTION spine.enqueue_keyed(
    queue text,
    owner uuid,
    payload jsonb,
    priority spine.job_priority,
    run_at timestamptz,
    idempotency_key text,
    max_attempts integer
) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    job_id bigint;
BEGIN
    PERFORM spine.lock_idempotency_key(enqueue_keyed.queue, enqueue_keyed.owner, enqueue_keyed.idempotency_key);
    -- A finished job keeps its key for the queue's retention: replays do nothing.
    SELECT a.id INTO job_id FROM spine.jobs_archive a
     WHERE a.queue = enqueue_keyed.queue
       AND spine.job_owner_key(a.owner_id) = spine.job_owner_key(enqueue_keyed.owner)
       AND a.idempotency_key = enqueue_keyed.idempotency_key;
    IF job_id IS NOT NULL THEN
        RETURN job_id;
    END IF;
    -- Live: under REPEATABLE READ this also finds a job completed after the
    -- snapshot (its row is gone only for later snapshots), which the insert below
    -- would not take as a conflict.
    SELECT j.id INTO job_id FROM spine.jobs j
     WHERE j.queue = enqueue_keyed.queue
       AND spine.job_owner_key(j.owner_id) = spine.job_owner_key(enqueue_keyed.owner)
       AND j.idempotency_key = enqueue_keyed.idempotency_key;
    IF job_id IS NOT NULL THEN
        RETURN job_id;
    END IF;
    -- Enqueued and completed since this transaction's snapshot (REPEATABLE READ or
    -- SERIALIZABLE only; src/jobs/keys.rs).
    IF spine.key_archived_since_snapshot(enqueue_keyed.queue, enqueue_keyed.owner,
                                         enqueue_keyed.idempotency_key) THEN
        RAISE EXCEPTION 'a job with idempotency key "%" was enqueued and completed after this transaction began',
            enqueue_keyed.idempotency_key
            USING ERRCODE = 'serialization_failure', HINT = 'Retry the transaction.';
    END IF;
    PERFORM spine.check_job_payload(enqueue_keyed.queue, enqueue_keyed.payload);
    INSERT INTO spine.jobs (queue, owner_id, priority, payload, run_at, idempotency_key, max_attempts)
    VALUES (enqueue_keyed.queue, enqueue_keyed.owner, enqueue_keyed.priority, enqueue_keyed.payload,
            coalesce(enqueue_keyed.run_at, now()), enqueue_keyed.idempotency_key, enqueue_keyed.max_attempts)
    ON CONFLICT (queue, spine.job_owner_key(owner_id), idempotency_key)
        WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id INTO job_id;
    IF job_id IS NOT NULL THEN
        PERFORM spine.wake_runners(enqueue_keyed.queue, coalesce(enqueue_keyed.run_at, now()));
    ELSE
        SELECT j.id INTO job_id FROM spine.jobs j
         WHERE j.queue = enqueue_keyed.queue
           AND spine.job_owner_key(j.owner_id) = spine.job_owner_key(enqueue_keyed.owner)
           AND j.idempotency_key = enqueue_keyed.idempotency_key;
    END IF;
    RETURN job_id;
END
$$;
COMMENT ON FUNCTION spine.enqueue_keyed(text, uuid, jsonb, spine.job_priority, timestamptz, text, integer) IS
    'Enqueues a job for owner with an idempotency key, or returns the live or archived job that has it. Checks no permissions: callers do.';

-- spine.enqueue(queue, payload, priority, run_at, idempotency_key, max_attempts) is
-- defined in Rust (src/jobs/enqueue.rs): it is the producers' hot path.

CREATE FUNCTION spine.enqueue_batch(
    queue text,
    payloads jsonb[],
    priority spine.job_priority DEFAULT 'interactive',
    run_at timestamptz DEFAULT now(),
    max_attempts integer DEFAULT 5
) RETURNS bigint[]
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    IF payloads IS NULL OR array_position(payloads, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'payloads must not be NULL or contain NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF max_attempts IS NULL OR max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1 (got %)', coalesce(max_attempts::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF priority IS NULL THEN
        RAISE EXCEPTION 'priority must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM spine.check_enqueue_allowed(enqueue_batch.queue);
    -- Jobs without an owner are system jobs: only privileged callers make those.
    IF auth.uid() IS NULL AND NOT spine.caller_is_privileged() THEN
        RAISE EXCEPTION 'permission denied: jobs belong to a user: request.jwt.claims has no sub'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM spine.check_job_payload(enqueue_batch.queue, p) FROM unnest(payloads) AS u(p);
    WITH inserted AS (
        INSERT INTO spine.jobs (queue, owner_id, priority, payload, run_at, max_attempts)
        SELECT queue, auth.uid(), priority, p, coalesce(run_at, now()), max_attempts
          FROM unnest(payloads) WITH ORDINALITY AS u(p, ord)
         ORDER BY ord
        RETURNING id
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO ids FROM inserted;
    IF cardinality(ids) > 0 THEN
        PERFORM spine.wake_runners(enqueue_batch.queue, coalesce(enqueue_batch.run_at, now()));
    END IF;
    RETURN ids;
END
$$;
COMMENT ON FUNCTION spine.enqueue_batch(text, jsonb[], spine.job_priority, timestamptz, integer) IS
    'Enqueues one job per payload in one statement; returns their ids in payload order.';

-- Returns running jobs whose lease passed to the queue (or to dead, when out of
-- attempts), recording why in their error history. Jobs whose row another
-- transaction holds (a late heartbeat, a completion under way) are skipped, not
-- waited for: that transaction is deciding them, and fetch_jobs, which calls this
-- first, must not stall behind it.
CREATE FUNCTION spine.reclaim_expired_leases(queues text[] DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE spine.jobs j
       SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'retrying' END::spine.job_state,
           run_at = now(),
           errors = j.errors || jsonb_build_object(
               'attempt', j.attempts, 'at', now(),
               'error', format('lease expired: worker %s stopped heartbeating', j.worker)),
           lease_until = NULL, worker = NULL, updated_at = now()
     WHERE j.id = ANY (ARRAY(
               SELECT r.id FROM spine.jobs r
                WHERE r.state = 'running' AND r.lease_until < now()
                  AND (queues IS NULL OR r.queue = ANY (queues))
                  FOR UPDATE SKIP LOCKED))
       -- Rechecked on the version locked above, should it be newer than this
       -- statement's snapshot.
       AND j.state = 'running' AND j.lease_until < now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- fetch_jobs and complete_jobs are the drain's two calls per batch. Both keep one
-- generic plan per backend: left to choose, PL/pgSQL planned fetch_jobs' statement
-- afresh on every call (~0.4 ms of a 1.3 ms fetch of 100), because the generic
-- plan's row estimates (LIMIT of a parameter) looked worse than they run. And no
-- JIT: a generic plan's estimates over a large backlog pass jit_above_cost, and
-- compiling on every call cut the drain by half (measured: 35k jobs/s vs 70k).
CREATE FUNCTION spine.fetch_jobs(
    queues text[],
    worker text,
    n integer DEFAULT 1,
    lease interval DEFAULT '30 seconds'
) RETURNS SETOF spine.jobs
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
    SET jit = off
    -- The generic plan is made once per backend, for the table as it is then. Made
    -- over a small queue it read the whole table and sorted it; after a burst of
    -- 500k jobs that plan took 200 ms a fetch until autovacuum's next ANALYZE
    -- (up to a minute with the default naptime). The ready index serves every size.
    SET enable_seqscan = off
    SET enable_bitmapscan = off AS $$
DECLARE
    expired boolean;
    capped text[];
    rated boolean;
BEGIN
    IF queues IS NULL OR cardinality(queues) = 0 THEN
        RAISE EXCEPTION 'queues must name at least one queue' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF worker IS NULL OR worker = '' THEN
        RAISE EXCEPTION 'worker must identify the caller' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n IS NULL OR n < 1 THEN
        RAISE EXCEPTION 'n must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lease IS NULL OR lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One statement finds both expired leases (an index probe when there are none)
    -- and the capped queues among these: an uncapped fetch runs no second one (each
    -- costs an executor start and end, ~3 % of the drain).
    SELECT EXISTS (SELECT 1 FROM spine.jobs r
                    WHERE r.queue = ANY (queues) AND r.state = 'running' AND r.lease_until < now()),
           ARRAY(SELECT q.name FROM spine.queues q
                  WHERE q.name = ANY (queues)
                    AND (q.max_concurrency IS NOT NULL OR q.rate_limit IS NOT NULL)
                  ORDER BY q.name)
      INTO expired, capped;
    -- Rate limits count starts per window, under the same per-queue lock.
    rated := cardinality(capped) > 0 AND EXISTS (
        SELECT 1 FROM spine.queues q WHERE q.name = ANY (capped) AND q.rate_limit IS NOT NULL);
    -- Expired leases back to their queues first (a queue's running jobs are
    -- counted below), and before the locks below, which it does not need.
    IF expired THEN
        PERFORM spine.reclaim_expired_leases(queues);
    END IF;
    -- Capped queues: count running jobs under a per-queue lock, taken in name order
    -- (no deadlock between fetchers), held until this transaction ends.
    IF cardinality(capped) > 0 THEN
        PERFORM pg_advisory_xact_lock(1397770576, hashtext(c.name))
           FROM unnest(capped) WITH ORDINALITY AS c(name, i)
          ORDER BY c.i;
    END IF;
    RETURN QUERY
    WITH room AS (
        SELECT q.name,
               least(
                   CASE WHEN q.max_concurrency IS NULL THEN n
                        ELSE greatest(0, least(n, q.max_concurrency - (
                            SELECT count(*) FROM spine.jobs r
                             WHERE r.queue = q.name AND r.state = 'running')::integer))
                   END,
                   CASE WHEN q.rate_limit IS NULL THEN n
                        ELSE greatest(0, q.rate_limit - coalesce((
                            SELECT w.started FROM spine.queue_rate_windows w
                             WHERE w.queue = q.name
                               AND w.window_start = date_bin(q.rate_interval, now(), timestamptz '2001-01-01')), 0))
                   END) AS room
          FROM spine.queues q
         WHERE q.name = ANY (queues)
    ), picked AS (
        SELECT c.id
          FROM room
          CROSS JOIN LATERAL (
              -- Not by ctid: after a concurrent committed change LockRows hands
              -- out the newest version's address, which this statement's snapshot
              -- cannot see, so the UPDATE would skip the job it locked. By id the
              -- UPDATE finds the visible version and follows it to the newest.
              SELECT j.id, j.priority, j.run_at
                FROM spine.jobs j
               WHERE j.queue = room.name AND j.state < 'running' AND j.run_at <= now()
               ORDER BY j.priority, j.run_at, j.id
               LIMIT room.room
               FOR UPDATE SKIP LOCKED
          ) c
         ORDER BY c.priority, c.run_at, c.id
         LIMIT n
    )
    , leased AS (
        UPDATE spine.jobs j
           SET state = 'running', attempts = j.attempts + 1, lease_until = now() + lease,
               worker = fetch_jobs.worker, updated_at = now()
         -- An id array, not a join: the generic plan cannot know how many rows
         -- LIMIT n leaves, and for a join it guessed thousands and hashed the table.
         WHERE j.id = ANY (ARRAY(SELECT picked.id FROM picked))
        RETURNING j.*
    ), counted AS (
        -- Skipped at run time when no queue here is rate-limited (rated false).
        INSERT INTO spine.queue_rate_windows AS w (queue, window_start, started)
        SELECT l.queue, date_bin(q.rate_interval, now(), timestamptz '2001-01-01'), count(*)
          FROM leased l JOIN spine.queues q ON q.name = l.queue
         WHERE rated AND q.rate_limit IS NOT NULL
         GROUP BY l.queue, q.rate_interval
        ON CONFLICT (queue, window_start) DO UPDATE SET started = w.started + excluded.started
    )
    -- UPDATE … RETURNING has no order of its own: hand jobs out in serving order.
    SELECT * FROM leased l ORDER BY l.priority, l.run_at, l.id;
END
$$;
COMMENT ON FUNCTION spine.fetch_jobs(text[], text, integer, interval) IS
    'Leases up to n ready jobs of the given queues: realtime before interactive before background, then run_at, then id; skips locked rows; honours queue caps; first returns expired leases to their queue.';

-- The DELETE finds the given jobs by primary key, one probe each, whatever else
-- the table holds. Written plainly, `state = 'running'` let the planner walk the
-- running index instead, all running jobs, which it judged cheap from statistics
-- taken when few ran: with 20k running jobs a completion of 100 took ~10 ms
-- instead of ~1 ms. So the state is compared with a value the planner cannot see
-- (a sub-select), and scans of the whole table are off.
CREATE FUNCTION spine.complete_jobs(ids bigint[], worker text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
    SET jit = off
    SET enable_seqscan = off
    SET enable_bitmapscan = off AS $$
DECLARE
    n bigint;
BEGIN
    -- Keyed jobs: take their key locks (in a fixed order, against deadlocks) first.
    -- Left to the planner: walking the key index is cheapest while few live jobs
    -- have keys (a probe per given job costs ~3 % of the drain).
    PERFORM spine.lock_idempotency_key(k.queue, k.owner_id, k.idempotency_key)
       FROM (SELECT j.queue, j.owner_id, j.idempotency_key FROM spine.jobs j
              WHERE j.id = ANY (ids) AND j.idempotency_key IS NOT NULL
              ORDER BY j.queue, j.owner_id, j.idempotency_key) k;
    WITH done AS (
        DELETE FROM spine.jobs j
         WHERE j.id = ANY (ids) AND j.state = (SELECT 'running'::spine.job_state)
           AND (complete_jobs.worker IS NULL OR j.worker = complete_jobs.worker)
        RETURNING j.*
    ), kept AS (
        INSERT INTO spine.jobs_archive
            (id, queue, owner_id, priority, state, payload, attempts, max_attempts,
             idempotency_key, errors, created_at)
        SELECT d.id, d.queue, d.owner_id, d.priority, 'completed', d.payload, d.attempts,
               d.max_attempts, d.idempotency_key, d.errors, d.created_at
          FROM done d JOIN spine.queues q ON q.name = d.queue
         WHERE q.retention > interval '0'
        RETURNING 1
    )
    SELECT count(*) INTO n FROM done;
    RETURN n;
END
$$;
COMMENT ON FUNCTION spine.complete_jobs(bigint[], text) IS
    'Completes running jobs (others are ignored; with worker, only jobs that worker holds: a worker whose lease passed cannot complete the new holder''s run) and archives them; returns how many completed.';

CREATE FUNCTION spine.fail_job(id bigint, error text, retry_in interval DEFAULT NULL, worker text DEFAULT NULL)
    RETURNS spine.job_state
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j spine.jobs;
    next_state spine.job_state;
    due timestamptz;
BEGIN
    IF retry_in IS NOT NULL AND retry_in < interval '0' THEN
        RAISE EXCEPTION 'retry_in must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO j FROM spine.jobs WHERE spine.jobs.id = fail_job.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', id USING ERRCODE = 'undefined_object';
    END IF;
    IF j.state <> 'running' THEN
        RAISE EXCEPTION 'job % is %, not running', id, j.state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF fail_job.worker IS NOT NULL AND j.worker IS DISTINCT FROM fail_job.worker THEN
        RAISE EXCEPTION 'job % is held by worker %, not %', id, j.worker, fail_job.worker
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Its lease passed and it was leased again.';
    END IF;
    next_state := CASE WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'retrying' END;
    UPDATE spine.jobs
       SET state = next_state,
           run_at = CASE WHEN next_state = 'dead' THEN spine.jobs.run_at
                         ELSE now() + coalesce(retry_in, spine.retry_backoff(j.id, j.attempts)) END,
           errors = spine.jobs.errors || jsonb_build_object(
               'attempt', j.attempts, 'at', now(), 'error', coalesce(error, 'unknown error')),
           lease_until = NULL, worker = NULL, updated_at = now()
     WHERE spine.jobs.id = fail_job.id
    RETURNING spine.jobs.run_at INTO due;
    -- Runners learn when the retry is due (they sleep until the earliest run_at).
    IF next_state = 'retrying' THEN
        PERFORM spine.wake_runners(j.queue, due);
    END IF;
    RETURN next_state;
END
$$;
COMMENT ON FUNCTION spine.fail_job(bigint, text, interval, text) IS
    'Records a failed attempt (with worker: only if that worker holds the job): retries after retry_in (default: exponential backoff with jitter), or moves the job to dead after max_attempts. Returns the new state.';

-- Heartbeats and releases find their jobs by primary key, as complete_jobs does.
CREATE FUNCTION spine.heartbeat(ids bigint[], lease interval DEFAULT '30 seconds', worker text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    SET enable_bitmapscan = off AS $$
DECLARE
    n bigint;
BEGIN
    IF lease IS NULL OR lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE spine.jobs SET lease_until = now() + lease, updated_at = now()
     WHERE id = ANY (ids) AND state = (SELECT 'running'::spine.job_state)
       AND (heartbeat.worker IS NULL OR spine.jobs.worker = heartbeat.worker);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION spine.heartbeat(bigint[], interval, text) IS
    'Extends the leases of running jobs; returns how many are still held.';

-- A worker shutting down hands back jobs it has not started or cannot finish: they
-- return to the queue without the attempt counting.
CREATE FUNCTION spine.release_jobs(ids bigint[], worker text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    SET enable_bitmapscan = off AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE spine.jobs
       SET state = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'queued' END::spine.job_state,
           attempts = greatest(attempts - 1, 0), run_at = now(),
           lease_until = NULL, worker = NULL, updated_at = now()
     WHERE id = ANY (ids) AND state = (SELECT 'running'::spine.job_state)
       AND (release_jobs.worker IS NULL OR spine.jobs.worker = release_jobs.worker);
    GET DIAGNOSTICS n = ROW_COUNT;
    -- Other runners take over what this one handed back.
    IF n > 0 THEN
        PERFORM spine.wake_runners(q)
           FROM (SELECT DISTINCT j.queue FROM spine.jobs j WHERE j.id = ANY (ids)) AS r(q);
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION spine.release_jobs(bigint[], text) IS
    'Returns running jobs to their queue without counting the attempt (a worker shutting down); returns how many.';

CREATE FUNCTION spine.redrive(queue text) RETURNS bigint
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

-- One job again, now: a dead one with fresh attempts (as redrive), a retrying
-- one without waiting for its backoff. Owners retry their own; service_role any.
CREATE FUNCTION spine.retry_job(id bigint) RETURNS boolean
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

-- Owners cancel their own jobs; service_role any.
CREATE FUNCTION spine.cancel_job(id bigint) RETURNS boolean
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

CREATE FUNCTION spine.queue_stats() RETURNS TABLE (
    queue text, priority spine.job_priority, queued bigint, running bigint, retrying bigint,
    dead bigint, oldest_queued_seconds double precision
)
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT j.queue, j.priority,
           count(*) FILTER (WHERE j.state = 'queued'),
           count(*) FILTER (WHERE j.state = 'running'),
           count(*) FILTER (WHERE j.state = 'retrying'),
           count(*) FILTER (WHERE j.state = 'dead'),
           coalesce(extract(epoch FROM now() - min(j.run_at) FILTER (
               WHERE j.state < 'running' AND j.run_at <= now())), 0)::double precision
      FROM spine.jobs j
     GROUP BY j.queue, j.priority
     ORDER BY j.queue, j.priority
$$;
COMMENT ON FUNCTION spine.queue_stats() IS
    'Per queue and priority: queued, running, retrying (failed, waiting for their next attempt), dead, and the age of the oldest ready job. Rows are filtered by RLS for users.';

-- Maintenance (pg_cron, every minute): expired leases back to their queues,
-- finished jobs past retention gone.
--
-- The archive is partitioned by finished_at; a partition goes as a whole once
-- its range ended the longest retention of any queue ago, so a finished job
-- stays for its queue's retention and at most one partition width more (its
-- idempotency key stays taken as long). Queues with a shorter retention than the
-- longest would otherwise keep their jobs for the longest: those are deleted at
-- their own retention, as are the default partition's rows.
CREATE FUNCTION spine.jobs_maintenance() RETURNS jsonb
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

CREATE FUNCTION spine.create_job_archive_partitions("at" timestamptz DEFAULT now()) RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT spine.create_partitions(ARRAY['spine.jobs_archive']::regclass[],
                                   spine.partition_width('spine.job_archive_partition_interval'), "at")
$$;
COMMENT ON FUNCTION spine.create_job_archive_partitions(timestamptz) IS
    'Makes the partitions of spine.jobs_archive for the ranges from at to four spine.job_archive_partition_interval ahead; returns how many. Run by spine.jobs_maintenance().';

-- Drops the archive partitions whose range ended the longest queue retention
-- before `at` (every queue's jobs in them are past retention); counted before
-- the locks (spine.lock_for_drop). Returns the number of jobs dropped.
CREATE FUNCTION spine.drop_job_archive_partitions("at" timestamptz DEFAULT now(),
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

CREATE FUNCTION spine.schedule(
    schedule_name text,
    cron text,
    queue text,
    payload jsonb,
    priority spine.job_priority DEFAULT 'interactive',
    owner uuid DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    job_id bigint;
    schedule_id bigint;
    privileged boolean := spine.caller_is_privileged();
    me uuid := auth.uid();
    for_owner uuid := schedule.owner;
    open_to_users boolean;
    per_user integer := coalesce(nullif(current_setting('spine.max_schedules_per_user', true), '')::integer, 20);
BEGIN
    PERFORM spine.check_queue_name(schedule_name);
    PERFORM spine.check_cron(cron);
    IF payload IS NULL THEN
        RAISE EXCEPTION 'payload must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF priority IS NULL THEN
        RAISE EXCEPTION 'priority must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Whose schedule: a user's own; service_role's for anyone it names, or nobody's.
    IF NOT privileged THEN
        IF me IS NULL THEN
            RAISE EXCEPTION 'schedules belong to a user: set request.jwt.claims (sub)'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF for_owner IS NOT NULL AND for_owner <> me THEN
            RAISE EXCEPTION 'only service_role may schedule for another user'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        for_owner := me;
    END IF;
    SELECT q.user_enqueue INTO open_to_users FROM spine.queues q WHERE q.name = schedule.queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'queue "%" does not exist', queue USING ERRCODE = 'undefined_object',
            HINT = 'Create it with spine.create_queue(name).';
    END IF;
    IF for_owner IS NOT NULL THEN
        -- A user's schedule enqueues where the user may, and calls functions as
        -- rules' call_function actions do (the function acts for the user).
        IF NOT open_to_users AND queue <> 'function' THEN
            RAISE EXCEPTION 'queue "%" does not accept users'' jobs, so it cannot be scheduled for a user', queue
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Schedule into a queue created with user_enqueue => true, or into the function queue.';
        END IF;
        IF queue = 'function' AND jsonb_typeof(payload -> 'function') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'a function job''s payload needs "function": the function''s name'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT privileged AND cron ~ '^\s*[0-9]+\s+seconds?\s*$' THEN
            RAISE EXCEPTION 'schedules in seconds are for service_role; a user''s run at most every minute'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NOT privileged AND (SELECT count(*) FROM spine.schedules s
                                WHERE s.owner_id = for_owner AND s.name <> schedule_name) >= per_user THEN
            RAISE EXCEPTION 'a user may have at most % schedules (spine.max_schedules_per_user)', per_user
                USING ERRCODE = 'program_limit_exceeded';
        END IF;
    END IF;
    IF to_regnamespace('cron') IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'CREATE EXTENSION pg_cron (it must be preloaded and cron.database_name set).';
    END IF;
    -- Intervals in seconds came with pg_cron 1.5; older versions fail obscurely.
    IF cron ~ '^\s*[0-9]+\s+seconds?\s*$' AND (
        SELECT string_to_array(split_part(extversion, '-', 1), '.')::int[] < ARRAY[1, 5]
          FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'schedules in seconds need pg_cron 1.5 or later (installed: %)',
            (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_cron')
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Use a five-field cron schedule (every minute at most), or upgrade pg_cron.';
    END IF;
    INSERT INTO spine.schedules AS s (owner_id, name, cron, queue, payload, priority)
    VALUES (for_owner, schedule_name, schedule.cron, schedule.queue, schedule.payload, schedule.priority)
    ON CONFLICT (owner_id, name) DO UPDATE
        SET cron = excluded.cron, queue = excluded.queue, payload = excluded.payload,
            priority = excluded.priority
    RETURNING s.id INTO schedule_id;
    -- pg_cron runs spine.fire_schedule, which reads the row: the payload stays out
    -- of cron.job, and a queue that stops accepting users' jobs stops the schedule.
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job_id USING
        spine.schedule_job_name(for_owner, schedule_name), cron,
        format('SELECT spine.fire_schedule(%s)', schedule_id);
    UPDATE spine.schedules s SET cron_job_id = job_id WHERE s.id = schedule_id;
    RETURN job_id;
END
$$;
COMMENT ON FUNCTION spine.schedule(text, text, text, jsonb, spine.job_priority, uuid) IS
    'Creates or replaces a recurring job: pg_cron enqueues payload into queue on the cron schedule, for the calling user (service_role: for owner, or a system schedule without one); returns the pg_cron job id.';

-- pg_cron's job name of a schedule: spine:<name>, or spine:<owner>:<name> for a user's.
CREATE FUNCTION spine.schedule_job_name(owner uuid, schedule_name text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT 'spine:' || CASE WHEN owner IS NULL THEN '' ELSE owner::text || ':' END || schedule_name
$$;

-- What pg_cron runs at each firing. The idempotency key is the schedule and its
-- firing time, so a firing that runs twice enqueues once. In UTC: local time
-- repeats an hour when daylight saving ends, and that hour's second firing would
-- count as the first.
CREATE FUNCTION spine.fire_schedule(schedule_id bigint) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s spine.schedules;
    open_to_users boolean;
BEGIN
    SELECT * INTO s FROM spine.schedules WHERE id = schedule_id;
    IF NOT FOUND THEN
        RETURN NULL;  -- removed while pg_cron still had it
    END IF;
    IF s.owner_id IS NOT NULL THEN
        SELECT q.user_enqueue INTO open_to_users FROM spine.queues q WHERE q.name = s.queue;
        IF NOT open_to_users AND s.queue <> 'function' THEN
            RAISE EXCEPTION 'schedule "%" of %: queue "%" no longer accepts users'' jobs', s.name, s.owner_id, s.queue
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN spine.enqueue_keyed(s.queue, s.owner_id, s.payload, s.priority, now(),
        'schedule:' || s.name || ':' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS'), 5);
END
$$;
COMMENT ON FUNCTION spine.fire_schedule(bigint) IS
    'One firing of a schedule (what its pg_cron job runs): enqueues its payload for its owner, once per schedule and second.';

CREATE FUNCTION spine.unschedule(schedule_name text, owner uuid DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    for_owner uuid := unschedule.owner;
BEGIN
    IF NOT spine.caller_is_privileged() THEN
        IF for_owner IS NOT NULL AND for_owner IS DISTINCT FROM auth.uid() THEN
            RAISE EXCEPTION 'only service_role may unschedule for another user'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        for_owner := auth.uid();
        IF for_owner IS NULL THEN
            RAISE EXCEPTION 'schedules belong to a user: set request.jwt.claims (sub)'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM spine.schedules s
                    WHERE s.name = schedule_name AND s.owner_id IS NOT DISTINCT FROM for_owner) THEN
        RETURN false;
    END IF;
    IF to_regnamespace('cron') IS NOT NULL THEN
        EXECUTE 'SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = $1'
            USING spine.schedule_job_name(for_owner, schedule_name);
    END IF;
    DELETE FROM spine.schedules s WHERE s.name = schedule_name AND s.owner_id IS NOT DISTINCT FROM for_owner;
    RETURN true;
END
$$;
COMMENT ON FUNCTION spine.unschedule(text, uuid) IS
    'Removes one of the caller''s recurring jobs (service_role: owner''s, or the system schedule) and its pg_cron entry; false if there was none.';

-- Flow control.
--
-- Snooze: a running job goes back to its queue until `until` without spending the
-- attempt or recording an error (the worker does it when a handler is told to
-- come back later: an answer 429/503 with Retry-After).
CREATE FUNCTION spine.snooze_job(id bigint, until timestamptz, worker text DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q text;
BEGIN
    IF id IS NULL OR until IS NULL THEN
        RAISE EXCEPTION 'id and until must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE spine.jobs j
       SET state = 'queued', run_at = greatest(until, now()), attempts = greatest(j.attempts - 1, 0),
           lease_until = NULL, worker = NULL, updated_at = now()
     WHERE j.id = snooze_job.id AND j.state = 'running'
       AND (snooze_job.worker IS NULL OR j.worker = snooze_job.worker)
    RETURNING j.queue INTO q;
    IF q IS NULL THEN
        RETURN false;
    END IF;
    PERFORM spine.wake_runners(q, greatest(until, now()));
    RETURN true;
END
$$;
COMMENT ON FUNCTION spine.snooze_job(bigint, timestamptz, text) IS
    'Puts a running job back until `until` without spending its attempt or recording an error; false when it is not running (for this worker).';

-- Debounce: the first enqueue of a key waits `debounce`; each further one while it
-- waits moves it to now() + debounce (never past its creation + max_delay) and
-- replaces its payload, so a burst of triggers runs one job, with the last payload.
CREATE FUNCTION spine.enqueue_debounced(
    queue text,
    payload jsonb,
    debounce_key text,
    debounce interval,
    max_delay interval DEFAULT NULL,
    priority spine.job_priority DEFAULT 'interactive',
    max_attempts integer DEFAULT 5
) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    owner uuid := auth.uid();
    job_id bigint;
    first_at timestamptz;
    due timestamptz;
BEGIN
    PERFORM spine.check_enqueue_allowed(enqueue_debounced.queue);
    IF enqueue_debounced.payload IS NULL OR enqueue_debounced.priority IS NULL THEN
        RAISE EXCEPTION 'payload and priority must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF enqueue_debounced.debounce_key IS NULL OR enqueue_debounced.debounce_key = ''
       OR length(enqueue_debounced.debounce_key) > 200 THEN
        RAISE EXCEPTION 'debounce_key must be 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue_debounced.debounce IS NULL OR enqueue_debounced.debounce < interval '0'
       OR enqueue_debounced.debounce > interval '1 day' THEN
        RAISE EXCEPTION 'debounce must be between 0 and 1 day' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue_debounced.max_delay IS NOT NULL AND enqueue_debounced.max_delay < enqueue_debounced.debounce THEN
        RAISE EXCEPTION 'max_delay must be at least debounce' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue_debounced.max_attempts IS NULL OR enqueue_debounced.max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM spine.check_job_payload(enqueue_debounced.queue, enqueue_debounced.payload);
    -- One debounced enqueue of a key at a time (concurrent triggers of one burst).
    PERFORM spine.lock_idempotency_key(enqueue_debounced.queue, owner, 'debounce:' || enqueue_debounced.debounce_key);
    SELECT j.id, j.created_at INTO job_id, first_at FROM spine.jobs j
     WHERE j.queue = enqueue_debounced.queue AND j.debounce_key = enqueue_debounced.debounce_key
       AND spine.job_owner_key(j.owner_id) = spine.job_owner_key(owner)
       AND j.state < 'running'
     FOR UPDATE;
    due := now() + enqueue_debounced.debounce;
    IF job_id IS NOT NULL THEN
        IF enqueue_debounced.max_delay IS NOT NULL THEN
            due := least(due, first_at + enqueue_debounced.max_delay);
        END IF;
        UPDATE spine.jobs j SET payload = enqueue_debounced.payload, run_at = due,
               priority = enqueue_debounced.priority, updated_at = now()
         WHERE j.id = job_id;
    ELSE
        INSERT INTO spine.jobs (queue, owner_id, priority, payload, run_at, max_attempts, debounce_key)
        VALUES (enqueue_debounced.queue, owner, enqueue_debounced.priority, enqueue_debounced.payload, due,
                enqueue_debounced.max_attempts, enqueue_debounced.debounce_key)
        RETURNING id INTO job_id;
    END IF;
    PERFORM spine.wake_runners(enqueue_debounced.queue, due);
    RETURN job_id;
END
$$;
COMMENT ON FUNCTION spine.enqueue_debounced(text, jsonb, text, interval, interval, spine.job_priority, integer) IS
    'Enqueues a job due after debounce, or, while one with this debounce_key waits, moves it to now() + debounce (at most its creation + max_delay) with the new payload; returns its id.';

-- Access: users read their own jobs; every write goes through the functions above.
ALTER TABLE spine.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.jobs_archive ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.queues ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.queue_rate_windows ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobs_owner_reads ON spine.jobs
    FOR SELECT TO authenticated USING (owner_id = auth.uid());
CREATE POLICY jobs_archive_owner_reads ON spine.jobs_archive
    FOR SELECT TO authenticated USING (owner_id = auth.uid());
CREATE POLICY queues_readable ON spine.queues FOR SELECT TO authenticated USING (true);
GRANT SELECT ON spine.jobs, spine.jobs_archive, spine.queues TO authenticated, service_role;
CREATE POLICY schedules_owner_reads ON spine.schedules
    FOR SELECT TO authenticated USING (owner_id = auth.uid());
GRANT SELECT ON spine.schedules TO authenticated, service_role;
GRANT SELECT ON spine.queue_rate_windows TO service_role;
