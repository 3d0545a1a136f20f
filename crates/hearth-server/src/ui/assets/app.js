// Hearth admin UI: plain DOM, no framework, no build step.
//
// Everything the API returns is attacker-controlled (VM metadata, job names and output
// come from sandboxed code), so data only ever reaches the page as text: `textContent`,
// text nodes, or plain properties. Never build markup from strings.
'use strict';

const KEY_STORAGE = 'hearth.apiKey';
const TABS = ['vms', 'jobs', 'images', 'keys'];
const VM_STATES = ['creating', 'running', 'stopped', 'failed', 'deleted'];
const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'error'];
const POLL_MS = 2500;

const $ = (sel) => document.querySelector(sel);

const ui = {
  tab: 'vms',
  vm: null, // id of the VM shown in the detail pane
  job: null, // id of the job whose log is shown
  pollBusy: false,
  // A failing poll stops polling (no error spam) until the user loads something again.
  pollPaused: false,
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The key lives in sessionStorage only: gone with the tab, never in a URL or a cookie.
const apiKey = () => sessionStorage.getItem(KEY_STORAGE) || '';

// Calls the JSON API. Non-2xx answers throw ApiError carrying the API's own
// `{"error":{"code","message"}}`, so the user sees what the server said.
async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + apiKey() };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', 'server unreachable (' + e.message + ')');
  }
  const text = await resp.text();
  let data = text;
  if ((resp.headers.get('content-type') || '').startsWith('application/json') && text) {
    try {
      data = JSON.parse(text);
    } catch {
      // Not JSON after all: keep the text so it can still be shown.
    }
  }
  if (!resp.ok) {
    const err = data && typeof data === 'object' ? data.error : null;
    if (err) throw new ApiError(resp.status, String(err.code), String(err.message));
    throw new ApiError(resp.status, 'http_' + resp.status, String(text).trim() || resp.statusText);
  }
  return data;
}

const seg = (s) => encodeURIComponent(s);

// --- small DOM helpers -------------------------------------------------------------

// Builds an element; children that are not nodes become text nodes.
function el(tag, props, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') n.className = v;
    else if (k === 'onclick') n.addEventListener('click', v);
    else if (k.startsWith('data-')) n.setAttribute(k, v);
    else n[k] = v;
  }
  n.append(...children.map((c) => (c instanceof Node ? c : fmt(c))));
  return n;
}

const fmt = (v) => (v === null || v === undefined || v === '' ? '—' : String(v));

// Local time as YYYY-MM-DD HH:MM:SS; the full ISO string stays in the tooltip.
function fmtTime(iso) {
  if (!iso) return el('span', {}, '—');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return el('span', {}, iso);
  const p = (x) => String(x).padStart(2, '0');
  const s = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  return el('time', { dateTime: iso, title: iso }, s);
}

// A colored state label; the class comes from a fixed list, never from the data.
function badge(value, known) {
  const cls = known.includes(value) ? value : 'other';
  return el('span', { class: 'badge st-' + cls }, value);
}

function button(label, onclick, cls) {
  return el('button', { type: 'button', class: cls || 'small', onclick }, label);
}

function fillTable(table, rows, emptyText) {
  const body = table.tBodies[0];
  const cols = table.tHead.rows[0].cells.length;
  if (rows.length === 0) {
    body.replaceChildren(el('tr', {}, el('td', { colSpan: cols, class: 'empty' }, emptyText)));
  } else {
    body.replaceChildren(...rows);
  }
}

// --- errors and actions ------------------------------------------------------------

function showError(what, e) {
  const msg = e instanceof ApiError
    ? `${what} failed: ${e.message} (HTTP ${e.status || '—'}, ${e.code})`
    : `${what} failed: ${e && e.message ? e.message : e}`;
  const hint = e instanceof ApiError && e.status === 401 ? ' — enter a valid key above' : '';
  $('#error-text').textContent = msg + hint;
  $('#error').hidden = false;
}

function clearError() {
  $('#error').hidden = true;
  $('#error-text').textContent = '';
}

// Runs a user action: clears the last error, disables its button while it runs, and
// shows (never swallows) whatever went wrong.
async function act(what, btn, fn) {
  clearError();
  if (btn) btn.disabled = true;
  try {
    const r = await fn();
    ui.pollPaused = false;
    return r;
  } catch (e) {
    showError(what, e);
    return undefined;
  } finally {
    if (btn) btn.disabled = false;
  }
}

