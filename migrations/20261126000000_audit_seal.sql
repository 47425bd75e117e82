-- Audit rows whose committing transaction found the chain's head busy wait for
-- the next sealer; normally the next auditing commit takes them within
-- milliseconds. This sweep bounds the wait when no other audited work follows.
SELECT cron.schedule('spine-audit-seal', '* * * * *', $$SELECT spine.audit_seal()$$);
