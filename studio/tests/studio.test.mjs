// Spine Studio in a real browser: Playwright (playwright-core, pinned) driving
// Debian's Chromium headless against the dev stack's gateway. Run by
// `cargo xtask test` with SPINE_URL, SPINE_ANON_KEY, SPINE_SERVICE_KEY and
// DATABASE_URL from `cargo xtask env`. Screenshots of the main pages go to
// STUDIO_SCREENSHOTS (docs/studio/), so the docs show what the test saw.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { chromium } from "playwright-core";
import { createClient } from "@supabase/supabase-js";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run through cargo xtask test`);
  return v;
};
const URL = env("SPINE_URL");
const SERVICE = env("SPINE_SERVICE_KEY");
const ANON = env("SPINE_ANON_KEY");
const SHOTS = process.env.STUDIO_SCREENSHOTS;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

const service = createClient(URL, SERVICE, { auth: { persistSession: false } });
const spine = service.schema("spine");
const ok = ({ data, error }) => {
  if (error) throw new Error(JSON.stringify(error));
  return data;
};

let browser;
// Every console error and uncaught exception of every page, checked at the end.
const problems = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update", "--no-first-run"],
  });
  if (SHOTS) mkdirSync(SHOTS, { recursive: true });
});
after(async () => browser?.close());

// `refusals`: the page is meant to be refused by the API once (a wrong key),
// so the browser's "Failed to load resource" for that answer is expected.
async function open({ refusals = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (refusals && m.text().includes("status of 401")) return;
    problems.push(`${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${page.url()}: ${e.message}`));
  await page.goto(`${URL}/studio/`);
  return page;
}

async function asOperator() {
  const page = await open();
  await page.fill("input[name=key]", SERVICE);
  await page.click("text=Open as operator");
  await page.waitForSelector("[data-testid=who] >> text=operator");
  return page;
}

async function asUser(email, password) {
  const page = await open();
  await page.fill("input[name=email]", email);
  await page.fill("input[name=password]", password);
  await page.click("button:has-text('Sign in')");
  await page.waitForSelector(`[data-testid=who] >> text=${email}`);
  return page;
}

async function signUp() {
  const db = createClient(URL, ANON, { auth: { persistSession: false } });
  const email = `studio-${randomUUID()}@example.test`;
  const password = "studio password";
  const r = await db.auth.signUp({ email, password });
  assert.equal(r.error, null, String(r.error));
  return { db, email, password, uid: r.data.user.id };
}

const shoot = async (page, name) => SHOTS && page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });

test("the console is served with its security headers, and a wrong key gets an error", async () => {
  const r = await fetch(`${URL}/studio/`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-security-policy"), /frame-ancestors 'none'/);
  assert.equal((await (await fetch(`${URL}/studio/config.json`)).json()).anonKey.length > 0, true);
  const page = await open({ refusals: true });
  await shoot(page, "sign-in");
  await page.fill("input[name=key]", ANON);
  await page.click("text=Open as operator");
  await page.waitForSelector("[role=alert] >> text=not a service key");
  await page.context().close();
});

test("jobs failing to dead letter appear, are retried and redriven from the page, and audited", async () => {
  const queue = `studio_${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  ok(await spine.rpc("create_queue", { queue_name: queue }));
  const ids = [];
  for (const order of [41, 42]) {
    ids.push(ok(await spine.rpc("enqueue", { queue, payload: { order }, max_attempts: 1 })));
  }
  // What a worker does when the jobs' handler throws on their last attempt.
  const leased = ok(await spine.rpc("fetch_jobs", { queues: [queue], worker: "studio-test", n: 2 }));
  assert.deepEqual(leased.map((j) => j.id).sort(), [...ids].sort());
  for (const id of ids) ok(await spine.rpc("fail_job", { id, error: "card declined", worker: "studio-test" }));
  const [first, second] = ids;

  const page = await asOperator();
  await page.waitForSelector(`[data-testid=queue-stats] >> text=${queue}`);
  await shoot(page, "overview");
  await page.click("text=Queues and jobs");
  await page.selectOption("[data-testid=queue]", queue);
  await page.click(".tabs >> text=dead");
  await page.click(`[data-testid=jobs] >> text="${first}"`);
  await page.waitForSelector("[data-testid=job-detail] >> text=card declined");
  await page.waitForSelector(`[data-testid=job-detail] pre:has-text('"order": 41')`);
  await shoot(page, "jobs");
  await page.click("text=Retry now");
  await page.click("button:has-text('Confirm')");
  await page.waitForSelector("[role=status] >> text=retried");
  let [job] = ok(await spine.from("jobs").select("state, attempts").eq("id", first));
  assert.deepEqual(job, { state: "queued", attempts: 0 });

  await page.click("text=Redrive the queue's dead jobs");
  await page.click("button:has-text('Confirm')");
  await page.waitForSelector("[role=status] >> text=1 redriven");
  const [redriven] = ok(await spine.from("jobs").select("state, attempts, errors").eq("id", second));
  assert.equal(redriven.state, "queued");
  assert.equal(redriven.attempts, 0);
  assert.equal(redriven.errors[0].error, "card declined", "the error history stays");

  await page.click("text=Audit log");
  await page.waitForSelector(`[data-testid=audit] >> text=job:${first}`);
  await page.waitForSelector(`[data-testid=audit] >> text=queue:${queue}`);
  const retried = page.locator("[data-testid=audit] tr", { hasText: `job:${first}` });
  assert.match(await retried.innerText(), /job\.retried[\s\S]*service_role|service_role[\s\S]*job\.retried/);
  await page.click("text=Verify the chain");
  await page.waitForSelector("[data-testid=verdict] >> text=the chain is intact");
  await shoot(page, "audit");
  await page.context().close();
});

