// The real supabase-js 2.119 against spine-gateway's /rest/v1 and /functions/v1,
// as an app would call them. Run by `cargo xtask test` (which applies
// fixture.sql first) with SPINE_URL, SPINE_ANON_KEY, SPINE_SERVICE_KEY,
// SPINE_PUBLISHABLE_KEY and SPINE_JWT_SECRET from `cargo xtask env`.
//
// Users here carry JWTs signed with the project secret, as GoTrue would issue
// them; auth.test.mjs signs users up through /auth/v1.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { createClient } from "@supabase/supabase-js";
import WebSocket from "ws";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run through cargo xtask test`);
  return v;
};
const URL = env("SPINE_URL");
const ANON = env("SPINE_ANON_KEY");
const SECRET = env("SPINE_JWT_SECRET");

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
function sign(claims) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64(claims);
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}
function userToken(sub = randomUUID(), extra = {}) {
  const now = Math.floor(Date.now() / 1000);
  return sign({ sub, role: "authenticated", aud: "authenticated", iat: now, exp: now + 600, ...extra });
}

// Node 20 has no global WebSocket: realtime-js takes `ws` as its transport.
const options = (headers = {}) => ({
  auth: { persistSession: false, autoRefreshToken: false },
  realtime: { transport: WebSocket },
  global: { headers },
});
const anonClient = () => createClient(URL, ANON, options());
function userClient(sub = randomUUID()) {
  const client = createClient(URL, ANON, options({ Authorization: `Bearer ${userToken(sub)}` }));
  client.uid = sub;
  return client;
}

test("RPC: scalar by POST and GET, void, defaults, overloads", async () => {
  const db = anonClient();
  let r = await db.rpc("sjs_add", { a: 2 });
  assert.equal(r.error, null);
  assert.equal(r.data, 3);
  r = await db.rpc("sjs_add", { a: 4 }, { get: true });
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(r.data, 5);
  r = await db.rpc("sjs_nothing");
  assert.equal(r.error, null);
  assert.equal(r.status, 204);
  assert.equal(r.data, null);
  // Two overloads take (a, b): PostgREST refuses to guess.
  r = await db.rpc("sjs_add", { a: "x", b: "y" });
  assert.equal(r.error.code, "PGRST203");
  assert.equal(r.status, 300);
  // One unnamed jsonb argument takes the whole body.
  r = await db.rpc("sjs_echo", { any: ["thing", 1] });
  assert.deepEqual(r.data, { any: ["thing", 1] });
});

test("RPC sees the caller as PostgREST would show it", async () => {
  const alice = userClient();
  let r = await alice.rpc("sjs_whoami");
  assert.equal(r.error, null);
  assert.equal(r.data.uid, alice.uid);
  assert.equal(r.data.role, "authenticated");
  assert.equal(r.data.method, "POST");
  assert.equal(r.data.path, "/rest/v1/rpc/sjs_whoami");
  assert.match(r.data.client, /^supabase-js/);
  // A STABLE function runs read-only even by POST, as behind PostgREST.
  assert.equal(r.data.read_only, "on");
  r = await alice.rpc("sjs_whoami", {}, { get: true });
  assert.equal(r.data.method, "GET");
  assert.equal(r.data.read_only, "on");
  r = await anonClient().rpc("sjs_whoami");
  assert.equal(r.data.uid, null);
  assert.equal(r.data.role, "anon");
  // A VOLATILE function writes by POST; through GET it runs read-only: 25006 → 405.
  r = await alice.rpc("sjs_write");
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(r.data, 1);
  r = await alice.rpc("sjs_write", {}, { get: true });
  assert.equal(r.error.code, "25006");
  assert.equal(r.status, 405);
});

async function seed(client) {
  const rows = [
    { title: "alpha note", body: "the quick brown fox", n: 1, tags: ["red", "blue"], meta: { lang: "en", level: 1 } },
    { title: "beta note", body: "jumps over the lazy dog", n: 2, tags: ["blue"], meta: { lang: "de", level: 2 } },
    { title: "gamma", body: null, n: 3, tags: [], meta: { lang: "en", level: 3 } },
    { title: "delta", body: "a fox again", n: null, tags: ["green"], meta: {} },
  ];
  const r = await client.from("sjs_notes").insert(rows).select("id,title,n,owner");
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(r.status, 201);
  assert.equal(r.data.length, 4);
  assert.ok(r.data.every((row) => row.owner === client.uid));
  return r.data;
}

test("RLS: users see only their own rows; anon is refused", async () => {
  const alice = userClient();
  const bob = userClient();
  await seed(alice);
  let r = await alice.from("sjs_notes").select("title");
  assert.equal(r.data.length, 4);
  r = await bob.from("sjs_notes").select("*");
  assert.deepEqual(r.data, []);
  r = await bob.rpc("sjs_note_count");
  assert.equal(r.data, 0);
  r = await anonClient().from("sjs_notes").select("*");
  assert.equal(r.error.code, "42501");
  assert.equal(r.status, 401);
  r = await bob.from("sjs_locked").select("*");
  assert.equal(r.error.code, "42501");
  assert.equal(r.status, 403);
  // Bob cannot write rows as Alice.
  r = await bob.from("sjs_notes").insert({ title: "forged", owner: alice.uid });
  assert.equal(r.error.code, "42501");
  r = await alice.from("sjs_notes").select("title").eq("title", "forged");
  assert.deepEqual(r.data, []);
});

test("filters", async () => {
  const alice = userClient();
  await seed(alice);
  const titles = async (q) => {
    const r = await q;
    assert.equal(r.error, null, JSON.stringify(r.error));
    return r.data.map((row) => row.title).sort();
  };
  const notes = () => alice.from("sjs_notes").select("title");
  assert.deepEqual(await titles(notes().eq("n", 2)), ["beta note"]);
  assert.deepEqual(await titles(notes().neq("n", 2)), ["alpha note", "gamma"]);
  assert.deepEqual(await titles(notes().gt("n", 1)), ["beta note", "gamma"]);
  assert.deepEqual(await titles(notes().gte("n", 2)), ["beta note", "gamma"]);
  assert.deepEqual(await titles(notes().lt("n", 2)), ["alpha note"]);
  assert.deepEqual(await titles(notes().lte("n", 2)), ["alpha note", "beta note"]);
  assert.deepEqual(await titles(notes().like("title", "%note")), ["alpha note", "beta note"]);
  assert.deepEqual(await titles(notes().ilike("title", "ALPHA%")), ["alpha note"]);
  assert.deepEqual(await titles(notes().filter("title", "match", "^[gd]")), ["delta", "gamma"]);
  assert.deepEqual(await titles(notes().filter("title", "imatch", "^G")), ["gamma"]);
  assert.deepEqual(await titles(notes().is("n", null)), ["delta"]);
  assert.deepEqual(await titles(notes().not("n", "is", null)), ["alpha note", "beta note", "gamma"]);
  assert.deepEqual(await titles(notes().filter("body", "isdistinct", "a fox again")), ["alpha note", "beta note", "gamma"]);
  assert.deepEqual(await titles(notes().in("n", [1, 3])), ["alpha note", "gamma"]);
  assert.deepEqual(await titles(notes().in("title", ["gamma", "a,b"])), ["gamma"]);
  assert.deepEqual(await titles(notes().contains("tags", ["blue"])), ["alpha note", "beta note"]);
  assert.deepEqual(await titles(notes().containedBy("tags", ["blue", "green"])), ["beta note", "delta", "gamma"]);
  assert.deepEqual(await titles(notes().overlaps("tags", ["red", "green"])), ["alpha note", "delta"]);
  assert.deepEqual(await titles(notes().contains("meta", { lang: "en" })), ["alpha note", "gamma"]);
  assert.deepEqual(await titles(notes().eq("meta->>lang", "de")), ["beta note"]);
  assert.deepEqual(await titles(notes().textSearch("fts", "fox")), ["alpha note", "delta"]);
  assert.deepEqual(await titles(notes().textSearch("fts", "quick fox", { type: "plain", config: "english" })), ["alpha note"]);
  assert.deepEqual(await titles(notes().textSearch("fts", "lazy dog", { type: "phrase" })), ["beta note"]);
  assert.deepEqual(await titles(notes().textSearch("fts", "fox -quick", { type: "websearch" })), ["delta"]);
  assert.deepEqual(await titles(notes().or("n.eq.1,title.eq.delta")), ["alpha note", "delta"]);
  assert.deepEqual(await titles(notes().or("n.gt.2,and(n.eq.1,title.like.alpha*)")), ["alpha note", "gamma"]);
  assert.deepEqual(await titles(notes().not("title", "like", "*note")), ["delta", "gamma"]);
  assert.deepEqual(await titles(notes().match({ n: 1, title: "alpha note" })), ["alpha note"]);
  // Hostile values stay values.
  assert.deepEqual(await titles(notes().eq("title", "x'); DROP TABLE sjs_notes; --")), []);
  // Unknown columns and operators are 400s with a code.
  let r = await notes().eq("nope", 1);
  assert.equal(r.status, 400);
  assert.equal(r.error.code, "42703");
  r = await notes().filter("n", "between", "1");
  assert.equal(r.error.code, "PGRST100");
});

test("select, order, range, count, single, maybeSingle", async () => {
  const alice = userClient();
  await seed(alice);
  let r = await alice.from("sjs_notes").select("label:title, n, lang:meta->>lang").order("n", { ascending: false, nullsFirst: false });
  assert.deepEqual(r.data.map((x) => x.label), ["gamma", "beta note", "alpha note", "delta"]);
  assert.deepEqual(Object.keys(r.data[0]), ["label", "n", "lang"]);
  assert.equal(r.data[0].lang, "en");
  r = await alice.from("sjs_notes").select("title", { count: "exact" }).order("title").range(1, 2);
  assert.equal(r.error, null);
  assert.equal(r.count, 4);
  assert.equal(r.status, 206);
  assert.deepEqual(r.data.map((x) => x.title), ["beta note", "delta"]);
  r = await alice.from("sjs_notes").select("*", { count: "exact", head: true });
  assert.equal(r.count, 4);
  assert.equal(r.data, null);
  r = await alice.from("sjs_notes").select("title").limit(1).order("n");
  assert.deepEqual(r.data, [{ title: "alpha note" }]);
  r = await alice.from("sjs_notes").select("title").eq("n", 3).single();
  assert.deepEqual(r.data, { title: "gamma" });
  r = await alice.from("sjs_notes").select("title").eq("n", 99).single();
  assert.equal(r.error.code, "PGRST116");
  assert.equal(r.status, 406);
  r = await alice.from("sjs_notes").select("title").eq("n", 99).maybeSingle();
  assert.equal(r.error, null);
  assert.equal(r.data, null);
  r = await alice.from("sjs_notes").select("title, owner(*)");
  assert.equal(r.error.code, "PGRST100");
  // CSV is not produced: 406, not JSON under a CSV request.
  r = await alice.from("sjs_notes").select("title").csv();
  assert.equal(r.status, 406);
  assert.equal(r.error.code, "PGRST107");
  // An offset past the end: 416; at the end: an empty page.
  r = await alice.from("sjs_notes").select("title", { count: "exact" }).range(4, 5);
  assert.equal(r.status, 206);
  assert.deepEqual(r.data, []);
  r = await alice.from("sjs_notes").select("title", { count: "exact" }).range(5, 6);
  assert.equal(r.status, 416);
  assert.equal(r.error.code, "PGRST103");
  // A set-returning function takes the same filters and order as a table.
  r = await alice.rpc("sjs_my_notes", { min_n: 2 }).select("title").order("n", { ascending: false });
  assert.deepEqual(r.data, [{ title: "gamma" }, { title: "beta note" }]);
  r = await alice.rpc("sjs_series", { upto: 3 });
  assert.deepEqual(r.data, [1, 2, 3]);
});

test("range operators and like/ilike/eq/gt with (any) and (all)", async () => {
  const db = anonClient();
  const ids = (r) => {
    assert.equal(r.error, null, JSON.stringify(r.error));
    return r.data.map((x) => x.id);
  };
  const q = () => db.from("sjs_slots").select("id").order("id");
  assert.deepEqual(ids(await q().rangeGt("during", "[5,10)")), [3]);
  assert.deepEqual(ids(await q().rangeGte("during", "[5,10)")), [2, 3]);
  assert.deepEqual(ids(await q().rangeLt("during", "[5,10)")), [1]);
  assert.deepEqual(ids(await q().rangeLte("during", "[5,10)")), [1, 2]);
  assert.deepEqual(ids(await q().rangeAdjacent("during", "[10,20)")), [2, 3]);
  assert.deepEqual(ids(await q().not("during", "adj", "[10,20)")), [1]);
  assert.deepEqual(ids(await q().likeAnyOf("name", ["al%", "%mm%"])), [1, 3]);
  assert.deepEqual(ids(await q().likeAllOf("name", ["%a%", "%l%"])), [1]);
  assert.deepEqual(ids(await q().ilikeAnyOf("name", ["BETA", "G*"])), [2, 3]);
  assert.deepEqual(ids(await q().ilikeAllOf("name", ["%A", "B%"])), [2]);
  // The modifiers on other operators, through the raw filter.
  assert.deepEqual(ids(await q().filter("id", "eq(any)", "{1,3}")), [1, 3]);
  assert.deepEqual(ids(await q().filter("id", "gt(all)", "{1,2}")), [3]);
  assert.deepEqual(ids(await q().filter("name", "match(any)", "{^a,^g}")), [1, 3]);
  const bad = await q().filter("id", "in(any)", "{1}");
  assert.equal(bad.error?.code, "PGRST100");
  const quoted = await q().filter("name", "eq(any)", '{"alpha","x\\"y"}');
  assert.deepEqual(ids(quoted), [1]);
});

test("count=planned asks the planner, count=estimated counts exactly up to max-rows", async () => {
  // fixture.sql: 3,000 rows analyzed, 1,000 then deleted; max-rows is 1,000.
  const db = anonClient();
  let r = await db.from("sjs_many").select("id", { count: "exact", head: true });
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(r.count, 2000);
  r = await db.from("sjs_many").select("id", { count: "planned", head: true });
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(r.count, 3000, "the estimate, not a scan");
  r = await db.from("sjs_many").select("id", { count: "planned" }).lte("v", 300).range(0, 9);
  assert.equal(r.data.length, 10);
  assert.ok(r.count >= 200 && r.count <= 400, `the planner's estimate for v <= 300: ${r.count}`);
  assert.equal(r.status, 206);
  // Beyond max-rows the estimate; within it the exact count.
  r = await db.from("sjs_many").select("id", { count: "estimated", head: true });
  assert.equal(r.count, 3000);
  r = await db.from("sjs_many").select("id", { count: "estimated" }).lte("id", 500).range(0, 1);
  assert.equal(r.count, 500);
  assert.deepEqual(r.data, [{ id: 1 }, { id: 2 }]);
  const raw = await fetch(`${URL}/rest/v1/sjs_many?select=id&limit=1`, {
    headers: { apikey: ANON, Prefer: "count=planned" },
  });
  assert.equal(raw.headers.get("content-range"), "0-0/3000");
  assert.equal(raw.headers.get("preference-applied"), "count=planned");
});

