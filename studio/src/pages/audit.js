import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { usePoll, rows } from "../poll.js";

/**
 * The audit log, newest first: what was granted, denied, consented, read from
 * the vault, and what operators did (cancel, retry, redrive). A user sees the
 * rows about themselves (RLS); the operator sees all and can verify the chain.
 */
export function Audit({ session }) {
  const [action, setAction] = useState("");
  const { data, error } = usePoll(
    async () => {
      let q = session.db
        .schema("spine")
        .from("audit_log")
        .select("seq, at, actor, role, action, target, details")
        .order("seq", { ascending: false })
        .limit(100);
      if (action) q = q.like("action", `${action}*`);
      return q.then(rows);
    },
    3000,
    [session, action],
  );
  const [verdict, setVerdict] = useState(null);
  const verify = async () => {
    setVerdict("verifying…");
    const { data: broken, error: e } = await session.db.schema("spine").rpc("audit_verify");
    setVerdict(e ? `failed: ${e.message}` : broken == null ? "the chain is intact" : `broken at seq ${broken}`);
  };
  return html`
    <h1>Audit log</h1>
    ${error && html`<p class="error">${error}</p>`}
    <div class="toolbar">
      <input placeholder="action prefix" value=${action} onInput=${(e) => setAction(e.target.value.trim())} data-testid="filter-action" />
      ${session.role === "operator" &&
      html`<button onClick=${verify}>Verify the chain</button>
        ${verdict && html`<span role="status" data-testid="verdict">${verdict}</span>`}`}
    </div>
    <table data-testid="audit">
      <thead><tr><th>seq</th><th>at</th><th>role</th><th>actor</th><th>action</th><th>target</th><th>details</th></tr></thead>
      <tbody>
        ${(data ?? []).map(
          (a) => html`<tr>
            <td>${a.seq}</td><td>${a.at}</td><td>${a.role}</td><td class="mono">${a.actor ?? ""}</td>
            <td>${a.action}</td><td>${a.target ?? ""}</td><td class="mono">${JSON.stringify(a.details)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${data && data.length === 0 && html`<p class="muted">No audit rows${action ? ` for ${action}` : ""}.</p>`}
  `;
}
