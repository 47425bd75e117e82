-- JSON Schema contracts. A schema is defined once by name (spine.define_schema,
-- compiled in Rust to refuse a broken one) and bound to what carries JSON
-- (spine.bind_schema):
--   event     an event type, or domain.*   data, checked by every spine.emit
--   queue     a queue name                 payload, checked by spine.enqueue
--   function  an edge function's name      input (request body) and output
--   verb      service.verb (NATS)          input (request data) and output
-- A value that breaks its contract is refused with SQLSTATE 22023 (or the
-- VALIDATION envelope) naming the JSON Pointer of each offending value.
-- Backends keep compiled copies (src/contracts.rs), refreshed when either table
-- changes.

CREATE TABLE spine.schemas (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,99}$'),
    schema      jsonb NOT NULL,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE spine.schemas IS
    'Named JSON Schemas (spine.define_schema), bound to event types, queues, functions and service verbs by spine.schema_bindings.';

CREATE TABLE spine.schema_bindings (
    target_kind text NOT NULL CHECK (target_kind IN ('event', 'queue', 'function', 'verb')),
    target      text NOT NULL CHECK (length(target) BETWEEN 1 AND 255),
    direction   text NOT NULL DEFAULT 'input' CHECK (direction IN ('input', 'output')),
    schema_name text NOT NULL REFERENCES spine.schemas (name) ON UPDATE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_kind, target, direction),
    -- Events and jobs carry one value; only functions and verbs answer.
    CHECK (direction = 'input' OR target_kind IN ('function', 'verb'))
);
COMMENT ON TABLE spine.schema_bindings IS
    'Which schema checks what: an event type''s data (or domain.*), a queue''s payloads, a function''s or a service verb''s input and output.';

-- Contracts are part of the API a client programs against: users may read them.
ALTER TABLE spine.schemas ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.schema_bindings ENABLE ROW LEVEL SECURITY;
-- The function host (spine_functions) reads a function's contracts when it loads it.
CREATE POLICY schemas_read ON spine.schemas FOR SELECT
    TO authenticated, service_role, spine_functions USING (true);
CREATE POLICY schema_bindings_read ON spine.schema_bindings FOR SELECT
    TO authenticated, service_role, spine_functions USING (true);
GRANT SELECT ON spine.schemas, spine.schema_bindings TO authenticated, service_role, spine_functions;

CREATE TRIGGER schemas_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON spine.schemas
    FOR EACH STATEMENT EXECUTE FUNCTION spine.cached_table_changed();
ALTER TABLE spine.schemas ENABLE ALWAYS TRIGGER schemas_changed;
CREATE TRIGGER schema_bindings_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON spine.schema_bindings
    FOR EACH STATEMENT EXECUTE FUNCTION spine.cached_table_changed();
ALTER TABLE spine.schema_bindings ENABLE ALWAYS TRIGGER schema_bindings_changed;

-- spine.define_schema, spine.bind_schema, spine.validate and
-- spine.schema_violations are defined in Rust (src/contracts.rs): they compile
-- schemas and check names with spine-core's rules.

CREATE FUNCTION spine.unbind_schema(target_kind text, target text, direction text DEFAULT 'input') RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM spine.schema_bindings b
         WHERE b.target_kind = $1 AND b.target = $2 AND b.direction = $3
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;
COMMENT ON FUNCTION spine.unbind_schema(text, text, text) IS
    'Stops checking target''s input (or output); false when nothing was bound.';

CREATE FUNCTION spine.drop_schema(name text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bound text;
BEGIN
    SELECT string_agg(b.target_kind || ' ' || b.target || ' (' || b.direction || ')', ', ' ORDER BY b.target_kind, b.target)
      INTO bound
      FROM spine.schema_bindings b WHERE b.schema_name = drop_schema.name;
    IF bound IS NOT NULL THEN
        RAISE EXCEPTION 'schema "%" is bound to %', drop_schema.name, bound
            USING ERRCODE = 'dependent_objects_still_exist', HINT = 'Unbind it first (spine.unbind_schema).';
    END IF;
    DELETE FROM spine.schemas s WHERE s.name = drop_schema.name;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION spine.drop_schema(text) IS
    'Drops a schema that nothing is bound to; false when it did not exist.';