test("missing=default fills the keys a row lacks with the column defaults", async () => {
  const alice = userClient();
  const batch = randomUUID();
  let r = await alice
    .from("sjs_defaults")
    .insert([{ batch, label: "a" }, { batch, n: 1 }], { defaultToNull: false })
    .select("owner, label, n");
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.deepEqual(r.data, [
    { owner: alice.uid, label: "a", n: 7 },
    { owner: alice.uid, label: "untitled", n: 1 },
  ]);
  // Without it (supabase-js's default), a lacking key is NULL, as in PostgREST.
  r = await alice.from("sjs_defaults").insert([{ batch, label: "b" }, { batch, n: 2 }]).select("label, n");
  assert.deepEqual(r.data, [
    { label: "b", n: null },
    { label: null, n: 2 },
  ]);
  // An explicit null stays null with missing=default.
  r = await alice
    .from("sjs_defaults")
    .insert([{ batch, label: null }, { batch, n: 3 }], { defaultToNull: false })
    .select("label, n");
  assert.deepEqual(r.data, [
    { label: null, n: 7 },
    { label: "untitled", n: 3 },
  ]);
});

test("maxAffected refuses a PATCH or DELETE that changes more rows, and changes none", async () => {
  const alice = userClient();
  const batch = randomUUID();
  await alice.from("sjs_defaults").insert([1, 2, 3].map((n) => ({ batch, n })));
  let r = await alice.from("sjs_defaults").update({ label: "x" }).eq("batch", batch).maxAffected(2);
  assert.equal(r.error?.code, "PGRST124", JSON.stringify(r.error));
  assert.equal(r.status, 400);
  assert.equal(r.error.details, "The query affects 3 rows");
  r = await alice.from("sjs_defaults").update({ label: "x" }).eq("batch", batch).maxAffected(2).select("n");
  assert.equal(r.error?.code, "PGRST124");
  r = await alice.from("sjs_defaults").select("label").eq("batch", batch);
  assert.deepEqual(r.data.map((x) => x.label), ["untitled", "untitled", "untitled"], "rolled back");
  r = await alice.from("sjs_defaults").delete().eq("batch", batch).maxAffected(1);
  assert.equal(r.error?.code, "PGRST124");
  r = await alice.from("sjs_defaults").update({ label: "y" }).eq("batch", batch).maxAffected(3).select("label");
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(r.data.length, 3);
  r = await alice.from("sjs_defaults").delete().eq("batch", batch).maxAffected(3);
  assert.equal(r.error, null, JSON.stringify(r.error));
  r = await alice.from("sjs_defaults").select("n").eq("batch", batch);
  assert.deepEqual(r.data, []);
  // handling=strict also refuses preferences it does not know.
  const raw = await fetch(`${URL}/rest/v1/sjs_many?select=id&limit=1`, {
    headers: { apikey: ANON, Prefer: "handling=strict, timezone=Mars/Olympus, count=exact" },
  });
  assert.equal(raw.status, 400);
  const body = await raw.json();
  assert.equal(body.code, "PGRST122");
  assert.equal(body.details, "Invalid preferences: timezone=Mars/Olympus");
});

