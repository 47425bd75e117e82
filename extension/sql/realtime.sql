-- Realtime: what the gateway's /realtime/v1 serves, captured in the outbox.
--
-- Supabase Realtime reads a logical replication slot, checks RLS with one query per
-- subscriber per change, and replays nothing. Spine captures a published table's
-- row changes (and spine.broadcast's messages) as events in the writing
-- transaction: they are delivered in commit order, only after commit, and a client
-- can resume from the position (commit_seq, seq) of the last change it saw. No
-- replication slot can fill the disk; retention is the outbox's.
--
-- Who sees a change is decided per subscriber from the table's SELECT policies:
-- spine.realtime_visibility classifies them per role, so the common policy
-- `auth.uid() = owner_column` is decided from the row without a query, and only
-- other policies cost a check (spine.realtime_visible, one call per change for
-- all the subscribers that need it).

CREATE TABLE spine.realtime_tables (
    schema_name  text NOT NULL,
    table_name   text NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name)
);
COMMENT ON TABLE spine.realtime_tables IS
    'Tables whose row changes Realtime delivers (spine.realtime_publish); spine.events is always subscribable.';
ALTER TABLE spine.realtime_tables ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON spine.realtime_tables TO service_role;

-- Largest change payload kept whole; a larger row is sent with only its small
-- fields and errors = ['Error 413: Payload Too Large'], as Supabase does. Below
-- spine.emit's 512 KiB, so an oversized row never fails the write.
CREATE FUNCTION spine.realtime_max_change_bytes() RETURNS integer
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT least(coalesce(nullif(current_setting('spine.realtime_max_change_bytes', true), '')::integer,
                          262144), 500000)
$$;
COMMENT ON FUNCTION spine.realtime_max_change_bytes() IS
    'Largest row change sent whole (setting spine.realtime_max_change_bytes, default 256 KiB, at most 500000).';

-- A record cut to the fields whose JSON is at most 64 bytes.
CREATE FUNCTION spine.realtime_small_fields(record jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb)
      FROM jsonb_each(record)
     WHERE octet_length(value::text) <= 64
$$;

-- The capture trigger: one event per changed row, in the writing transaction.
CREATE FUNCTION spine.realtime_capture() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_record jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    old_record jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    errors jsonb := NULL;
BEGIN
    IF coalesce(octet_length(new_record::text), 0) + coalesce(octet_length(old_record::text), 0)
       > spine.realtime_max_change_bytes() THEN
        new_record := spine.realtime_small_fields(new_record);
        old_record := spine.realtime_small_fields(old_record);
        errors := '["Error 413: Payload Too Large"]';
    END IF;
    PERFORM spine.realtime_emit(
        'realtime.RowChanged',
        jsonb_build_object('schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'type', TG_OP,
                           'record', new_record, 'old_record', old_record, 'errors', errors),
        TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION spine.realtime_capture() IS
    'Trigger of published tables: writes each row change as a realtime.RowChanged event.';

CREATE FUNCTION spine.realtime_publish(tbl regclass) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel record;
BEGIN
    IF NOT spine.caller_is_privileged() THEN
        RAISE EXCEPTION 'only service_role may publish tables to Realtime'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT n.nspname, c.relname, c.relkind INTO rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = 'wrong_object_type',
            HINT = 'Realtime publishes tables (ordinary or partitioned), not views.';
    END IF;
    IF rel.nspname IN ('pg_catalog', 'information_schema', 'spine', 'auth') THEN
        RAISE EXCEPTION 'tables of schema % cannot be published', rel.nspname
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'spine.events is subscribable without publishing.';
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER spine_realtime_capture AFTER INSERT OR UPDATE OR DELETE '
                   'ON %s FOR EACH ROW EXECUTE FUNCTION spine.realtime_capture()', tbl);
    INSERT INTO spine.realtime_tables (schema_name, table_name)
    VALUES (rel.nspname, rel.relname) ON CONFLICT DO NOTHING;
    -- The gateway reloads its catalog on PostgREST's reload channel.
    PERFORM pg_notify('pgrst', 'reload schema');
