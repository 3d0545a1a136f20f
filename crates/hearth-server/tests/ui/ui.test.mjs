// Drives Debian's Chromium through the admin UI of a running `hearth serve`.
//
//   node ui.test.mjs <base-url> <api-key>
//
// Run by tests/ui.rs, which starts the server. Exits 0 when every check passed.
// HEARTH_UI_SCREENSHOTS=dir saves vms.png (a running VM, exec and console), jobs.png,
// keys.png and wrong-key.png there, to look at what a person sees.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const [base, key] = process.argv.slice(2);
if (!base || !key) {
  console.error('usage: node ui.test.mjs <base-url> <api-key>');
  process.exit(2);
}
// Booting under QEMU/TCG on a shared 2-core machine: seconds normally, minutes when busy.
const BOOT_MS = 180_000;
const JOB_MS = 240_000;

const started = Date.now();
const step = (s) => console.log(`[ui ${((Date.now() - started) / 1000).toFixed(1)}s] ${s}`);

// Direct API calls, for expected values and cleanup: the checks go through the page.
async function apiCall(method, path) {
  const r = await fetch(base + path, { method, headers: { Authorization: `Bearer ${key}` } });
  return r.headers.get('content-type')?.startsWith('application/json') ? r.json() : r.text();
}

// Whatever happens above, no VM this script made may outlive it (a leaked VM burns CPU
// for everyone); tests/ui.rs kills leftovers again as a last resort.
async function deleteAllVms() {
  try {
    const { vms } = await apiCall('GET', '/v1/vms');
    for (const vm of vms.filter((v) => v.state !== 'deleted')) {
      await apiCall('DELETE', `/v1/vms/${encodeURIComponent(vm.id)}`);
    }
  } catch (e) {
    console.error('cleanup: could not delete VMs:', e.message);
  }
}

const profile = mkdtempSync(join(tmpdir(), 'hearth-ui-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
  viewport: { width: 1280, height: 800 },
});
const page = context.pages()[0] ?? await context.newPage();
page.setDefaultTimeout(30_000);
// Delete and revoke ask for confirmation.
page.on('dialog', (d) => d.accept());
// Any console error (a CSP violation, an uncaught exception) fails the run.
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(String(e)));
// The checks provoke API errors on purpose (422, 401); Chromium logs each as an error.
const expectedError = (t) => /^Failed to load resource: .*status of 4\d\d/.test(t);

const errorBanner = page.locator('#error');
const noError = async () => {
  if (await errorBanner.isVisible()) assert.fail('error shown: ' + await errorBanner.textContent());
};
// Waits for `loc`, or fails at once with the error the page shows instead (a failed
// boot should not look like a time-out).
async function until(loc, timeout) {
  // `:visible`: the hidden banner is always in the DOM and must not count as a match.
  await loc.or(page.locator('#error:visible')).first().waitFor({ timeout });
  await noError();
}
const FINAL = /^(succeeded|failed|timed_out|cancelled|error)$/;
const vmRow = (id) => page.locator(`#vm-table tbody tr[data-id="${id}"]`);

async function shot(name) {
  const dir = process.env.HEARTH_UI_SCREENSHOTS;
  if (!dir) return;
  await page.screenshot({ path: join(dir, name + '.png'), fullPage: true });
  step(`screenshot ${join(dir, name + '.png')}`);
}

