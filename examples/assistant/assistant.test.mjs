// The assistant end to end, on a running stack (`cargo xtask test`): the
// `spine-assistant` CLI as a child process for Alice and Bob, the worker
// embedding memories and delivering the usage webhook, pg_cron's review.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { cliUser, embedded, must, operatorSetup, providers, psql, routing, startWorker, until, userId, userSetup } from "./flow.mjs";

const LLM_KEY = `sk-${randomUUID()}`;
const WEATHER_KEY = `wk-${randomUUID()}`;
const MEMORIES = [
  "Sam's birthday is on March 3rd, and she loves orchids",
  "The dentist, Dr. Weber, wants to see me every six months",
  "I park the car on level 2 of the office garage",
  "My coffee order is a flat white with oat milk, extra hot",
];

const alice = cliUser("alice");
const bob = cliUser("bob");
const sink = `assistant_${randomUUID().replaceAll("-", "").slice(0, 12)}`;
let worker;
let provider;
let aliceId;
let bobId;

before(async () => {
  await operatorSetup();
  worker = startWorker({ sink });
  provider = await providers({ llmKey: LLM_KEY, weatherKey: WEATHER_KEY });
  const settings = { llmUrl: provider.llmUrl, llmKey: LLM_KEY, weatherUrl: provider.weatherUrl };
  // Alice's weather key is stale: the service refuses it.
  await userSetup(alice, { ...settings, weatherKey: "wk-expired" });
  await userSetup(bob, { ...settings, weatherKey: WEATHER_KEY });
  aliceId = userId(alice);
  bobId = userId(bob);
});

after(async () => {
  worker?.kill("SIGKILL");
  await provider?.close();
  psql("SELECT spine.drop_sink(:'sink')", { sink });
});

/** The last line `sql` prints, run as `user` (the SQL API with Supabase's role and claims). */
const as = (user, sql) =>
  psql(`SET ROLE authenticated; SELECT set_config('request.jwt.claims', :'claims', false); ${sql}`,
    { claims: JSON.stringify({ sub: user, role: "authenticated" }) }).split("\n").pop();

/** A user's `ask`. */
const ask = (user, question, extra = []) => user.run(["ask", ...extra, question]);

test("the session is signed in once, kept private and refreshed when it expires", async () => {
  const file = JSON.parse(readFileSync(alice.session, "utf8"));
  assert.equal(statSync(alice.session).mode & 0o777, 0o600, "only Alice reads her refresh token");
  assert.match(await must(alice, ["whoami"]), new RegExp(`\\(${file.user_id}\\)`));
  // The access token is about to expire: the next command refreshes it and keeps the new one.
  writeFileSync(alice.session, JSON.stringify({ ...file, expires_at: Math.floor(Date.now() / 1000) }));
  await must(alice, ["whoami"]);
  const refreshed = JSON.parse(readFileSync(alice.session, "utf8"));
  assert.notEqual(refreshed.refresh_token, file.refresh_token, "a new refresh token (rotated)");
  assert.ok(refreshed.expires_at > Date.now() / 1000 + 600, "a fresh access token");
  const signedOut = cliUser("nobody");
  const r = await signedOut.run(["whoami"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /sign in first/);
});

test("a failing skill's calls are recorded, and feed the routing weights through the webhook", async () => {
  for (let i = 0; i < 3; i++) {
    const r = await ask(alice, "Will it rain tomorrow?");
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /routing to weather/);
    assert.match(r.stderr, /weather failed: the weather service answered 401/);
  }
  // Each usage row reached skill-weights through the database webhook (a job per row).
  const weights = await until("the webhook to apply three calls", () => {
    const row = routing(alice, "weather", "uses || ' ' || failures || ' ' || round(weight::numeric, 3)");
    return row === "3 3 0.512" && row;
  });
  assert.equal(weights, "3 3 0.512", "three failures: 1 → 0.8 → 0.64 → 0.512");
  assert.ok(provider.requests.filter((r) => r.path === "/forecast").every((r) => r.authorization === "Bearer wk-expired"),
    "the skill sent Alice's own (stale) key");
  // A redelivered webhook changes nothing: each row is applied once.
  const id = psql(`SELECT max(id) FROM public.skill_usage WHERE owner_id = :'id'`, { id: aliceId });
  assert.equal(as(aliceId, `SELECT public.assistant_apply_usage(${id})`), '{"applied": false}');
  assert.equal(routing(alice, "weather", "uses"), "3");
});

test("recall ranks the right memory first, and Bob recalls nothing of Alice's", async () => {
  const ids = [];
  for (const memory of MEMORIES) ids.push((await must(alice, ["remember", memory])).match(/remembered ([0-9a-f-]{36})/)[1]);
  await until("the worker to embed Alice's memories", () => embedded(ids));
  for (const [query, expected] of [
    ["When is Sam's birthday?", MEMORIES[0]],
    ["where did I leave the car", MEMORIES[2]],
    ["what coffee do I drink", MEMORIES[3]],
    ["when is my next checkup at the dentist", MEMORIES[1]],
  ]) {
    const lines = (await must(alice, ["recall", query])).trim().split("\n");
    assert.equal(lines.length, 3, lines.join("\n"));
    assert.equal(lines[0].replace(/^[0-9.]+ {2}/, ""), expected, `${query} → ${lines.join(" | ")}`);
  }
  assert.match(await must(bob, ["recall", "When is Sam's birthday?"]), /^nothing recalled/);
});

