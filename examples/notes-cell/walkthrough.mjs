// `cargo xtask example notes-cell`: the notes service of the cells platform on
// the running stack — as a Rust cell (two instances, cbs.notes.*) and as an edge
// function behind Spine's own services (svc.notebook.*) — printed step by step.

import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { bin, env, psql, signUp, until } from "../lib.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const say = (text) => console.log(`\n${text}`);
const show = (value) => console.log(`   ${JSON.stringify(value)}`);

const { connect, headers } = await import("@nats-io/transport-node");
const nc = await connect({ servers: env("NATS_URL") });

/** A request envelope to `subject` as `token`: the reply envelope. */
async function ask(subject, data, token, correlation_id) {
  const h = headers();
  if (token) h.set("Authorization", `Bearer ${token}`);
  const envelope = { id: randomUUID(), correlation_id, type: subject, data };
  const m = await nc.request(subject, JSON.stringify(envelope), { timeout: 10_000, headers: h });
  return m.json();
}

const children = [];
try {
  say("1. The operator applies the schema (public.notes with RLS, the notes_store verbs exposed with\n   spine.expose_service, the share key in the vault), defines the input contract from\n   schemas/note-create.json and binds it to the edge function's verb, and deploys the function.");
  psql(readFileSync(join(here, "schema.sql"), "utf8"));
  psql("SELECT spine.define_schema('notes.create', :'schema'::jsonb)", { schema: readFileSync(join(here, "schemas/note-create.json"), "utf8").replaceAll("\n", " ") });
  psql("SELECT spine.bind_schema('verb', 'notebook.create', 'notes.create')");
  psql("SELECT spine.deploy_function(:'manifest'::jsonb, :'source')", {
    manifest: readFileSync(join(here, "functions/notebook/manifest.json"), "utf8").replaceAll("\n", " "),
    source: readFileSync(join(here, "functions/notebook/index.js"), "utf8"),
  });
  console.log("   " + psql("SELECT string_agg(service || '.' || verb, ', ' ORDER BY verb) FROM spine.services WHERE service = 'notes_store'"));

  say("2. Spine's worker answers svc.{service}.{verb}; two notes-cell instances answer cbs.notes.* in the\n   queue group notes (each reads the share key from the vault with the service key).");
  const serviceEnv = { ...process.env, SPINE_SERVICES_SUBJECT: "svc.{service}.{verb}", SPINE_JOB_QUEUES: "", RUST_LOG: "warn" };
  children.push(spawn(bin("spine-worker"), [], { env: { ...serviceEnv, SPINE_RELAY_SINK: "notes_cell", SPINE_HTTP_ADDR: "127.0.0.1:0" }, stdio: ["ignore", "ignore", "inherit"] }));
  for (const name of ["cell-a", "cell-b"]) {
    children.push(spawn(bin("notes-cell"), [], { env: { ...serviceEnv, CELL_NAME: name }, stdio: ["ignore", "inherit", "inherit"] }));
  }

  say("3. Alice signs up through /auth/v1; her access token goes along with each NATS request.");
  const alice = await signUp("alice");
  const { data: session } = await alice.db.auth.getSession();
  const token = session.session.access_token;
  const bob = await signUp("bob");
  const bobToken = (await bob.db.auth.getSession()).data.session.access_token;

  say("4. cbs.notes.create, six times: the queue group spreads them over the two instances.");
  await until("a cell to answer", async () => (await ask("cbs.notes.list", {}, token).catch(() => null))?.ok);
  const chain = randomUUID();
  const created = [];
  for (let i = 1; i <= 6; i++) {
    const r = await ask("cbs.notes.create", { title: `Note ${i}`, body: "from the walkthrough", tags: ["demo"] }, token, chain);
    created.push(r.data);
    show({ id: r.data.id, title: r.data.title, served_by: r.data.served_by });
  }
  say("5. The events carry the caller's correlation id:");
  show(psql("SELECT count(*) || ' notes.NoteCreated events in chain ' || :'chain' FROM spine.events WHERE type = 'notes.NoteCreated' AND correlation_id = :'chain'", { chain }));

  say("6. A bad request: VALIDATION, with the JSON Pointer of each offending value (never the value):");
  show((await ask("cbs.notes.create", { title: "", tags: ["Not A Tag"] }, token)).error);

  say("7. Bob asks for Alice's note: NOT_FOUND (Spine ran the store's verb as Bob; RLS hid it).");
  show((await ask("cbs.notes.get", { id: created[0].id }, bobToken)).error);
  say("   Alice gets it, with a share link signed by the vault's key:");
  show((await ask("cbs.notes.get", { id: created[0].id }, token)).data.share);

  say("8. The same service as a 23-line edge function `notebook`, served by Spine's worker on svc.notebook.*:");
  const viaFunction = await ask("svc.notebook.create", { title: "via the function" }, token);
  show({ ok: viaFunction.ok, id: viaFunction.data?.id, owner_id: viaFunction.data?.owner_id });
  show((await ask("svc.notebook.create", { title: 5 }, token)).error);
  say("Done. examples/notes-cell/tests/notes.rs checks this in `cargo xtask test`.");
} finally {
  for (const c of children) c.kill("SIGTERM");
  await nc.close();
}
