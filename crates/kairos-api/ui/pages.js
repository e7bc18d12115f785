// The pages of the Kairos web UI, drawn in the browser from the JSON API: the jobs list, a job,
// a run (with a workflow's step graph), the alerts, the nodes, and the login page; and the building blocks
// they share (DOM construction, times, state badges, the error region, the confirm dialog, the
// job actions). The DOM is built with createElement and textContent, never innerHTML: job
// names, output and reasons are user data.

import {
  api, apiText, streamText, jobPath, qs, liveEvents, coalesce, JOB_KINDS, LIST_KINDS, RUN_KINDS, NODE_KINDS, ALERT_KINDS,
} from './api.js';
import {
  sparkline, timeChart, dagChart, successRate, lastOutcome, FAILURES,
} from './charts.js';
import { jobToml } from './toml.js';

// ==============================================================================================
// Building blocks
// ==============================================================================================

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (k === 'class') {
      el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    } else if (k === 'style') {
      throw new Error('style attributes are refused by the Content-Security-Policy');
    } else if (k === 'value' || k === 'checked' || k === 'selected') {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
}

/** An HTML element: `h('a', {href: '/x', class: 'c'}, 'text', child, [more])`. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/**
 * Replaces the children of `el`, keeping the keyboard focus on the element with the same
 * `data-focus-key` when one had it (a live refresh must not throw the user out of a table).
 */
export function replace(el, ...children) {
  const active = document.activeElement;
  const key = active && el.contains(active) ? active.getAttribute('data-focus-key') : null;
  el.replaceChildren();
  append(el, children);
  if (key) {
    const again = [...el.querySelectorAll('[data-focus-key]')].find((n) => n.getAttribute('data-focus-key') === key);
    if (again) again.focus({ preventScroll: true });
  }
}

/** A table in a wrapper that scrolls sideways on a narrow screen. */
export function tableWrap(table, label) {
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: 0 }, table);
}

/** `<thead>` of column names, each a `<th scope="col">`. */
export function thead(...names) {
  return h('thead', null, h('tr', null, names.map((n) => h('th', { scope: 'col' }, n))));
}

// ---- time ----

export const ACTIVE = new Set(['scheduled', 'queued', 'running']);
export const FAILED = new Set(['failed', 'timed_out', 'lost', 'upstream_failed', 'cancelled']);

export function toDate(v) {
  if (!v) return null;
  const d = v instanceof Date ? v : new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** A span of milliseconds in words: `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`, `3d 4h`. */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  const neg = ms < 0;
  const a = Math.abs(ms);
  let t;
  if (a < 1000) t = a < 10 && a !== Math.round(a) ? `${a.toFixed(1)} ms` : `${Math.round(a)} ms`;
  else if (a < 60_000) t = `${(a / 1000).toFixed(a < 10_000 ? 2 : 1)} s`;
  else if (a < 3_600_000) {
    const m = Math.floor(a / 60_000);
    t = `${m}m ${String(Math.floor((a % 60_000) / 1000)).padStart(2, '0')}s`;
  } else if (a < 86_400_000) {
    const hr = Math.floor(a / 3_600_000);
    t = `${hr}h ${String(Math.floor((a % 3_600_000) / 60_000)).padStart(2, '0')}m`;
  } else {
    t = `${Math.floor(a / 86_400_000)}d ${Math.floor((a % 86_400_000) / 3_600_000)}h`;
  }
  return neg ? `−${t}` : t;
}

function shortSpan(a) {
  const sec = Math.round(a / 1000);
  if (sec < 60) return `${sec}s`;
  const min = Math.round(a / 60_000);
  if (min < 60) return `${min}m`;
  const hr = Math.floor(a / 3_600_000);
  if (hr < 48) {
    const rest = Math.round((a % 3_600_000) / 60_000);
    return rest && hr < 10 ? `${hr}h ${rest}m` : `${hr}h`;
  }
  return `${Math.round(a / 86_400_000)}d`;
}

/** Relative to now: `in 5m`, `3m ago`, `just now`. */
export function fmtRelative(date, now = Date.now()) {
  const d = toDate(date);
  if (!d) return '—';
  const diff = d.getTime() - now;
  if (Math.abs(diff) < 1500) return 'just now';
  return diff > 0 ? `in ${shortSpan(diff)}` : `${shortSpan(-diff)} ago`;
}

/** "Ns ago" in seconds, for heartbeats. */
export function fmtSecondsAgo(date, now = Date.now()) {
  const d = toDate(date);
  if (!d) return '—';
  return `${Math.max(0, Math.round((now - d.getTime()) / 1000))}s ago`;
}

export const BROWSER_ZONE = (() => {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'local';
  } catch {
    return 'local';
  }
})();

const formatters = new Map();
/** `2026-03-02 03:00:00` in `zone` (the browser's when absent). */
export function fmtAbsolute(date, zone) {
  const d = toDate(date);
  if (!d) return '—';
  const key = zone || '';
  let f = formatters.get(key);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-GB', {
        timeZone: zone || undefined, year: 'numeric', month: '2-digit', day: '2-digit',
        hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
      });
    } catch {
      f = new Intl.DateTimeFormat('en-GB', {
        year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
        second: '2-digit', hourCycle: 'h23',
      });
    }
    formatters.set(key, f);
  }
  const p = Object.fromEntries(f.formatToParts(d).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

/**
 * `<time>` showing the time relative to now; its `datetime` and `title` hold the absolute time
 * (the page's ticker keeps the relative text current).
 */
export function timeRel(date, { seconds = false } = {}) {
  const d = toDate(date);
  if (!d) return h('span', { class: 'muted' }, '—');
  const iso = d.toISOString();
  return h('time', {
    datetime: iso, class: seconds ? 'rel rel-seconds' : 'rel', 'aria-live': 'off',
    title: `${iso} (${fmtAbsolute(d)} ${BROWSER_ZONE})`,
  }, seconds ? fmtSecondsAgo(d) : fmtRelative(d));
}

/** Time elapsed since `date`, kept current by the ticker (a running run's duration). */
export function elapsed(date) {
  const d = toDate(date);
  if (!d) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: d.toISOString(), class: 'elapsed', 'aria-live': 'off', title: `running since ${d.toISOString()}` },
    fmtDuration(Date.now() - d.getTime()));
}

/** Updates the relative text of every `time.rel` (and `time.elapsed`) in the document. */
export function tickTimes() {
  const now = Date.now();
  for (const el of document.querySelectorAll('time.elapsed')) {
    const d = toDate(el.getAttribute('datetime'));
    if (d) el.textContent = fmtDuration(now - d.getTime());
  }
  for (const el of document.querySelectorAll('time.rel')) {
    const d = toDate(el.getAttribute('datetime'));
    if (!d) continue;
    const text = el.classList.contains('rel-seconds') ? fmtSecondsAgo(d, now) : fmtRelative(d, now);
    if (el.textContent !== text) el.textContent = text;
  }
}

/** Milliseconds from `a` to `b` (both instants), or null. */
export function span(a, b) {
  const x = toDate(a);
  const y = toDate(b);
  return x && y ? y.getTime() - x.getTime() : null;
}

// ---- states ----

/** The state badge the tests select on: `<span class="badge state-X" data-state="X">`. */
export function badge(state, extraClass) {
  const st = String(state || 'unknown');
  return h('span', { class: ['badge', `state-${st}`, extraClass], 'data-state': st }, st.replace(/_/g, ' '));
}

// ---- errors and messages ----

/**
 * The page's alert region (`role="alert"`): `show(error)` puts the problem's detail in it,
 * `clear()` empties it.
 */
export function alertRegion() {
  const text = h('p', { class: 'alert-text' });
  const el = h('div', { class: 'alert', role: 'alert', hidden: true });
  const dismiss = h('button', { type: 'button', class: 'btn btn-small', onclick: () => clear() }, 'Dismiss');
  el.append(text, dismiss);
  const clear = () => {
    el.hidden = true;
    text.textContent = '';
  };
  const show = (e) => {
    if (e && e.name === 'AbortError') return;
    text.textContent = (e && (e.detail || e.message)) || String(e);
    el.hidden = false;
  };
  return { el, show, clear };
}

/** A polite live status line for short confirmations ("Run 12 queued"). */
export function statusRegion() {
  const el = h('div', { class: 'status', role: 'status', 'aria-live': 'polite' });
  return {
    el,
    set: (...children) => replace(el, ...children),
    clear: () => el.replaceChildren(),
  };
}

/**
 * A page's loader around `load` (which shows its own errors and answers true when it drew
 * fresh data): `refresh(cause)` runs it, never two at once, and once more at the end when asked
 * while it runs. After each successful load `<body>` gets `data-loads` (a counter) and
 * `data-load-cause` (what asked for it: `initial`, `action`, `timer`, or the kinds of the
 * events, `open` for a stream's (re)connection): hooks for the browser test.
 */
export function loader(load) {
  const causes = new Set();
  const run = coalesce(async () => {
    const why = [...causes];
    causes.clear();
    if ((await load()) === true) {
      const body = document.body.dataset;
      body.loads = String(Number(body.loads || 0) + 1);
      body.loadCause = why.join(',');
    }
  });
  return (cause = 'action') => {
    for (const c of Array.isArray(cause) ? cause : [cause]) causes.add(String(c));
    return run();
  };
}

/** What asked for a refetch from the event stream: the kinds of the events. */
function kindsOf(events) {
  return (events || []).map((e) => e.kind);
}

let dialog = null;
/**
 * Asks a question in a modal `<dialog>`; resolves true when `confirmLabel` is chosen, false on
 * the other button or Escape.
 */
