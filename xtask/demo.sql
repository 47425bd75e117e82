-- The main flow of Spine, as a psql user would type it. `cargo xtask demo` runs it.
\pset footer off

\echo '1. The extension is installed by the migrations:'
SELECT spine.version() AS spine_version,
       (SELECT extversion FROM pg_extension WHERE extname = 'pg_cron') AS pg_cron,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector;

\echo '2. Requests act as a role with JWT claims, exactly as PostgREST sets them:'
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims',
       '{"sub":"6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11","role":"authenticated","email":"alice@example.com"}',
       true) IS NOT NULL AS claims_set;
SELECT current_user AS acting_role, auth.uid() AS user_id, auth.role() AS jwt_role,
       auth.jwt() ->> 'email' AS email;
COMMIT;

\echo '3. Bad input is a clear error with a SQLSTATE (here 22023):'
\set VERBOSITY verbose
SET spine.notify_channel = '';
\set ON_ERROR_STOP 0
SELECT spine.settings();
\set ON_ERROR_STOP 1
RESET spine.notify_channel;
SELECT spine.settings() AS settings;
