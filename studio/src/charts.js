import { html } from "htm/preact";
import { useRef } from "preact/hooks";

// Live charts from polled values. A sparkline is a polyline over the last
// polls, a dozen lines of SVG: a charting library (uPlot, Chart.js) would add
// 40–200 KB to the bundle for axes and zoom the overview does not show.

const KEEP = 60; // polls: two minutes at the overview's 2 s

/**
 * Series kept across polls: `record(name, value)` appends a sample at now;
 * `rate(name)` turns a counter's samples into per-second rates, `level(name)`
 * keeps them as they are.
 */
export function useSeries() {
  const store = useRef(new Map());
  const samples = (name) => store.current.get(name) ?? [];
  return {
    record(name, value, at = Date.now()) {
      const s = samples(name);
      if (s.length && s[s.length - 1].at === at) return;
      store.current.set(name, [...s, { at, value: Number(value) }].slice(-KEEP));
    },
    rate(name) {
      const s = samples(name);
      const out = [];
      for (let i = 1; i < s.length; i++) {
        const seconds = (s[i].at - s[i - 1].at) / 1000;
        // A counter that went back (a sink dropped and made again) restarts.
        out.push(seconds > 0 ? Math.max(0, s[i].value - s[i - 1].value) / seconds : 0);
      }
      return out;
    },
    level(name) {
      return samples(name).map((x) => x.value);
    },
  };
}

/** A sparkline of `points`, with the latest value and the window's peak. */
export function Sparkline({ points, unit = "", testid }) {
  const width = 160;
  const height = 32;
  const peak = points.length ? Math.max(...points) : 0;
  const scale = peak > 0 ? peak : 1;
  const step = points.length > 1 ? width / (points.length - 1) : width;
  const line = points.map((p, i) => `${(i * step).toFixed(1)},${(height - (p / scale) * (height - 2) - 1).toFixed(1)}`).join(" ");
  const last = points.length ? points[points.length - 1] : null;
  const fmt = (v) => (v >= 100 ? Math.round(v) : Number(v.toFixed(1))).toLocaleString();
  return html`<span class="spark" data-testid=${testid}>
    <svg width=${width} height=${height} viewBox="0 0 ${width} ${height}" role="img" aria-label="${testid}">
      ${points.length > 1 && html`<polyline points=${line} fill="none" stroke="#2f7d6b" stroke-width="1.5" />`}
    </svg>
    <span class="value">${last == null ? "…" : `${fmt(last)}${unit}`}</span>
    <span class="muted">peak ${fmt(peak)}${unit}</span>
  </span>`;
}
