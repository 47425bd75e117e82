-- assistant: a personal assistant on Spine. Applied as the database owner.
-- Idempotent.
--
-- Memories are entities of kind `memory`, embedded by the worker's `embed`
-- jobs and recalled by meaning under RLS (the `recall` function). Skills are
-- edge functions that call the user's own providers with the user's own keys
-- (the vault). Every skill call is a `skill_usage` row; a database webhook
-- hands each one to the `skill-weights` function, which folds it into the
-- user's routing weights; pg_cron reviews the skills every minute (flagging
-- one that keeps failing) and vacuums the usage log every night.
SET client_min_messages = warning;

-- Memories: an entity kind with embeddings of its `text`.
SELECT spine.embed_kind('memory', ARRAY['text']);

-- The skills (each an edge function of functions/) and what routes to them.
CREATE TABLE IF NOT EXISTS public.assistant_skills (
    name        text PRIMARY KEY,
    description text NOT NULL,
    -- Words of a question that route it to this skill; none: the fallback.
    keywords    text[] NOT NULL DEFAULT '{}',
    -- The user's own key the skill needs (a secret name of theirs), if any.
    secret      text
);
ALTER TABLE public.assistant_skills ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON public.assistant_skills TO authenticated;
DROP POLICY IF EXISTS assistant_skills_read ON public.assistant_skills;
CREATE POLICY assistant_skills_read ON public.assistant_skills FOR SELECT TO authenticated USING (true);
INSERT INTO public.assistant_skills (name, description, keywords, secret) VALUES
    ('answer', 'Answers from your memories with your own language model', '{}', 'LLM_API_KEY'),
    ('weather', 'Forecasts from your own weather service',
     '{weather,forecast,rain,sunny,umbrella,temperature}', 'WEATHER_API_KEY')
ON CONFLICT (name) DO UPDATE
    SET description = excluded.description, keywords = excluded.keywords, secret = excluded.secret;

-- Where each user's providers are (not secret: their keys are in the vault).
CREATE TABLE IF NOT EXISTS public.assistant_settings (
    owner_id    uuid PRIMARY KEY DEFAULT auth.uid(),
    llm_url     text CHECK (llm_url ~ '^https?://'),
    llm_model   text NOT NULL DEFAULT 'gpt-4o-mini' CHECK (length(llm_model) BETWEEN 1 AND 100),
    weather_url text CHECK (weather_url ~ '^https?://')
);
ALTER TABLE public.assistant_settings ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON public.assistant_settings TO authenticated;
DROP POLICY IF EXISTS assistant_settings_own ON public.assistant_settings;
CREATE POLICY assistant_settings_own ON public.assistant_settings FOR ALL TO authenticated
    USING (owner_id = auth.uid()) WITH CHECK (owner_id = auth.uid());

-- Every call of a skill, as the assistant recorded it.
CREATE TABLE IF NOT EXISTS public.skill_usage (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id   uuid NOT NULL DEFAULT auth.uid(),
    skill      text NOT NULL REFERENCES public.assistant_skills,
    ok         boolean NOT NULL,
    latency_ms integer NOT NULL CHECK (latency_ms >= 0),
    error      text CHECK (length(error) <= 2000),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- When the routing weights took it in (once, however often the webhook
    -- delivers it).
    applied_at timestamptz
);
CREATE INDEX IF NOT EXISTS skill_usage_recent ON public.skill_usage (owner_id, skill, id DESC);
ALTER TABLE public.skill_usage ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON public.skill_usage TO authenticated;
GRANT INSERT (skill, ok, latency_ms, error) ON public.skill_usage TO authenticated;
DROP POLICY IF EXISTS skill_usage_read ON public.skill_usage;
CREATE POLICY skill_usage_read ON public.skill_usage FOR SELECT TO authenticated
    USING (owner_id = auth.uid());
DROP POLICY IF EXISTS skill_usage_write ON public.skill_usage;
CREATE POLICY skill_usage_write ON public.skill_usage FOR INSERT TO authenticated
    WITH CHECK (owner_id = auth.uid());

-- Each user's routing weights: an exponential average of their calls'
-- successes (1 = always works); `flagged_at` set by the review.
CREATE TABLE IF NOT EXISTS public.skill_routing (
    owner_id    uuid NOT NULL,
    skill       text NOT NULL REFERENCES public.assistant_skills,
    weight      real NOT NULL DEFAULT 1 CHECK (weight BETWEEN 0 AND 1),
    uses        integer NOT NULL DEFAULT 0,
    failures    integer NOT NULL DEFAULT 0,
    flagged_at  timestamptz,
    flag_reason text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, skill)
);
ALTER TABLE public.skill_routing ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON public.skill_routing TO authenticated;
DROP POLICY IF EXISTS skill_routing_read ON public.skill_routing;
CREATE POLICY skill_routing_read ON public.skill_routing FOR SELECT TO authenticated
    USING (owner_id = auth.uid());

