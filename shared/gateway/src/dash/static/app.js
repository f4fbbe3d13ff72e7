// MCP-Sec Gateway admin dashboard.
//
// Security rules of this file:
// - Every value that came from the gateway (tool names, inputs, reasons, rule ids, YAML) may
//   have been written by a model, so it is rendered only as text: through `textContent`,
//   `createTextNode` or `JSON.stringify` into a text node. Nothing here parses HTML.
// - The admin key lives in sessionStorage (this tab only, gone when the tab closes) and is
//   sent only as the X-Admin-Key header to same-origin /api/ routes.
'use strict';

const KEY_STORAGE = 'mcpsec.adminKey';
const AUDIT_POLL_MS = 2000;
const ALERTS_POLL_MS = 10000;
const ALERTS_LIMIT = 200;
const VALIDATE_DELAY_MS = 400;

const state = {
  tab: null,
  sessions: [],
  selectedSession: null,
  traceEvents: [],
  baseVersion: null,
  auditTimer: null,
  auditGeneration: 0,
  auditPaused: false,
  alertsTimer: null,
  alertsGeneration: 0,
  validateTimer: null,
  validateSeq: 0,
};

// ---- DOM helpers -------------------------------------------------------------------------

function $(id) {
  return document.getElementById(id);
}

// Creates an element. `props` sets DOM properties (className, type, title, ...). Every
// child that is not a Node becomes a text node, so data never reaches an HTML parser.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === 'dataset') {
      Object.assign(node.dataset, value);
    } else {
      node[name] = value;
    }
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) {
  node.replaceChildren();
}

function setMessage(id, text, kind) {
  const node = $(id);
  node.textContent = text || '';
  node.className = 'message' + (kind ? ' ' + kind : '');
}

// Makes `button` ask for a second click before it runs `action`, in place of a native
// confirm() dialog. The armed state ends after 5 s.
function confirmingButton(button, confirmLabel, action) {
  const label = button.textContent;
  let timer = null;
  button.addEventListener('click', () => {
    if (button.classList.contains('armed')) {
      clearTimeout(timer);
      button.classList.remove('armed');
      button.textContent = label;
      action();
      return;
    }
    button.classList.add('armed');
    button.textContent = confirmLabel;
    timer = setTimeout(() => {
      button.classList.remove('armed');
      button.textContent = label;
    }, 5000);
  });
  return button;
}

function formatJson(value) {
  return value === undefined ? '' : JSON.stringify(value, null, 2);
}

function formatMilliseconds(value) {
  if (value === null || value === undefined || value === '') return '';
  const number = Number(value);
  if (!Number.isFinite(number)) return String(value);
  const digits = number < 10 ? 2 : 0;
  return number.toFixed(digits) + ' ms';
}

function formatTime(value) {
  if (!value) return '';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace('T', ' ').replace('Z', ' UTC');
}

// ---- API ---------------------------------------------------------------------------------

function adminKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

// Sends one request to the admin API and returns {status, body}. A 401 logs the user out,
// because the stored key is wrong. Network failures return status 0.
async function api(method, path, body) {
  const headers = { 'X-Admin-Key': adminKey() || '' };
  const init = { method, headers, credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    return { status: 0, body: { reason: 'request failed: ' + error.message } };
  }
  let parsed = null;
  const text = await response.text();
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { reason: text };
  }
  if (response.status === 401) {
    logout('The admin key was rejected. Log in again.');
  }
  return { status: response.status, body: parsed };
}

function failureText(result) {
  const reason = result.body && (result.body.reason || result.body.message);
  return 'HTTP ' + result.status + (reason ? ': ' + reason : '');
}

function notAvailableText(route) {
  return 'Not available: this gateway has no ' + route + ' route yet (HTTP 404).';
}

// ---- Login -------------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const key = $('admin-key').value;
  $('admin-key').value = '';
  sessionStorage.setItem(KEY_STORAGE, key);
  const check = await api('GET', '/api/sessions');
  if (check.status !== 200) {
    sessionStorage.removeItem(KEY_STORAGE);
    $('login-error').textContent = 'Login failed: ' + failureText(check);
    return;
  }
  showApp();
}

function logout(reason) {
  sessionStorage.removeItem(KEY_STORAGE);
  stopAuditPolling();
  stopAlertsPolling();
  $('app').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = reason || '';
  $('status').textContent = '';
  state.tab = null;
}

