-- embed: the jobs that turn entities of embedded kinds (spine.embed_kind) into
-- vectors through the configured /embeddings endpoint. Closed to users like http:
-- writes queue them (sql/embeddings.sql); 4 at once keeps a local model's CPU and
-- a cloud API's rate in bounds.
SELECT spine.create_queue('embed', max_concurrency => 4, retention => '1 day');
