// Spine Studio in a real browser: Playwright (playwright-core, pinned) driving
// Debian's Chromium headless against the dev stack's gateway. Run by
// `cargo xtask test` with SPINE_URL, SPINE_ANON_KEY, SPINE_SERVICE_KEY and
// DATABASE_URL from `cargo xtask env`. Screenshots of the main pages go to
// STUDIO_SCREENSHOTS (docs/studio/), so the docs show what the test saw.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
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
const WORKER = process.env.SPINE_WORKER_BIN ?? new globalThis.URL("../../target/debug/spine-worker", import.meta.url).pathname;

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

// `refusals`: HTTP statuses the page is meant to be refused with (a wrong key,
// a consent outside the manifest), so the browser's "Failed to load resource"
// for those answers is expected.
async function open({ refusals = [] } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (refusals.some((status) => m.text().includes(`status of ${status}`))) return;
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

async function asUser(email, password, options) {
  const page = await open(options);
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
  const page = await open({ refusals: [401] });
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

const nav = (page, title) => page.click(`header nav >> text="${title}"`);
const short = () => randomUUID().replaceAll("-", "").slice(0, 12);

test("the overview lists the connected processes and charts a relay's throughput", async (t) => {
  // A relay of its own (a new sink, from the start of the outbox), as
  // `spine-worker` runs in production.
  const sink = `studio_${short()}`;
  const worker = spawn(WORKER, [], {
    env: { ...process.env, SPINE_RELAY_SINK: sink, SPINE_HTTP_ADDR: "127.0.0.1:0", SPINE_JOB_QUEUES: "", SPINE_SERVICES_SUBJECT: "", RUST_LOG: "warn" },
    stdio: "ignore",
  });
  t.after(async () => {
    worker.kill("SIGKILL");
    await spine.rpc("drop_sink", { sink_name: sink });
  });
  const page = await asOperator();
  await page.waitForSelector("[data-testid=processes] >> text=spine-gateway");
  await page.waitForSelector("[data-testid=processes] >> text=spine-worker", { timeout: 20_000 });
  await page.waitForSelector(`[data-testid=rate-${sink}]`, { timeout: 20_000 });
  // Events keep coming while the chart is watched: its latest rate goes above 0.
  const emitting = setInterval(() => {
    execFileSync("psql", [env("DATABASE_URL"), "-qAtc", "SELECT spine.emit('studio.LoadNoted', jsonb_build_object('i', i)) FROM generate_series(1, 50) i"]);
  }, 300);
  try {
    await page.waitForFunction(
      (id) => parseFloat(document.querySelector(`[data-testid=rate-${id}] .value`)?.textContent ?? "0") > 0,
      sink,
      { timeout: 20_000 },
    );
    const points = await page.getAttribute(`[data-testid=rate-${sink}] polyline`, "points");
    assert.ok(points.split(" ").length >= 2, points);
    // A flat line has no box to be visible: "attached".
    await page.waitForSelector("[data-testid=jobs-waiting] svg polyline", { state: "attached" });
    // Jobs completed: twenty run through a queue as a worker runs them.
    const queue = `studio_${short()}`;
    ok(await spine.rpc("create_queue", { queue_name: queue }));
    ok(await spine.rpc("enqueue_batch", { queue, payloads: Array.from({ length: 20 }, (_, i) => ({ i })) }));
    const leased = ok(await spine.rpc("fetch_jobs", { queues: [queue], worker: "studio-test", n: 20 }));
    ok(await spine.rpc("complete_jobs", { ids: leased.map((j) => j.id), worker: "studio-test" }));
    await page.waitForFunction(
      () => parseFloat(document.querySelector("[data-testid=jobs-done] .value")?.textContent ?? "0") >= 2,
      null,
      { timeout: 10_000 },
    );
    await page.waitForTimeout(4000); // a few more polls under load, for the picture
    await shoot(page, "overview-charts");
  } finally {
    clearInterval(emitting);
  }
  await page.context().close();
});

test("a user's rules with their firings, entities with keys, edges and sources, and search", async () => {
  const alice = await signUp();
  const bob = await signUp();
  const db = alice.db.schema("spine");
  const source = `crm_${short()}`;
  ok(
    await db.rpc("save_source", {
      name: source,
      mapping: {
        kind: "person",
        fields: { name: { path: "full_name", normalize: ["trim"], required: true }, email: { path: "email", normalize: ["email"] } },
        identity: ["email"],
      },
    }),
  );
  ok(await db.rpc("ingest", { source, records: [{ id: "c-1", full_name: " Ada Studio ", email: "Ada@Example.test" }] }));
  ok(
    await db.rpc("save_rule", {
      name: "ada noted",
      on_event: "studio.PersonNoted",
      condition: { "==": [{ var: "event.data.name" }, "Ada"] },
      actions: [{ emit: { type: "studio.PersonFlagged", data: {} } }],
    }),
  );
  ok(await db.rpc("emit", { type: "studio.PersonNoted", data: { name: "Ada" }, subject: "ada" }));

  const page = await asUser(alice.email, alice.password);
  await nav(page, "Rules");
  const rule = page.locator("[data-testid=rules] tr", { hasText: "ada noted" });
  await rule.waitFor();
  assert.match(await rule.innerText(), /studio\.PersonNoted\s+yes\s+0\s+1\s/, "on, enabled, priority 0, fired once");
  await rule.click();
  await page.waitForSelector(`[data-testid=rule-detail] pre:has-text('"event.data.name"')`);
  await page.locator("[data-testid=firings] tr", { hasText: "studio.PersonNoted" }).click();
  // The firing opens its event on the Events page, with the chain it started.
  await page.waitForSelector(`[data-testid=event-detail] pre:has-text('"name": "Ada"')`);
  await page.waitForSelector("[data-testid=event-detail] [data-testid=chain-event] >> text=studio.PersonFlagged");

  await nav(page, "Entities");
  await page.locator("[data-testid=entities] tr", { hasText: "Ada Studio" }).click();
  await page.waitForSelector("[data-testid=keys] >> text=ada@example.test");
  await page.waitForSelector(`[data-testid=sources] tr:has-text("${source}"):has-text("c-1")`);
  await page.waitForSelector("[data-testid=edges] >> text=described_by");
  await shoot(page, "entities");

  // Search with her tenant token: Meilisearch answers when a worker registered
  // it; before that the page says why there is nothing to search.
  const { searchOrigin } = await (await fetch(`${URL}/studio/config.json`)).json();
  const [registered] = ok(await spine.from("search_config").select("*").limit(1));
  await page.fill("[data-testid=search]", "Ada");
  await page.click("button:has-text('Search')");
  if (searchOrigin && registered) {
    await page.waitForSelector("[data-testid=hits] >> text=Ada Studio");
  } else if (!searchOrigin) {
    await page.waitForSelector("[data-testid=search-error] >> text=search is off on this gateway");
    console.log("# SKIP search hits: this stack has no Meilisearch (the search-off path was tested)");
  } else {
    console.log("# SKIP search hits: no worker has registered Meilisearch on this stack yet");
  }

  // Bob, in the same console, sees none of it.
  const bobPage = await asUser(bob.email, bob.password);
  await nav(bobPage, "Rules");
  await bobPage.waitForSelector("text=No rules.");
  await nav(bobPage, "Entities");
  await bobPage.waitForSelector("text=No entities.");
  assert.equal(await bobPage.locator("text=Ada Studio").count(), 0, "Bob sees Alice's person");
  await page.context().close();
  await bobPage.context().close();
});

test("a user grants and revokes a plugin's consent; the operator sees functions, health and keys", async () => {
  const plugin = `studio-sms-${short()}`;
  ok(await spine.rpc("register_plugin", { manifest: { name: plugin, version: "1.0.0", permissions: { secrets: ["TOKEN"] } } }));
  const fn = `studio-fn-${short()}`;
  ok(await spine.rpc("deploy_function", { manifest: { name: fn, version: "1.0.0" }, source: "Deno.serve(() => new Response('ok'))" }));
  // What a function host reports after 4 runs, one of which threw.
  ok(
    await spine.rpc("record_plugin_health", {
      plugin_name: fn, invocations: 4, failures: 1, limit_hits: 0, total_ms: 20, failures_in_a_row: 1, last_error: "TypeError: boom",
    }),
  );
  const secretName = `studio-${short()}`;
  const secretValue = `value-${randomUUID()}`;
  execFileSync("psql", [env("DATABASE_URL"), "-qAtc", `SELECT vault.create_secret('${secretValue}', '${secretName}')`]);
  const alice = await signUp();
  const page = await asUser(alice.email, alice.password, { refusals: [403] });
  await nav(page, "Trust");
  const row = page.locator("[data-testid=plugins] tr", { hasText: plugin });
  await row.waitFor();
  assert.match(await row.innerText(), /secrets\.read:TOKEN/, "what the manifest asks for");
  await page.fill(`[data-testid=scope-${plugin}]`, "secrets.read:TOKEN");
  await row.locator("button:has-text('Grant')").click();
  await page.waitForSelector(`[role=status] >> text=granted secrets.read:TOKEN to ${plugin}`);
  const mine = async () =>
    ok(await alice.db.schema("spine").from("consents").select("scope, revoked_at").eq("plugin", plugin)).filter((c) => !c.revoked_at);
  assert.deepEqual((await mine()).map((c) => c.scope), ["secrets.read:TOKEN"]);
  await row.locator("button:has-text('Revoke')").click();
  await row.locator("button:has-text('Confirm')").click();
  await page.waitForSelector(`[role=status] >> text=revoked secrets.read:TOKEN from ${plugin}`);
  assert.deepEqual(await mine(), []);
  // A scope the manifest does not declare is refused, and the page says so.
  await page.fill(`[data-testid=scope-${plugin}]`, "network.fetch:evil.example");
  await row.locator("button:has-text('Grant')").click();
  await page.waitForSelector("[role=status] >> text=refused");
  await page.waitForSelector("[data-testid=secrets]");
  await nav(page, "Audit log");
  await page.waitForSelector(`[data-testid=audit] >> text=${plugin}`);
  await page.context().close();

  const op = await asOperator();
  await nav(op, "Trust");
  const health = op.locator("[data-testid=functions] tr", { hasText: fn });
  await health.waitFor();
  assert.match(await health.innerText(), /\s4\s+1\s+0\s+5\.0 ms\s+TypeError: boom/, "runs, failures, limit hits, mean, last error");
  await op.waitForSelector("[data-testid=key-versions] tbody tr");
  await op.waitForSelector(`[data-testid=vault-secrets] >> text=${secretName}`);
  assert.equal(await op.locator(`text=${secretValue}`).count(), 0, "no value on the page");
  assert.ok(!(await op.content()).includes(secretValue), "nor in its HTML");
  await op.waitForSelector("[data-testid=deliveries]");
  await shoot(op, "trust");
  await op.click("text=Re-encrypt under the current key");
  await op.click("button:has-text('Confirm')");
  await op.waitForSelector("[role=status] >> text=secrets re-encrypted");
  await op.context().close();
});

test("no page logged an error", () => {
  assert.deepEqual(problems, []);
});
