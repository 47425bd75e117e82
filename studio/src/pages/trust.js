import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { usePoll, rows } from "../poll.js";
import { Confirmed } from "../confirm.js";

async function load(session) {
  const spine = session.db.schema("spine");
  const operator = session.role === "operator";
  const [plugins, consents, secrets, keyVersions, functions, health, deliveries, vaultSecrets] = await Promise.all([
    spine.from("plugins").select("name, version, enabled, manifest, updated_at").order("name").then(rows),
    spine.from("consents").select("id, owner_id, plugin, scope, granted_at").is("revoked_at", null).order("plugin").order("scope").then(rows),
    operator ? null : spine.rpc("my_secrets").then(rows),
    operator ? spine.rpc("vault_key_versions").then(rows) : null,
    operator ? spine.from("functions").select("name, sha256, deployed_at").order("name").then(rows) : null,
    operator ? spine.from("plugin_health").select("*").then(rows) : null,
    operator
      ? spine.from("webhook_deliveries").select("*").order("id", { ascending: false }).limit(50).then(rows)
      : null,
    operator ? spine.rpc("vault_secrets").then(rows) : null,
  ]);
  return { plugins, consents, secrets, keyVersions, functions, health, deliveries, vaultSecrets };
}

/**
 * What a manifest asks for, as the scopes a user consents to (`action:resource`,
 * the names of core/src/manifest.rs).
 */
function asked(manifest) {
  const p = manifest?.permissions ?? {};
  const out = [];
  const add = (action, list) => (Array.isArray(list) ? list : []).forEach((r) => out.push(`${action}:${r}`));
  add("entities.read", p.entities?.read);
  add("entities.write", p.entities?.write);
  add("events.emit", p.events?.emit);
  if (Array.isArray(p.secrets)) add("secrets.read", p.secrets);
  else {
    add("secrets.read", p.secrets?.read);
    add("secrets.write", p.secrets?.write);
  }
  add("network.fetch", p.network);
  if (p.users?.act_as) out.push("users.act_as:*");
  return out;
}

function Plugins({ session, data, done }) {
  const spine = session.db.schema("spine");
  const user = session.role === "user";
  const [scope, setScope] = useState({});
  const grant = async (plugin) => {
    const wanted = (scope[plugin] ?? "").trim();
    if (!wanted) return;
    const { error } = await spine.rpc("grant_consent", { plugin, scopes: [wanted] });
    done(error ? `refused: ${error.message}` : `granted ${wanted} to ${plugin}`);
  };
  return html`<section>
    <h2>Plugins and consents</h2>
    <table data-testid="plugins">
      <thead><tr><th>plugin</th><th>version</th><th>enabled</th><th>asks for</th><th>${user ? "you consented to" : "consents"}</th>${user && html`<th></th>`}</tr></thead>
      <tbody>
        ${data.plugins.map((p) => {
          const mine = data.consents.filter((c) => c.plugin === p.name);
          return html`<tr>
            <td>${p.name}</td><td>${p.version}</td><td class=${p.enabled ? "ok" : "error"}>${p.enabled ? "yes" : "no"}</td>
            <td class="mono">${asked(p.manifest).join(", ")}</td>
            <td>
              ${mine.map(
                (c) => html`<div class="consent">
                  <span class="mono">${c.scope}</span>
                  ${!user && html` <span class="mono muted">${c.owner_id}</span>`}
                  ${user &&
                  html` <${Confirmed}
                    label="Revoke"
                    question=${`Revoke ${c.scope} from ${p.name}?`}
                    run=${async () => {
                      const n = await spine.rpc("revoke_consent", { plugin: p.name, scopes: [c.scope] }).then(rows);
                      return `revoked ${c.scope} from ${p.name} (${n})`;
                    }}
                    onDone=${done}
                  />`}
                </div>`,
              )}
            </td>
            ${user &&
            html`<td>
              <form class="inline" onSubmit=${(e) => (e.preventDefault(), grant(p.name))}>
                <input placeholder="a scope, or * for all" value=${scope[p.name] ?? ""} data-testid=${`scope-${p.name}`}
                  list=${`scopes-${p.name}`} onInput=${(e) => setScope({ ...scope, [p.name]: e.target.value })} />
                <datalist id=${`scopes-${p.name}`}>
                  ${["*", ...asked(p.manifest)].map((a) => html`<option value=${a} />`)}
                </datalist>
                <button type="submit">Grant</button>
              </form>
            </td>`}
          </tr>`;
        })}
      </tbody>
    </table>
    ${data.plugins.length === 0 && html`<p class="muted">No plugins registered.</p>`}
  </section>`;
}

