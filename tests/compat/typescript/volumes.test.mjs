// daytona.volume: create, get (with create), list and delete, and a volume shared by two
// sandboxes through the TypeScript SDK.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { DaytonaNotFoundError } from '@daytonaio/sdk';

import { client, withSandbox } from './helpers.mjs';

const daytona = client();

function unique(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

test('create, get, list and delete a volume', async () => {
  const name = unique('ts-vol');
  const volume = await daytona.volume.create(name);
  assert.equal(volume.name, name);
  assert.equal(volume.state, 'ready');
  assert.equal((await daytona.volume.get(name)).id, volume.id);
  assert.ok((await daytona.volume.list()).some((v) => v.id === volume.id));
  await daytona.volume.delete(volume);
  await assert.rejects(daytona.volume.get(name), DaytonaNotFoundError);
  assert.ok(!(await daytona.volume.list()).some((v) => v.id === volume.id));
});

test('get with create makes the volume once', async () => {
  const name = unique('ts-vol');
  const created = await daytona.volume.get(name, true);
  assert.equal((await daytona.volume.get(name, true)).id, created.id);
  await daytona.volume.delete(created);
});

test('two sandboxes share a volume, and a volume in use is not deleted', async () => {
  const volume = await daytona.volume.create(unique('ts-shared'));
  try {
    await withSandbox(daytona, { volumes: [{ volumeId: volume.id, mountPath: '/data' }] }, async (first) => {
      await withSandbox(
        daytona,
        { volumes: [{ volumeId: volume.name, mountPath: '/shared', subpath: 'sub' }] },
        async (second) => {
          const written = await second.process.executeCommand('echo hello > /shared/hello.txt');
          assert.equal(written.exitCode, 0, written.result);
          const read = await first.process.executeCommand("cat /data/sub/hello.txt && stat -c '%U' /data/sub/hello.txt");
          assert.equal(read.result, 'hello\ndaytona\n');
          await assert.rejects(daytona.volume.delete(volume), (error) => {
            assert.equal(error.statusCode, 409);
            return true;
          });
        },
      );
    });
  } finally {
    await daytona.volume.delete(volume);
  }
});
