// Browser tests of the admin dashboard at /dash.
//
// Starts the gateway binary ($MCPSEC_BIN, else target/debug/mcpsec) with the demo tools on a
// loopback port and a fresh data folder. Seeds tool calls through POST /mcp/toolcall, one of
// them with an HTML payload in its input and one denied with a reason full of HTML. Later
// tests raise denial spikes, one of a model id full of HTML and one that quarantines a model.
// Then drives the dashboard with Debian's Chromium (/usr/bin/chromium, or $CHROMIUM) through
// playwright-core, and takes a screenshot of each tab. The screenshots go to
// docs/screenshots/<tab>.png when UPDATE_SCREENSHOTS=1, and to a temporary folder otherwise,
// so an ordinary test run leaves the checkout unchanged.
//
// Run: node --test tests/browser/   (after `npm ci` in tests/browser)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = process.env.MCPSEC_BIN || join(ROOT, 'target/debug/mcpsec');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOTS = process.env.UPDATE_SCREENSHOTS === '1'
  ? join(ROOT, 'docs/screenshots')
  : mkdtempSync(join(tmpdir(), 'mcpsec-dash-screenshots-'));
const ADMIN_KEY = 'dashboard-test-admin-key';
const MODEL_KEY = 'modelkey-abc123'; // gpt-4o's demo key in examples/model_keys.yaml
const STARTUP_TIMEOUT_MS = 30_000;

const HOSTILE_INPUT = '<img src=x onerror=alert(1)>';
const HOSTILE_REASON = '<b>docs</b> & <script>alert(2)</script> need "review"';
const HOSTILE_SESSION = 'hostile-session';
// Model ids and session ids allow only letters, digits and `_ - . :`, so POST /mcp/toolcall
// rejects this id with 400 and it never reaches the store.
const HOSTILE_MODEL = '<img src=x onerror=alert(4)><b>x</b>';
// A model id that no key belongs to, claimed by calls with a wrong key; they raise a denial
// spike for their session, never for this model.
const CLAIMED_MODEL = 'claimed-model';
const ALERT_SESSION = 'alert-session';
const QUARANTINE_MODEL = 'quarantine-model';
const QUARANTINE_SESSION = 'quarantine-session';
// The detector follows the store about once a second, and the Alerts tab reloads every 10 s.
const ALERT_TIMEOUT_MS = 25_000;

// The example policy plus a rule whose reason is HTML, so the trace shows a hostile reason.
// Its denial spike threshold is low enough that four denied calls raise a spike and quarantine
// the model. The seeded calls contain only two denials, so they raise no spike of their own.
const POLICY_YAML = `version: 1
default: allow
rules:
  - id: no-calendar-deletes
    action: deny
    tools: ["calendar.delete_*"]
    reason: deleting calendar events needs a human; ask the user to do it
  - id: docs-need-review
    action: deny
    tools: ["search.docs"]
    reason: '${HOSTILE_REASON}'
limits:
  - id: session-burst
    per: session
    max_calls: 120
    window: 1m
    reason: more than 120 calls in one minute in this session; slow down
anomalies:
  denial_spike:
    threshold: 3
    window: 1m
  quarantine: 10m
`;

let gateway;
let baseUrl;
let dataDir;
let gatewayOutput = '';
let browser; // a persistent BrowserContext, so that the profile folder is a fresh temporary one
let page;
const dialogs = [];
const pageErrors = [];

