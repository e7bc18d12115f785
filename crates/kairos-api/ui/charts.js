// Inline SVG: the success sparkline of the jobs list, bar and line charts with axes, and the
// workflow DAG (steps layered by their longest path from a root, edges as curves).

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element: attributes (a `class` may be a list; `on…` functions are listeners), children. */
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** `2026-03-02 03:00` in the browser's zone. */
function shortTime(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

// ---- sparkline ----

/** The ended states that count as a failure (a cancelled run is neither success nor failure). */
export const FAILURES = new Set(['failed', 'timed_out', 'lost']);

/** Whether an ended run's state is an outcome: a success or a failure. */
function isOutcome(state) {
  return state === 'succeeded' || FAILURES.has(state);
}

/**
 * The success rate of ended runs: `ok` successes of `total` outcomes (successes and failures;
 * cancelled and other runs count for neither), `percent` rounded, null when there is none.
 */
export function successRate(recent) {
  const outcomes = (recent || []).filter((r) => isOutcome(r.state));
  const ok = outcomes.filter((r) => r.state === 'succeeded').length;
  const total = outcomes.length;
  return { ok, total, percent: total ? Math.round((100 * ok) / total) : null };
}

/** The newest run (of `recent`, newest first) that succeeded or failed, or null. */
export function lastOutcome(recent) {
  return (recent || []).find((r) => isOutcome(r.state)) || null;
}

/**
 * One bar per ended run, oldest left: tall for a success, shorter for a failure, shortest for
 * a run that is neither (cancelled). `recent` is newest first (as `/stats/jobs` answers). The
 * `<title>` gives the success rate.
 */
export function sparkline(recent) {
  const runs = [...(recent || [])].reverse();
  const rate = successRate(runs);
  const label = !runs.length ? 'No ended runs yet'
    : rate.total ? `Success rate ${rate.percent}% (${rate.ok} of ${rate.total} recent outcomes)`
      : `No success or failure among ${runs.length} recent runs`;
  const n = Math.max(runs.length, 1);
  const barW = 3;
  const gap = 1;
  const width = Math.max(20 * (barW + gap), n * (barW + gap));
  const height = 20;
  const svg = s('svg', {
    class: 'sparkline', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label,
  }, s('title', null, label));
  svg.appendChild(s('line', { class: 'spark-base', x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5 }));
  runs.forEach((r, i) => {
    const bh = r.state === 'succeeded' ? height - 2 : FAILURES.has(r.state) ? 7 : 4;
    svg.appendChild(s('rect', {
      class: `spark-bar state-${r.state}`, x: i * (barW + gap), y: height - bh, width: barW, height: bh,
    }, s('title', null, `Run ${r.run_id}: ${r.state}`)));
  });
  return svg;
}

// ---- charts with axes ----

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * A chart of values over time with a y axis (0 to a round maximum, formatted by `yFormat`)
 * and an x axis (the first and last instant, formatted by `xFormat`). `points`: `{t: Date,
 * v: number, title, cls}` in time order, evenly spaced. `kind` `bar` draws a bar per point;
 * `line` joins the points. The `<svg>` has `label` as its `<title>` and aria-label.
 */
export function timeChart({
  label, points, kind = 'bar', yLabel = '', yFormat = (v) => String(v), xLabel = '', xFormat = shortTime,
}) {
  const width = 560;
  const height = 200;
  const m = { left: 64, right: 12, top: 12, bottom: 40 };
  const iw = width - m.left - m.right;
  const ih = height - m.top - m.bottom;
  const svg = s('svg', {
    class: `chart chart-kind-${kind}`, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label,
    preserveAspectRatio: 'xMinYMin meet',
  }, s('title', null, label));
  if (!points.length) {
    svg.appendChild(s('text', { class: 'chart-empty', x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'No data yet'));
    return svg;
  }
  const minV = Math.min(0, ...points.map((p) => p.v));
  const maxV = niceMax(Math.max(...points.map((p) => p.v)));
  const y = (v) => m.top + ih - ((v - minV) / (maxV - minV || 1)) * ih;
  // y axis and grid
  const ticks = [minV, minV + (maxV - minV) / 2, maxV];
  for (const t of ticks) {
    svg.appendChild(s('line', { class: 'chart-grid', x1: m.left, x2: m.left + iw, y1: y(t), y2: y(t) }));
    svg.appendChild(s('text', { class: 'chart-tick', x: m.left - 6, y: y(t) + 4, 'text-anchor': 'end' }, yFormat(t)));
  }
  svg.appendChild(s('line', { class: 'chart-axis', x1: m.left, x2: m.left, y1: m.top, y2: m.top + ih }));
  svg.appendChild(s('line', { class: 'chart-axis', x1: m.left, x2: m.left + iw, y1: m.top + ih, y2: m.top + ih }));
  if (yLabel) {
    svg.appendChild(s('text', {
      class: 'chart-axis-label', x: 12, y: m.top + ih / 2, 'text-anchor': 'middle',
      transform: `rotate(-90 12 ${m.top + ih / 2})`,
    }, yLabel));
  }
  // One slot per point, in time order: runs come in bursts (a backfill, retries), and evenly
  // spaced points keep each one readable; the axis names the first and last instant.
  const step = iw / points.length;
  const xs = points.map((_, i) => m.left + step * (i + 0.5));
  // x axis: the first and last instant
  svg.appendChild(s('text', { class: 'chart-tick', x: m.left, y: m.top + ih + 16, 'text-anchor': 'start' }, xFormat(points[0].t)));
  if (points.length > 1) {
    svg.appendChild(s('text', { class: 'chart-tick', x: m.left + iw, y: m.top + ih + 16, 'text-anchor': 'end' },
      xFormat(points[points.length - 1].t)));
  }
  if (xLabel) {
    svg.appendChild(s('text', { class: 'chart-axis-label', x: m.left + iw / 2, y: height - 4, 'text-anchor': 'middle' }, xLabel));
  }
  if (kind === 'bar') {
    const bw = Math.max(2, Math.min(24, (iw / points.length) * 0.7));
    points.forEach((p, i) => {
      const top = y(Math.max(p.v, 0));
      const h = Math.max(1, Math.abs(y(p.v) - y(0)));
      svg.appendChild(s('rect', {
        class: ['chart-bar', p.cls], x: xs[i] - bw / 2, y: p.v >= 0 ? top : y(0), width: bw, height: h,
      }, s('title', null, p.title)));
    });
  } else {
    const d = points.map((p, i) => `${i ? 'L' : 'M'}${xs[i].toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
    svg.appendChild(s('path', { class: 'chart-line', d }));
    points.forEach((p, i) => {
      svg.appendChild(s('circle', { class: ['chart-dot', p.cls], cx: xs[i], cy: y(p.v), r: 3.5 }, s('title', null, p.title)));
    });
  }
  return svg;
}

// ---- workflow DAG ----

const NODE_W = 168;
const NODE_H = 44;
const GAP_X = 56;
const GAP_Y = 18;
const PAD = 12;

/**
 * Places the steps: a step's layer is its longest path from a root (a step without
 * dependencies), and within a layer steps are ordered by the mean position of their upstream
 * steps (then by their order in the workflow), which keeps most edges short and uncrossed.
 * Returns `{nodes: Map(name → {step, layer, x, y}), edges: [{from, to}], width, height}`.
 */
export function layoutDag(steps) {
  const byName = new Map(steps.map((st, i) => [st.step, { st, i }]));
  const depth = new Map();
  const visiting = new Set();
  const layerOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0; // a cycle cannot be stored; do not loop if one is
    visiting.add(name);
    const deps = (byName.get(name).st.depends_on || []).filter((d) => byName.has(d));
    const l = deps.length ? 1 + Math.max(...deps.map(layerOf)) : 0;
    visiting.delete(name);
    depth.set(name, l);
    return l;
  };
  const layers = [];
  for (const st of steps) {
    const l = layerOf(st.step);
    (layers[l] ||= []).push(st.step);
  }
  const pos = new Map();
  layers.forEach((names, l) => {
    if (l > 0) {
      const key = (n) => {
        const deps = (byName.get(n).st.depends_on || []).filter((d) => pos.has(d));
        return deps.length ? deps.reduce((a, d) => a + pos.get(d), 0) / deps.length : Infinity;
      };
      names.sort((a, b) => key(a) - key(b) || byName.get(a).i - byName.get(b).i);
    }
    names.forEach((n, i) => pos.set(n, i));
  });
  const tallest = Math.max(1, ...layers.map((ls) => (ls ? ls.length : 0)));
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y;
  const nodes = new Map();
  layers.forEach((names, l) => {
    const colH = names.length * NODE_H + (names.length - 1) * GAP_Y;
    const top = (height - colH) / 2;
    names.forEach((n, i) => {
      nodes.set(n, { step: byName.get(n).st, layer: l, x: PAD + l * (NODE_W + GAP_X), y: top + i * (NODE_H + GAP_Y) });
    });
  });
  const edges = [];
  for (const st of steps) {
    for (const d of st.depends_on || []) if (nodes.has(d)) edges.push({ from: d, to: st.step });
  }
  const width = PAD * 2 + layers.length * NODE_W + (layers.length - 1) * GAP_X;
  return { nodes, edges, width, height };
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * The step graph of a workflow run. Each step is a focusable `<g>` (role button) with
 * `data-step`, `data-state` and the class `state-<state>`, coloured by the stylesheet;
 * `onSelect(name)` is called on click, Enter or Space.
 */
export function dagChart(steps, { selected, onSelect, label }) {
  const { nodes, edges, width, height } = layoutDag(steps);
  const svg = s('svg', {
    class: 'dag', width, height, viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': label,
  });
  svg.appendChild(s('defs', null,
    s('marker', { id: 'dag-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      s('path', { class: 'dag-arrowhead', d: 'M0,0 L10,5 L0,10 z' }))));
  const edgeGroup = s('g', { class: 'dag-edges', 'aria-hidden': 'true' });
  for (const e of edges) {
    const a = nodes.get(e.from);
    const b = nodes.get(e.to);
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x - 2;
    const y2 = b.y + NODE_H / 2;
    const mx = (x1 + x2) / 2;
    edgeGroup.appendChild(s('path', {
      class: `dag-edge from-state-${a.step.state}`, d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`,
      'marker-end': 'url(#dag-arrow)', 'data-from': e.from, 'data-to': e.to,
    }));
  }
  svg.appendChild(edgeGroup);
  for (const [name, n] of nodes) {
    const state = n.step.state;
    const isSel = name === selected;
    const g = s('g', {
      class: ['dag-node', `state-${state}`, isSel && 'selected'], 'data-step': name, 'data-state': state,
      'data-focus-key': `step:${name}`, tabindex: 0, role: 'button', 'aria-pressed': isSel ? 'true' : 'false',
      'aria-label': `step ${name}: ${state.replace(/_/g, ' ')}`, transform: `translate(${n.x},${n.y})`,
      onclick: () => onSelect(name),
      onkeydown: (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          onSelect(name);
        }
      },
    },
    s('title', null, `${name}: ${state}`),
    s('rect', { class: 'dag-rect', width: NODE_W, height: NODE_H, rx: 6, ry: 6 }),
    s('text', { class: 'dag-name', x: 10, y: 18 }, clip(name, 20)),
    s('text', { class: 'dag-state', x: 10, y: 35 }, state.replace(/_/g, ' ')));
    svg.appendChild(g);
  }
  return svg;
}
