// sandbox.codeInterpreter: runs with callbacks, state, contexts and timeouts.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { DaytonaTimeoutError } from '@daytonaio/sdk';

import { client } from './helpers.mjs';

const daytona = client();
let sandbox;
before(async () => {
  sandbox = await daytona.create();
});
after(async () => {
  await daytona.delete(sandbox).catch(() => {});
});

test('runCode streams stdout, stderr and errors', async () => {
  const stdout = [];
  const stderr = [];
  const errors = [];
  const result = await sandbox.codeInterpreter.runCode(
    "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n1/0",
    {
      onStdout: (message) => stdout.push(message.output),
      onStderr: (message) => stderr.push(message.output),
      onError: (error) => errors.push(error),
    },
  );
  assert.equal(stdout.join(''), 'to out\n');
  assert.equal(stderr.join(''), 'to err\n');
  assert.equal(result.stdout, 'to out\n');
  assert.equal(errors.length, 1);
  assert.equal(errors[0].name, 'ZeroDivisionError');
  assert.equal(result.error.value, 'division by zero');
});

test('runCode keeps state in the default context', async () => {
  await sandbox.codeInterpreter.runCode('counter = 41');
  const result = await sandbox.codeInterpreter.runCode('counter += 1\nprint(counter)');
  assert.equal(result.stdout, '42\n');
});

test('runCode envs apply to one run', async () => {
  const result = await sandbox.codeInterpreter.runCode("import os\nprint(os.environ['ONLY_ONCE'])", {
    envs: { ONLY_ONCE: 'yes' },
  });
  assert.equal(result.stdout, 'yes\n');
  const later = await sandbox.codeInterpreter.runCode("import os\nprint(os.environ.get('ONLY_ONCE'))");
  assert.equal(later.stdout, 'None\n');
});

test('contexts are created, isolated, listed and deleted', async () => {
  await sandbox.process.executeCommand('mkdir -p /tmp/ts-ctx');
  const first = await sandbox.codeInterpreter.createContext('/tmp/ts-ctx');
  const second = await sandbox.codeInterpreter.createContext();
  assert.equal(first.cwd, '/tmp/ts-ctx');
  assert.equal(first.language, 'python');
  await sandbox.codeInterpreter.runCode("secret = 'one'", { context: first });
  await sandbox.codeInterpreter.runCode("secret = 'two'", { context: second });
  const one = await sandbox.codeInterpreter.runCode('import os\nprint(secret, os.getcwd())', { context: first });
  const two = await sandbox.codeInterpreter.runCode('print(secret)', { context: second });
  assert.equal(one.stdout, 'one /tmp/ts-ctx\n');
  assert.equal(two.stdout, 'two\n');

  const ids = (await sandbox.codeInterpreter.listContexts()).map((context) => context.id);
  assert.ok(ids.includes(first.id));
  assert.ok(ids.includes(second.id));
  assert.ok(!ids.includes('default'));

  await sandbox.codeInterpreter.deleteContext(first);
  await sandbox.codeInterpreter.deleteContext(second);
  const left = (await sandbox.codeInterpreter.listContexts()).map((context) => context.id);
  assert.ok(!left.includes(first.id));
  assert.ok(!left.includes(second.id));
  await assert.rejects(sandbox.codeInterpreter.deleteContext(first));
});

test('timeout raises the timeout error and keeps state', async () => {
  const context = await sandbox.codeInterpreter.createContext();
  try {
    await sandbox.codeInterpreter.runCode("kept = 'yes'", { context });
    const started = Date.now();
    await assert.rejects(
      sandbox.codeInterpreter.runCode('import time\ntime.sleep(100)', { context, timeout: 2 }),
      DaytonaTimeoutError,
    );
    const elapsed = (Date.now() - started) / 1000;
    assert.ok(elapsed >= 2, `timeout of 2 s enforced after ${elapsed} s`);
    assert.ok(elapsed < 5, `timeout of 2 s enforced after ${elapsed} s`);
    const result = await sandbox.codeInterpreter.runCode('print(kept)', { context });
    assert.equal(result.stdout, 'yes\n');
  } finally {
    await sandbox.codeInterpreter.deleteContext(context);
  }
});

test('an ignored interrupt restarts the interpreter and says so', async () => {
  const context = await sandbox.codeInterpreter.createContext();
  try {
    await sandbox.codeInterpreter.runCode('lost = 1', { context });
    const errors = [];
    await assert.rejects(
      sandbox.codeInterpreter.runCode(
        'import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(100)',
        { context, timeout: 1, onError: (error) => errors.push(error) },
      ),
      DaytonaTimeoutError,
    );
    assert.deepEqual(errors.map((error) => error.name), ['InterpreterRestarted']);
    const listed = (await sandbox.codeInterpreter.listContexts()).find((item) => item.id === context.id);
    assert.equal(listed.restarted, true);
    const result = await sandbox.codeInterpreter.runCode('print(lost)', { context });
    assert.equal(result.error.name, 'NameError');
  } finally {
    await sandbox.codeInterpreter.deleteContext(context);
  }
});
