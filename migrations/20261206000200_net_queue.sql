-- net: the requests of net.http_get / http_post / http_delete (pg_net's API on
-- Spine's durable queue). Closed to users like http; 32 at once at most, which
-- pg_net cannot bound.
SELECT spine.create_queue('net', max_concurrency => 32, retention => '1 day');
