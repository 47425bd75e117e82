import { html } from "htm/preact";
import { usePoll, rows } from "../poll.js";

async function load(session) {
  const spine = session.db.schema("spine");
  const [queues, health, sinks] = await Promise.all([
    spine.rpc("queue_stats").then(rows),
    fetch("/health/ready").then(async (r) => ({ ok: r.ok, body: await r.json() })),
    session.role === "operator" ? spine.from("sink_status").select("*").then(rows) : null,
  ]);
  return { queues, health, sinks };
}

export function Overview({ session }) {
  const { data, error } = usePoll(() => load(session), 2000, [session]);
  if (!data) return html`<p class="muted">${error ?? "Loading…"}</p>`;
  return html`
    <h1>Overview</h1>
    ${error && html`<p class="error">${error}</p>`}
    <section>
      <h2>Gateway</h2>
      <p data-testid="health" class=${data.health.ok ? "ok" : "error"}>
        ${data.health.ok ? "ready" : `not ready: ${JSON.stringify(data.health.body)}`}
      </p>
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
      <table data-testid="sinks">
        <thead><tr><th>sink</th><th>kind</th><th>delivered</th><th>backlog</th><th>lag</th><th>last error</th></tr></thead>
        <tbody>
          ${data.sinks.map(
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
