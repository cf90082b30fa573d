import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Daytona } from '@daytonaio/sdk';

import { api, client, withSandbox } from './helpers.mjs';

const daytona = client();

test('create answers started', async () => {
  const started = Date.now();
  await withSandbox(daytona, undefined, async (sandbox) => {
    assert.equal(sandbox.state, 'started');
    assert.equal(sandbox.user, 'daytona');
    assert.equal(sandbox.cpu, 1);
    assert.ok(Date.now() - started < 1000, 'create polled for its state');
  });
});

test('get by id and by name, list', async () => {
  const name = `ts-${Math.random().toString(16).slice(2, 10)}`;
  await withSandbox(daytona, { name, labels: { suite: 'ts' } }, async (sandbox) => {
    assert.equal((await daytona.get(sandbox.id)).id, sandbox.id);
    assert.equal((await daytona.get(name)).id, sandbox.id);
    const ids = [];
    for await (const item of await daytona.list()) ids.push(item.id);
    assert.ok(ids.includes(sandbox.id));
  });
});

test('delete then get is not found', async () => {
  const sandbox = await daytona.create();
  await daytona.delete(sandbox);
  await assert.rejects(daytona.get(sandbox.id), (error) => error.statusCode === 404);
});

test('stop keeps files, start brings them back', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    await sandbox.fs.uploadFile(Buffer.from('kept'), '/home/daytona/kept.txt');
    await sandbox.stop();
    assert.equal(sandbox.state, 'stopped');
    await sandbox.start();
    assert.equal(sandbox.state, 'started');
    assert.equal((await sandbox.fs.downloadFile('/home/daytona/kept.txt')).toString(), 'kept');
  });
});

test('archive moves files away, start restores them', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    await sandbox.fs.uploadFile(Buffer.from('archived'), '/home/daytona/kept.txt');
    await sandbox.stop();
    await sandbox.archive();
    const deadline = Date.now() + 30_000;
    while (sandbox.state !== 'archived' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      await sandbox.refreshData();
    }
    assert.equal(sandbox.state, 'archived');
    await sandbox.start();
    assert.equal(sandbox.state, 'started');
    assert.equal((await sandbox.fs.downloadFile('/home/daytona/kept.txt')).toString(), 'archived');
  });
});

test('home and work dir', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    assert.equal(await sandbox.getUserHomeDir(), '/home/daytona');
    assert.equal(await sandbox.getWorkDir(), '/home/daytona');
  });
});

// State machine, settings and the reconciler.

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` until it returns a truthy value; fails after `timeoutMs`. */
async function waitUntil(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(250);
  }
}

async function stateOrGone(client, id) {
  try {
    return (await client.get(id)).state;
  } catch (error) {
    if (error.statusCode === 404) return 'gone';
    throw error;
  }
}

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

/**
 * Starts a second `daytona server` whose lifecycle minute lasts one second, whose transitions
 * time out after 5 s, and whose starts hang while `hangFile` exists.
 */
async function startFastServer() {
  const dataDir = mkdtempSync(join(tmpdir(), 'dtn-ts-'));
  const hangFile = join(dataDir, 'hang');
  const port = await freePort();
  const apiKey = `dtn_test_${randomBytes(16).toString('hex')}`;
  const apiUrl = `http://127.0.0.1:${port}/api`;
  const child = spawn(
    process.env.DAYTONA_BIN,
    [
      'server', '--data-dir', join(dataDir, 'data'), '--listen', `127.0.0.1:${port}`,
      '--image-cache', process.env.DAYTONA_IMAGE_CACHE ?? '/var/cache/daytona/images',
      '--daemon-binary', process.env.DAYTONA_DAEMON_BIN, '--ssh-listen', `127.0.0.1:${await freePort()}`, '--network-uplink', 'off',
      '--lifecycle-minute', '1', '--transition-timeout', '5', '--test-hang-start-file', hangFile,
    ],
    { env: { ...process.env, DAYTONA_ADMIN_API_KEY: apiKey, DAYTONA_LOG: 'info' }, stdio: 'ignore' },
  );
  try {
    await waitUntil(async () => {
      if (child.exitCode !== null) throw new Error(`the fast server exited with ${child.exitCode}`);
      try {
        return (await fetch(`${apiUrl}/health`)).status === 200;
      } catch {
        return false;
      }
    }, 600_000, 'the fast server to be healthy');
  } catch (error) {
    child.kill('SIGTERM');
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }
  const request = async (method, path) => {
    const response = await fetch(`${apiUrl}${path}`, { method, headers: { Authorization: `Bearer ${apiKey}` } });
    return { status: response.status, body: await response.json() };
  };
  return {
    client: new Daytona({ apiKey, apiUrl }),
    dataDir: join(dataDir, 'data'),
    hangFile,
    request,
    async stop() {
      try {
        const { body } = await request('GET', '/sandbox?limit=1000');
        for (const item of body.items ?? []) await request('DELETE', `/sandbox/${item.id}`);
      } finally {
        const exited = new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
        child.kill('SIGTERM');
        await exited;
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  };
}

test('stop and start report the new state, delete then 404 (B17)', async () => {
  const sandbox = await daytona.create();
  await sandbox.stop();
  assert.equal(sandbox.state, 'stopped');
  assert.equal((await daytona.get(sandbox.id)).state, 'stopped');
  await sandbox.start();
  assert.equal(sandbox.state, 'started');
  await sandbox.refreshData();
  assert.equal(sandbox.state, 'started');
  await sandbox.delete();
  assert.equal(sandbox.state, 'destroyed');
  await assert.rejects(daytona.get(sandbox.id), (error) => error.statusCode === 404);
});

test('force stop does not wait for a grace time', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    await sandbox.process.executeCommand(`nohup sh -c 'trap "" TERM; sleep 600' >/dev/null 2>&1 &`);
    const started = Date.now();
    await sandbox.stop(60, true);
    assert.equal(sandbox.state, 'stopped');
    assert.ok(Date.now() - started < 3000, 'force stop waited');
  });
});