test("insert, upsert, update, delete", async () => {
  const alice = userClient();
  let r = await alice.from("sjs_kv").insert({ k: "a", v: 1 });
  assert.equal(r.error, null);
  assert.equal(r.status, 201);
  assert.equal(r.data, null);
  r = await alice.from("sjs_kv").insert({ k: "a", v: 2 });
  assert.equal(r.error.code, "23505");
  assert.equal(r.status, 409);
  r = await alice.from("sjs_kv").upsert([{ k: "a", v: 5 }, { k: "b", v: 6 }], { onConflict: "owner,k" }).select("k,v");
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.deepEqual(r.data.sort((x, y) => x.k.localeCompare(y.k)), [{ k: "a", v: 5 }, { k: "b", v: 6 }]);
  r = await alice.from("sjs_kv").upsert({ k: "a", v: 100 }, { onConflict: "owner,k", ignoreDuplicates: true }).select("k,v");
  assert.deepEqual(r.data, []);
  r = await alice.from("sjs_kv").update({ v: 7 }).eq("k", "b").select("k,v");
  assert.equal(r.status, 200);
  assert.deepEqual(r.data, [{ k: "b", v: 7 }]);
  r = await alice.from("sjs_kv").update({ v: 8 }).eq("k", "b");
  assert.equal(r.status, 204);
  r = await alice.from("sjs_kv").update({ v: 9 });
  assert.equal(r.error.code, "21000");
  assert.equal(r.status, 400);
  r = await alice.from("sjs_kv").delete();
  assert.equal(r.error.code, "21000");
  r = await alice.from("sjs_kv").delete().eq("k", "a").select("k");
  assert.deepEqual(r.data, [{ k: "a" }]);
  r = await alice.from("sjs_kv").delete().eq("k", "zzz");
  assert.equal(r.status, 204);
  r = await alice.from("sjs_kv").select("k,v");
  assert.deepEqual(r.data, [{ k: "b", v: 8 }]);
  // tx=rollback: the answer of a write that is then undone.
  r = await alice.from("sjs_kv").insert({ k: "ghost", v: 1 }).select("k").rollback();
  assert.deepEqual(r.data, [{ k: "ghost" }]);
  r = await alice.from("sjs_kv").select("k").eq("k", "ghost");
  assert.deepEqual(r.data, []);
  // A column the table does not have.
  r = await alice.from("sjs_kv").insert({ k: "c", nope: 1 });
  assert.equal(r.error.code, "PGRST204");
  assert.equal(r.status, 400);
});

