// `cargo xtask demo`'s gateway step: what an app does with supabase-js against
// Spine. Alice signs up, emits an event through Spine's own API, reads her events
// back as a table and receives it live over Realtime; Bob, signed in too, sees
// none of them either way.

import { randomUUID } from "node:crypto";
import { createClient } from "@supabase/supabase-js";
import WebSocket from "ws";

const client = () =>
  createClient(process.env.SPINE_URL, process.env.SPINE_ANON_KEY, {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: WebSocket },
  });
const show = (what, value) => console.log(`   ${what}: ${JSON.stringify(value)}`);
const fail = (what, error) => {
  console.error(`   ${what} failed: ${JSON.stringify(error)}`);
  process.exit(1);
};

const run = randomUUID().slice(0, 8);
const alice = client();
const bob = client();
let r = await alice.auth.signUp({ email: `alice-${run}@example.test`, password: "correct horse" });
if (r.error) fail("alice signs up", r.error);
show("alice signs up (POST /auth/v1/signup)", { id: r.data.user.id, email: r.data.user.email });
r = await bob.auth.signUp({ email: `bob-${run}@example.test`, password: "battery staple" });
if (r.error) fail("bob signs up", r.error);

const heard = { alice: [], bob: [] };
const listen = (c, who) =>
  new Promise((resolve, reject) =>
    c
      .channel(`demo-${who}-${run}`)
      .on("postgres_changes", { event: "INSERT", schema: "spine", table: "events", filter: `subject=eq.demo/${run}` },
          (p) => heard[who].push(p.new))
      .subscribe((status, err) => {
        if (status === "SUBSCRIBED") resolve();
        else if (status === "CHANNEL_ERROR" || status === "TIMED_OUT") reject(err ?? new Error(status));
      }),
  );
try {
  await listen(alice, "alice");
  await listen(bob, "bob");
} catch (e) {
  fail("subscribe", String(e));
}
show("alice and bob subscribe to their events over Realtime (GET /realtime/v1/websocket)", "SUBSCRIBED");

r = await alice.schema("spine").rpc("emit", {
  type: "demo.GatewayGreeted",
  data: { text: "hello through supabase-js" },
  subject: `demo/${run}`,
});
if (r.error) fail("emit", r.error);
show("alice calls spine.emit (POST /rest/v1/rpc/emit, Content-Profile: spine)", r.data);

const mine = (c) =>
  c.schema("spine").from("events").select("type, subject, data", { count: "exact" }).eq("subject", `demo/${run}`);
r = await mine(alice);
if (r.error) fail("alice reads", r.error);
show("alice reads her events (GET /rest/v1/events?subject=eq.…)", { count: r.count, rows: r.data });
r = await mine(bob);
if (r.error) fail("bob reads", r.error);
show("bob reads the same (RLS: not his)", { count: r.count, rows: r.data });
if (r.count !== 0) fail("bob must see nothing", r.data);

const deadline = Date.now() + 5000;
while (heard.alice.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
show("alice's Realtime channel receives it (postgres_changes INSERT)", heard.alice.map((e) => ({ type: e.type, data: e.data })));
show("bob's channel receives nothing (RLS decides Realtime too)", heard.bob);
if (heard.alice.length !== 1 || heard.bob.length !== 0) fail("realtime", heard);
await alice.removeAllChannels();
await bob.removeAllChannels();
process.exit(0);
