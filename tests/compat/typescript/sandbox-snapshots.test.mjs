// sandbox.createSnapshot and sandbox.fork through the TypeScript SDK: a new sandbox from the
// snapshot has the files, a fork has them too and diverges from its source.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { client, withSandbox } from './helpers.mjs';

const daytona = client();

async function run(sandbox, command) {
  const response = await sandbox.process.executeCommand(command);
  assert.equal(response.exitCode, 0, `${command}: ${response.result}`);
  return response.result;
}

const PREPARE =
  'mkdir -p /home/daytona/ts && printf "typed\\n" > /home/daytona/ts/file && ' +
  'chmod 0640 /home/daytona/ts/file && ln -s file /home/daytona/ts/link && ' +
  'sudo rm /etc/debian_version';
const LISTING =
  "find /home/daytona/ts -printf '%p|%m|%u|%g|%s|%y|%l\\n' | sort; " +
  'test -e /etc/debian_version && echo present || echo gone';

test('createSnapshot registers a snapshot that new sandboxes start from', async () => {
  const name = `ts-sandbox-snap-${randomUUID().slice(0, 8)}`;
  await withSandbox(daytona, undefined, async (sandbox) => {
    await run(sandbox, PREPARE);
    const listing = await run(sandbox, LISTING);
    await sandbox.createSnapshot(name);
    try {
      assert.equal(sandbox.state, 'started');
      const snapshot = await daytona.snapshot.get(name);
      assert.equal(snapshot.state, 'active');
      await withSandbox(daytona, { snapshot: name }, async (restored) => {
        assert.equal(await run(restored, LISTING), listing);
        assert.equal(await run(restored, 'cat /home/daytona/ts/file'), 'typed\n');
      });
    } finally {
      await daytona.snapshot.delete(await daytona.snapshot.get(name));
    }
  });
});

test('fork starts a sandbox with the same files that then diverges', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    await run(sandbox, PREPARE);
    const listing = await run(sandbox, LISTING);
    const name = `ts-fork-${randomUUID().slice(0, 8)}`;
    const forked = await sandbox.fork({ name });
    try {
      assert.equal(forked.state, 'started');
      assert.equal(forked.name, name);
      assert.equal(await run(forked, LISTING), listing);
      await run(forked, 'echo fork >> /home/daytona/ts/file');
      assert.equal(await run(sandbox, 'cat /home/daytona/ts/file'), 'typed\n');
      assert.equal(await run(forked, 'cat /home/daytona/ts/file'), 'typed\nfork\n');
    } finally {
      await daytona.delete(forked).catch(() => {});
    }
  });
});
