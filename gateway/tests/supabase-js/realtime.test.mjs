// supabase-js 2.119's Realtime client against spine-gateway's /realtime/v1:
// postgres_changes with RLS (owner and membership policies, DELETE, an UPDATE
// that moves a row between users), filters and bindings routed by ids,
// spine.events, broadcast (client, REST, from SQL on commit only), presence,
// join errors, token refresh and expiry, and resuming from a position after a
// disconnect. Run by `cargo xtask test`.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID, createHmac } from "node:crypto";
import { createClient } from "@supabase/supabase-js";
import WebSocket from "ws";

const URL = process.env.SPINE_URL;
const ANON = process.env.SPINE_ANON_KEY;
const SERVICE = process.env.SPINE_SERVICE_KEY;
const SECRET = process.env.SPINE_JWT_SECRET;
if (!URL || !ANON || !SERVICE || !SECRET) throw new Error("SPINE_* variables: run through cargo xtask test");

const clients = [];
const client = (key = ANON) => {
  const c = createClient(URL, key, {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: WebSocket, heartbeatIntervalMs: 5000 },
  });
  clients.push(c);
  return c;
};
after(async () => {
  for (const c of clients) await c.removeAllChannels();
});
const service = client(SERVICE);

/// A signed-in user as an app with its own JWTs has one: a token signed with
/// the project secret (sign-up's rate limit belongs to the auth suite).
async function user() {
  const id = randomUUID();
  const token = sign({ role: "authenticated", aud: "authenticated", sub: id, exp: Math.floor(Date.now() / 1000) + 3600 });
  // supabase-js's third-party-auth option: REST and Realtime use the token.
  const db = createClient(URL, ANON, {
    accessToken: async () => token,
    realtime: { transport: WebSocket, heartbeatIntervalMs: 5000 },
  });
  clients.push(db);
  return { db, id, token };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === "SUBSCRIBED") resolve(channel);
      else if (status === "CHANNEL_ERROR" || status === "TIMED_OUT") reject(err ?? new Error(status));
    });
  });
}

const topic = (name) => `${name}-${randomUUID().slice(0, 8)}`;

