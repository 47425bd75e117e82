import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { usePoll, rows } from "../poll.js";

async function load(session, kind) {
  const spine = session.db.schema("spine");
  let q = spine
    .from("entities")
    .select("id, owner_id, kind, data, version, updated_at")
    .order("updated_at", { ascending: false })
    .limit(100);
  if (kind) q = q.eq("kind", kind);
  return q.then(rows);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function loadDetail(session, id) {
  // It goes into a PostgREST or= filter below: a uuid and nothing else.
  if (!UUID.test(id)) throw new Error(`not an entity id: ${id}`);
  const spine = session.db.schema("spine");
  const [[entity], keys, edges, sources] = await Promise.all([
    spine.from("entities").select("id, owner_id, kind, data, version, updated_at").eq("id", id).then(rows),
    spine.from("entity_keys").select("key_type, key_value").eq("entity_id", id).order("key_type").then(rows),
    spine.from("edges").select("from_id, rel, to_id, created_at").or(`from_id.eq.${id},to_id.eq.${id}`).then(rows),
    spine
      .from("raw_records")
      .select("id, source, external_id, status, error, payload, received_at")
      .eq("entity_id", id)
      .order("id", { ascending: false })
      .limit(20)
      .then(rows),
  ]);
  return { entity, keys, edges, sources };
}

/** A short label for an entity: its name, else its kind and id. */
const label = (e) => e.data?.name ?? e.data?.title ?? `${e.kind} ${e.id.slice(0, 8)}`;

/** One entity (any the caller may read, listed or not), fetched by id. */
function EntityDetail({ session, id, open }) {
  const { data, error } = usePoll(() => loadDetail(session, id), 0, [session, id]);
  if (error) return html`<p class="error">${error}</p>`;
  if (!data) return html`<p class="muted">Loading…</p>`;
  const entity = data.entity;
  if (!entity) return html`<p class="muted">Entity ${id} is not yours to see, or gone.</p>`;
  return html`<section class="detail" data-testid="entity-detail">
    <h2>${label(entity)} <small>${entity.kind} · version ${entity.version}</small></h2>
    <p class="mono">${entity.id}</p>
    <pre>${JSON.stringify(entity.data, null, 2)}</pre>
    <div class="grid">
      <div>
        <h3>Keys</h3>
        <table data-testid="keys"><tbody>
          ${data.keys.map((k) => html`<tr><td>${k.key_type}</td><td>${k.key_value}</td></tr>`)}
        </tbody></table>
        ${data.keys.length === 0 && html`<p class="muted">No identity keys.</p>`}
      </div>
      <div>
        <h3>Edges</h3>
        <table data-testid="edges"><tbody>
          ${data.edges.map((g) => {
            const out = g.from_id === entity.id;
            const other = out ? g.to_id : g.from_id;
            return html`<tr onClick=${() => open(other)}>
              <td>${out ? "→" : "←"} ${g.rel}</td><td class="mono">${other}</td>
            </tr>`;
          })}
        </tbody></table>
        ${data.edges.length === 0 && html`<p class="muted">No edges.</p>`}
      </div>
    </div>
    <h3>Source records</h3>
    <table data-testid="sources">
      <thead><tr><th>source</th><th>external id</th><th>status</th><th>received</th><th>payload</th></tr></thead>
      <tbody>
        ${data.sources.map(
          (r) => html`<tr>
            <td>${r.source}</td><td>${r.external_id}</td><td class=${r.error ? "error" : ""}>${r.status}${r.error ? `: ${r.error}` : ""}</td>
            <td>${new Date(r.received_at).toLocaleString()}</td><td class="mono">${JSON.stringify(r.payload)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${data.sources.length === 0 && html`<p class="muted">Not from a connector.</p>`}
  </section>`;
}

/**
 * Search as the signed-in user: spine.search_key() mints a tenant token
 * (Meilisearch filters every index to the user's rows) and the browser asks
 * Meilisearch directly, as an app would. The gateway's policy allows that one
 * origin (`SPINE_SEARCH_PUBLIC_URL`); the page says so when it is not allowed.
 */
async function search(session, q) {
  const config = await fetch("/studio/config.json").then((r) => r.json());
  if (!config.searchOrigin) {
    throw new Error("search is off on this gateway: it has no SPINE_SEARCH_PUBLIC_URL (Meilisearch)");
  }
  const key = await session.db.schema("spine").rpc("search_key").then(rows);
  const origin = new URL(key.url).origin;
  if (config.searchOrigin !== origin) {
    throw new Error(`the gateway does not let the console reach ${origin}: set SPINE_SEARCH_PUBLIC_URL on the gateway`);
  }
  const r = await fetch(`${key.url.replace(/\/$/, "")}/multi-search`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${key.token}` },
    body: JSON.stringify({ queries: key.indexes.map((indexUid) => ({ indexUid, q, limit: 10 })) }),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(`Meilisearch: ${body.message ?? r.status}`);
  return body.results.flatMap((res) => res.hits.map((hit) => ({ index: res.indexUid, hit })));
}

function Search({ session, open }) {
  const [q, setQ] = useState("");
  const [state, setState] = useState(null);
  const run = async (e) => {
    e.preventDefault();
    setState({ busy: true });
    try {
      setState({ hits: await search(session, q) });
    } catch (err) {
      setState({ error: err.message });
    }
  };
  return html`<section>
    <form class="inline" onSubmit=${run}>
      <input placeholder="search my data" value=${q} onInput=${(e) => setQ(e.target.value)} data-testid="search" />
      <button type="submit">Search</button>
    </form>
    ${state?.error && html`<p class="error" role="alert" data-testid="search-error">${state.error}</p>`}
    ${state?.hits &&
    html`<table data-testid="hits"><tbody>
      ${state.hits.map(
        ({ index, hit }) => html`<tr onClick=${() => open(hit.id)}>
          <td>${index}</td><td>${hit.name ?? hit.title ?? hit.id}</td><td class="mono">${hit.id}</td>
        </tr>`,
      )}
    </tbody></table>
    ${state.hits.length === 0 && html`<p class="muted">No hits.</p>`}`}
  </section>`;
}

/**
 * Entities as RLS shows them (a user's own; the operator all): the latest by
 * kind, and for one its identity keys, edges and the connector records it came
 * from; search with the user's tenant token.
 */
export function Entities({ session }) {
  const [kind, setKind] = useState("");
  const [selected, setSelected] = useState(null);
  const { data, error } = usePoll(() => load(session, kind), 5000, [session, kind]);
  const [kinds, setKinds] = useState([]);
  if (data && !kind) {
    const seen = [...new Set(data.map((e) => e.kind))].sort();
    if (seen.join() !== kinds.join()) setKinds(seen);
  }
  return html`
    <h1>Entities</h1>
    ${error && html`<p class="error">${error}</p>`}
    ${session.role === "user" && html`<${Search} session=${session} open=${setSelected} />`}
    <div class="toolbar">
      <label>Kind
        <select value=${kind} onChange=${(e) => (setKind(e.target.value), setSelected(null))} data-testid="kind">
          <option value="">every kind</option>
          ${kinds.map((k) => html`<option value=${k}>${k}</option>`)}
        </select>
      </label>
    </div>
    <table data-testid="entities">
      <thead><tr><th>kind</th><th>name</th><th>version</th><th>updated</th>${session.role === "operator" && html`<th>owner</th>`}</tr></thead>
      <tbody>
        ${(data ?? []).map(
          (e) => html`<tr class=${e.id === selected ? "selected" : ""} onClick=${() => setSelected(e.id)}>
            <td>${e.kind}</td><td>${label(e)}</td><td>${e.version}</td><td>${new Date(e.updated_at).toLocaleString()}</td>
            ${session.role === "operator" && html`<td class="mono">${e.owner_id ?? ""}</td>`}
          </tr>`,
        )}
      </tbody>
    </table>
    ${data && data.length === 0 && html`<p class="muted">No entities.</p>`}
    ${selected && html`<${EntityDetail} session=${session} id=${selected} open=${setSelected} />`}
  `;
}
