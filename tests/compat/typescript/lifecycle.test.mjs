import assert from 'node:assert/strict';
import { test } from 'node:test';

import { client, withSandbox } from './helpers.mjs';

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

test('home and work dir', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    assert.equal(await sandbox.getUserHomeDir(), '/home/daytona');
    assert.equal(await sandbox.getWorkDir(), '/home/daytona');
  });
});
