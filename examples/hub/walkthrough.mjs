// `cargo xtask example hub`: the personal-data hub on the running stack, step
// by step. Open the page it prints to watch the people arrive live.

import { randomUUID } from "node:crypto";
import { committedIds, operatorSetup, ownersEvents, psql, pushContacts, signUp, startRelay, until, userSetup } from "./flow.mjs";

const say = (text) => console.log(`\n${text}`);
const show = (value) => console.log(`   ${JSON.stringify(value)}`);

say("1. The operator applies the hub's schema (the page's view public.my_people, RLS: a user's own\n   people) and deploys its plugins: hub-crm (the CRM connector) and hub-devices (device events).");
await operatorSetup();

say("2. The worker relays the outbox with the hub's stream map, each subject ending with the event's\n   owner: connector.* → connector-data, audit.* → audit-log, everything else → platform-events.");
const relay = startRelay("hub");
try {
  say("3. Alice and Bob sign up (/auth/v1); each saves the CRM source's mapping and consents to the plugins.");
  const alice = await signUp("alice");
  const bob = await signUp("bob");
  for (const u of [alice, bob]) await userSetup(u);
  show({ alice: alice.email, password: alice.password });
  say(`   Alice's page: ${process.env.SPINE_URL}/examples/hub/ (sign in with the line above)`);

  const before = psql("SELECT coalesce(max(seq), 0) FROM spine.events");
  say("4. Alice's CRM pushes three contacts through the connector (functions.invoke('hub-crm')):");
  show(await pushContacts(alice, [
    { id: "c-1", full_name: "Sam Partner", email: "sam@example.com", phone: "030 5550100" },
    { id: "c-2", full_name: "Dr. Weiss", email: "weiss@example.com" },
    { id: "c-3", full_name: "Maria Ortiz", phone: "+34 600 123 456" },
  ]));
  say("5. Her watch reports a reading (functions.invoke('hub-devices')):");
  show((await alice.db.functions.invoke("hub-devices", { body: { device: "alice-watch", kind: "steps", value: 4200 } })).data);

  say("6. Her people, as she reads them (REST):");
  for (const p of (await alice.db.from("my_people").select("name, email, phone").order("name")).data) show(p);
  say("   Bob reads the same view: nothing of hers.");
  show((await bob.db.from("my_people").select("name")).data);

  say("7. A consumer limited to Alice's subjects (platform-events.*.*.<her id>) reads, in commit order:");
  const want = committedIds(alice.id, ["data.EntityCreated", "device.ReadingRecorded"], before);
  const got = await until("her events on NATS", async () => {
    const events = (await ownersEvents("platform-events", alice.id)).filter((ce) => want.includes(ce.id));
    return events.length >= want.length && events;
  });
  for (const ce of got) show({ type: ce.type, subject: ce.subject, name: ce.data?.fields?.name ?? ce.data?.device });
  say("   connector-data, hers (the landing, as spine.ingest recorded it):");
  for (const ce of (await ownersEvents("connector-data", alice.id)).slice(-1)) show({ type: ce.type, data: ce.data });
  say("   Bob's consumer, limited to his subjects by the server:");
  show({ events_of_alice: (await ownersEvents("platform-events", bob.id)).filter((ce) => ce.ownerid === alice.id).length });
  say("Done. examples/hub/hub.test.mjs checks this (and the page, in headless Chromium) in `cargo xtask test`.");
} finally {
  relay.kill("SIGTERM");
}
