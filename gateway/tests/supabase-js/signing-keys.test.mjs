// Supabase's JWT signing keys with the real supabase-js 2.119: a gateway of
// its own (SPINE_GATEWAY_BIN, started here) signs access tokens with an ES256
// key made for this run. auth.getClaims() verifies them in the client against
// /auth/v1/.well-known/jwks.json, without asking /auth/v1/user, and the same
// token carries RLS through /rest/v1 and reaches /functions/v1. Run by
// `cargo xtask test` with DATABASE_URL, SPINE_JWT_SECRET and SPINE_ANON_KEY.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { generateKeyPairSync, randomUUID } from "node:crypto";
import { createServer } from "node:net";
import { createClient } from "@supabase/supabase-js";
import WebSocket from "ws";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run through cargo xtask test`);
  return v;
};

const freePort = () =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });

const { privateKey } = generateKeyPairSync("ec", {
  namedCurve: "P-256",
  privateKeyEncoding: { type: "pkcs8", format: "pem" },
  publicKeyEncoding: { type: "spki", format: "pem" },
});
const port = await freePort();
const URL = `http://127.0.0.1:${port}`;
let log = "";
const gateway = spawn(env("SPINE_GATEWAY_BIN"), [], {
  env: {
    ...process.env,
    SPINE_GATEWAY_ADDR: `127.0.0.1:${port}`,
    SPINE_JWT_SIGNING_KEY: privateKey,
    // This gateway serves its own clients only.
    NATS_URL: "",
  },
  stdio: ["ignore", "pipe", "pipe"],
});
gateway.stdout.on("data", (d) => (log += d));
gateway.stderr.on("data", (d) => (log += d));
after(() => gateway.kill("SIGTERM"));

async function ready() {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (gateway.exitCode !== null) throw new Error(`the gateway exited: ${log}`);
    try {
      const r = await fetch(`${URL}/health/ready`);
      if (r.ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the gateway was not ready within 20 s: ${log}`);
}
await ready();

// Every URL the client fetches, to tell local verification from a round trip.
const fetched = [];
const recording = (...args) => {
  fetched.push(String(args[0] instanceof Request ? args[0].url : args[0]));
  return fetch(...args);
};
const client = () =>
  createClient(URL, env("SPINE_ANON_KEY"), {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: WebSocket },
    global: { fetch: recording },
  });

test("getClaims verifies an ES256 access token with the served JWKS", async () => {
  const db = client();
  const email = `es256-${randomUUID()}@example.test`;
  let r = await db.auth.signUp({ email, password: "correct horse" });
  assert.equal(r.error, null, String(r.error));
  const uid = r.data.user.id;
  const [head] = r.data.session.access_token.split(".");
  const header = JSON.parse(Buffer.from(head, "base64url").toString());
  assert.equal(header.alg, "ES256");
  assert.ok(header.kid, "the token names its key");

  fetched.length = 0;
  r = await db.auth.getClaims();
  assert.equal(r.error, null, String(r.error));
  assert.equal(r.data.claims.sub, uid);
  assert.equal(r.data.claims.role, "authenticated");
  assert.equal(r.data.header.kid, header.kid);
  assert.ok(
    fetched.some((u) => u.endsWith("/auth/v1/.well-known/jwks.json")),
    `the client fetched the JWKS: ${fetched}`,
  );
  assert.ok(
    !fetched.some((u) => u.endsWith("/auth/v1/user")),
    `verified in the client, not by asking /user: ${fetched}`,
  );

  // A token whose payload was changed after signing: the client refuses it.
  const token = (await db.auth.getSession()).data.session.access_token;
  const [h, p, s] = token.split(".");
  const claims = JSON.parse(Buffer.from(p, "base64url").toString());
  claims.role = "service_role";
  const tampered = `${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s}`;
  const bad = await db.auth.getClaims(tampered);
  assert.ok(bad.error, "a tampered token does not verify");
  assert.equal(bad.data, null);
});

test("an ES256 user token carries RLS through /rest/v1 and reaches /functions/v1", async () => {
  const alice = client();
  const bob = client();
  for (const c of [alice, bob]) {
    const r = await c.auth.signUp({ email: `es256-${randomUUID()}@example.test`, password: "pw-pw-pw" });
    assert.equal(r.error, null, String(r.error));
  }
  const key = `es256-${randomUUID()}`;
  let r = await alice.from("sjs_kv").insert({ k: key, v: 7 }).select();
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(r.data[0].v, 7);
  r = await alice.from("sjs_kv").select("k, v").eq("k", key);
  assert.deepEqual(r.data, [{ k: key, v: 7 }]);
  r = await bob.from("sjs_kv").select("k").eq("k", key);
  assert.deepEqual(r.data, [], "Bob does not see Alice's row");

  const uid = (await alice.auth.getUser()).data.user.id;
  const f = await alice.functions.invoke("hello", { body: {} });
  assert.equal(f.error, null, String(f.error));
  assert.deepEqual([f.data.user, f.data.role], [uid, "authenticated"]);
});