// Starts the gateway and resolves with its base URL once it prints its listening line.
function startGateway() {
  dataDir = mkdtempSync(join(tmpdir(), 'mcpsec-dash-'));
  const policyFile = join(dataDir, 'policy.yaml');
  writeFileSync(policyFile, POLICY_YAML);
  const env = { ...process.env, PORT: '0', HOST: '127.0.0.1', DATA_DIR: join(dataDir, 'data'),
    ADMIN_KEY, SESSION_SECRET: 'dashboard-test-session-secret', POLICY_FILE: policyFile };
  delete env.MODEL_KEYS_FILE; // use examples/model_keys.yaml from the repository root
  delete env.TOOL_SERVER_URL;
  delete env.UPSTREAMS_FILE;
  gateway = spawn(BIN, ['serve', '--demo-tools'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(
      `gateway did not print its listening line within ${STARTUP_TIMEOUT_MS} ms; output:\n${gatewayOutput}`)),
    STARTUP_TIMEOUT_MS);
    const onData = (chunk) => {
      gatewayOutput += chunk;
      const match = /mcpsec: listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(gatewayOutput);
      if (match) {
        clearTimeout(timer);
        resolvePromise(match[1]);
      }
    };
    gateway.stdout.setEncoding('utf8').on('data', onData);
    gateway.stderr.setEncoding('utf8').on('data', onData);
    gateway.on('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`failed to start ${BIN}: ${error.message}; build it with cargo build -p mcpsec or set MCPSEC_BIN`));
    });
    gateway.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with code ${code} before listening; output:\n${gatewayOutput}`));
    });
  });
}

async function toolCall(sessionId, toolName, input, modelId = 'gpt-4o', modelKey = MODEL_KEY) {
  const response = await fetch(`${baseUrl}/mcp/toolcall`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Model-Key': modelKey },
    body: JSON.stringify({ model_id: modelId, session_id: sessionId, tool_name: toolName, input }),
  });
  return { status: response.status, body: await response.json() };
}

async function adminApi(method, path, body) {
  const headers = { 'X-Admin-Key': ADMIN_KEY };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${baseUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: response.status, body: await response.json().catch(() => null) };
}

async function openTab(name) {
  await page.click(`#tab-${name}`);
  await page.waitForSelector(`#panel-${name}:not([hidden])`);
}

