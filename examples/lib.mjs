// Helpers every example shares: the stack's environment, psql, users through
// /auth/v1, waiting, and reading a JetStream stream.

import { execFileSync, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@supabase/supabase-js";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");

export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run through cargo xtask (example <name>, or test)`);
  return v;
};
/** A binary of the workspace: `SPINE_<NAME>_BIN` (xtask sets them), else target/debug. */
export const bin = (name) =>
  process.env[`SPINE_${name.replace(/^spine-/, "").replaceAll("-", "_").toUpperCase()}_BIN`] ?? join(root, "target/debug", name);

/**
 * An example's operator setup: its `schema.sql` (psql), its `functions/` when
 * it has them (`spine-functions deploy`), the SQL files of `then` (what needs
 * the functions, such as a database webhook to one), then a wait until the
 * gateway's schema cache (reloaded by the schema's NOTIFY, asynchronously)
 * sees `table`.
 */
export async function install(dir, { table, functions = true, then = [] }) {
  const apply = (file) =>
    execFileSync("psql", [env("DATABASE_URL"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", join(dir, file)]);
  apply("schema.sql");
  if (functions) {
    execFileSync(bin("spine-functions"), ["deploy", join(dir, "functions")], { env: { ...process.env, RUST_LOG: "warn" } });
  }
  then.forEach(apply);
  await until(`the gateway to see public.${table}`, async () => {
    const r = await fetch(`${env("SPINE_URL")}/rest/v1/${table}?limit=0`, { headers: { apikey: env("SPINE_ANON_KEY") } });
    return r.status !== 404;
  });
}

/**
 * `spine-worker` as an example runs it: its relay advancing a sink of its own
 * (made at the outbox's head, so it relays the example's events, not the
 * history), no NATS services, a free port for /healthz, and `env` (the
 * queues it runs, relay settings).
 */
export function spawnWorker(sink, env) {
  psql("SELECT spine.ensure_sink(:'sink', 'nats', false)", { sink });
  return spawn(bin("spine-worker"), [], {
    env: {
      ...process.env,
      SPINE_RELAY_SINK: sink,
      SPINE_SERVICES_SUBJECT: "",
      SPINE_HTTP_ADDR: "127.0.0.1:0",
      RUST_LOG: "warn",
      ...env,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
}

/** supabase-js's answer's data, or a thrown error naming the call. */
export const ok = (what) => ({ data, error }) => {
  if (error) throw new Error(`${what}: ${error.code ?? ""} ${error.message}`);
  return data;
};

/** Runs `sql` with psql (from stdin, so `:'name'` takes `vars`); its output. */
export const psql = (sql, vars = {}) =>
  execFileSync(
    "psql",
    [env("DATABASE_URL"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", ...Object.entries(vars).flatMap(([k, v]) => ["-v", `${k}=${v}`])],
    { encoding: "utf8", input: sql },
  ).trim();

/** A new user through /auth/v1, signed in: their supabase-js client. */
export async function signUp(name) {
  const db = createClient(env("SPINE_URL"), env("SPINE_ANON_KEY"), { auth: { persistSession: false } });
  const email = `${name}-${randomUUID()}@example.test`;
  const password = `${name} password`;
  const { data, error } = await db.auth.signUp({ email, password });
  if (error) throw new Error(`sign-up: ${error.message}`);
  return { db, spine: db.schema("spine"), email, password, id: data.user.id };
}

/** Polls `check` (async) until it returns something truthy, or fails after `ms`. */
export async function until(what, check, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every message of JetStream stream `stream` whose CloudEvent passes `keep`, in stream order. */
export async function streamEvents(stream, keep) {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstream, jetstreamManager } = await import("@nats-io/jetstream");
  const nc = await connect({ servers: env("NATS_URL") });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    const consumer = await jetstream(nc).consumers.get(stream); // ordered, from the start
    const out = [];
    const messages = await consumer.fetch({ max_messages: info.state.messages, expires: 5000 });
    for await (const m of messages) {
      // Spine's events are CloudEvents in JSON; the stream may carry others'.
      let ce = null;
      try {
        ce = m.json();
      } catch {
        ce = null;
      }
      if (ce && keep(ce)) out.push(ce);
      if (m.info.streamSequence >= info.state.last_seq) break;
    }
    return out;
  } finally {
    await nc.close();
  }
}
