// Preview URLs with the TypeScript SDK, and a page loaded in headless Chromium through one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { api, client } from './helpers.mjs';

const APP = new URL('../../support/preview_app.py', import.meta.url);
const CHROMIUM = '/usr/bin/chromium';

const daytona = client();
let sandbox;

/**
 * GET through the preview proxy. Node's resolver does not map `*.localhost` to loopback, so
 * the request goes to 127.0.0.1 with the preview host in `Host`.
 */
function get(url, headers = {}) {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const outgoing = request(
      {
        host: '127.0.0.1',
        port: target.port,
        path: target.pathname + target.search,
        headers: { Host: target.host, ...headers },
      },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, body }));
      },
    );
    outgoing.on('error', reject);
    outgoing.end();
  });
}

async function waitForApp(url, token) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const reply = await get(`${url}/hello`, { 'x-daytona-preview-token': token });
    if (reply.status === 200) return;
    if (Date.now() > deadline) throw new Error(`the app did not answer: ${reply.status} ${reply.body}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

before(async () => {
  sandbox = await daytona.create();
  await sandbox.fs.uploadFile(readFileSync(APP), '/tmp/preview_app.py');
  await sandbox.process.createSession('preview-app');
  await sandbox.process.executeSessionCommand('preview-app', {
    command: 'python3 /tmp/preview_app.py 0.0.0.0 8080',
    runAsync: true,
  });
  const link = await sandbox.getPreviewLink(8080);
  await waitForApp(link.url, link.token);
});

after(async () => {
  if (sandbox) await daytona.delete(sandbox).catch(() => {});
});

test('getPreviewLink opens a private sandbox with its token', async () => {
  const link = await sandbox.getPreviewLink(8080);
  assert.match(link.url, new RegExp(`^http://8080-${sandbox.id}\\.localhost:\\d+$`));
  assert.ok(link.token);
  assert.equal((await get(`${link.url}/hello`)).status, 401);
  const reply = await get(`${link.url}/hello`, { 'x-daytona-preview-token': link.token });
  assert.equal(reply.status, 200);
  assert.equal(reply.body, 'hello from port 8080\n');
});

test('signed preview URLs work until expired', async () => {
  const signed = await sandbox.getSignedPreviewUrl(8080, 120);
  assert.equal(signed.port, 8080);
  assert.equal(signed.sandboxId, sandbox.id);
  const reply = await get(`${signed.url}/hello`);
  assert.equal(reply.status, 200);
  await sandbox.expireSignedPreviewUrl(8080, signed.token);
  assert.equal((await get(`${signed.url}/hello`)).status, 401);
});

test('a public sandbox needs no token', async () => {
  const link = await sandbox.getPreviewLink(8080);
  assert.equal((await api('POST', `/sandbox/${sandbox.id}/public/true`)).status, 200);
  try {
    assert.equal((await get(`${link.url}/hello`)).status, 200);
  } finally {
    assert.equal((await api('POST', `/sandbox/${sandbox.id}/public/false`)).status, 200);
  }
  assert.equal((await get(`${link.url}/hello`)).status, 401);
});

test('Chromium loads a preview page whose WebSocket echoes', async (t) => {
  if (!existsSync(CHROMIUM)) {
    console.log(`SKIPPED: ${CHROMIUM} is not installed (Debian package chromium)`);
    t.skip('chromium is not installed');
    return;
  }
  const { chromium } = await import('playwright-core');
  const profile = mkdtempSync(join(tmpdir(), 'preview-chromium-'));
  // Flags that keep Chromium from contacting any outside host.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    const link = await sandbox.getPreviewLink(8080);
    const page = await context.newPage();
    // The token in the query sets the cookie that the page's WebSocket then carries.
    const response = await page.goto(`${link.url}/?DAYTONA_SANDBOX_AUTH_KEY=${link.token}`);
    assert.equal(response.status(), 200);
    assert.equal(await page.textContent('#title'), 'preview app on port 8080');
    await page.waitForFunction(() => document.getElementById('echo').textContent.startsWith('echo:'), null, {
      timeout: 20_000,
    });
    assert.equal(await page.textContent('#echo'), 'echo: hello over websocket');

    // Without a token, a navigation gets the 401 page, not a redirect.
    await context.clearCookies();
    const other = await context.newPage();
    const denied = await other.goto(`${link.url}/`);
    assert.equal(denied.status(), 401);
    assert.match(await other.textContent('h1'), /needs a token/);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
});
