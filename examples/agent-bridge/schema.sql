-- agent-bridge: threads where people and agents talk, on Spine. Applied as the
-- database owner. Idempotent.
--
-- A post gets the thread's next `seq` (gap-free: the thread row is the
-- counter, locked for the post's transaction), is audited, and debounces the
-- thread's trigger job (spine.enqueue_debounced): a burst is one delivery after
-- the quiet window, steady traffic still delivers at the max defer. The
-- supervisor (src/main.rs) runs those jobs.
SET client_min_messages = warning;

-- Settings (one row): the test shortens them.
CREATE TABLE IF NOT EXISTS public.bridge_settings (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    quiet_window    interval NOT NULL DEFAULT '5 seconds'  CHECK (quiet_window >= '0'),
    max_defer       interval NOT NULL DEFAULT '60 seconds',
    posts_per_minute integer NOT NULL DEFAULT 60 CHECK (posts_per_minute > 0),
    CHECK (max_defer >= quiet_window)
);
INSERT INTO public.bridge_settings DEFAULT VALUES ON CONFLICT DO NOTHING;
ALTER TABLE public.bridge_settings ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON public.bridge_settings TO authenticated;
DROP POLICY IF EXISTS bridge_settings_read ON public.bridge_settings;
CREATE POLICY bridge_settings_read ON public.bridge_settings FOR SELECT TO authenticated USING (true);

