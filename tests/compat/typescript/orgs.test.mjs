// Organizations, API keys, limits, signed file URLs, metrics and the routes of features that are
// not available yet, through the TypeScript SDK.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Daytona, DaytonaBadRequestError, DaytonaNotFoundError, DaytonaRateLimitError } from '@daytonaio/sdk';

import { client, withSandbox } from './helpers.mjs';

const admin = client();

/** Raw API request with the admin key and extra headers; returns { status, body }. */
async function request(method, path, body, headers = {}) {
  const response = await fetch(`${process.env.DAYTONA_API_URL}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${process.env.DAYTONA_API_KEY}`,
      'Content-Type': 'application/json',
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  try {
    return { status: response.status, body: JSON.parse(text) };
  } catch {
    return { status: response.status, body: text };
  }
}

/** Creates an organization with a key; returns { id, key, daytona } for it. */
async function newOrganization(limits) {
  const org = await request('POST', '/organizations', { name: `ts-${randomBytes(4).toString('hex')}` });
  assert.equal(org.status, 201, JSON.stringify(org.body));
  const key = await request(
    'POST',
    '/api-keys',
    { name: 'member', permissions: ['write:sandboxes', 'delete:sandboxes'] },
    { 'X-Daytona-Organization-ID': org.body.id },
  );
  assert.equal(key.status, 201, JSON.stringify(key.body));
  if (limits) {
    const patched = await request('PATCH', `/organizations/${org.body.id}/quota`, limits);
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
  }
  const daytona = new Daytona({ apiKey: key.body.value, apiUrl: process.env.DAYTONA_API_URL });
  return { id: org.body.id, key: key.body.value, daytona };
}

test('keys of another organization see none of its sandboxes', async () => {
  const other = await newOrganization();
  await withSandbox(admin, undefined, async (sandbox) => {
    await assert.rejects(other.daytona.get(sandbox.id), DaytonaNotFoundError);
    const ids = [];
    for await (const item of await other.daytona.list()) ids.push(item.id);
    assert.ok(!ids.includes(sandbox.id));
    assert.equal((await admin.get(sandbox.id)).state, 'started');
  });
});

test('a create over the limit raises DaytonaRateLimitError', async () => {
  const limited = await newOrganization({ maxSandboxes: 1 });
  const first = await limited.daytona.create();
  try {
    await assert.rejects(limited.daytona.create(), (error) => {
      assert.ok(error instanceof DaytonaRateLimitError, String(error));
      assert.equal(error.statusCode, 429);
      return true;
    });
  } finally {
    await limited.daytona.delete(first);
  }
  const second = await limited.daytona.create();
  await limited.daytona.delete(second);
});

test('downloadUrl and uploadUrl work without a key; rotation invalidates them', async () => {
  await withSandbox(admin, undefined, async (sandbox) => {
    await sandbox.fs.uploadFile(Buffer.from('signed from ts\n'), '/home/daytona/ts.txt');
    const url = await sandbox.downloadUrl('/home/daytona/ts.txt', 60);
    const response = await fetch(url);
    assert.equal(response.status, 200);
    assert.equal(await response.text(), 'signed from ts\n');

    const upload = await sandbox.uploadUrl('/home/daytona/ts-up.txt');
    const form = new FormData();
    form.append('file', new Blob(['uploaded from ts\n']), 'ts-up.txt');
    const uploaded = await fetch(upload, { method: 'POST', body: form });
    const uploadBody = await uploaded.text();
    if (!(uploaded.status === 404 && uploadBody.includes('upload-v2'))) {
      assert.equal(uploaded.status, 200, uploadBody);
      assert.equal((await sandbox.fs.downloadFile('/home/daytona/ts-up.txt')).toString(), 'uploaded from ts\n');
    }

    await sandbox.rotateSigningKey();
    assert.equal((await fetch(url)).status, 401);
    const fresh = await sandbox.downloadUrl('/home/daytona/ts.txt');
    assert.equal((await fetch(fresh)).status, 200);
  });
});

test('getMetrics returns the samples the server records', async () => {
  await withSandbox(admin, undefined, async (sandbox) => {
    // The server samples every 10 s by default.
    const deadline = Date.now() + 30_000;
    let samples = [];
    while (samples.length === 0) {
      assert.ok(Date.now() < deadline, 'no metrics sample within 30 s');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      samples = await sandbox.getMetrics();
    }
    const latest = samples[samples.length - 1];
    assert.equal(latest.cpuCount, sandbox.cpu);
    assert.equal(latest.memTotal, sandbox.memory * 2 ** 30);
    assert.ok(latest.memUsed > 0);
  });
});

test('network settings are stored and validated', async () => {
  // The suite's servers run without networking, so the settings are stored; the Python
  // suite's test_network.py checks that they are enforced.
  await withSandbox(admin, undefined, async (sandbox) => {
    await sandbox.updateNetworkSettings({ networkAllowList: '198.51.100.0/24' });
    assert.equal(sandbox.networkAllowList, '198.51.100.0/24');
    await sandbox.updateNetworkSettings({ networkBlockAll: true });
    assert.equal(sandbox.networkBlockAll, true);
    await assert.rejects(sandbox.updateNetworkSettings({ domainAllowList: 'not a domain' }), (error) => {
      assert.ok(error instanceof DaytonaBadRequestError, `${error}`);
      assert.match(error.message, /invalid domain/);
      return true;
    });
  });
});

test('features that are not available yet raise DaytonaBadRequestError', async () => {
  await withSandbox(admin, undefined, async (sandbox) => {
    const calls = {
      'secret.list': () => admin.secret.list(),
      'warmPool.list': () => admin.warmPool.list(),
      'computerUse.start': () => sandbox.computerUse.start(),
      'computerUse.mouse.click': () => sandbox.computerUse.mouse.click(10, 10),
    };
    for (const [name, call] of Object.entries(calls)) {
      await assert.rejects(call(), (error) => {
        assert.ok(error instanceof DaytonaBadRequestError, `${name}: ${error}`);
        assert.match(error.message, /not available yet|cannot be managed/, name);
        return true;
      });
    }
    // An image that was never imported: the message says how to import it.
    await assert.rejects(admin.snapshot.create({ name: 'ts-snap', image: 'python:3.12' }), (error) => {
      assert.ok(error instanceof DaytonaBadRequestError, `${error}`);
      assert.match(error.message, /import/);
      return true;
    });
  });
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
    probe.on('error', reject);
  });
}