let failed = false;
try {
  step('load /ui via / and check the headers');
  const resp = await page.goto(base + '/');
  assert.equal(new URL(page.url()).pathname, '/ui');
  const h = resp.headers();
  assert.match(h['content-type'], /^text\/html/);
  assert.match(h['content-security-policy'], /default-src 'self'/);
  assert.doesNotMatch(h['content-security-policy'], /unsafe-inline/);
  assert.equal(h['x-content-type-options'], 'nosniff');
  await page.locator('#need-key').waitFor();
  assert.equal(await page.locator('#app').isHidden(), true, 'the app waits for a key');

  step('enter the key');
  await page.fill('#key-input', key);
  await page.click('#key-form button[type=submit]');
  await until(page.locator('#vm-table td.empty', { hasText: 'No VMs' }));
  assert.equal(await page.evaluate(() => sessionStorage.getItem('hearth.apiKey')), key);
  assert.ok(!page.url().includes(key), 'the key never goes into the URL');
  await noError();

  step('create a VM (boots under QEMU)');
  await page.fill('#vm-create input[name=vcpus]', '1');
  await page.fill('#vm-create input[name=memory_mib]', '512');
  // A TTL as a safety net: even a VM every cleanup missed dies by itself.
  await page.fill('#vm-create input[name=ttl_s]', '900');
  await page.click('#vm-create button[type=submit]');
  const status = page.locator('#vm-create-status');
  await until(status.filter({ hasText: 'created ' }), BOOT_MS);
  const vmId = (await status.textContent()).match(/created (\S+)/)[1];
  step(`VM ${vmId} created`);
  await until(vmRow(vmId).locator('td.state', { hasText: 'running' }), BOOT_MS);
  const cells = await vmRow(vmId).locator('td').allTextContents();
  const { images } = await apiCall('GET', '/v1/images');
  const defaultImage = images.find((i) => i.is_default).name;
  assert.equal(cells[2], defaultImage, 'image column: ' + cells);
  assert.equal(cells[3], '1');
  assert.equal(cells[4], '512');
  assert.match(cells[5], /^\d+$/, 'boot_ms is a number');

  step('exec `id -u` from the exec box');
  assert.equal(await page.locator('#vm-detail-id').textContent(), vmId, 'the new VM is open');
  await page.fill('#exec-cmd', 'id -u');
  await page.click('#exec-form button[type=submit]');
  await until(page.locator('#exec-result'), 60_000);
  assert.equal(await page.locator('#exec-exit').textContent(), '0');
  assert.equal((await page.locator('#exec-stdout').textContent()).trim(), '1000');

  step('exec output is shown as text, not markup');
  await page.fill('#exec-cmd', `echo '<img src=x id=pwned>'; echo oops >&2; exit 3`);
  await page.click('#exec-form button[type=submit]');
  await until(page.locator('#exec-exit', { hasText: '3' }), 60_000);
  assert.equal((await page.locator('#exec-stdout').textContent()).trim(), '<img src=x id=pwned>');
  assert.equal((await page.locator('#exec-stderr').textContent()).trim(), 'oops');
  assert.equal(await page.locator('#pwned').count(), 0);

  step('console tail');
  await page.click('#console-load');
  await until(page.locator('#console-log'));
  assert.ok((await page.locator('#console-log').textContent()).length > 20, 'console has lines');
  await noError();

  await shot('vms');

  step('an API error is shown: exec with an empty command');
  await page.fill('#exec-cmd', '');
  await page.click('#exec-form button[type=submit]');
  await errorBanner.waitFor();
  assert.match(await errorBanner.textContent(), /Exec failed: .*HTTP 4\d\d/);

  step('stop and start the VM');
  await vmRow(vmId).getByRole('button', { name: 'Stop' }).click();
  await until(vmRow(vmId).locator('td.state', { hasText: 'stopped' }), 60_000);
  await vmRow(vmId).getByRole('button', { name: 'Start' }).click();
  await until(vmRow(vmId).locator('td.state', { hasText: 'running' }), BOOT_MS);

  step('submit a python job');
  await page.click('nav .tab[data-tab=jobs]');
  await page.selectOption('#job-form select[name=language]', 'python');
  await page.fill('#job-form textarea[name=code]',
    'print("hello from the ui test")\nprint("<b>not bold</b>")');
  await page.click('#job-form button[type=submit]');
  await until(page.locator('#job-status', { hasText: 'queued ' }));
  const jobId = (await page.locator('#job-status').textContent()).match(/queued (\S+)/)[1];
  const jobRow = page.locator(`#job-table tbody tr[data-id="${jobId}"]`);
  await until(jobRow.locator('td.status').filter({ hasText: FINAL }), JOB_MS);
  const ended = await jobRow.locator('td.status').textContent();
  assert.equal(ended, 'succeeded', 'job: ' + await page.locator('#job-detail').textContent());
  assert.equal(await jobRow.locator('td.exit').textContent(), '0');
  step(`job ${jobId} succeeded`);
  await page.locator('#job-log', { hasText: 'hello from the ui test' }).waitFor();
  assert.match(await page.locator('#job-log').textContent(), /<b>not bold<\/b>/);
  assert.equal(await page.locator('#job-log b').count(), 0, 'job output is not parsed as HTML');
  await noError();
  await shot('jobs');

  step('cancel a long job');
  await page.selectOption('#job-form select[name=language]', 'sh');
  await page.fill('#job-form textarea[name=code]', 'sleep 600');
  await page.click('#job-form button[type=submit]');
  await until(page.locator('#job-status', { hasText: 'queued ' }).filter({ hasNotText: jobId }));
  const longId = (await page.locator('#job-status').textContent()).match(/queued (\S+)/)[1];
  const longRow = page.locator(`#job-table tbody tr[data-id="${longId}"]`);
  // Newest first: the job just submitted is the first row.
  assert.equal(await page.locator('#job-table tbody tr').first().getAttribute('data-id'), longId);
  await longRow.getByRole('button', { name: 'Cancel' }).click();
  await until(longRow.locator('td.status').filter({ hasText: FINAL }), JOB_MS);
  assert.equal(await longRow.locator('td.status').textContent(), 'cancelled');

  step('images: the default image is marked');
  await page.click('nav .tab[data-tab=images]');
  const imgRow = page.locator('#image-table tbody tr')
    .filter({ has: page.locator('td:first-child', { hasText: defaultImage }) });
  assert.equal(await imgRow.locator('td.default').textContent(), 'default');
  assert.equal(await page.locator('#image-table td.default .badge').count(), 1);

  step('keys: a new key is shown once, then revoked');
  await page.click('nav .tab[data-tab=keys]');
  await page.fill('#key-create input[name=name]', 'ui-test-key');
  await page.click('#key-create button[type=submit]');
  await until(page.locator('#new-key'));
  const newKey = (await page.locator('#new-key-value').textContent()).trim();
  assert.ok(newKey.length >= 20 && newKey !== key, 'a fresh key is shown');
  const keyRow = page.locator('#key-table tbody tr', { hasText: 'ui-test-key' });
  await keyRow.waitFor();
  await shot('keys');
  await page.click('#new-key-done');
  assert.equal(await page.getByText(newKey).count(), 0, 'the key is gone from the page');
  await page.click('nav .tab[data-tab=vms]');
  await page.click('nav .tab[data-tab=keys]');
  await keyRow.waitFor();
  assert.equal(await page.locator('#new-key').isHidden(), true, 'not shown again');
  await keyRow.getByRole('button', { name: 'Revoke' }).click();
  await keyRow.waitFor({ state: 'detached' });
  await noError();

  step('delete the VM');
  await page.click('nav .tab[data-tab=vms]');
  await vmRow(vmId).getByRole('button', { name: 'Delete' }).click();
  await vmRow(vmId).waitFor({ state: 'detached', timeout: 60_000 });
  await noError();
  const { vms } = await apiCall('GET', '/v1/vms');
  assert.equal(vms.find((v) => v.id === vmId)?.state, 'deleted');

  step('a wrong key shows the API 401 message');
  await page.fill('#key-input', 'not-a-valid-key');
  await page.click('#key-form button[type=submit]');
  await errorBanner.waitFor();
  const msg = await errorBanner.textContent();
  assert.match(msg, /invalid API key/);
  assert.match(msg, /HTTP 401/);
  await shot('wrong-key');

  const unexpected = consoleErrors.filter((t) => !expectedError(t));
  assert.deepEqual(unexpected, [], 'no console errors (CSP violations, exceptions)');
  step('all UI checks passed');
} catch (e) {
  failed = true;
  console.error('UI TEST FAILED:', e.stack || e);
  console.error('console errors:', consoleErrors);
  const shot = join(tmpdir(), `hearth-ui-failure-${process.pid}.png`);
  await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
  console.error('page at failure: ' + shot);
} finally {
  await deleteAllVms();
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
