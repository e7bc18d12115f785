// Browser test of the Kairos web UI, driven by a real server with authentication required.
//
// Environment: KAIROS_URL (http://127.0.0.1:PORT), KAIROS_ADMIN_TOKEN, KAIROS_VIEWER_TOKEN,
// KAIROS_SCREENSHOTS (a directory for the PNGs), CHROMIUM (default /usr/bin/chromium), and
// KAIROS_ALERT_CHANNEL: the name of a channel of the server's configuration whose sends succeed
// (the alerts step is skipped without it).
// Exits 0 when every step passes; otherwise prints the failing step and why, writes
// failure.png, and exits 1.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const BASE = (process.env.KAIROS_URL || 'http://127.0.0.1:7433').replace(/\/+$/, '');
const ADMIN = process.env.KAIROS_ADMIN_TOKEN;
const VIEWER = process.env.KAIROS_VIEWER_TOKEN;
const SHOTS = process.env.KAIROS_SCREENSHOTS || path.join(os.tmpdir(), 'kairos-ui-screenshots');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ALERT_CHANNEL = process.env.KAIROS_ALERT_CHANNEL || '';
/** Longest wait for one expectation. */
const WAIT = 15_000;
/** Longest run of the whole script. */
const DEADLINE = 170_000;

const ECHO_LINE = 'hello-from-kairos-ui';
/** A daily time in Berlin twelve hours from now: the cron never fires while the test runs. */
const BERLIN_HOUR = (() => {
  let hour;
  try {
    hour = Number(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', hourCycle: 'h23' }).format(new Date()));
  } catch {
    hour = new Date().getUTCHours();
  }
  return (hour + 12) % 24;
})();
const ECHO_CRON = `0 ${BERLIN_HOUR} * * *`;
const NS = 'default';

let browser = null;
let current = null; // the page a failure screenshot shows
let stepName = 'start';
const pageErrors = [];

// ---- helpers ----

function fail(message) {
  throw new Error(message);
}

async function finishWithFailure(err) {
  console.error(`\nUI test FAILED at step "${stepName}": ${err && err.message ? err.message : err}`);
  if (pageErrors.length) console.error(`errors in the page:\n  ${pageErrors.join('\n  ')}`);
  if (current) {
    try {
      await current.screenshot({ path: path.join(SHOTS, 'failure.png'), fullPage: true, timeout: 5000 });
      console.error(`screenshot: ${path.join(SHOTS, 'failure.png')} (page ${current.url()})`);
    } catch (e) {
      console.error(`no failure screenshot: ${e.message}`);
    }
  }
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

async function step(name, fn) {
  stepName = name;
  const t0 = Date.now();
  process.stdout.write(`- ${name} ... `);
  await fn();
  if (pageErrors.length) fail(`the page reported errors:\n  ${pageErrors.join('\n  ')}`);
  console.log(`ok (${Date.now() - t0} ms)`);
}

/** Polls `fn` until it answers something truthy; fails with `what` after `timeout`. */
async function waitFor(what, fn, timeout = WAIT) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > end) {
      const seen = last === undefined || typeof last === 'boolean' ? '' : ` (last seen: ${JSON.stringify(last)})`;
      fail(`timed out after ${timeout / 1000} s waiting for ${what}${seen}`);
    }
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** Waits for a locator to be visible, naming what was expected. */
async function visible(locator, what, timeout = WAIT) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout });
  } catch {
    fail(`timed out after ${timeout / 1000} s waiting for ${what} to be visible`);
  }
}

