import { html } from "htm/preact";
import { useEffect, useState } from "preact/hooks";
import { rows } from "../poll.js";
import { EventDetail } from "./chain.js";

const KEEP = 200;

/** Whether an event passes the filters (type prefix, subject, owner). */
function passes(e, f) {
  return (
    (!f.type || e.type.startsWith(f.type)) &&
    (!f.subject || (e.subject ?? "").includes(f.subject)) &&
    (!f.owner || e.owner_id === f.owner)
  );
}

/**
 * The newest events, then every new one as it commits: a Realtime
 * subscription to spine.events (commit order; RLS decides, so a user sees
 * their own events only).
 */
function useTail(session) {
  const [events, setEvents] = useState([]);
  const [status, setStatus] = useState("connecting");
  useEffect(() => {
    let live = true;
    const db = session.db;
    const seen = new Set();
    const add = (list) =>
      setEvents((old) => {
        const fresh = list.filter((e) => !seen.has(e.id));
        fresh.forEach((e) => seen.add(e.id));
        return [...fresh.reverse(), ...old].slice(0, KEEP);
      });
    const channel = db
      .channel(`studio-tail-${Math.random().toString(36).slice(2)}`)
      .on("postgres_changes", { event: "INSERT", schema: "spine", table: "events" }, (m) => add([m.new]))
      .subscribe(async (s) => {
        if (!live) return;
        setStatus(s === "SUBSCRIBED" ? "live" : s.toLowerCase());
        if (s === "SUBSCRIBED") {
          const recent = await db
            .schema("spine")
            .from("events")
            .select("*")
            .order("seq", { ascending: false })
            .limit(50)
            .then(rows)
            .catch(() => []);
          if (live) add(recent.reverse());
        }
      });
    return () => {
      live = false;
      db.removeChannel(channel);
    };
  }, [session]);
  return { events, status };
}

export function Events({ session }) {
  const { events, status } = useTail(session);
  const [filter, setFilter] = useState({ type: "", subject: "", owner: "" });
  const [open, setOpen] = useState(null);
  // An event another page linked to (a rule's firing), opened even when it is
  // older than the tail.
  const [linked, setLinked] = useState(null);
  useEffect(() => {
    const id = sessionStorage.getItem("studio-event");
    if (!id) return;
    sessionStorage.removeItem("studio-event");
    session.db
      .schema("spine")
      .from("events")
      .select("*")
      .eq("id", id)
      .then(rows)
      .then(([e]) => {
        if (!e) return;
        setLinked(e);
        setOpen(e.id);
      })
      .catch(() => {});
  }, [session]);
  const field = (name, placeholder) => html`<input
    placeholder=${placeholder}
    value=${filter[name]}
    onInput=${(e) => setFilter({ ...filter, [name]: e.target.value.trim() })}
    data-testid=${`filter-${name}`}
  />`;
  const shown = events.filter((e) => passes(e, filter));
  const opened = events.find((e) => e.id === open) ?? (linked?.id === open ? linked : null);
  return html`
    <h1>Events <small class=${status === "live" ? "ok" : "muted"} data-testid="tail-status">${status}</small></h1>
    <div class="toolbar">${field("type", "type prefix")} ${field("subject", "subject")} ${field("owner", "owner id")}</div>
    <table data-testid="events">
      <thead><tr><th>occurred</th><th>type</th><th>subject</th><th>owner</th><th>correlation</th></tr></thead>
      <tbody>
        ${shown.map(
          (e) => html`<tr class=${open === e.id ? "selected" : ""} onClick=${() => setOpen(open === e.id ? null : e.id)}>
            <td>${e.occurred_at}</td><td>${e.type}</td><td>${e.subject ?? ""}</td>
            <td class="mono">${e.owner_id ?? ""}</td><td class="mono">${e.correlation_id}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${shown.length === 0 && html`<p class="muted">No events yet.</p>`}
    ${opened && html`<${EventDetail} session=${session} event=${opened} />`}
  `;
}
