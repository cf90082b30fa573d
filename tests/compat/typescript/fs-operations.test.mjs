// File operations beyond upload and download, through the official TypeScript SDK: move,
// permissions, find, search, replace, recursive listing and streamed transfers.
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';

import { DaytonaError, DaytonaNotFoundError } from '@daytonaio/sdk';

import { client } from './helpers.mjs';

const HOME = '/home/daytona';
const daytona = client();
let sandbox;
before(async () => {
  sandbox = await daytona.create();
});
after(async () => {
  await daytona.delete(sandbox).catch(() => {});
});

async function freshDir(name) {
  const path = `${HOME}/fs-${name}-${randomUUID().slice(0, 8)}`;
  await sandbox.fs.createFolder(path, '755');
  return path;
}

async function project() {
  const base = await freshDir('proj');
  await sandbox.fs.uploadFile(Buffer.from('import os\n# TODO: first\n'), `${base}/src/main.py`);
  await sandbox.fs.uploadFile(Buffer.from('def f():\n    pass  # TODO: second\n'), `${base}/src/util/helpers.py`);
  await sandbox.fs.uploadFile(Buffer.from('// TODO: vendored\n'), `${base}/node_modules/pkg/index.js`);
  await sandbox.fs.uploadFile(Buffer.from('TODO\0binary'), `${base}/src/blob.bin`);
  return base;
}

test('moveFiles', async () => {
  const base = await freshDir('move');
  await sandbox.fs.uploadFile(Buffer.from('a'), `${base}/a.txt`);
  await sandbox.fs.moveFiles(`${base}/a.txt`, `${base}/b.txt`);
  assert.equal((await sandbox.fs.downloadFile(`${base}/b.txt`)).toString(), 'a');
  await assert.rejects(sandbox.fs.getFileDetails(`${base}/a.txt`), DaytonaNotFoundError);
  await sandbox.fs.uploadFile(Buffer.from('t'), `${base}/taken.txt`);
  await assert.rejects(sandbox.fs.moveFiles(`${base}/b.txt`, `${base}/taken.txt`), DaytonaError);
  await assert.rejects(sandbox.fs.moveFiles(`${base}/none`, `${base}/x`), DaytonaNotFoundError);
});

test('setFilePermissions', async () => {
  const base = await freshDir('perm');
  const path = `${base}/run.sh`;
  await sandbox.fs.uploadFile(Buffer.from('#!/bin/sh\necho ran\n'), path);
  await sandbox.fs.setFilePermissions(path, { mode: '755' });
  assert.equal((await sandbox.fs.getFileDetails(path)).permissions, '0755');
  assert.equal((await sandbox.process.executeCommand(path)).result, 'ran\n');
  await sandbox.fs.setFilePermissions(path, { owner: 'root', group: 'root' });
  const info = await sandbox.fs.getFileDetails(path);
  assert.equal(info.owner, '0');
  assert.equal(info.group, '0');
  await assert.rejects(sandbox.fs.setFilePermissions(path, { owner: 'no-such-user' }), DaytonaError);
});

test('findFiles and searchFiles', async () => {
  const base = await project();
  const matches = await sandbox.fs.findFiles(base, 'TODO:');
  assert.deepEqual(
    matches.map((m) => [m.file, m.line, m.content]),
    [
      [`${base}/src/main.py`, 2, '# TODO: first'],
      [`${base}/src/util/helpers.py`, 2, '    pass  # TODO: second'],
    ],
  );
  assert.deepEqual((await sandbox.fs.searchFiles(base, '*.py')).files, [
    `${base}/src/main.py`,
    `${base}/src/util/helpers.py`,
  ]);
  assert.deepEqual((await sandbox.fs.searchFiles(base, 'src/*.py')).files, [`${base}/src/main.py`]);
});

test('replaceInFiles', async () => {
  const base = await freshDir('replace');
  await sandbox.fs.uploadFile(Buffer.from('old and old\n'), `${base}/a.txt`);
  const results = await sandbox.fs.replaceInFiles([`${base}/a.txt`, `${base}/missing.txt`], 'old', 'new');
  assert.equal(results[0].success, true);
  assert.equal(results[1].success, false);
  assert.ok(results[1].error);
  assert.equal((await sandbox.fs.downloadFile(`${base}/a.txt`)).toString(), 'new and new\n');
});

test('listFiles with depth', async () => {
  const base = await freshDir('tree');
  await sandbox.fs.uploadFile(Buffer.from('d'), `${base}/a/b/deep.txt`);
  await sandbox.fs.uploadFile(Buffer.from('t'), `${base}/top.txt`);
  assert.deepEqual((await sandbox.fs.listFiles(base)).map((f) => f.name), ['a', 'top.txt']);
  assert.deepEqual(
    (await sandbox.fs.listFiles(base, { depth: 3 })).map((f) => f.path),
    [`${base}/a`, `${base}/a/b`, `${base}/a/b/deep.txt`, `${base}/top.txt`],
  );
});

test('streamed upload and download report progress', async () => {
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const path = `${HOME}/ts-streamed.bin`;
  const sent = [];
  await sandbox.fs.uploadFileStream(Readable.from([data]), path, { onProgress: (p) => sent.push(p.bytesSent) });
  assert.equal(sent.at(-1), data.length);

  const received = [];
  const stream = await sandbox.fs.downloadFileStream(path, { onProgress: (p) => received.push(p) });
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
  }
  const back = Buffer.concat(chunks);
  assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'));
  assert.equal(received.at(-1).bytesReceived, data.length);
});
