// The personal-data hub, end to end, on a running stack (`cargo xtask test`):
// Alice's CRM pushes contacts through the hub-crm connector; they land as her
// people, reach platform-events and connector-data in commit order under her
// id, and show on her page (plain HTML + supabase-js, served by the gateway)
// in headless Chromium within a second. Bob sees none of it: REST, Realtime,
// his NATS consumer, search.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { chromium } from "playwright-core";
import { committedIds, operatorSetup, ownersEvents, psql, pushContacts, signUp, startRelay, until, userSetup } from "./flow.mjs";

const URL = process.env.SPINE_URL;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const sink = `hub_${randomUUID().replaceAll("-", "").slice(0, 12)}`;

let browser;
let relay;
let alice;
let bob;
const problems = [];

before(async () => {
  await operatorSetup();
  relay = startRelay(sink);
  alice = await signUp("alice");
  bob = await signUp("bob");
  for (const u of [alice, bob]) await userSetup(u);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close();
  relay?.kill("SIGKILL");
  psql("SELECT spine.drop_sink(:'sink')", { sink });
});

/** The hub page, signed in as `user`. */
async function page(user) {
  const context = await browser.newContext();
  const p = await context.newPage();
  p.on("console", (m) => m.type() === "error" && problems.push(`${user.email}: ${m.text()}`));
  p.on("pageerror", (e) => problems.push(`${user.email}: ${e.message}`));
  await p.goto(`${URL}/examples/hub/`);
  await p.fill("input[name=email]", user.email);
  await p.fill("input[name=password]", user.password);
  await p.click("button:has-text('Sign in')");
  await p.waitForSelector("#status >> text=live");
  return p;
}

test("a contact the connector lands shows on Alice's page, live, and on no one else's", async () => {
  const [alicePage, bobPage] = [await page(alice), await page(bob)];
  const name = `Ada ${randomUUID().slice(0, 8)}`;
  const started = Date.now();
  const landed = await pushContacts(alice, [{ id: "crm-1", full_name: name, email: `${name.replace(" ", ".")}@example.test`, phone: "030 1234567" }]);
  assert.equal(landed.created, 1, JSON.stringify(landed));
  // The goal is a second; a test waits longer and prints the time (timing
  // belongs in what is measured, not in what fails on a slow machine).
  await alicePage.waitForSelector(`[data-testid=people] >> text=${name}`, { timeout: 10_000 });
  console.log(`# the page showed the contact ${Date.now() - started} ms after the connector was called`);
  await bobPage.waitForTimeout(1000); // the same time to show it, which it must not
  assert.equal(await bobPage.locator(`text=${name}`).count(), 0, "Bob's page shows Alice's person");
  await alicePage.context().close();
  await bobPage.context().close();
});

test("Alice's events reach the hub's streams in commit order under her id; Bob's consumer gets none", async () => {
  const [{ max: before }] = [{ max: psql("SELECT coalesce(max(seq), 0) FROM spine.events") }];
  const contacts = Array.from({ length: 5 }, (_, i) => ({ id: `crm-bulk-${i}`, full_name: `Contact ${i} ${randomUUID().slice(0, 6)}`, email: `c${i}.${randomUUID().slice(0, 6)}@example.test` }));
  await pushContacts(alice, contacts);
  const { data: reading, error } = await alice.db.functions.invoke("hub-devices", { body: { device: "alice-watch", kind: "steps", value: 4200 } });
  assert.equal(error, null, String(error));
  assert.ok(reading.recorded);

  const platform = committedIds(alice.id, ["data.EntityCreated", "crm.SyncCompleted", "device.ReadingRecorded"], before);
  const connector = committedIds(alice.id, ["connector.DataReceived"], before);
  assert.equal(platform.length, 7, "five people, the sync and a reading");
  assert.equal(connector.length, 1, "the landing");
  const mine = (stream, want) =>
    until(`${stream} to hold Alice's events`, async () => {
      const got = (await ownersEvents(stream, alice.id)).filter((ce) => want.includes(ce.id));
      return got.length >= want.length && got;
    });
  assert.deepEqual((await mine("platform-events", platform)).map((ce) => ce.id), platform, "platform-events, in commit order");
  assert.deepEqual((await mine("connector-data", connector)).map((ce) => ce.id), connector, "connector-data, in commit order");
  for (const ce of await ownersEvents("platform-events", alice.id)) assert.equal(ce.ownerid, alice.id);

  // Bob's consumer, limited to his subjects by the server: nothing of Alice's.
  const bobs = [...(await ownersEvents("platform-events", bob.id)), ...(await ownersEvents("connector-data", bob.id))];
  assert.deepEqual(bobs.filter((ce) => ce.ownerid !== bob.id), []);
  // REST: Bob reads no person of Alice's, whatever he asks for.
  const { data: people } = await bob.db.from("my_people").select("id, name");
  assert.deepEqual(people, []);
  const { data: raw } = await bob.spine.from("entities").select("id").eq("owner_id", alice.id);
  assert.deepEqual(raw, []);
});

test("search: Alice's tenant token finds her people only", async (t) => {
  const { searchOrigin } = await (await fetch(`${URL}/studio/config.json`)).json();
  const registered = psql("SELECT count(*) FROM spine.search_config");
  if (!searchOrigin || registered === "0") {
    t.skip("no Meilisearch on this stack (SKIP: search)");
    console.log("# SKIP search: this stack has no Meilisearch");
    return;
  }
  const { data: key, error } = await bob.spine.rpc("search_key");
  assert.equal(error, null);
  const r = await fetch(`${key.url}/multi-search`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key.token}` },
    body: JSON.stringify({ queries: key.indexes.map((indexUid) => ({ indexUid, q: "Ada" })) }),
  });
  const body = await r.json();
  assert.deepEqual(body.results.flatMap((x) => x.hits).filter((h) => h.owner_id !== bob.id), [], "Bob finds nothing of Alice's");
});

test("the pages logged no error", () => {
  assert.deepEqual(problems, []);
});