async function screenshot(name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

describe('dashboard', () => {
  before(async () => {
    assert.ok(existsSync(BIN), `gateway binary ${BIN} not found; run cargo build -p mcpsec or set MCPSEC_BIN`);
    assert.ok(existsSync(CHROMIUM), `Chromium ${CHROMIUM} not found; run infra/install-test-deps.sh as root or set CHROMIUM`);
    mkdirSync(SCREENSHOTS, { recursive: true });
    baseUrl = await startGateway();

    const seeded = [
      await toolCall('calm-session', 'search.web', { query: 'rust axum', limit: 2 }),
      await toolCall('calm-session', 'calendar.list_events', {}),
      await toolCall(HOSTILE_SESSION, 'search.web', { query: HOSTILE_INPUT }),
      await toolCall(HOSTILE_SESSION, 'search.docs', { query: `"><svg onload=alert(3)>` }),
      await toolCall(HOSTILE_SESSION, 'calendar.delete_event', { id: 'evt-1' }),
    ];
    assert.deepEqual(seeded.map((call) => call.status), [200, 200, 200, 403, 403],
      `seed calls returned ${JSON.stringify(seeded)}`);

    // Playwright passes the fresh profile folder to Chromium as --user-data-dir.
    browser = await chromium.launchPersistentContext(join(dataDir, 'chromium-profile'), {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1400, height: 900 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = browser.pages()[0] ?? await browser.newPage();
    page.on('dialog', (dialog) => {
      dialogs.push(`${dialog.type()}: ${dialog.message()}`);
      dialog.dismiss().catch(() => {});
    });
    page.on('pageerror', (error) => pageErrors.push(error.message));
  });

  after(async () => {
    await browser?.close().catch(() => {});
    if (gateway && gateway.exitCode === null) {
      const exited = new Promise((resolvePromise) => gateway.once('exit', resolvePromise));
      gateway.kill('SIGTERM');
      const timer = setTimeout(() => gateway.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    if (process.env.UPDATE_SCREENSHOTS !== '1') rmSync(SCREENSHOTS, { recursive: true, force: true });
  });

  test('page has security headers', async () => {
    for (const path of ['/dash', '/dash/app.js', '/dash/app.css']) {
      const response = await fetch(`${baseUrl}${path}`);
      assert.equal(response.status, 200, `${path} status`);
      const csp = response.headers.get('content-security-policy') || '';
      assert.match(csp, /default-src 'none'/, `${path} CSP`);
      assert.match(csp, /script-src 'self'/, `${path} CSP`);
      assert.match(csp, /frame-ancestors 'none'/, `${path} CSP`);
      assert.equal(response.headers.get('x-content-type-options'), 'nosniff', `${path} nosniff`);
      assert.equal(response.headers.get('referrer-policy'), 'no-referrer', `${path} referrer policy`);
      assert.equal(response.headers.get('cache-control'), 'no-store', `${path} cache control`);
    }
    const types = await Promise.all(['/dash', '/dash/app.js', '/dash/app.css'].map(
      async (path) => (await fetch(`${baseUrl}${path}`)).headers.get('content-type')));
    assert.match(types[0], /^text\/html/);
    assert.match(types[1], /^text\/javascript/);
    assert.match(types[2], /^text\/css/);
  });

  test('api still requires admin key', async () => {
    const response = await fetch(`${baseUrl}/api/sessions`);
    assert.equal(response.status, 401);
  });

  test('login rejects wrong key', async () => {
    await page.goto(`${baseUrl}/dash`);
    await page.fill('#admin-key', 'wrong-key');
    await page.click('#login-button');
    await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('401'));
    assert.equal(await page.isVisible('#app'), false);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await screenshot('login');
  });

  test('login stores key in session storage', async () => {
    await page.fill('#admin-key', ADMIN_KEY);
    await page.click('#login-button');
    await page.waitForSelector('#panel-sessions:not([hidden])');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('mcpsec.adminKey')), ADMIN_KEY);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    const cookies = await browser.cookies();
    assert.equal(cookies.length, 0);
  });

  test('sessions tab lists and filters', async () => {
    await page.waitForSelector(`#sessions-body tr[data-session-id="${HOSTILE_SESSION}"]`);
    assert.equal(await page.locator('#sessions-body tr').count(), 2);
    await page.selectOption('#session-decision', 'denied');
    assert.equal(await page.locator('#sessions-body tr').count(), 1);
    await page.selectOption('#session-decision', 'allowed');
    assert.equal(await page.locator('#sessions-body tr').count(), 1);
    await page.selectOption('#session-decision', '');
    await page.selectOption('#session-model', 'gpt-4o');
    assert.equal(await page.locator('#sessions-body tr').count(), 2);
  });

  test('trace renders hostile data as text', async () => {
    await page.click(`#sessions-body tr[data-session-id="${HOSTILE_SESSION}"]`);
    await page.waitForFunction(() => document.querySelectorAll('#trace-events > li').length === 3);
    const trace = page.locator('#trace');
    const text = await trace.innerText();
    assert.ok(text.includes(HOSTILE_INPUT), 'the <img> payload is shown as literal text');
    assert.ok(text.includes(HOSTILE_REASON), 'the HTML reason is shown as literal text');
    assert.ok(text.includes('docs-need-review'), 'the matched rule is shown');
    assert.equal(await trace.locator('img').count(), 0, 'no <img> element in the trace panel');
    assert.equal(await trace.locator('script, svg, b').count(), 0, 'no element built from model data');
    await page.waitForTimeout(500); // give any injected handler time to fire
    assert.deepEqual(dialogs, [], 'no dialog opened');
    await screenshot('sessions');
  });

  test('policy tab validates saves and rolls back', async () => {
    await openTab('policy');
    await page.waitForFunction(() => document.getElementById('policy-validation').textContent.startsWith('Valid'));
    const original = await page.inputValue('#policy-editor');
    const baseVersion = await page.textContent('#policy-base');

    await page.fill('#policy-editor', 'version: 1\ndefault: allow\nrules:\n  - id: broken\n    action: maybe\n');
    await page.waitForFunction(() => document.getElementById('policy-problems').children.length > 0);
    const problem = await page.textContent('#policy-problems li');
    assert.match(problem, /^\d+:\d+ /, `problem shows line:column, got ${problem}`);

    const edited = original.replace('slow down', 'slow down, please');
    assert.notEqual(edited, original, 'the seed policy contains the limit reason this test edits');
    await page.fill('#policy-editor', edited);
    await page.waitForFunction(() => document.getElementById('policy-validation').textContent.startsWith('Valid'));
    await page.fill('#policy-comment', 'friendlier rate limit message');
    await page.click('#policy-save');
    await page.waitForFunction(() => document.getElementById('policy-save-message').textContent.startsWith('Saved'));
    const savedVersion = await page.textContent('#policy-base');
    assert.notEqual(savedVersion, baseVersion);
    await page.waitForFunction(() => document.querySelectorAll('#versions-body tr').length === 2);

    await page.click('#policy-diff');
    await page.waitForSelector('#diff-output .line.add');
    assert.match(await page.textContent('#diff-output'), /\+.*slow down, please/);
    await screenshot('policy');

    // A save based on an old version is a conflict, and the page shows it as one.
    const other = await adminApi('PUT', '/api/config', { policy_yaml: original, base_version: savedVersion, comment: 'other admin' });
    assert.equal(other.status, 200);
    await page.fill('#policy-editor', edited + '\n');
    await page.click('#policy-save');
    await page.waitForFunction(() => document.getElementById('policy-save-message').textContent.startsWith('Conflict'));
    await screenshot('policy-conflict');

    await page.click('#policy-reload');
    await page.waitForFunction(() => document.querySelectorAll('#versions-body tr').length === 3);
    const rollback = page.locator(`#versions-body button[data-version="${savedVersion}"]`);
    await rollback.click();
    assert.equal(await rollback.textContent(), 'Click again to roll back');
    await rollback.click();
    await page.waitForFunction(() => document.getElementById('policy-save-message').textContent.startsWith('Rolled back'));
    const current = await adminApi('GET', '/api/config');
    assert.equal(current.body.policy_yaml, edited);
    // The page reloads the editor after it reports the rollback, so wait for the new text.
    await page.waitForFunction((text) => document.getElementById('policy-editor').value === text, edited);
    assert.equal(await page.inputValue('#policy-editor'), edited);
  });

  test('policy impact preview', async (t) => {
    // Denying search.web changes the decision of the seeded search.web calls.
    const current = await page.inputValue('#policy-editor');
    const stricter = current.replace('rules:\n', 'rules:\n  - id: no-web-search\n    action: deny\n    tools: ["search.web"]\n    reason: web search is off\n');
    assert.notEqual(stricter, current);
    await page.fill('#policy-editor', stricter);
    await page.click('#policy-impact');
    await page.waitForFunction(() => !document.getElementById('policy-impact-result').textContent.startsWith('Replaying'));
    const text = await page.textContent('#policy-impact-result');
    await screenshot('policy-impact');
    await page.click('#policy-reload');
    if (text.startsWith('Not available')) {
      t.skip('POST /api/policy/impact answered 404: only the "not available" message was checked');
      return;
    }
    assert.match(text, /^Impact: [1-9]\d* of \d+ recent calls would get a different decision/);
    assert.match(text, /no-web-search/);
    assert.match(text, /search\.web/);
  });

  test('keys tab creates and revokes', async (t) => {
    await openTab('keys');
    await page.waitForFunction(() => document.getElementById('keys-message').textContent !== '');
    const probe = await adminApi('GET', '/api/keys');
    if (probe.status === 404) {
      assert.match(await page.textContent('#keys-message'), /^Not available/);
      await screenshot('keys');
      t.skip('GET /api/keys answered 404: the keys API is not in this build, so only the "not available" message was checked');
      return;
    }
    await page.fill('#key-model', 'dash-test-model');
    await page.fill('#key-tools', 'search.*');
    await page.click('#key-create');
    await page.waitForSelector('#new-key:not([hidden])');
    const key = await page.textContent('#new-key-value');
    assert.ok(key.length >= 16, 'the new key is shown once');
    const withNewKey = await toolCall('key-session', 'search.web', { query: 'new key' }, 'dash-test-model', key);
    assert.equal(withNewKey.status, 200, `call with the new key: ${JSON.stringify(withNewKey.body)}`);
    await screenshot('keys');

    const revoke = page.locator('#keys-body tr', { hasText: 'dash-test-model' }).locator('button', { hasText: 'Revoke' });
    await revoke.click();
    await revoke.click();
    await page.waitForFunction(() => [...document.querySelectorAll('#keys-body tr')]
      .some((row) => row.textContent.includes('dash-test-model') && row.textContent.includes('revoked')));
    const withRevokedKey = await toolCall('key-session', 'search.web', { query: 'revoked key' }, 'dash-test-model', key);
    assert.equal(withRevokedKey.status, 401, 'a call with the revoked key is rejected');
  });

  test('audit tab polls newest first', async (t) => {
    await openTab('audit');
    await page.waitForFunction(() => document.getElementById('audit-message').textContent !== '');
    const message = await page.textContent('#audit-message');
    if (message.startsWith('Not available')) {
      await screenshot('audit');
      t.skip('GET /api/audit answered 404: the audit feed is not in this build, so only the "not available" message was checked');
      return;
    }
    await page.waitForFunction(() => document.querySelectorAll('#audit-body tr').length >= 5);
    await toolCall('late-session', 'search.web', { query: 'arrives while the tab is open' });
    await page.waitForFunction(() => document.querySelector('#audit-body tr')?.textContent.includes('late-session'),
      null, { timeout: 6000 });
    assert.equal(await page.locator('#audit-body img').count(), 0);
    await screenshot('audit');
  });

  test('alerts tab shows empty state and errors', async () => {
    const alertsRoute = (url) => url.pathname === '/api/alerts';
    await page.route(alertsRoute, (route) => route.fulfill({
      status: 200, contentType: 'application/json', body: JSON.stringify({ count: 0, alerts: [] }) }));
    await openTab('alerts');
    await page.waitForFunction(() => document.getElementById('alerts-message').textContent
      .startsWith('No anomalies in the last 7 days'));
    assert.equal(await page.locator('#alerts-body tr').count(), 0);

    await page.unroute(alertsRoute);
    await page.route(alertsRoute, (route) => route.fulfill({
      status: 500, contentType: 'application/json', body: JSON.stringify({ reason: 'store unavailable' }) }));
    await page.click('#alerts-refresh');
    await page.waitForFunction(() => document.getElementById('alerts-message').textContent.startsWith('Could not load alerts'));
    assert.match(await page.textContent('#alerts-message'), /HTTP 500: store unavailable/);
    assert.equal(await page.getAttribute('#alerts-message', 'class'), 'message error');
    await page.unroute(alertsRoute);
  });

  test('alerts tab shows a failed-key spike of a session', async () => {
    // A model id with markup never reaches the store or the dashboard: the REST route rejects it.
    const markup = await toolCall(ALERT_SESSION, 'search.web', { query: 'probe' }, HOSTILE_MODEL, 'not-a-key');
    assert.equal(markup.status, 400, `a model id with markup: ${JSON.stringify(markup.body)}`);
    assert.match(markup.body.reason, /invalid `model_id`/);
    for (let call = 0; call < 4; call += 1) {
      const denied = await toolCall(ALERT_SESSION, 'search.web', { query: 'probe' }, CLAIMED_MODEL, 'not-a-key');
      assert.equal(denied.status, 401, `call ${call} with a wrong key: ${JSON.stringify(denied.body)}`);
    }
    await page.click('#alerts-refresh');
    // A failed key proves no model, so the spike is counted for the session and overall,
    // never for the model the calls claim: no quarantine can be raised that way.
    const sessionRow = page.locator('#alerts-body tr[data-detector="denial_spike"]', { hasText: 'model ' + CLAIMED_MODEL });
    await sessionRow.first().waitFor({ timeout: ALERT_TIMEOUT_MS });
    const sessionButton = page.locator(`#alerts-body button.link[data-session-id="${ALERT_SESSION}"]`);
    await sessionButton.waitFor({ timeout: ALERT_TIMEOUT_MS });

    const listed = await adminApi('GET', '/api/alerts');
    const spike = listed.body.alerts.find((alert) => alert.anomaly.detector === 'denial_spike'
      && alert.anomaly.scope === 'session' && alert.model_id === CLAIMED_MODEL);
    assert.ok(spike, `GET /api/alerts lists the session spike: ${JSON.stringify(listed.body)}`);
    const modelSpike = listed.body.alerts.find((alert) => alert.anomaly.scope === 'model' && alert.model_id === CLAIMED_MODEL);
    assert.equal(modelSpike, undefined, 'failed keys raise no spike for the model they claim');
    const row = page.locator(`#alerts-body tr[data-event-id="${spike.event_id}"]`);
    const text = await row.innerText();
    assert.ok(text.includes(CLAIMED_MODEL), 'the claimed model id is shown');
    assert.ok(text.includes('Denial spike'), 'the detector has a readable label');
    assert.equal(await row.locator('.badge.severity-high').textContent(), 'high');
    assert.ok(text.includes('4 > 3 within 1 min'), `observed against threshold and window, got ${text}`);
    assert.ok(text.includes(spike.anomaly.trigger_event_id), 'the trigger event id is shown');
    assert.ok(!text.includes('quarantined until'), 'a session spike quarantines nothing');
    assert.equal(await row.locator('button.lift').count(), 0);

    const panel = page.locator('#panel-alerts');
    assert.equal(await panel.locator('img').count(), 0, 'no <img> element in the alerts panel');
    assert.equal(await panel.locator('b, script, svg').count(), 0, 'no element built from model data');
    assert.deepEqual(dialogs, [], 'no dialog opened');

    await sessionButton.first().click();
    await page.waitForSelector('#panel-sessions:not([hidden])');
    await page.waitForFunction((id) => document.getElementById('trace-title').textContent === `Trace of session ${id}`,
      ALERT_SESSION);
    await page.waitForFunction(() => document.querySelectorAll('#trace-events > li').length === 4);
    assert.equal(await page.locator('#trace img, #trace b').count(), 0, 'no element built from the model id');
  });

  test('alerts tab lifts quarantine', async () => {
    const created = await adminApi('POST', '/api/keys', { model_id: QUARANTINE_MODEL, tools: ['search.*', 'calendar.*'] });
    assert.equal(created.status, 201, `create ${QUARANTINE_MODEL}: ${JSON.stringify(created.body)}`);
    const key = created.body.key;
    for (let call = 0; call < 4; call += 1) {
      const denied = await toolCall(QUARANTINE_SESSION, 'calendar.delete_event', { id: `evt-${call}` }, QUARANTINE_MODEL, key);
      assert.equal(denied.status, 403, `denied call ${call}: ${JSON.stringify(denied.body)}`);
    }

    await openTab('alerts');
    const lift = page.locator(`#alerts-body button.lift[data-model="${QUARANTINE_MODEL}"]`);
    await lift.waitFor({ timeout: ALERT_TIMEOUT_MS });
    const eventId = await lift.first().evaluate((button) => button.closest('tr').dataset.eventId);
    const row = page.locator(`#alerts-body tr[data-event-id="${eventId}"]`);
    assert.match(await row.innerText(), /Denial spike[\s\S]*quarantined until \d{4}-\d{2}-\d{2} /);
    const quarantined = await toolCall(QUARANTINE_SESSION, 'search.web', { query: 'during quarantine' }, QUARANTINE_MODEL, key);
    assert.equal(quarantined.status, 403, `a call during the quarantine: ${JSON.stringify(quarantined.body)}`);
    await screenshot('alerts');

    await openTab('keys');
    const keysRow = page.locator('#keys-body tr', { hasText: QUARANTINE_MODEL });
    await keysRow.waitFor();
    assert.match(await keysRow.innerText(), /quarantined until \d{4}-\d{2}-\d{2} /);

    await openTab('alerts');
    await lift.waitFor({ timeout: ALERT_TIMEOUT_MS });
    await lift.click();
    assert.equal(await lift.textContent(), 'Click again to lift');
    await lift.click();
    await page.waitForFunction(() => document.getElementById('alerts-message').textContent.startsWith('Lifted the quarantine'));
    assert.equal(await lift.count(), 0, 'the Lift button is gone once the model is no longer quarantined');
    assert.match(await row.innerText(), /quarantined until .* \(lifted or ended\)/);

    const models = await adminApi('GET', '/api/keys');
    const model = models.body.models.find((entry) => entry.model_id === QUARANTINE_MODEL);
    assert.equal(model.quarantined_until, null);
    const allowed = await toolCall(QUARANTINE_SESSION, 'search.web', { query: 'after the lift' }, QUARANTINE_MODEL, key);
    assert.equal(allowed.status, 200, `a call after the lift: ${JSON.stringify(allowed.body)}`);

    // With no click, the open tab reloads the list within its 10 s period.
    await page.waitForRequest((request) => new URL(request.url()).pathname === '/api/alerts', { timeout: 15_000 });
  });

  test('logout clears session storage', async () => {
    await page.click('#logout');
    await page.waitForSelector('#login:not([hidden])');
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    assert.equal(await page.isVisible('#app'), false);
  });

  test('no dialogs or script errors', () => {
    assert.deepEqual(dialogs, []);
    assert.deepEqual(pageErrors, []);
  });
});