function showApp() {
  $('login').hidden = true;
  $('login-error').textContent = '';
  $('app').hidden = false;
  $('logout').hidden = false;
  $('status').textContent = 'Logged in';
  showTab('sessions');
}

// ---- Tabs --------------------------------------------------------------------------------

const TAB_LOADERS = {
  sessions: loadSessions,
  policy: loadPolicy,
  keys: loadKeys,
  audit: startAuditPolling,
  alerts: startAlertsPolling,
};

function showTab(name) {
  if (state.tab === 'audit' && name !== 'audit') stopAuditPolling();
  if (state.tab === 'alerts' && name !== 'alerts') stopAlertsPolling();
  state.tab = name;
  for (const button of document.querySelectorAll('[role=tab]')) {
    const selected = button.dataset.tab === name;
    button.setAttribute('aria-selected', String(selected));
    button.classList.toggle('active', selected);
  }
  for (const panel of document.querySelectorAll('.panel')) {
    panel.hidden = panel.id !== 'panel-' + name;
  }
  TAB_LOADERS[name]();
}

// ---- Sessions ----------------------------------------------------------------------------

async function loadSessions() {
  const result = await api('GET', '/api/sessions');
  if (result.status !== 200) {
    setMessage('sessions-message', 'Could not load sessions: ' + failureText(result), 'error');
    return;
  }
  state.sessions = (result.body && result.body.sessions) || [];
  const select = $('session-model');
  const chosen = select.value;
  const models = [...new Set(state.sessions.map((s) => String(s.model_id)))].sort();
  select.replaceChildren(el('option', { value: '' }, 'all models'), ...models.map((m) => el('option', { value: m }, m)));
  select.value = models.includes(chosen) ? chosen : '';
  renderSessions();
}

function renderSessions() {
  const model = $('session-model').value;
  const decision = $('session-decision').value;
  const rows = state.sessions.filter((s) => {
    if (model && String(s.model_id) !== model) return false;
    if (decision === 'denied' && !(s.denied > 0)) return false;
    if (decision === 'allowed' && s.denied > 0) return false;
    return true;
  });
  const body = $('sessions-body');
  clear(body);
  for (const session of rows) {
    const row = el('tr', { className: 'clickable', tabIndex: 0 },
      el('td', {}, el('code', {}, session.session_id)),
      el('td', {}, session.model_id),
      el('td', {}, formatTime(session.last_seen)),
      el('td', { className: 'number' }, session.calls),
      el('td', { className: 'number' + (session.denied > 0 ? ' deny' : '') }, session.denied));
    row.dataset.sessionId = String(session.session_id);
    if (session.session_id === state.selectedSession) row.classList.add('selected');
    row.addEventListener('click', () => openTrace(session.session_id));
    row.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') openTrace(session.session_id);
    });
    body.appendChild(row);
  }
  setMessage('sessions-message', rows.length + ' of ' + state.sessions.length + ' sessions shown.');
}

async function openTrace(sessionId) {
  state.selectedSession = sessionId;
  for (const row of $('sessions-body').children) {
    row.classList.toggle('selected', row.dataset.sessionId === String(sessionId));
  }
  $('trace-title').textContent = 'Trace of session ' + sessionId;
  const result = await api('GET', '/api/session/' + encodeURIComponent(sessionId));
  if (result.status !== 200) {
    state.traceEvents = [];
    clear($('trace-events'));
    setMessage('trace-message', 'Could not load the trace: ' + failureText(result), 'error');
    return;
  }
  state.traceEvents = (result.body && result.body.events) || [];
  renderTrace();
}

function field(list, name, value, className) {
  list.appendChild(el('dt', {}, name));
  list.appendChild(el('dd', className ? { className } : {}, value === null || value === undefined ? '' : value));
}

