-- What the supabase-js suite works on: tables and functions in `public`, as an
-- app on Supabase would create them. Idempotent: `cargo xtask test` applies it
-- before every run; rows are per user, and every run uses new users.

CREATE TABLE IF NOT EXISTS public.sjs_notes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner      uuid NOT NULL DEFAULT auth.uid(),
    title      text NOT NULL,
    body       text,
    n          integer,
    tags       text[] NOT NULL DEFAULT '{}',
    meta       jsonb NOT NULL DEFAULT '{}',
    fts        tsvector GENERATED ALWAYS AS (to_tsvector('english', title || ' ' || coalesce(body, ''))) STORED,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.sjs_notes ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_notes ON public.sjs_notes;
CREATE POLICY own_notes ON public.sjs_notes TO authenticated
    USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.sjs_notes TO authenticated;
REVOKE ALL ON public.sjs_notes FROM anon;

-- Keys per user, for upserts and unique violations.
CREATE TABLE IF NOT EXISTS public.sjs_kv (
    owner uuid NOT NULL DEFAULT auth.uid(),
    k     text NOT NULL,
    v     integer,
    PRIMARY KEY (owner, k)
);
ALTER TABLE public.sjs_kv ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_kv ON public.sjs_kv;
CREATE POLICY own_kv ON public.sjs_kv TO authenticated
    USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.sjs_kv TO authenticated;

-- Readable by nobody but the service role.
CREATE TABLE IF NOT EXISTS public.sjs_locked (id integer PRIMARY KEY);
REVOKE ALL ON public.sjs_locked FROM anon, authenticated;

CREATE OR REPLACE FUNCTION public.sjs_add(a integer, b integer DEFAULT 1) RETURNS integer
    LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE OR REPLACE FUNCTION public.sjs_add(a text, b text) RETURNS text
    LANGUAGE sql IMMUTABLE AS 'SELECT a || b';
CREATE OR REPLACE FUNCTION public.sjs_whoami() RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'uid', auth.uid(), 'role', current_user, 'method', current_setting('request.method'),
        'path', current_setting('request.path'),
        'client', current_setting('request.headers')::json ->> 'x-client-info',
        'read_only', current_setting('transaction_read_only'))
