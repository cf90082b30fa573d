// Git operations through the official TypeScript SDK. Repositories are served from inside
// the sandbox, on its own loopback: anonymously by `git daemon`, and over HTTP with basic
// authentication by tests/support/git_http_server.py.
import assert from 'node:assert/strict';
import { randomInt, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';

import {
  DaytonaError,
  DaytonaGitAuthFailedError,
  DaytonaGitBranchExistsError,
  DaytonaGitBranchNotFoundError,
  DaytonaGitDirtyWorktreeError,
  DaytonaGitMergeConflictError,
  DaytonaGitPushRejectedError,
  DaytonaGitRepoNotFoundError,
  DaytonaGitTransportFailedError,
} from '@daytonaio/sdk';

import { client } from './helpers.mjs';

const HOME = '/home/daytona';
const SERVED = `${HOME}/served`;
// Credentials with the characters that break credentials embedded in a URL.
const USERNAME = 'user@example.com';
const PASSWORD = 'p@ss/w#rd';
const SERVER_START_TIMEOUT_MS = 30_000;

const daytona = client();
let sandbox;
let daemonPort;
let httpPort;
let firstCommit;

async function sh(command) {
  const response = await sandbox.process.executeCommand(command, undefined, undefined, 120);
  assert.equal(response.exitCode, 0, `${command} failed: ${response.result}`);
  return response.result;
}

async function waitUntil(command) {
  const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
  while ((await sandbox.process.executeCommand(command, undefined, undefined, 30)).exitCode !== 0) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${command}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const gitUrl = (name = 'repo.git') => `git://127.0.0.1:${daemonPort}/${name}`;
const httpUrl = (name = 'repo.git') => `http://127.0.0.1:${httpPort}/${name}`;
const fresh = (name) => `${HOME}/repos/${name}-${randomUUID().slice(0, 8)}`;

async function advanceMain(file, content) {
  const work = `/tmp/other-${randomUUID().slice(0, 8)}`;
  await sh(
    `git clone -q ${SERVED}/repo.git ${work} && cd ${work} && git config user.name Other && ` +
      `git config user.email other@example.com && printf '${content}' > ${file} && git add . && ` +
      `git commit -q -m 'change ${file}' && git push -q origin main`,
  );
}

before(async () => {
  sandbox = await daytona.create();
  await sh(
    [
      'set -e',
      `mkdir -p ${SERVED}`,
      `git init -q --bare -b main ${SERVED}/repo.git`,
      `git clone -q ${SERVED}/repo.git /tmp/seed`,
      'cd /tmp/seed',
      'git config user.name Seed && git config user.email seed@example.com',
      'echo one > README.md && git add . && git commit -q -m first',
      'echo two >> README.md && git commit -q -am second',
      'git switch -q -c feature && echo f > feature.txt && git add . && git commit -q -m feature',
      'git push -q origin main feature',
    ].join(' && '),
  );
  firstCommit = (await sh('git -C /tmp/seed rev-parse main~1')).trim();

  daemonPort = randomInt(20000, 40000);
  await sh(
    `nohup git daemon --export-all --enable=receive-pack --reuseaddr --listen=127.0.0.1 ` +
      `--port=${daemonPort} --base-path=${SERVED} ${SERVED} >/tmp/git-daemon.log 2>&1 &`,
  );
  const server = readFileSync(new URL('../../support/git_http_server.py', import.meta.url));
  await sandbox.fs.uploadFile(server, `${HOME}/git_http_server.py`);
  await sh(
    `nohup python3 ${HOME}/git_http_server.py ${SERVED} '${USERNAME}' '${PASSWORD}' ` +
      `/tmp/git-http.port >/tmp/git-http.log 2>&1 &`,
  );
  await waitUntil(`git ls-remote git://127.0.0.1:${daemonPort}/repo.git`);
  await waitUntil('test -s /tmp/git-http.port');
  httpPort = Number((await sh('cat /tmp/git-http.port')).trim());
});

after(async () => {
  await daytona.delete(sandbox).catch(() => {});
});

test('clone and status', async () => {
  const path = fresh('plain');
  await sandbox.git.clone(gitUrl(), path);
  const status = await sandbox.git.status(path);
  assert.equal(status.currentBranch, 'main');
  assert.deepEqual(status.fileStatus, []);
  assert.equal(status.ahead, 0);
  assert.equal(status.behind, 0);
  assert.equal(status.branchPublished, true);
  assert.equal(status.upstream, 'origin/main');
  assert.equal(status.detached, false);

  await sandbox.fs.uploadFile(Buffer.from('new\n'), `${path}/new.txt`);
  const files = (await sandbox.git.status(path)).fileStatus;
  assert.deepEqual(files, [{ name: 'new.txt', staging: 'Untracked', worktree: 'Untracked', extra: '' }]);
});

test('clone a branch, a depth and a commit', async () => {
  const shallow = fresh('shallow');
  await sandbox.git.clone(gitUrl(), shallow, 'feature', undefined, undefined, undefined, undefined, 1);
  assert.equal((await sandbox.git.status(shallow)).currentBranch, 'feature');
  assert.equal((await sh(`git -C ${shallow} rev-list --count HEAD`)).trim(), '1');

  const pinned = fresh('commit');
  await sandbox.git.clone(gitUrl(), pinned, undefined, firstCommit);
  assert.equal((await sh(`git -C ${pinned} rev-parse HEAD`)).trim(), firstCommit);
  assert.equal((await sandbox.git.status(pinned)).detached, true);
});

test('clone with credentials that hold reserved characters', async () => {
  const path = fresh('private');
  await sandbox.git.clone(httpUrl(), path, undefined, undefined, USERNAME, PASSWORD);
  const config = (await sandbox.fs.downloadFile(`${path}/.git/config`)).toString();
  assert.ok(!config.includes(PASSWORD), config);
  assert.ok(!config.includes(USERNAME), config);

  await assert.rejects(
    sandbox.git.clone(httpUrl(), fresh('wrong'), undefined, undefined, USERNAME, 'wrong'),
    DaytonaGitAuthFailedError,
  );
  await assert.rejects(
    sandbox.git.clone(httpUrl('missing.git'), fresh('missing'), undefined, undefined, USERNAME, PASSWORD),
    DaytonaGitRepoNotFoundError,
  );
  await assert.rejects(sandbox.git.clone('http://127.0.0.1:9/r.git', fresh('down')), DaytonaGitTransportFailedError);
});

test('branches: create, checkout, delete', async () => {
  const path = fresh('branches');
  await sandbox.git.clone(gitUrl(), path);
  assert.deepEqual((await sandbox.git.branches(path)).branches, ['main']);
  await sandbox.git.createBranch(path, 'topic');
  const listed = await sandbox.git.branches(path);
  assert.deepEqual(listed.branches, ['main', 'topic']);
  assert.equal(listed.current, 'topic');
  await assert.rejects(sandbox.git.createBranch(path, 'topic'), DaytonaGitBranchExistsError);

  await sandbox.git.checkoutBranch(path, 'feature');
  assert.equal((await sandbox.git.status(path)).currentBranch, 'feature');
  await assert.rejects(sandbox.git.checkoutBranch(path, 'nope'), DaytonaGitBranchNotFoundError);
  await sandbox.git.deleteBranch(path, 'topic');
  assert.ok(!(await sandbox.git.branches(path)).branches.includes('topic'));
  await assert.rejects(sandbox.git.deleteBranch(path, 'topic'), DaytonaGitBranchNotFoundError);
});

test('add, commit, push and a rejected push', async () => {
  const path = fresh('push');
  await sandbox.git.clone(gitUrl(), path);
  await sandbox.fs.uploadFile(Buffer.from('pushed\n'), `${path}/pushed-${randomUUID().slice(0, 6)}.txt`);
  await sandbox.git.add(path, ['.']);
  const commit = await sandbox.git.commit(path, 'pushed', 'Ann Author', 'ann@example.com');
  assert.equal(commit.sha, (await sh(`git -C ${path} rev-parse HEAD`)).trim());
  const empty = await sandbox.git.commit(path, 'empty', 'Ann Author', 'ann@example.com', true);
  assert.notEqual(empty.sha, commit.sha);
  await sandbox.git.push(path);
  assert.equal((await sh(`git -C ${SERVED}/repo.git rev-parse main`)).trim(), empty.sha);

  await sandbox.fs.uploadFile(Buffer.from('l\n'), `${path}/late-${randomUUID().slice(0, 6)}.txt`);
  await sandbox.git.add(path, ['.']);
  await sandbox.git.commit(path, 'late', 'Ann Author', 'ann@example.com');
  await advanceMain(`moved-${randomUUID().slice(0, 6)}.txt`, 'm\\n');
  await assert.rejects(sandbox.git.push(path, undefined, undefined, 'main', 'origin'), DaytonaGitPushRejectedError);
});

test('pull: fast-forward, dirty worktree, conflict', async () => {
  await sandbox.git.configureUser('Puller', 'puller@example.com');
  const path = fresh('pull');
  await sandbox.git.clone(gitUrl(), path);
  const marker = `pulled-${randomUUID().slice(0, 6)}.txt`;
  await advanceMain(marker, 'p\\n');
  await sandbox.git.pull(path);
  assert.equal((await sandbox.fs.getFileDetails(`${path}/${marker}`)).size, 2);

  const conflict = `conflict-${randomUUID().slice(0, 6)}.txt`;
  await advanceMain(conflict, 'remote\\n');
  await sandbox.fs.uploadFile(Buffer.from('local\n'), `${path}/${conflict}`);
  await assert.rejects(sandbox.git.pull(path), DaytonaGitDirtyWorktreeError);
  await sandbox.git.add(path, [conflict]);
  await sandbox.git.commit(path, 'local', 'Ann Author', 'ann@example.com');
  await assert.rejects(sandbox.git.pull(path, undefined, undefined, 'main', 'origin'), DaytonaGitMergeConflictError);
});

test('push and pull with credentials', async () => {
  const path = fresh('http');
  await sandbox.git.clone(httpUrl(), path, undefined, undefined, USERNAME, PASSWORD);
  await sandbox.fs.uploadFile(Buffer.from('h\n'), `${path}/http-${randomUUID().slice(0, 6)}.txt`);
  await sandbox.git.add(path, ['.']);
  const commit = await sandbox.git.commit(path, 'over http', 'Ann Author', 'ann@example.com');
  await assert.rejects(sandbox.git.push(path), DaytonaGitAuthFailedError);
  await sandbox.git.push(path, USERNAME, PASSWORD);
  assert.equal((await sh(`git -C ${SERVED}/repo.git rev-parse main`)).trim(), commit.sha);
  await sandbox.git.pull(path, USERNAME, PASSWORD);
});

test('init, reset and restore', async () => {
  const path = fresh('local');
  await sandbox.git.init(path, false, 'trunk');
  assert.equal((await sandbox.git.branches(path)).current, 'trunk');
  await sandbox.fs.uploadFile(Buffer.from('v1\n'), `${path}/f.txt`);
  await sandbox.git.add(path, ['f.txt']);
  const first = await sandbox.git.commit(path, 'v1', 'Ann Author', 'ann@example.com');
  await sandbox.fs.uploadFile(Buffer.from('v2\n'), `${path}/f.txt`);
  await sandbox.git.add(path, ['f.txt']);
  await sandbox.git.commit(path, 'v2', 'Ann Author', 'ann@example.com');

  await sandbox.fs.uploadFile(Buffer.from('scribble\n'), `${path}/f.txt`);
  await sandbox.git.restore(path, ['f.txt']);
  assert.equal((await sandbox.fs.downloadFile(`${path}/f.txt`)).toString(), 'v2\n');
  await sandbox.git.restore(path, ['f.txt'], undefined, undefined, first.sha);
  assert.equal((await sandbox.fs.downloadFile(`${path}/f.txt`)).toString(), 'v1\n');
  await sandbox.git.add(path, ['f.txt']);
  await sandbox.git.restore(path, ['f.txt'], true);
  assert.equal((await sandbox.git.status(path)).fileStatus[0].staging, 'Unmodified');

  await sandbox.git.reset(path, 'soft', 'HEAD~1');
  assert.equal((await sh(`git -C ${path} rev-parse HEAD`)).trim(), first.sha);
  await sandbox.git.reset(path, 'hard');
  assert.deepEqual((await sandbox.git.status(path)).fileStatus, []);
  await assert.rejects(sandbox.git.reset(path, 'sideways'), DaytonaError);

  const bare = `${fresh('bare')}.git`;
  await sandbox.git.init(bare, true);
  assert.ok((await sandbox.fs.getFileDetails(`${bare}/HEAD`)).size > 0);
});

test('remotes', async () => {
  const path = fresh('remotes');
  await sandbox.git.init(path);
  assert.deepEqual((await sandbox.git.remotes(path)).remotes, []);
  await sandbox.git.remoteAdd(path, 'origin', gitUrl(), true);
  assert.match(await sh(`git -C ${path} branch -r`), /origin\/main/);
  await assert.rejects(sandbox.git.remoteAdd(path, 'origin', '/elsewhere.git'), DaytonaError);
  await sandbox.git.remoteAdd(path, 'origin', '/elsewhere.git', false, true);
  assert.deepEqual((await sandbox.git.remotes(path)).remotes, [{ name: 'origin', url: '/elsewhere.git' }]);
  assert.equal(await sandbox.git.remoteGet(path, 'origin'), '/elsewhere.git');
});

test('config and configureUser', async () => {
  const key = `daytona-test.k${randomUUID().slice(0, 6)}`;
  // An unset key reads as null (the daemon's JSON), which the SDK passes on.
  assert.equal((await sandbox.git.getConfig(key)) ?? null, null);
  await sandbox.git.setConfig(key, 'global value');
  assert.equal(await sandbox.git.getConfig(key), 'global value');
  const path = fresh('config');
  await sandbox.git.init(path);
  await sandbox.git.setConfig(key, 'local value', 'local', path);
  assert.equal(await sandbox.git.getConfig(key, 'local', path), 'local value');
  await sandbox.git.configureUser('Local Person', 'local@example.com', 'local', path);
  await sandbox.git.commit(path, 'identity from config', '', '', true);
  assert.equal((await sh(`git -C ${path} log -1 --format=%an`)).trim(), 'Local Person');
});

test('dangerouslyAuthenticate serves later clones', async () => {
  await sandbox.git.dangerouslyAuthenticate(USERNAME, PASSWORD, `127.0.0.1:${httpPort}`, 'http');
  try {
    const path = fresh('stored');
    await sandbox.git.clone(httpUrl(), path);
    assert.equal((await sandbox.fs.downloadFile(`${path}/README.md`)).toString(), 'one\ntwo\n');
  } finally {
    await sh(`rm -f ${HOME}/.git-credentials && (git config --global --unset-all credential.helper || true)`);
  }
});
