-- Entities: the unified model every integration's data becomes (src/entities).
-- entity_keys resolve identities across sources (a normalized email or phone →
-- one entity); edges relate entities (the knowledge graph, and which sources
-- describe an entity). Every change emits data.EntityCreated/Updated/Deleted in
-- the same transaction. Writes go through spine.upsert_entity / delete_entity /
-- add_edge / ingest.

CREATE TABLE spine.entities (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id   uuid        NOT NULL,
    kind       text        NOT NULL,
    data       jsonb       NOT NULL DEFAULT '{}',
    version    bigint      NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entities_owner_kind_idx ON spine.entities (owner_id, kind);
COMMENT ON TABLE spine.entities IS
    'The unified entity model: a kind and its data per owner; version counts changes. Write with spine.upsert_entity or spine.ingest.';

CREATE TABLE spine.entity_keys (
    owner_id  uuid NOT NULL,
    key_type  text NOT NULL,
    key_value text NOT NULL,
    entity_id uuid NOT NULL REFERENCES spine.entities (id) ON DELETE CASCADE,
    PRIMARY KEY (owner_id, key_type, key_value)
);
CREATE INDEX entity_keys_entity_idx ON spine.entity_keys (entity_id);
COMMENT ON TABLE spine.entity_keys IS
    'Identity keys (e.g. email → ada@example.com) that resolve records from any source to one entity of the owner.';

CREATE TABLE spine.edges (
    owner_id   uuid        NOT NULL,
    from_id    uuid        NOT NULL REFERENCES spine.entities (id) ON DELETE CASCADE,
    to_id      uuid        NOT NULL REFERENCES spine.entities (id) ON DELETE CASCADE,
    rel        text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (from_id, rel, to_id)
);
CREATE INDEX edges_to_idx ON spine.edges (to_id, rel);
COMMENT ON TABLE spine.edges IS
    'Relations between an owner''s entities (knowledge graph); described_by links an entity to each source that describes it.';

ALTER TABLE spine.entities ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.entity_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.edges ENABLE ROW LEVEL SECURITY;
CREATE POLICY entities_own_rows ON spine.entities FOR SELECT TO authenticated USING (owner_id = auth.uid());
CREATE POLICY entity_keys_own_rows ON spine.entity_keys FOR SELECT TO authenticated USING (owner_id = auth.uid());
CREATE POLICY edges_own_rows ON spine.edges FOR SELECT TO authenticated USING (owner_id = auth.uid());
-- A plugin's database calls (spine.plugin set by the function host) see only the
-- kinds its manifest declares for entities.read and the user consented to;
-- decided once per transaction and kind, true when no plugin acts.
CREATE POLICY entities_plugin_kinds ON spine.entities AS RESTRICTIVE FOR SELECT TO authenticated
    USING (spine.plugin_may('entities.read', kind));
REVOKE ALL ON spine.entities, spine.entity_keys, spine.edges FROM PUBLIC;
GRANT SELECT ON spine.entities, spine.entity_keys, spine.edges TO authenticated, service_role;

-- Embeddings, in the schema pgvector is installed in (`extensions` on Supabase).
-- spine.control requires vector: without that dependency pg_dump may create spine
-- before vector on restore, and the embedding column would be missing when its
-- rows are copied back (tests/tests/backup.rs). similar() runs as the caller, so
-- RLS limits it to the caller's entities.
DO $vector$
DECLARE
    vector_schema text;
BEGIN
    SELECT n.nspname INTO vector_schema
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'vector';
    IF vector_schema IS NULL THEN  -- unreachable while spine.control requires vector
        RAISE EXCEPTION 'spine needs pgvector: CREATE EXTENSION vector first';
    END IF;
    EXECUTE format('ALTER TABLE spine.entities ADD COLUMN embedding %I.vector', vector_schema);
    EXECUTE format($f$
        CREATE FUNCTION spine.similar(kind text, query %1$I.vector, k integer DEFAULT 10, owner uuid DEFAULT NULL,
                                      filter jsonb DEFAULT NULL)
        RETURNS TABLE (id uuid, kind text, data jsonb, distance double precision)
        LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, %1$I, pg_temp AS $body$
            -- Positional: "similar" is a keyword, so similar.query would not parse.
            -- Scoped to one owner even for service_role (BYPASSRLS): the caller's
            -- user, or the owner it names; RLS still limits users to their own.
            -- A NULL kind searches every kind; filter keeps entities whose data
            -- contains it (jsonb @>: {"label": "Partner"}).
            SELECT e.id, e.kind, e.data, e.embedding <=> $2
              FROM spine.entities e
             WHERE ($1 IS NULL OR e.kind = $1) AND e.embedding IS NOT NULL
               AND e.owner_id = coalesce($4, auth.uid())
               AND ($5 IS NULL OR e.data @> $5)
             ORDER BY e.embedding <=> $2
             LIMIT greatest(1, least($3, 1000))
        $body$$f$, vector_schema);
    EXECUTE format($f$
        CREATE FUNCTION spine.set_embedding(entity_id uuid, embedding %1$I.vector) RETURNS boolean
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, %1$I, pg_temp AS $body$
        DECLARE
            entity_kind text;
        BEGIN
            SELECT e.kind INTO entity_kind FROM spine.entities e WHERE e.id = set_embedding.entity_id;
            IF entity_kind IS NOT NULL AND NOT spine.plugin_may('entities.write', entity_kind) THEN
                RAISE EXCEPTION '%% may not entities.write on %% for this caller', 'plugin:' || current_setting('spine.plugin', true), entity_kind
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            UPDATE spine.entities e SET embedding = set_embedding.embedding
             WHERE e.id = set_embedding.entity_id
               AND (e.owner_id = auth.uid() OR spine.caller_is_privileged());
            RETURN FOUND;
        END
        $body$$f$, vector_schema);
    COMMENT ON FUNCTION spine.similar IS
        'The k entities nearest to the query embedding (cosine distance) of a kind (NULL: any) whose data contains filter, of the caller''s user (or, for service_role, of owner).';
    COMMENT ON FUNCTION spine.set_embedding IS
        'Sets the embedding of one of the caller''s entities; false when there is none the caller owns.';
    REVOKE EXECUTE ON FUNCTION spine.similar, spine.set_embedding FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION spine.similar, spine.set_embedding TO authenticated, service_role;
END
$vector$;
