import { html } from "htm/preact";
import { usePoll, rows } from "../poll.js";
import { useSeries, Sparkline } from "../charts.js";

/** The window the completed-jobs rate is counted over. */
const WINDOW_MS = 10_000;

async function load(session) {
  const spine = session.db.schema("spine");
  const operator = session.role === "operator";
  const [queues, health, sinks, processes, finished] = await Promise.all([
    spine.rpc("queue_stats").then(rows),
    fetch("/health/ready").then(async (r) => ({ ok: r.ok, body: await r.json() })),
    // The counters only (spine.sinks): the sink_status view counts each sink's
    // backlog, which takes seconds on a large outbox with many sinks (6.4 s
    // with 49 sinks in the test database), and would hold every chart back.
    operator ? spine.from("sinks").select("name, kind, delivered").order("name").then(rows) : null,
    operator ? spine.rpc("processes").then(rows) : null,
    // Jobs completed in the last 10 s (the archive's index on finished_at),
    // as RLS shows them: a user's own.
    spine
      .from("jobs_archive")
      .select("id", { count: "exact", head: true })
      .eq("state", "completed")
      .gt("finished_at", new Date(Date.now() - WINDOW_MS).toISOString())
      .then(({ count, error }) => {
        if (error) throw new Error(error.message);
        return count;
      }),
  ]);
  return { queues, health, sinks, processes, finishedPerSecond: finished / (WINDOW_MS / 1000), at: Date.now() };
}

const waiting = (queues) => queues.reduce((n, q) => n + Number(q.queued) + Number(q.retrying), 0);
const running = (queues) => queues.reduce((n, q) => n + Number(q.running), 0);

/**
 * What runs and how fast: the gateway's readiness and the processes connected
 * to the database (operator), throughput of every sink (the NATS relay, search
 * sync), jobs completed per second and the jobs waiting and running, charted
 * over the last two minutes of polls; queue depths; sinks' backlog and lag.
 */
/** Backlog and lag per sink: the slow part, polled apart and less often. */
function useSinkStatus(session) {
  return usePoll(
    () =>
      session.role === "operator"
        ? session.db.schema("spine").from("sink_status").select("*").order("name").then(rows)
        : Promise.resolve(null),
    10_000,
    [session],
  );
}

export function Overview({ session }) {
  const { data, error } = usePoll(() => load(session), 2000, [session]);
  const { data: sinkStatus } = useSinkStatus(session);
  const series = useSeries();
  if (!data) return html`<p class="muted">${error ?? "Loading…"}</p>`;
  // Recorded while rendering (once per poll: a sample per `at`), so the
  // charts include the poll they are drawn with.
  for (const s of data.sinks ?? []) series.record(`sink:${s.name}`, s.delivered, data.at);
  series.record("jobs:waiting", waiting(data.queues), data.at);
  series.record("jobs:running", running(data.queues), data.at);
  series.record("jobs:done", data.finishedPerSecond, data.at);
  return html`
    <h1>Overview</h1>
    ${error && html`<p class="error">${error}</p>`}
    <div class="grid cards">
      <section>
        <h2>Gateway</h2>
        <p data-testid="health" class=${data.health.ok ? "ok" : "error"}>
          ${data.health.ok ? "ready" : `not ready: ${JSON.stringify(data.health.body)}`}
        </p>
      </section>
      ${data.processes &&
      html`<section>
        <h2>Processes</h2>
        <table data-testid="processes">
          <thead><tr><th>process</th><th>version</th><th>sessions</th><th>since</th><th>last active</th></tr></thead>
          <tbody>
            ${data.processes.map(
              (p) => html`<tr>
                <td>${p.process}</td><td>${p.version}</td><td>${p.sessions}</td>
                <td>${new Date(p.since).toLocaleTimeString()}</td><td>${new Date(p.last_active).toLocaleTimeString()}</td>
              </tr>`,
            )}
          </tbody>
        </table>
        ${data.processes.length === 0 && html`<p class="error">No Spine process is connected to the database.</p>`}
      </section>`}
    </div>
    <section>
      <h2>Throughput</h2>
      <table data-testid="throughput">
        <tbody>
          ${(data.sinks ?? []).map(
            (s) => html`<tr>
              <td>${s.kind} <strong>${s.name}</strong> delivered</td>
              <td><${Sparkline} points=${series.rate(`sink:${s.name}`)} unit="/s" testid=${`rate-${s.name}`} /></td>
            </tr>`,
          )}
          <tr><td>jobs completed (10 s average)</td><td><${Sparkline} points=${series.level("jobs:done")} unit="/s" testid="jobs-done" /></td></tr>
          <tr><td>jobs waiting</td><td><${Sparkline} points=${series.level("jobs:waiting")} testid="jobs-waiting" /></td></tr>
          <tr><td>jobs running</td><td><${Sparkline} points=${series.level("jobs:running")} testid="jobs-running" /></td></tr>
        </tbody>
      </table>
    </section>
    <section>
      <h2>Queues</h2>
      <table data-testid="queue-stats">
        <thead><tr><th>queue</th><th>priority</th><th>queued</th><th>running</th><th>retrying</th><th>dead</th><th>oldest waiting</th></tr></thead>
        <tbody>
          ${data.queues.map(
            (q) => html`<tr>
              <td><a href="#/jobs" onClick=${() => sessionStorage.setItem("studio-queue", q.queue)}>${q.queue}</a></td>
              <td>${q.priority}</td><td>${q.queued}</td><td>${q.running}</td><td>${q.retrying}</td>
              <td class=${q.dead > 0 ? "error" : ""}>${q.dead}</td>
              <td>${Math.round(q.oldest_queued_seconds)} s</td>
            </tr>`,
          )}
        </tbody>
      </table>
      ${data.queues.length === 0 && html`<p class="muted">No live jobs.</p>`}
    </section>
    ${data.sinks &&
    html`<section>
      <h2>Sinks</h2>
      ${!sinkStatus && html`<p class="muted">Counting backlogs…</p>`}
      <table data-testid="sinks">
        <thead><tr><th>sink</th><th>kind</th><th>delivered</th><th>backlog</th><th>lag</th><th>last error</th></tr></thead>
        <tbody>
          ${(sinkStatus ?? []).map(
            (s) => html`<tr>
              <td>${s.name}</td><td>${s.kind}</td><td>${s.delivered}</td><td>${s.backlog}</td>
              <td>${s.lag_seconds != null ? `${Number(s.lag_seconds).toFixed(1)} s` : ""}</td>
              <td class="error">${s.last_error ?? ""}</td>
            </tr>`,
          )}
        </tbody>
      </table>
    </section>`}
  `;
}
