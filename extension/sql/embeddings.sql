-- Embeddings: entity kinds whose text is turned into a vector by the `embed`
-- job queue (the worker calls an OpenAI-compatible /embeddings endpoint and
-- writes back with spine.record_embedding). Writing an entity of such a kind
-- (upsert_entity, ingest, reprocess, a plain UPDATE) queues one job per entity;
-- a job already waiting for the entity covers later writes, since it reads the
-- entity's data when it runs.

CREATE TABLE spine.embedding_kinds (
    kind       text PRIMARY KEY CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    -- The data fields whose values make the text, in order; NULL: every
    -- top-level string, number or boolean, by key.
    fields     text[],
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE spine.embedding_kinds IS
    'Entity kinds that get embeddings (spine.embed_kind), and which data fields make their text.';
ALTER TABLE spine.embedding_kinds ENABLE ROW LEVEL SECURITY;
CREATE POLICY embedding_kinds_read ON spine.embedding_kinds FOR SELECT TO authenticated USING (true);
GRANT SELECT ON spine.embedding_kinds TO authenticated, service_role;

CREATE FUNCTION spine.embedding_text(kind text, data jsonb) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN k.fields IS NOT NULL THEN (
            SELECT string_agg($2 ->> f.name, '. ' ORDER BY f.n)
              FROM unnest(k.fields) WITH ORDINALITY AS f(name, n)
             WHERE jsonb_typeof($2 -> f.name) IN ('string', 'number', 'boolean'))
        ELSE (
            SELECT string_agg(e.value #>> '{}', '. ' ORDER BY e.key)
              FROM jsonb_each($2) e
             WHERE jsonb_typeof(e.value) IN ('string', 'number', 'boolean'))
    END
      FROM (SELECT ek.fields FROM spine.embedding_kinds ek WHERE ek.kind = $1
            UNION ALL SELECT NULL::text[] LIMIT 1) k
$$;
COMMENT ON FUNCTION spine.embedding_text(text, jsonb) IS
    'The text an entity of this kind is embedded from: its embedding_kinds fields'' values in order, else every top-level scalar by key, joined with ". ".';

-- Queues an `embed` job for each written entity of an embedded kind, unless one
-- already waits for it. Statement-level, so an ingest batch pays one join, not a
-- lookup per row.
CREATE FUNCTION spine.queue_embeddings() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queued integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM spine.embedding_kinds) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO spine.jobs (queue, owner_id, priority, payload, max_attempts, debounce_key)
        SELECT 'embed', n.owner_id, 'background', jsonb_build_object('entity_id', n.id), 10, 'entity:' || n.id
          FROM new_rows n JOIN spine.embedding_kinds k ON k.kind = n.kind;
    ELSE
        INSERT INTO spine.jobs (queue, owner_id, priority, payload, max_attempts, debounce_key)
        SELECT 'embed', n.owner_id, 'background', jsonb_build_object('entity_id', n.id), 10, 'entity:' || n.id
          FROM new_rows n
          JOIN old_rows o ON o.id = n.id
          JOIN spine.embedding_kinds k ON k.kind = n.kind
         WHERE (o.data IS DISTINCT FROM n.data OR o.kind IS DISTINCT FROM n.kind)
           AND NOT EXISTS (SELECT 1 FROM spine.jobs j
                            WHERE j.queue = 'embed' AND j.debounce_key = 'entity:' || n.id
                              AND j.state < 'running');
    END IF;
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM spine.wake_runners('embed');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER entities_embed_insert AFTER INSERT ON spine.entities
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION spine.queue_embeddings();
CREATE TRIGGER entities_embed_update AFTER UPDATE ON spine.entities
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION spine.queue_embeddings();

CREATE FUNCTION spine.embed_kind(kind text, fields text[] DEFAULT NULL, backfill boolean DEFAULT true)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    queued integer := 0;
BEGIN
    IF pg_catalog.to_regtype('spine.entities') IS NULL
       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid = 'spine.entities'::regclass AND a.attname = 'embedding'
                         AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'embeddings need pgvector, which is not installed' USING ERRCODE = 'feature_not_supported',
            HINT = 'CREATE EXTENSION vector before CREATE EXTENSION spine.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM spine.queues q WHERE q.name = 'embed') THEN
        RAISE EXCEPTION 'the embed queue does not exist' USING ERRCODE = 'undefined_object',
            HINT = 'Run Spine''s migrations (they create it), or spine.create_queue(''embed'').';
    END IF;
    IF embed_kind.kind IS NULL OR embed_kind.kind !~ '^[a-z][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'kind must be lowercase letters, digits and _, starting with a letter'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF embed_kind.fields IS NOT NULL AND (cardinality(embed_kind.fields) = 0
       OR EXISTS (SELECT 1 FROM unnest(embed_kind.fields) f WHERE f IS NULL OR f = '')) THEN
        RAISE EXCEPTION 'fields must be NULL (every field) or non-empty field names'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO spine.embedding_kinds AS k (kind, fields) VALUES (embed_kind.kind, embed_kind.fields)
    ON CONFLICT (kind) DO UPDATE SET fields = excluded.fields;
    IF backfill THEN
        INSERT INTO spine.jobs (queue, owner_id, priority, payload, max_attempts, debounce_key)
        SELECT 'embed', e.owner_id, 'background', jsonb_build_object('entity_id', e.id), 10, 'entity:' || e.id
          FROM spine.entities e
         WHERE e.kind = embed_kind.kind
           AND NOT EXISTS (SELECT 1 FROM spine.jobs j
                            WHERE j.queue = 'embed' AND j.debounce_key = 'entity:' || e.id
                              AND j.state < 'running');
        GET DIAGNOSTICS queued = ROW_COUNT;
        IF queued > 0 THEN
            PERFORM spine.wake_runners('embed');
        END IF;
    END IF;
    RETURN queued;
END
$$;
COMMENT ON FUNCTION spine.embed_kind(text, text[], boolean) IS
    'Entities of this kind get embeddings from the text of fields (NULL: every top-level scalar); with backfill, queues the existing ones; returns how many jobs it queued.';

CREATE FUNCTION spine.unembed_kind(kind text) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM spine.embedding_kinds k WHERE k.kind = $1 RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;
COMMENT ON FUNCTION spine.unembed_kind(text) IS
    'Stops embedding new writes of this kind (embeddings already set stay); false when it was not embedded.';