test("the error table", async () => {
  const db = anonClient();
  let r = await db.rpc("sjs_fail", { msg: "no way" });
  assert.equal(r.status, 400);
  assert.equal(r.error.code, "P0001");
  assert.equal(r.error.message, "no way");
  assert.equal(r.error.details, "the detail");
  assert.equal(r.error.hint, "the hint");
  r = await db.rpc("sjs_pay");
  assert.equal(r.status, 402);
  assert.equal(r.error.code, "PT402");
  r = await db.rpc("sjs_missing");
  assert.equal(r.status, 404);
  assert.equal(r.error.code, "PGRST202");
  r = await db.rpc("sjs_add", { c: 1 });
  assert.equal(r.error.code, "PGRST202");
  r = await db.from("sjs_nothing_here").select("*");
  assert.equal(r.status, 404);
  assert.equal(r.error.code, "PGRST205");
  r = await db.schema("nope").rpc("sjs_add", { a: 1 });
  assert.equal(r.status, 406);
  assert.equal(r.error.code, "PGRST106");
  r = await db.rpc("sjs_add", { a: "not a number" });
  assert.equal(r.status, 400);
  assert.equal(r.error.code, "22P02");
  // A forged token: 401, not anon.
  const forged = createClient(URL, ANON, options({ Authorization: `Bearer ${userToken().slice(0, -2)}xx` }));
  r = await forged.rpc("sjs_add", { a: 1 });
  assert.equal(r.status, 401);
  assert.equal(r.error.code, "PGRST301");
  const now = Math.floor(Date.now() / 1000);
  const expired = sign({ sub: randomUUID(), role: "authenticated", iat: now - 7200, exp: now - 3600 });
  r = await createClient(URL, ANON, options({ Authorization: `Bearer ${expired}` })).rpc("sjs_add", { a: 1 });
  assert.equal(r.status, 401);
  assert.equal(r.error.code, "PGRST303");
});