test('waitUntilStopped and waitUntilStarted follow another client', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    assert.equal((await api('POST', `/sandbox/${sandbox.id}/stop`)).body.state, 'stopped');
    await sandbox.waitUntilStopped(30);
    assert.equal(sandbox.state, 'stopped');
    assert.equal((await api('POST', `/sandbox/${sandbox.id}/start`)).body.state, 'started');
    await sandbox.waitUntilStarted(30);
    assert.equal(sandbox.state, 'started');
  });
});

test('resize a started and a stopped sandbox', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    await sandbox.resize({ cpu: 2, memory: 2 });
    assert.equal(sandbox.cpu, 2);
    assert.equal(sandbox.memory, 2);
    await assert.rejects(sandbox.resize({ cpu: 1 }), (error) => error.statusCode === 400);
    await sandbox.stop();
    await sandbox.resize({ cpu: 1, memory: 1, disk: 5 });
    assert.equal(sandbox.disk, 5);
    await assert.rejects(sandbox.resize({ disk: 4 }), (error) => error.statusCode === 400);
    await sandbox.start();
    assert.equal((await daytona.get(sandbox.id)).cpu, 1);
  });
});

test('setLabels replaces the label map', async () => {
  await withSandbox(daytona, { labels: { old: '1' } }, async (sandbox) => {
    const labels = await sandbox.setLabels({ team: 'ts', 'code-toolbox-language': 'typescript' });
    assert.deepEqual(labels, { team: 'ts', 'code-toolbox-language': 'typescript' });
    assert.deepEqual((await daytona.get(sandbox.id)).labels, labels);
  });
});

test('interval setters and TTL', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    await sandbox.setAutostopInterval(0);
    await sandbox.setAutoArchiveInterval(120);
    await sandbox.setAutoDeleteInterval(30);
    await sandbox.setAutoPauseInterval(7);
    await sandbox.setTtl(60);
    await sandbox.refreshData();
    assert.equal(sandbox.autoStopInterval, 0);
    assert.equal(sandbox.autoArchiveInterval, 120);
    assert.equal(sandbox.autoDeleteInterval, 30);
    assert.equal(sandbox.autoPauseInterval, 7);
    const ahead = Date.parse(sandbox.autoDestroyAt) - Date.now();
    assert.ok(ahead > 3_500_000, `autoDestroyAt is ${ahead} ms ahead`);
    assert.ok(ahead <= 3_600_000, `autoDestroyAt is ${ahead} ms ahead`);
    await sandbox.setTtl(0);
    await sandbox.refreshData();
    assert.ok(!sandbox.autoDestroyAt);
  });
});

test('refreshActivity moves lastActivityAt', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    await sandbox.refreshData();
    const before = sandbox.lastActivityAt;
    await sleep(1100);
    await sandbox.refreshActivity();
    await sandbox.refreshData();
    assert.ok(sandbox.lastActivityAt > before);
  });
});

test('pause and recover of a started sandbox are 400', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    await assert.rejects(sandbox.pause(), (error) => error.statusCode === 400);
    await assert.rejects(sandbox.recover(), (error) => error.statusCode === 400);
  });
});

