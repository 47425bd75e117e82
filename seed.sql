-- Demo data for the main flow (`cargo xtask demo`, `supabase db reset`).
-- Runs once, on a freshly created database, after all migrations.
--
-- Two demo users; their ids are what auth.uid() returns for their JWTs:
--   Alice 6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11   Bob 0b7e2f4a-5c3d-4e1f-8a9b-7c6d5e4f3a21

-- Alice's phone came online: the first event of her history (a user's own domain;
-- connector.*, data.*, rules.* and other Spine domains are emitted by Spine itself).
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims',
       '{"sub":"6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11","role":"authenticated"}', true);
SELECT spine.emit('device.PhoneLinked', '{"device":"pixel-8"}', 'device/pixel-8');
COMMIT;
