-- Purge delivered events past spine.event_retention every 15 minutes, with pg_cron.
-- cron.schedule with a job name replaces an existing job of that name, so this is
-- safe to re-run. Change the age with:
--   ALTER DATABASE <db> SET spine.event_retention = '3 days';
SELECT cron.schedule('spine-purge-events', '*/15 * * * *', $$SELECT spine.purge_events()$$);