test("ask streams the skill's thoughts and the model's tokens as they come, with Alice's own key", async () => {
  const r = await ask(alice, "When is Sam's birthday?");
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines[0], "· routing to answer (weight 1.00)");
  assert.equal(lines[1], `· recalled 1 related memory; nearest: "${MEMORIES[0]}"`);
  assert.match(lines[2], /^· asking gpt-4o-mini at 127\.0\.0\.1:\d+ with your key$/);
  assert.equal(lines[3], `From what you told me: ${MEMORIES[0]}`);
  // Streamed: the skill's thought was printed while the model was still thinking
  // (600 ms), in a chunk of its own, before any of the answer.
  const thought = r.chunks.findIndex((c) => c.text.includes("· asking"));
  assert.ok(thought >= 0 && r.chunks[thought].text.endsWith("with your key\n"), JSON.stringify(r.chunks));
  const answer = r.chunks[thought + 1];
  assert.ok(answer?.text.startsWith("From"), JSON.stringify(r.chunks));
  assert.ok(answer.at - r.chunks[thought].at >= 300, JSON.stringify(r.chunks));
  // And the answer itself token by token, as the model streams it (a word every
  // 60 ms): in pieces spread over its ~800 ms, not in one piece at the end.
  const pieces = r.chunks.slice(thought + 1);
  assert.ok(pieces.length >= 4, JSON.stringify(pieces));
  assert.ok(pieces.at(-1).at - pieces[0].at >= 400, JSON.stringify(pieces));
  const call = provider.requests.findLast((q) => q.path === "/v1/chat/completions");
  assert.equal(call.authorization, `Bearer ${LLM_KEY}`, "her own key, from the vault");
  assert.match(JSON.parse(call.body).messages[0].content, /Sam's birthday is on March 3rd/);
});

test("the scheduled review flags the failing skill, routing passes it over, a success clears it", async () => {
  // pg_cron runs the review every minute (Debian's pg_cron has no seconds).
  const reason = await until("pg_cron's skill review to flag weather", () => routing(alice, "weather", "flag_reason"), 75_000);
  assert.match(reason, /^3 of its last 3 calls failed: the weather service answered 401/);
  assert.equal(psql(`SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                      WHERE j.jobname = 'assistant-skill-review' AND d.status = 'succeeded'`), "t");
  assert.match(await must(alice, ["skills"]), /FLAGGED: 3 of its last 3 calls failed/);

  const r = await ask(alice, "Will it rain tomorrow?");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /· passing over weather: flagged by the skill review \(3 of its last 3 calls failed/);
  assert.match(r.stdout, /· routing to answer/);

  // Alice renews her key and asks the skill by name: it works, and the flag goes.
  await must(alice, ["key", "set", "WEATHER_API_KEY"], { input: WEATHER_KEY });
  const fixed = await ask(alice, "Will it rain tomorrow?", ["--skill", "weather"]);
  assert.equal(fixed.code, 0, fixed.stderr);
  assert.match(fixed.stdout, /Rain from 3 pm; take an umbrella\./);
  await until("the webhook to clear the flag", () => routing(alice, "weather", "flagged_at IS NULL AND uses = 4") === "t");
  assert.match((await ask(alice, "Will it rain tomorrow?")).stdout, /· routing to weather/);
});

test("Bob sees none of Alice's usage, weights or memories, and cannot apply usage", async () => {
  assert.equal(as(bobId, `SELECT count(*) FROM public.skill_usage WHERE owner_id = '${aliceId}'`), "0");
  assert.equal(as(bobId, `SELECT count(*) FROM public.skill_routing WHERE owner_id = '${aliceId}'`), "0");
  assert.equal(as(bobId, `SELECT count(*) FROM spine.entities WHERE owner_id = '${aliceId}'`), "0");
  // He cannot fold Alice's usage into her weights (she can: her webhook does).
  const pending = (user) => `BEGIN;
    INSERT INTO public.skill_usage (owner_id, skill, ok, latency_ms) VALUES ('${aliceId}', 'answer', false, 1) RETURNING id \\gset
    SET LOCAL ROLE authenticated;
    SELECT set_config('request.jwt.claims', '{"sub": "${user}", "role": "authenticated"}', true);
    SELECT public.assistant_apply_usage(:id) ->> 'uses' IS NOT NULL;
    ROLLBACK;`;
  assert.equal(psql(pending(bobId)).split("\n").pop(), "f");
  assert.equal(psql(pending(aliceId)).split("\n").pop(), "t");
  // Nor can he write usage in Alice's name.
  assert.throws(
    () => as(bobId, `INSERT INTO public.skill_usage (owner_id, skill, ok, latency_ms) VALUES ('${aliceId}', 'answer', false, 1)`),
    /permission denied|row-level security/);
  assert.match(await must(bob, ["skills"]), /answer +weight 1\.00 {2}0 calls, 0 failed/);
});

test("VACUUM of the usage log is on pg_cron", () => {
  assert.equal(psql(`SELECT schedule || ' ' || command FROM cron.job WHERE jobname = 'assistant-vacuum'`),
    "17 3 * * * VACUUM (ANALYZE) public.skill_usage, public.skill_routing");
  // The command pg_cron will run is valid as it stands (outside a transaction, as pg_cron runs it).
  psql("VACUUM (ANALYZE) public.skill_usage, public.skill_routing");
});