/** Starts a `daytona server` whose sandbox starts hang while `hangFile` exists. */
async function startHangingServer() {
  const dir = mkdtempSync(join(tmpdir(), 'dtn-ts-orgs-'));
  const hangFile = join(dir, 'hang');
  const port = await freePort();
  const apiKey = `dtn_test_${randomBytes(16).toString('hex')}`;
  const apiUrl = `http://127.0.0.1:${port}/api`;
  const child = spawn(
    process.env.DAYTONA_BIN,
    [
      'server', '--data-dir', join(dir, 'data'), '--listen', `127.0.0.1:${port}`,
      '--image-cache', process.env.DAYTONA_IMAGE_CACHE ?? '/var/cache/daytona/images',
      '--daemon-binary', process.env.DAYTONA_DAEMON_BIN, '--ssh-listen', `127.0.0.1:${await freePort()}`, '--network-uplink', 'off', '--test-hang-start-file', hangFile,
    ],
    { env: { ...process.env, DAYTONA_ADMIN_API_KEY: apiKey, DAYTONA_LOG: 'info' }, stdio: 'ignore' },
  );
  const deadline = Date.now() + 600_000;
  for (;;) {
    try {
      if ((await fetch(`${apiUrl}/health`)).status === 200) break;
    } catch {
      // not listening yet
    }
    assert.ok(Date.now() < deadline, 'the server did not become healthy');
    await sleep(200);
  }
  const request = async (method, path) => {
    const response = await fetch(`${apiUrl}${path}`, { method, headers: { Authorization: `Bearer ${apiKey}` } });
    return { status: response.status, body: await response.json() };
  };
  return {
    client: new Daytona({ apiKey, apiUrl }),
    hangFile,
    request,
    async stop() {
      rmSync(hangFile, { force: true });
      const { body } = await request('GET', '/sandbox?limit=1000');
      for (const item of body.items ?? []) await request('DELETE', `/sandbox/${item.id}`);
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('on a server whose starts can be held', () => {
  let server;
  before(async () => {
    server = await startHangingServer();
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('waitUntilStarted ends on the event, before the next poll', async () => {
    const sandbox = await server.client.create();
    try {
      await sandbox.stop();
      writeFileSync(server.hangFile, '');
      let starting;
      let ended;
      let released;
      try {
        // Another client starts the sandbox; its start hangs while the file exists.
        starting = server.request('POST', `/sandbox/${sandbox.id}/start`);
        const deadline = Date.now() + 10_000;
        while ((await server.request('GET', `/sandbox/${sandbox.id}`)).body.state !== 'starting') {
          assert.ok(Date.now() < deadline, 'the start never began');
          await sleep(50);
        }
        // The SDK reads the state at once (starting), then polls once a second. The start is
        // let go just after its first poll, so polling alone could not end the wait sooner
        // than a second later.
        const waiting = sandbox.waitUntilStarted(30).then(() => {
          ended = Date.now();
        });
        await sleep(1200);
        released = Date.now();
        rmSync(server.hangFile, { force: true });
        await waiting;
      } finally {
        rmSync(server.hangFile, { force: true });
      }
      assert.equal((await starting).status, 200);
      assert.equal(sandbox.state, 'started');
      assert.ok(ended - released < 500, `the wait ended ${ended - released} ms after the start was let go`);
    } finally {
      await server.client.delete(sandbox).catch(() => {});
    }
  });
});