test('list with label and state filters, sorting and pages', async () => {
  const marker = randomBytes(4).toString('hex');
  const created = [];
  try {
    for (let index = 0; index < 4; index++) {
      created.push(await daytona.create({ name: `ts-page-${marker}-${index}`, labels: { batch: marker } }));
    }
    await created[2].stop();
    const names = async (query) => {
      const found = [];
      for await (const item of await daytona.list(query)) found.push(item.name);
      return found;
    };
    const all = created.map((s) => s.name);
    assert.deepEqual(await names({ labels: { batch: marker }, sort: 'name', order: 'asc', limit: 3 }), all);
    assert.deepEqual(await names({ labels: { batch: marker }, sort: 'name', order: 'desc', limit: 1 }), [...all].reverse());
    assert.deepEqual(await names({ labels: { batch: marker }, states: ['stopped'] }), [created[2].name]);
    assert.deepEqual(await names({ name: `TS-PAGE-${marker}-1` }), [created[1].name]);
  } finally {
    for (const sandbox of created) await daytona.delete(sandbox).catch(() => {});
  }
});

test('40 create/delete tasks with 15 in flight all succeed (B20)', async () => {
  const ids = [];
  let next = 0;
  const worker = async () => {
    while (next < 40) {
      next += 1;
      const sandbox = await daytona.create();
      await daytona.delete(sandbox);
      ids.push(sandbox.id);
    }
  };
  await Promise.all(Array.from({ length: 15 }, worker));
  assert.equal(new Set(ids).size, 40);
});

describe('on a server whose lifecycle minute lasts one second', () => {
  let fast;
  before(async () => {
    fast = await startFastServer();
  });
  after(async () => {
    if (fast) await fast.stop();
  });

  test('delete in starting interrupts the start (B14)', async () => {
    const sandbox = await fast.client.create({ autoStopInterval: 0 });
    await sandbox.stop();
    writeFileSync(fast.hangFile, '');
    let starting;
    try {
      starting = sandbox.start(60).then(() => 'started', (error) => error);
      await waitUntil(async () => (await fast.client.get(sandbox.id)).state === 'starting', 10_000, 'starting');
      const conflict = await fast.request('POST', `/sandbox/${sandbox.id}/stop`);
      assert.equal(conflict.status, 409);
      const began = Date.now();
      await fast.client.delete(sandbox);
      assert.ok(Date.now() - began < 5000);
    } finally {
      rmSync(fast.hangFile, { force: true });
    }
    assert.ok((await starting) instanceof Error);
    assert.equal(await stateOrGone(fast.client, sandbox.id), 'gone');
    assert.ok(!existsSync(join(fast.dataDir, 'sandboxes', sandbox.id)));
  });

  test('a start past its deadline is error, recover brings it back (B14, B16)', async () => {
    const sandbox = await fast.client.create({ autoStopInterval: 0 });
    try {
      await sandbox.fs.uploadFile(Buffer.from('kept'), '/home/daytona/kept.txt');
      await sandbox.stop();
      writeFileSync(fast.hangFile, '');
      let response;
      try {
        response = await fast.request('POST', `/sandbox/${sandbox.id}/start`);
      } finally {
        rmSync(fast.hangFile, { force: true });
      }
      assert.equal(response.status, 200);
      assert.equal(response.body.state, 'error');
      assert.match(response.body.errorReason, /did not finish within 5 s/);
      await sandbox.refreshData();
      assert.equal(sandbox.state, 'error');
      await sandbox.recover();
      assert.equal(sandbox.state, 'started');
      assert.equal((await sandbox.fs.downloadFile('/home/daytona/kept.txt')).toString(), 'kept');
    } finally {
      await fast.client.delete(sandbox).catch(() => {});
    }
  });

  test('auto-stop waits for a running job and fires when idle (B21)', async () => {
    const sandbox = await fast.client.create({ autoStopInterval: 3 });
    try {
      await sandbox.process.createSession('job');
      await sandbox.process.executeSessionCommand('job', { command: 'sleep 300', runAsync: true });
      for (let i = 0; i < 8; i++) {
        await sleep(1000);
        assert.equal((await fast.client.get(sandbox.id)).state, 'started');
      }
      await sandbox.process.executeCommand('pkill sleep || true');
      await waitUntil(async () => (await fast.client.get(sandbox.id)).state === 'stopped', 30_000, 'auto-stop');
    } finally {
      await fast.client.delete(sandbox).catch(() => {});
    }
  });

  test('auto-delete, ephemeral and TTL remove the sandbox', async () => {
    const later = await fast.client.create({ autoStopInterval: 0, autoDeleteInterval: 2 });
    await later.stop();
    const ephemeral = await fast.client.create({ autoStopInterval: 0, ephemeral: true });
    await ephemeral.stop();
    const ttl = await fast.client.create({ autoStopInterval: 0 });
    await ttl.setTtl(2);
    for (const sandbox of [later, ephemeral, ttl]) {
      await waitUntil(async () => (await stateOrGone(fast.client, sandbox.id)) === 'gone', 30_000, `delete of ${sandbox.id}`);
    }
  });
});