function renderTrace() {
  const decision = $('trace-decision').value;
  const events = state.traceEvents.filter((e) => !decision || e.decision === decision);
  const list = $('trace-events');
  clear(list);
  for (const event of events) {
    const upstream = event.upstream || {};
    const details = el('dl', { className: 'fields' });
    field(details, 'Time', formatTime(event.time));
    field(details, 'Model', event.model_id);
    field(details, 'Key id', event.key_id);
    field(details, 'Route', event.route);
    field(details, 'Tool', event.tool_name, 'tool');
    field(details, 'Decision', event.decision, event.decision === 'deny' ? 'deny' : 'allow');
    field(details, 'Reason', event.reason, 'reason');
    field(details, 'Rule', event.rule);
    field(details, 'Rules', (event.rules || []).join(', '));
    field(details, 'Latency', formatMilliseconds(event.latency_ms));
    field(details, 'Upstream', upstream.upstream);
    field(details, 'Upstream status', upstream.status);
    field(details, 'Upstream latency', formatMilliseconds(upstream.latency_ms));
    field(details, 'Response bytes', upstream.response_bytes);
    field(details, 'Upstream error', upstream.error, 'reason');
    field(details, 'Event id', event.event_id);
    const item = el('li', { className: 'event ' + (event.decision === 'deny' ? 'event-deny' : 'event-allow') },
      el('div', { className: 'event-head' },
        el('span', { className: 'badge ' + (event.decision === 'deny' ? 'deny' : 'allow') }, event.decision),
        ' ', el('code', {}, event.tool_name), ' ', el('span', { className: 'muted' }, formatTime(event.time))),
      details,
      el('h4', {}, 'Input'),
      el('pre', { className: 'json input' }, formatJson(event.input)),
      el('h4', {}, 'Shadow decision'),
      el('pre', { className: 'json shadow' }, event.shadow ? formatJson(event.shadow) : 'none'));
    list.appendChild(item);
  }
  setMessage('trace-message', events.length + ' of ' + state.traceEvents.length + ' events shown, oldest first.');
}

// ---- Policy ------------------------------------------------------------------------------

async function loadPolicy() {
  const result = await api('GET', '/api/config');
  if (result.status === 200) {
    state.baseVersion = result.body.version;
    $('policy-editor').value = result.body.policy_yaml;
    $('policy-base').textContent = String(result.body.version);
  } else if (result.status === 404) {
    state.baseVersion = null;
    $('policy-base').textContent = 'none (no policy stored yet)';
  } else {
    setMessage('policy-save-message', 'Could not load the policy: ' + failureText(result), 'error');
  }
  validateNow();
  loadVersions();
}

function scheduleValidation() {
  clearTimeout(state.validateTimer);
  setMessage('policy-validation', 'Checking…');
  state.validateTimer = setTimeout(validateNow, VALIDATE_DELAY_MS);
}

async function validateNow() {
  const seq = ++state.validateSeq;
  const result = await api('POST', '/api/policy/validate', { policy_yaml: $('policy-editor').value });
  if (seq !== state.validateSeq) return; // a newer edit has started its own check
  renderProblems(result.status === 400 && result.body ? result.body.problems : []);
  if (result.status === 200) {
    const summary = result.body.rules === undefined ? '' : ' (' + result.body.rules + ' rules, ' + result.body.limits + ' limits)';
    setMessage('policy-validation', 'Valid policy' + summary + '.', 'ok');
  } else if (result.status === 400) {
    setMessage('policy-validation', 'Invalid policy: fix the problems below before saving.', 'error');
  } else {
    setMessage('policy-validation', 'Validation failed: ' + failureText(result), 'error');
  }
}

function renderProblems(problems) {
  const list = $('policy-problems');
  clear(list);
  for (const problem of problems || []) {
    const where = (problem.line ?? '?') + ':' + (problem.column ?? '?');
    list.appendChild(el('li', {},
      el('code', {}, where), ' ',
      problem.field ? el('code', {}, problem.field) : null, problem.field ? ' ' : null,
      problem.message));
  }
}

async function savePolicy() {
  const body = { policy_yaml: $('policy-editor').value, comment: $('policy-comment').value };
  if (state.baseVersion !== null) body.base_version = state.baseVersion;
  const result = await api('PUT', '/api/config', body);
  if (result.status === 200) {
    setMessage('policy-save-message', 'Saved as version ' + result.body.version + '.', 'ok');
    $('policy-comment').value = '';
    state.baseVersion = result.body.version;
    $('policy-base').textContent = String(result.body.version);
    loadVersions();
  } else if (result.status === 409) {
    setMessage('policy-save-message',
      'Conflict: someone saved a newer version after ' + state.baseVersion + '. Your text is kept in the editor. ' +
      'Compare it with the newest version in the history, then Reload and apply your change again.', 'error');
    loadVersions();
  } else if (result.status === 400) {
    renderProblems(result.body && result.body.problems);
    setMessage('policy-save-message', 'Not saved: the policy is invalid. ' + failureText(result), 'error');
  } else {
    setMessage('policy-save-message', 'Not saved: ' + failureText(result), 'error');
  }
}

