-- NATS services: the verbs the worker serves over request/reply
-- (`svc.{service}.{verb}` by default) with a SQL function. A verb without a row
-- here is served by the edge function named like the service, if one is
-- deployed. The function runs as the caller the request's JWT names (anon
-- without one), with RLS and grants as for a PostgREST RPC.

CREATE TABLE spine.services (
    service    text NOT NULL CHECK (service ~ '^[a-z][a-z0-9_-]{0,62}$'),
    verb       text NOT NULL CHECK (verb ~ '^[a-z][a-z0-9_-]{0,62}$'),
    -- A function of one jsonb argument (the request's data); its result is the
    -- reply's data.
    target     regprocedure NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, verb)
);
COMMENT ON TABLE spine.services IS
    'NATS service verbs served by SQL functions (spine.expose_service): service, verb, the function called with the request''s data.';
ALTER TABLE spine.services ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON spine.services TO service_role;

CREATE FUNCTION spine.expose_service(service text, verb text, target regprocedure) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF expose_service.service IS NULL OR expose_service.service !~ '^[a-z][a-z0-9_-]{0,62}$'
       OR expose_service.verb IS NULL OR expose_service.verb !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'service and verb must be lowercase letters, digits, _ and -, starting with a letter (one subject token each)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF expose_service.target IS NULL THEN
        RAISE EXCEPTION 'target must name a function' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                    WHERE p.oid = expose_service.target AND p.prokind = 'f'
                      AND p.pronargs = 1 AND p.proargtypes[0] = 'jsonb'::regtype) THEN
        RAISE EXCEPTION 'function % must take exactly one jsonb argument (the request''s data)', expose_service.target
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO spine.services AS s (service, verb, target)
    VALUES (expose_service.service, expose_service.verb, expose_service.target)
    ON CONFLICT (service, verb) DO UPDATE SET target = excluded.target;
END
$$;
COMMENT ON FUNCTION spine.expose_service(text, text, regprocedure) IS
    'Serves NATS requests to service.verb with target(data jsonb), run as the requester (RLS and grants apply).';

CREATE FUNCTION spine.unexpose_service(service text, verb text) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM spine.services s WHERE s.service = $1 AND s.verb = $2 RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;
COMMENT ON FUNCTION spine.unexpose_service(text, text) IS
    'Stops serving service.verb with a SQL function; false when it was not exposed.';
