import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { shortId } from '../../src/common/ids.js';
import { ARTIFACTS, openBrowser, type Page } from './browser.js';
import { freePort, startFlotilla, CLI } from './harness.js';

const run = promisify(execFile);
const soon = { timeout: 20_000, interval: 250 };

function hello() {
  return 'hello';
}

describe('the dashboard page in Chromium', () => {
  const instance = `dash-${shortId(3)}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-'));
  let client: Client;
  let admin: string;
  let browser: Awaited<ReturnType<typeof openBrowser>>;
  let page: Page;

  beforeAll(async () => {
    const port = await freePort();
    admin = `http://127.0.0.1:${port}`;
    ({ client } = await startFlotilla({ instance, stateDir, admin: { host: '127.0.0.1', port } }));
    await client.createBackend('hello', hello, { replicaOptions: { numCpus: 0.5, memoryMb: 256 } });
    await client.createEndpoint('greet', { backend: 'hello', route: '/greet', methods: ['GET', 'POST'] });
    browser = await openBrowser();
    page = browser.page;
  });
  afterAll(async () => {
    await browser?.close();
    await client?.shutdown();
  });

  it('shows the page without a code but reads nothing: every data call answers 401', async () => {
    for (const path of ['/api/overview', '/api/series', '/api/events']) expect((await fetch(`${admin}${path}`)).status).toBe(401);
    const response = await page.goto(`${admin}/dashboard/`);
    expect(response?.status()).toBe(200);
    await expect.poll(() => page.locator('#status').innerText(), soon).toMatch(/no code: open the URL that `flotilla dashboard` prints/);
    expect(await page.locator('#endpoint-rows').innerText()).not.toMatch(/greet/);
    expect(browser.errors).toEqual([]);
  });

  it('opens with the URL `flotilla dashboard` prints and shows what the API reports, live; no cookie it holds reads anything', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'dashboard', '--address', admin, '--instance', instance, '--state-dir', stateDir]);
    const url = /^(http:\/\/\S+\/dashboard\/#code=\S+)$/m.exec(stdout)?.[1];
    expect(url).toBeDefined();
    const sent: Array<Record<string, string>> = [];
    page.on('request', (request) => {
      if (request.url().startsWith(`${admin}/api/`)) sent.push(request.headers());
    });
    await page.goto('about:blank');
    const opened = await page.goto(url ?? '');
    expect(opened?.status()).toBe(200);
    await expect.poll(() => page.locator('#status').innerText(), soon).toBe('Live.');
    expect(page.url()).toBe(`${admin}/dashboard/`);
    expect(await page.context().cookies()).toEqual([]);
    const code = new URL(url ?? '').hash.slice('#code='.length);
    const reused = await fetch(`${admin}/api/dashboard/sessions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ code }),
    });
    expect(reused.status).toBe(401);
    const reads = sent.filter((headers) => headers.authorization !== undefined);
    expect(reads.length).toBeGreaterThan(0);
    expect(sent.filter((headers) => headers.cookie !== undefined)).toEqual([]);
    const { authorization, ...withoutSession } = reads[0] ?? {};
    expect(authorization).toMatch(/^Bearer \S+$/);
    expect((await fetch(`${admin}/api/backends`, { headers: { authorization: authorization ?? '' } })).status).toBe(200);
    expect((await fetch(`${admin}/api/backends`, { headers: withoutSession })).status).toBe(401);

    const [replica] = await client.listReplicas('hello');
    const endpointRow = page.locator('#endpoint-rows tr[data-endpoint="greet"]');
    await expect.poll(() => endpointRow.innerText(), soon).toMatch(/greet\s+\/greet\s+GET, POST\s+hello 1/);
    const backend = page.locator('article[data-backend="hello"]');
    await expect
      .poll(() => backend.locator(`tr[data-replica="${replica?.id}"]`).innerText(), soon)
      .toMatch(/ready\s.*\s0\s+none\s+0\.5\s+256 MB\s+none/);
    expect(await backend.locator('dl').innerText()).toMatch(/1 ready of 1/);
    await expect.poll(() => page.locator('#event-rows').innerText(), soon).toMatch(/endpoint\.created[\s\S]*backend\.created/);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-start.png'), fullPage: true });

    await client.updateBackendConfig('hello', { numReplicas: 2 });
    const replicas = await client.listReplicas('hello');
    expect(replicas).toHaveLength(2);
    await expect.poll(() => backend.locator('tbody tr[data-replica]').count(), soon).toBe(2);
    await expect.poll(() => backend.locator('dl').innerText(), soon).toMatch(/2 ready of 2/);
    const added = replicas.find((r) => r.id !== replica?.id)?.id;
    await expect
      .poll(() => page.locator('#event-rows').innerText(), soon)
      .toMatch(new RegExp(`replica\\.ready\\s+backend hello, replica ${added}`));
    await expect
      .poll(() => page.locator('#event-rows tr').first().innerText(), soon)
      .toMatch(/backend\.scaled\s+backend hello\s+.*from 1 to 2/);

    await client.createBackend('mirror', hello, { replicaOptions: { numCpus: 0.5 } });
    await client.shadowTraffic('greet', 'mirror', 1);
    await expect.poll(() => endpointRow.innerText(), soon).toMatch(/hello 1\s+mirror 1/);
    expect(await page.locator('#charts').innerText()).toMatch(/No requests/);
    const answers = await Promise.all(Array.from({ length: 60 }, () => fetch(`${client.httpUrl}/greet`)));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const requests = page.locator('figure[data-kind="endpoint"][data-name="greet"] svg').first();
    await expect.poll(() => requests.getAttribute('aria-label'), soon).toMatch(/peak [1-9][0-9.]* \/s/);
    expect(await page.locator('figure[data-kind="backend"][data-name="hello"] polyline').count()).toBeGreaterThan(0);
    await expect.poll(() => page.locator('#shadow-rows tr').innerText(), soon).toMatch(/greet\s+mirror\s+60 .*100 % of 60\s+0 \/ 0/);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-traffic.png'), fullPage: true });

    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Skip to content');
    await page.getByRole('button', { name: `Show log of replica ${replica?.id}` }).focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('#log-text').innerText(), soon).toMatch(/^\d{4}-\d\d-\d\dT\S+Z .*"event":"ready"/m);
    await page.locator('#log').screenshot({ path: join(ARTIFACTS, 'dashboard-log.png') });
    expect(browser.errors).toEqual([]);
  });
});
