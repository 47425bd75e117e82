-- Supabase compatibility for plain PostgreSQL.
--
-- Creates what a Supabase database already has and Spine relies on: the PostgREST
-- roles and the auth.uid()/auth.role()/auth.jwt() helpers that read the JWT claims
-- PostgREST puts in `request.jwt.claims` for each request. Every object is created
-- only when it is missing, so on a real Supabase database this file changes nothing.
--
-- `CREATE EXTENSION spine` runs this file first; it can also be run on its own.

DO $compat$
BEGIN
    -- Roles are cluster-wide and NOLOGIN: clients reach them through SET ROLE
    -- (PostgREST's authenticator), never by logging in as them.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;

    IF to_regnamespace('auth') IS NULL THEN
        CREATE SCHEMA auth;
        COMMENT ON SCHEMA auth IS
            'Supabase-compatible auth helpers (created by Spine on plain PostgreSQL).';
    END IF;
    GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

    -- PostgREST >= 10 sets the whole claim set as JSON in request.jwt.claims; older
    -- versions set one GUC per claim (request.jwt.claim.sub). Both are honoured.
    IF to_regprocedure('auth.jwt()') IS NULL THEN
        CREATE FUNCTION auth.jwt() RETURNS jsonb
            LANGUAGE sql STABLE PARALLEL SAFE
            AS $fn$
                SELECT coalesce(
                    nullif(current_setting('request.jwt.claims', true), ''),
                    nullif(current_setting('request.jwt.claim', true), '')
                )::jsonb
            $fn$;
        COMMENT ON FUNCTION auth.jwt() IS
            'JWT claims of the current request (request.jwt.claims), or NULL.';
    END IF;

    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid
            LANGUAGE sql STABLE PARALLEL SAFE
            AS $fn$
                SELECT coalesce(
                    nullif(current_setting('request.jwt.claim.sub', true), ''),
                    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
                )::uuid
            $fn$;
        COMMENT ON FUNCTION auth.uid() IS
            'User id (claim "sub") of the current request, or NULL when there is none.';
    END IF;

    IF to_regprocedure('auth.role()') IS NULL THEN
        CREATE FUNCTION auth.role() RETURNS text
            LANGUAGE sql STABLE PARALLEL SAFE
            AS $fn$
                SELECT coalesce(
                    nullif(current_setting('request.jwt.claim.role', true), ''),
                    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
                )
            $fn$;
        COMMENT ON FUNCTION auth.role() IS
            'Role claim of the current request (anon, authenticated, service_role), or NULL.';
    END IF;

    IF to_regprocedure('auth.email()') IS NULL THEN
        CREATE FUNCTION auth.email() RETURNS text
            LANGUAGE sql STABLE PARALLEL SAFE
            AS $fn$
                SELECT coalesce(
                    nullif(current_setting('request.jwt.claim.email', true), ''),
                    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'
                )
            $fn$;
        COMMENT ON FUNCTION auth.email() IS
            'Email claim of the current request, or NULL.';
    END IF;
END
$compat$;
