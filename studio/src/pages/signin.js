import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { asOperator, asUser } from "../session.js";

export function SignIn({ onSignedIn }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const attempt = (f) => async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await f(new FormData(e.target)));
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <main class="signin">
      <h1>Spine Studio</h1>
      <form onSubmit=${attempt((f) => asUser(f.get("email"), f.get("password")))}>
        <h2>Sign in</h2>
        <label>Email <input name="email" type="email" autocomplete="username" required /></label>
        <label>Password <input name="password" type="password" autocomplete="current-password" required /></label>
        <button disabled=${busy}>Sign in</button>
      </form>
      <form onSubmit=${attempt((f) => asOperator(f.get("key")))}>
        <h2>Operator</h2>
        <label>Service key <input name="key" type="password" autocomplete="off" required /></label>
        <button disabled=${busy}>Open as operator</button>
      </form>
      ${error && html`<p class="error" role="alert">${error}</p>`}
    </main>
  `;
}