export function confirmDialog(question, confirmLabel, cancelLabel) {
  if (!dialog) {
    dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-question' });
    document.body.appendChild(dialog);
  }
  return new Promise((resolve) => {
    const finish = (answer) => {
      dialog.removeEventListener('close', onClose);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onClose = () => finish(false);
    const cancel = h('button', { type: 'button', class: 'btn', onclick: () => finish(false) }, cancelLabel);
    const ok = h('button', { type: 'button', class: 'btn btn-danger', onclick: () => finish(true) }, confirmLabel);
    dialog.replaceChildren(
      h('p', { id: 'confirm-question', class: 'confirm-question' }, question),
      h('div', { class: 'dialog-buttons' }, cancel, ok),
    );
    dialog.addEventListener('close', onClose);
    dialog.showModal();
    cancel.focus();
  });
}

/** Closes the dialog if a page left while it was open. */
export function closeDialog() {
  if (dialog && dialog.open) dialog.close();
}

// ---- job actions ----

/**
 * The buttons that change a job: Pause or Resume, Trigger now, Delete (which asks first).
 * `after(kind, result)` is called after a success (`pause`, `resume`, `trigger` with the new
 * run, `delete`); errors go to `alert`.
 */
export function jobActions(job, { alert, after, key }) {
  const path = (suffix) => jobPath(job.name, job.namespace, suffix);
  const fk = (what) => `${key || `${job.namespace}/${job.name}`}:${what}`;
  const act = async (button, kind, fn) => {
    button.disabled = true;
    alert.clear();
    try {
      const result = await fn();
      await after(kind, result);
    } catch (e) {
      alert.show(e);
    } finally {
      button.disabled = false;
    }
  };
  const toggle = job.paused
    ? h('button', { type: 'button', class: 'btn', 'data-focus-key': fk('toggle'), 'data-action': 'resume',
      onclick: (e) => act(e.currentTarget, 'resume', () => api(path('/resume'), { method: 'POST' })) }, 'Resume')
    : h('button', { type: 'button', class: 'btn', 'data-focus-key': fk('toggle'), 'data-action': 'pause',
      onclick: (e) => act(e.currentTarget, 'pause', () => api(path('/pause'), { method: 'POST' })) }, 'Pause');
  const trigger = h('button', { type: 'button', class: 'btn btn-primary', 'data-focus-key': fk('trigger'), 'data-action': 'trigger',
    onclick: (e) => act(e.currentTarget, 'trigger', () => api(path('/trigger'), { method: 'POST', body: {} })) }, 'Trigger now');
  const del = h('button', { type: 'button', class: 'btn btn-danger-outline', 'data-focus-key': fk('delete'), 'data-action': 'delete',
    onclick: async (e) => {
      const button = e.currentTarget;
      const yes = await confirmDialog(`Delete job ${job.name} and its runs?`, 'Delete', 'Keep');
      if (yes) await act(button, 'delete', () => api(path(''), { method: 'DELETE' }));
      else if (button.isConnected) button.focus();
    } }, 'Delete');
  return h('div', { class: 'actions' }, toggle, trigger, del);
}

/** Whether the session may change things (a viewer sees no such buttons). */
export function canOperate(session) {
  return Boolean(session && session.role && session.role !== 'viewer');
}

/** Seconds for a chart's axis tick, as a duration. */
export function secondsTick(v) {
  return fmtDuration(v * 1000);
}

/** Pretty JSON for a `<pre>`. */
export function prettyJson(v) {
  return JSON.stringify(v, null, 2);
}

/** The page title in the browser tab. */
export function setTitle(...parts) {
  document.title = [...parts.filter(Boolean), 'Kairos'].join(' · ');
}

// ==============================================================================================
// Login
// ==============================================================================================

// The login page: a token is sent once to POST /session, which answers with an HttpOnly,
// SameSite=Strict cookie. The token never goes into the URL or into storage.

export function mountLogin(main, ctx) {
  setTitle('Sign in');
  const alert = alertRegion();
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, 'aria-describedby': 'token-help',
  });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Sign in');
  const form = h('form', { class: 'login-form', novalidate: true },
    h('label', { for: 'token' }, 'Token'),
    input,
    h('p', { id: 'token-help', class: 'help' },
      'An API token (kairos_…), from ', h('code', null, 'kairos token create'),
      '. It is kept in a session cookie that scripts cannot read.'),
    submit);
  let alive = true;
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    alert.clear();
    const token = input.value.trim();
    if (!token) {
      alert.show({ detail: 'Enter a token.' });
      input.focus();
      return;
    }
    submit.disabled = true;
    try {
      const session = await api('/session', { method: 'POST', body: { token } });
      input.value = '';
      if (alive) ctx.signedIn(session);
    } catch (err) {
      alert.show(err);
      input.focus();
      input.select();
    } finally {
      submit.disabled = false;
    }
  });
  main.append(
    h('section', { class: 'login card', 'aria-labelledby': 'login-title' },
      h('h1', { id: 'login-title' }, 'Sign in to Kairos'),
      alert.el,
      form),
  );
  input.focus();
  return () => {
    alive = false;
  };
}

// ==============================================================================================
// Jobs list
// ==============================================================================================

// The jobs list (`/`): schedule in words and as written, next fire in the job's zone and the
// browser's, last outcome, success sparkline, paused flag; search and filters in the query
// string; pause, resume, trigger now and delete; live from the event stream.

const STATES = [
  ['all', 'All'],
  ['active', 'Active (not paused)'],
  ['paused', 'Paused'],
  ['failing', 'Failing (last outcome failed)'],
];

/** A trigger as written in the job document: `cron 0 3 * * * (Europe/Berlin)`, `every 15m`. */
export function triggerWritten(t) {
  let text;
  if (t.cron) text = `cron ${t.cron}${t.timezone ? ` (${t.timezone})` : ''}`;
  else if (t.interval) text = `interval ${t.interval}${t.start_at ? ` from ${t.start_at}` : ''}`;
  else if (t.at) text = `at ${t.at}`;
  else if (t.event) text = `event ${t.event}${t.filter ? ` ${JSON.stringify(t.filter)}` : ''}`;
  else if (t.after) text = `after ${t.after.job} (${t.after.on || 'success'})`;
  else text = JSON.stringify(t);
  if (t.jitter) text += `, jitter ${t.jitter}`;
  if (t.end_at && !t.at) text += `, until ${t.end_at}`;
  if (t.exclude && t.exclude.length) text += `, except ${t.exclude.join(', ')}`;
  if (t.only && t.only.length) text += `, only ${t.only.join(', ')}`;
  return text;
}

/** The time zone a job's times are shown in: its first cron trigger's, else UTC. */
export function jobZone(job) {
  const cron = (job.triggers || []).find((t) => t.cron);
  return (cron && cron.timezone) || 'UTC';
}

/** The schedule cell: each trigger in words (from /stats/jobs) and as written. */
export function scheduleCell(job, stat) {
  const triggers = job.triggers || [];
  if (!triggers.length) return h('span', { class: 'muted' }, 'manual only');
  return h('ul', { class: 'schedule' }, triggers.map((t, i) => {
    const words = stat && stat.schedule && stat.schedule[i];
    return h('li', null,
      words ? h('span', { class: 'schedule-words' }, words) : null,
      h('code', { class: 'schedule-written' }, triggerWritten(t)));
  }));
}

/** Next fire: relative, then in the job's zone and in the browser's. */
export function nextFireCell(job) {
  if (job.paused) return h('span', { class: 'muted' }, 'paused');
  if (!job.next_fire_at) return h('span', { class: 'muted' }, 'none');
  const zone = jobZone(job);
  const at = job.next_fire_at;
  return h('div', { class: 'next-fire' },
    timeRel(at),
    h('div', { class: 'sub' }, `${fmtAbsolute(at, zone).slice(0, 16)} ${zone}`),
    zone !== BROWSER_ZONE ? h('div', { class: 'sub' }, `${fmtAbsolute(at).slice(0, 16)} your time (${BROWSER_ZONE})`) : null);
}

function jobKey(ns, name) {
  return `${ns}\u0000${name}`;
}

