-- Edge function sources and database webhooks.
--
-- spine.functions holds the code of deployed edge functions (one per registered
-- plugin); the function host reads it through spine.function_source. Deploy with
-- spine.deploy_function (what `spine-functions deploy` calls).
--
-- A database webhook is an AFTER trigger that turns each row change into a job in
-- the webhook's own queue (`webhook.<name>`, whose max_concurrency is the
-- webhook's cap). The worker delivers it (signed with the webhook's vault secret)
-- with the queue's retries, backoff and dead letter, and records each attempt in
-- spine.webhook_deliveries. Manage webhooks with spine.create_webhook /
-- spine.drop_webhook (service_role).

CREATE TABLE spine.functions (
    name        text        PRIMARY KEY REFERENCES spine.plugins (name) ON UPDATE CASCADE ON DELETE CASCADE,
    source      text        NOT NULL,
    sha256      text        NOT NULL,
    deployed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE spine.functions IS
    'Deployed edge function sources (ES modules), one per registered plugin. Write with spine.deploy_function.';

CREATE TABLE spine.webhooks (
    name         text        PRIMARY KEY,
    table_name   regclass    NOT NULL,
    events       text[]      NOT NULL,
    target       jsonb       NOT NULL,
    queue        text        NOT NULL UNIQUE REFERENCES spine.queues (name),
    secret_id    uuid        NOT NULL,
    -- The secret a rotation replaced, still signing beside the new one until
    -- previous_valid_until, so receivers can switch without losing a delivery.
    previous_secret_id   uuid,
    previous_valid_until timestamptz,
    max_attempts integer     NOT NULL CHECK (max_attempts >= 1),
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE spine.webhooks IS
    'Database webhooks: which row changes of which table are delivered where. Write with spine.create_webhook / spine.drop_webhook.';
COMMENT ON COLUMN spine.webhooks.target IS
    '{"url": "https://…", "headers": {…}, "timeout_ms": n} or {"function": "<edge function>"}.';
COMMENT ON COLUMN spine.webhooks.secret_id IS
    'Vault secret (named spine.webhook.<name>, whsec_<base64> for new webhooks) that signs deliveries: Standard Webhooks webhook-signature, and X-Spine-Signature: sha256=<hex HMAC-SHA256 of the body>.';
COMMENT ON COLUMN spine.webhooks.previous_secret_id IS
    'After spine.rotate_webhook_secret: the replaced secret (spine.webhook.<name>.previous), which also signs webhook-signature until previous_valid_until.';

CREATE TABLE spine.webhook_deliveries (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key: the history outlives a dropped webhook.
    webhook      text        NOT NULL,
    job_id       bigint      NOT NULL,
    attempt      integer     NOT NULL,
    status       integer,
    succeeded    boolean     NOT NULL,
    response     text,
    error        text,
    duration_ms  integer     NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_webhook_idx ON spine.webhook_deliveries (webhook, delivered_at DESC);
CREATE INDEX webhook_deliveries_job_idx ON spine.webhook_deliveries (job_id);
COMMENT ON TABLE spine.webhook_deliveries IS
    'Every delivery attempt of every webhook: HTTP status (or the error), the start of the answer, duration.';

ALTER TABLE spine.functions ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.webhook_deliveries ENABLE ROW LEVEL SECURITY;
-- Administrators' tables: service_role (BYPASSRLS) reads them; users see none.
REVOKE ALL ON spine.functions, spine.webhooks, spine.webhook_deliveries FROM PUBLIC;
GRANT SELECT ON spine.functions, spine.webhooks, spine.webhook_deliveries TO service_role;

-- The trigger every webhook installs (its argument is the webhook's name). It
-- only records: the payload is Supabase's database-webhook body plus the writer
-- (`actor`: role and user of the request), so a function target acts as them. The
-- job has no owner: its body may hold columns and rows the writer cannot read
-- (old_record, cascaded deletes), so only service_role sees it.
CREATE FUNCTION spine.webhook_fire() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hook spine.webhooks;
    cause uuid;
BEGIN
    SELECT * INTO hook FROM spine.webhooks w WHERE w.name = TG_ARGV[0];
    IF NOT FOUND OR NOT (TG_OP = ANY (hook.events)) THEN
        RETURN NULL;
    END IF;
    -- A write caused by an event (spine.causation_id: a job's function) passes
    -- the cause on: a function target's events join its chain, and the delivery's
    -- traceparent carries the chain's correlation id.
    cause := substring(current_setting('spine.causation_id', true)
                       FROM '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')::uuid;
    INSERT INTO spine.jobs (queue, owner_id, priority, payload, max_attempts)
    VALUES (hook.queue, NULL, 'interactive',
            jsonb_build_object('webhook', hook.name,
                'actor', jsonb_strip_nulls(jsonb_build_object('role', auth.role(), 'sub', auth.uid())),
                'body', jsonb_build_object(
                'type', TG_OP,
                'table', TG_TABLE_NAME,
                'schema', TG_TABLE_SCHEMA,
                'record', CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END,
                'old_record', CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END))
            || CASE WHEN cause IS NULL THEN '{}'::jsonb ELSE jsonb_strip_nulls(jsonb_build_object(
                'causation_id', cause,
                'correlation_id', (SELECT e.correlation_id FROM spine.events e WHERE e.id = cause))) END,
            hook.max_attempts);
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION spine.webhook_fire() FROM PUBLIC;

CREATE FUNCTION spine.create_webhook(
    name text,
    table_name regclass,
    events text[],
    target jsonb,
    max_concurrency integer DEFAULT 4,
    max_attempts integer DEFAULT 5
) RETURNS uuid
    LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT spine.webhook_create(name, table_name::oid, events, target, max_concurrency, max_attempts)
$$;
COMMENT ON FUNCTION spine.create_webhook(text, regclass, text[], jsonb, integer, integer) IS
    'Creates a database webhook: row changes (events among INSERT, UPDATE, DELETE) of table_name are delivered to target with retries. Returns the vault id of its signing secret.';

-- Delivery history is kept as long as the webhook's queue keeps finished jobs
-- (its retention; 7 days by default), and 7 days for webhooks since dropped.
-- pg_cron runs it hourly (migration webhook_maintenance).
CREATE FUNCTION spine.webhook_maintenance() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM spine.webhook_deliveries d
     WHERE d.delivered_at < now() - coalesce(
               (SELECT q.retention FROM spine.webhooks w JOIN spine.queues q ON q.name = w.queue
                 WHERE w.name = d.webhook),
               interval '7 days');
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
