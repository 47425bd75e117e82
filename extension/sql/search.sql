-- Search: where clients search (Meilisearch) and the key their tenant tokens are
-- signed with. The worker's search sink registers both (spine.configure_search)
-- when it starts; spine.search_key() mints a token for the calling user that
-- Meilisearch itself restricts to owner_id = auth.uid().

CREATE TABLE spine.search_config (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    url        text        NOT NULL,
    key_uid    uuid        NOT NULL,
    secret_id  uuid        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE spine.search_config IS
    'The Meilisearch URL clients use and the search API key (uid; the key itself in the vault as spine.search.key) tenant tokens are signed with. One row, written by spine.configure_search.';
ALTER TABLE spine.search_config ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON spine.search_config FROM PUBLIC;
GRANT SELECT ON spine.search_config TO service_role;

-- Documents Meilisearch refused (an invalid_request failure of their task, e.g. an
-- index past its 65,535 fields): the sink writes a refused batch again one document
-- at a time, records each document refused here, and moves on, so one bad document
-- cannot stop search sync for everyone. A later successful write of the entity
-- removes its row; spine-worker check-index <kind> lists what is missing.
CREATE TABLE spine.search_rejections (
    sink        text        NOT NULL,
    entity_id   uuid        NOT NULL,
    kind        text        NOT NULL,
    error       text        NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, entity_id)
);
COMMENT ON TABLE spine.search_rejections IS
    'Entities whose document Meilisearch refused, per search sink, with its error (the latest refusal). Written by the worker.';
ALTER TABLE spine.search_rejections ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON spine.search_rejections FROM PUBLIC;
GRANT SELECT ON spine.search_rejections TO service_role;

CREATE FUNCTION spine.record_search_rejection(sink text, entity_id uuid, kind text, error text)
    RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO spine.search_rejections AS r (sink, entity_id, kind, error)
    VALUES (sink, entity_id, kind, error)
    ON CONFLICT (sink, entity_id)
        DO UPDATE SET kind = excluded.kind, error = excluded.error, rejected_at = now()
$$;
COMMENT ON FUNCTION spine.record_search_rejection(text, uuid, text, text) IS
    'Records that Meilisearch refused the document of an entity (the search sink calls it).';

CREATE FUNCTION spine.clear_search_rejections(sink text, entity_ids uuid[]) RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM spine.search_rejections r
         WHERE r.sink = clear_search_rejections.sink AND r.entity_id = ANY (entity_ids)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION spine.clear_search_rejections(text, uuid[]) IS
    'Forgets refusals of entities whose documents were since written (the search sink calls it).';
