-- function: jobs that call an edge function (rules' call_function actions). Closed
-- to users like http: only Spine (rules) and service_role enqueue here; the
-- function host serves it.
SELECT spine.create_queue('function', max_concurrency => 32, retention => '1 day');