END
$$;
COMMENT ON FUNCTION spine.realtime_publish(regclass) IS
    'Delivers the table''s row changes to Realtime subscribers (service_role).';

CREATE FUNCTION spine.realtime_unpublish(tbl regclass) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel record;
BEGIN
    IF NOT spine.caller_is_privileged() THEN
        RAISE EXCEPTION 'only service_role may unpublish tables from Realtime'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT n.nspname, c.relname INTO rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    EXECUTE format('DROP TRIGGER IF EXISTS spine_realtime_capture ON %s', tbl);
    DELETE FROM spine.realtime_tables WHERE schema_name = rel.nspname AND table_name = rel.relname;
    PERFORM pg_notify('pgrst', 'reload schema');
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION spine.realtime_unpublish(regclass) IS
    'Stops delivering the table''s row changes; true if it was published (service_role).';

-- A broadcast from the database: delivered to the topic's subscribers after the
-- transaction commits, never on rollback, in commit order with the row changes;
-- with private, to the private channels of the topic only.
CREATE FUNCTION spine.broadcast(topic text, event text, payload jsonb, private boolean DEFAULT false)
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(octet_length(topic), 0) NOT BETWEEN 1 AND 255
       OR coalesce(octet_length(event), 0) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'topic and event must be 1 to 255 bytes'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A private topic's readers are chosen by the policies of
    -- spine.realtime_messages when they join; database code that may call
    -- this function may send to it (as Supabase's realtime.send may).
    RETURN spine.realtime_emit(
        'realtime.MessageSent',
        jsonb_build_object('topic', topic, 'event', event, 'payload', coalesce(payload, '{}'::jsonb),
                           'private', private),
        'realtime:' || topic);
END
$$;
COMMENT ON FUNCTION spine.broadcast(text, text, jsonb, boolean) IS
    'Sends a Realtime broadcast to topic when the transaction commits (never on rollback).';

-- What a role's SELECT policies on tbl read, from pg_depend: the table's own
-- columns, other tables, and whether they call any function but auth.uid(),
-- auth.jwt() and auth.role() (a function may read tables no catalog records).
CREATE FUNCTION spine.realtime_policy_inputs(tbl regclass, role_oid oid)
    RETURNS TABLE (own_columns text[], other_tables regclass[], only_claims boolean)
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH deps AS (
        SELECT d.refclassid, d.refobjid, d.refobjsubid
          FROM pg_policy pol
          JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = pol.oid AND d.deptype = 'n'
         WHERE pol.polrelid = tbl AND pol.polcmd IN ('r', '*')
           AND EXISTS (SELECT 1 FROM unnest(pol.polroles) AS x(r)
                        WHERE x.r = 0 OR pg_has_role(role_oid, x.r, 'USAGE'))
    )
    SELECT
        coalesce((SELECT array_agg(DISTINCT a.attname::text ORDER BY a.attname::text)
                    FROM deps JOIN pg_attribute a ON a.attrelid = deps.refobjid AND a.attnum = deps.refobjsubid
                   WHERE deps.refclassid = 'pg_class'::regclass AND deps.refobjid = tbl
                     AND deps.refobjsubid > 0), '{}'),
        coalesce((SELECT array_agg(DISTINCT deps.refobjid::regclass)
                    FROM deps WHERE deps.refclassid = 'pg_class'::regclass AND deps.refobjid <> tbl), '{}'),
        NOT EXISTS (SELECT 1 FROM deps
                     WHERE deps.refclassid NOT IN ('pg_class'::regclass, 'pg_type'::regclass,
                                                   'pg_collation'::regclass, 'pg_proc'::regclass)
                        OR (deps.refclassid = 'pg_proc'::regclass
                            AND deps.refobjid NOT IN (SELECT p.oid FROM pg_proc p
                                                        JOIN pg_namespace n ON n.oid = p.pronamespace
                                                       WHERE n.nspname = 'auth'
                                                         AND p.proname IN ('uid', 'jwt', 'role'))))
$$;
COMMENT ON FUNCTION spine.realtime_policy_inputs(regclass, oid) IS
    'What the SELECT policies of tbl for a role read: own columns, other tables, and whether they call only auth.* claim functions.';

-- How a role's visibility of a table's rows is decided:
--   all   — the role reads every row (no RLS, BYPASSRLS, or the owner);
--   none  — no SELECT privilege, or no permissive policy applies;
--   owner — every applicable policy is `auth.uid() = <column>`: visible when one
--           of owner_columns equals the subscriber's user id, decided without a query;
--   check — anything else: check_expr is evaluated on the row as the subscriber.
--           When the policies read only the claims, cache_columns of the row and
--           published tables (depends_on; with policies of the same kind), a
--           decision holds for a subscriber and those columns' values until one
--           of depends_on changes, which the gateway sees in commit order; else
--           cache_columns is NULL and every change is checked.
CREATE FUNCTION spine.realtime_visibility(tbl regclass, role_name name)
    RETURNS TABLE (path text, owner_columns text[], check_expr text,
                   cache_columns text[], depends_on text[])
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel record;
    r record;
    p record;
    uid constant text := '(?:auth\.uid\(\)|\( SELECT auth\.uid\(\) AS uid\))';
    m text[];
    permissive text[] := '{}';
    restrictive text[] := '{}';
    owners text[] := '{}';
    only_owner boolean := true;
    inputs record;
    dep regclass;
    dep_inputs record;
    cacheable boolean;
BEGIN
    IF tbl IS NULL THEN
        RETURN;
    END IF;
    SELECT c.relrowsecurity, c.relforcerowsecurity, c.relowner INTO rel FROM pg_class c WHERE c.oid = tbl;
    SELECT o.oid, o.rolsuper, o.rolbypassrls INTO r FROM pg_roles o WHERE o.rolname = role_name;
    IF r.oid IS NULL OR NOT has_table_privilege(r.oid, tbl, 'SELECT') THEN
        RETURN QUERY SELECT 'none', NULL::text[], NULL::text, NULL::text[], NULL::text[];
        RETURN;
    END IF;
    IF r.rolsuper OR r.rolbypassrls OR NOT rel.relrowsecurity
       OR (rel.relowner = r.oid AND NOT rel.relforcerowsecurity) THEN
        RETURN QUERY SELECT 'all', NULL::text[], NULL::text, NULL::text[], NULL::text[];
        RETURN;
    END IF;
    FOR p IN
        SELECT pol.polpermissive, coalesce(pg_get_expr(pol.polqual, pol.polrelid), 'false') AS qual
          FROM pg_policy pol
         WHERE pol.polrelid = tbl AND pol.polcmd IN ('r', '*')
           AND EXISTS (SELECT 1 FROM unnest(pol.polroles) AS x(role_oid)
                        WHERE x.role_oid = 0 OR pg_has_role(r.oid, x.role_oid, 'USAGE'))
         ORDER BY pol.polname
    LOOP
        IF p.polpermissive THEN
            permissive := permissive || p.qual;
            m := coalesce(regexp_match(p.qual, '^\(' || uid || ' = ([a-z_][a-z0-9_]*)\)$'),
                          regexp_match(p.qual, '^\(([a-z_][a-z0-9_]*) = ' || uid || '\)$'));
            IF m IS NULL THEN
                only_owner := false;
            ELSE
                owners := owners || m[1];
            END IF;
        ELSE
            restrictive := restrictive || p.qual;
        END IF;
    END LOOP;
    IF cardinality(permissive) = 0 THEN
        RETURN QUERY SELECT 'none', NULL::text[], NULL::text, NULL::text[], NULL::text[];
        RETURN;
    ELSIF only_owner AND cardinality(restrictive) = 0 THEN
        RETURN QUERY SELECT 'owner', owners, NULL::text, NULL::text[], NULL::text[];
        RETURN;
    END IF;
    -- Cacheable: claims-only functions, and every table read is published
    -- with policies (for this role) that read only claims and published tables.
    SELECT * INTO inputs FROM spine.realtime_policy_inputs(tbl, r.oid);
    cacheable := inputs.only_claims;
    FOREACH dep IN ARRAY inputs.other_tables LOOP
        SELECT * INTO dep_inputs FROM spine.realtime_policy_inputs(dep, r.oid);
        cacheable := cacheable AND dep_inputs.only_claims
            AND EXISTS (SELECT 1 FROM spine.realtime_tables t JOIN pg_class c ON c.oid = dep
                          JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE t.schema_name = n.nspname AND t.table_name = c.relname)
            AND coalesce((SELECT bool_and(x = dep OR x = tbl OR x = ANY (inputs.other_tables))
                            FROM unnest(dep_inputs.other_tables) AS x), true);
    END LOOP;
    RETURN QUERY SELECT 'check', NULL::text[],
        '(' || array_to_string(permissive, ' OR ') || ')'
        || coalesce(' AND ' || nullif(array_to_string(restrictive, ' AND '), ''), ''),
        CASE WHEN coalesce(cacheable, false) THEN inputs.own_columns END,
        CASE WHEN coalesce(cacheable, false) THEN
            (SELECT coalesce(array_agg(format('%I.%I', n.nspname, c.relname)), '{}')
               FROM unnest(inputs.other_tables) AS x JOIN pg_class c ON c.oid = x
               JOIN pg_namespace n ON n.oid = c.relnamespace) END;
END
$$;
COMMENT ON FUNCTION spine.realtime_visibility(regclass, name) IS
    'How Realtime decides which rows of tbl role_name sees: all, none, owner (by column, no query) or check (cacheable when it reads only claims and published tables).';

-- Which rows each subscriber (claims, with role) may see: evaluates the table's
-- policies on the captured row as each subscriber, in one call per change. A
-- policy that raises hides the row from that subscriber only. SECURITY INVOKER:
-- the caller (the gateway's login role) switches only to roles it is a member of.
CREATE FUNCTION spine.realtime_visible(tbl regclass, record jsonb, claims jsonb[])
    RETURNS boolean[]
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    saved_role text := current_setting('role');
    saved_claims text := coalesce(current_setting('request.jwt.claims', true), '');
    alias text;
    result boolean[] := '{}';
    role_name text;
    -- The decision path per role, worked out once per call (not per subscriber).
    paths jsonb := '{}';
    v jsonb;
    query text;
    visible boolean;
    i integer;
BEGIN
    SELECT c.relname INTO alias FROM pg_class c WHERE c.oid = tbl;
    FOR i IN 1 .. coalesce(array_length(claims, 1), 0) LOOP
        role_name := coalesce(claims[i] ->> 'role', 'anon');
        visible := false;
        IF role_name IN ('anon', 'authenticated', 'service_role') THEN
            v := paths -> role_name;
            IF v IS NULL THEN
                SELECT to_jsonb(x) INTO v FROM spine.realtime_visibility(tbl, role_name) AS x;
                paths := paths || jsonb_build_object(role_name, v);
            END IF;
            IF v ->> 'path' = 'all' THEN
                visible := true;
            ELSIF v ->> 'path' = 'owner' THEN
                visible := EXISTS (SELECT 1 FROM jsonb_array_elements_text(v -> 'owner_columns') AS c(name)
                                    WHERE record ->> c.name = claims[i] ->> 'sub');
            ELSIF v ->> 'path' = 'check' THEN
                query := format('SELECT coalesce((%s), false) FROM jsonb_populate_record(NULL::%s, $1) AS %I',
                                v ->> 'check_expr', tbl, alias);
                BEGIN
                    PERFORM set_config('role', role_name, true);
                    PERFORM set_config('request.jwt.claims', claims[i]::text, true);
                    EXECUTE query INTO visible USING record;
                    PERFORM set_config('role', saved_role, true);
                    PERFORM set_config('request.jwt.claims', saved_claims, true);
                EXCEPTION WHEN OTHERS THEN
                    -- The subtransaction's rollback restored role and claims.
                    visible := false;
                END;
            END IF;
        END IF;
        result := result || coalesce(visible, false);
    END LOOP;
    RETURN result;
END
$$;
COMMENT ON FUNCTION spine.realtime_visible(regclass, jsonb, jsonb[]) IS
    'For each subscriber''s claims: may they SELECT this row of tbl (evaluated on the captured row)?';

-- The oldest position the outbox still holds: a client resuming from before it
-- has missed changes that retention removed.
CREATE FUNCTION spine.realtime_retained_from() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT min(commit_seq) FROM spine.event_commits WHERE commit_seq IS NOT NULL),
                    (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END
                       FROM spine.event_commit_seq))