async function loadVersions() {
  const result = await api('GET', '/api/policy/versions');
  const body = $('versions-body');
  clear(body);
  if (result.status !== 200) {
    setMessage('diff-message', 'Could not load the version history: ' + failureText(result), 'error');
    return;
  }
  const versions = (result.body && result.body.versions) || [];
  versions.forEach((version, index) => {
    const id = String(version.version);
    const from = el('input', { type: 'radio', name: 'diff-from', value: id, checked: index === 1 });
    const to = el('input', { type: 'radio', name: 'diff-to', value: id, checked: index === 0 });
    from.setAttribute('aria-label', 'diff from ' + id);
    to.setAttribute('aria-label', 'diff to ' + id);
    const rollback = el('button', { type: 'button', className: 'small' }, 'Roll back to this');
    rollback.dataset.version = id;
    confirmingButton(rollback, 'Click again to roll back', () => rollbackTo(id));
    body.appendChild(el('tr', {},
      el('td', {}, from), el('td', {}, to),
      el('td', {}, el('code', {}, id)),
      el('td', {}, formatTime(version.saved_at)),
      el('td', {}, version.author),
      el('td', {}, version.comment),
      el('td', {}, index === 0 ? el('span', { className: 'muted' }, 'in force') : rollback)));
  });
}

async function showDiff() {
  const from = document.querySelector('input[name=diff-from]:checked');
  const to = document.querySelector('input[name=diff-to]:checked');
  if (!from || !to) {
    setMessage('diff-message', 'Select a "from" and a "to" version first.', 'error');
    return;
  }
  const query = '?from=' + encodeURIComponent(from.value) + '&to=' + encodeURIComponent(to.value);
  const result = await api('GET', '/api/policy/diff' + query);
  const output = $('diff-output');
  clear(output);
  if (result.status !== 200) {
    setMessage('diff-message', 'Could not compute the diff: ' + failureText(result), 'error');
    return;
  }
  setMessage('diff-message', 'Changes from ' + from.value + ' to ' + to.value + ':');
  const text = result.body.diff || '';
  if (!text) output.appendChild(el('span', { className: 'muted' }, 'no differences'));
  for (const line of text.split('\n')) {
    const kind = line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : line.startsWith('@@') ? 'hunk' : '';
    output.appendChild(el('span', { className: 'line ' + kind }, line + '\n'));
  }
}

async function rollbackTo(version) {
  // The old text is saved as a new version, based on the version this page last loaded.
  const body = state.baseVersion === null ? {} : { base_version: state.baseVersion };
  const result = await api('POST', '/api/policy/rollback/' + encodeURIComponent(version), body);
  if (result.status === 200) {
    setMessage('policy-save-message', 'Rolled back: version ' + version + ' is in force again as version ' + result.body.version + '.', 'ok');
    loadPolicy();
  } else if (result.status === 409) {
    setMessage('policy-save-message', 'Rollback not applied: the policy changed since this page loaded it. ' + failureText(result), 'error');
    loadVersions();
  } else {
    setMessage('policy-save-message', 'Rollback failed: ' + failureText(result), 'error');
  }
}

