// Sessions and PTY sessions through the official TypeScript SDK (`sandbox.process.*`).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
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

const newId = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitExit(sessionId, commandId, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const command = await sandbox.process.getSessionCommand(sessionId, commandId);
    if (command.exitCode !== undefined && command.exitCode !== null) return command.exitCode;
    await sleep(100);
  }
  throw new Error(`command ${commandId} still runs`);
}

async function until(predicate, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(50);
  }
}

test('createSession, getSession, listSessions, deleteSession', async () => {
  const id = newId('life');
  await sandbox.process.createSession(id);
  const session = await sandbox.process.getSession(id);
  assert.equal(session.sessionId, id);
  assert.deepEqual(session.commands, []);
  assert.ok((await sandbox.process.listSessions()).some((s) => s.sessionId === id));
  await sandbox.process.deleteSession(id);
  await assert.rejects(sandbox.process.getSession(id));
});

test('executeSessionCommand sync keeps state, async runs side by side', async () => {
  const id = newId('exec');
  await sandbox.process.createSession(id);
  try {
    const result = await sandbox.process.executeSessionCommand(id, { command: 'echo out; echo err >&2; exit 3' });
    assert.equal(result.exitCode, 3);
    assert.equal(result.stdout, 'out\n');
    assert.equal(result.stderr, 'err\n');

    await sandbox.process.executeSessionCommand(id, { command: 'cd /tmp && export TS_VAR=kept' });
    const state = await sandbox.process.executeSessionCommand(id, { command: 'echo "$(pwd) $TS_VAR"' });
    assert.equal(state.stdout, '/tmp kept\n');

    const started = Date.now();
    const first = await sandbox.process.executeSessionCommand(id, { command: 'sleep 3', runAsync: true });
    const second = await sandbox.process.executeSessionCommand(id, { command: 'sleep 3', runAsync: true });
    assert.equal(first.exitCode, undefined);
    const running = await sandbox.process.getSessionCommand(id, first.cmdId);
    assert.equal(running.command, 'sleep 3');
    assert.ok(running.exitCode === undefined || running.exitCode === null);
    assert.equal(await waitExit(id, first.cmdId), 0);
    assert.equal(await waitExit(id, second.cmdId), 0);
    assert.ok(Date.now() - started < 5000, 'the two background commands ran one after the other');
  } finally {
    await sandbox.process.deleteSession(id).catch(() => {});
  }
});

test('getSessionCommandLogs as JSON and streamed', async () => {
  const id = newId('logs');
  await sandbox.process.createSession(id);
  try {
    const done = await sandbox.process.executeSessionCommand(id, { command: "printf 'no newline'; printf 'to err' >&2" });
    const logs = await sandbox.process.getSessionCommandLogs(id, done.cmdId);
    assert.deepEqual(logs, { output: 'no newlineto err', stdout: 'no newline', stderr: 'to err' });

    const started = await sandbox.process.executeSessionCommand(id, {
      command: 'echo one; sleep 1; echo two >&2; sleep 1; echo three',
      runAsync: true,
    });
    let stdout = '';
    let stderr = '';
    await sandbox.process.getSessionCommandLogs(
      id,
      started.cmdId,
      (chunk) => (stdout += chunk),
      (chunk) => (stderr += chunk),
    );
    assert.equal(stdout, 'one\nthree\n');
    assert.equal(stderr, 'two\n');
  } finally {
    await sandbox.process.deleteSession(id).catch(() => {});
  }
});

test('sendSessionCommandInput', async () => {
  const id = newId('input');
  await sandbox.process.createSession(id);
  try {
    const started = await sandbox.process.executeSessionCommand(id, {
      command: 'read line; echo "got $line"',
      runAsync: true,
    });
    await sandbox.process.sendSessionCommandInput(id, started.cmdId, 'hello\n');
    assert.equal(await waitExit(id, started.cmdId), 0);
    const logs = await sandbox.process.getSessionCommandLogs(id, started.cmdId);
    assert.ok(logs.stdout.endsWith('got hello\n'), logs.stdout);
  } finally {
    await sandbox.process.deleteSession(id).catch(() => {});
  }
});