$$;
COMMENT ON FUNCTION spine.realtime_retained_from() IS
    'Smallest commit_seq still in the outbox (or the next one when it is empty).';

-- What each published table costs Realtime: the path per role. One relation in
-- FROM, so a write through the view meets the privilege check (42501), not
-- "cannot insert into view".
CREATE VIEW spine.realtime_publications AS
SELECT t.schema_name, t.table_name,
       (SELECT a.path FROM spine.realtime_visibility(
            to_regclass(format('%I.%I', t.schema_name, t.table_name)), 'anon') AS a) AS anon_path,
       (SELECT u.path FROM spine.realtime_visibility(
            to_regclass(format('%I.%I', t.schema_name, t.table_name)), 'authenticated') AS u) AS authenticated_path,
       (SELECT u.owner_columns FROM spine.realtime_visibility(
            to_regclass(format('%I.%I', t.schema_name, t.table_name)), 'authenticated') AS u) AS owner_columns,
       (SELECT u.check_expr FROM spine.realtime_visibility(
            to_regclass(format('%I.%I', t.schema_name, t.table_name)), 'authenticated') AS u) AS check_expr,
       (SELECT u.cache_columns FROM spine.realtime_visibility(
            to_regclass(format('%I.%I', t.schema_name, t.table_name)), 'authenticated') AS u) AS cache_columns,
       t.published_at
  FROM spine.realtime_tables t
 WHERE to_regclass(format('%I.%I', t.schema_name, t.table_name)) IS NOT NULL;
