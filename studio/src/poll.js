import { useEffect, useState } from "preact/hooks";

/** `load()`'s result, loaded again every `everyMs` (and when `deps` change). */
export function usePoll(load, everyMs, deps = []) {
  const [state, setState] = useState({ data: null, error: null });
  useEffect(() => {
    let live = true;
    const tick = async () => {
      try {
        const data = await load();
        if (live) setState({ data, error: null });
      } catch (error) {
        if (live) setState((s) => ({ data: s.data, error: error.message }));
      }
    };
    tick();
    const timer = everyMs ? setInterval(tick, everyMs) : null;
    return () => {
      live = false;
      if (timer) clearInterval(timer);
    };
  }, deps);
  return state;
}

/** The rows of a supabase-js answer, or a thrown error naming it. */
export function rows({ data, error }) {
  if (error) throw new Error(`${error.code ?? ""} ${error.message}`.trim());
  return data;
}