test('getEntrypointSession and getEntrypointLogs are empty without an entrypoint', async () => {
  const session = await sandbox.process.getEntrypointSession();
  assert.equal(session.sessionId, 'entrypoint');
  assert.deepEqual(session.commands, []);
  assert.deepEqual(await sandbox.process.getEntrypointLogs(), { output: '', stdout: '', stderr: '' });
  const chunks = [];
  await sandbox.process.getEntrypointLogs(
    (chunk) => chunks.push(chunk),
    (chunk) => chunks.push(chunk),
  );
  assert.deepEqual(chunks, []);
});

test('per-command env is verbatim and scoped', async () => {
  const id = newId('env');
  await sandbox.process.createSession(id);
  try {
    const value = "quote\" 'single' $HOME `id` \\ new\nline";
    const result = await sandbox.process.executeSessionCommand(id, {
      command: 'printf %s "$TRICKY"',
      envs: { TRICKY: value },
    });
    assert.equal(result.stdout, value);
    const later = await sandbox.process.executeSessionCommand(id, { command: 'echo "[${TRICKY-unset}]"' });
    assert.equal(later.stdout, '[unset]\n');
  } finally {
    await sandbox.process.deleteSession(id).catch(() => {});
  }
});

test('an ended command stays readable', async () => {
  const id = newId('ttl');
  await sandbox.process.createSession(id);
  try {
    const result = await sandbox.process.executeSessionCommand(id, { command: 'echo kept; exit 5' });
    await sleep(3000);
    assert.equal((await sandbox.process.getSessionCommand(id, result.cmdId)).exitCode, 5);
    assert.equal((await sandbox.process.getSessionCommandLogs(id, result.cmdId)).stdout, 'kept\n');
  } finally {
    await sandbox.process.deleteSession(id).catch(() => {});
  }
});

test('createPty runs a shell with env, size and exit code', async () => {
  let output = '';
  const handle = await sandbox.process.createPty({
    id: newId('pty'),
    cwd: '/tmp',
    envs: { PTY_VAR: 'from envs' },
    cols: 100,
    rows: 30,
    onData: (data) => (output += new TextDecoder().decode(data)),
  });
  await handle.sendInput('echo "[$PTY_VAR][$TERM][$(pwd)]"; stty size; exit 3\n');
  const result = await handle.wait();
  assert.equal(result.exitCode, 3);
  assert.match(output, /\[from envs\]\[xterm-256color\]\[\/tmp\]/);
  assert.match(output, /30 100/);
});

test('connectPty, listPtySessions, getPtySessionInfo, resize, kill', async () => {
  const id = newId('pty');
  const first = await sandbox.process.createPty({ id, onData: () => {} });
  await first.disconnect();

  const info = await sandbox.process.getPtySessionInfo(id);
  assert.equal(info.id, id);
  assert.equal(info.cols, 80);
  assert.equal(info.rows, 24);
  assert.equal(info.active, true);
  assert.ok((await sandbox.process.listPtySessions()).some((s) => s.id === id));

  let output = '';
  const handle = await sandbox.process.connectPty(id, {
    onData: (data) => (output += new TextDecoder().decode(data)),
  });
  const resized = await handle.resize(132, 50);
  assert.equal(resized.cols, 132);
  assert.equal((await sandbox.process.resizePtySession(id, 133, 51)).rows, 51);
  await handle.sendInput('stty size\n');
  await until(() => output.includes('51 133'));

  await handle.kill();
  const result = await handle.wait();
  assert.equal(result.exitCode, 137);
  assert.ok(!(await sandbox.process.listPtySessions()).some((s) => s.id === id));
});
