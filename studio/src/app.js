import { html } from "htm/preact";
import { useEffect, useState } from "preact/hooks";
import { restore, signOut } from "./session.js";
import { SignIn } from "./pages/signin.js";
import { Overview } from "./pages/overview.js";
import { Jobs } from "./pages/jobs.js";
import { Events } from "./pages/events.js";
import { Audit } from "./pages/audit.js";
import { Rules } from "./pages/rules.js";
import { Entities } from "./pages/entities.js";
import { Trust } from "./pages/trust.js";

const PAGES = [
  ["overview", "Overview", Overview],
  ["jobs", "Queues and jobs", Jobs],
  ["events", "Events", Events],
  ["rules", "Rules", Rules],
  ["entities", "Entities", Entities],
  ["trust", "Trust", Trust],
  ["audit", "Audit log", Audit],
];

function currentPage() {
  const name = window.location.hash.replace(/^#\/?/, "") || "overview";
  return PAGES.find(([n]) => n === name) ?? PAGES[0];
}

export function App() {
  const [session, setSession] = useState(undefined);
  const [page, setPage] = useState(currentPage);
  useEffect(() => {
    restore()
      .then(setSession)
      .catch(() => setSession(null));
    const onHash = () => setPage(currentPage());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  if (session === undefined) return html`<p class="muted">Loading…</p>`;
  if (!session) return html`<${SignIn} onSignedIn=${setSession} />`;
  const [name, , Page] = page;
  return html`
    <header>
      <strong>Spine Studio</strong>
      <nav>
        ${PAGES.map(
          ([n, title]) => html`<a href="#/${n}" class=${n === name ? "current" : ""}>${title}</a>`,
        )}
      </nav>
      <span class="who" data-testid="who">
        ${session.role === "operator" ? "operator (service role)" : session.email}
      </span>
      <button
        onClick=${async () => {
          await signOut(session);
          setSession(null);
        }}
      >
        Sign out
      </button>
    </header>
    <main><${Page} session=${session} /></main>
  `;
}
