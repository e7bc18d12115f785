// The Kairos web UI: router (History API on real paths, page state in the query string), the
// header, and the session (an HttpOnly cookie the server sets; this code never sees the token
// after sending it once).

import { api, ApiError, onUnauthorized, onLiveStatus } from './api.js';
import {
  h, tickTimes, closeDialog, setTitle, alertRegion, mountJobs, mountJob, mountRun, mountAlerts, mountNodes, mountLogin,
} from './pages.js';

const ROUTES = [
  { name: 'jobs', re: /^\/$/, mount: mountJobs, nav: 'jobs' },
  { name: 'job', re: /^\/jobs\/([^/]+)\/([^/]+)\/?$/, mount: mountJob, nav: 'jobs', keys: ['namespace', 'name'] },
  { name: 'run', re: /^\/runs\/(\d+)\/?$/, mount: mountRun, nav: 'jobs', keys: ['id'] },
  { name: 'alerts', re: /^\/alerts\/?$/, mount: mountAlerts, nav: 'alerts' },
  { name: 'nodes', re: /^\/nodes\/?$/, mount: mountNodes, nav: 'nodes' },
  { name: 'login', re: /^\/login\/?$/, mount: mountLogin },
];

const main = document.getElementById('main');
/** `undefined`: not asked yet; `null`: signed out; else the answer of GET /session. */
let session;
let cleanup = null;
let firstRender = true;
let rendering = 0;

function match(pathname) {
  for (const r of ROUTES) {
    const m = r.re.exec(pathname);
    if (!m) continue;
    const params = {};
    (r.keys || []).forEach((k, i) => {
      try {
        params[k] = decodeURIComponent(m[i + 1]);
      } catch {
        params[k] = m[i + 1];
      }
    });
    return { ...r, params };
  }
  return null;
}

/** Only a path of this site: never an open redirect to another origin. */
function safeNext(next) {
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\')) return '/';
  if (next.startsWith('/login')) return '/';
  return next;
}

function here() {
  return location.pathname + location.search;
}

function navigate(url, { replace = false } = {}) {
  if (replace) {
    history.replaceState(null, '', url);
  } else {
    history.pushState(null, '', url);
    window.scrollTo(0, 0);
  }
  render();
}

/** Writes the page's state into the query string without rendering again. */
function setQuery(params, { push = false } = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  const url = location.pathname + (s ? `?${s}` : '');
  if (url === here()) return;
  if (push) history.pushState(null, '', url);
  else history.replaceState(null, '', url);
}

async function loadSession() {
  try {
    session = await api('/session');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      session = null;
      return true;
    }
    const alert = alertRegion();
    alert.show(e);
    main.replaceChildren(
      h('h1', null, 'Kairos'),
      alert.el,
      h('p', null, h('button', { type: 'button', class: 'btn', onclick: () => render() }, 'Try again')),
    );
    return false;
  }
  return true;
}

function renderHeader(route) {
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (route && a.dataset.nav === route.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.querySelector('.app-nav').hidden = !session;
  const box = document.getElementById('session');
  box.replaceChildren();
  if (!session) return;
  box.append(
    h('span', { class: 'who' }, h('span', { class: 'who-name' }, session.name),
      ' ', h('span', { class: 'role', 'data-role': session.role }, session.role)),
  );
  if (session.auth === 'required') {
    box.append(h('button', {
      type: 'button', class: 'btn btn-small', onclick: async () => {
        try {
          await api('/session', { method: 'DELETE' });
        } catch {
          // Signed out either way: the cookie is gone or was never valid.
        }
        session = null;
        navigate('/login', { replace: false });
      },
    }, 'Sign out'));
  }
}

function notFound() {
  setTitle('Not found');
  main.replaceChildren(
    h('h1', null, 'Not found'),
    h('p', null, 'There is no page at this address. ', h('a', { href: '/' }, 'Back to the jobs')),
  );
}

async function render() {
  const mine = ++rendering;
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // A page that fails to clean up must not stop the next one.
    }
    cleanup = null;
  }
  closeDialog();
  if (session === undefined && !(await loadSession())) return;
  if (mine !== rendering) return;
  const url = new URL(location.href);
  const route = match(url.pathname);
  if (route && route.name !== 'login' && !session) {
    history.replaceState(null, '', `/login?next=${encodeURIComponent(here())}`);
    return render();
  }
  if (route && route.name === 'login' && session) {
    history.replaceState(null, '', safeNext(url.searchParams.get('next')));
    return render();
  }
  renderHeader(route);
  main.replaceChildren();
  if (!route) {
    notFound();
  } else {
    const ctx = {
      session,
      params: route.params,
      query: url.searchParams,
      navigate,
      setQuery,
      signedIn: (s) => {
        session = s;
        navigate(safeNext(url.searchParams.get('next')), { replace: true });
      },
    };
    try {
      cleanup = route.mount(main, ctx) || null;
    } catch (e) {
      const alert = alertRegion();
      alert.show(e);
      main.replaceChildren(h('h1', null, 'Something went wrong'), alert.el);
    }
  }
  if (!firstRender) main.focus({ preventScroll: true });
  firstRender = false;
}

onUnauthorized(() => {
  if (session === null && location.pathname === '/login') return;
  session = null;
  if (location.pathname !== '/login') {
    navigate(`/login?next=${encodeURIComponent(here())}`, { replace: true });
  }
});

// Internal links change the page without loading it again.
document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest && e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin) return;
  if (url.pathname.startsWith('/api/') || url.pathname.startsWith('/assets/')) return;
  if (url.hash && url.pathname === location.pathname && url.search === location.search) return;
  e.preventDefault();
  if (url.pathname + url.search === here()) return;
  navigate(url.pathname + url.search);
});

window.addEventListener('popstate', () => render());

const indicator = document.getElementById('live-indicator');
onLiveStatus((connected) => {
  indicator.hidden = connected === null;
  indicator.textContent = connected ? 'Live' : 'Reconnecting…';
  indicator.classList.toggle('offline', !connected);
});

setInterval(tickTimes, 1000);
render();
