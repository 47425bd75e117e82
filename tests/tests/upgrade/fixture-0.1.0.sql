-- Data in every domain, made through spine 0.1.0's public API, for the upgrade
-- test: a database a 0.1.0 user could have. Runs as the superuser after 0.1.0's
-- migrations; each user's part acts as that user, as PostgREST would.
-- Alice: a1a1a1a1-0000-4000-8000-000000000001.

-- Contracts.
SELECT spine.define_schema('upgrade.ping', '{"type": "object", "required": ["n"]}');
SELECT spine.bind_schema('event', 'upgrade.Pinged', 'upgrade.ping');

-- Entities through ETL (identity keys), directly, with an edge and embeddings.
SELECT spine.save_source('crm', '{"kind": "person",
    "fields": {"name": {"path": "full_name", "required": true},
               "email": {"path": "email", "normalize": ["email"]}},
    "identity": ["email"]}', 'a1a1a1a1-0000-4000-8000-000000000001');
SELECT spine.ingest('crm', '[{"id": "c1", "full_name": "Ada", "email": "ADA@example.com"},
                             {"id": "c2", "full_name": "Bob", "email": "bob@example.com"},
                             {"id": "c3", "email": "nameless@example.com"}]',
                    'a1a1a1a1-0000-4000-8000-000000000001');
SELECT spine.upsert_entity('device', '{"name": "phone"}', NULL, 'a1a1a1a1-0000-4000-8000-000000000001');
SELECT spine.add_edge((SELECT id FROM spine.entities WHERE kind = 'device'), 'belongs_to',
                      (SELECT id FROM spine.entities WHERE data->>'name' = 'Ada'),
                      'a1a1a1a1-0000-4000-8000-000000000001');
SELECT spine.set_embedding((SELECT id FROM spine.entities WHERE kind = 'device'), '[1, 0, 0]');
SELECT spine.set_embedding((SELECT id FROM spine.entities WHERE data->>'name' = 'Ada'), '[0, 1, 0]');

-- A rule, its state and a firing.
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims',
                  '{"sub": "a1a1a1a1-0000-4000-8000-000000000001", "role": "authenticated"}', true);
SELECT spine.set_state('location', '"Work"');
SELECT spine.save_rule('ping-at-work', 'upgrade.Pinged', '{"==": [{"var": "state.location"}, "Work"]}',
                       '[{"emit": {"type": "upgrade.Ponged", "data": {"n": "{{event.data.n}}"}}}]');
SELECT spine.emit('upgrade.Pinged', '{"n": 1}');
SELECT spine.set_my_secret('SMS_TOKEN', 'alice-own-token');
COMMIT;

-- Events in a few transactions (the relay's cursor ends up between them).
SELECT spine.emit('upgrade.Pinged', jsonb_build_object('n', n), 'upgrade/' || n) FROM generate_series(2, 20) n;
SELECT spine.emit('upgrade.Noted', jsonb_build_object('i', i)) FROM generate_series(1, 30) i;

-- A sink advanced by hand to the middle of the outbox.
SELECT spine.ensure_sink('upgrade_manual', 'nats');
SELECT spine.advance_sink('upgrade_manual', e.commit_seq, e.seq, 10)
  FROM (SELECT commit_seq, seq FROM spine.events_after(0, 0, 10) ORDER BY commit_seq DESC, seq DESC LIMIT 1) e;

-- Jobs in every state.
SELECT spine.create_queue('upgrade', max_concurrency => 8, retention => '7 days');
SELECT spine.enqueue('upgrade', jsonb_build_object('tag', t), 'background', now(), 'key-' || t)
  FROM unnest(ARRAY['queued', 'leased', 'retrying', 'dead', 'completed', 'cancelled', 'later']) t;
UPDATE spine.jobs SET run_at = now() + interval '1 day' WHERE payload->>'tag' = 'later';
SELECT spine.cancel_job(id) FROM spine.jobs WHERE payload->>'tag' = 'cancelled';
-- Lease the four that move on (the others wait until later), then give each
-- its fate.
UPDATE spine.jobs SET max_attempts = 1 WHERE payload->>'tag' = 'dead';
UPDATE spine.jobs SET run_at = now() + interval '1 hour'
 WHERE queue = 'upgrade' AND payload->>'tag' NOT IN ('leased', 'retrying', 'dead', 'completed');
SELECT count(*) FROM spine.fetch_jobs(ARRAY['upgrade'], 'upgrade-worker', 10, '1 hour');
SELECT spine.fail_job(id, 'temporary', interval '1 hour', 'upgrade-worker')
  FROM spine.jobs WHERE payload->>'tag' = 'retrying';
SELECT spine.fail_job(id, 'fatal', NULL, 'upgrade-worker') FROM spine.jobs WHERE payload->>'tag' = 'dead';
SELECT spine.complete_jobs(array_agg(id), 'upgrade-worker') FROM spine.jobs WHERE payload->>'tag' = 'completed';
UPDATE spine.jobs SET run_at = now()
 WHERE queue = 'upgrade' AND payload->>'tag' = 'queued';

-- A schedule (pg_cron), a webhook on a table, a function, a plugin with consent.
SELECT spine.schedule('upgrade_nightly', '0 3 * * *', 'upgrade', '{"tag": "scheduled"}');
-- (public.orders and its webhook come from app.sql, run before this file.)
INSERT INTO public.orders VALUES (1, 'first');
SELECT spine.deploy_function('{"name": "hello", "version": "1.0.0"}',
                             'Deno.serve(() => new Response("hello"))');
SELECT spine.register_plugin('{"name": "sms", "version": "1.0.0",
    "permissions": {"secrets": ["SMS_TOKEN"], "events": {"emit": ["sms.*"]}}}');
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims',
                  '{"sub": "a1a1a1a1-0000-4000-8000-000000000001", "role": "authenticated"}', true);
SELECT spine.grant_consent('sms', ARRAY['secrets.read:SMS_TOKEN', 'events.emit:sms.*']);
COMMIT;

-- Vault and audit.
SELECT vault.create_secret('upgrade-plaintext', 'upgrade-secret', 'made by 0.1.0');
SELECT spine.audit('upgrade.checked', 'fixture', '{"step": 1}');
SELECT spine.audit('upgrade.checked', 'fixture', '{"step": 2}');
SELECT spine.audit_seal();