test("an event emitted in SQL appears in the live tail", async () => {
  const page = await asOperator();
  await page.click("text=Events");
  await page.waitForSelector("[data-testid=tail-status] >> text=live");
  const subject = `studio-${randomUUID()}`;
  const started = Date.now();
  execFileSync("psql", [env("DATABASE_URL"), "-qAtc", `SELECT spine.emit('studio.TailTested', '{"n": 1}', '${subject}')`]);
  await page.waitForSelector(`[data-testid=events] >> text=${subject}`, { timeout: 10_000 });
  const shown = Date.now() - started;
  console.log(`# the tail showed the event ${shown} ms after psql started`);
  await page.fill("[data-testid=filter-subject]", subject);
  await page.click(`[data-testid=events] >> text=${subject}`);
  await page.waitForSelector(`[data-testid=event-detail] pre:has-text('"n": 1')`);
  await shoot(page, "events");
  await page.context().close();
});

test("an event's causal chain and why its rules fired, as its owner sees them", async () => {
  const alice = await signUp();
  const spineAsAlice = alice.db.schema("spine");
  ok(
    await spineAsAlice.rpc("save_rule", {
      name: "big orders",
      on_event: "studio.OrderNoted",
      condition: { ">": [{ var: "event.data.total" }, 100] },
      actions: [{ emit: { type: "studio.OrderFlagged", data: { total: "{{event.data.total}}" } } }],
    }),
  );
  const page = await asUser(alice.email, alice.password);
  await page.click("text=Events");
  await page.waitForSelector("[data-testid=tail-status] >> text=live");
  for (const [total, subject] of [[150, "order-big"], [50, "order-small"]]) {
    ok(await spineAsAlice.rpc("emit", { type: "studio.OrderNoted", data: { total }, subject }));
  }
  // The flagged event carries the order's subject too: pick the order itself.
  const order = (subject) =>
    page.locator("[data-testid=events] tr", { hasText: "studio.OrderNoted" }).filter({ hasText: subject });
  // Every event of hers is in the tail before a click: a row arriving above
  // would move the rows under the pointer.
  for (const row of [order("order-big"), order("order-small"), page.locator("[data-testid=events] tr", { hasText: "studio.OrderFlagged" }), page.locator("[data-testid=events] tr", { hasText: "rules.RuleFired" })]) {
    await row.waitFor();
  }
  await order("order-big").click();
  const chain = "[data-testid=event-detail] [data-testid=chain-event]";
  await page.waitForSelector(`${chain} >> text=studio.OrderFlagged`);
  await page.waitForSelector(`${chain} >> text=rules.RuleFired`);
  const fired = page.locator("[data-testid=explain] tr", { hasText: "big orders" });
  await fired.waitFor();
  assert.match(await fired.innerText(), /true\s+true\s+true/, "considered, matches, fired");
  await shoot(page, "event-chain");
  await order("order-small").click();
  await page.waitForSelector(`[data-testid=event-detail] pre:has-text('"total": 50')`);
  const quiet = page.locator("[data-testid=explain] tr", { hasText: "big orders" });
  await page.waitForFunction(() => /true\s+false\s+false/.test(document.querySelector("[data-testid=explain] tbody")?.innerText ?? ""));
  assert.match(await quiet.innerText(), /true\s+false\s+false/, "considered, no match, not fired");
  assert.equal(await page.locator(`${chain} >> text=studio.OrderFlagged`).count(), 0, "nothing flagged the small order");
  await page.context().close();
});

