import { html } from "htm/preact";
import { usePoll, rows } from "../poll.js";

/**
 * Builds the causal tree of a correlation's events: each event under the one
 * that caused it (`causation_id`), roots first, siblings in commit order. An
 * event whose cause is not among them (older than the outbox's retention, or
 * not the caller's to see) is a root.
 */
export function causalTree(events) {
  const byId = new Map(events.map((e) => [e.id, { event: e, children: [] }]));
  const roots = [];
  for (const e of events) {
    const node = byId.get(e.id);
    const parent = e.causation_id && byId.get(e.causation_id);
    if (parent && parent !== node) parent.children.push(node);
    else roots.push(node);
  }
  return roots;
}

function Tree({ nodes, current }) {
  return html`<ul class="tree">
    ${nodes.map(
      (n) => html`<li>
        <span class=${n.event.id === current ? "current" : ""} data-testid="chain-event">
          ${n.event.type}${n.event.subject ? html` <small class="muted">${n.event.subject}</small>` : ""}
        </span>
        ${n.children.length > 0 && html`<${Tree} nodes=${n.children} current=${current} />`}
      </li>`,
    )}
  </ul>`;
}

async function load(session, event) {
  const spine = session.db.schema("spine");
  const [chain, explained] = await Promise.all([
    spine
      .from("events")
      .select("id, type, subject, causation_id, seq")
      .eq("correlation_id", event.correlation_id)
      .order("seq")
      .limit(500)
      .then(rows),
    // explain is the event owner's or the operator's: others get an error,
    // shown as such.
    spine.rpc("explain", { event_id: event.id }).then(rows),
  ]);
  return { chain, explained };
}

/** An event: its data, its causal chain as a tree, and why its rules fired or not. */
export function EventDetail({ session, event }) {
  const { data, error } = usePoll(() => load(session, event), 0, [session, event.id]);
  return html`<section class="detail" data-testid="event-detail">
    <h2>${event.type} <small class="mono">${event.id}</small></h2>
    <pre>${JSON.stringify(event.data, null, 2)}</pre>
    ${error && html`<p class="error">${error}</p>`}
    ${data &&
    html`<h3>Causal chain <small class="muted">correlation ${event.correlation_id}</small></h3>
      <${Tree} nodes=${causalTree(data.chain)} current=${event.id} />
      <h3>Rules</h3>
      ${data.explained.length === 0
        ? html`<p class="muted">No rule of the event's owner listens to ${event.type}.</p>`
        : html`<table data-testid="explain">
            <thead><tr><th>rule</th><th>on</th><th>considered</th><th>matches</th><th>fired</th><th>reason</th></tr></thead>
            <tbody>
              ${data.explained.map(
                (r) => html`<tr>
                  <td>${r.rule}</td><td>${r.on_event}</td><td>${String(r.considered)}</td>
                  <td>${String(r.matches)}</td><td>${String(r.fired)}</td><td>${r.reason}</td>
                </tr>`,
              )}
            </tbody>
          </table>`}`}
  </section>`;
}
