-- Audit: an append-only, hash-chained record of privileged decisions and changes.
--
-- Rows are written only by spine.audit()/the Rust record() path, in the transaction
-- of the action they record (so an action that rolls back leaves no row, and one
-- that commits cannot lose its row). Each row's hash covers the previous row's hash
-- and the row's canonical content (see src/audit/chain.rs); spine.audit_verify()
-- recomputes the chain and returns the first broken row.
--
-- Writers serialise on the single row of spine.audit_head (the chain's tip), which
-- each write updates in the same statement that inserts the log row. The row lock
-- is held until the writing transaction ends: that is what keeps the chain linear
-- under concurrency, and under REPEATABLE READ a concurrent writer gets a
-- serialization failure instead of forking the chain.

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
-- The row is created by the first audit write (src/audit), not here: a database
-- restored from pg_dump brings its own head row.
COMMENT ON TABLE spine.audit_head IS
    'The tip of the audit chain (one row): the last seq and its hash. Every audit write updates it.';

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
CREATE POLICY audit_log_own_rows ON spine.audit_log
    FOR SELECT TO authenticated USING (actor = auth.uid());
REVOKE ALL ON spine.audit_log, spine.audit_head FROM PUBLIC;
GRANT SELECT ON spine.audit_log TO authenticated, service_role;
GRANT SELECT ON spine.audit_head TO service_role;