async function previewImpact() {
  const target = $('policy-impact-result');
  clear(target);
  target.appendChild(el('p', { className: 'message' }, 'Replaying recent calls against the edited policy…'));
  const result = await api('POST', '/api/policy/impact', { policy_yaml: $('policy-editor').value, limit: 1000 });
  clear(target);
  if (result.status === 404) {
    target.appendChild(el('p', { className: 'message error' }, notAvailableText('/api/policy/impact')));
    return;
  }
  if (result.status !== 200) {
    target.appendChild(el('p', { className: 'message error' }, 'Impact preview failed: ' + failureText(result)));
    return;
  }

  const changed = result.body.changed || [];
  target.appendChild(el('p', { className: 'message' },
    'Impact: ' + changed.length + ' of ' + result.body.evaluated + ' recent calls would get a different decision.'));
  if (result.body.note) target.appendChild(el('p', { className: 'hint' }, 'Note: ' + result.body.note));
  const byRule = result.body.by_rule || {};
  const ruleRows = Object.entries(byRule).map(([rule, counts]) =>
    el('tr', {}, el('td', {}, el('code', {}, rule)), el('td', { className: 'number' }, counts.allow_to_deny),
      el('td', { className: 'number' }, counts.deny_to_allow)));

  if (ruleRows.length) {
    target.appendChild(el('table', { className: 'grid' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Rule'), el('th', {}, 'allow → deny'), el('th', {}, 'deny → allow'))),
      el('tbody', {}, ...ruleRows)));
  }

  if (changed.length) {
    target.appendChild(el('table', { className: 'grid' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Event'), el('th', {}, 'Model'), el('th', {}, 'Tool'),
        el('th', {}, 'From'), el('th', {}, 'To'), el('th', {}, 'Rules'))),
      el('tbody', {}, ...changed.map((c) => el('tr', {},
        el('td', {}, el('code', {}, c.event_id)), el('td', {}, c.model_id), el('td', {}, el('code', {}, c.tool_name)),
        el('td', { className: 'nowrap' }, c.from), el('td', { className: 'nowrap' }, c.to),
        el('td', {}, (c.rules || []).join(', ')))))));
  }
}

// ---- Keys --------------------------------------------------------------------------------

async function loadKeys() {
  const result = await api('GET', '/api/keys');
  const body = $('keys-body');
  clear(body);
  if (result.status === 404) {
    $('keys-content').hidden = true;
    setMessage('keys-message', notAvailableText('/api/keys'), 'error');
    return;
  }
  $('keys-content').hidden = false;
  if (result.status !== 200) {
    setMessage('keys-message', 'Could not load keys: ' + failureText(result), 'error');
    return;
  }
  const models = (result.body && result.body.models) || [];
  for (const model of models) {
    const keys = model.keys && model.keys.length ? model.keys : [null];
    keys.forEach((key, index) => {
      const actions = el('td', { className: 'actions' });
      if (key && !key.revoked) {
        const revoke = el('button', { type: 'button', className: 'small danger' }, 'Revoke');
        revoke.dataset.keyId = String(key.key_id);
        confirmingButton(revoke, 'Click again to revoke', () => revokeKey(model.model_id, key.key_id));
        actions.appendChild(revoke);
      }
      if (index === 0 && !model.revoked) {
        const rotate = el('button', { type: 'button', className: 'small' }, 'Rotate');
        rotate.dataset.model = String(model.model_id);
        confirmingButton(rotate, 'Click again to rotate', () => rotateKey(model.model_id));
        actions.appendChild(rotate);
      }
      const revoked = model.revoked || (key && key.revoked);
      body.appendChild(el('tr', {},
        el('td', {}, index === 0 ? model.model_id : ''),
        el('td', {}, index === 0 ? (model.tools || []).join(', ') : ''),
        el('td', {}, key ? el('code', {}, key.key_id) : el('span', { className: 'muted' }, 'no keys')),
        el('td', {}, key ? formatTime(key.expires) || 'never' : ''),
        el('td', { className: revoked ? 'deny' : 'allow' }, revoked ? 'revoked' : 'active'),
        el('td', {}, index === 0 ? quarantineState(model.quarantined_until) : ''),
        actions));
    });
  }
  setMessage('keys-message', models.length + ' models.');
}

function quarantineState(until) {
  if (!until) return '';
  if (isFuture(until)) return el('span', { className: 'deny' }, 'quarantined until ' + formatTime(until));
  return el('span', { className: 'muted' }, 'ended ' + formatTime(until));
}

// Compares with this browser's clock, which can differ from the gateway's. The gateway
// alone decides whether a call is denied by a quarantine.
function isFuture(time) {
  const instant = Date.parse(time);
  return Number.isFinite(instant) && instant > Date.now();
}

function showNewKey(modelId, key) {
  $('new-key-model').textContent = modelId;
  $('new-key-value').textContent = key;
  $('new-key').hidden = false;
}