test("Spine's own API through schema('spine')", async () => {
  const alice = userClient();
  const spine = alice.schema("spine");
  let r = await spine.rpc("emit", { type: "notes.NoteShared", data: { note: 1 }, subject: "note/1" });
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.match(r.data, /^[0-9a-f-]{36}$/);
  r = await spine.rpc("enqueue", { queue: "sjs", payload: { work: 1 } });
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(typeof r.data, "number");
  r = await spine.rpc("save_source", {
    name: "sjs_crm",
    mapping: { kind: "person", fields: { name: { path: "full_name", required: true }, email: { path: "email", normalize: ["email"] } }, identity: ["email"] },
  });
  assert.equal(r.error, null, JSON.stringify(r.error));
  r = await spine.rpc("ingest", { source: "sjs_crm", records: [{ id: 1, full_name: "Ada", email: "ADA@example.com" }] });
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(r.data.created, 1);
  // A tenant token when a worker with Meilisearch registered a search key;
  // without one, spine.search_key itself says so (55000): either way the call
  // reached Spine as Alice.
  r = await spine.rpc("search_key", {});
  if (r.error) {
    assert.equal(r.error.code, "55000", JSON.stringify(r.error));
    assert.match(r.error.message, /search is not configured/);
  } else {
    assert.equal(typeof r.data, "object");
  }
  // The worker protocol is not for users: grants decide.
  r = await spine.rpc("fetch_jobs", { queues: ["sjs"], worker: "me", n: 1, lease: "1 minute" });
  assert.equal(r.status, 403);
  assert.equal(r.error.code, "42501");
  r = await anonClient().schema("spine").rpc("events_after", { after_commit_seq: 0, after_seq: 0, max_events: 1 });
  assert.equal(r.status, 401);
  assert.equal(r.error.code, "42501");
});

