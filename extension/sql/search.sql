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
