import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { usePoll, rows } from "../poll.js";

const RECENT = 500;

async function load(session, selected) {
  const spine = session.db.schema("spine");
  const [rules, recent, firings] = await Promise.all([
    spine.from("rules").select("id, owner_id, name, on_event, condition, actions, enabled, priority, updated_at").order("name").then(rows),
    // The latest firings of every rule, counted per rule on the page.
    spine.from("rule_firings").select("rule_id, fired_at").order("id", { ascending: false }).limit(RECENT).then(rows),
    selected
      ? spine.from("rule_firings").select("*").eq("rule_id", selected).order("id", { ascending: false }).limit(50).then(rows)
      : [],
  ]);
  const stats = new Map();
  for (const f of recent) {
    const s = stats.get(f.rule_id) ?? { count: 0, last: f.fired_at };
    s.count += 1;
    stats.set(f.rule_id, s);
  }
  return { rules, stats, firings, capped: recent.length === RECENT };
}

/** Opens the event in the Events page (its detail, chain and explanation). */
const showEvent = (id) => {
  sessionStorage.setItem("studio-event", id);
  window.location.hash = "#/events";
};

/**
 * Rules with their firings: what each rule listens to, its condition and
 * actions, how often it fired lately; a rule's firings with the inputs the
 * condition saw, the actions it took and why a chain stopped.
 */
export function Rules({ session }) {
  const [selected, setSelected] = useState(null);
  const { data, error } = usePoll(() => load(session, selected), 3000, [session, selected]);
  const rule = data?.rules.find((r) => r.id === selected);
  return html`
    <h1>Rules</h1>
    ${error && html`<p class="error">${error}</p>`}
    <table data-testid="rules">
      <thead><tr><th>name</th><th>on event</th><th>enabled</th><th>priority</th><th>fired${data?.capped ? ` (last ${RECENT})` : ""}</th><th>last fired</th>${session.role === "operator" && html`<th>owner</th>`}</tr></thead>
      <tbody>
        ${(data?.rules ?? []).map((r) => {
          const s = data.stats.get(r.id);
          return html`<tr class=${r.id === selected ? "selected" : ""} onClick=${() => setSelected(r.id)}>
            <td>${r.name}</td><td>${r.on_event}</td><td class=${r.enabled ? "ok" : "muted"}>${r.enabled ? "yes" : "no"}</td>
            <td>${r.priority}</td><td>${s?.count ?? 0}</td><td>${s ? new Date(s.last).toLocaleString() : ""}</td>
            ${session.role === "operator" && html`<td class="mono">${r.owner_id ?? "system"}</td>`}
          </tr>`;
        })}
      </tbody>
    </table>
    ${data && data.rules.length === 0 && html`<p class="muted">No rules.</p>`}
    ${rule &&
    html`<section class="detail" data-testid="rule-detail">
      <h2>${rule.name} <small>on ${rule.on_event}</small></h2>
      <div class="grid">
        <div><h3>Condition</h3><pre>${JSON.stringify(rule.condition, null, 2)}</pre></div>
        <div><h3>Actions</h3><pre>${JSON.stringify(rule.actions, null, 2)}</pre></div>
      </div>
      <h3>Firings</h3>
      <table data-testid="firings">
        <thead><tr><th>at</th><th>event</th><th>depth</th><th>actions</th><th>stopped</th></tr></thead>
        <tbody>
          ${data.firings.map(
            (f) => html`<tr onClick=${() => showEvent(f.event_id)}>
              <td>${new Date(f.fired_at).toLocaleString()}</td><td>${f.event_type} <span class="mono">${f.event_id}</span></td>
              <td>${f.depth}</td><td class="mono">${JSON.stringify(f.actions)}</td><td class="error">${f.stopped ?? ""}</td>
            </tr>`,
          )}
        </tbody>
      </table>
      ${data.firings.length === 0 && html`<p class="muted">It has not fired.</p>`}
    </section>`}
  `;
}
