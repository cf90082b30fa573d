import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { client } from './helpers.mjs';

const daytona = client();
let sandbox;
before(async () => {
  sandbox = await daytona.create();
});
after(async () => {
  await daytona.delete(sandbox).catch(() => {});
});

test('executeCommand output and exit code', async () => {
  const result = await sandbox.process.executeCommand('echo hello; exit 3');
  assert.equal(result.exitCode, 3);
  assert.equal(result.result, 'hello\n');
});

test('missing binary is 127', async () => {
  const result = await sandbox.process.executeCommand('definitely-not-a-binary');
  assert.equal(result.exitCode, 127);
  assert.match(result.result, /command not found/);
});

test('cwd, env and timeout', async () => {
  assert.equal((await sandbox.process.executeCommand('pwd', '/tmp')).result.trim(), '/tmp');
  const env = await sandbox.process.executeCommand('echo "[$FOO]"', undefined, { FOO: 'bar' });
  assert.equal(env.result.trim(), '[bar]');
  await assert.rejects(sandbox.process.executeCommand('sleep 30', undefined, undefined, 1));
});

test('codeRun python', async () => {
  const result = await sandbox.process.codeRun('print(6 * 7)');
  assert.equal(result.exitCode, 0);
  assert.equal(result.result.trim(), '42');
});
