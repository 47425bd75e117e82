-- Queues served by spine-worker's built-in handlers. create_queue updates an
-- existing queue's settings, so re-running resets them to these defaults.
-- http: POST the payload to a URL (webhooks, rule actions). Capped so a slow
-- endpoint cannot take every worker slot; closed to users (it can reach any URL the
-- worker can), so only service_role and the database itself (rules) enqueue here.
SELECT spine.create_queue('http', max_concurrency => 32, retention => '1 day');