// --- VMs ---------------------------------------------------------------------------

async function loadVms() {
  const { vms } = await api('GET', '/v1/vms');
  const showDeleted = $('#vm-show-deleted').checked;
  const rows = vms
    .filter((vm) => showDeleted || vm.state !== 'deleted')
    .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)))
    .map(vmRow);
  fillTable($('#vm-table'), rows, 'No VMs.');
}

function vmRow(vm) {
  const state = el('td', { class: 'state' }, badge(vm.state, VM_STATES));
  if (vm.error) state.append(el('div', { class: 'error-text small' }, vm.error));
  const actions = el('td', { class: 'actions' }, button('Open', () => openVm(vm.id)));
  if (vm.state === 'running') {
    actions.append(button('Stop', (ev) => vmAction('Stopping VM', ev.target, vm.id, 'stop')));
  }
  if (vm.state === 'stopped') {
    actions.append(button('Start', (ev) => vmAction('Starting VM', ev.target, vm.id, 'start')));
  }
  if (vm.state !== 'deleted') {
    actions.append(button('Delete', (ev) => deleteVm(ev.target, vm.id), 'small danger'));
  }
  const tr = el('tr', { 'data-id': vm.id },
    el('td', {}, el('code', {}, vm.id)), state, el('td', {}, vm.image),
    el('td', {}, vm.vcpus), el('td', {}, vm.memory_mib), el('td', {}, vm.boot_ms),
    el('td', {}, fmtTime(vm.created_at)), actions);
  if (vm.id === ui.vm) tr.className = 'selected';
  return tr;
}

function vmAction(what, btn, id, verb) {
  return act(what, btn, async () => {
    await api('POST', `/v1/vms/${seg(id)}/${verb}`);
    await loadVms();
  });
}

function deleteVm(btn, id) {
  if (!confirm(`Delete VM ${id}? Its disk is destroyed.`)) return;
  act('Deleting VM', btn, async () => {
    await api('DELETE', `/v1/vms/${seg(id)}`);
    if (ui.vm === id) openVm(null);
    await loadVms();
  });
}

function openVm(id) {
  ui.vm = id;
  $('#vm-detail').hidden = !id;
  $('#vm-detail-id').textContent = id || '';
  $('#exec-result').hidden = true;
  $('#exec-status').textContent = '';
  $('#console-log').hidden = true;
  for (const tr of $('#vm-table').tBodies[0].rows) {
    tr.classList.toggle('selected', tr.dataset.id === id);
  }
}

async function createVm(ev) {
  ev.preventDefault();
  const f = ev.target;
  const body = {};
  for (const name of ['vcpus', 'memory_mib', 'ttl_s']) {
    if (f.elements[name].value !== '') body[name] = Number(f.elements[name].value);
  }
  const status = $('#vm-create-status');
  status.textContent = 'booting…';
  // Show the `creating` row while the boot (seconds) is under way.
  setTimeout(poll, 400);
  const vm = await act('Creating VM', f.querySelector('[type=submit]'), async () => {
    const vm = await api('POST', '/v1/vms', body);
    await loadVms();
    return vm;
  });
  status.textContent = vm ? `created ${vm.id} (boot ${fmt(vm.boot_ms)} ms)` : '';
  if (vm) openVm(vm.id);
}

async function execInVm(ev) {
  ev.preventDefault();
  const cmd = $('#exec-cmd').value;
  const id = ui.vm;
  $('#exec-status').textContent = 'running…';
  const r = await act('Exec', ev.target.querySelector('[type=submit]'),
    () => api('POST', `/v1/vms/${seg(id)}/exec`, { cmd }));
  $('#exec-status').textContent = '';
  if (!r || id !== ui.vm) return;
  $('#exec-exit').textContent = fmt(r.exit_code);
  const notes = [`${fmt(r.duration_ms)} ms`];
  if (r.timed_out) notes.push('timed out');
  if (r.stdout_truncated) notes.push('stdout truncated');
  if (r.stderr_truncated) notes.push('stderr truncated');
  $('#exec-meta').textContent = '(' + notes.join(', ') + ')';
  $('#exec-stdout').textContent = r.stdout;
  $('#exec-stderr').textContent = r.stderr;
  $('#exec-result').hidden = false;
}