COMMENT ON VIEW spine.realtime_publications IS
    'Published tables and how Realtime decides visibility for anon and authenticated (all, none, owner, check).';
GRANT SELECT ON spine.realtime_publications TO service_role;

-- Private channels: who may join (read) a topic and send to it (write) is decided
-- by RLS policies on spine.realtime_messages, the way Supabase decides it with
-- policies on realtime.messages, `spine.realtime_topic()` standing for
-- `realtime.topic()`. The table stays empty: Spine stores no broadcast messages;
-- the policies are evaluated on the row a message would be (topic, extension),
-- as the joining user. No role has grants on it: the policies alone decide.
CREATE TABLE spine.realtime_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text NOT NULL,
    extension   text NOT NULL CHECK (extension IN ('broadcast', 'presence')),
    event       text,
    payload     jsonb,
    private     boolean NOT NULL DEFAULT true,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE spine.realtime_messages IS
    'Policy target of private Realtime channels (like Supabase''s realtime.messages): SELECT policies say who reads a topic, INSERT policies who writes. Always empty.';
ALTER TABLE spine.realtime_messages ENABLE ROW LEVEL SECURITY;

CREATE FUNCTION spine.realtime_topic() RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT nullif(current_setting('realtime.topic', true), '')
$$;
COMMENT ON FUNCTION spine.realtime_topic() IS
    'The topic whose access is being decided (Supabase''s realtime.topic()), for policies on spine.realtime_messages.';

