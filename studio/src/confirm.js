import { html } from "htm/preact";
import { useState } from "preact/hooks";

/**
 * An action that asks first: the button, then "Confirm" / "Back". Its outcome
 * goes to `onDone`, which the page shows: the job it acted on may leave the
 * list (and this button with it) as soon as the list reloads.
 */
export function Confirmed({ label, question, run, onDone }) {
  const [asking, setAsking] = useState(false);
  if (!asking) {
    return html`<button onClick=${() => setAsking(true)}>${label}</button>`;
  }
  return html`<span class="confirm">
    ${question}
    <button
      class="danger"
      onClick=${async () => {
        let outcome;
        try {
          outcome = await run();
        } catch (e) {
          outcome = `failed: ${e.message}`;
        }
        setAsking(false);
        onDone(outcome);
      }}
    >
      Confirm
    </button>
    <button onClick=${() => setAsking(false)}>Back</button>
  </span>`;
}