CREATE TABLE IF NOT EXISTS public.bridge_threads (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id   uuid NOT NULL DEFAULT auth.uid(),
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    last_seq   bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.bridge_participants (
    thread_id  uuid NOT NULL REFERENCES public.bridge_threads ON DELETE CASCADE,
    user_id    uuid NOT NULL,
    kind       text NOT NULL DEFAULT 'human' CHECK (kind IN ('human', 'agent')),
    cursor_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (thread_id, user_id)
);

CREATE TABLE IF NOT EXISTS public.bridge_messages (
    thread_id       uuid NOT NULL REFERENCES public.bridge_threads ON DELETE CASCADE,
    seq             bigint NOT NULL,
    id              uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    author_id       uuid NOT NULL,
    body            text NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (thread_id, seq),
    UNIQUE (thread_id, author_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS bridge_messages_author_time ON public.bridge_messages (author_id, created_at);

-- Agent sessions: an agent process says it is alive; a session not heard from
-- for 30 s is gone.
CREATE TABLE IF NOT EXISTS public.bridge_sessions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL DEFAULT auth.uid(),
    agent        text NOT NULL CHECK (length(agent) BETWEEN 1 AND 100),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- One row per delivery: unique per job, so a job run again after a crash
-- delivers nothing twice; and only when the thread has messages no delivery
-- covered yet (debounced jobs are per poster: a burst from two people is two
-- jobs, one delivery).
CREATE TABLE IF NOT EXISTS public.bridge_deliveries (
    job_id       bigint PRIMARY KEY,
    thread_id    uuid NOT NULL REFERENCES public.bridge_threads ON DELETE CASCADE,
    upto_seq     bigint NOT NULL,
    attempt      integer NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Who may see what: participants see their threads, messages and deliveries.
CREATE OR REPLACE FUNCTION public.bridge_is_participant(thread uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM public.bridge_participants p
                    WHERE p.thread_id = thread AND p.user_id = auth.uid())
$$;
ALTER TABLE public.bridge_threads ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.bridge_participants ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.bridge_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.bridge_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.bridge_deliveries ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS threads_read ON public.bridge_threads;
CREATE POLICY threads_read ON public.bridge_threads FOR SELECT TO authenticated
    USING (owner_id = auth.uid() OR public.bridge_is_participant(id));
DROP POLICY IF EXISTS participants_read ON public.bridge_participants;
CREATE POLICY participants_read ON public.bridge_participants FOR SELECT TO authenticated
    USING (public.bridge_is_participant(thread_id));
DROP POLICY IF EXISTS messages_read ON public.bridge_messages;
CREATE POLICY messages_read ON public.bridge_messages FOR SELECT TO authenticated
    USING (public.bridge_is_participant(thread_id));
DROP POLICY IF EXISTS sessions_own ON public.bridge_sessions;
CREATE POLICY sessions_own ON public.bridge_sessions FOR ALL TO authenticated
    USING (user_id = auth.uid()) WITH CHECK (user_id = auth.uid());
DROP POLICY IF EXISTS deliveries_read ON public.bridge_deliveries;
CREATE POLICY deliveries_read ON public.bridge_deliveries FOR SELECT TO authenticated
    USING (public.bridge_is_participant(thread_id));
GRANT SELECT ON public.bridge_threads, public.bridge_participants, public.bridge_messages,
    public.bridge_deliveries TO authenticated;
GRANT SELECT, INSERT, UPDATE ON public.bridge_sessions TO authenticated;

-- A thread, with its creator and the given participants (agents among them).
CREATE OR REPLACE FUNCTION public.bridge_create_thread(title text, agents uuid[] DEFAULT '{}',
                                                       humans uuid[] DEFAULT '{}')
    RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me uuid := auth.uid();
    thread uuid;
BEGIN
    IF me IS NULL THEN
        RAISE EXCEPTION 'sign in to create a thread' USING ERRCODE = '42501';
    END IF;
    INSERT INTO public.bridge_threads (owner_id, title) VALUES (me, title) RETURNING id INTO thread;
    INSERT INTO public.bridge_participants (thread_id, user_id, kind)
    SELECT thread, u, 'human' FROM unnest(array_append(humans, me)) u
    UNION SELECT thread, a, 'agent' FROM unnest(agents) a
    ON CONFLICT DO NOTHING;
    RETURN thread;
END
$$;

-- Posts a message as the caller, a participant. The same idempotency key from
-- the same author answers the first post's row. Beyond posts_per_minute per
-- author: 54000. Each post is audited and (re)arms the thread's trigger.
CREATE OR REPLACE FUNCTION public.bridge_post(thread uuid, body text, idempotency_key text DEFAULT NULL)
    RETURNS public.bridge_messages LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me uuid := auth.uid();
    s public.bridge_settings;
    msg public.bridge_messages;
    recent integer;
BEGIN
    IF me IS NULL OR NOT public.bridge_is_participant(thread) THEN
        RAISE EXCEPTION 'not a participant of thread %', thread USING ERRCODE = '42501';
    END IF;
    -- The thread row is the counter: its lock orders the thread's posts.
    UPDATE public.bridge_threads t SET last_seq = t.last_seq WHERE t.id = thread;
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO msg FROM public.bridge_messages m
         WHERE m.thread_id = thread AND m.author_id = me AND m.idempotency_key = bridge_post.idempotency_key;
        IF FOUND THEN
            RETURN msg;
        END IF;
    END IF;
    SELECT * INTO s FROM public.bridge_settings;
    SELECT count(*) INTO recent FROM public.bridge_messages m
     WHERE m.author_id = me AND m.created_at > clock_timestamp() - interval '1 minute';
    IF recent >= s.posts_per_minute THEN
        RAISE EXCEPTION 'rate limit: % posts in the last minute', recent
            USING ERRCODE = '54000', HINT = 'wait, or raise bridge_settings.posts_per_minute';
    END IF;
    UPDATE public.bridge_threads t SET last_seq = t.last_seq + 1 WHERE t.id = thread;
    INSERT INTO public.bridge_messages (thread_id, seq, author_id, body, idempotency_key)
    SELECT thread, t.last_seq, me, body, idempotency_key FROM public.bridge_threads t WHERE t.id = thread
    RETURNING * INTO msg;
    -- The author has read up to their own post.
    UPDATE public.bridge_participants p SET cursor_seq = greatest(p.cursor_seq, msg.seq)
     WHERE p.thread_id = thread AND p.user_id = me;
    PERFORM spine.audit('bridge.posted', 'thread:' || thread,
                        jsonb_build_object('seq', msg.seq, 'message', msg.id));
    PERFORM spine.emit('bridge.MessagePosted', jsonb_build_object('thread', thread, 'seq', msg.seq),
                       'thread/' || thread);
    IF EXISTS (SELECT 1 FROM public.bridge_participants p WHERE p.thread_id = thread AND p.kind = 'agent') THEN
        PERFORM spine.enqueue_debounced('bridge_triggers', jsonb_build_object('thread', thread),
                                        'thread:' || thread, s.quiet_window, s.max_defer);
    END IF;
    RETURN msg;
END
$$;

-- A participant's read cursor: it only moves forward (an older seq is ignored).
CREATE OR REPLACE FUNCTION public.bridge_mark_read(thread uuid, seq bigint) RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE public.bridge_participants p
       SET cursor_seq = greatest(p.cursor_seq, least(seq, (SELECT last_seq FROM public.bridge_threads WHERE id = thread)))
     WHERE p.thread_id = thread AND p.user_id = auth.uid()
    RETURNING p.cursor_seq
$$;

-- An agent session says it is alive; the live sessions of a user.
CREATE OR REPLACE FUNCTION public.bridge_heartbeat(session uuid) RETURNS boolean
    LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE public.bridge_sessions SET heartbeat_at = now() WHERE id = session RETURNING true
$$;
CREATE OR REPLACE VIEW public.bridge_live_sessions WITH (security_invoker = true) AS
    SELECT * FROM public.bridge_sessions WHERE heartbeat_at > now() - interval '30 seconds';
GRANT SELECT ON public.bridge_live_sessions TO authenticated;

REVOKE EXECUTE ON FUNCTION public.bridge_create_thread(text, uuid[], uuid[]),
    public.bridge_post(uuid, text, text), public.bridge_mark_read(uuid, bigint),
    public.bridge_heartbeat(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.bridge_create_thread(text, uuid[], uuid[]),
    public.bridge_post(uuid, text, text), public.bridge_mark_read(uuid, bigint),
    public.bridge_heartbeat(uuid) TO authenticated;

-- Trigger jobs: one queue, run by the supervisor. Spine decides who enqueues by
-- the caller's claims (a user, also inside bridge_post), so the queue is open
-- to users and the job is the poster's; the supervisor delivers only for a job
-- whose owner takes part in its thread, so a trigger enqueued by hand wakes no
-- one.
SELECT spine.create_queue('bridge_triggers', user_enqueue => true)
 WHERE NOT EXISTS (SELECT 1 FROM spine.queues WHERE name = 'bridge_triggers');