/** Waits for the text of `locator` to contain `needle`; the failure shows the text seen last. */
async function contains(locator, needle, what, timeout = WAIT) {
  const end = Date.now() + timeout;
  let text = '';
  for (;;) {
    try {
      text = (await locator.textContent({ timeout: 1000 })) || '';
      if (text.includes(needle)) return;
    } catch {
      // not there yet
    }
    if (Date.now() > end) fail(`timed out after ${timeout / 1000} s waiting for ${what} to contain "${needle}" (it shows: ${JSON.stringify(text.slice(-300))})`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function gone(locator, what, timeout = WAIT) {
  try {
    await locator.first().waitFor({ state: 'detached', timeout });
  } catch {
    fail(`timed out after ${timeout / 1000} s waiting for ${what} to go away`);
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

/** Calls the API as the admin, for setup and for checks. */
async function apiCall(method, p, body) {
  const headers = { Authorization: `Bearer ${ADMIN}`, Accept: 'application/json' };
  const init = { method, headers };
  if (body !== undefined || method === 'POST' || method === 'PUT') {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  const res = await fetch(BASE + p, init);
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, json, text };
}

async function apiOk(method, p, body) {
  const r = await apiCall(method, p, body);
  if (r.status < 200 || r.status > 299) fail(`${method} ${p} answered ${r.status}: ${r.text}`);
  return r.json;
}

async function createJob(doc) {
  await apiCall('DELETE', `/api/v1/jobs/${doc.name}?namespace=${doc.namespace || NS}&force=true`);
  return apiOk('POST', '/api/v1/jobs', doc);
}

/** Triggers a job over the API and waits for the run to end; answers the run. */
async function runToEnd(name, namespace = NS) {
  const { id } = await apiOk('POST', `/api/v1/jobs/${name}/trigger?namespace=${namespace}`, {});
  return waitFor(`run ${id} of ${name} to end`, async () => {
    const run = await apiOk('GET', `/api/v1/runs/${id}`);
    return run.finished_at ? run : null;
  });
}

/**
 * The page's load counter (`<body data-loads>`, counted after each successful load) and what
 * asked for the last load (`data-load-cause`: `initial`, `action`, event kinds, `open` for the
 * event stream's connection).
 */
async function loads(page) {
  return page.evaluate(() => ({
    count: Number(document.body.dataset.loads || 0),
    cause: (document.body.dataset.loadCause || '').split(','),
  }));
}

/**
 * Waits until the event stream is connected and the load that follows its connection is done
 * (from then on only events load the page); answers the load counter then.
 */
async function liveAndLoaded(page) {
  await waitFor('the event stream to be connected', async () => (await page.locator('#live-indicator').textContent()) === 'Live');
  const seen = await waitFor('the load that follows the stream\'s connection', async () => {
    const l = await loads(page);
    return l.cause.includes('open') ? l : null;
  });
  return seen.count;
}

/** The alerts the page shows (`role="alert"` and not hidden). */
async function shownAlerts(page) {
  return page.evaluate(() => [...document.querySelectorAll('[role="alert"]')]
    .filter((el) => !el.hidden && el.offsetParent !== null).map((el) => el.textContent.trim()));
}

function watch(page) {
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) {
      pageErrors.push(`${page.url()}: ${m.text()}`);
    }
  });
  return page;
}

function pathOf(page) {
  return new URL(page.url()).pathname;
}

async function signIn(page, token) {
  await page.goto(`${BASE}/`);
  await waitFor('the redirect to /login', () => pathOf(page) === '/login');
  const token_ = page.getByLabel('Token');
  await visible(token_, 'the Token input');
  await token_.fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await waitFor('the jobs page after signing in', () => pathOf(page) === '/');
  await visible(page.getByRole('heading', { level: 1, name: 'Jobs' }), 'the Jobs heading');
}

/** The URL's query parameter `name` (null when absent). */
function queryOf(page, name) {
  return new URL(page.url()).searchParams.get(name);
}

/** The buttons a viewer must not see. */
const MUTATING = /^(Trigger now|Pause|Resume|Delete|Cancel run|Rerun|Rerun step|Rerun failed steps|Skip|Mark succeeded)$/;

async function mutatingButtons(page) {
  return page.getByRole('button', { name: MUTATING }).count();
}

// ---- the test ----

async function main() {
  if (!ADMIN || !VIEWER) fail('KAIROS_ADMIN_TOKEN and KAIROS_VIEWER_TOKEN must be set');
  fs.mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const admin = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = watch(await admin.newPage());
  current = page;
  let echoRun;
  let failRun;
  let flowRun;

  await step('1. sign in as admin', async () => {
    await page.goto(`${BASE}/`);
    await waitFor('the redirect to /login', () => pathOf(page) === '/login');
    const next = new URL(page.url()).searchParams.get('next');
    if (next !== '/') fail(`the login page should come back to / (next=${next})`);
    await visible(page.getByLabel('Token'), 'the Token input');
    await visible(page.getByRole('button', { name: 'Sign in' }), 'the Sign in button');
    await shot(page, 'login.png');
    // A wrong token is refused with the problem's detail.
    await page.getByLabel('Token').fill('kairos_0000000000000000000000000000000000000000000000000000000000000000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await visible(page.getByRole('alert').filter({ hasText: /token/i }), 'an alert saying the token is refused');
    if (pathOf(page) !== '/login') fail('a wrong token must not sign in');
    await page.getByLabel('Token').fill(ADMIN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await waitFor('the jobs page after signing in', () => pathOf(page) === '/');
    await visible(page.getByRole('heading', { level: 1, name: 'Jobs' }), 'the Jobs heading');
    await visible(page.locator('header').getByRole('button', { name: 'Sign out' }), 'the Sign out button');
    await waitFor('the header to show the admin role', async () => (await page.locator('header .role').textContent()) === 'admin');
    const cookies = await page.evaluate(() => document.cookie);
    if (cookies.includes('kairos_')) fail('the session token must not be readable by scripts');
    if (page.url().includes('kairos_')) fail('the token must never be in the URL');
  });

  await step('2. a job created over the API appears live', async () => {
    // The jobs list has no periodic refetch: after the load that follows the stream's
    // connection, only an event loads it again.
    const marker = await liveAndLoaded(page);
    await page.evaluate(() => { window.__kairosNoReload = true; });
    await createJob({
      name: 'ui-echo',
      description: 'UI test: echoes a line',
      labels: { suite: 'ui' },
      triggers: [{ cron: ECHO_CRON, timezone: 'Europe/Berlin' }],
      task: { kind: 'shell', script: `echo ${ECHO_LINE}` },
    });
    const row = page.locator('tr[data-job="ui-echo"]');
    await visible(row, 'the row of job ui-echo (without reloading)');
    await visible(row.getByRole('link', { name: 'ui-echo', exact: true }), 'the link to job ui-echo');
    await visible(row.locator('code.schedule-written').filter({ hasText: ECHO_CRON }), 'the cron expression as written');
    await visible(row.locator('.next-fire time'), 'the next fire time');
    const reloaded = await page.evaluate(() => window.__kairosNoReload !== true);
    if (reloaded) fail('the page was reloaded');
    const after = await loads(page);
    if (after.count <= marker || !after.cause.includes('job.changed')) {
      fail(`the row came without a load asked by the job.changed event (loads ${marker} → ${after.count}, last asked by ${after.cause.join(',')})`);
    }
    await shot(page, 'jobs.png');
  });

  await step('3. trigger now from the list, then the run succeeds with its output', async () => {
    const row = page.locator('tr[data-job="ui-echo"]');
    await row.getByRole('button', { name: 'Trigger now', exact: true }).click();
    const link = row.locator('a.triggered-run');
    await visible(link, 'the link to the triggered run');
    const href = await link.getAttribute('href');
    echoRun = Number(href.split('/').pop());
    if (!Number.isInteger(echoRun)) fail(`the run link is ${href}`);
    await link.click();
    await waitFor(`the page of run ${echoRun}`, () => pathOf(page) === `/runs/${echoRun}`);
    await visible(page.getByRole('heading', { level: 1, name: `Run ${echoRun}` }), `the heading "Run ${echoRun}"`);
    await visible(page.locator('.page-head .badge[data-state="succeeded"]'), 'the succeeded state badge');
    await contains(page.locator('pre.output').first(), ECHO_LINE, 'the output');
    await visible(page.locator('table.attempts tbody tr'), 'the attempts table');
    await shot(page, 'run.png');
  });

  await step('4. the job page: definition (JSON and TOML), next fire times, history, charts', async () => {
    await page.locator('.subline a.job-link').click();
    await waitFor('the job page', () => pathOf(page) === `/jobs/${NS}/ui-echo`);
    await visible(page.getByRole('heading', { level: 1, name: 'ui-echo' }), 'the job heading');
    await contains(page.locator('pre.definition'), '"name": "ui-echo"', 'the definition');
    await waitFor('the version', async () => /Version \d+/.test(await page.locator('.def-version').textContent()));
    await waitFor('10 next fire times', async () => (await page.locator('table.next-times tbody tr').count()) === 10);
    await visible(page.locator(`table.runs a[href="/runs/${echoRun}"]`), `run ${echoRun} in the history`);
    for (const label of ['Run durations', 'Fire lateness']) {
      const svg = page.locator(`svg[aria-label^="${label}"]`);
      await visible(svg, `the chart "${label}"`);
      if ((await svg.locator('title').count()) < 1) fail(`the chart "${label}" has no <title>`);
    }
    await visible(page.locator('svg[aria-label^="Run durations"] rect.chart-bar'), 'a bar in the durations chart');
    await shot(page, 'job.png');

    // The definition as TOML: a [[jobs]] entry for `kairos apply -f`, the choice in the URL.
    const formats = page.getByRole('group', { name: 'Definition format' });
    const tomlButton = formats.getByRole('button', { name: 'TOML', exact: true });
    const jsonButton = formats.getByRole('button', { name: 'JSON', exact: true });
    if ((await jsonButton.getAttribute('aria-pressed')) !== 'true') fail('JSON is not the default view of the definition');
    await tomlButton.click();
    await waitFor('view=toml in the URL', () => queryOf(page, 'view') === 'toml');
    if ((await tomlButton.getAttribute('aria-pressed')) !== 'true') fail('the TOML button is not pressed');
    const definition = page.locator('pre.definition');
    await contains(definition, 'name = "ui-echo"', 'the TOML definition');
    const toml = await definition.textContent();
    if (!toml.startsWith('[[jobs]]\n')) fail(`the TOML definition does not start with [[jobs]]: ${JSON.stringify(toml.slice(0, 80))}`);
    for (const line of [`cron = "${ECHO_CRON}"`, 'timezone = "Europe/Berlin"', '[[jobs.triggers]]', '[jobs.task]', `script = "echo ${ECHO_LINE}"`]) {
      if (!toml.split('\n').includes(line)) fail(`the TOML definition has no line ${line}: ${JSON.stringify(toml)}`);
    }
    if (/^(version|created_at|updated_at|next_fire_at) =/m.test(toml)) fail(`the TOML definition has the server's fields: ${JSON.stringify(toml)}`);
    await shot(page, 'job-toml.png');
    await jsonButton.click();
    await waitFor('no view in the URL', () => queryOf(page, 'view') === null);
    await contains(definition, '"name": "ui-echo"', 'the JSON definition again');
  });

  await step('5. pause from the job page', async () => {
    const actions = page.locator('.page-actions');
    await actions.getByRole('button', { name: 'Pause', exact: true }).click();
    await visible(actions.getByRole('button', { name: 'Resume', exact: true }), 'the Resume button');
    await visible(page.locator('.page-head [data-paused="true"]'), 'the paused flag');
    const job = await apiOk('GET', `/api/v1/jobs/ui-echo?namespace=${NS}`);
    if (job.paused !== true) fail('the job is not paused in the API');
  });

  await step('6. a failing run shows failed, its exit code and its stderr', async () => {
    await createJob({
      name: 'ui-fail',
      task: { kind: 'shell', script: 'echo boom >&2; exit 3' },
      retry: { max_attempts: 1 },
    });
    failRun = (await apiOk('POST', `/api/v1/jobs/ui-fail/trigger?namespace=${NS}`, {})).id;
    await page.goto(`${BASE}/runs/${failRun}`);
    await visible(page.locator('.page-head .badge[data-state="failed"]'), 'the failed state badge');
    await contains(page.locator('pre.output').first(), 'boom', 'the output');
    await waitFor('exit code 3 in the attempts', async () => (await page.locator('table.attempts td.exit-code').first().textContent()).trim() === '3');
    await visible(page.getByRole('button', { name: 'Rerun', exact: true }), 'the Rerun button');
    if (await page.getByRole('button', { name: 'Cancel run' }).count()) fail('a finished run offers "Cancel run"');
    await shot(page, 'failed-run.png');
  });

  await step('7. a workflow run: the DAG coloured by state, a step and its output', async () => {
    await createJob({
      name: 'ui-flow',
      retry: { max_attempts: 1 },
      steps: [
        { name: 'a', task: { kind: 'shell', script: 'echo a-ok' } },
        { name: 'b', depends_on: ['a'], task: { kind: 'shell', script: 'echo b-ok' } },
        { name: 'c', depends_on: ['a'], task: { kind: 'shell', script: 'echo c-broke >&2; exit 1' } },
      ],
    });
    flowRun = (await apiOk('POST', `/api/v1/jobs/ui-flow/trigger?namespace=${NS}`, {})).id;
    await page.goto(`${BASE}/runs/${flowRun}`);
    await visible(page.locator('.page-head .badge[data-state="failed"]'), 'the workflow run ending failed');
    for (const [st, state] of [['a', 'succeeded'], ['b', 'succeeded'], ['c', 'failed']]) {
      await visible(page.locator(`svg.dag g[data-step="${st}"][data-state="${state}"]`), `step ${st} ${state} in the DAG`);
    }
    if ((await page.locator('svg.dag path.dag-edge').count()) !== 2) fail('the DAG should have 2 edges (a → b, a → c)');
    // Read in one go: a live refresh may redraw the graph between reads (a detached rect has no
    // computed fill).
    const [fa, fb, fc] = await waitFor('the fills of the steps', async () => {
      const fills = await page.evaluate(() => ['a', 'b', 'c'].map((st) => {
        const rect = document.querySelector(`svg.dag g[data-step="${st}"] rect`);
        return rect ? getComputedStyle(rect).fill : '';
      }));
      return fills.every(Boolean) ? fills : null;
    });
    if (fa === fc) fail(`steps a and c have the same fill ${fa}`);
    if (fa !== fb) fail(`steps a and b (both succeeded) differ: ${fa} and ${fb}`);
    // Keyboard: focus b and press Enter.
    await page.locator('svg.dag g[data-step="b"]').focus();
    await page.keyboard.press('Enter');
    await visible(page.locator('.step-panel').getByRole('heading', { name: 'Step b' }), 'the panel of step b');
    await contains(page.locator('.step-panel pre.output'), 'b-ok', 'the output of step b');
    await page.locator('svg.dag g[data-step="c"]').click();
    await visible(page.locator('.step-panel').getByRole('heading', { name: 'Step c' }), 'the panel of step c');
    await visible(page.locator('.step-panel .badge[data-state="failed"]'), 'the failed badge of step c');
    await contains(page.locator('.step-panel pre.output'), 'c-broke', 'the output of step c');
    await visible(page.locator('.step-panel').getByRole('button', { name: 'Rerun step' }), 'the Rerun step action');
    await visible(page.locator('.step-panel').getByRole('button', { name: 'Mark succeeded' }), 'the Mark succeeded action');
    if (new URL(page.url()).searchParams.get('step') !== 'c') fail('the chosen step is not in the URL');
    await shot(page, 'workflow.png');
  });

  await step('8. delete asks first; Keep keeps, Delete deletes', async () => {
    await page.locator('header nav').getByRole('link', { name: 'Jobs' }).click();
    await waitFor('the jobs page', () => pathOf(page) === '/');
    const row = page.locator('tr[data-job="ui-echo"]');
    await visible(row, 'the row of ui-echo');
    await visible(row.locator('[data-paused="true"]'), 'ui-echo shown as paused in the list');
    await visible(row.getByRole('button', { name: 'Resume', exact: true }), 'Resume in the row of the paused job');
    // Every DELETE of the job the page sends: Keep must send none (counted at the end, so
    // that no wait is needed for a request that should not come).
    const deletes = [];
    const onRequest = (req) => {
      if (req.method() === 'DELETE' && new URL(req.url()).pathname === '/api/v1/jobs/ui-echo') deletes.push(req.url());
    };
    page.on('request', onRequest);
    const dialog = page.locator('dialog[open]');
    await row.getByRole('button', { name: 'Delete', exact: true }).click();
    await visible(dialog, 'the confirm dialog');
    const text = (await dialog.textContent()) || '';
    if (!text.includes('Delete job ui-echo and its runs?')) fail(`the dialog asks: ${text}`);
    await dialog.getByRole('button', { name: 'Keep', exact: true }).click();
    await gone(dialog, 'the dialog');
    // Keep is done when it gives the focus back to the Delete button.
    await waitFor('the focus back on Delete after Keep', () => page.evaluate(() => {
      const el = document.activeElement;
      return Boolean(el && el.dataset.action === 'delete' && el.closest('tr[data-job="ui-echo"]'));
    }));
    await visible(row, 'the row of ui-echo after Keep');
    if ((await apiCall('GET', `/api/v1/jobs/ui-echo?namespace=${NS}`)).status !== 200) fail('Keep deleted the job');
    await row.getByRole('button', { name: 'Delete', exact: true }).click();
    await visible(dialog, 'the confirm dialog, again');
    await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
    await gone(row, 'the row of ui-echo');
    const after = await apiCall('GET', `/api/v1/jobs/ui-echo?namespace=${NS}`);
    if (after.status !== 404) fail(`the job is still there (${after.status})`);
    page.off('request', onRequest);
    if (deletes.length !== 1) fail(`the page sent ${deletes.length} DELETEs of ui-echo (Keep must send none): ${deletes.join(', ')}`);
  });

  await step('9. the nodes page shows the leader', async () => {
    await page.locator('header nav').getByRole('link', { name: 'Nodes' }).click();
    await waitFor('the nodes page', () => pathOf(page) === '/nodes');
    await waitFor('one node', async () => (await page.locator('table.nodes tbody tr').count()) === 1);
    await visible(page.locator('table.nodes tbody tr[data-leader="true"] .badge.leader'), 'the leader flag');
    await waitFor('the term', async () => /term \d+/.test(await page.locator('table.nodes .term').textContent()));
    await waitFor('a heartbeat in seconds', async () => /\d+s ago/.test(await page.locator('table.nodes tbody tr').textContent()));
    await shot(page, 'nodes.png');
  });

  await step('10. a viewer sees no buttons that change anything, and is refused', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const viewer = watch(await ctx.newPage());
    current = viewer;
    await signIn(viewer, VIEWER);
    await waitFor('the header to show the viewer role', async () => (await viewer.locator('header .role').textContent()) === 'viewer');
    await visible(viewer.locator('tr[data-job="ui-fail"] td.success'), 'the row of ui-fail');
    let n = await mutatingButtons(viewer);
    if (n) fail(`the jobs list shows ${n} mutating buttons to a viewer`);
    await viewer.goto(`${BASE}/runs/${failRun}`);
    await visible(viewer.locator('.page-head .badge[data-state="failed"]'), 'the failed run');
    await visible(viewer.locator('table.attempts tbody tr'), 'the attempts of the failed run');
    n = await mutatingButtons(viewer);
    if (n) fail(`the run page shows ${n} mutating buttons to a viewer`);
    await viewer.goto(`${BASE}/runs/${flowRun}?step=c`);
    await visible(viewer.locator('.step-panel').getByRole('heading', { name: 'Step c' }), 'the panel of step c');
    await visible(viewer.locator('.step-panel table.attempts tbody tr'), 'the attempts of step c');
    n = await mutatingButtons(viewer);
    if (n) fail(`the workflow run page shows ${n} mutating buttons to a viewer`);
    await viewer.goto(`${BASE}/jobs/${NS}/ui-fail`);
    await visible(viewer.getByRole('heading', { level: 1, name: 'ui-fail' }), 'the job page of ui-fail');
    // The heading is drawn at once; the buttons would come with the data.
    await contains(viewer.locator('.def-version'), 'Version', 'the version line of ui-fail');
    await contains(viewer.locator('pre.definition'), '"name": "ui-fail"', 'the definition of ui-fail');
    n = await mutatingButtons(viewer);
    if (n) fail(`the job page shows ${n} mutating buttons to a viewer`);
    const status = await viewer.evaluate(() => fetch('/api/v1/jobs/ui-fail/trigger?namespace=default', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
    }).then((r) => r.status));
    if (status !== 403) fail(`a viewer's trigger answered ${status}, not 403`);
    await ctx.close();
    current = page;
  });

  await step('11. the jobs page on a phone', async () => {
    const ctx = await browser.newContext({
      viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
      storageState: await admin.storageState(),
    });
    const phone = watch(await ctx.newPage());
    current = phone;
    await phone.goto(`${BASE}/`);
    await visible(phone.locator('tr[data-job="ui-fail"]'), 'the row of ui-fail');
    await shot(phone, 'jobs-phone.png');
    const m = await phone.evaluate(() => {
      const wrap = document.querySelector('.table-wrap');
      return {
        vw: window.innerWidth,
        doc: document.documentElement.scrollWidth,
        body: document.body.scrollWidth,
        wrapScrolls: wrap ? wrap.scrollWidth > wrap.clientWidth : null,
      };
    });
    if (m.doc > m.vw || m.body > m.vw) fail(`the page overflows sideways: ${JSON.stringify(m)}`);
    if (m.wrapScrolls !== true) fail(`the table should scroll inside its wrapper: ${JSON.stringify(m)}`);
    await ctx.close();
    current = page;
  });

  await step('12. job data with HTML in it is shown as text, never run', async () => {
    const description = '<img src=x onerror="window.__xss=1">';
    const label = '<script>window.__xss=2</script>';
    const out = '<b>bold</b><script>window.__xss=3</script>';
    await createJob({
      name: 'ui-xss',
      description,
      labels: { note: label },
      task: { kind: 'shell', script: `echo '${out}'` },
    });
    const run = await runToEnd('ui-xss');
    if (run.state !== 'succeeded') fail(`the run of ui-xss ended ${run.state}`);
    const clean = async (where) => {
      const r = await page.evaluate(() => ({
        xss: window.__xss,
        img: document.querySelectorAll('img[src="x"]').length,
        script: document.querySelectorAll('main script').length,
        bold: document.querySelectorAll('pre b, .sub b, .labels b, .summary b').length,
      }));
      if (r.xss !== undefined || r.img || r.script || r.bold) fail(`${where}: HTML of the job was run or drawn: ${JSON.stringify(r)}`);
    };
    await page.goto(`${BASE}/`);
    const row = page.locator('tr[data-job="ui-xss"]');
    await contains(row.locator('.sub').first(), description, 'the description in the list');
    await contains(row.locator('.labels'), `note=${label}`, 'the label in the list');
    await clean('the jobs list');
    await page.goto(`${BASE}/jobs/${NS}/ui-xss`);
    await contains(page.locator('.def-version'), 'Version', 'the version line');
    await contains(page.locator('.summary'), description, 'the description on the job page');
    await contains(page.locator('.summary .label'), `note=${label}`, 'the label on the job page');
    await contains(page.locator('pre.definition'), label, 'the definition');
    await visible(page.locator(`table.runs a[href="/runs/${run.id}"]`), `run ${run.id} in the history`);
    await clean('the job page');
    await page.goto(`${BASE}/runs/${run.id}`);
    await visible(page.locator('.page-head .badge[data-state="succeeded"]'), 'the succeeded state badge');
    await contains(page.locator('pre.output').first(), out, 'the output, as text');
    await clean('the run page');
  });

  await step('13. a token of one namespace sees only that namespace', async () => {
    const token = await apiOk('POST', '/api/v1/tokens', {
      name: `ui-team-b-${Date.now()}`, role: 'operator', namespaces: ['team-b'],
    });
    await createJob({ name: 'ui-team-b', namespace: 'team-b', task: { kind: 'shell', script: 'true' } });
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const scoped = watch(await ctx.newPage());
    current = scoped;
    await signIn(scoped, token.secret);
    await waitFor('the header to show the operator role', async () => (await scoped.locator('header .role').textContent()) === 'operator');
    await liveAndLoaded(scoped);
    const row = scoped.locator('tr[data-job="ui-team-b"][data-namespace="team-b"]');
    await visible(row.locator('td.success'), 'the row of ui-team-b');
    await visible(row.getByRole('button', { name: 'Trigger now', exact: true }), 'Trigger now for an operator');
    const rows = await scoped.locator('tr[data-job]').evaluateAll((trs) => trs.map((tr) => `${tr.dataset.namespace}/${tr.dataset.job}`));
    const others = rows.filter((r) => !r.startsWith('team-b/'));
    if (others.length) fail(`a token of team-b sees jobs of other namespaces: ${others.join(', ')}`);
    const options = await scoped.locator('#f-ns option').evaluateAll((os) => os.map((o) => o.value).filter(Boolean));
    if (options.join(',') !== 'team-b') fail(`the namespace filter offers ${JSON.stringify(options)}`);
    const alerts = await shownAlerts(scoped);
    if (alerts.length) fail(`the page shows an error: ${alerts.join(' | ')}`);
    await ctx.close();
    current = page;
  });

  if (!ALERT_CHANNEL) {
    console.log('- 14. alerts: skipped (KAIROS_ALERT_CHANNEL is not set)');
  } else {
    await step('14. alerts: a failed run\'s delivery on its job page and on /alerts', async () => {
      const job = 'ui-alert';
      await createJob({
        name: job,
        retry: { max_attempts: 1 },
        task: { kind: 'shell', script: 'echo alert-me >&2; exit 4' },
        notify: [
          { on: 'failure', channels: [ALERT_CHANNEL] },
          { on: 'failures', count: 3, channels: [ALERT_CHANNEL] },
        ],
      });
      // The job page first: the delivery must come without a reload.
      await page.goto(`${BASE}/jobs/${NS}/${job}`);
      const section = page.locator('section#alerts');
      await visible(section.getByRole('heading', { level: 2, name: 'Alerts' }), 'the Alerts section');
      const rules = section.locator('ul.notify-rules li');
      await waitFor('2 alert rules', async () => (await rules.count()) === 2);
      await contains(rules.nth(0), `On failure → ${ALERT_CHANNEL}`, 'the first rule in words');
      await contains(rules.nth(1), `After 3 failures in a row → ${ALERT_CHANNEL}`, 'the second rule in words');
      // Loaded: "No alerts sent yet." on a fresh server (deliveries outlive a deleted job of the
      // same name, so a server used before may list older ones).
      await visible(section.locator('.deliveries-box').locator('table.deliveries, p.empty'), 'the deliveries (or none) before the run');
      await page.evaluate(() => { window.__kairosNoReload = true; });
      const { id: runId } = await apiOk('POST', `/api/v1/jobs/${job}/trigger?namespace=${NS}`, {});
      // A delivery row is `tr[data-delivery][data-alert][data-state]`; its run link says which run.
      const delivered = section.locator('table.deliveries tbody tr[data-alert="failure"][data-state="delivered"]')
        .filter({ has: page.locator(`a.run-link[href="/runs/${runId}"]`) });
      await visible(delivered, `the delivered failure alert of run ${runId} on the job page`);
      await visible(delivered.locator(`.badge.delivery-state[data-state="delivered"]`), 'the delivered badge');
      await contains(delivered.locator('code.channel'), ALERT_CHANNEL, 'the channel');
      if (await page.evaluate(() => window.__kairosNoReload !== true)) fail('the job page was reloaded');
      const deliveries = await apiOk('GET', `/api/v1/alerts?namespace=${NS}&job=${job}`);
      const d = deliveries.find((x) => x.alert === 'failure' && x.run_id === runId);
      if (!d || d.state !== 'delivered') fail(`the API shows ${JSON.stringify(deliveries)}`);
      const id = await delivered.first().getAttribute('data-delivery');
      if (Number(id) !== d.id) fail(`the row is delivery ${id}, the API says ${d.id}`);

      // The /alerts page, from the header.
      await page.locator('header nav').getByRole('link', { name: 'Alerts', exact: true }).click();
      await waitFor('the alerts page', () => pathOf(page) === '/alerts');
      await visible(page.getByRole('heading', { level: 1, name: 'Alerts' }), 'the Alerts heading');
      const all = page.locator(`table.deliveries tbody tr[data-delivery="${d.id}"]`);
      await visible(all.locator('.badge.delivery-state[data-state="delivered"]'), `delivery ${d.id}, delivered, on /alerts`);
      if ((await all.getAttribute('data-alert')) !== 'failure') fail('the delivery on /alerts is not a failure alert');
      await visible(all.locator(`a.job-link[href="/jobs/${NS}/${job}"]`), 'the link to the job');
      await visible(all.locator(`a.run-link[href="/runs/${runId}"]`), 'the link to the run');
      await contains(all.locator('.summary-cell'), job, 'the summary');
      await shot(page, 'alerts.png');
      // The state filter is in the URL; Back undoes it.
      await page.locator('#f-alert-state').selectOption('failed');
      await waitFor('state=failed in the URL', () => queryOf(page, 'state') === 'failed');
      await gone(all, `delivery ${d.id} (delivered) under state=failed`);
      await page.goBack();
      await waitFor('the URL without a state', () => pathOf(page) === '/alerts' && queryOf(page, 'state') === null);
      await visible(all, `delivery ${d.id} again without the filter`);
      await page.goto(`${BASE}/alerts?state=delivered&namespace=${NS}`);
      await visible(all, `delivery ${d.id} under state=delivered&namespace=${NS}`);
      if ((await page.locator('#f-alert-state').inputValue()) !== 'delivered') fail('the state filter does not show the URL\'s state');
      if ((await page.locator('#f-alert-ns').inputValue()) !== NS) fail('the namespace filter does not show the URL\'s namespace');
      const shown = await shownAlerts(page);
      if (shown.length) fail(`the page shows an error: ${shown.join(' | ')}`);

      // A viewer sees the alerts too, read-only.
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const viewer = watch(await ctx.newPage());
      current = viewer;
      await signIn(viewer, VIEWER);
      await viewer.goto(`${BASE}/alerts`);
      await visible(viewer.locator(`table.deliveries tbody tr[data-delivery="${d.id}"][data-state="delivered"]`), `delivery ${d.id} for a viewer`);
      const n = await mutatingButtons(viewer);
      if (n) fail(`the alerts page shows ${n} mutating buttons to a viewer`);
      await viewer.goto(`${BASE}/jobs/${NS}/${job}`);
      await visible(viewer.locator(`section#alerts tr[data-delivery="${d.id}"]`), `delivery ${d.id} on the job page for a viewer`);
      await ctx.close();
      current = page;
    });
  }

  await browser.close();
  browser = null;
  console.log('\nUI test passed; screenshots in', SHOTS);
}

const watchdog = setTimeout(() => finishWithFailure(new Error(`the script took longer than ${DEADLINE / 1000} s`)), DEADLINE);
main().then(() => {
  clearTimeout(watchdog);
  process.exit(0);
}, (err) => finishWithFailure(err));