function Secrets({ session, data, done }) {
  if (session.role === "user") {
    return html`<section>
      <h2>My secrets</h2>
      <p class="muted">Names only: values never leave the vault except to the plugins you consented to.</p>
      <table data-testid="secrets"><thead><tr><th>name</th><th>stored</th><th>changed</th></tr></thead><tbody>
        ${data.secrets.map((s) => html`<tr><td>${s.name}</td><td>${new Date(s.created_at).toLocaleString()}</td><td>${new Date(s.updated_at).toLocaleString()}</td></tr>`)}
      </tbody></table>
      ${data.secrets.length === 0 && html`<p class="muted">None.</p>`}
    </section>`;
  }
  return html`<section>
    <h2>Vault</h2>
    <table data-testid="key-versions"><thead><tr><th>root key version</th><th>current</th><th>in keyring</th><th>secrets</th></tr></thead><tbody>
      ${data.keyVersions.map(
        (k) => html`<tr><td>${k.key_version}</td><td>${k.current ? "yes" : ""}</td><td class=${k.in_keyring ? "" : "error"}>${k.in_keyring ? "yes" : "missing"}</td><td>${k.secrets}</td></tr>`,
      )}
    </tbody></table>
    <h3>Secrets</h3>
    <p class="muted">Names only: no page shows a value.</p>
    <table data-testid="vault-secrets"><thead><tr><th>name</th><th>description</th><th>stored</th><th>changed</th></tr></thead><tbody>
      ${data.vaultSecrets.map(
        (v) => html`<tr><td>${v.name ?? html`<span class="muted">(unnamed)</span>`}</td><td>${v.description ?? ""}</td>
          <td>${new Date(v.created_at).toLocaleString()}</td><td>${new Date(v.updated_at).toLocaleString()}</td></tr>`,
      )}
    </tbody></table>
    <${Confirmed}
      label="Re-encrypt under the current key"
      question="Re-encrypt every secret under the newest root key version?"
      run=${async () => `${await session.db.schema("spine").rpc("rotate_vault_key").then(rows)} secrets re-encrypted`}
      onDone=${done}
    />
  </section>`;
}

function Functions({ data }) {
  const health = new Map(data.health.map((h) => [h.plugin, h]));
  return html`<section>
    <h2>Functions</h2>
    <table data-testid="functions">
      <thead><tr><th>function</th><th>deployed</th><th>sha-256</th><th>runs</th><th>failures</th><th>limit hits</th><th>mean</th><th>last error</th></tr></thead>
      <tbody>
        ${data.functions.map((f) => {
          const h = health.get(f.name);
          return html`<tr>
            <td>${f.name}</td><td>${new Date(f.deployed_at).toLocaleString()}</td><td class="mono">${f.sha256.slice(0, 12)}</td>
            <td>${h?.invocations ?? 0}</td><td class=${h?.failures ? "error" : ""}>${h?.failures ?? 0}</td><td>${h?.limit_hits ?? 0}</td>
            <td>${h?.invocations ? `${(h.total_ms / h.invocations).toFixed(1)} ms` : ""}</td>
            <td class="error">${h?.auto_disabled_at ? "auto-disabled: " : ""}${h?.last_error ?? ""}</td>
          </tr>`;
        })}
      </tbody>
    </table>
    ${data.functions.length === 0 && html`<p class="muted">No functions deployed.</p>`}
  </section>`;
}

function Deliveries({ data }) {
  return html`<section>
    <h2>Webhook deliveries</h2>
    <table data-testid="deliveries">
      <thead><tr><th>at</th><th>webhook</th><th>job</th><th>attempt</th><th>status</th><th>took</th><th>error</th></tr></thead>
      <tbody>
        ${data.deliveries.map(
          (d) => html`<tr>
            <td>${new Date(d.delivered_at).toLocaleString()}</td><td>${d.webhook}</td><td>${d.job_id}</td><td>${d.attempt}</td>
            <td class=${d.succeeded ? "ok" : "error"}>${d.status ?? "no answer"}</td><td>${d.duration_ms} ms</td><td class="error">${d.error ?? ""}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${data.deliveries.length === 0 && html`<p class="muted">No deliveries yet.</p>`}
  </section>`;
}

/**
 * Who may do what: plugins with what their manifests ask and the consents
 * given (a user grants and revokes their own), secrets by name (a user's own;
 * the operator sees root key versions and re-encrypts), deployed functions
 * with their health, webhook deliveries. Every change here is audited by the
 * function it calls.
 */
export function Trust({ session }) {
  const [tick, setTick] = useState(0);
  const [notice, setNotice] = useState(null);
  const { data, error } = usePoll(() => load(session), 5000, [session, tick]);
  const done = (outcome) => {
    setNotice(outcome);
    setTick((t) => t + 1);
  };
  return html`
    <h1>Trust</h1>
    ${error && html`<p class="error">${error}</p>`}
    ${notice && html`<p class="notice" role="status">${notice}</p>`}
    ${data &&
    html`<${Plugins} session=${session} data=${data} done=${done} />
      <${Secrets} session=${session} data=${data} done=${done} />
      ${session.role === "operator" && html`<${Functions} data=${data} /><${Deliveries} data=${data} />`}`}
  `;
}