async function createKey(event) {
  event.preventDefault();
  const modelId = $('key-model').value.trim();
  const tools = $('key-tools').value.split(',').map((t) => t.trim()).filter(Boolean);
  const body = { model_id: modelId, tools };
  const expires = $('key-expires').value.trim();
  if (expires) body.expires = expires;
  const result = await api('POST', '/api/keys', body);
  if (result.status === 200 || result.status === 201) {
    showNewKey(modelId, result.body.key);
    $('key-form').reset();
    loadKeys();
  } else if (result.status === 404) {
    setMessage('keys-message', notAvailableText('POST /api/keys'), 'error');
  } else {
    setMessage('keys-message', 'Could not create the key: ' + failureText(result), 'error');
  }
}

async function revokeKey(modelId, keyId) {
  const result = await api('POST', '/api/keys/' + encodeURIComponent(modelId) + '/revoke', { key_id: keyId });
  if (result.status !== 200) {
    setMessage('keys-message', 'Could not revoke the key: ' + failureText(result), 'error');
    return;
  }
  $('new-key').hidden = true;
  loadKeys();
}

async function rotateKey(modelId) {
  const graceSeconds = Number.parseInt($('rotate-grace').value, 10);
  const body = Number.isFinite(graceSeconds) && graceSeconds >= 0 ? { grace_seconds: graceSeconds } : {};
  const result = await api('POST', '/api/keys/' + encodeURIComponent(modelId) + '/rotate', body);
  if (result.status !== 200) {
    setMessage('keys-message', 'Could not rotate the key: ' + failureText(result), 'error');
    return;
  }
  if (result.body && result.body.key) showNewKey(modelId, result.body.key);
  loadKeys();
}

// ---- Audit -------------------------------------------------------------------------------

function startAuditPolling() {
  stopAuditPolling();
  pollAudit(state.auditGeneration);
}

// Stops the polling loop. A request still in flight finds a newer generation when it
// returns and ends its loop, so leaving and reopening the tab never runs two loops.
function stopAuditPolling() {
  clearTimeout(state.auditTimer);
  state.auditTimer = null;
  state.auditGeneration += 1;
}

async function pollAudit(generation) {
  if (state.auditPaused) return;
  const result = await api('GET', '/api/audit?limit=200');
  if (generation !== state.auditGeneration || state.tab !== 'audit') return;
  if (result.status === 404) {
    setMessage('audit-message', notAvailableText('/api/audit'), 'error');
    return; // no point polling a route that does not exist
  }
  if (result.status === 200) {
    renderAudit((result.body && result.body.events) || []);
  } else {
    setMessage('audit-message', 'Could not load audit events: ' + failureText(result) + ' Retrying in 2 s.', 'error');
  }
  state.auditTimer = setTimeout(() => pollAudit(generation), AUDIT_POLL_MS);
}

function renderAudit(events) {
  const sorted = [...events].sort((a, b) => String(b.time).localeCompare(String(a.time)));
  const body = $('audit-body');
  clear(body);
  for (const event of sorted) {
    const upstream = event.upstream || {};
    body.appendChild(el('tr', {},
      el('td', {}, formatTime(event.time)),
      el('td', {}, event.model_id),
      el('td', {}, el('code', {}, event.session_id)),
      el('td', {}, el('code', {}, event.tool_name)),
      el('td', { className: event.decision === 'deny' ? 'deny' : 'allow' }, event.decision),
      el('td', {}, event.reason),
      el('td', {}, upstream.status === undefined || upstream.status === null ? '' : upstream.status)));
  }
  setMessage('audit-message', sorted.length + ' events, updated ' + formatTime(new Date().toISOString()) + '.');
}

function toggleAuditPause() {
  state.auditPaused = !state.auditPaused;
  $('audit-pause').textContent = state.auditPaused ? 'Resume' : 'Pause';
  if (state.auditPaused) stopAuditPolling();
  else startAuditPolling();
}

// ---- Alerts ------------------------------------------------------------------------------

// Readable name and severity of each detector. Denial spikes and scope probing look like an
// attack, a call-rate spike can also be ordinary load, and a first tool use is a notice.
const DETECTORS = {
  denial_spike: { label: 'Denial spike', severity: 'high' },
  scope_probing: { label: 'Scope probing', severity: 'high' },
  call_rate_spike: { label: 'Call-rate spike', severity: 'medium' },
  first_tool_use: { label: 'First tool use', severity: 'info' },
};

