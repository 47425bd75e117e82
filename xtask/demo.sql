-- The main flow of Spine, as a psql user would type it. `cargo xtask demo` runs it.
\pset footer off
\set alice '6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11'
\set bob '0b7e2f4a-5c3d-4e1f-8a9b-7c6d5e4f3a21'

\echo '1. The extension is installed by the migrations:'
SELECT spine.version() AS spine_version,
       (SELECT extversion FROM pg_extension WHERE extname = 'pg_cron') AS pg_cron,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector;

\echo '2. A request acts as a role with JWT claims, exactly as PostgREST sets them:'
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims',
       '{"sub":"' || :'alice' || '","role":"authenticated","email":"alice@example.com"}', true)
       IS NOT NULL AS claims_set;
SELECT current_user AS acting_role, auth.uid() AS user_id, auth.jwt() ->> 'email' AS email;

\echo '3. In the same transaction, Alice''s phone reports a call: events go into the outbox.'
SELECT spine.emit('communication.CallStarted',
                  '{"from":"+49 30 1234567","caller":"Partner"}', 'call/42') AS call_started;
SELECT spine.emit('communication.CallAnswered', '{"after_seconds":4}', 'call/42') AS call_answered;
COMMIT;

\echo '4. Row Level Security: Alice reads her events, Bob reads none of them.'
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"' || :'alice' || '"}', true) IS NOT NULL AS as_alice;
SELECT type, subject, data, owner_id = auth.uid() AS mine FROM spine.events
 WHERE subject = 'call/42' ORDER BY seq;
SELECT set_config('request.jwt.claims', '{"sub":"' || :'bob' || '"}', true) IS NOT NULL AS as_bob;
SELECT count(*) AS events_bob_can_see FROM spine.events WHERE subject = 'call/42';
COMMIT;

\echo '5. What a consumer reads: committed events in commit order, after its cursor'
\echo '   (here a cursor just before the last commit, Alice''s transaction).'
SELECT commit_seq, seq, type, subject, correlation_id = id AS starts_a_chain
  FROM spine.events_after((SELECT max(commit_seq) - 1 FROM spine.event_commits), 9223372036854775807, 1000);

\echo '6. Bad input is a clear error with a SQLSTATE (here 22023):'
\set VERBOSITY verbose
\set ON_ERROR_STOP 0
SELECT spine.emit('communication.StartCall', '{}');
\set ON_ERROR_STOP 1
\set VERBOSITY default

\echo '7. Work to do goes into the job queue: Alice''s outgoing message (what a rule will enqueue'
\echo '   once rules exist) and a nightly digest scheduled with pg_cron.'
SELECT spine.create_queue('messages', max_concurrency => 4, user_enqueue => true) IS NOT NULL AS queue_ready;
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"' || :'alice' || '"}', true) IS NOT NULL AS as_alice;
SELECT spine.enqueue('messages', '{"to":"Partner","text":"Driving home, call you later"}',
                     'realtime', idempotency_key => 'call/42:reply') AS reply_job;
-- The same key again (a replayed event) enqueues nothing and returns the same id.
SELECT spine.enqueue('messages', '{"to":"Partner","text":"Driving home, call you later"}',
                     'realtime', idempotency_key => 'call/42:reply') AS same_job;
COMMIT;
SELECT spine.schedule('nightly-digest', '0 2 * * *', 'messages', '{"digest":true}', 'background')
       IS NOT NULL AS digest_scheduled;
SELECT jobname, schedule FROM cron.job WHERE jobname LIKE 'spine%' ORDER BY jobname;
SELECT queue, priority, queued, running, retrying, dead FROM spine.queue_stats() WHERE queue = 'messages';



\echo '8. Data first: Alice''s phone and CRM connectors land raw records; a mapping turns them'
\echo '   into one person entity (identity by email and phone), with events for what changed.'
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"' || :'alice' || '"}', true) IS NOT NULL AS as_alice;
SELECT spine.save_source('crm', '{"kind": "person",
  "fields": {"name": {"path": "full_name", "normalize": ["trim"], "required": true},
             "email": {"path": "email", "normalize": ["email"]},
             "phone": {"path": "phone", "normalize": [{"phone": {"region": "DE"}}]}},
  "identity": ["email", "phone"]}') IS NOT NULL AS crm_source;
SELECT spine.save_source('contacts', '{"kind": "person", "external_id": "uid",
  "fields": {"phone": {"path": "tel", "normalize": [{"phone": {"region": "DE"}}]},
             "relation": {"path": "label", "normalize": ["trim"]}},
  "identity": ["phone"]}') IS NOT NULL AS contacts_source;
SELECT spine.ingest('crm', '[{"id": "c-1", "full_name": " Sam Partner ", "email": "Sam@Example.com", "phone": "030 5550100"},
                             {"id": "c-2", "full_name": "Broken", "email": "not-an-email"}]') AS crm_ingest;
SELECT spine.ingest('contacts', '[{"uid": 9, "tel": "+49 30 555 0100", "label": "Partner"}]') AS contacts_ingest;
SELECT spine.ingest('contacts', '[{"uid": 9, "tel": "+49 30 555 0100", "label": "Partner"}]') AS same_again;
COMMIT;
SELECT e.data AS person, (SELECT string_agg(s.data->>'name', ', ' ORDER BY s.data->>'name') FROM spine.edges g
         JOIN spine.entities s ON s.id = g.to_id WHERE g.from_id = e.id AND g.rel = 'described_by') AS described_by
  FROM spine.entities e WHERE e.kind = 'person' AND e.data->>'email' = 'sam@example.com';
