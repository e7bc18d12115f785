// The JSON API under /api/v1 (same origin; the session cookie goes along by itself), its
// problem+json errors, streamed text (a run's output) and the server-sent event stream.

const BASE = '/api/v1';

/** An error answer of the API: `detail` is what the user reads. */
export class ApiError extends Error {
  constructor(status, problem) {
    const detail = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
    super(detail);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem || null;
    this.detail = detail;
  }
}

let unauthorized = () => {};

/** Called when an API call answers 401 (the session ended): the app goes to the login page. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** A query string from an object, leaving out empty values: `{a: 1, b: ''}` → `?a=1`. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** The path of a job's route: `jobPath('a b', 'ns', '/runs')` → `/jobs/a%20b/runs?namespace=ns`. */
export function jobPath(name, namespace, suffix = '', params = {}) {
  return `/jobs/${encodeURIComponent(name)}${suffix}${qs({ namespace, ...params })}`;
}

async function problemOf(response) {
  const type = response.headers.get('content-type') || '';
  if (type.includes('json')) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }
  const text = await response.text().catch(() => '');
  return text ? { detail: text.slice(0, 500) } : null;
}

/**
 * Calls the API: `path` is under /api/v1. POST and PUT always send a JSON body (`{}` when
 * there is nothing), as the server refuses other content types. Answers the parsed JSON, or
 * null for an empty answer; throws an ApiError with the problem's detail otherwise.
 */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' }, signal };
  if (method === 'POST' || method === 'PUT') {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, { detail: 'The server cannot be reached; check that it is running.' });
  }
  if (!response.ok) {
    const problem = await problemOf(response);
    if (response.status === 401 && !path.startsWith('/session')) unauthorized();
    throw new ApiError(response.status, problem);
  }
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  if (type.includes('json')) return response.json();
  const text = await response.text();
  return text === '' ? null : text;
}

/** GET of a text resource (a run's output). */
export async function apiText(path, { signal } = {}) {
  const response = await fetch(BASE + path, { credentials: 'same-origin', signal });
  if (!response.ok) {
    const problem = await problemOf(response);
    if (response.status === 401) unauthorized();
    throw new ApiError(response.status, problem);
  }
  return response.text();
}

/**
 * Reads a streamed text answer (`?follow=true`), calling `onText` with each piece as it comes;
 * resolves when the stream ends (the run finished) and rejects with an AbortError when `signal`
 * aborts.
 */
export async function streamText(path, onText, { signal } = {}) {
  const response = await fetch(BASE + path, { credentials: 'same-origin', signal });
  if (!response.ok) {
    const problem = await problemOf(response);
    if (response.status === 401) unauthorized();
    throw new ApiError(response.status, problem);
  }
  if (!response.body) {
    onText(await response.text());
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const text = decoder.decode(value, { stream: true });
    if (text) onText(text);
  }
  const rest = decoder.decode();
  if (rest) onText(rest);
}

/** Every kind the event stream sends that is about jobs and runs. */
export const JOB_KINDS = [
  'job.changed', 'run.queued', 'run.skipped', 'run.started', 'run.retrying', 'run.finished',
  'run.released', 'run.changed', 'runs.rescued',
];
/**
 * The kinds that change what the jobs list shows: a run starting or being retried changes
 * neither a job, its next fire time nor its ended runs.
 */
export const LIST_KINDS = JOB_KINDS.filter((k) => k !== 'run.started' && k !== 'run.retrying');
export const RUN_KINDS = JOB_KINDS.filter((k) => k.startsWith('run'));
export const NODE_KINDS = ['leader.changed', 'node.joined', 'node.left', 'nodes.expired'];
/**
 * The kinds after which alert deliveries may have been queued (a run's end, runs rescued after
 * a node died, a skipped due time). Deliveries have no events of their own: the leader queues
 * them a moment after such an event, and their sending is seen by polling.
 */
export const ALERT_KINDS = ['run.finished', 'runs.rescued', 'run.skipped'];
/** Sent when the server had to drop events for a client: the page reads its state again. */
const DROPPED = 'events.dropped';