// Restarts the refresh loop and resolves once the first load has been rendered. Each loop
// has its own generation, so a response that arrives after the tab was left is dropped.
function startAlertsPolling() {
  stopAlertsPolling();
  return pollAlerts(state.alertsGeneration);
}

function stopAlertsPolling() {
  clearTimeout(state.alertsTimer);
  state.alertsTimer = null;
  state.alertsGeneration += 1;
}

async function pollAlerts(generation) {
  const again = await loadAlerts(generation);
  if (!again || generation !== state.alertsGeneration || state.tab !== 'alerts') return;
  state.alertsTimer = setTimeout(() => pollAlerts(generation), ALERTS_POLL_MS);
}

// Loads and renders the alerts, and returns whether polling should go on.
async function loadAlerts(generation) {
  const result = await api('GET', '/api/alerts?limit=' + ALERTS_LIMIT);
  if (generation !== state.alertsGeneration) return false;
  if (result.status === 404) {
    setMessage('alerts-message', notAvailableText('/api/alerts'), 'error');
    return false; // no point polling a route that does not exist
  }
  if (result.status !== 200) {
    setMessage('alerts-message', 'Could not load alerts: ' + failureText(result) + ' Retrying in 10 s.', 'error');
    return true;
  }

  // Rendering would replace a Lift button that waits for its second click, so this
  // refresh is skipped. The armed state ends within 5 s, before the next one.
  if ($('alerts-body').querySelector('button.armed')) return true;

  const alerts = (result.body && result.body.alerts) || [];
  const quarantined = alerts.some((alert) => alert.anomaly && alert.anomaly.quarantined_until);
  const keys = quarantined ? await api('GET', '/api/keys') : null;
  if (generation !== state.alertsGeneration) return false;
  const models = keys && keys.status === 200 ? modelQuarantines(keys.body) : null;
  renderAlerts(alerts, models);

  const updated = 'updated ' + formatTime(new Date().toISOString()) + '.';
  if (!alerts.length) {
    setMessage('alerts-message', 'No anomalies in the last 7 days, ' + updated);
  } else if (keys && keys.status !== 200) {
    setMessage('alerts-message', alerts.length + ' alerts, ' + updated +
      ' Could not check which models are still quarantined: ' + failureText(keys), 'error');
  } else {
    const capped = alerts.length >= ALERTS_LIMIT ? ' (the newest ' + ALERTS_LIMIT + ')' : '';
    setMessage('alerts-message', alerts.length + ' alerts' + capped + ' in the last 7 days, ' + updated);
  }
  return true;
}

// Returns a map from model id to its `quarantined_until` (null when not quarantined).
function modelQuarantines(body) {
  const models = (body && body.models) || [];
  return new Map(models.map((model) => [String(model.model_id), model.quarantined_until || null]));
}

function renderAlerts(alerts, models) {
  const sorted = [...alerts].sort((a, b) => (Date.parse(b.time) || 0) - (Date.parse(a.time) || 0));
  const body = $('alerts-body');
  clear(body);
  for (const alert of sorted) body.appendChild(alertRow(alert, models));
}

function alertRow(alert, models) {
  const details = alert.anomaly || {};
  const detector = DETECTORS[details.detector] || { label: String(details.detector || alert.rule || 'unknown'), severity: 'info' };
  const row = el('tr', {},
    el('td', { className: 'nowrap' }, formatTime(alert.time)),
    el('td', { className: 'nowrap' }, el('span', { className: 'badge severity-' + detector.severity }, detector.severity),
      ' ', detector.label),
    el('td', {}, ...scopeNodes(alert, details)),
    el('td', {}, observedText(details)),
    el('td', { className: 'reason' }, alert.reason),
    el('td', {}, alertDetails(alert, details, models)));
  row.dataset.eventId = String(alert.event_id);
  row.dataset.detector = String(details.detector);
  return row;
}

// The scope, then its subject: a button that opens the trace for a session, the model id
// otherwise. A session's alert also names the model of the call that crossed the threshold.
function scopeNodes(alert, details) {
  const scope = String(details.scope || '');
  const nodes = [el('span', { className: 'muted' }, scope), ' '];
  if (scope === 'session' && alert.session_id) {
    const link = el('button', { type: 'button', className: 'link', title: 'Open the trace of this session' }, alert.session_id);
    link.dataset.sessionId = String(alert.session_id);
    link.addEventListener('click', () => openSessionTrace(alert.session_id));
    nodes.push(link);
  } else if (scope === 'all') {
    nodes.push('all calls');
  } else {
    nodes.push(el('code', {}, details.subject));
  }
  if (scope !== 'model' && alert.model_id) {
    nodes.push(el('div', { className: 'muted' }, 'model ', el('code', {}, alert.model_id)));
  }
  return nodes;
}