async function tailConsole(ev) {
  const id = ui.vm;
  const r = await act('Reading the console', ev.target,
    () => api('GET', `/v1/vms/${seg(id)}/logs?tail=200`));
  if (!r || id !== ui.vm) return;
  const pre = $('#console-log');
  pre.textContent = r.lines.length ? r.lines.join('\n') : '(console log is empty)';
  pre.hidden = false;
  pre.scrollTop = pre.scrollHeight;
}

// --- Jobs --------------------------------------------------------------------------

const finalJob = (s) => !['queued', 'running'].includes(s);

async function loadJobs() {
  // The API lists newest first.
  const { jobs } = await api('GET', '/v1/jobs?limit=100');
  fillTable($('#job-table'), jobs.map(jobRow), 'No jobs.');
  const shown = jobs.find((j) => j.id === ui.job);
  // Follow the open job's log until it ends (and once more when it has).
  if (shown && (!finalJob(shown.status) || $('#job-detail-status').textContent !== shown.status)) {
    await showJob(shown);
  }
}

function jobRow(j) {
  const actions = el('td', { class: 'actions' },
    button('Logs', (ev) => act('Loading the job', ev.target, async () => {
      ui.job = j.id;
      await showJob(await api('GET', `/v1/jobs/${seg(j.id)}`));
    })));
  if (!finalJob(j.status)) {
    actions.append(button('Cancel', (ev) => act('Cancelling the job', ev.target, async () => {
      await api('POST', `/v1/jobs/${seg(j.id)}/cancel`);
      await loadJobs();
    }), 'small danger'));
  }
  const tr = el('tr', { 'data-id': j.id },
    el('td', {}, el('code', { title: j.id }, j.id.slice(0, 8))), el('td', {}, j.name),
    el('td', {}, j.language), el('td', { class: 'status' }, badge(j.status, JOB_STATUSES)),
    el('td', { class: 'exit' }, j.exit_code), el('td', {}, j.duration_ms),
    el('td', {}, fmtTime(j.queued_at)), actions);
  if (j.id === ui.job) tr.className = 'selected';
  return tr;
}

async function showJob(j) {
  const log = await api('GET', `/v1/jobs/${seg(j.id)}/logs`);
  $('#job-detail').hidden = false;
  $('#job-detail-id').textContent = j.id;
  const st = $('#job-detail-status');
  st.className = badge(j.status, JOB_STATUSES).className;
  st.textContent = j.status;
  const errs = [j.error, j.script_error ? JSON.stringify(j.script_error) : null].filter(Boolean);
  $('#job-detail-error').textContent = errs.join('\n');
  $('#job-detail-error').hidden = errs.length === 0;
  $('#job-log').textContent = log === '' ? (finalJob(j.status) ? '(no output)' : '(waiting for output…)') : log;
  if (j.log_truncated) $('#job-log').append('\n[log truncated]');
  for (const tr of $('#job-table').tBodies[0].rows) {
    tr.classList.toggle('selected', tr.dataset.id === j.id);
  }
}

async function submitJob(ev) {
  ev.preventDefault();
  const f = ev.target;
  const body = { language: f.elements.language.value, code: f.elements.code.value };
  if (f.elements.timeout_s.value !== '') body.timeout_s = Number(f.elements.timeout_s.value);
  const r = await act('Submitting the job', f.querySelector('[type=submit]'), async () => {
    const r = await api('POST', '/v1/jobs', body);
    ui.job = r.job_id;
    await loadJobs();
    return r;
  });
  $('#job-status').textContent = r ? `queued ${r.job_id}` : '';
}

// --- Images and keys ----------------------------------------------------------------

async function loadImages() {
  const { images } = await api('GET', '/v1/images');
  fillTable($('#image-table'), images.map((img) => el('tr', { 'data-id': img.id },
    el('td', {}, el('strong', {}, img.name)), el('td', {}, el('code', {}, img.id)),
    el('td', {}, img.source), el('td', {}, img.ready ? 'yes' : 'no'),
    el('td', { class: 'default' }, img.is_default ? el('span', { class: 'badge st-running' }, 'default') : ''),
    el('td', {}, fmtTime(img.created_at)))), 'No images.');
}

