-- Publish the audit chain's head every minute (an audit.HeadAnchored event the relay
-- sends to NATS), so a copy of it lives outside the database.
SELECT cron.schedule('spine-audit-anchor', '* * * * *', $$SELECT spine.audit_anchor()$$);
