-- pg_net compatibility: Supabase code calls net.http_get / net.http_post /
-- net.http_delete from SQL and triggers and reads net._http_response. Where the
-- real pg_net is not installed, Spine offers the same functions and table, backed
-- by the durable `net` job queue (created by a migration, with a concurrency
-- cap): a request survives a crash of any process, a 5xx, a timeout or a refused
-- connection is retried with backoff, 429/503 with Retry-After waits as asked,
-- and what keeps failing ends in the dead letter — where pg_net records one
-- failure and forgets the request. The worker's `net` handler makes the request
-- and writes the latest attempt's outcome to net._http_response (id = the
-- request id = the job id); rows older than 6 hours are deleted, as pg_net's ttl.

CREATE FUNCTION spine.net_request(
    method text,
    url text,
    params jsonb,
    headers jsonb,
    body text,
    timeout_milliseconds integer
) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    request_id bigint;
    merged jsonb := coalesce(headers, '{}'::jsonb);
BEGIN
    IF url IS NULL OR method IS NULL THEN
        RAISE EXCEPTION 'url must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF url !~* '^https?://[^/]' THEN
        RAISE EXCEPTION 'url "%" is not an http(s) URL', left(url, 200) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF upper(method) NOT IN ('GET', 'POST', 'DELETE') THEN
        RAISE EXCEPTION 'method % is not GET, POST or DELETE', method USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(coalesce(params, '{}'::jsonb)) <> 'object' OR jsonb_typeof(merged) <> 'object' THEN
        RAISE EXCEPTION 'params and headers must be JSON objects' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_each(merged) h WHERE jsonb_typeof(h.value) <> 'string') THEN
        RAISE EXCEPTION 'header values must be strings' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF timeout_milliseconds IS NULL OR timeout_milliseconds < 1 OR timeout_milliseconds > 300000 THEN
        RAISE EXCEPTION 'timeout_milliseconds must be 1 to 300000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF upper(method) = 'POST' AND body IS NULL THEN
        RAISE EXCEPTION 'body must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- A JSON body is JSON unless the caller says otherwise (as pg_net does).
    IF body IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jsonb_object_keys(merged) k WHERE lower(k) = 'content-type') THEN
        merged := merged || '{"Content-Type": "application/json"}'::jsonb;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM spine.queues q WHERE q.name = 'net') THEN
        RAISE EXCEPTION 'queue "net" does not exist' USING ERRCODE = 'undefined_object',
            HINT = 'Run Spine''s migrations (they create it), or spine.create_queue(''net'').';
    END IF;
    -- No owner: a request of the database (a trigger's, an administrator's); who
    -- may make one is decided by the grants on net.http_*.
    INSERT INTO spine.jobs (queue, priority, payload, max_attempts)
    VALUES ('net', 'interactive',
            jsonb_build_object('method', upper(method), 'url', url, 'params', coalesce(params, '{}'::jsonb),
                               'headers', merged, 'body', body, 'timeout_ms', timeout_milliseconds),
            5)
    RETURNING id INTO request_id;
    PERFORM spine.wake_runners('net');
    RETURN request_id;
END
$$;
COMMENT ON FUNCTION spine.net_request(text, text, jsonb, jsonb, text, integer) IS
    'Behind net.http_get/post/delete: validates the request and enqueues it on the net queue; returns the request id (the job id).';

CREATE FUNCTION spine.net_record_response(
    request_id bigint,
    status_code integer,
    content_type text,
    headers jsonb,
    content text,
    timed_out boolean,
    error_msg text
) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO net._http_response AS r (id, status_code, content_type, headers, content, timed_out, error_msg)
    VALUES (request_id, status_code, content_type, headers, content, coalesce(timed_out, false), error_msg)
    ON CONFLICT (id) DO UPDATE
        SET status_code = excluded.status_code, content_type = excluded.content_type,
            headers = excluded.headers, content = excluded.content,
            timed_out = excluded.timed_out, error_msg = excluded.error_msg, created = now();
    -- pg_net's ttl: responses are kept 6 hours.
    DELETE FROM net._http_response r WHERE r.created < now() - interval '6 hours';
