// Who the console acts as. An operator pastes the service key (a JWT or an
// sb_secret_… key); a user signs in with email and password and sees only
// what RLS lets them see. The console has no private API: every read and
// action is a supabase-js call any app could make with the same credentials.
// Credentials live in sessionStorage: gone when the tab closes.

import { createClient } from "@supabase/supabase-js";

const KEY = "spine-studio-session";
const url = window.location.origin;

async function config() {
  const r = await fetch(`${url}/studio/config.json`);
  if (!r.ok) throw new Error(`config.json: HTTP ${r.status}`);
  return r.json();
}

function client(key, storage) {
  return createClient(url, key, {
    auth: { persistSession: storage, autoRefreshToken: storage, storage: window.sessionStorage },
  });
}

/** The saved session's client, or null. */
export async function restore() {
  const saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
  if (!saved) return null;
  if (saved.role === "operator") return { role: "operator", db: client(saved.key, false) };
  const { anonKey } = await config();
  const db = client(anonKey, true);
  const { data } = await db.auth.getSession();
  if (!data.session) return null;
  return { role: "user", db, email: data.session.user.email, uid: data.session.user.id };
}

/** Signs in as operator: the key must read what only the service role reads. */
export async function asOperator(key) {
  const db = client(key.trim(), false);
  const { error } = await db.schema("spine").from("sinks").select("name").limit(1);
  if (error) throw new Error(`this key is not a service key: ${error.message}`);
  sessionStorage.setItem(KEY, JSON.stringify({ role: "operator", key: key.trim() }));
  return { role: "operator", db };
}

/** Signs in as a user through /auth/v1. */
export async function asUser(email, password) {
  const { anonKey } = await config();
  const db = client(anonKey, true);
  const { data, error } = await db.auth.signInWithPassword({ email, password });
  if (error) throw new Error(error.message);
  sessionStorage.setItem(KEY, JSON.stringify({ role: "user" }));
  return { role: "user", db, email: data.user.email, uid: data.user.id };
}

export async function signOut(session) {
  if (session?.role === "user") await session.db.auth.signOut();
  sessionStorage.removeItem(KEY);
}