test("a user sees their own jobs and events in the console, and not another user's", async () => {
  const alice = await signUp();
  const bob = await signUp();
  const queue = `studio_${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  ok(await spine.rpc("create_queue", { queue_name: queue, user_enqueue: true }));
  const job = ok(await alice.db.schema("spine").rpc("enqueue", { queue, payload: { mine: "alice" } }));

  const bobPage = await asUser(bob.email, bob.password);
  const alicePage = await asUser(alice.email, alice.password);
  for (const page of [alicePage, bobPage]) {
    await page.click("text=Queues and jobs");
    await page.click(".tabs >> text=queued");
  }
  await alicePage.waitForSelector(`[data-testid=jobs] >> text="${job}"`);
  await bobPage.waitForSelector("text=No queued jobs");
  assert.equal(await bobPage.locator(`[data-testid=jobs] >> text="${job}"`).count(), 0);
  // Alice cancels her job from the page; the audit row is hers, not Bob's to see.
  await alicePage.click(`[data-testid=jobs] >> text="${job}"`);
  await alicePage.click("[data-testid=job-detail] >> text=Cancel");
  await alicePage.click("button:has-text('Confirm')");
  await alicePage.waitForSelector("[role=status] >> text=cancelled");
  for (const page of [alicePage, bobPage]) await page.click("text=Audit log");
  await alicePage.waitForSelector(`[data-testid=audit] >> text=job:${job}`);
  await bobPage.waitForSelector("[data-testid=audit]");
  await bobPage.waitForTimeout(500);
  assert.equal(await bobPage.locator(`text=job:${job}`).count(), 0, "Bob sees Alice's audit row");
  assert.equal(await bobPage.locator("text=Verify the chain").count(), 0, "verifying is the operator's");

  for (const page of [alicePage, bobPage]) {
    await page.click("text=Events");
    await page.waitForSelector("[data-testid=tail-status] >> text=live");
  }
  const subject = `alice-${randomUUID()}`;
  ok(await alice.db.schema("spine").rpc("emit", { type: "studio.PrivateNoted", data: {}, subject }));
  await alicePage.waitForSelector(`[data-testid=events] >> text=${subject}`);
  // Alice's page shows it: Bob's had the same time to, and must not.
  await bobPage.waitForTimeout(1000);
  assert.equal(await bobPage.locator(`text=${subject}`).count(), 0, "Bob sees Alice's event");
  await bobPage.click("text=Overview");
  await bobPage.waitForSelector("[data-testid=queue-stats]");
  assert.equal(await bobPage.locator(`[data-testid=queue-stats] >> text=${queue}`).count(), 0);
  assert.equal(await bobPage.locator("[data-testid=sinks]").count(), 0, "sinks are the operator's");
  await alicePage.context().close();
  await bobPage.context().close();
});

test("no page logged an error", () => {
  assert.deepEqual(problems, []);
});
