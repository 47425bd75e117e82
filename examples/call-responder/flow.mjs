// The call-responder flow, step by step, as an app on Spine's public surfaces:
// psql for what the operator sets up (schema, functions, the shared Twilio
// token), supabase-js through the gateway for everything Alice does, a signed
// HTTP POST for Twilio, JetStream for what the rest of the company consumes.
// `walkthrough.mjs` prints it; `call-responder.test.mjs` checks it.

import { createHmac, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { env, install, ok, psql, spawnWorker, until } from "../lib.mjs";

export { ok, psql, signUp, streamEvents, until } from "../lib.mjs";

const here = dirname(fileURLToPath(import.meta.url));

/** The operator's part: the schema, the two plugins, the platform's Twilio token. */
export async function operatorSetup(twilioToken) {
  await install(here, { table: "phone_numbers" });
  // One platform account signs every inbound call: a shared secret, not a user's.
  psql(`SELECT CASE WHEN id IS NULL THEN vault.create_secret(:'token', 'TWILIO_AUTH_TOKEN')
                    ELSE (SELECT id FROM (SELECT vault.update_secret(id, :'token')) _) END
          FROM (SELECT (SELECT id FROM vault.secrets WHERE name = 'TWILIO_AUTH_TOKEN') AS id) s`,
    { token: twilioToken });
}

/**
 * A stand-in for the user's SMS provider (the one part of the flow outside
 * Spine): `POST /messages` with a bearer token and an Idempotency-Key, answered
 * with the message's id; a key seen before answers the same id and sends
 * nothing. `hold` delays the first answer by that many ms (to kill a worker
 * while it waits).
 */
export async function smsGateway({ token, hold = 0 } = {}) {
  const sent = new Map(); // idempotency key → message
  const requests = [];
  let held = false;
  const server = createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += chunk;
    requests.push({ key: req.headers["idempotency-key"], body });
    if (req.headers.authorization !== `Bearer ${token}`) {
      res.writeHead(401).end("wrong token");
      return;
    }
    if (hold && !held) {
      held = true;
      await new Promise((r) => setTimeout(r, hold));
    }
    const key = req.headers["idempotency-key"];
    if (!sent.has(key)) sent.set(key, { id: `SM${randomBytes(16).toString("hex")}`, ...JSON.parse(body) });
    res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify(sent.get(key)));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    messages: () => [...sent.values()],
    requests,
    close: () => new Promise((r) => server.close(r)),
  };
}

/**
 * Alice's part, all through the gateway as her: her number, her contacts (a
 * connector source and `ingest`), where she is, her rule, her own SMS gateway
 * token in the vault, and her consents to the two plugins.
 */
export async function aliceSetup(alice, { number, gateway, smsToken }) {
  ok("phone number")(await alice.db.from("phone_numbers").insert({ number, label: "mobile" }));
  ok("contacts source")(
    await alice.spine.rpc("save_source", {
      name: "phone_contacts",
      mapping: {
        kind: "person",
        fields: {
          name: { path: "name", normalize: ["trim"], required: true },
          phone: { path: "tel", normalize: [{ phone: { region: "DE" } }] },
          relation: { path: "label", normalize: ["trim"] },
        },
        identity: ["phone"],
      },
    }),
  );
  const landed = ok("ingest")(
    await alice.spine.rpc("ingest", {
      source: "phone_contacts",
      records: [
        { id: "c-1", name: "Sam", tel: "030 5550100", label: "Partner" },
        { id: "c-2", name: "Dr. Weiss", tel: "030 5550199", label: "Dentist" },
      ],
    }),
  );
  ok("location")(await alice.spine.rpc("set_state", { key: "location", value: "Work" }));
  ok("sms gateway")(await alice.spine.rpc("set_state", { key: "sms_gateway", value: gateway }));
  ok("rule")(
    await alice.spine.rpc("save_rule", {
      name: "partner calls while I am at work",
      on_event: "communication.CallStarted",
      condition: { and: [{ "==": [{ var: "event.data.caller" }, "Partner"] }, { "==": [{ var: "state.location" }, "Work"] }] },
      actions: [
        {
          // A SendOutgoingMessage job (interactive) running the sms plugin as Alice,
          // in the call's chain.
          call_function: {
            name: "sms",
            queue: "send_outgoing_message",
            priority: "interactive",
            payload: {
              to: "{{event.data.from}}",
              text: "In a meeting at {{state.location}}, I will call you back",
              gateway: "{{state.sms_gateway}}",
            },
          },
        },
      ],
    }),
  );
  ok("SMS token")(await alice.spine.rpc("set_my_secret", { name: "SMS_GATEWAY_TOKEN", value: smsToken }));
  ok("consent inbound-call")(
    await alice.spine.rpc("grant_consent", { plugin: "inbound-call", scopes: ["users.act_as:*", "entities.read:person"] }),
  );
  ok("consent sms")(await alice.spine.rpc("grant_consent", { plugin: "sms", scopes: ["*"] }));
  return landed;
}

/** Twilio's signature of a POST to `url` with form `params`. */
export function twilioSignature(token, url, params) {
  const signed = url + Object.keys(params).sort().map((k) => k + params[k]).join("");
  return createHmac("sha1", token).update(signed).digest("base64");
}

/** What Twilio sends when `from` calls `to`; `signature` overrides the real one. */
export async function call({ token, from, to, sid = `CA${randomBytes(16).toString("hex")}`, signature }) {
  const url = `${env("SPINE_URL")}/functions/v1/inbound-call`;
  const params = { AccountSid: `AC${"0".repeat(32)}`, CallSid: sid, CallStatus: "ringing", Direction: "inbound", From: from, To: to };
  const r = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature ?? twilioSignature(token, url, params) },
    body: new URLSearchParams(params),
  });
  return { sid, status: r.status, body: await r.text() };
}

/**
 * `spine-worker` as production runs it for this app: the outbox relay to NATS
 * (its own sink) and the SendOutgoingMessage queue, whose jobs call the `sms`
 * plugin in-process. `leaseSecs`: how soon a killed worker's job runs again.
 */
export function startWorker({ sink, leaseSecs = 30 }) {
  return spawnWorker(sink, {
    SPINE_JOB_QUEUES: "send_outgoing_message=function",
    SPINE_JOB_LEASE_SECS: String(leaseSecs),
    SPINE_JOB_POLL_MS: "100",
  });
}

