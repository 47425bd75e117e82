// The hub, step by step, on Spine's public surfaces: psql for the operator,
// supabase-js through the gateway for users, the worker's relay with the hub's
// stream map, JetStream consumers limited to one user's subjects.
// `walkthrough.mjs` prints it; `hub.test.mjs` checks it.

import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { env, install, ok, psql, spawnWorker, until } from "../lib.mjs";

export { ok, psql, signUp, until } from "../lib.mjs";

const here = dirname(fileURLToPath(import.meta.url));

/** The streams the hub's consumers read, and where each event type goes. */
export const STREAM_MAP = "connector.*=connector-data, audit.*=audit-log, *=platform-events";

/** The operator's part: the page's view, the two functions. */
export async function operatorSetup() {
  await install(here, { table: "my_people" });
}

/** A user's part: the CRM source's mapping and consent to the two plugins. */
export async function userSetup(user) {
  ok("crm source")(
    await user.spine.rpc("save_source", {
      name: "crm",
      mapping: {
        kind: "person",
        fields: {
          name: { path: "full_name", normalize: ["trim"], required: true },
          email: { path: "email", normalize: ["email"] },
          phone: { path: "phone", normalize: [{ phone: { region: "DE" } }] },
        },
        identity: ["email", "phone"],
      },
    }),
  );
  ok("consent hub-crm")(await user.spine.rpc("grant_consent", { plugin: "hub-crm", scopes: ["*"] }));
  ok("consent hub-devices")(await user.spine.rpc("grant_consent", { plugin: "hub-devices", scopes: ["*"] }));
}

/** The CRM pushes contacts through the connector, as the user. */
export async function pushContacts(user, contacts) {
  const { data, error } = await user.db.functions.invoke("hub-crm", { body: { contacts } });
  if (error) throw new Error(`hub-crm: ${error.message}: ${await error.context?.text?.()}`);
  return data;
}

/**
 * The worker as the hub runs it: the outbox relayed to platform-events,
 * connector-data and audit-log, each subject ending with the event's owner.
 */
export function startRelay(sink) {
  return spawnWorker(sink, { SPINE_RELAY_STREAMS: STREAM_MAP, SPINE_RELAY_OWNER_SUBJECTS: "on", SPINE_JOB_QUEUES: "" });
}

/**
 * What a consumer limited to `owner` reads from `stream`: a JetStream consumer
 * whose filter is the owner's subjects (`<prefix>.*.*.<owner>`), so the
 * server never sends it anyone else's events. CloudEvents, in stream order.
 */
export async function ownersEvents(stream, owner) {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstream, jetstreamManager, AckPolicy, DeliverPolicy } = await import("@nats-io/jetstream");
  const nc = await connect({ servers: env("NATS_URL") });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    const prefix = info.config.subjects[0].replace(/\.>$/, "");
    const ci = await jsm.consumers.add(stream, {
      filter_subject: `${prefix}.*.*.${owner}`,
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.All,
      inactive_threshold: 30_000_000_000,
    });
    const pending = ci.num_pending;
    const out = [];
    if (pending > 0) {
      const consumer = await jetstream(nc).consumers.get(stream, ci.name);
      const messages = await consumer.fetch({ max_messages: pending, expires: 5000 });
      for await (const m of messages) {
        out.push(m.json());
        if (out.length >= pending) break;
      }
    }
    await jsm.consumers.delete(stream, ci.name);
    return out;
  } finally {
    await nc.close();
  }
}

/** The ids of `owner`'s events since `afterSeq`, in commit order (what the relay sends). */
export function committedIds(owner, types, afterSeq) {
  const out = psql(
    `SELECT e.id FROM spine.events e JOIN spine.event_commits k USING (txid, tx_started_at)
      WHERE e.owner_id = :'owner' AND e.type = ANY (string_to_array(:'types', ',')) AND e.seq > :'after'
      ORDER BY k.commit_seq, e.seq`,
    { owner, types: types.join(","), after: afterSeq },
  );
  return out ? out.split("\n") : [];
}
