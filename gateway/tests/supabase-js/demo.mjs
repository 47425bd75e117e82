// `cargo xtask demo`'s gateway step: what an app does with supabase-js against
// Spine. Alice signs up, emits an event through Spine's own API, reads her events
// back as a table; Bob, signed in too, sees none of them.

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
