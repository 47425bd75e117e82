// The founding call flow, end to end, on a running stack (`cargo xtask test`):
// Twilio's signed webhook → communication.CallStarted (caller resolved to one of
// Alice's people) → her rule "Partner calls while I am at Work" → a
// SendOutgoingMessage job → the sms plugin with her own gateway token →
// communication.MessageSent, relayed to NATS in order.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { aliceSetup, call, operatorSetup, psql, signUp, smsGateway, startWorker, streamEvents, until } from "./flow.mjs";

const TWILIO_TOKEN = randomBytes(16).toString("hex");
const SMS_TOKEN = `sms-${randomUUID()}`;
// A number of Alice's of her own, per run (numbers are unique across users).
const NUMBER = `+4915${String(Math.floor(Math.random() * 1e9)).padStart(9, "0")}`;
const PARTNER = "+49305550100"; // Sam, as her contacts have him (030 5550100)
const DENTIST = "+49305550199";

let alice;
let gateway;
const workers = [];
const sink = `call_responder_${randomUUID().replaceAll("-", "").slice(0, 12)}`;

before(async () => {
  await operatorSetup(TWILIO_TOKEN);
  gateway = await smsGateway({ token: SMS_TOKEN, hold: 0 });
  alice = await signUp("alice");
  await aliceSetup(alice, { number: NUMBER, gateway: gateway.url, smsToken: SMS_TOKEN });
  workers.push(startWorker({ sink }));
});

after(async () => {
  for (const w of workers) w.kill("SIGKILL");
  await gateway?.close();
  psql("SELECT spine.drop_sink(:'sink')", { sink });
});

/** Alice's events of one call (its correlation id), in commit order. */
async function chainOf(eventId) {
  const { data: [first] } = await alice.spine.from("events").select("correlation_id").eq("id", eventId);
  const { data } = await alice.spine.from("events").select("id, type, correlation_id, causation_id, data").eq("correlation_id", first.correlation_id).order("seq");
  return data;
}

const calledEvent = async (sid) => {
  const { data } = await alice.db.from("calls").select("event_id").eq("call_sid", sid);
  return data[0]?.event_id;
};

test("the partner's call while Alice is at work sends one SMS, the dentist's none", async () => {
  const partner = await call({ token: TWILIO_TOKEN, from: PARTNER, to: NUMBER });
  assert.equal(partner.status, 200, partner.body);
  assert.match(partner.body, /<Response\/>/, "TwiML for Twilio");
  const dentist = await call({ token: TWILIO_TOKEN, from: DENTIST, to: NUMBER });
  assert.equal(dentist.status, 200, dentist.body);

  const sms = await until("the SMS", () => gateway.messages().find((m) => m.to === PARTNER));
  assert.equal(sms.text, "In a meeting at Work, I will call you back");
  await new Promise((r) => setTimeout(r, 1000)); // time for a wrong second one
  assert.equal(gateway.messages().length, 1, "one SMS, to the partner only");

  // The chain: one correlation id from the call to the message sent.
  const started = await calledEvent(partner.sid);
  const chain = await until("MessageSent", async () => {
    const c = await chainOf(started);
    return c.some((e) => e.type === "communication.MessageSent") && c;
  });
  const types = chain.map((e) => e.type);
  assert.deepEqual(types.filter((t) => t !== "rules.RuleFired"), ["communication.CallStarted", "communication.MessageSent"], types.join());
  assert.ok(types.includes("rules.RuleFired"), types.join());
  assert.equal(chain[0].data.caller, "Partner", "the caller resolved to her person");
  assert.equal(new Set(chain.map((e) => e.correlation_id)).size, 1);
  for (const e of chain.slice(1)) assert.ok(chain.some((c) => c.id === e.causation_id), `${e.type} descends from the call`);
  const sent = chain.find((e) => e.type === "communication.MessageSent");
  assert.equal(sent.data.provider_id, sms.id);

  // Why no SMS for the dentist: spine.explain, as Alice.
  const quiet = await calledEvent(dentist.sid);
  const { data: why, error } = await alice.spine.rpc("explain", { event_id: quiet });
  assert.equal(error, null, JSON.stringify(error));
  const rule = why.find((r) => r.rule === "partner calls while I am at work");
  assert.ok(rule, JSON.stringify(why));
  assert.deepEqual([rule.considered, rule.matches, rule.fired], [true, false, false], JSON.stringify(rule));
  assert.match(rule.reason, /caller/, "the reason names the caller test");
  assert.equal(rule.inputs["event.data.caller"], "Dentist", JSON.stringify(rule.inputs));

  // NATS: the company's consumers see the call's whole chain in commit order,
  // each event once: Alice's three and the audit log's seals of the policy
  // decisions made along it (system events, not hers to read).
  const correlation = chain[0].correlation_id;
  const committed = psql(
    `SELECT e.id FROM spine.events e JOIN spine.event_commits k USING (txid, tx_started_at)
      WHERE e.correlation_id = :'c' ORDER BY k.commit_seq, e.seq`,
    { c: correlation },
  ).split("\n");
  const relayed = await until("the chain on NATS", async () => {
    const got = await streamEvents("SPINE", (ce) => ce.correlationid === correlation);
    return got.length >= committed.length && got;
  });
  assert.deepEqual(relayed.map((ce) => ce.id), committed, "in commit order, each once");
  const others = relayed.filter((ce) => !chain.some((e) => e.id === ce.id));
  assert.deepEqual([...new Set(others.map((ce) => ce.type))].filter((t) => t !== "audit.EntriesSealed"), [], "only audit seals besides hers");
  assert.deepEqual(relayed.filter((ce) => !ce.type.startsWith("audit.")).map((ce) => ce.id), chain.map((e) => e.id));
});