END
$$;
COMMENT ON FUNCTION spine.net_record_response(bigint, integer, text, jsonb, text, boolean, text) IS
    'Records the latest attempt of a net request in net._http_response (called by the worker).';

DO $net$
BEGIN
    IF pg_catalog.to_regnamespace('net') IS NOT NULL THEN
        RAISE NOTICE 'spine: schema net exists (pg_net?): using it, creating no net objects';
        RETURN;
    END IF;
    CREATE SCHEMA net;
    COMMENT ON SCHEMA net IS 'pg_net-compatible HTTP from SQL (created by Spine; requests run on its net job queue).';
    CREATE TABLE net._http_response (
        id           bigint PRIMARY KEY,
        status_code  integer,
        content_type text,
        headers      jsonb,
        content      text,
        timed_out    boolean,
        error_msg    text,
        created      timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ON net._http_response (created);
    COMMENT ON TABLE net._http_response IS
        'pg_net''s responses: the latest attempt of each request (id = what net.http_* returned); kept 6 hours.';
    PERFORM pg_catalog.pg_extension_config_dump('net._http_response', '');
    CREATE FUNCTION net.http_get(
        url text,
        params jsonb DEFAULT '{}'::jsonb,
        headers jsonb DEFAULT '{}'::jsonb,
        timeout_milliseconds integer DEFAULT 5000
    ) RETURNS bigint
        LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
        SELECT spine.net_request('GET', url, params, headers, NULL, timeout_milliseconds)
    $fn$;
    CREATE FUNCTION net.http_post(
        url text,
        body jsonb DEFAULT '{}'::jsonb,
        params jsonb DEFAULT '{}'::jsonb,
        headers jsonb DEFAULT '{"Content-Type": "application/json"}'::jsonb,
        timeout_milliseconds integer DEFAULT 5000
    ) RETURNS bigint
        LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
        SELECT spine.net_request('POST', url, params, headers, body::text, timeout_milliseconds)
    $fn$;
    CREATE FUNCTION net.http_delete(
        url text,
        params jsonb DEFAULT '{}'::jsonb,
        headers jsonb DEFAULT '{}'::jsonb,
        timeout_milliseconds integer DEFAULT 5000,
        body jsonb DEFAULT NULL
    ) RETURNS bigint
        LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
        SELECT spine.net_request('DELETE', url, params, headers, body::text, timeout_milliseconds)
    $fn$;
    COMMENT ON FUNCTION net.http_get(text, jsonb, jsonb, integer) IS
        'pg_net''s GET: enqueues the request on Spine''s net queue; returns its id (see net._http_response).';
    COMMENT ON FUNCTION net.http_post(text, jsonb, jsonb, jsonb, integer) IS
        'pg_net''s POST with a JSON body: enqueues the request on Spine''s net queue; returns its id.';
    COMMENT ON FUNCTION net.http_delete(text, jsonb, jsonb, integer, jsonb) IS
        'pg_net''s DELETE: enqueues the request on Spine''s net queue; returns its id.';
    -- As pg_net on Supabase: the administrators' roles call them (a trigger
    -- function owned by one of them makes requests for any writer).
    REVOKE ALL ON SCHEMA net FROM PUBLIC;
    REVOKE ALL ON ALL TABLES IN SCHEMA net FROM PUBLIC;
    REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA net FROM PUBLIC;
    ALTER TABLE net._http_response ENABLE ROW LEVEL SECURITY;
    GRANT USAGE ON SCHEMA net TO service_role;
    GRANT SELECT ON net._http_response TO service_role;
    GRANT EXECUTE ON FUNCTION net.http_get(text, jsonb, jsonb, integer),
        net.http_post(text, jsonb, jsonb, jsonb, integer),
        net.http_delete(text, jsonb, jsonb, integer, jsonb) TO service_role;
END
$net$;
