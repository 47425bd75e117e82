-- Vault: the Supabase Vault SQL API on plain PostgreSQL.
--
-- On Supabase (or wherever supabase_vault is installed) a `vault` schema already
-- exists: Spine then creates nothing here and reads secrets through that
-- schema's own vault.decrypted_secrets. Otherwise it creates the same API:
--   vault.create_secret(new_secret, new_name, new_description, new_key_id) -> uuid
--   vault.update_secret(secret_id, new_secret, new_name, new_description, new_key_id)
--   vault.secrets            ciphertext only (XChaCha20-Poly1305, base64)
--   vault.decrypted_secrets  the same rows with decrypted_secret; each row read is audited
-- The root key never enters the database (src/vault/keys.rs). key_id holds the key
-- version (an integer; supabase_vault's is a pgsodium key uuid).
--
-- Who may decrypt: service_role. The function host's role (spine_functions) gets a
-- plugin's secrets only through spine.plugin_secrets(), which checks the plugin's
-- manifest and the user's consent; it cannot list the vault.
--
-- Reading vault.decrypted_secrets decrypts (and audits) every row the query
-- returns: filter by id or name, and list secrets from vault.secrets. Pass
-- secrets to create_secret/update_secret as bind parameters: a statement that
-- fails is written to the server log with its literal text.

DO $vault$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'spine_functions') THEN
        CREATE ROLE spine_functions NOLOGIN NOINHERIT;
    END IF;

    IF pg_catalog.to_regnamespace('vault') IS NOT NULL THEN
        RAISE NOTICE 'spine: schema vault exists (supabase_vault?): using it, creating no vault objects';
        RETURN;
    END IF;

    CREATE SCHEMA vault;
    COMMENT ON SCHEMA vault IS
        'Supabase-Vault-compatible secret store (created by Spine on plain PostgreSQL).';

    CREATE TABLE vault.secrets (
        id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
        name        text,
        description text        NOT NULL DEFAULT '',
        secret      text        NOT NULL,
        key_id      integer     NOT NULL,
        nonce       bytea       NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
        updated_at  timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
    );
    CREATE UNIQUE INDEX secrets_name_idx ON vault.secrets (name) WHERE name IS NOT NULL;
    COMMENT ON TABLE vault.secrets IS
        'Secrets, encrypted (XChaCha20-Poly1305, the id as associated data). Write with vault.create_secret / vault.update_secret.';
    COMMENT ON COLUMN vault.secrets.secret IS 'base64 of ciphertext and tag; never the plaintext.';
    COMMENT ON COLUMN vault.secrets.key_id IS 'Version of the root key that encrypted it (see spine.vault_key_versions()).';

    -- The view runs as its owner (it reads vault.secrets); spine.vault_decrypt runs
    -- as the caller, who needs EXECUTE on it: only service_role has it.
    CREATE VIEW vault.decrypted_secrets AS
        SELECT s.id, s.name, s.description, s.secret,
               spine.vault_decrypt(s.id, s.secret, s.key_id, s.nonce) AS decrypted_secret,
               s.key_id, s.nonce, s.created_at, s.updated_at
          FROM vault.secrets s;
    COMMENT ON VIEW vault.decrypted_secrets IS
        'vault.secrets with decrypted_secret; every row read is written to spine.audit_log.';

    CREATE FUNCTION vault.create_secret(
        new_secret text,
        new_name text DEFAULT NULL,
        new_description text DEFAULT '',
        new_key_id uuid DEFAULT NULL
    ) RETURNS uuid
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
        SELECT spine.vault_create_secret(new_secret, new_name, new_description, new_key_id)
    $fn$;
    COMMENT ON FUNCTION vault.create_secret(text, text, text, uuid) IS
        'Encrypts and stores a secret; returns its id. Audited.';

    CREATE FUNCTION vault.update_secret(
        secret_id uuid,
        new_secret text DEFAULT NULL,
        new_name text DEFAULT NULL,
        new_description text DEFAULT NULL,
        new_key_id uuid DEFAULT NULL
    ) RETURNS void
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
        SELECT spine.vault_update_secret(secret_id, new_secret, new_name, new_description, new_key_id)
    $fn$;
    COMMENT ON FUNCTION vault.update_secret(uuid, text, text, text, uuid) IS
        'Changes a secret''s value (re-encrypted), name or description; NULL keeps a field. Audited.';

    ALTER TABLE vault.secrets ENABLE ROW LEVEL SECURITY;
    REVOKE ALL ON SCHEMA vault FROM PUBLIC;
    REVOKE ALL ON vault.secrets, vault.decrypted_secrets FROM PUBLIC;
    REVOKE EXECUTE ON FUNCTION vault.create_secret(text, text, text, uuid),
                             vault.update_secret(uuid, text, text, text, uuid) FROM PUBLIC;
    GRANT USAGE ON SCHEMA vault TO service_role;
    GRANT SELECT ON vault.secrets, vault.decrypted_secrets TO service_role;
    GRANT EXECUTE ON FUNCTION vault.create_secret(text, text, text, uuid),
                            vault.update_secret(uuid, text, text, text, uuid) TO service_role;
    PERFORM pg_catalog.pg_extension_config_dump('vault.secrets', '');
END
$vault$;

-- The vault's secrets by name, never their values: what an operator's console
-- lists (the vault schema is not exposed through /rest/v1).
CREATE FUNCTION spine.vault_secrets() RETURNS TABLE (
    id uuid, name text, description text, created_at timestamptz, updated_at timestamptz
)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.id, s.name, s.description, s.created_at, s.updated_at
      FROM vault.secrets s
     ORDER BY s.name NULLS LAST, s.created_at
$$;