test("postgres_changes: each user sees only rows RLS lets them see, DELETE and moved rows included", async () => {
  const alice = await user();
  const bob = await user();
  const seen = { alice: [], bob: [] };
  for (const [name, u] of [["alice", alice], ["bob", bob]]) {
    await subscribed(
      u.db
        .channel(topic("items"))
        .on("postgres_changes", { event: "*", schema: "public", table: "sjs_rt_items" }, (p) => seen[name].push(p)),
    );
  }
  const a1 = (await alice.db.from("sjs_rt_items").insert({ label: "a1" }).select().single()).data;
  await bob.db.from("sjs_rt_items").insert({ label: "b1" });
  await alice.db.from("sjs_rt_items").update({ n: 1 }).eq("id", a1.id);
  await alice.db.from("sjs_rt_items").delete().eq("id", a1.id);
  // A row of Alice's handed to Bob: Alice may no longer see it, Bob now may.
  const a2 = (await service.from("sjs_rt_items").insert({ label: "a2", owner: alice.id }).select().single()).data;
  await service.from("sjs_rt_items").update({ owner: bob.id }).eq("id", a2.id);

  await until("alice's four changes and bob's two", () => seen.alice.length >= 4 && seen.bob.length >= 2);
  await sleep(300);
  assert.deepEqual(
    seen.alice.map((p) => [p.eventType, p.new.label ?? p.old.label]),
    [["INSERT", "a1"], ["UPDATE", "a1"], ["DELETE", "a1"], ["INSERT", "a2"]],
  );
  assert.deepEqual(
    seen.bob.map((p) => [p.eventType, p.new.label]),
    [["INSERT", "b1"], ["UPDATE", "a2"]],
  );
  const del = seen.alice[2];
  assert.equal(del.old.id, a1.id, "DELETE carries the old row to whoever could see it");
  assert.equal(del.old.owner, alice.id);
  assert.deepEqual(seen.bob[1].old, { id: a2.id }, "the old version Bob could not see: its key only");
  const ins = seen.alice[0];
  assert.equal(ins.schema, "public");
  assert.equal(ins.table, "sjs_rt_items");
  assert.match(ins.commit_timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(ins.errors, null);
  assert.equal(typeof ins.new.id, "number", "values are typed");
});

test("postgres_changes: filters, events and two bindings on one channel routed by ids", async () => {
  const alice = await user();
  const big = [];
  const updates = [];
  await subscribed(
    alice.db
      .channel(topic("filters"))
      .on("postgres_changes", { event: "INSERT", schema: "public", table: "sjs_rt_items", filter: "n=gte.10" }, (p) => big.push(p))
      .on("postgres_changes", { event: "UPDATE", schema: "public", table: "sjs_rt_items", filter: "label=like.u%" }, (p) => updates.push(p)),
  );
  const small = (await alice.db.from("sjs_rt_items").insert({ label: "u-small", n: 5 }).select().single()).data;
  await alice.db.from("sjs_rt_items").insert({ label: "large", n: 20 });
  await alice.db.from("sjs_rt_items").update({ n: 6 }).eq("id", small.id);
  await until("one insert and one update", () => big.length >= 1 && updates.length >= 1);
  await sleep(300);
  assert.deepEqual(big.map((p) => p.new.label), ["large"]);
  assert.deepEqual(updates.map((p) => [p.old.n, p.new.n]), [[5, 6]]);
});

test("postgres_changes: a membership policy is checked as each subscriber", async () => {
  const alice = await user();
  const bob = await user();
  const room = topic("room");
  await service.from("sjs_rt_members").insert({ room, user_id: alice.id });
  const seen = { alice: [], bob: [] };
  for (const [name, u] of [["alice", alice], ["bob", bob]]) {
    await subscribed(
      u.db.channel(topic("msgs")).on("postgres_changes", { event: "INSERT", schema: "public", table: "sjs_rt_messages" }, (p) => seen[name].push(p)),
    );
  }
  await service.from("sjs_rt_messages").insert([{ room, body: "hello" }, { room: "elsewhere", body: "secret" }]);
  await until("alice's message", () => seen.alice.length >= 1);
  await sleep(300);
  assert.deepEqual(seen.alice.map((p) => p.new.body), ["hello"]);
  assert.deepEqual(seen.bob, []);

  const { data, error } = await service.schema("spine").from("realtime_publications").select("table_name, authenticated_path, cache_columns");
  assert.equal(error, null, String(error?.message));
  const path = Object.fromEntries(data.map((r) => [r.table_name, r]));
  assert.equal(path.sjs_rt_items.authenticated_path, "owner", "auth.uid() = column: decided without a query");
  assert.equal(path.sjs_rt_messages.authenticated_path, "check");
  assert.deepEqual(path.sjs_rt_messages.cache_columns, ["room"], "decisions cached by room");
});

test("postgres_changes: a cached decision is forgotten when the membership it read changes", async () => {
  const bob = await user();
  const room = topic("room");
  // A room Bob stays in: a message there, once seen, shows that everything
  // before it was routed (visibility is decided when a change is routed).
  const mark = topic("mark");
  await service.from("sjs_rt_members").insert({ room: mark, user_id: bob.id });
  const seen = [];
  await subscribed(
    bob.db
      .channel(topic("msgs"))
      .on("postgres_changes", { event: "INSERT", schema: "public", table: "sjs_rt_messages", filter: `room=in.(${room},${mark})` }, (p) => seen.push(p.new.body)),
  );
  let marks = 0;
  const say = async (body) => {
    const { error } = await service.from("sjs_rt_messages").insert([{ room, body }, { room: mark, body: `mark ${++marks}` }]);
    assert.equal(error, null, String(error?.message));
    await until(`mark ${marks}`, () => seen.includes(`mark ${marks}`));
  };
  await say("before joining");
  await service.from("sjs_rt_members").insert({ room, user_id: bob.id });
  await say("as a member");
  await service.from("sjs_rt_members").delete().eq("room", room).eq("user_id", bob.id);
  await say("after leaving");
  await service.from("sjs_rt_members").insert({ room, user_id: bob.id });
  await say("back again");
  assert.deepEqual(seen.filter((b) => !b.startsWith("mark")), ["as a member", "back again"]);
});

test("postgres_changes on spine.events: a user sees their own events", async () => {
  const alice = await user();
  const bob = await user();
  const seen = { alice: [], bob: [] };
  const type = `test.R${randomUUID().replace(/[^a-f]/g, "").slice(0, 6)}Pinged`;
  for (const [name, u] of [["alice", alice], ["bob", bob]]) {
    await subscribed(
      u.db.channel(topic("events")).on("postgres_changes", { event: "INSERT", schema: "spine", table: "events", filter: `type=eq.${type}` }, (p) => seen[name].push(p)),
    );
  }
  const { error } = await alice.db.schema("spine").rpc("emit", { type, data: { n: 1 } });
  assert.equal(error, null, String(error?.message));
  await until("alice's event", () => seen.alice.length >= 1);
  await sleep(300);
  assert.equal(seen.alice[0].new.type, type);
  assert.deepEqual(seen.alice[0].new.data, { n: 1 });
  assert.equal(seen.alice[0].new.owner_id, alice.id);
  assert.deepEqual(seen.bob, []);
});

test("broadcast: client to client with self and ack, REST, and from SQL only on commit", async () => {
  const alice = await user();
  const bob = await user();
  const name = topic("chat");
  const got = { alice: [], bob: [] };
  const a = await subscribed(
    alice.db.channel(name, { config: { broadcast: { self: true, ack: true } } }).on("broadcast", { event: "*" }, (m) => got.alice.push(m)),
  );
  const b = await subscribed(bob.db.channel(name).on("broadcast", { event: "*" }, (m) => got.bob.push(m)));
  assert.equal(await a.send({ type: "broadcast", event: "hi", payload: { from: "alice" } }), "ok");
  await b.send({ type: "broadcast", event: "yo", payload: { from: "bob" } });
  await until("both broadcasts", () => got.alice.length >= 2 && got.bob.length >= 1);
  assert.deepEqual(got.alice.map((m) => m.event).sort(), ["hi", "yo"], "self: alice hears herself");
  assert.deepEqual(got.bob.map((m) => [m.event, m.payload.from]), [["hi", "alice"]], "no self: bob does not hear himself");

  // REST, as httpSend does it.
  const res = await b.httpSend("rest", { via: "http" });
  assert.equal(res.success, true, JSON.stringify(res));
  await until("the REST broadcast", () => got.alice.some((m) => m.event === "rest"));

  // From SQL: a failing transaction sends nothing, a committed one is delivered.
  let r = await alice.db.rpc("sjs_broadcast", { topic: name, n: 1, fail: true });
  assert.ok(r.error, "the transaction failed");
  r = await alice.db.rpc("sjs_broadcast", { topic: name, n: 2, fail: false });
  assert.equal(r.error, null, String(r.error?.message));
  await until("the committed database broadcast", () => got.bob.some((m) => m.event === "db"));
  await sleep(300);
  assert.deepEqual(got.bob.filter((m) => m.event === "db").map((m) => m.payload.n), [2]);
});

test("presence: state on join, diffs on track and leave", async () => {
  const alice = await user();
  const bob = await user();
  const name = topic("lobby");
  const a = alice.db.channel(name, { config: { presence: { key: "alice" } } });
  a.on("presence", { event: "sync" }, () => {});
  await subscribed(a);
  assert.equal(await a.track({ status: "online" }), "ok");
  const b = bob.db.channel(name, { config: { presence: { key: "bob" } } });
  const leaves = [];
  b.on("presence", { event: "sync" }, () => {}).on("presence", { event: "leave" }, ({ key }) => leaves.push(key));
  await subscribed(b);
  await until("bob sees alice", () => Object.keys(b.presenceState()).includes("alice"));
  assert.equal(b.presenceState().alice[0].status, "online");
  assert.equal(await b.track({ status: "away" }), "ok");
  await until("alice sees bob", () => Object.keys(a.presenceState()).includes("bob"));
  await alice.db.removeChannel(a);
  await until("bob sees alice leave", () => leaves.includes("alice"));
  assert.deepEqual(Object.keys(b.presenceState()), ["bob"]);
});

test("join errors: unpublished tables and bad filters are refused with a reason", async () => {
  const alice = await user();
  const cases = [
    [{ event: "*", schema: "public", table: "sjs_notes" }, /TableNotPublished/],
    [{ event: "*", schema: "public", table: "sjs_rt_items", filter: "nope=eq.1" }, /not a column/],
    [{ event: "TRUNCATE", schema: "public", table: "sjs_rt_items" }, /not \*, INSERT, UPDATE or DELETE/],
  ];
  for (const [binding, reason] of cases) {
    const ch = alice.db.channel(topic("bad")).on("postgres_changes", binding, () => {});
    await assert.rejects(subscribed(ch), reason);
    await alice.db.removeChannel(ch);
  }
});

test("private channels: the policies of spine.realtime_messages decide who reads and writes", async () => {
  const alice = await user();
  const bob = await user();
  const carol = await user();
  const name = topic("sjs-private");
  await service.from("sjs_rt_members").insert([{ room: name, user_id: alice.id }, { room: name, user_id: carol.id }]);
  const got = { alice: [], public: [], carol: [] };
  const a = await subscribed(
    alice.db.channel(name, { config: { private: true, broadcast: { ack: true } } }).on("broadcast", { event: "*" }, (m) => got.alice.push(m)),
  );
  const c = await subscribed(
    carol.db.channel(name, { config: { private: true, broadcast: { ack: true } } }).on("broadcast", { event: "*" }, (m) => got.carol.push(m)),
  );
  // Bob is no member: refused. Bob on the public channel of the same name hears nothing private.
  const refused = bob.db.channel(name, { config: { private: true } });
  await assert.rejects(subscribed(refused), /Unauthorized: You do not have permissions to read/);
  await bob.db.removeChannel(refused);
  await subscribed(bob.db.channel(name).on("broadcast", { event: "*" }, (m) => got.public.push(m)));

  assert.equal(await a.send({ type: "broadcast", event: "secret", payload: { n: 1 } }), "ok");
  await until("carol hears alice", () => got.carol.some((m) => m.event === "secret"));
  const r = await alice.db.rpc("sjs_private_broadcast", { topic: name, n: 2 });
  assert.equal(r.error, null, String(r.error?.message));
  await until("the private database broadcast", () => got.alice.some((m) => m.event === "db") && got.carol.some((m) => m.event === "db"));
  // (A client reuses a channel by topic: a fresh one for the private REST send.)
  const dave = await user();
  await assert.rejects(
    dave.db.channel(name, { config: { private: true } }).httpSend("rest", { n: 3 }),
    /no permission to write to the private channel/,
    "a non-member may not write to the private channel over REST",
  );
  await sleep(300);
  assert.deepEqual(got.public, [], "public and private channels of one name do not mix");
  // Presence is not writable by policy: track is refused.
  assert.equal(await c.track({ here: true }), "error");
});

function sign(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

test("tokens: an invalid refresh closes the channel; an expiring token closes it at expiry", async () => {
  const alice = await user();
  const systems = [];
  const ch = alice.db.channel(topic("tok")).on("system", {}, (m) => systems.push(m));
  await subscribed(ch);
  await alice.db.realtime.setAuth(sign({ role: "authenticated", sub: alice.id, exp: 1 }));
  await until("the system error", () => systems.some((m) => m.status === "error"));
  assert.match(systems.find((m) => m.status === "error").message, /expired|InvalidJWTToken/i);
  await until("the channel closes", () => ch.state === "closed");

  const other = await user();
  const short = sign({ role: "authenticated", sub: other.id, aud: "authenticated", exp: Math.floor(Date.now() / 1000) + 2 });
  await other.db.realtime.setAuth(short);
  const msgs = [];
  const ch2 = other.db.channel(topic("exp")).on("system", {}, (m) => msgs.push(m));
  await subscribed(ch2);
  await until("expiry closes the channel", () => msgs.some((m) => /expired/i.test(m.message ?? "")), 8000);
  await until("closed", () => ch2.state === "closed");
});

test("resume: a client that reconnects with its position gets every change it missed, once, in order", async () => {
  const alice = await user();
  const got = [];
  // The extra `position` key rides in the binding object, which supabase-js
  // sends again on every rejoin; each record carries `spine_position`.
  const binding = { event: "INSERT", schema: "public", table: "sjs_rt_items", filter: "label=like.resume-%", position: "now" };
  const ch = alice.db.channel(topic("resume")).on("postgres_changes", binding, (p) => {
    got.push(p.new.label);
    binding.position = p.new.spine_position;
  });
  await subscribed(ch);
  await alice.db.from("sjs_rt_items").insert({ label: "resume-first" });
  await until("the first change", () => got.length === 1);

  alice.db.realtime.disconnect();
  await until("disconnected", () => !alice.db.realtime.isConnected());
  const rows = Array.from({ length: 500 }, (_, i) => ({ label: `resume-${String(i).padStart(3, "0")}`, owner: alice.id }));
  const { error } = await service.from("sjs_rt_items").insert(rows);
  assert.equal(error, null, String(error?.message));
  alice.db.realtime.connect();
  await until("all 500 missed changes", () => got.length >= 501, 20000);
  await alice.db.from("sjs_rt_items").insert({ label: "resume-live" });
  await until("the live change after the replay", () => got.includes("resume-live"));
  await sleep(300);
  assert.deepEqual(got, ["resume-first", ...rows.map((r) => r.label), "resume-live"]);
});
