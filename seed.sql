-- Demo data for the main flow (`cargo xtask demo`, `supabase db reset`).
-- Runs once, on a freshly created database, after all migrations.

-- Two demo users; their ids are what auth.uid() returns for their JWTs.
-- Alice: 6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11   Bob: 0b7e2f4a-5c3d-4e1f-8a9b-7c6d5e4f3a21
SELECT 'seed: Spine ' || spine.version() AS seeded;
