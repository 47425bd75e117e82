-- Job queue upkeep every minute, with pg_cron: expired leases return to their
-- queues (fetch_jobs also does this for the queues it serves), and archived jobs
-- past their queue's retention are deleted. Safe to re-run (named job).
SELECT cron.schedule('spine-jobs-maintenance', '* * * * *', $$SELECT spine.jobs_maintenance()$$);
