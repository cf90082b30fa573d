// daytona.create({ image }) through the TypeScript SDK: the server builds the image definition
// and starts a sandbox on it, with the build log streamed to onSnapshotCreateLogs.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { Image } from '@daytonaio/sdk';

import { client } from './helpers.mjs';

const daytona = client();

test('create from an image definition builds and starts the sandbox', async () => {
  // The marker makes the definition unique per run, since the image store is shared.
  const image = Image.base('daytona-default')
    .runCommands('echo built > /built.txt')
    .env({ X: '1', BUILD_RUN: `ts-${randomUUID()}` });
  const lines = [];
  const sandbox = await daytona.create({ image }, { timeout: 300, onSnapshotCreateLogs: (line) => lines.push(line) });
  try {
    assert.equal(sandbox.state, 'started');
    assert.equal((await sandbox.process.executeCommand('cat /built.txt')).result.trim(), 'built');
    assert.equal((await sandbox.process.executeCommand('echo $X')).result.trim(), '1');
    const text = lines.join('\n');
    assert.match(text, /RUN echo built > \/built\.txt/);
  } finally {
    await daytona.delete(sandbox);
  }
});

test('a failing RUN step rejects the create with the build error', async () => {
  const name = `ts-failing-${randomUUID().slice(0, 8)}`;
  const image = Image.base('daytona-default').runCommands(`echo ${name}; exit 7`);
  // The SDK takes the state from the event and reports it without the errorReason, which a
  // get then returns.
  await assert.rejects(daytona.create({ name, image }, { timeout: 300 }), /build_failed/);
  const sandbox = await daytona.get(name);
  assert.equal(sandbox.state, 'build_failed');
  assert.match(sandbox.errorReason, /exit code 7/);
  await daytona.delete(sandbox);
});
