import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
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

test('upload and download are byte-exact', async () => {
  for (const size of [0, 1, 65537, 3 * 1024 * 1024]) {
    const data = randomBytes(size);
    await sandbox.fs.uploadFile(data, `/tmp/ts-${size}.bin`);
    const back = await sandbox.fs.downloadFile(`/tmp/ts-${size}.bin`);
    assert.ok(Buffer.compare(Buffer.from(back), data) === 0, `size ${size}`);
  }
});

test('folders, listing, info and delete', async () => {
  await sandbox.fs.createFolder('/tmp/ts-dir', '755');
  await sandbox.fs.uploadFile(Buffer.from('x'), '/tmp/ts-dir/a.txt');
  const names = (await sandbox.fs.listFiles('/tmp/ts-dir')).map((f) => f.name);
  assert.deepEqual(names, ['a.txt']);
  const info = await sandbox.fs.getFileDetails('/tmp/ts-dir/a.txt');
  assert.equal(info.size, 1);
  assert.equal(info.isDir, false);
  await sandbox.fs.deleteFile('/tmp/ts-dir', true);
  await assert.rejects(sandbox.fs.getFileDetails('/tmp/ts-dir'));
});