-- The webhook's work, called by `skill-weights`, which runs as the row's
-- writer (Spine's webhooks act for whoever wrote the row): one usage row of
-- the caller's (any, for service_role) into its owner's weights, exactly once
-- — a redelivered webhook finds it applied and changes nothing. A success
-- clears the skill's flag (the user fixed their key); only the review sets
-- one. SECURITY DEFINER: users cannot write their weights any other way.
CREATE OR REPLACE FUNCTION public.assistant_apply_usage(usage_id bigint)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $$
    WITH used AS (
        UPDATE public.skill_usage SET applied_at = now()
         WHERE id = usage_id AND applied_at IS NULL
           AND (owner_id = auth.uid()
                OR current_setting('request.jwt.claims', true)::jsonb ->> 'role' = 'service_role')
        RETURNING owner_id, skill, ok
    ), routed AS (
        INSERT INTO public.skill_routing AS r (owner_id, skill, weight, uses, failures)
        SELECT owner_id, skill, CASE WHEN ok THEN 1 ELSE 0.8 END, 1, (NOT ok)::int FROM used
        ON CONFLICT (owner_id, skill) DO UPDATE
           SET weight     = 0.8 * r.weight + 0.2 * (excluded.failures = 0)::int,
               uses       = r.uses + 1,
               failures   = r.failures + excluded.failures,
               flagged_at = CASE WHEN excluded.failures = 0 THEN NULL ELSE r.flagged_at END,
               flag_reason = CASE WHEN excluded.failures = 0 THEN NULL ELSE r.flag_reason END,
               updated_at = now()
        RETURNING skill, weight, uses, failures
    )
    SELECT coalesce((SELECT to_jsonb(routed) FROM routed), '{"applied": false}')
$$;
REVOKE ALL ON FUNCTION public.assistant_apply_usage(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.assistant_apply_usage(bigint) TO authenticated, service_role;

-- The scheduled review: flags a user's skill when at least 60 % of its last
-- five calls (three at least, in the last day) failed, with the latest error.
-- Returns how many it flagged.
CREATE OR REPLACE FUNCTION public.assistant_review_skills()
RETURNS integer LANGUAGE sql AS $$
    WITH recent AS (
        SELECT owner_id, skill, ok, error,
               row_number() OVER (PARTITION BY owner_id, skill ORDER BY id DESC) AS n
          FROM public.skill_usage
         WHERE created_at > now() - interval '1 day'
    ), judged AS (
        SELECT owner_id, skill, count(*) AS calls, count(*) FILTER (WHERE NOT ok) AS failed,
               (array_agg(error ORDER BY n) FILTER (WHERE NOT ok))[1] AS last_error
          FROM recent WHERE n <= 5 GROUP BY owner_id, skill
    ), flagged AS (
        UPDATE public.skill_routing r
           SET flagged_at = now(),
               flag_reason = format('%s of its last %s calls failed: %s', j.failed, j.calls, j.last_error)
          FROM judged j
         WHERE r.owner_id = j.owner_id AND r.skill = j.skill AND r.flagged_at IS NULL
           AND j.calls >= 3 AND j.failed >= 0.6 * j.calls
        RETURNING 1
    )
    SELECT count(*)::int FROM flagged
$$;
REVOKE ALL ON FUNCTION public.assistant_review_skills() FROM PUBLIC;

-- The skills for a question, best first: those whose keywords it contains
-- before the fallback; among them, unflagged before flagged, then by weight.
-- The assistant passes over a flagged one, saying so.
CREATE OR REPLACE FUNCTION public.assistant_route(question text)
RETURNS TABLE (skill text, weight real, flagged boolean, flag_reason text, secret text)
LANGUAGE sql STABLE AS $$
    SELECT s.name, coalesce(r.weight, 1), r.flagged_at IS NOT NULL, r.flag_reason, s.secret
      FROM public.assistant_skills s
      LEFT JOIN public.skill_routing r ON r.skill = s.name AND r.owner_id = auth.uid()
     WHERE s.keywords && regexp_split_to_array(lower(question), '\W+') OR s.keywords = '{}'
     ORDER BY s.keywords && regexp_split_to_array(lower(question), '\W+') DESC, r.flagged_at IS NOT NULL,
              coalesce(r.weight, 1) DESC, s.name
$$;
GRANT EXECUTE ON FUNCTION public.assistant_route(text) TO authenticated;

-- The database webhook from skill_usage to `skill-weights` is webhook.sql,
-- applied once that function is deployed.

-- Maintenance on pg_cron: the review every minute, VACUUM every night.
SELECT cron.schedule('assistant-skill-review', '* * * * *', 'SELECT public.assistant_review_skills()');
SELECT cron.schedule('assistant-vacuum', '17 3 * * *',
                     'VACUUM (ANALYZE) public.skill_usage, public.skill_routing');

NOTIFY pgrst, 'reload schema';