function openSessionTrace(sessionId) {
  showTab('sessions');
  openTrace(sessionId);
}

function observedText(details) {
  if (details.detector === 'first_tool_use') return 'first allowed call';
  let text = details.observed + ' > ' + details.threshold + ' within ' + formatWindow(details.window_seconds);
  if (details.baseline !== undefined && details.baseline !== null) {
    text += ', baseline ' + Number(details.baseline).toFixed(1) + ' per window';
  }
  return text;
}

function formatWindow(seconds) {
  const number = Number(seconds);
  if (!Number.isFinite(number)) return String(seconds);
  if (number >= 3600 && number % 3600 === 0) return number / 3600 + ' h';
  if (number >= 60 && number % 60 === 0) return number / 60 + ' min';
  return number + ' s';
}

function alertDetails(alert, details, models) {
  const list = el('dl', { className: 'fields' });
  if (alert.tool_name) field(list, 'Tool', el('code', {}, alert.tool_name));
  if (details.tools && details.tools.length) field(list, 'Tools', details.tools.join(', '));
  field(list, 'Trigger', el('code', { className: 'trigger' }, details.trigger_event_id));
  if (details.quarantined_until) {
    field(list, 'Quarantine', el('span', { className: 'quarantine' }, ...quarantineNodes(alert, details.quarantined_until, models)));
  }
  return list;
}

// Builds "quarantined until T" and then the model's current state: a Lift button while it is
// still quarantined, or why there is none. `models` is null when the key list could not be read.
function quarantineNodes(alert, until, models) {
  const nodes = ['quarantined until ' + formatTime(until)];
  if (models === null) return nodes;
  const modelId = String(alert.model_id);
  if (!models.has(modelId)) {
    nodes.push(' ', el('span', { className: 'muted' }, '(no such model in the key list, so nothing was quarantined)'));
  } else if (isFuture(models.get(modelId))) {
    const lift = el('button', { type: 'button', className: 'small lift' }, 'Lift quarantine');
    lift.dataset.model = modelId;
    confirmingButton(lift, 'Click again to lift', () => liftQuarantine(modelId));
    nodes.push(' ', lift);
  } else {
    nodes.push(' ', el('span', { className: 'muted' }, '(lifted or ended)'));
  }
  return nodes;
}

async function liftQuarantine(modelId) {
  const result = await api('DELETE', '/api/keys/' + encodeURIComponent(modelId) + '/quarantine');
  if (result.status !== 200) {
    setMessage('alerts-message', 'Could not lift the quarantine of model ' + modelId + ': ' + failureText(result), 'error');
    return;
  }
  await startAlertsPolling();
  if (state.tab === 'alerts' && !$('alerts-message').classList.contains('error')) {
    setMessage('alerts-message', 'Lifted the quarantine of model ' + modelId + '.', 'ok');
  }
}

// ---- Start -------------------------------------------------------------------------------

function start() {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', () => logout('Logged out.'));
  for (const button of document.querySelectorAll('[role=tab]')) {
    button.addEventListener('click', () => showTab(button.dataset.tab));
  }
  $('sessions-refresh').addEventListener('click', loadSessions);
  $('session-model').addEventListener('change', renderSessions);
  $('session-decision').addEventListener('change', renderSessions);
  $('trace-decision').addEventListener('change', renderTrace);
  $('policy-editor').addEventListener('input', scheduleValidation);
  $('policy-reload').addEventListener('click', loadPolicy);
  $('policy-save').addEventListener('click', savePolicy);
  $('policy-diff').addEventListener('click', showDiff);
  $('policy-impact').addEventListener('click', previewImpact);
  $('key-form').addEventListener('submit', createKey);
  $('audit-pause').addEventListener('click', toggleAuditPause);
  $('alerts-refresh').addEventListener('click', startAlertsPolling);

  if (adminKey()) showApp();
}

document.addEventListener('DOMContentLoaded', start);
