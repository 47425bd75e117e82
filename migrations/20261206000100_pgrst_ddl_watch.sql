-- The gateway's schema cache follows DDL as PostgREST's does on Supabase: an
-- event trigger NOTIFYs `pgrst` after every DDL command and drop, and the
-- gateway reloads on that channel. Supabase ships the same triggers under these
-- names (extensions.pgrst_ddl_watch / pgrst_drop_watch); where they exist
-- already, nothing is created.

CREATE SCHEMA IF NOT EXISTS extensions;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgrst_ddl_watch') THEN
        CREATE OR REPLACE FUNCTION extensions.pgrst_ddl_watch() RETURNS event_trigger
            LANGUAGE plpgsql AS $f$
        BEGIN
            NOTIFY pgrst, 'reload schema';
        END
        $f$;
        CREATE EVENT TRIGGER pgrst_ddl_watch ON ddl_command_end
            EXECUTE FUNCTION extensions.pgrst_ddl_watch();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgrst_drop_watch') THEN
        CREATE OR REPLACE FUNCTION extensions.pgrst_drop_watch() RETURNS event_trigger
            LANGUAGE plpgsql AS $f$
        BEGIN
            NOTIFY pgrst, 'reload schema';
        END
        $f$;
        CREATE EVENT TRIGGER pgrst_drop_watch ON sql_drop
            EXECUTE FUNCTION extensions.pgrst_drop_watch();
    END IF;
END
$$;
