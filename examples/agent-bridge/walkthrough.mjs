// `cargo xtask example agent-bridge`: threads where people and agents talk, on
// the running stack, step by step: posts through supabase-js (RPC), triggers
// debounced in Spine's job queue, the supervisor delivering them.

import { spawn } from "node:child_process";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { bin, install, ok, psql, signUp, until } from "../lib.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const say = (text) => console.log(`\n${text}`);
const show = (value) => console.log(`   ${JSON.stringify(value)}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

say("1. The operator applies the schema: threads, participants, messages with a gap-free seq per thread,\n   read cursors, agent sessions, deliveries; bridge_post debounces the thread's trigger job.\n   The walkthrough shortens the quiet window to 2 s and the max defer to 6 s.");
await install(here, { table: "bridge_settings", functions: false });
psql("UPDATE public.bridge_settings SET quiet_window = '2 seconds', max_defer = '6 seconds'");

say("2. The supervisor runs the bridge_triggers queue (health: /health/live, /health/ready, /metrics).");
const port = 54398;
const supervisor = spawn(bin("bridge-supervisor"), [], {
  env: { ...process.env, BRIDGE_HTTP_ADDR: `127.0.0.1:${port}` },
  stdio: ["ignore", "inherit", "inherit"],
});
try {
  await until("the supervisor to be ready", async () => (await fetch(`http://127.0.0.1:${port}/health/ready`).catch(() => null))?.ok);

  say("3. Alice (a person) and an agent sign up; Alice opens a thread with the agent.");
  const alice = await signUp("alice");
  const agent = await signUp("agent");
  const thread = ok("thread")(await alice.db.rpc("bridge_create_thread", { title: "Plan the week", agents: [agent.id] }));
  show({ thread });

  say("4. Alice posts five messages in a burst (one with an idempotency key, sent twice):");
  for (const body of ["Hi", "Monday: dentist at 9", "Tuesday: gym"]) {
    show(ok("post")(await alice.db.rpc("bridge_post", { thread, body })).seq);
  }
  const once = ok("post")(await alice.db.rpc("bridge_post", { thread, body: "Wednesday: call Sam", idempotency_key: "wed-1" }));
  const again = ok("post")(await alice.db.rpc("bridge_post", { thread, body: "Wednesday: call Sam", idempotency_key: "wed-1" }));
  show({ first: once.seq, same_key_again: again.seq });
  show(ok("post")(await alice.db.rpc("bridge_post", { thread, body: "Thursday: free" })).seq);

  say("5. Quiet for 2 s: the supervisor delivers once, up to the last message (bridge.AgentTriggered).");
  const delivered = await until("the delivery", async () => {
    const { data } = await alice.db.from("bridge_deliveries").select("upto_seq, attempt, delivered_at").eq("thread_id", thread);
    return data?.length && data;
  });
  show(delivered);

  say("6. The agent reads and moves its cursor; a cursor never goes back.");
  show({ read_to: ok("read")(await agent.db.rpc("bridge_mark_read", { thread, seq: 5 })) });
  show({ asked_for_2: ok("read")(await agent.db.rpc("bridge_mark_read", { thread, seq: 2 })) });

  say("7. Steady traffic, a post every second for 8 s (never quiet for 2 s): delivered at the max defer.");
  const start = Date.now();
  for (let i = 0; i < 8; i++) {
    await alice.db.rpc("bridge_post", { thread, body: `tick ${i}` });
    await sleep(1000);
  }
  const { data: all } = await alice.db.from("bridge_deliveries").select("upto_seq, delivered_at").eq("thread_id", thread).order("delivered_at");
  for (const d of all.filter((d) => Date.parse(d.delivered_at) >= start)) {
    show({ upto_seq: d.upto_seq, seconds_after_the_first_tick: ((Date.parse(d.delivered_at) - start) / 1000).toFixed(1) });
  }

  say("8. The supervisor's metrics:");
  console.log((await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).split("\n").filter((l) => l && !l.startsWith("#")).map((l) => `   ${l}`).join("\n"));
  say("Done. examples/agent-bridge/tests/bridge.rs checks this, kill -9 and Postgres going away included, in `cargo xtask test`.");
} finally {
  supervisor.kill("SIGTERM");
}