async function loadKeys() {
  const { keys } = await api('GET', '/v1/keys');
  fillTable($('#key-table'), keys.map((k) => el('tr', { 'data-id': k.id },
    el('td', {}, k.name), el('td', {}, el('code', {}, k.id)), el('td', {}, fmtTime(k.created_at)),
    el('td', { class: 'actions' }, button('Revoke', (ev) => {
      if (!confirm(`Revoke key "${k.name}"? Clients using it get 401 from now on.`)) return;
      act('Revoking the key', ev.target, async () => {
        await api('DELETE', `/v1/keys/${seg(k.id)}`);
        await loadKeys();
      });
    }, 'small danger')))), 'No keys.');
}

async function createKey(ev) {
  ev.preventDefault();
  const f = ev.target;
  await act('Creating the key', f.querySelector('[type=submit]'), async () => {
    const k = await api('POST', '/v1/keys', { name: f.elements.name.value });
    f.elements.name.value = '';
    $('#new-key-name').textContent = k.name;
    $('#new-key-value').textContent = k.key;
    $('#new-key').hidden = false;
    await loadKeys();
  });
}

// The new key is shown once: dismissing it or leaving the tab drops it from the page.
function hideNewKey() {
  $('#new-key').hidden = true;
  $('#new-key-value').textContent = '';
  $('#new-key-name').textContent = '';
}

// --- tabs, key, polling --------------------------------------------------------------

const LOADERS = { vms: loadVms, jobs: loadJobs, images: loadImages, keys: loadKeys };
const LABELS = { vms: 'Loading VMs', jobs: 'Loading jobs', images: 'Loading images', keys: 'Loading keys' };

function showTab(tab) {
  if (!TABS.includes(tab)) tab = 'vms';
  if (ui.tab === 'keys' && tab !== 'keys') hideNewKey();
  ui.tab = tab;
  for (const t of TABS) $('#tab-' + t).hidden = t !== tab;
  for (const b of document.querySelectorAll('nav .tab')) {
    b.classList.toggle('active', b.dataset.tab === tab);
  }
  history.replaceState(null, '', '#' + tab);
  return act(LABELS[tab], null, LOADERS[tab]);
}

// Keeps VM states and job statuses current on the two tabs where they change by themselves.
async function poll() {
  if (ui.pollBusy || ui.pollPaused || document.hidden || !apiKey()) return;
  if (ui.tab !== 'vms' && ui.tab !== 'jobs') return;
  ui.pollBusy = true;
  try {
    await LOADERS[ui.tab]();
  } catch (e) {
    ui.pollPaused = true;
    showError(LABELS[ui.tab], e);
  } finally {
    ui.pollBusy = false;
  }
}

function applyKey() {
  const has = apiKey() !== '';
  $('#app').hidden = !has;
  $('#need-key').hidden = has;
  $('#key-input').placeholder = has ? 'key set (enter another to replace it)' : 'hearth_…';
  // Rows loaded with another key must not linger under the new one.
  for (const t of document.querySelectorAll('main table')) t.tBodies[0].replaceChildren();
  for (const s of document.querySelectorAll('main .status')) s.textContent = '';
  openVm(null);
  ui.job = null;
  $('#job-detail').hidden = true;
  hideNewKey();
  clearError();
  if (has) showTab(ui.tab);
}

function init() {
  $('#key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('#key-input').value.trim();
    if (!v) return;
    sessionStorage.setItem(KEY_STORAGE, v);
    $('#key-input').value = '';
    applyKey();
  });
  $('#key-forget').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORAGE);
    applyKey();
  });
  $('#error-close').addEventListener('click', clearError);
  for (const b of document.querySelectorAll('nav .tab')) {
    b.addEventListener('click', () => showTab(b.dataset.tab));
  }
  for (const b of document.querySelectorAll('.refresh')) {
    b.addEventListener('click', () => act(LABELS[ui.tab], b, LOADERS[ui.tab]));
  }
  $('#vm-show-deleted').addEventListener('change', () => act(LABELS.vms, null, loadVms));
  $('#vm-create').addEventListener('submit', createVm);
  $('#exec-form').addEventListener('submit', execInVm);
  $('#console-load').addEventListener('click', tailConsole);
  $('#job-form').addEventListener('submit', submitJob);
  $('#key-create').addEventListener('submit', createKey);
  $('#new-key-done').addEventListener('click', hideNewKey);

  ui.tab = TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'vms';
  // Cosmetic only: an unreachable server shows up as an error on the first API call.
  fetch('/healthz').then((r) => r.json()).then((h) => {
    $('#version').textContent = 'v' + h.version;
  }).catch(() => {});
  applyKey();
  setInterval(poll, POLL_MS);
}

init();