$$;
CREATE OR REPLACE FUNCTION public.sjs_nothing() RETURNS void LANGUAGE sql AS 'SELECT';
CREATE OR REPLACE FUNCTION public.sjs_fail(msg text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', msg USING DETAIL = 'the detail', HINT = 'the hint';
END
$$;
CREATE OR REPLACE FUNCTION public.sjs_pay() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE SQLSTATE 'PT402' USING MESSAGE = 'payment required';
END
$$;
CREATE OR REPLACE FUNCTION public.sjs_my_notes(min_n integer DEFAULT 0)
    RETURNS SETOF public.sjs_notes LANGUAGE sql STABLE AS
    'SELECT * FROM public.sjs_notes WHERE coalesce(n, 0) >= min_n';
CREATE OR REPLACE FUNCTION public.sjs_series(upto integer) RETURNS SETOF integer
    LANGUAGE sql IMMUTABLE AS 'SELECT generate_series(1, upto)';
CREATE OR REPLACE FUNCTION public.sjs_echo(jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS 'SELECT $1';
CREATE OR REPLACE FUNCTION public.sjs_note_count() RETURNS bigint LANGUAGE sql STABLE AS
    'SELECT count(*) FROM public.sjs_notes';
CREATE OR REPLACE FUNCTION public.sjs_write() RETURNS integer LANGUAGE sql VOLATILE AS
    $$INSERT INTO public.sjs_kv (k, v) VALUES ('written', 1) ON CONFLICT (owner, k) DO UPDATE SET v = sjs_kv.v + 1 RETURNING v$$;

-- Realtime: an owner-policy table (decided without a query), a membership
-- table (checked as the subscriber), both published.
CREATE TABLE IF NOT EXISTS public.sjs_rt_items (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner uuid NOT NULL DEFAULT auth.uid(),
    label text NOT NULL,
    n     integer NOT NULL DEFAULT 0
);
ALTER TABLE public.sjs_rt_items ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_items ON public.sjs_rt_items;
CREATE POLICY own_items ON public.sjs_rt_items TO authenticated
    USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.sjs_rt_items TO authenticated;
GRANT ALL ON public.sjs_rt_items TO service_role;

CREATE TABLE IF NOT EXISTS public.sjs_rt_members (
    room    text NOT NULL,
    user_id uuid NOT NULL,
    PRIMARY KEY (room, user_id)
);
ALTER TABLE public.sjs_rt_members ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_memberships ON public.sjs_rt_members;
CREATE POLICY own_memberships ON public.sjs_rt_members FOR SELECT TO authenticated
    USING (user_id = auth.uid());
GRANT SELECT ON public.sjs_rt_members TO authenticated;
GRANT ALL ON public.sjs_rt_members TO service_role;

CREATE TABLE IF NOT EXISTS public.sjs_rt_messages (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room text NOT NULL,
    body text NOT NULL
);
ALTER TABLE public.sjs_rt_messages ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS room_members_read ON public.sjs_rt_messages;
CREATE POLICY room_members_read ON public.sjs_rt_messages FOR SELECT TO authenticated
    USING (room IN (SELECT m.room FROM public.sjs_rt_members m WHERE m.user_id = auth.uid()));
GRANT SELECT ON public.sjs_rt_messages TO authenticated;
GRANT ALL ON public.sjs_rt_messages TO service_role;

SELECT spine.realtime_publish('public.sjs_rt_items');
SELECT spine.realtime_publish('public.sjs_rt_messages');
-- Published too: sjs_rt_messages' policy reads it, so decisions can be cached
-- and are forgotten when a membership changes.
SELECT spine.realtime_publish('public.sjs_rt_members');

-- Private channels `sjs-private-…`: members of the room of the same name read
-- them; members may write broadcasts, not presence.
DROP POLICY IF EXISTS sjs_private_read ON spine.realtime_messages;
CREATE POLICY sjs_private_read ON spine.realtime_messages FOR SELECT TO authenticated
    USING (spine.realtime_topic() LIKE 'sjs-private-%' AND EXISTS (
        SELECT 1 FROM public.sjs_rt_members m
         WHERE m.room = spine.realtime_topic() AND m.user_id = auth.uid()));
DROP POLICY IF EXISTS sjs_private_write ON spine.realtime_messages;
CREATE POLICY sjs_private_write ON spine.realtime_messages FOR INSERT TO authenticated
    WITH CHECK (extension = 'broadcast' AND spine.realtime_topic() LIKE 'sjs-private-%' AND EXISTS (
        SELECT 1 FROM public.sjs_rt_members m
         WHERE m.room = spine.realtime_topic() AND m.user_id = auth.uid()));
CREATE OR REPLACE FUNCTION public.sjs_private_broadcast(topic text, n integer)
    RETURNS void LANGUAGE sql AS $$ SELECT spine.broadcast(topic, 'db', jsonb_build_object('n', n), true) $$;

-- A broadcast in a transaction that then fails: never delivered.
CREATE OR REPLACE FUNCTION public.sjs_broadcast(topic text, n integer, fail boolean)
    RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM spine.broadcast(topic, 'db', jsonb_build_object('n', n));
    IF fail THEN
        RAISE EXCEPTION 'rolled back on purpose';
    END IF;
END
$$;

-- Counts: 3,000 rows analyzed, then 1,000 deleted and not analyzed again (no
-- autovacuum), so the planner still estimates 3,000 while 2,000 exist.
CREATE TABLE IF NOT EXISTS public.sjs_many (id integer PRIMARY KEY, v integer)
    WITH (autovacuum_enabled = false);
INSERT INTO public.sjs_many SELECT i, i FROM generate_series(1, 3000) i ON CONFLICT DO NOTHING;
ANALYZE public.sjs_many;
DELETE FROM public.sjs_many WHERE id > 2000;
GRANT SELECT ON public.sjs_many TO anon, authenticated;

-- Ranges, for the range operators.
CREATE TABLE IF NOT EXISTS public.sjs_slots (id integer PRIMARY KEY, during int4range, name text);
INSERT INTO public.sjs_slots VALUES (1, '[1,5)', 'alpha'), (2, '[5,10)', 'beta'), (3, '[20,30)', 'gamma')
    ON CONFLICT DO NOTHING;
GRANT SELECT ON public.sjs_slots TO anon, authenticated;

-- Columns with defaults, for inserts with missing=default.
CREATE TABLE IF NOT EXISTS public.sjs_defaults (
    id    bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    owner uuid DEFAULT auth.uid(),
    batch text,
    label text DEFAULT 'untitled',
    n     integer DEFAULT 7
);
GRANT SELECT, INSERT, UPDATE, DELETE ON public.sjs_defaults TO authenticated;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO anon, authenticated;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM spine.queues WHERE name = 'sjs') THEN
        PERFORM spine.create_queue('sjs', user_enqueue => true);
    END IF;
END
$$;

NOTIFY pgrst, 'reload schema';