test("a replayed call (Twilio retries the same CallSid) sends nothing more", async () => {
  const before = gateway.messages().length;
  const first = await call({ token: TWILIO_TOKEN, from: PARTNER, to: NUMBER });
  await until("its SMS", () => gateway.messages().length === before + 1);
  const again = await call({ token: TWILIO_TOKEN, from: PARTNER, to: NUMBER, sid: first.sid });
  assert.equal(again.status, 200, "Twilio gets its answer");
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(gateway.messages().length, before + 1, "no second SMS");
  const { data } = await alice.db.from("calls").select("call_sid").eq("call_sid", first.sid);
  assert.equal(data.length, 1);
});

test("a forged signature gets 401 and records nothing", async () => {
  const forged = await call({ token: "not-the-token", from: PARTNER, to: NUMBER });
  assert.equal(forged.status, 401, forged.body);
  const unsigned = await call({ token: TWILIO_TOKEN, from: PARTNER, to: NUMBER, signature: "" });
  assert.equal(unsigned.status, 401);
  const { data } = await alice.db.from("calls").select("call_sid").in("call_sid", [forged.sid, unsigned.sid]);
  assert.deepEqual(data, []);
});

test("kill -9 of the worker while the SMS is being sent still sends exactly one", async () => {
  // A gateway that holds its first answer for 3 s: the worker dies waiting.
  const slow = await smsGateway({ token: SMS_TOKEN, hold: 3000 });
  await alice.spine.rpc("set_state", { key: "sms_gateway", value: slow.url });
  await until("the new gateway in her state", async () => {
    const { data } = await alice.spine.rpc("get_state", { key: "sms_gateway" });
    return data === slow.url;
  });
  for (const w of workers.splice(0)) w.kill("SIGKILL");
  workers.push(startWorker({ sink, leaseSecs: 2 }));
  await call({ token: TWILIO_TOKEN, from: PARTNER, to: NUMBER });
  await until("the send to start", () => slow.requests.length === 1);
  for (const w of workers.splice(0)) w.kill("SIGKILL");
  workers.push(startWorker({ sink, leaseSecs: 2 }));
  // The lease runs out, the job runs again with the same Idempotency-Key.
  await until("the retry", () => slow.requests.length >= 2, 30_000);
  await until("its answer", () => slow.messages().length === 1);
  await new Promise((r) => setTimeout(r, 3500)); // the held first answer comes too
  assert.equal(slow.messages().length, 1, "exactly one SMS");
  assert.equal(new Set(slow.requests.map((r) => r.key)).size, 1, "both attempts carried the job's key");
  await slow.close();
});