SELECT type, data -> 'changed' AS changed FROM spine.events
 WHERE type = 'data.EntityUpdated' AND data->>'kind' = 'person' ORDER BY seq DESC LIMIT 1;

\echo '9. Rules: Alice''s rule says "a call from Partner while I am at Work: reply by SMS".'
\echo '   Rules run inside Postgres, in the transaction that emits the event.'
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"' || :'alice' || '"}', true) IS NOT NULL AS as_alice;
SELECT spine.get_state('location') AS location FROM spine.set_state('location', '"Work"');
SELECT spine.save_rule('partner-at-work', 'communication.CallStarted',
  '{"and": [{"==": [{"var": "event.data.caller"}, "Partner"]},
            {"==": [{"var": "state.location"}, "Work"]}]}',
  '[{"enqueue": {"queue": "messages", "priority": "realtime",
      "payload": {"to": "{{event.data.caller}}", "text": "In a meeting at {{state.location}}, I will call you back"}}}]'
) IS NOT NULL AS rule_saved;
SELECT spine.emit('communication.CallStarted', '{"caller":"Partner"}', 'call/43') AS partner_calls;
SELECT spine.emit('communication.CallStarted', '{"caller":"Dentist"}', 'call/44') AS dentist_calls;
COMMIT;
\echo '   The rule fired for Partner only; its job is keyed by the call''s event id:'
SELECT j.payload ->> 'text' AS text, j.priority, j.idempotency_key FROM spine.jobs j
 WHERE j.queue = 'messages' AND j.idempotency_key LIKE 'event:%'
   AND j.idempotency_key LIKE '%' || (SELECT id::text FROM spine.events WHERE subject = 'call/43' ORDER BY seq DESC LIMIT 1) || '%';
\echo '   Why (not)? spine.explain for the Dentist call:'
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"' || :'alice' || '"}', true) IS NOT NULL AS as_alice;
SELECT rule, considered, matches, fired, reason, inputs
  FROM spine.explain((SELECT id FROM spine.events WHERE subject = 'call/44' ORDER BY seq DESC LIMIT 1));
COMMIT;

\echo '10. Trust: a plugin declares what it needs, Alice consents, the vault keeps its token'
\echo '   encrypted, and every decision lands in the hash-chained audit log.'
\echo '   (sms-sender was registered by `spine-functions deploy` from its manifest.json):'
SELECT name, version, manifest -> 'permissions' AS permissions FROM spine.plugins WHERE name = 'sms-sender';
SELECT coalesce((SELECT id FROM vault.secrets WHERE name = 'SMS_API_TOKEN'),
                vault.create_secret('demo-token-not-a-real-secret', 'SMS_API_TOKEN', 'demo')) AS secret_id;
SELECT name, key_id AS key_version, left(secret, 24) || '…' AS stored_ciphertext FROM vault.secrets
 WHERE name = 'SMS_API_TOKEN';
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"' || :'alice' || '"}', true) IS NOT NULL AS as_alice;
SELECT spine.grant_consent('sms-sender', ARRAY['secrets.read:SMS_API_TOKEN']) AS newly_granted;
COMMIT;
\echo '   The function host asks for Alice (service_role with her claims):'
BEGIN;
SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"sub":"' || :'alice' || '"}', true) IS NOT NULL AS for_alice;
SELECT spine.authorize('plugin:sms-sender', 'secrets.read', 'SMS_API_TOKEN') AS may_read_token,
       spine.authorize('plugin:sms-sender', 'network.fetch', '127.0.0.1') AS may_call_gateway;
SELECT name, secret FROM spine.plugin_secrets('sms-sender');
SELECT set_config('request.jwt.claims', '{"sub":"' || :'bob' || '"}', true) IS NOT NULL AS for_bob;
SELECT count(*) AS secrets_for_bob FROM spine.plugin_secrets('sms-sender');
COMMIT;
SELECT spine.audit_seal() >= 0 AS sealed;
SELECT seq, role, action, target, details ->> 'reason' AS reason
  FROM spine.audit_log ORDER BY seq DESC LIMIT 6;
SELECT spine.audit_verify() IS NULL AS audit_chain_intact;

\echo '11. Edge functions and database webhooks. `spine-functions deploy` registered the'
\echo '   functions of edge-functions/functions (manifest + module, compiled and checked first):'
SELECT f.name, p.version, left(f.sha256, 12) AS sha256, length(f.source) AS bytes,
       p.manifest -> 'limits' AS limits
  FROM spine.functions f JOIN spine.plugins p USING (name) ORDER BY f.name;
\echo '   A database webhook: every INSERT into public.demo_orders runs the hello function,'
\echo '   durably (its own queue with a cap of 4, retries with backoff, dead letter), signed'
\echo '   with its own vault secret:'
CREATE TABLE IF NOT EXISTS public.demo_orders (id serial PRIMARY KEY, item text NOT NULL, qty int NOT NULL);
SELECT CASE WHEN EXISTS (SELECT 1 FROM spine.webhooks WHERE name = 'demo_orders') THEN 'exists'
            ELSE spine.create_webhook('demo_orders', 'public.demo_orders', ARRAY['INSERT'],
                                      '{"function": "hello"}')::text END AS signing_secret_id;
INSERT INTO public.demo_orders (item, qty) VALUES ('espresso cups', 6), ('milk jug', 1);
SELECT name, table_name, events, target, queue FROM spine.webhooks WHERE name = 'demo_orders';
SELECT id, queue, payload -> 'body' ->> 'type' AS type, payload -> 'body' -> 'record' AS record
  FROM spine.jobs WHERE queue = 'webhook.demo_orders' ORDER BY id;