export function mountJobs(main, ctx) {
  setTitle('Jobs');
  const operate = canOperate(ctx.session);
  const alert = alertRegion();
  const status = statusRegion();
  const filters = {
    q: ctx.query.get('q') || '',
    ns: ctx.query.get('ns') || '',
    label: ctx.query.get('label') || '',
    state: ctx.query.get('state') || 'all',
  };
  if (!STATES.some(([v]) => v === filters.state)) filters.state = 'all';
  let jobs = null;
  let stats = new Map();
  let statsMissing = false;
  const triggered = new Map();
  let alive = true;
  let lastSignature = null;

  const count = h('p', { class: 'count muted' });
  const search = h('input', { id: 'f-q', type: 'search', value: filters.q, placeholder: 'job name', autocomplete: 'off' });
  const nsSelect = h('select', { id: 'f-ns' });
  const label = h('input', { id: 'f-label', type: 'text', value: filters.label, placeholder: 'key=value', autocomplete: 'off' });
  const stateSelect = h('select', { id: 'f-state' },
    STATES.map(([v, text]) => h('option', { value: v, selected: v === filters.state }, text)));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs', onsubmit: (e) => e.preventDefault() },
    h('div', { class: 'field' }, h('label', { for: 'f-q' }, 'Search'), search),
    h('div', { class: 'field' }, h('label', { for: 'f-ns' }, 'Namespace'), nsSelect),
    h('div', { class: 'field' }, h('label', { for: 'f-label' }, 'Label'), label),
    h('div', { class: 'field' }, h('label', { for: 'f-state' }, 'State'), stateSelect));
  const live = h('section', { class: 'live', 'aria-live': 'polite', 'aria-label': 'Jobs' }, h('p', { class: 'loading' }, 'Loading jobs…'));

  main.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Jobs'), count),
    alert.el, status.el, form, live,
  );

  const onFilter = () => {
    filters.q = search.value.trim();
    filters.ns = nsSelect.value;
    filters.label = label.value.trim();
    filters.state = stateSelect.value;
    ctx.setQuery({ q: filters.q, ns: filters.ns, label: filters.label, state: filters.state === 'all' ? '' : filters.state });
    draw();
  };
  search.addEventListener('input', onFilter);
  label.addEventListener('input', onFilter);
  nsSelect.addEventListener('change', onFilter);
  stateSelect.addEventListener('change', onFilter);

  function namespaceOptions() {
    const scoped = ctx.session && ctx.session.namespaces && !ctx.session.namespaces.includes('*');
    const names = new Set(scoped ? ctx.session.namespaces : []);
    for (const j of jobs || []) names.add(j.namespace);
    if (filters.ns) names.add(filters.ns);
    const list = [...names].sort();
    const wanted = JSON.stringify(list);
    if (nsSelect.dataset.options === wanted) return;
    nsSelect.dataset.options = wanted;
    replace(nsSelect,
      h('option', { value: '' }, 'All namespaces'),
      list.map((n) => h('option', { value: n, selected: n === filters.ns }, n)));
    nsSelect.value = filters.ns;
  }

  function matches(job) {
    const stat = stats.get(jobKey(job.namespace, job.name));
    // A cancelled run is no outcome: the last failed, timed out or lost run (before any success)
    // makes a job failing.
    const last = lastOutcome(stat && stat.recent);
    if (filters.q && !job.name.toLowerCase().includes(filters.q.toLowerCase())) return false;
    if (filters.ns && job.namespace !== filters.ns) return false;
    if (filters.label) {
      const [k, ...rest] = filters.label.split('=');
      const v = rest.join('=');
      const labels = job.labels || {};
      if (!(k.trim() in labels)) return false;
      if (rest.length && String(labels[k.trim()]) !== v.trim()) return false;
    }
    switch (filters.state) {
      case 'active': return !job.paused;
      case 'paused': return Boolean(job.paused);
      case 'failing': return Boolean(last) && FAILURES.has(last.state);
      default: return true;
    }
  }

  function row(job) {
    const k = jobKey(job.namespace, job.name);
    const stat = stats.get(k);
    const recent = (stat && stat.recent) || [];
    const last = recent[0];
    const rate = successRate(recent);
    const runId = triggered.get(k);
    const href = `/jobs/${encodeURIComponent(job.namespace)}/${encodeURIComponent(job.name)}`;
    return h('tr', { 'data-job': job.name, 'data-namespace': job.namespace, class: job.paused ? 'is-paused' : null },
      h('th', { scope: 'row', class: 'job-name' },
        h('a', { href, 'data-focus-key': `${k}:link` }, job.name),
        job.description ? h('div', { class: 'sub' }, job.description) : null,
        job.labels && Object.keys(job.labels).length
          ? h('div', { class: 'labels' }, Object.entries(job.labels).map(([lk, lv]) => h('span', { class: 'label' }, `${lk}=${lv}`)))
          : null),
      h('td', null, job.namespace),
      h('td', { class: 'schedule-cell' }, scheduleCell(job, stat)),
      h('td', null, nextFireCell(job)),
      h('td', { class: 'last-outcome' }, last
        ? [badge(last.state), h('div', { class: 'sub' }, timeRel(last.finished_at))]
        : h('span', { class: 'muted' }, statsMissing ? '—' : 'no runs')),
      h('td', { class: 'success' }, stat
        ? h('div', { class: 'spark' }, sparkline(recent), h('span', { class: 'rate' }, rate.total ? `${rate.percent}%` : ''))
        : h('span', { class: 'muted' }, '—')),
      h('td', null, job.paused
        ? h('span', { class: 'badge paused', 'data-paused': 'true' }, 'paused')
        : h('span', { class: 'muted', 'data-paused': 'false' }, 'no')),
      operate ? h('td', { class: 'actions-cell' },
        jobActions(job, { alert, after: (kind, result) => afterAction(job, kind, result) }),
        runId ? h('a', { class: 'triggered-run', href: `/runs/${runId}`, 'data-focus-key': `${k}:run` }, `Run ${runId}`) : null) : null);
  }

  async function afterAction(job, kind, result) {
    if (!alive) return;
    const k = jobKey(job.namespace, job.name);
    if (kind === 'trigger' && result) {
      triggered.set(k, result.id);
      status.set(`Run ${result.id} of ${job.name} queued. `, h('a', { href: `/runs/${result.id}` }, `Open run ${result.id}`));
    } else if (kind === 'delete') {
      triggered.delete(k);
      status.set(`Job ${job.name} deleted.`);
    } else if (kind === 'pause' || kind === 'resume') {
      status.set(`Job ${job.name} ${kind === 'pause' ? 'paused' : 'resumed'}.`);
    }
    await refresh();
  }

  function draw() {
    if (!alive || jobs === null) return;
    namespaceOptions();
    const shown = jobs.filter(matches);
    count.textContent = shown.length === jobs.length ? `${jobs.length} job${jobs.length === 1 ? '' : 's'}` : `${shown.length} of ${jobs.length} jobs`;
    const signature = JSON.stringify([shown, shown.map((j) => stats.get(jobKey(j.namespace, j.name)) || null),
      [...triggered], statsMissing]);
    if (signature === lastSignature) return;
    lastSignature = signature;
    if (!jobs.length) {
      replace(live, h('p', { class: 'empty' }, 'No jobs yet. Create one with ', h('code', null, 'kairos job create -f job.json'),
        ' or ', h('code', null, 'POST /api/v1/jobs'), '.'));
      return;
    }
    if (!shown.length) {
      replace(live, h('p', { class: 'empty' }, 'No job matches these filters.'));
      return;
    }
    const cols = ['Name', 'Namespace', 'Schedule', 'Next fire', 'Last outcome', 'Success', 'Paused'];
    if (operate) cols.push('Actions');
    replace(live, tableWrap(h('table', { class: 'jobs' },
      h('caption', { class: 'sr-only' }, 'Jobs, with their schedule, next fire time and recent outcomes'),
      thead(...cols), h('tbody', null, shown.map(row))), 'Jobs table'));
  }

  const refresh = loader(async () => {
    try {
      const [list, st] = await Promise.all([
        api('/jobs'),
        api('/stats/jobs?runs=20').catch((e) => {
          if (e && e.status === 401) throw e;
          return null;
        }),
      ]);
      if (!alive) return;
      jobs = list || [];
      statsMissing = st === null;
      stats = new Map((st || []).map((x) => [jobKey(x.namespace, x.name), x]));
      draw();
      return true;
    } catch (e) {
      if (alive) {
        alert.show(e);
        if (jobs === null) replace(live, h('p', { class: 'empty' }, 'The jobs could not be loaded.'));
      }
      return false;
    }
  });

  // Only events change the list (there is no periodic refetch), at most once per 1.5 s.
  const close = liveEvents({ kinds: LIST_KINDS }, (events) => refresh(kindsOf(events)));
  refresh('initial');
  return () => {
    alive = false;
    close();
  };
}

// ==============================================================================================
// Job
// ==============================================================================================

// A job (`/jobs/{namespace}/{name}`): its definition and version (as JSON, or as TOML with
// `?view=toml`: one `[[jobs]]` entry of a jobs file), the next 10 fire times with
// DST notes and calendar skips, the run history with paging (`?before=` in the URL), charts of
// durations and fire lateness, its alert rules in words and last deliveries, and the job
// actions; live from the events of this job (and its deliveries every 5 s).

const PAGE = 20;
const BOOKKEEPING = new Set(['version', 'created_at', 'updated_at', 'next_fire_at']);

function runsTable(runs) {
  return tableWrap(h('table', { class: 'runs' },
    h('caption', { class: 'sr-only' }, 'Runs of this job, newest first'),
    thead('Run', 'State', 'Origin', 'Scheduled for', 'Started', 'Duration', 'Attempt'),
    h('tbody', null, runs.map((r) => h('tr', { 'data-run': r.id },
      h('th', { scope: 'row' }, h('a', { href: `/runs/${r.id}`, 'data-focus-key': `run:${r.id}` }, String(r.id))),
      h('td', null, badge(r.state)),
      h('td', null, r.origin),
      h('td', null, timeRel(r.scheduled_for)),
      h('td', null, timeRel(r.started_at)),
      h('td', { class: 'num' }, !r.started_at ? '—'
        : r.finished_at ? fmtDuration(span(r.started_at, r.finished_at))
          : r.state === 'running' ? elapsed(r.started_at) : '—'),
      h('td', { class: 'num' }, `${r.attempt} / ${r.max_attempts}`))))), 'Run history');
}

function nextTable(times) {
  return tableWrap(h('table', { class: 'next-times' },
    h('caption', { class: 'sr-only' }, 'Next due times'),
    thead('Due (job’s zone)', `Your time (${BROWSER_ZONE})`, 'In', 'Trigger', 'Note'),
    h('tbody', null, times.map((t) => h('tr', { class: t.skipped ? 'skipped' : null, 'data-skipped': t.skipped ? 'true' : 'false' },
      h('td', { class: 'nowrap' }, h('time', { datetime: t.at }, (t.local || '').replace('T', ' '))),
      h('td', { class: 'nowrap' }, fmtAbsolute(t.at)),
      h('td', { class: 'nowrap' }, timeRel(t.at)),
      h('td', { class: 'num' }, `#${t.trigger + 1}`),
      h('td', null,
        t.skipped ? [h('span', { class: 'badge skip-note' }, 'skipped'), ' ', t.skipped] : null,
        t.note ? h('span', { class: 'dst-note' }, t.note) : null,
        !t.skipped && !t.note ? h('span', { class: 'muted' }, '—') : null))))), 'Next fire times');
}

function charts(runs) {
  const ordered = [...runs].sort((a, b) => toDate(a.scheduled_for) - toDate(b.scheduled_for) || a.id - b.id);
  const durations = ordered.filter((r) => r.started_at && r.finished_at).map((r) => {
    const ms = span(r.started_at, r.finished_at);
    return { t: toDate(r.scheduled_for), v: ms / 1000, cls: `state-${r.state}`, title: `Run ${r.id}: ${fmtDuration(ms)} (${r.state})` };
  });
  const lateness = ordered.filter((r) => r.started_at).map((r) => {
    const ms = span(r.scheduled_for, r.started_at);
    return { t: toDate(r.scheduled_for), v: ms / 1000, cls: `state-${r.state}`, title: `Run ${r.id}: started ${fmtDuration(ms)} after its due time` };
  });
  const longest = durations.length ? fmtDuration(1000 * Math.max(...durations.map((p) => p.v))) : null;
  const latest = lateness.length ? fmtDuration(1000 * Math.max(...lateness.map((p) => p.v))) : null;
  return [
    h('figure', { class: 'chart-box' },
      timeChart({
        label: `Run durations of the ${durations.length} listed runs${longest ? `, longest ${longest}` : ''}`,
        points: durations, kind: 'bar', yLabel: 'duration', xLabel: 'due time', yFormat: secondsTick,
      }),
      h('figcaption', null, 'Duration (finished − started)')),
    h('figure', { class: 'chart-box' },
      timeChart({
        label: `Fire lateness of the ${lateness.length} listed runs${latest ? `, most ${latest}` : ''}`,
        points: lateness, kind: 'line', yLabel: 'lateness', xLabel: 'due time', yFormat: secondsTick,
      }),
      h('figcaption', null, 'Fire lateness (started − scheduled for)')),
  ];
}