-- What the policies of spine.realtime_messages let one user do on a topic:
-- read and write, for broadcast and for presence. Evaluated on the message row
-- as the user (role, claims, realtime.topic set), without storing anything.
CREATE FUNCTION spine.realtime_channel_access(topic text, claims jsonb)
    RETURNS TABLE (read_broadcast boolean, write_broadcast boolean,
                   read_presence boolean, write_presence boolean)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    role_name text := coalesce(claims ->> 'role', 'anon');
    role_oid oid;
    saved_role text := current_setting('role');
    saved_claims text := coalesce(current_setting('request.jwt.claims', true), '');
    saved_topic text := coalesce(current_setting('realtime.topic', true), '');
    ext text;
    kind text;
    allowed boolean;
    expr text;
    result boolean[] := '{}';
BEGIN
    SELECT oid INTO role_oid FROM pg_roles WHERE rolname = role_name;
    FOREACH ext IN ARRAY ARRAY['broadcast', 'presence'] LOOP
        FOREACH kind IN ARRAY ARRAY['read', 'write'] LOOP
            allowed := false;
            IF role_name IN ('anon', 'authenticated', 'service_role') AND role_oid IS NOT NULL THEN
                IF (SELECT rolbypassrls FROM pg_roles WHERE oid = role_oid) THEN
                    allowed := true;
                ELSE
                    -- Permissive policies OR'ed, restrictive ones AND'ed, as RLS does.
                    SELECT '(' || string_agg(q, ' OR ') FILTER (WHERE permissive) || ')'
                           || coalesce(' AND ' || string_agg(q, ' AND ') FILTER (WHERE NOT permissive), '')
                      INTO expr
                      FROM (SELECT pol.polpermissive AS permissive,
                                   '(' || coalesce(
                                       pg_get_expr(CASE WHEN kind = 'read' THEN pol.polqual
                                                        ELSE coalesce(pol.polwithcheck, pol.polqual) END,
                                                   pol.polrelid), 'false') || ')' AS q
                              FROM pg_policy pol
                             WHERE pol.polrelid = 'spine.realtime_messages'::regclass
                               AND pol.polcmd IN (CASE WHEN kind = 'read' THEN 'r' ELSE 'a' END, '*')
                               AND EXISTS (SELECT 1 FROM unnest(pol.polroles) AS x(r)
                                            WHERE x.r = 0 OR pg_has_role(role_oid, x.r, 'USAGE'))) AS p;
                    IF expr IS NOT NULL AND expr <> '()' THEN
                        BEGIN
                            PERFORM set_config('role', role_name, true);
                            PERFORM set_config('request.jwt.claims', claims::text, true);
                            PERFORM set_config('realtime.topic', topic, true);
                            EXECUTE format('SELECT coalesce(%s, false) FROM jsonb_populate_record('
                                           'NULL::spine.realtime_messages, $1) AS realtime_messages', expr)
                               INTO allowed
                              USING jsonb_build_object('id', 0, 'topic', topic, 'extension', ext,
                                                       'private', true, 'inserted_at', now());
                            PERFORM set_config('role', saved_role, true);
                            PERFORM set_config('request.jwt.claims', saved_claims, true);
                            PERFORM set_config('realtime.topic', saved_topic, true);
                        EXCEPTION WHEN OTHERS THEN
                            allowed := false;
                        END;
                    END IF;
                END IF;
            END IF;
            result := result || coalesce(allowed, false);
        END LOOP;
    END LOOP;
    RETURN QUERY SELECT result[1], result[2], result[3], result[4];
END
$$;
COMMENT ON FUNCTION spine.realtime_channel_access(text, jsonb) IS
    'Whether a user (claims) may read and write broadcast and presence on a private topic, by the policies of spine.realtime_messages.';