const liveListeners = new Set();
/** Learns whether the page's event stream is connected (`true`/`false`). */
export function onLiveStatus(handler) {
  liveListeners.add(handler);
}
function liveStatus(connected) {
  for (const l of liveListeners) l(connected);
}

/**
 * Follows the event stream (`namespace`, `job` and `kinds` filter it; `events.dropped` is always
 * asked for) and calls `onChange` with the events seen since the last call, at most once per
 * `every` ms: the first event after a quiet spell calls it soon (a burst of events that come
 * together makes one call), and the events within `every` ms of a call make one call at the end
 * of that span. `reset`, `events.dropped` and every (re)connection (`open`) also call it. The
 * EventSource reconnects by itself (sending Last-Event-ID); a stream the server closed for good
 * (the session ended, a restart) is opened again after a pause. A hidden tab lets go of the
 * stream. Returns `close()`.
 */
export function liveEvents({ namespace, job, kinds }, onChange, { every = 1500 } = {}) {
  const listened = [...new Set([...(kinds || [...JOB_KINDS, ...NODE_KINDS]), DROPPED])];
  const url = `${BASE}/events/stream${qs({ namespace, job: job || undefined, kinds: kinds ? listened.join(',') : undefined })}`;
  const soon = Math.min(100, every);
  let source = null;
  let timer = null;
  let reopen = null;
  let pending = [];
  let closed = false;
  let lastCall = -Infinity;

  const flush = () => {
    timer = null;
    lastCall = Date.now();
    const events = pending;
    pending = [];
    if (!closed) onChange(events);
  };
  const fire = (event) => {
    if (closed) return;
    pending.push(event);
    if (timer) return;
    timer = setTimeout(flush, Math.max(soon, lastCall + every - Date.now()));
  };

  const open = () => {
    const es = new EventSource(url, { withCredentials: true });
    source = es;
    const handler = (e) => {
      let data = {};
      try {
        data = JSON.parse(e.data);
      } catch {
        data = {};
      }
      fire({ kind: e.type, ...data });
    };
    for (const kind of [...listened, 'reset']) {
      es.addEventListener(kind, handler);
    }
    // Once connected, read the state again: what changed between the page's first fetch and
    // the stream's start (which starts "now") would otherwise be missed.
    es.addEventListener('open', () => {
      liveStatus(true);
      fire({ kind: 'open' });
    });
    es.addEventListener('error', () => {
      if (es !== source) return;
      liveStatus(false);
      if (es.readyState === EventSource.CLOSED && !closed) {
        // Refused for good (a 401 when the session ended, a node going away): the refetch
        // shows why (or goes to the login page), and the stream is tried again later.
        fire({ kind: 'disconnected' });
        source = null;
        clearTimeout(reopen);
        reopen = setTimeout(() => {
          if (!closed && !source && !document.hidden) open();
        }, 5000);
      }
    });
  };
  // A hidden tab lets go of its stream (browsers allow only six connections per server over
  // HTTP/1.1, shared by all tabs) and takes a new one, with a refetch, when shown again.
  const onVisibility = () => {
    if (closed) return;
    if (document.hidden && source) {
      source.close();
      source = null;
      clearTimeout(reopen);
      liveStatus(null);
    } else if (!document.hidden && !source) {
      open();
    }
  };
  document.addEventListener('visibilitychange', onVisibility);
  if (!document.hidden) open();

  return () => {
    closed = true;
    clearTimeout(timer);
    clearTimeout(reopen);
    document.removeEventListener('visibilitychange', onVisibility);
    if (source) source.close();
    liveStatus(null);
  };
}

/**
 * Runs `fn` again when asked while it runs (once more at the end, however often asked), so a
 * refetch never overlaps another and the last request is always served.
 */
export function coalesce(fn) {
  let running = false;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        await fn();
      } while (again);
    } finally {
      running = false;
    }
  };
  return run;
}