export function mountJob(main, ctx) {
  const { namespace, name } = ctx.params;
  setTitle(name, namespace);
  const operate = canOperate(ctx.session);
  const before = /^\d+$/.test(ctx.query.get('before') || '') ? Number(ctx.query.get('before')) : null;
  let view = ctx.query.get('view') === 'toml' ? 'toml' : 'json';
  const alert = alertRegion();
  const status = statusRegion();
  let alive = true;
  let left = false; // the user went to another page (`alive` also ends when the job is gone)
  let newerBefore; // undefined: not computed yet; null: the newest page

  const badges = h('span', { class: 'head-badges' });
  const actions = h('div', { class: 'page-actions' });
  const summary = h('div', { class: 'summary' });
  const nextBox = h('div', { class: 'next-box' }, h('p', { class: 'loading' }, 'Loading…'));
  const runsBox = h('div', { class: 'runs-box' }, h('p', { class: 'loading' }, 'Loading…'));
  const pager = h('nav', { class: 'pager', 'aria-label': 'Run history pages' });
  const chartsBox = h('div', { class: 'charts' });
  const defHead = h('p', { class: 'muted def-version' });
  const definition = h('pre', { class: 'definition', tabindex: 0 });
  const viewButtons = ['json', 'toml'].map((v) => h('button', {
    type: 'button', class: 'btn btn-small', 'data-view': v, onclick: () => setView(v),
  }, v.toUpperCase()));
  const defSection = h('section', { class: 'card', 'aria-labelledby': 'h-def' },
    h('div', { class: 'section-head' }, h('h2', { id: 'h-def' }, 'Definition'),
      h('div', { class: 'view-toggle', role: 'group', 'aria-label': 'Definition format' }, viewButtons)),
    defHead, definition);
  let shownJob = null; // the job whose definition is shown, drawn again when the view changes
  let lastRuns = null; // the runs of the page, for the pager's links
  const rulesBox = h('div', { class: 'notify-box' }, h('p', { class: 'loading' }, 'Loading…'));
  const deliveriesBox = h('div', { class: 'deliveries-box' }, h('p', { class: 'loading' }, 'Loading…'));
  const alertsSection = h('section', { class: 'card alerts-card', id: 'alerts', 'aria-labelledby': 'h-alerts' },
    h('div', { class: 'section-head' }, h('h2', { id: 'h-alerts' }, 'Alerts'),
      h('a', { class: 'all-alerts', href: `/alerts${qs({ namespace, job: name })}` }, 'All alerts of this job')),
    h('h3', { id: 'h-rules' }, 'Rules'),
    h('div', { 'aria-labelledby': 'h-rules', role: 'group' }, rulesBox),
    h('p', { class: 'help' }, 'Rules of the server’s configuration may send alerts about this job too.'),
    h('h3', { id: 'h-deliveries' }, `Last ${JOB_DELIVERIES} deliveries`),
    deliveriesBox);
  const live = h('div', { class: 'live', 'aria-live': 'polite' },
    h('section', { class: 'card', 'aria-labelledby': 'h-summary' }, h('h2', { id: 'h-summary', class: 'sr-only' }, 'Summary'), summary),
    h('div', { class: 'two-col' },
      h('section', { class: 'card', 'aria-labelledby': 'h-next' }, h('h2', { id: 'h-next' }, 'Next fire times'), nextBox),
      h('section', { class: 'card', 'aria-labelledby': 'h-charts' }, h('h2', { id: 'h-charts' }, 'Durations and lateness'), chartsBox)),
    h('section', { class: 'card', 'aria-labelledby': 'h-runs' }, h('h2', { id: 'h-runs' }, 'Run history'), runsBox, pager));

  main.append(
    h('nav', { class: 'breadcrumb', 'aria-label': 'Breadcrumb' },
      h('a', { href: '/' }, 'Jobs'), ' / ', h('a', { href: `/?ns=${encodeURIComponent(namespace)}` }, namespace), ' / ',
      h('span', { 'aria-current': 'page' }, name)),
    h('div', { class: 'page-head' }, h('h1', null, name), badges),
    alert.el, status.el, actions, live,
    alertsSection,
    defSection,
  );

  async function afterAction(kind, result) {
    if (left) return;
    if (kind === 'delete') {
      ctx.navigate('/');
      return;
    }
    if (kind === 'trigger' && result) {
      status.set(`Run ${result.id} queued. `, h('a', { class: 'triggered-run', href: `/runs/${result.id}` }, `Run ${result.id}`));
    } else {
      status.set(`Job ${kind === 'pause' ? 'paused' : 'resumed'}.`);
    }
    await refresh();
  }

  /** This page's URL with `before` (the view of the definition kept). */
  function pageHref(older) {
    return location.pathname + qs({ before: older ?? undefined, view: view === 'toml' ? 'toml' : undefined });
  }

  function drawPager(runs) {
    const links = [];
    if (before !== null) links.push(h('a', { class: 'btn', href: pageHref(newerBefore), rel: 'prev' }, '← Newer'));
    if (runs.length === PAGE) links.push(h('a', { class: 'btn', href: pageHref(runs[runs.length - 1].id), rel: 'next' }, 'Older →'));
    replace(pager, links);
  }

  /** The definition as JSON or TOML (the document without the server's fields). */
  function drawDefinition() {
    for (const b of viewButtons) b.setAttribute('aria-pressed', String(b.dataset.view === view));
    definition.setAttribute('aria-label', view === 'toml' ? 'Job definition (TOML, a [[jobs]] entry of a jobs file)' : 'Job definition (JSON)');
    if (!shownJob) return;
    const job = shownJob;
    const doc = Object.fromEntries(Object.entries(job).filter(([k]) => !BOOKKEEPING.has(k)));
    defHead.textContent = `Version ${job.version}, updated ${fmtAbsolute(job.updated_at)} (${BROWSER_ZONE}). Read-only.`
      + (view === 'toml' ? ' One [[jobs]] entry of a jobs file, for kairos apply -f.' : '');
    const text = view === 'toml' ? jobToml(doc) : prettyJson(doc);
    if (definition.textContent !== text) definition.textContent = text;
  }

  function setView(v) {
    if (v === view) return;
    view = v;
    ctx.setQuery({ before: before ?? '', view: view === 'toml' ? 'toml' : '' });
    drawDefinition();
    if (lastRuns) drawPager(lastRuns);
  }
  drawDefinition();

  /** The `before` of the page just newer than this one, from the newest 1000 runs. */
  async function computeNewer(firstId) {
    try {
      const newest = await api(jobPath(name, namespace, '/runs', { limit: 1000 }));
      const i = newest.findIndex((r) => r.id <= firstId);
      if (i === -1) {
        // More than 1000 runs are newer: "Newer" leads to the newest page.
        newerBefore = null;
        return;
      }
      const start = Math.max(0, i - PAGE);
      newerBefore = start === 0 ? null : newest[start - 1].id;
    } catch {
      newerBefore = null;
    }
  }

  function drawJob(job, stat) {
    setTitle(job.name, job.namespace);
    replace(badges,
      h('span', { class: 'chip' }, job.namespace),
      job.paused ? h('span', { class: 'badge paused', 'data-paused': 'true' }, 'paused') : null,
      h('span', { class: 'chip' }, `version ${job.version}`));
    if (operate) replace(actions, jobActions(job, { alert, after: afterAction, key: 'job' }));
    const last = stat && stat.recent && stat.recent[0];
    replace(summary, h('dl', { class: 'facts' },
      h('dt', null, 'Schedule'), h('dd', null, scheduleCell(job, stat)),
      h('dt', null, 'Next fire'), h('dd', null, nextFireCell(job)),
      h('dt', null, 'Last outcome'), h('dd', null, last ? [badge(last.state), ' ', timeRel(last.finished_at)] : h('span', { class: 'muted' }, '—')),
      h('dt', null, 'Task'), h('dd', null, job.steps ? `workflow of ${job.steps.length} steps` : (job.task && job.task.kind) || '—'),
      job.description ? [h('dt', null, 'Description'), h('dd', null, job.description)] : null,
      job.labels && Object.keys(job.labels).length
        ? [h('dt', null, 'Labels'), h('dd', null, Object.entries(job.labels).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`)))]
        : null,
      h('dt', null, 'Updated'), h('dd', null, timeRel(job.updated_at)),
      h('dt', null, 'Created'), h('dd', null, timeRel(job.created_at))));
    const rules = JSON.stringify(job.notify || []);
    if (rulesBox.dataset.rules !== rules) {
      rulesBox.dataset.rules = rules;
      replace(rulesBox, rulesList(job.notify));
    }
    shownJob = job;
    drawDefinition();
  }

  function gone() {
    alive = false;
    close();
    replace(actions);
    replace(live, h('p', { class: 'empty' }, `There is no job ${name} in namespace ${namespace} (it may have been deleted). `,
      h('a', { href: '/' }, 'Back to the jobs')));
    defSection.hidden = true;
    alertsSection.hidden = true;
    follow.stop();
    replace(badges);
  }

  let deliveriesSignature = null;
  const refreshAlerts = coalesce(async () => {
    try {
      const list = await api(`/alerts${qs({ namespace, job: name, limit: JOB_DELIVERIES })}`);
      if (!alive) return;
      const signature = JSON.stringify(list);
      if (signature === deliveriesSignature) return;
      deliveriesSignature = signature;
      replace(deliveriesBox, list && list.length
        ? deliveriesTable(list, { label: `Alert deliveries of ${name}, newest first` })
        : h('p', { class: 'empty' }, 'No alerts sent yet.'));
    } catch (e) {
      if (!alive || (e && e.status === 401)) return;
      deliveriesSignature = null;
      replace(deliveriesBox, h('p', { class: 'empty' }, `The alerts could not be read: ${(e && (e.detail || e.message)) || e}`));
    }
  });
  const follow = followDeliveries(() => refreshAlerts());

  const refresh = loader(async () => {
    try {
      const [job, next, runs, stats] = await Promise.all([
        api(jobPath(name, namespace)),
        api(jobPath(name, namespace, '/next', { count: 10 })).catch((e) => ({ error: e })),
        api(jobPath(name, namespace, '/runs', { limit: PAGE, before: before ?? undefined })),
        api(`/stats/jobs?namespace=${encodeURIComponent(namespace)}&job=${encodeURIComponent(name)}&runs=20`).catch(() => null),
      ]);
      if (!alive) return;
      drawJob(job, stats && stats[0]);
      if (next.error) replace(nextBox, h('p', { class: 'empty' }, next.error.detail || 'The next fire times could not be read.'));
      else if (!next.times.length) replace(nextBox, h('p', { class: 'empty' }, job.paused ? 'Paused: no due times.' : 'No due times ahead (no time triggers, or none left).'));
      else replace(nextBox, nextTable(next.times));
      if (before !== null && newerBefore === undefined && runs.length) await computeNewer(runs[0].id);
      replace(runsBox, runs.length ? runsTable(runs) : h('p', { class: 'empty' }, before !== null ? 'No older runs.' : 'No runs yet.'));
      lastRuns = runs;
      drawPager(runs);
      replace(chartsBox, charts(runs));
      return alive;
    } catch (e) {
      if (!alive) return false;
      if (e && e.status === 404) gone();
      else alert.show(e);
      return false;
    }
  });

  const close = liveEvents({ namespace, job: name, kinds: JOB_KINDS }, (events) => {
    refresh(kindsOf(events));
    follow.onEvents(events);
  }, { every: 1000 });
  refresh('initial');
  refreshAlerts();
  return () => {
    alive = false;
    left = true;
    follow.stop();
    close();
  };
}

// ==============================================================================================
// Run
// ==============================================================================================

// A run (`/runs/{id}`): state, attempts (exit code or HTTP status, signal, error, node,
// resource use), the output of the chosen attempt with a live tail while it runs, cancel and
// rerun; for a workflow run the step graph, and for the chosen step its run, output and the
// manual step actions. Page state (`?attempt=`, `?step=`) is in the URL.

const SIGNALS = {
  1: 'SIGHUP', 2: 'SIGINT', 3: 'SIGQUIT', 4: 'SIGILL', 6: 'SIGABRT', 7: 'SIGBUS', 8: 'SIGFPE', 9: 'SIGKILL',
  10: 'SIGUSR1', 11: 'SIGSEGV', 12: 'SIGUSR2', 13: 'SIGPIPE', 14: 'SIGALRM', 15: 'SIGTERM', 24: 'SIGXCPU', 25: 'SIGXFSZ',
};

/** An attempt's `status` (`exit:3`, `signal:9`, `http:503`, `timeout`, ...) as a run state and words. */
function outcome(status) {
  const [kind, n] = String(status || '').split(':');
  switch (kind) {
    case 'succeeded': return { state: 'succeeded', text: 'succeeded' };
    case 'exit': return { state: 'failed', text: `exit ${n}` };
    case 'signal': return { state: 'failed', text: `signal ${n}` };
    case 'http': return { state: 'failed', text: `HTTP ${n}` };
    case 'timeout': return { state: 'timed_out', text: 'timed out' };
    case 'cancelled': return { state: 'cancelled', text: 'cancelled' };
    case 'lost': return { state: 'lost', text: 'lost' };
    case 'running': return { state: 'running', text: 'running' };
    default: return { state: 'failed', text: status || 'error' };
  }
}

function signalOf(status) {
  const m = /^signal:(\d+)$/.exec(String(status || ''));
  if (!m) return null;
  return `${SIGNALS[m[1]] || 'signal'} (${m[1]})`;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function fmtCpu(a) {
  if (a.user_cpu_us === undefined && a.sys_cpu_us === undefined) return '—';
  const sec = (us) => (us === undefined || us === null ? '—' : `${(us / 1e6).toFixed(2)} s`);
  return `user ${sec(a.user_cpu_us)}, sys ${sec(a.sys_cpu_us)}`;
}

/** The attempts of a run, with a row for the one running now. */
function attemptsTable(run, label) {
  const rows = [...(run.attempts || [])];
  if (run.state === 'running' && !rows.some((a) => a.attempt === run.attempt)) {
    rows.push({ attempt: run.attempt, status: 'running', node: run.node, started_at: run.started_at, running: true });
  }
  if (!rows.length) return h('p', { class: 'empty' }, ACTIVE.has(run.state) ? 'No attempt has started yet.' : 'No attempts.');
  return tableWrap(h('table', { class: 'attempts' },
    h('caption', { class: 'sr-only' }, label),
    thead('Attempt', 'Outcome', 'Exit code / HTTP', 'Signal', 'Error', 'Node', 'Started', 'Duration', 'Peak memory', 'CPU', 'Output'),
    h('tbody', null, rows.map((a) => {
      const o = outcome(a.status);
      const code = a.http_status !== undefined && a.http_status !== null ? `HTTP ${a.http_status}`
        : a.exit_code !== undefined && a.exit_code !== null ? String(a.exit_code) : '—';
      return h('tr', { 'data-attempt': a.attempt },
        h('th', { scope: 'row', class: 'num' }, String(a.attempt)),
        h('td', null, h('span', { class: `badge state-${o.state}`, 'data-outcome': a.status }, o.text)),
        h('td', { class: 'num exit-code' }, code),
        h('td', null, signalOf(a.status) || '—'),
        h('td', { class: 'error-cell' }, a.error || '—'),
        h('td', null, a.node || '—'),
        h('td', null, timeRel(a.started_at)),
        h('td', { class: 'num' }, a.running ? elapsed(a.started_at) : fmtDuration(span(a.started_at, a.finished_at))),
        h('td', { class: 'num' }, a.max_rss_kib !== undefined && a.max_rss_kib !== null ? fmtBytes(a.max_rss_kib * 1024) : '—'),
        h('td', null, a.running ? '—' : fmtCpu(a)),
        h('td', { class: 'num' }, a.running ? 'live' : `${fmtBytes(a.output_bytes)}${a.output_truncated ? ' (truncated)' : ''}`));
    }))), label);
}

/**
 * A `<pre>` with a run's output: the chosen attempt's stored text, or while the run is active
 * its live tail (`follow=true`, read as it streams). `show(run, attempt)` switches only when
 * what is shown would change, so a live refresh does not restart the stream; a switch to
 * another run or attempt empties the `<pre>` first ("Loading…"), and a failure says so under
 * it. A hidden tab lets go of a live tail (browsers allow only six connections per server over
 * HTTP/1.1, shared by all tabs) and reads the output again from the start, then follows it,
 * when shown again. `reset()` empties it (another step is chosen); `dispose()` when the page
 * goes.
 */
function outputView(label, onEnded) {
  const pre = h('pre', { class: 'output', tabindex: 0, 'aria-label': label });
  const note = h('p', { class: 'output-note muted' });
  let mode = null; // what is shown or being fetched (a change of it fetches again)
  let target = null; // which run and attempt the <pre> holds
  let controller = null;
  let wanted = null; // the last `show` arguments, to follow again when the tab is shown
  let suspended = false; // a live tail let go while the tab is hidden
  const atBottom = () => pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24;
  const abort = () => {
    if (controller) controller.abort();
    controller = null;
  };
  const failed = (e) => `The output could not be read: ${(e && (e.detail || e.message)) || e}`;
  const show = (run, attempt) => {
    wanted = [run, attempt];
    const active = ACTIVE.has(run.state);
    const latest = attempt === null || (active && attempt === run.attempt);
    const follow = active && latest;
    const stamp = follow ? `follow:${run.id}` : `static:${run.id}:${latest ? 'latest' : attempt}:${run.state}:${(run.attempts || []).length}`;
    if (stamp === mode) return;
    const into = `${run.id}:${latest ? 'latest' : attempt}`;
    const switched = into !== target;
    abort();
    target = into;
    if (switched) pre.textContent = '';
    if (follow && document.hidden) {
      mode = null;
      suspended = true;
      note.textContent = 'The live output resumes when this tab is shown again.';
      return;
    }
    suspended = false;
    mode = stamp;
    controller = new AbortController();
    const { signal } = controller;
    if (follow) {
      pre.textContent = '';
      note.textContent = run.state === 'running' ? 'Following the output live…' : 'Waiting for the run to start…';
      streamText(`/runs/${run.id}/output?follow=true`, (text) => {
        const stick = atBottom();
        pre.append(document.createTextNode(text));
        if (stick) pre.scrollTop = pre.scrollHeight;
      }, { signal }).then(() => {
        if (signal.aborted || mode !== stamp) return;
        mode = null;
        note.textContent = '';
        onEnded();
      }, (e) => {
        if (signal.aborted || (e && e.name === 'AbortError')) return;
        if (mode === stamp) mode = null;
        note.textContent = failed(e);
      });
    } else {
      note.textContent = switched ? 'Loading…' : '';
      apiText(`/runs/${run.id}/output${latest ? '' : `?attempt=${attempt}`}`, { signal }).then((text) => {
        if (signal.aborted) return;
        note.textContent = '';
        pre.textContent = text;
        pre.scrollTop = pre.scrollHeight;
      }, (e) => {
        if (signal.aborted || (e && e.name === 'AbortError')) return;
        if (mode === stamp) mode = null;
        note.textContent = failed(e);
      });
    }
  };
  const stop = () => {
    abort();
    mode = null;
    suspended = false;
  };
  const reset = () => {
    stop();
    wanted = null;
    target = null;
    pre.textContent = '';
    note.textContent = 'Loading…';
  };
  const onVisibility = () => {
    if (document.hidden) {
      if (mode && mode.startsWith('follow:')) {
        abort();
        mode = null;
        suspended = true;
        note.textContent = 'The live output resumes when this tab is shown again.';
      }
    } else if (suspended && wanted) {
      suspended = false;
      target = null; // read again from the start
      show(...wanted);
    }
  };
  document.addEventListener('visibilitychange', onVisibility);
  const dispose = () => {
    stop();
    document.removeEventListener('visibilitychange', onVisibility);
  };
  return { el: h('div', { class: 'output-box' }, note, pre), show, stop, reset, dispose };
}

function facts(run) {
  const rows = [
    ['Namespace', run.namespace],
    ['Origin', run.origin],
    ['Scheduled for', timeRel(run.scheduled_for)],
    ['Started', timeRel(run.started_at)],
    ['Finished', timeRel(run.finished_at)],
    ['Duration', !run.started_at ? '—' : run.finished_at ? fmtDuration(span(run.started_at, run.finished_at))
      : run.state === 'running' ? elapsed(run.started_at) : '—'],
    ['Attempt', `${run.attempt} of ${run.max_attempts}`],
  ];
  if (run.node) rows.push(['Node', run.node]);
  if (run.exit_code !== undefined) rows.push(['Exit code', String(run.exit_code)]);
  if (run.reason) rows.push(['Reason', run.reason]);
  if (run.cancel_requested) rows.push(['Cancel', 'requested']);
  if (run.upstream_run_id) rows.push(['After run', h('a', { href: `/runs/${run.upstream_run_id}` }, `Run ${run.upstream_run_id}`)]);
  if (run.event) rows.push(['Event', `${run.event.topic} (id ${run.event.id})`]);
  if (run.report) {
    const p = run.report.progress;
    rows.push(['Progress', [
      p !== undefined && p !== null ? h('progress', { max: 1, value: p, 'aria-label': 'Progress' }) : null,
      p !== undefined && p !== null ? ` ${Math.round(p * 100)}% ` : '',
      run.report.message || '',
      run.report.has_checkpoint ? ' (checkpoint kept)' : '']]);
  }
  return h('dl', { class: 'facts' }, rows.map(([k, ...v]) => [h('dt', null, k), h('dd', null, v)]));
}

export function mountRun(main, ctx) {
  const id = Number(ctx.params.id);
  setTitle(`Run ${id}`);
  const operate = canOperate(ctx.session);
  const alert = alertRegion();
  const status = statusRegion();
  let alive = true;
  let run = null;
  let stepRun = null;
  let attempt = /^\d+$/.test(ctx.query.get('attempt') || '') ? Number(ctx.query.get('attempt')) : null;
  let step = ctx.query.get('step') || null;
  let close = () => {};

  const crumbs = h('nav', { class: 'breadcrumb', 'aria-label': 'Breadcrumb' }, h('a', { href: '/' }, 'Jobs'));
  const headBadge = h('span', { class: 'head-badges' });
  const subline = h('p', { class: 'subline' });
  const actions = h('div', { class: 'page-actions' });
  const summary = h('div');
  const stepsSection = h('section', { class: 'card', 'aria-labelledby': 'h-steps', hidden: true });
  const dagBox = h('div', { class: 'dag-wrap', role: 'region', 'aria-label': 'Step graph', tabindex: -1 });
  const stepPanel = h('div', { class: 'step-panel' });
  const attemptsBox = h('div');
  const attemptsSection = h('section', { class: 'card', 'aria-labelledby': 'h-attempts' }, h('h2', { id: 'h-attempts' }, 'Attempts'), attemptsBox);
  const attemptSelect = h('select', { id: 'attempt-select' });
  const outputSection = h('section', { class: 'card', 'aria-labelledby': 'h-output' });

  const refreshSoon = () => refresh('output.ended');
  const output = outputView('Output', refreshSoon);
  const stepOutput = outputView('Step output', refreshSoon);

  stepsSection.append(h('h2', { id: 'h-steps' }, 'Steps'),
    h('p', { class: 'help' }, 'Select a step (click, or Enter) to see its run, output and actions.'),
    dagBox, stepPanel);
  outputSection.append(
    h('div', { class: 'section-head' }, h('h2', { id: 'h-output' }, 'Output'),
      h('div', { class: 'field inline' }, h('label', { for: 'attempt-select' }, 'Attempt'), attemptSelect)),
    output.el);
  attemptSelect.addEventListener('change', () => {
    attempt = attemptSelect.value ? Number(attemptSelect.value) : null;
    saveQuery();
    if (run) output.show(run, attempt);
  });

  main.append(crumbs,
    h('div', { class: 'page-head' }, h('h1', null, `Run ${id}`), headBadge),
    subline, alert.el, status.el, actions,
    h('div', { class: 'live', 'aria-live': 'polite' },
      h('section', { class: 'card', 'aria-labelledby': 'h-summary' }, h('h2', { id: 'h-summary', class: 'sr-only' }, 'Summary'), summary),
      stepsSection,
      attemptsSection),
    outputSection);

  function saveQuery() {
    ctx.setQuery({ attempt: attempt ?? '', step: step ?? '' });
  }

  async function act(button, fn, done) {
    button.disabled = true;
    alert.clear();
    try {
      const result = await fn();
      if (alive) await done(result);
    } catch (e) {
      if (alive) alert.show(e);
    } finally {
      button.disabled = false;
    }
  }

  function button(label, cls, onclick, key) {
    return h('button', { type: 'button', class: `btn ${cls}`, 'data-focus-key': key || label, onclick }, label);
  }

  function drawActions() {
    if (!operate) return;
    const list = [];
    const active = ACTIVE.has(run.state);
    if (active && run.parent_id && run.state === 'scheduled') {
      // A step waiting for its upstream steps cannot be cancelled (the server answers 409).
      list.push(h('span', { class: 'muted' }, 'Waiting for its upstream steps'));
    } else if (active && !run.cancel_requested) {
      list.push(button('Cancel run', 'btn-danger-outline', (e) => act(e.currentTarget,
        () => api(`/runs/${run.id}/cancel`, { method: 'POST' }),
        async () => { status.set(`Cancel of run ${run.id} asked.`); await refresh(); })));
    } else if (active) {
      list.push(h('span', { class: 'muted' }, 'Cancel requested…'));
    }
    if (!active) {
      const failedSteps = (run.steps || []).some((st) => FAILED.has(st.state));
      if (run.parent_id && run.step) {
        list.push(button('Rerun step', 'btn-primary', (e) => act(e.currentTarget,
          () => api(`/runs/${run.parent_id}/steps/${encodeURIComponent(run.step)}/rerun`, { method: 'POST' }),
          async () => { status.set(`Step ${run.step} runs again.`); await refresh(); })));
      } else if (run.steps && failedSteps) {
        list.push(button('Rerun failed steps', 'btn-primary', (e) => act(e.currentTarget,
          () => api(`/runs/${run.id}/rerun-failed`, { method: 'POST' }),
          async () => { status.set('The failed steps run again.'); await refresh(); })));
      } else {
        list.push(button('Rerun', 'btn-primary', (e) => act(e.currentTarget,
          () => api(jobPath(run.job, run.namespace, '/trigger'), { method: 'POST', body: run.params ? { params: run.params } : {} }),
          (r) => ctx.navigate(`/runs/${r.id}`))));
      }
    }
    replace(actions, h('div', { class: 'actions' }, list));
  }

  function drawAttemptSelect() {
    const n = Math.max(run.attempt || 0, ...(run.attempts || []).map((a) => a.attempt), 0);
    const wanted = JSON.stringify([n, attempt]);
    if (attemptSelect.dataset.key === wanted) return;
    attemptSelect.dataset.key = wanted;
    const opts = [h('option', { value: '', selected: attempt === null }, 'Latest')];
    for (let i = 1; i <= n; i += 1) opts.push(h('option', { value: String(i), selected: attempt === i }, `Attempt ${i}`));
    attemptSelect.replaceChildren(...opts);
    attemptSelect.value = attempt === null ? '' : String(attempt);
  }

  function selectStep(name) {
    step = step === name ? null : name;
    saveQuery();
    stepRun = null;
    stepOutput.reset();
    drawSteps();
    refresh();
  }

  function stepActions(st) {
    if (!operate) return null;
    const list = [];
    const path = (what) => `/runs/${run.id}/steps/${encodeURIComponent(st.step)}/${what}`;
    const done = (text) => async () => { status.set(text); await refresh(); };
    if (st.state === 'scheduled' || st.state === 'queued') {
      list.push(button('Skip', '', (e) => act(e.currentTarget, () => api(path('skip'), { method: 'POST' }), done(`Step ${st.step} skipped.`)), `skip:${st.step}`));
    }
    if (st.state !== 'running' && st.state !== 'succeeded') {
      list.push(button('Mark succeeded', '', (e) => act(e.currentTarget, () => api(path('mark-succeeded'), { method: 'POST' }), done(`Step ${st.step} marked succeeded.`)), `mark:${st.step}`));
    }
    if (!ACTIVE.has(st.state)) {
      list.push(button('Rerun step', 'btn-primary', (e) => act(e.currentTarget, () => api(path('rerun'), { method: 'POST' }), done(`Step ${st.step} runs again.`)), `rerun:${st.step}`));
    }
    return list.length ? h('div', { class: 'actions' }, list) : null;
  }

  function drawSteps() {
    if (!run.steps) {
      stepsSection.hidden = true;
      return;
    }
    stepsSection.hidden = false;
    replace(dagBox, dagChart(run.steps, { selected: step, onSelect: selectStep, label: `Steps of run ${run.id}` }));
    const st = run.steps.find((x) => x.step === step);
    if (!st) {
      replace(stepPanel);
      return;
    }
    const sr = stepRun && stepRun.id === st.run_id ? stepRun : null;
    replace(stepPanel,
      h('div', { class: 'step-head' }, h('h3', { id: 'h-step' }, `Step ${st.step}`), badge(st.state, 'step-state')),
      h('dl', { class: 'facts' },
        h('dt', null, 'Step run'), h('dd', null, h('a', { href: `/runs/${st.run_id}` }, `Run ${st.run_id}`)),
        h('dt', null, 'Depends on'), h('dd', null, st.depends_on && st.depends_on.length ? st.depends_on.join(', ') : '—'),
        h('dt', null, 'Trigger rule'), h('dd', null, st.trigger_rule || 'all_success'),
        h('dt', null, 'Attempt'), h('dd', null, `${st.attempt} of ${st.max_attempts}`),
        h('dt', null, 'Started'), h('dd', null, timeRel(st.started_at)),
        h('dt', null, 'Duration'), h('dd', null, !st.started_at ? '—' : st.finished_at ? fmtDuration(span(st.started_at, st.finished_at))
          : st.state === 'running' ? elapsed(st.started_at) : '—'),
        st.exit_code !== undefined ? [h('dt', null, 'Exit code'), h('dd', null, String(st.exit_code))] : null,
        st.reason ? [h('dt', null, 'Reason'), h('dd', null, st.reason)] : null),
      stepActions(st),
      h('h4', null, 'Attempts'),
      sr ? attemptsTable(sr, `Attempts of step ${st.step}`) : h('p', { class: 'loading' }, 'Loading…'),
      h('h4', null, 'Output'),
      stepOutput.el);
    if (sr) stepOutput.show(sr, null);
  }

  function draw() {
    setTitle(`Run ${run.id}`, run.job);
    replace(crumbs, h('a', { href: '/' }, 'Jobs'), ' / ',
      h('a', { href: `/jobs/${encodeURIComponent(run.namespace)}/${encodeURIComponent(run.job)}` }, run.job), ' / ',
      h('span', { 'aria-current': 'page' }, `Run ${run.id}`));
    replace(headBadge, badge(run.state, 'run-state'));
    replace(subline,
      'Job ', h('a', { class: 'job-link', href: `/jobs/${encodeURIComponent(run.namespace)}/${encodeURIComponent(run.job)}` }, run.job),
      run.parent_id ? [' · step ', h('strong', null, run.step || '?'), ' of workflow ',
        h('a', { class: 'parent-link', href: `/runs/${run.parent_id}?step=${encodeURIComponent(run.step || '')}` }, `Run ${run.parent_id}`)] : null);
    drawActions();
    replace(summary, facts(run),
      run.params ? [h('h3', null, 'Parameters'), h('pre', { class: 'json' }, prettyJson(run.params))] : null,
      run.result ? [h('h3', null, 'Result'), h('pre', { class: 'json' }, prettyJson(run.result))] : null,
      run.event && run.event.payload !== undefined ? [h('h3', null, 'Event payload'), h('pre', { class: 'json' }, prettyJson(run.event.payload))] : null);
    drawSteps();
    attemptsSection.hidden = Boolean(run.steps) && !(run.attempts && run.attempts.length);
    replace(attemptsBox, attemptsTable(run, `Attempts of run ${run.id}`));
    outputSection.hidden = Boolean(run.steps) && !(run.attempts && run.attempts.length);
    if (!outputSection.hidden) {
      drawAttemptSelect();
      output.show(run, attempt);
    }
  }

  const refresh = loader(async () => {
    try {
      const r = await api(`/runs/${id}`);
      if (!alive) return;
      run = r;
      const st = step && run.steps ? run.steps.find((x) => x.step === step) : null;
      if (st) {
        stepRun = await api(`/runs/${st.run_id}`);
        if (!alive) return;
      } else {
        stepRun = null;
      }
      draw();
      startLive();
      return true;
    } catch (e) {
      if (!alive) return false;
      if (e && e.status === 404 && !run) {
        replace(main, h('h1', null, `Run ${id}`),
          h('p', { class: 'empty' }, `There is no run ${id} (or it was deleted with its job). `, h('a', { href: '/' }, 'Back to the jobs')));
        return false;
      }
      alert.show(e);
      return false;
    }
  });

  let liveFor = null;
  function startLive() {
    const k = `${run.namespace}\u0000${run.job}`;
    if (liveFor === k) return;
    liveFor = k;
    close();
    close = liveEvents({ namespace: run.namespace, job: run.job, kinds: RUN_KINDS }, (events) => refresh(kindsOf(events)), { every: 300 });
  }

  refresh('initial');
  return () => {
    alive = false;
    close();
    output.dispose();
    stepOutput.dispose();
  };
}

// ==============================================================================================
// Alerts
// ==============================================================================================

// Alert deliveries (`GET /alerts`): a job's rules in words and its last deliveries on its page,
// and every delivery the session may see on `/alerts` (filters by state, namespace and job in
// the query string, paging with `?before=`). Deliveries have no events of their own: the pages
// read them again after the events that may queue one (a run's end, rescued runs, a skipped due
// time), once more a moment later (the leader queues them just after), and every 5 s while the
// tab is shown (to see them sent).

/** What raised a delivery, in words (the `alert` code stays in `data-alert`). */
const ALERT_WORDS = {
  failure: 'failure',
  failures: 'failures in a row',
  timeout: 'timeout',
  lost: 'lost',
  recovery: 'recovery',
  skipped: 'skipped',
  no_success: 'no success',
  sla_start: 'late start (SLA)',
  sla_finish: 'late finish (SLA)',
};

/** The states of a delivery, with what they mean. */
const DELIVERY_STATES = [
  ['pending', 'Pending (waiting for an attempt)'],
  ['sending', 'Sending'],
  ['delivered', 'Delivered'],
  ['failed', 'Failed (given up)'],
];

/** How many deliveries the job page shows, and the `/alerts` page per page. */
const JOB_DELIVERIES = 20;
const ALERTS_PAGE = 50;

/** The condition of a rule of a job's `notify`, in words: `After 3 failures in a row`. */
export function ruleCondition(rule) {
  switch (rule.on) {
    case 'failure': return 'On failure';
    case 'failures': return `After ${rule.count ?? 'N'} failures in a row`;
    case 'timeout': return 'On timeout';
    case 'lost': return 'When a run is lost';
    case 'recovery': return 'On recovery';
    case 'skipped': return 'When a due time is skipped';
    case 'no_success': return `No success within ${rule.within || '?'}`;
    case 'sla': {
      const parts = [];
      if (rule.start_within) parts.push(`Not started within ${rule.start_within}`);
      if (rule.finish_within) parts.push(`${parts.length ? 'not' : 'Not'} finished within ${rule.finish_within}`);
      return parts.length ? `${parts.join(' / ')} of its due time` : 'Late (SLA)';
    }
    default: return `On ${rule.on}`;
  }
}

/** A rule in words: `After 3 failures in a row → pager`. */
export function ruleWords(rule) {
  return `${ruleCondition(rule)} → ${(rule.channels || []).join(', ')}`;
}

/** A job's `notify` as a list of rules in words, or "No alert rules". */
function rulesList(notify) {
  if (!notify || !notify.length) return h('p', { class: 'empty notify-none' }, 'No alert rules');
  return h('ul', { class: 'notify-rules' }, notify.map((r, i) => h('li', { 'data-on': r.on, 'data-rule': `notify[${i}]` },
    ruleCondition(r), ' → ', h('span', { class: 'channels' }, (r.channels || []).join(', ')))));
}

function alertText(d) {
  const count = d.document && d.document.count;
  if (d.alert === 'failures' && count) return `${count} failures in a row`;
  return ALERT_WORDS[d.alert] || String(d.alert || '?').replace(/_/g, ' ');
}

/** The last attempt's HTTP status and error, and when a pending delivery is tried next. */
function deliveryOutcome(d) {
  const parts = [];
  const status = d.last_status !== undefined && d.last_status !== null ? `HTTP ${d.last_status}` : null;
  // The error of an HTTP answer usually names its status already ("HTTP 500: ...").
  if (status && !(d.last_error && d.last_error.includes(status))) parts.push(h('span', { class: 'http-status' }, status));
  if (d.last_error) {
    if (parts.length) parts.push(': ');
    parts.push(h('span', { class: 'delivery-error' }, d.last_error));
  }
  if (d.state === 'pending') parts.push(h('div', { class: 'sub' }, d.attempts ? 'next attempt ' : 'first attempt ', timeRel(d.next_attempt_at)));
  return parts.length ? parts : h('span', { class: 'muted' }, '—');
}

function jobHref(namespace, job) {
  return `/jobs/${encodeURIComponent(namespace)}/${encodeURIComponent(job)}`;
}

/**
 * A table of deliveries, newest first; `all` adds the job and the summary (the `/alerts`
 * page). Each row is `<tr data-delivery data-alert data-state data-job data-namespace>`, its
 * state a badge like a run's (`.badge.delivery-state[data-state]`).
 */
function deliveriesTable(list, { all = false, label }) {
  const cols = ['When'];
  if (all) cols.push('Job');
  cols.push('Alert', 'Channel', 'State', 'Attempts', 'Last error / status', 'Run');
  if (all) cols.push('Summary');
  return tableWrap(h('table', { class: ['deliveries', all ? 'deliveries-all' : null] },
    h('caption', { class: 'sr-only' }, label),
    thead(...cols),
    h('tbody', null, list.map((d) => h('tr', {
      'data-delivery': d.id, 'data-alert': d.alert, 'data-state': d.state, 'data-job': d.job, 'data-namespace': d.namespace,
    },
    h('th', { scope: 'row', class: 'nowrap' }, timeRel(d.created_at)),
    all ? h('td', { class: 'job-cell' },
      h('a', { class: 'job-link', href: jobHref(d.namespace, d.job), 'data-focus-key': `delivery:${d.id}:job` }, d.job),
      h('div', { class: 'sub' }, d.namespace)) : null,
    h('td', null, h('span', { class: 'delivery-alert', 'data-alert': d.alert, title: d.alert }, alertText(d))),
    h('td', null, h('code', { class: 'channel' }, d.channel)),
    h('td', null, badge(d.state, 'delivery-state')),
    h('td', { class: 'num' }, String(d.attempts)),
    h('td', { class: 'error-cell' }, deliveryOutcome(d)),
    h('td', { class: 'nowrap' }, d.run_id !== undefined && d.run_id !== null
      ? h('a', { class: 'run-link', href: `/runs/${d.run_id}`, 'data-focus-key': `delivery:${d.id}:run` }, `Run ${d.run_id}`)
      : h('span', { class: 'muted' }, '—')),
    all ? h('td', { class: 'summary-cell' }, (d.document && d.document.summary) || '') : null)))), label);
}

/**
 * Keeps deliveries current: `onEvents(events)` reads them again (`fetch(cause)`) after an event
 * that may queue one, or a (re)connection of the stream, and once more 1.5 s after the last such
 * event; a timer reads them every 5 s while the tab is shown. `stop()` when the page goes.
 */
function followDeliveries(fetch) {
  let later = null;
  const timer = setInterval(() => {
    if (!document.hidden) fetch('timer');
  }, 5000);
  return {
    onEvents(events) {
      const kinds = kindsOf(events);
      const queued = kinds.some((k) => ALERT_KINDS.includes(k));
      // `open`, `reset`, `events.dropped`, `disconnected`: what happened meanwhile is unknown.
      if (!queued && !kinds.some((k) => !JOB_KINDS.includes(k))) return;
      fetch(kinds);
      if (queued) {
        clearTimeout(later);
        later = setTimeout(() => fetch('later'), 1500);
      }
    },
    stop() {
      clearInterval(timer);
      clearTimeout(later);
    },
  };
}

/** The `/alerts` link of some filters: `alertsHref({state: 'failed'})` → `/alerts?state=failed`. */
function alertsHref(params) {
  return `/alerts${qs(params)}`;
}

export function mountAlerts(main, ctx) {
  setTitle('Alerts');
  const alert = alertRegion();
  const states = new Set(DELIVERY_STATES.map(([v]) => v));
  const f = {
    state: states.has(ctx.query.get('state')) ? ctx.query.get('state') : '',
    namespace: ctx.query.get('namespace') || '',
    job: ctx.query.get('job') || '',
  };
  let before = /^\d+$/.test(ctx.query.get('before') || '') ? Number(ctx.query.get('before')) : null;
  let newerBefore; // undefined: not computed yet; null: the newest page
  let alive = true;
  let lastSignature = null;
  let list = null;
  let jobNamespaces = [];

  const count = h('p', { class: 'count muted' });
  const stateSelect = h('select', { id: 'f-alert-state' },
    h('option', { value: '' }, 'All states'),
    DELIVERY_STATES.map(([v, text]) => h('option', { value: v, selected: v === f.state }, text)));
  stateSelect.value = f.state;
  const nsSelect = h('select', { id: 'f-alert-ns' });
  const jobFilter = h('div', { class: 'field job-filter' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter alerts', onsubmit: (e) => e.preventDefault() },
    h('div', { class: 'field' }, h('label', { for: 'f-alert-state' }, 'State'), stateSelect),
    h('div', { class: 'field' }, h('label', { for: 'f-alert-ns' }, 'Namespace'), nsSelect),
    jobFilter);
  const live = h('section', { class: 'live', 'aria-live': 'polite', 'aria-label': 'Alert deliveries' },
    h('p', { class: 'loading' }, 'Loading alerts…'));
  const pager = h('nav', { class: 'pager', 'aria-label': 'Alert pages' });

  main.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Alerts'), count),
    h('p', { class: 'help' }, 'Alerts sent by the rules of jobs (their ', h('code', null, 'notify'),
      ') and of the server’s configuration, one delivery per channel, newest first.'),
    alert.el, form, live, pager);

  /** The query of the page (without `before` unless asked). */
  function params(extra = {}) {
    return { state: f.state, namespace: f.namespace, job: f.job, ...extra };
  }

  function drawJobFilter() {
    if (!f.job) {
      replace(jobFilter);
      jobFilter.hidden = true;
      return;
    }
    jobFilter.hidden = false;
    replace(jobFilter,
      h('span', { class: 'field-label' }, 'Job'),
      h('span', { class: 'chip job-chip' },
        h('a', { href: jobHref(f.namespace || 'default', f.job) }, `${f.namespace || 'default'}/${f.job}`), ' ',
        h('a', { class: 'clear-job', href: alertsHref(params({ job: '' })), 'aria-label': `Show the alerts of every job, not only ${f.job}` }, 'all jobs')));
  }

  function namespaceOptions() {
    const scoped = ctx.session && ctx.session.namespaces && !ctx.session.namespaces.includes('*');
    const names = new Set(scoped ? ctx.session.namespaces : jobNamespaces);
    for (const d of list || []) names.add(d.namespace);
    if (f.namespace) names.add(f.namespace);
    const sorted = [...names].sort();
    const wanted = JSON.stringify(sorted);
    if (nsSelect.dataset.options !== wanted) {
      nsSelect.dataset.options = wanted;
      replace(nsSelect,
        h('option', { value: '' }, 'All namespaces'),
        sorted.map((n) => h('option', { value: n, selected: n === f.namespace }, n)));
    }
    nsSelect.value = f.namespace;
  }

  const onFilter = () => {
    const ns = nsSelect.value;
    if (ns !== f.namespace) f.job = ''; // a job is named within its namespace
    f.namespace = ns;
    f.state = stateSelect.value;
    before = null;
    newerBefore = undefined;
    ctx.setQuery(params(), { push: true });
    drawJobFilter();
    refresh('filter');
  };
  stateSelect.addEventListener('change', onFilter);
  nsSelect.addEventListener('change', onFilter);

  function drawPager() {
    const links = [];
    if (before !== null) {
      links.push(h('a', { class: 'btn', href: alertsHref(params({ before: newerBefore ?? '' })), rel: 'prev' }, '← Newer'));
    }
    if (list.length === ALERTS_PAGE) {
      links.push(h('a', { class: 'btn', href: alertsHref(params({ before: list[list.length - 1].id })), rel: 'next' }, 'Older →'));
    }
    replace(pager, links);
  }

  /** The `before` of the page just newer than this one, from the newest 1000 deliveries. */
  async function computeNewer(firstId) {
    try {
      const newest = await api(`/alerts${qs(params({ limit: 1000 }))}`);
      const i = newest.findIndex((d) => d.id <= firstId);
      if (i === -1) {
        newerBefore = null;
        return;
      }
      const start = Math.max(0, i - ALERTS_PAGE);
      newerBefore = start === 0 ? null : newest[start - 1].id;
    } catch {
      newerBefore = null;
    }
  }

  function draw() {
    namespaceOptions();
    const n = list.length;
    count.textContent = `${n}${n === ALERTS_PAGE ? '+' : ''} deliver${n === 1 ? 'y' : 'ies'}${before !== null ? ' (older page)' : ''}`;
    const signature = JSON.stringify([list, before, newerBefore]);
    if (signature === lastSignature) return;
    lastSignature = signature;
    drawPager();
    if (!n) {
      const filtered = f.state || f.namespace || f.job;
      replace(live, h('p', { class: 'empty' }, before !== null ? 'No older alerts.'
        : filtered ? 'No alert matches these filters.'
          : ['No alerts yet. Jobs raise them with the rules of their ', h('code', null, 'notify'), ', sent to the channels of the server’s configuration.']));
      return;
    }
    replace(live, deliveriesTable(list, { all: true, label: 'Alert deliveries, newest first' }));
  }

  const refresh = loader(async () => {
    try {
      const got = await api(`/alerts${qs(params({ limit: ALERTS_PAGE, before: before ?? '' }))}`);
      if (!alive) return false;
      list = got || [];
      if (before !== null && newerBefore === undefined && list.length) await computeNewer(list[0].id);
      if (!alive) return false;
      alert.clear();
      draw();
      return true;
    } catch (e) {
      if (!alive) return false;
      alert.show(e);
      if (list === null) replace(live, h('p', { class: 'empty' }, 'The alerts could not be loaded.'));
      return false;
    }
  });

  // The namespaces to filter by: those of the jobs the session sees (once; the list of
  // deliveries adds its own).
  api('/jobs').then((jobs) => {
    if (!alive) return;
    jobNamespaces = [...new Set((jobs || []).map((j) => j.namespace))];
    if (list !== null) namespaceOptions();
  }, () => {});

  namespaceOptions();
  drawJobFilter();
  const follow = followDeliveries(refresh);
  const close = liveEvents({ kinds: ALERT_KINDS }, (events) => follow.onEvents(events));
  refresh('initial');
  return () => {
    alive = false;
    follow.stop();
    close();
  };
}

// ==============================================================================================
// Nodes
// ==============================================================================================

// The nodes of the cluster (`/nodes`): address, version, start, last heartbeat, running
// attempts, and which one leads in which term. Live on node and leader events, and every 5 s
// (heartbeats are not events).

export function mountNodes(main) {
  setTitle('Nodes');
  const alert = alertRegion();
  let alive = true;
  let lastSignature = null;
  const count = h('p', { class: 'count muted' });
  const live = h('section', { class: 'live', 'aria-live': 'polite', 'aria-label': 'Nodes' }, h('p', { class: 'loading' }, 'Loading nodes…'));
  main.append(h('div', { class: 'page-head' }, h('h1', null, 'Nodes'), count), alert.el, live);

  function draw(nodes) {
    const leader = nodes.find((n) => n.leader);
    count.textContent = `${nodes.length} node${nodes.length === 1 ? '' : 's'}${leader ? `, leader ${leader.name} in term ${leader.term}` : ', no leader'}`;
    const signature = JSON.stringify(nodes);
    if (signature === lastSignature) return;
    lastSignature = signature;
    if (!nodes.length) {
      replace(live, h('p', { class: 'empty' }, 'No node has reported itself yet.'));
      return;
    }
    replace(live, tableWrap(h('table', { class: 'nodes' },
      h('caption', { class: 'sr-only' }, 'Nodes of the cluster'),
      thead('Name', 'Leader', 'ID', 'Address', 'Version', 'Started', 'Last heartbeat', 'Running attempts'),
      h('tbody', null, nodes.map((n) => h('tr', { 'data-node': n.name, 'data-leader': n.leader ? 'true' : 'false' },
        h('th', { scope: 'row' }, n.name, n.this_node ? h('span', { class: 'chip', title: 'The node answering this page' }, 'this node') : null),
        h('td', null, n.leader
          ? [h('span', { class: 'badge leader', 'data-leader': 'true' }, 'leader'), ' ', h('span', { class: 'term' }, `term ${n.term}`)]
          : h('span', { class: 'muted', 'data-leader': 'false' }, 'no')),
        h('td', null, h('code', { class: 'node-id', title: n.id }, n.id)),
        h('td', null, n.address || h('span', { class: 'muted' }, '—')),
        h('td', null, n.version),
        h('td', null, timeRel(n.started_at)),
        h('td', null, timeRel(n.last_heartbeat, { seconds: true })),
        h('td', { class: 'num' }, String(n.running_attempts)))))), 'Nodes table'));
  }

  const refresh = loader(async () => {
    try {
      const nodes = await api('/nodes');
      if (!alive) return false;
      alert.clear();
      draw(nodes || []);
      return true;
    } catch (e) {
      if (alive) alert.show(e);
      return false;
    }
  });

  const close = liveEvents({ kinds: NODE_KINDS }, (events) => refresh(kindsOf(events)));
  const timer = setInterval(() => refresh('timer'), 5000);
  refresh('initial');
  return () => {
    alive = false;
    clearInterval(timer);
    close();
  };
}
