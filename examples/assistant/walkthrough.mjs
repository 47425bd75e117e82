// `cargo xtask example assistant`: the personal assistant on the running
// stack, step by step, printed for a person to read. Every user step is the
// `spine-assistant` CLI, shown as typed.

import { randomUUID } from "node:crypto";
import { cliUser, embedded, operatorSetup, providers, psql, routing, startWorker, until, userSetup } from "./flow.mjs";

const say = (text) => console.log(`\n${text}`);
const LLM_KEY = `sk-${randomUUID()}`;
const WEATHER_KEY = `wk-${randomUUID()}`;

/** Runs and prints `spine-assistant …` as the user would see it, streamed. */
async function cli(user, args, options = {}) {
  console.log(`   ${user.name}$ spine-assistant ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(" ")}`);
  const r = await user.run(args, { ...options, echo: true });
  if (r.stderr) process.stdout.write(r.stderr.replace(/^(?=.)/gm, "   "));
  return r;
}

say("1. The operator applies the example's schema (memories as an embedded entity kind, skills,\n   settings, skill_usage, routing weights, the review), deploys its four functions (recall,\n   answer, weather, skill-weights), the database webhook skill_usage → skill-weights, and\n   pg_cron's maintenance:");
await operatorSetup();
console.log(psql("SELECT jobname || '  ' || schedule || '  ' || command FROM cron.job WHERE jobname LIKE 'assistant-%' ORDER BY jobname").replace(/^/gm, "   "));

say("2. The worker runs the `embed` queue (memories → vectors with the stack's all-MiniLM-L6-v2)\n   and the webhook's queue. Stand-ins for Alice's own model and weather service listen on\n   127.0.0.1 (no internet here); the skills reach them with her keys.");
const sink = "assistant";
const worker = startWorker({ sink });
const p = await providers({ llmKey: LLM_KEY, weatherKey: WEATHER_KEY });

try {
  say("3. Alice signs up once through /auth/v1; the CLI keeps her session (mode 0600) and refreshes it.\n   She points it at her providers, stores her own keys in the vault (BYOK, read from stdin)\n   and enables the skills (her consent to what each manifest declares):");
  const alice = cliUser("alice");
  const { output } = await userSetup(alice, { llmUrl: p.llmUrl, llmKey: LLM_KEY, weatherUrl: p.weatherUrl, weatherKey: "wk-expired" });
  console.log(output.trim().replace(/^/gm, "   "));

  say("4. She tells it things; each memory is an entity, embedded by the worker:");
  const ids = [];
  for (const memory of [
    "Sam's birthday is on March 3rd, and she loves orchids",
    "The dentist, Dr. Weber, wants to see me every six months",
    "I park the car on level 2 of the office garage",
  ]) {
    ids.push((await cli(alice, ["remember", memory])).stdout.match(/remembered (\S+)/)[1]);
  }
  await until("the memories' embeddings", () => embedded(ids));
  say("5. Recall by meaning (the recall function embeds the question with the same model and asks\n   spine.similar, under RLS):");
  await cli(alice, ["recall", "where did I leave the car"]);

  say("6. She asks. The CLI routes to a skill, recalls, and prints the skill's thoughts and answer\n   as they stream in (the model stand-in takes 600 ms to think):");
  await cli(alice, ["ask", "When is Sam's birthday?"]);

  say("7. Her weather key has expired: three questions about rain, three failures. Each call is a\n   skill_usage row; the database webhook folds it into her routing weights:");
  for (let i = 0; i < 3; i++) await cli(alice, ["ask", "Will it rain tomorrow?"]);
  await until("the webhook", () => routing(alice, "weather", "uses") === "3");
  await cli(alice, ["skills"]);

  say("8. pg_cron's review (every minute) flags a skill that keeps failing; routing then passes it over:");
  await until("the review", () => routing(alice, "weather", "flagged_at IS NOT NULL") === "t", 75_000);
  await cli(alice, ["ask", "Will it rain tomorrow?"]);

  say("9. She renews her key and asks the skill by name; it works and the flag is cleared:");
  await cli(alice, ["key", "set", "WEATHER_API_KEY"], { input: WEATHER_KEY });
  await cli(alice, ["ask", "--skill", "weather", "Will it rain tomorrow?"]);

  say("10. Bob, another user, recalls nothing of hers:");
  const bob = cliUser("bob");
  await userSetup(bob, { llmUrl: p.llmUrl, llmKey: LLM_KEY, weatherUrl: p.weatherUrl, weatherKey: WEATHER_KEY });
  await cli(bob, ["recall", "When is Sam's birthday?"]);
  say("Done. The test of all this: examples/assistant/assistant.test.mjs (in `cargo xtask test`).");
} finally {
  worker.kill("SIGKILL");
  await p.close();
  psql("SELECT spine.drop_sink(:'sink')", { sink });
}
