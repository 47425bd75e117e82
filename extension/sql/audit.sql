-- Audit: an append-only, hash-chained record of privileged decisions and changes.
--
-- Spine's functions record rows in the transaction of the action (into
-- spine.audit_pending): an action that rolls back leaves no row, one that commits
-- cannot lose its row. A sealer appends committed pending rows to spine.audit_log
-- with consecutive seqs, each row's hash covering the previous row's hash and the
-- row's canonical content (src/audit/chain.rs); spine.audit_verify() recomputes
-- the chain. Only the holder of spine.audit_head's row lock appends, so the chain
-- is one line.
--
-- Who seals: each auditing transaction at its COMMIT (a deferred trigger) when the
-- head is free; if another committer holds it, the transaction does not wait and
-- its rows are taken by the next sealer — the next auditing commit, an explicit
-- spine.audit_seal(), or the pg_cron sweep every minute. Under REPEATABLE READ the
-- commit leaves its rows to the next sealer rather than fail.

-- Threat model: the triggers stop ordinary changes, even by the table's owner; a
-- superuser who disables triggers (session_replication_role) and rewrites rows
-- AND the head consistently is not detected by audit_verify() alone, because the
-- hash is unkeyed. Against that, compare the head with a copy kept outside the
-- database: spine.audit_anchor() (pg_cron, every minute) publishes the head as an
-- audit.HeadAnchored event to NATS; check a copy with spine.audit_verify_anchor().

CREATE TABLE spine.audit_log (
    seq       bigint      PRIMARY KEY,
    at        timestamptz NOT NULL,
    actor     uuid,
    role      text        NOT NULL,
    action    text        NOT NULL,
    target    text,
    details   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    prev_hash bytea       NOT NULL,
    hash      bytea       NOT NULL
);
CREATE INDEX audit_log_actor_idx ON spine.audit_log (actor, seq) WHERE actor IS NOT NULL;
CREATE INDEX audit_log_action_idx ON spine.audit_log (action, seq);
COMMENT ON TABLE spine.audit_log IS
    'Append-only, hash-chained audit log: grants, denials, consent and policy changes, secret access. Verify with spine.audit_verify().';
COMMENT ON COLUMN spine.audit_log.actor IS 'The user acted for: auth.uid() of the request (NULL for system callers).';
COMMENT ON COLUMN spine.audit_log.role IS 'The database role the request acted as (authenticated, service_role, …).';
COMMENT ON COLUMN spine.audit_log.action IS 'What happened, e.g. consent.granted, policy.denied, vault.secret_decrypted.';
COMMENT ON COLUMN spine.audit_log.target IS 'What it happened to, e.g. plugin:sms or secret:TWILIO_TOKEN.';
COMMENT ON COLUMN spine.audit_log.hash IS 'sha256 over prev_hash and the row''s canonical content.';

CREATE TABLE spine.audit_head (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq       bigint  NOT NULL,
    prev_hash bytea   NOT NULL,
    hash      bytea   NOT NULL
);
-- The row is created by the first seal (src/audit), not here: a database restored
-- from pg_dump brings its own head row, which must not collide with a fresh one.
COMMENT ON TABLE spine.audit_head IS
    'The tip of the audit chain (one row): the last seq and its hash. Moved by each committing transaction that audited.';

-- Heads already anchored (published as audit.HeadAnchored events): see src/audit/anchor.rs.
CREATE TABLE spine.audit_anchors (
    seq         bigint      PRIMARY KEY,
    hash        bytea       NOT NULL,
    anchored_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE spine.audit_anchors IS
    'Chain heads published as audit.HeadAnchored events (to NATS via the relay), so a copy lives outside the database.';

-- Recorded rows not yet in the chain: those of running transactions, and
-- committed ones waiting for the next sealer (normally none for long).
CREATE TABLE spine.audit_pending (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid    xid8        NOT NULL DEFAULT pg_current_xact_id(),
    at      timestamptz NOT NULL,
    actor   uuid,
    role    text        NOT NULL,
    action  text        NOT NULL,
    target  text,
    details jsonb       NOT NULL
);
CREATE INDEX audit_pending_txid_idx ON spine.audit_pending (txid, id);
COMMENT ON TABLE spine.audit_pending IS
    'Audit rows not yet in the chain (running transactions, or waiting for the next sealer); spine.audit_seal() appends the committed ones.';

-- One row per auditing transaction: its deferred trigger seals at COMMIT.
CREATE TABLE spine.audit_transactions (
    txid xid8 PRIMARY KEY
);
COMMENT ON TABLE spine.audit_transactions IS
    'Transactions that recorded audit rows; each row''s deferred trigger seals at COMMIT. Empty between transactions.';

CREATE FUNCTION spine.audit_seal_transaction() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM spine.audit_seal_at_commit();
    DELETE FROM spine.audit_transactions WHERE txid = NEW.txid;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION spine.audit_seal_transaction() IS
    'Deferred trigger: at COMMIT, appends committed audit rows to the chain unless another sealer holds the head.';
CREATE CONSTRAINT TRIGGER audit_seal_at_commit
    AFTER INSERT ON spine.audit_transactions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION spine.audit_seal_transaction();

-- The head only moves forward, by exactly the rows appended (seal does that).
CREATE FUNCTION spine.audit_head_moves_forward() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.seq < OLD.seq OR (NEW.seq = OLD.seq AND NEW.hash IS DISTINCT FROM OLD.hash) THEN
        RAISE EXCEPTION 'spine.audit_head only moves forward' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION spine.audit_head_moves_forward() IS
    'Trigger: refuses moving the audit chain''s head backwards or rewriting its hash.';
CREATE TRIGGER audit_head_forward_only
    BEFORE UPDATE ON spine.audit_head
    FOR EACH ROW EXECUTE FUNCTION spine.audit_head_moves_forward();

CREATE FUNCTION spine.audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Audit rows are written by Spine''s functions and never changed; spine.audit_verify() checks the chain.';
END
$$;
COMMENT ON FUNCTION spine.audit_refuse_change() IS
    'Trigger: refuses UPDATE, DELETE and TRUNCATE of the audit log (and DELETE/TRUNCATE of its head).';

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON spine.audit_log
    FOR EACH ROW EXECUTE FUNCTION spine.audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON spine.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION spine.audit_refuse_change();
CREATE TRIGGER audit_head_kept
    BEFORE DELETE ON spine.audit_head
    FOR EACH ROW EXECUTE FUNCTION spine.audit_refuse_change();
CREATE TRIGGER audit_head_no_truncate
    BEFORE TRUNCATE ON spine.audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION spine.audit_refuse_change();

-- Users read the rows about themselves; service_role reads all. Nobody writes
-- directly: the writing functions are SECURITY DEFINER.
ALTER TABLE spine.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.audit_head ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.audit_pending ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.audit_transactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.audit_anchors ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_log_own_rows ON spine.audit_log
    FOR SELECT TO authenticated USING (actor = auth.uid());
REVOKE ALL ON spine.audit_log, spine.audit_head, spine.audit_pending, spine.audit_transactions,
    spine.audit_anchors FROM PUBLIC;
GRANT SELECT ON spine.audit_anchors TO service_role;
GRANT SELECT ON spine.audit_log TO authenticated, service_role;
GRANT SELECT ON spine.audit_head TO service_role;
