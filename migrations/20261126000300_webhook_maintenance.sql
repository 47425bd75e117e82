-- Webhook delivery history past its webhook queue's retention is deleted hourly,
-- with pg_cron. Safe to re-run (named job).
SELECT cron.schedule('spine-webhook-maintenance', '17 * * * *', $$SELECT spine.webhook_maintenance()$$);
