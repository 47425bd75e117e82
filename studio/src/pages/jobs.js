import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { usePoll, rows } from "../poll.js";
import { Confirmed } from "../confirm.js";

const LIVE = ["queued", "retrying", "running", "dead"];
const ARCHIVED = ["completed", "cancelled"];

async function load(session, queue, state) {
  const spine = session.db.schema("spine");
  const queues = await spine.from("queues").select("name").order("name").then(rows);
  const table = ARCHIVED.includes(state) ? "jobs_archive" : "jobs";
  let q = spine
    .from(table)
    .select("*")
    .eq("state", state)
    .order("id", { ascending: false })
    .limit(100);
  if (queue) q = q.eq("queue", queue);
  return { queues: queues.map((x) => x.name), jobs: await q.then(rows) };
}

function JobDetail({ session, job, onChanged }) {
  const spine = session.db.schema("spine");
  return html`<section class="detail" data-testid="job-detail">
    <h2>Job ${job.id} <small>${job.queue} · ${job.state} · attempt ${job.attempts}/${job.max_attempts}</small></h2>
    <h3>Payload</h3>
    <pre>${JSON.stringify(job.payload, null, 2)}</pre>
    <h3>Errors</h3>
    ${job.errors.length === 0
      ? html`<p class="muted">None.</p>`
      : html`<ol>${job.errors.map((e) => html`<li><pre>${JSON.stringify(e, null, 2)}</pre></li>`)}</ol>`}
    ${["dead", "retrying"].includes(job.state) &&
    html`<${Confirmed}
      label="Retry now"
      question=${`Run job ${job.id} again now${job.state === "dead" ? ", with fresh attempts" : ""}?`}
      run=${async () => ((await spine.rpc("retry_job", { id: job.id }).then(rows)) ? "retried" : "not yours, or no longer dead or retrying")}
      onDone=${onChanged}
    />`}
    ${LIVE.includes(job.state) &&
    html`<${Confirmed}
      label="Cancel"
      question=${`Cancel job ${job.id}?`}
      run=${async () => ((await spine.rpc("cancel_job", { id: job.id }).then(rows)) ? "cancelled" : "not yours, or already finished")}
      onDone=${onChanged}
    />`}
  </section>`;
}

export function Jobs({ session }) {
  const [queue, setQueue] = useState(sessionStorage.getItem("studio-queue") ?? "");
  const [state, setState] = useState("dead");
  const [selected, setSelected] = useState(null);
  const [tick, setTick] = useState(0);
  const { data, error } = usePoll(() => load(session, queue, state), 3000, [session, queue, state, tick]);
  const [notice, setNotice] = useState(null);
  const refresh = (outcome) => {
    setNotice(outcome);
    setTick((t) => t + 1);
  };
  const pickQueue = (q) => {
    sessionStorage.setItem("studio-queue", q);
    setQueue(q);
    setSelected(null);
    setNotice(null);
  };
  const job = data?.jobs.find((j) => j.id === selected);
  return html`
    <h1>Queues and jobs</h1>
    ${error && html`<p class="error">${error}</p>`}
    ${notice && html`<p class="notice" role="status">${notice}</p>`}
    <div class="toolbar">
      <label>Queue
        <select value=${queue} onChange=${(e) => pickQueue(e.target.value)} data-testid="queue">
          <option value="">every queue</option>
          ${(data?.queues ?? []).map((q) => html`<option value=${q}>${q}</option>`)}
        </select>
      </label>
      <span class="tabs">
        ${[...LIVE, ...ARCHIVED].map(
          (s) => html`<button class=${s === state ? "current" : ""} onClick=${() => (setState(s), setSelected(null))}>${s}</button>`,
        )}
      </span>
      ${state === "dead" &&
      queue &&
      session.role === "operator" &&
      html`<${Confirmed}
        label="Redrive the queue's dead jobs"
        question=${`Put every dead job of ${queue} back in the queue?`}
        run=${async () => `${await session.db.schema("spine").rpc("redrive", { queue }).then(rows)} redriven`}
        onDone=${refresh}
      />`}
    </div>
    <table data-testid="jobs">
      <thead><tr><th>id</th><th>queue</th><th>state</th><th>attempts</th><th>run at</th><th>last error</th></tr></thead>
      <tbody>
        ${(data?.jobs ?? []).map(
          (j) => html`<tr class=${j.id === selected ? "selected" : ""} onClick=${() => setSelected(j.id)}>
            <td><a href=${"#/jobs"} onClick=${(e) => (e.preventDefault(), setSelected(j.id))}>${j.id}</a></td>
            <td>${j.queue}</td><td>${j.state}</td><td>${j.attempts}/${j.max_attempts}</td>
            <td>${j.run_at ?? j.finished_at ?? ""}</td>
            <td class="error">${j.errors.at(-1)?.error ?? ""}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${data && data.jobs.length === 0 && html`<p class="muted">No ${state} jobs${queue ? ` in ${queue}` : ""}.</p>`}
    ${job && html`<${JobDetail} session=${session} job=${job} onChanged=${refresh} />`}
  `;
}
