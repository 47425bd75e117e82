-- Spine's first migration: the extensions Spine builds on, then Spine itself.
-- Runs unchanged on plain PostgreSQL (after `cargo xtask setup`) and on Supabase,
-- where the roles and auth.* helpers already exist and are left alone.

-- pg_cron only installs in the database named by cron.database_name.
CREATE EXTENSION IF NOT EXISTS pg_cron;

-- Supabase keeps extensions in the `extensions` schema; plain Postgres has none.
DO $$
BEGIN
    IF to_regnamespace('extensions') IS NOT NULL THEN
        CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA extensions;
    ELSE
        CREATE EXTENSION IF NOT EXISTS vector;
    END IF;
END
$$;

-- Also creates, where missing, the roles anon/authenticated/service_role and
-- auth.uid()/auth.role()/auth.jwt() (supabase/compat.sql).
CREATE EXTENSION IF NOT EXISTS spine;

GRANT USAGE ON SCHEMA spine TO anon, authenticated, service_role;
