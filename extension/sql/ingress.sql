-- NATS ingress: messages the worker consumes durably from JetStream
-- (SPINE_INGRESS_SUBJECTS) and writes with spine.emit or spine.ingest. Each
-- message's key (its Nats-Msg-Id, else stream:sequence) is recorded in the
-- transaction that writes it, so a message redelivered after a crash between
-- that commit and its ack is recognised and written nothing twice. A message
-- that cannot be written (not JSON, a bad event, a token that does not verify)
-- is kept here with the reason, and acknowledged: it would fail again.

CREATE TABLE spine.ingress_log (
    key         text PRIMARY KEY,
    subject     text NOT NULL,
    stream_seq  bigint NOT NULL,
    status      text NOT NULL CHECK (status IN ('written', 'rejected')),
    -- Only for rejected messages: what was wrong, and the message as it came.
    error       text,
    payload     text,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingress_log_received_idx ON spine.ingress_log (received_at);
CREATE INDEX ingress_log_rejected_idx ON spine.ingress_log (received_at) WHERE status = 'rejected';
COMMENT ON TABLE spine.ingress_log IS
    'NATS ingress: the key of every message written (exactly once) or rejected (with the reason and the message); pruned after 7 days.';
ALTER TABLE spine.ingress_log ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON spine.ingress_log TO service_role;
CREATE POLICY ingress_log_service ON spine.ingress_log FOR SELECT TO service_role USING (true);

CREATE FUNCTION spine.ingress_accept(key text, subject text, stream_seq bigint) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH new AS (
        INSERT INTO spine.ingress_log (key, subject, stream_seq, status)
        VALUES ($1, $2, $3, 'written')
        ON CONFLICT (key) DO NOTHING
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM new)
$$;
COMMENT ON FUNCTION spine.ingress_accept(text, text, bigint) IS
    'Records an ingress message''s key in the transaction that writes it; false when it was written (or rejected) before.';

CREATE FUNCTION spine.ingress_reject(key text, subject text, stream_seq bigint, error text, payload text)
RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO spine.ingress_log (key, subject, stream_seq, status, error, payload)
    VALUES ($1, $2, $3, 'rejected', left($4, 2000), $5)
    ON CONFLICT (key) DO NOTHING
$$;
COMMENT ON FUNCTION spine.ingress_reject(text, text, bigint, text, text) IS
    'Keeps an ingress message that cannot be written, with the reason.';

CREATE FUNCTION spine.ingress_prune(keep interval DEFAULT '7 days') RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM spine.ingress_log WHERE received_at < now() - $1 RETURNING 1)
    SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION spine.ingress_prune(interval) IS
    'Drops ingress keys older than keep (far beyond any redelivery); the worker runs it hourly.';
