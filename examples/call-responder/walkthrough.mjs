// `cargo xtask example call-responder`: the founding call flow on the running
// stack, step by step, printed for a person to read.

import { randomBytes, randomUUID } from "node:crypto";
import { aliceSetup, call, operatorSetup, psql, signUp, smsGateway, startWorker, until } from "./flow.mjs";

const say = (text) => console.log(`\n${text}`);
const show = (value) => console.log(`   ${JSON.stringify(value)}`);
const TWILIO_TOKEN = randomBytes(16).toString("hex");
const SMS_TOKEN = `sms-${randomUUID()}`;
const NUMBER = `+4915${String(Math.floor(Math.random() * 1e9)).padStart(9, "0")}`;

say("1. The operator applies the example's schema (numbers, calls, record_call, the SendOutgoingMessage queue),\n   deploys its two plugins (inbound-call: public, Twilio-signed; sms: the SMS channel) and puts\n   the platform's Twilio auth token in the vault.");
await operatorSetup(TWILIO_TOKEN);
console.log("   " + psql("SELECT string_agg(name || ' ' || sha256, ', ' ORDER BY name) FROM spine.functions WHERE name IN ('inbound-call', 'sms')").replaceAll(/ ([0-9a-f]{12})[0-9a-f]+/g, " sha256 $1…"));

const gateway = await smsGateway({ token: SMS_TOKEN });
say(`2. Alice signs up through /auth/v1 (supabase-js) and, as herself: registers her number ${NUMBER},\n   lands her phone contacts through a connector source, says she is at Work, saves her rule,\n   stores her own SMS gateway token (BYOK) and consents to both plugins.`);
const alice = await signUp("alice");
const landed = await aliceSetup(alice, { number: NUMBER, gateway: gateway.url, smsToken: SMS_TOKEN });
show({ user: alice.email, contacts: { received: landed.received, created: landed.created } });

const sink = "call_responder";
say("3. The worker runs: it relays the outbox to NATS (sink call_responder) and runs the\n   send_outgoing_message queue, calling the sms plugin for each job.");
const worker = startWorker({ sink });

try {
  say(`4. Sam (Partner, +49 30 5550100) calls Alice. Twilio POSTs its signed webhook to /functions/v1/inbound-call:`);
  const partner = await call({ token: TWILIO_TOKEN, from: "+49305550100", to: NUMBER });
  show({ status: partner.status, body: partner.body });
  const sms = await until("the SMS", () => gateway.messages().find((m) => m.to === "+49305550100"));
  say("5. Her rule fired; the sms plugin sent through her gateway:");
  show(sms);

  say("6. The call's chain, one correlation id (spine.events as Alice):");
  const { data: calls } = await alice.db.from("calls").select("event_id").eq("call_sid", partner.sid);
  const { data: [first] } = await alice.spine.from("events").select("correlation_id").eq("id", calls[0].event_id);
  await until("MessageSent", async () => {
    const { data } = await alice.spine.from("events").select("type").eq("correlation_id", first.correlation_id);
    return data.some((e) => e.type === "communication.MessageSent");
  });
  const { data: chain } = await alice.spine.from("events").select("type, data").eq("correlation_id", first.correlation_id).order("seq");
  for (const e of chain) show(e);

  say("7. Dr. Weiss (Dentist) calls: no SMS. spine.explain says why:");
  const dentist = await call({ token: TWILIO_TOKEN, from: "+49305550199", to: NUMBER });
  const { data: dc } = await alice.db.from("calls").select("event_id").eq("call_sid", dentist.sid);
  const { data: why } = await alice.spine.rpc("explain", { event_id: dc[0].event_id });
  for (const r of why) show({ rule: r.rule, matches: r.matches, reason: r.reason });

  say("8. Twilio retries Sam's call (same CallSid): recorded once, nothing sent again.");
  const again = await call({ token: TWILIO_TOKEN, from: "+49305550100", to: NUMBER, sid: partner.sid });
  await new Promise((r) => setTimeout(r, 1000));
  show({ status: again.status, sms_sent: gateway.messages().length });

  say("9. A forged request (wrong signature):");
  const forged = await call({ token: "guessed", from: "+49305550100", to: NUMBER });
  show({ status: forged.status, body: forged.body });
  say("Done. The same flow is checked by examples/call-responder/call-responder.test.mjs in `cargo xtask test`.");
} finally {
  worker.kill("SIGTERM");
  await gateway.close();
}
