-- spine 0.1.0 → 0.2.0, run by `ALTER EXTENSION spine UPDATE`.
--
-- Hand-written, and safe to run twice. The upgrade test (tests/tests/upgrade.rs)
-- compares a database upgraded with this script against a fresh install of
-- 0.2.0, object by object: anything the fresh install has and this script does
-- not make (or the other way round) fails it. CHANGELOG.md says what changed.
\echo Use "ALTER EXTENSION spine UPDATE" to load this file. \quit

-- spine.version() reads the catalog instead of the library: between installing
-- a release's files and ALTER EXTENSION UPDATE, the library is already the new one.
ALTER FUNCTION spine.version() STABLE;
COMMENT ON FUNCTION spine.version() IS
    'Version of the spine extension''s objects in this database (ALTER EXTENSION spine UPDATE moves it).';

-- spine.library_version(): the loaded library's version, for `spine doctor`.
CREATE OR REPLACE FUNCTION spine.library_version() RETURNS text
    IMMUTABLE STRICT PARALLEL SAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'library_version_wrapper';
REVOKE EXECUTE ON FUNCTION spine.library_version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spine.library_version() TO anon, authenticated, service_role;
COMMENT ON FUNCTION spine.library_version() IS
    'Version of the loaded spine library; differs from spine.version() until ALTER EXTENSION spine UPDATE.';
