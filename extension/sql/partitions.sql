-- Time partitions: what spine.events / spine.event_commits (by tx_started_at) and
-- spine.jobs_archive (by finished_at) share. Their maintenance (spine.purge_events,
-- spine.jobs_maintenance) makes ranges ahead and drops whole partitions past
-- retention instead of deleting rows: no dead rows, no vacuum debt, whatever the
-- volume. Rows for a range that has no partition go to the table's default
-- partition, so a write never fails for want of one.
--
-- Keys and indexes are each partition's own (spine.index_partition), not the
-- parent's: a partition that pg_restore brings back gets exactly the indexes the
-- dump holds, where the parent's would be cloned on ATTACH and then made a second
-- time, and pg_restore fails (tests/tests/backup.rs). So uniqueness holds per
-- partition; across partitions the unique columns are unique by construction
-- (identity sequences, UUIDv7s).

-- The range a partition covers, from its bound (NULL for a default partition).
CREATE FUNCTION spine.partition_range(part regclass) RETURNS tstzrange
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
CREATE FUNCTION spine.partition_width(setting text) RETURNS interval
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
CREATE FUNCTION spine.index_partition(part regclass) RETURNS void
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
CREATE FUNCTION spine.attach_partition(parent regclass, lo timestamptz, hi timestamptz) RETURNS void
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
CREATE FUNCTION spine.create_partitions(parents regclass[], width interval, "at" timestamptz)
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
CREATE FUNCTION spine.lock_for_drop(parents regclass[], parts regclass[], lock_wait interval)
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
