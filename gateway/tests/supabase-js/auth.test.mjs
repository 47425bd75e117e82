// supabase-js 2.119's auth client against spine-gateway's /auth/v1: sign-up,
// sign-in, refresh, getUser, updateUser, sign-out, and the session's JWT
// carrying RLS through /rest/v1. Run by `cargo xtask test`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { createClient } from "@supabase/supabase-js";
import WebSocket from "ws";

const URL = process.env.SPINE_URL;
const ANON = process.env.SPINE_ANON_KEY;
if (!URL || !ANON) throw new Error("SPINE_URL and SPINE_ANON_KEY: run through cargo xtask test");

const client = () =>
  createClient(URL, ANON, {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: WebSocket },
  });
const email = () => `sjs-${randomUUID()}@example.test`;

test("sign up, sign in, refresh, getUser, updateUser, sign out", async () => {
  const db = client();
  const address = email();
  let r = await db.auth.signUp({ email: address, password: "correct horse", options: { data: { name: "Alice" } } });
  assert.equal(r.error, null, String(r.error));
  assert.equal(r.data.user.email, address);
  assert.equal(r.data.user.user_metadata.name, "Alice");
  assert.ok(r.data.session.access_token);

  r = await db.auth.signUp({ email: address, password: "another one" });
  assert.equal(r.error?.code, "user_already_exists");

  r = await db.auth.signInWithPassword({ email: address, password: "wrong password" });
  assert.equal(r.error?.code, "invalid_credentials");
  assert.equal(r.error?.status, 400);
  r = await db.auth.signInWithPassword({ email: email(), password: "wrong password" });
  assert.equal(r.error?.code, "invalid_credentials", "an unknown email answers the same");

  r = await db.auth.signInWithPassword({ email: address, password: "correct horse" });
  assert.equal(r.error, null, String(r.error));
  const first = r.data.session;
  assert.equal(first.token_type, "bearer");
  assert.equal(first.user.id, r.data.user.id);

  r = await db.auth.getUser();
  assert.equal(r.error, null, String(r.error));
  assert.equal(r.data.user.email, address);

  r = await db.auth.refreshSession();
  assert.equal(r.error, null, String(r.error));
  assert.notEqual(r.data.session.refresh_token, first.refresh_token, "refresh tokens rotate");

  // A rotated refresh token used again: refused, and its session ends.
  const other = client();
  r = await other.auth.refreshSession({ refresh_token: first.refresh_token });
  assert.equal(r.error?.code, "refresh_token_already_used");

  const db2 = client();
  r = await db2.auth.signInWithPassword({ email: address, password: "correct horse" });
  assert.equal(r.error, null);
  r = await db2.auth.updateUser({ data: { name: "Alice B." } });
  assert.equal(r.error, null, String(r.error));
  assert.equal(r.data.user.user_metadata.name, "Alice B.");

  r = await db2.auth.signOut();
  assert.equal(r.error, null, String(r.error));
  const { data } = await db2.auth.getSession();
  assert.equal(data.session, null);
});

test("a signed-in session carries RLS through /rest/v1", async () => {
  const alice = client();
  const bob = client();
  for (const c of [alice, bob]) {
    const r = await c.auth.signUp({ email: email(), password: "correct horse" });
    assert.equal(r.error, null, String(r.error));
  }
  let r = await alice.from("sjs_notes").insert({ title: "alice's" }).select("title, owner");
  assert.equal(r.error, null, JSON.stringify(r.error));
  const { data: me } = await alice.auth.getUser();
  assert.equal(r.data[0].owner, me.user.id);
  r = await bob.from("sjs_notes").select("title");
  assert.deepEqual(r.data, []);
  r = await alice.rpc("sjs_whoami");
  assert.equal(r.data.uid, me.user.id);
  assert.equal(r.data.role, "authenticated");
  // Signed out, the client is anon again.
  await alice.auth.signOut();
  r = await alice.from("sjs_notes").select("title");
  assert.equal(r.status, 401);
});