test("functions.invoke reads a streamed body as the function produces it", async () => {
  const alice = userClient();
  const r = await alice.functions.invoke("tokens", { body: { prompt: "one two three", delay_ms: 150 } });
  assert.equal(r.error, null, String(r.error));
  // functions-js hands a text/event-stream back unread: the Response itself.
  assert.equal(r.data.headers.get("content-type"), "text/event-stream");
  const reader = r.data.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const arrivals = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    arrivals.push(Date.now());
    text += decoder.decode(value, { stream: true });
  }
  const events = text.split("\n\n").filter(Boolean);
  assert.deepEqual(events, [
    'data: {"token":"one"}', 'data: {"token":"two"}', 'data: {"token":"three"}', "data: [DONE]",
  ]);
  // Three pauses of 150 ms between the first token and the end: a buffered body
  // would arrive in one piece.
  const spread = arrivals.at(-1) - arrivals[0];
  assert.ok(spread >= 300, `chunks arrived within ${spread} ms: the body was buffered`);
});

test("functions.invoke as a user and without a token", async () => {
  const alice = userClient();
  let r = await alice.functions.invoke("hello", { body: { hi: 1 } });
  assert.equal(r.error, null, String(r.error));
  assert.equal(r.data.user, alice.uid);
  assert.equal(r.data.role, "authenticated");
  // A publishable key is not a JWT: functions-js sends no Authorization.
  const keyOnly = createClient(URL, env("SPINE_PUBLISHABLE_KEY"), options());
  r = await keyOnly.functions.invoke("hello", { body: {} });
  assert.equal(r.error?.context?.status, 401);
  // Sent as a bearer, an opaque key works on /functions/v1 as on /rest/v1.
  const bearer = (key) => ({ Authorization: `Bearer ${key}` });
  r = await keyOnly.functions.invoke("hello", { body: {}, headers: bearer(env("SPINE_PUBLISHABLE_KEY")) });
  assert.equal(r.error, null, String(r.error));
  assert.deepEqual([r.data.role, r.data.user], ["anon", null]);
  r = await keyOnly.functions.invoke("hello", { body: {}, headers: bearer(env("SPINE_SECRET_KEY")) });
  assert.equal(r.error, null, String(r.error));
  assert.equal(r.data.role, "service_role");
  r = await keyOnly.functions.invoke("hello", { body: {}, headers: bearer("sb_secret_not_ours") });
  assert.equal(r.error?.context?.status, 401);
});
