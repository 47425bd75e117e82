-- ETL: connector sources with their mappings, and the landing zone of raw records
-- (src/etl). Re-ingesting an identical record (same source, external id and
-- payload hash) changes nothing; a record that fails its mapping stays here with
-- its error until spine.reprocess(source) succeeds with a fixed mapping.

CREATE TABLE spine.sources (
    owner_id   uuid        NOT NULL,
    name       text        NOT NULL,
    mapping    jsonb       NOT NULL,
    -- The entity that stands for this source in the graph (edges described_by).
    entity_id  uuid        NOT NULL REFERENCES spine.entities (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, name)
);
COMMENT ON TABLE spine.sources IS
    'Connector sources of an owner and their declarative mappings (validated when saved). Save with spine.save_source.';

CREATE TABLE spine.raw_records (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id     uuid        NOT NULL,
    source       text        NOT NULL,
    external_id  text,
    payload      jsonb       NOT NULL,
    payload_hash bytea       NOT NULL,
    status       text        NOT NULL DEFAULT 'received'
                 CHECK (status IN ('received', 'processed', 'rejected', 'superseded')),
    error        text,
    entity_id    uuid,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
-- NULLS NOT DISTINCT: a record without an external id, sent again, is the same record.
CREATE UNIQUE INDEX raw_records_identity_idx
    ON spine.raw_records (owner_id, source, external_id, payload_hash) NULLS NOT DISTINCT;
CREATE INDEX raw_records_rejected_idx ON spine.raw_records (owner_id, source) WHERE status = 'rejected';
COMMENT ON TABLE spine.raw_records IS
    'Landing zone: every record as received, idempotent on (source, external id, payload hash); rejected ones keep their error; superseded: a rejected version a later processed one replaced.';

ALTER TABLE spine.sources ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.raw_records ENABLE ROW LEVEL SECURITY;
CREATE POLICY sources_own_rows ON spine.sources FOR SELECT TO authenticated USING (owner_id = auth.uid());
CREATE POLICY raw_records_own_rows ON spine.raw_records FOR SELECT TO authenticated USING (owner_id = auth.uid());
REVOKE ALL ON spine.sources, spine.raw_records FROM PUBLIC;
GRANT SELECT ON spine.sources, spine.raw_records TO authenticated, service_role;
