-- Users, sessions and refresh tokens for the gateway's /auth/v1 (the GoTrue subset
-- supabase-js needs), on plain PostgreSQL.
--
-- The columns are GoTrue's (supabase/auth migrations), so a user row and its bcrypt
-- hash move between a Supabase project and a Spine database unchanged.
--
-- On a Supabase database GoTrue owns these tables (its role, not `postgres`, is the
-- owner) and the gateway runs with SPINE_AUTH=off. Each table is therefore created,
-- locked down and commented only when it does not exist yet: where GoTrue's tables
-- are present this file changes nothing (no ALTER, no REVOKE, no index on them).
-- Nothing here drops or rewrites data; running it twice is a no-op.
--
-- Access: RLS is on with no policy and every privilege is revoked from anon and
-- authenticated, so /rest/v1 never reads a password hash or a token. Only the
-- gateway's own connection (the tables' owner) reads and writes them.

CREATE SCHEMA IF NOT EXISTS auth;

DO $auth$
BEGIN
    IF to_regtype('auth.aal_level') IS NULL THEN
        CREATE TYPE auth.aal_level AS ENUM ('aal1', 'aal2', 'aal3');
        COMMENT ON TYPE auth.aal_level IS
            'Authenticator assurance level of a session (GoTrue''s type).';
    END IF;

    IF to_regclass('auth.users') IS NULL THEN
        CREATE TABLE auth.users (
            instance_id uuid,
            id uuid NOT NULL PRIMARY KEY,
            aud varchar(255),
            role varchar(255),
            email varchar(255),
            encrypted_password varchar(255),
            email_confirmed_at timestamptz,
            invited_at timestamptz,
            confirmation_token varchar(255),
            confirmation_sent_at timestamptz,
            recovery_token varchar(255),
            recovery_sent_at timestamptz,
            email_change_token_new varchar(255),
            email_change varchar(255),
            email_change_sent_at timestamptz,
            last_sign_in_at timestamptz,
            raw_app_meta_data jsonb,
            raw_user_meta_data jsonb,
            is_super_admin boolean,
            created_at timestamptz,
            updated_at timestamptz,
            phone text UNIQUE DEFAULT NULL,
            phone_confirmed_at timestamptz,
            phone_change text DEFAULT '',
            phone_change_token varchar(255) DEFAULT '',
            phone_change_sent_at timestamptz,
            confirmed_at timestamptz
                GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
            email_change_token_current varchar(255) DEFAULT '',
            email_change_confirm_status smallint DEFAULT 0
                CHECK (email_change_confirm_status >= 0 AND email_change_confirm_status <= 2),
            banned_until timestamptz,
            reauthentication_token varchar(255) DEFAULT '',
            reauthentication_sent_at timestamptz,
            is_sso_user boolean NOT NULL DEFAULT false,
            deleted_at timestamptz,
            is_anonymous boolean NOT NULL DEFAULT false
        );
        -- GoTrue's index names: emails are stored lower-cased and unique among
        -- non-SSO users.
        CREATE UNIQUE INDEX users_email_partial_key ON auth.users (email)
            WHERE is_sso_user = false;
        CREATE INDEX users_instance_id_idx ON auth.users (instance_id);
        CREATE INDEX users_is_anonymous_idx ON auth.users (is_anonymous);
        ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
        REVOKE ALL ON auth.users FROM PUBLIC, anon, authenticated;
        COMMENT ON TABLE auth.users IS
            'Users of /auth/v1, GoTrue''s columns; encrypted_password is a bcrypt hash ($2a$/$2b$).';
        COMMENT ON COLUMN auth.users.encrypted_password IS
            'bcrypt hash ($2a$, cost 10 when written by the gateway); empty or NULL: no password sign-in.';
        COMMENT ON COLUMN auth.users.raw_app_meta_data IS
            'app_metadata: provider data, writable only by the service role.';
        COMMENT ON COLUMN auth.users.raw_user_meta_data IS
            'user_metadata: what the user sets with signUp({data}) and updateUser({data}).';
    END IF;

    IF to_regclass('auth.sessions') IS NULL THEN
        CREATE TABLE auth.sessions (
            id uuid NOT NULL PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
            created_at timestamptz,
            updated_at timestamptz,
            factor_id uuid,
            aal auth.aal_level,
            not_after timestamptz,
            refreshed_at timestamp,
            user_agent text,
            ip inet,
            tag text
        );
        CREATE INDEX sessions_user_id_idx ON auth.sessions (user_id);
        CREATE INDEX user_id_created_at_idx ON auth.sessions (user_id, created_at);
        CREATE INDEX sessions_not_after_idx ON auth.sessions (not_after DESC);
        ALTER TABLE auth.sessions ENABLE ROW LEVEL SECURITY;
        REVOKE ALL ON auth.sessions FROM PUBLIC, anon, authenticated;
        COMMENT ON TABLE auth.sessions IS
            'Signed-in sessions; an access token names its session (claim session_id), and sign-out deletes it.';
        COMMENT ON COLUMN auth.sessions.not_after IS
            'The session ends at this time (set when a refresh token is reused: the family is revoked).';
    END IF;

    IF to_regclass('auth.refresh_tokens') IS NULL THEN
        CREATE TABLE auth.refresh_tokens (
            instance_id uuid,
            id bigserial PRIMARY KEY,
            token varchar(255) UNIQUE,
            -- varchar, not uuid: GoTrue's type, kept for compatibility.
            user_id varchar(255),
            revoked boolean,
            created_at timestamptz,
            updated_at timestamptz,
            parent varchar(255),
            session_id uuid REFERENCES auth.sessions (id) ON DELETE CASCADE
        );
        CREATE INDEX refresh_tokens_instance_id_idx ON auth.refresh_tokens (instance_id);
        CREATE INDEX refresh_tokens_instance_id_user_id_idx
            ON auth.refresh_tokens (instance_id, user_id);
        CREATE INDEX refresh_tokens_parent_idx ON auth.refresh_tokens (parent);
        CREATE INDEX refresh_tokens_session_id_revoked_idx
            ON auth.refresh_tokens (session_id, revoked);
        CREATE INDEX refresh_tokens_updated_at_idx ON auth.refresh_tokens (updated_at DESC);
        ALTER TABLE auth.refresh_tokens ENABLE ROW LEVEL SECURITY;
        REVOKE ALL ON auth.refresh_tokens FROM PUBLIC, anon, authenticated;
        REVOKE ALL ON SEQUENCE auth.refresh_tokens_id_seq FROM PUBLIC, anon, authenticated;
        COMMENT ON TABLE auth.refresh_tokens IS
            'Rotating refresh tokens: one live token per session; using a revoked one revokes the session''s family.';
        COMMENT ON COLUMN auth.refresh_tokens.token IS
            'SHA-256 (hex) of the token the client holds; the token itself is never stored. (GoTrue stores it in clear.)';
        COMMENT ON COLUMN auth.refresh_tokens.parent IS
            'SHA-256 (hex) of the token this one replaced; NULL for a session''s first token.';
    END IF;
END
$auth$;
