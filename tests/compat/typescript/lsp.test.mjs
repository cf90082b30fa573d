// sandbox.createLspServer with pylsp and typescript-language-server.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { client } from './helpers.mjs';

const daytona = client();
let sandbox;

const PYTHON_PROJECT = '/home/daytona/lsp-py';
const PYTHON_SOURCE = "import os\n\nclass Greeter:\n    def greet(self, name):\n        return 'hi ' + name\n\ndef helper_function(x):\n    return x * 2\n\nvalue = helper_function(3)\nos.pa\n";
const TS_PROJECT = '/home/daytona/lsp-ts';
const TS_SOURCE = 'export interface Point { x: number; y: number }\nexport function distance(a: Point, b: Point): number { return Math.hypot(a.x - b.x, a.y - b.y) }\nconst p: Point = { x: 1, y: 2 };\np.\n';

before(async () => {
  sandbox = await daytona.create();
  await sandbox.fs.createFolder(PYTHON_PROJECT, '755');
  await sandbox.fs.uploadFile(Buffer.from(PYTHON_SOURCE), `${PYTHON_PROJECT}/main.py`);
  await sandbox.fs.createFolder(TS_PROJECT, '755');
  await sandbox.fs.uploadFile(Buffer.from(TS_SOURCE), `${TS_PROJECT}/index.ts`);
});
after(async () => {
  await daytona.delete(sandbox).catch(() => {});
});

test('requests before start are rejected', async () => {
  const lsp = await sandbox.createLspServer('python', '/home/daytona');
  await assert.rejects(lsp.documentSymbols('/home/daytona/none.py'), /start/);
});

test('python server: open, symbols, completions, close, stop', async () => {
  const lsp = await sandbox.createLspServer('python', PYTHON_PROJECT);
  await lsp.start();
  const file = `${PYTHON_PROJECT}/main.py`;
  await lsp.didOpen(file);

  const names = (await lsp.documentSymbols(file)).map((symbol) => symbol.name);
  for (const expected of ['Greeter', 'greet', 'helper_function', 'value']) {
    assert.ok(names.includes(expected), names.join(','));
  }
  const found = (await lsp.sandboxSymbols('helper')).map((symbol) => symbol.name);
  assert.deepEqual(found, ['helper_function']);

  const completions = await lsp.completions(file, { line: 10, character: 5 });
  assert.equal(typeof completions.isIncomplete, 'boolean');
  assert.ok(completions.items.some((item) => item.label === 'path'));

  await lsp.didClose(file);
  await lsp.stop();
  await assert.rejects(lsp.documentSymbols(file));
});

test('typescript server: open, symbols, completions, close, stop', async () => {
  const lsp = await sandbox.createLspServer('typescript', TS_PROJECT);
  await lsp.start();
  const file = `${TS_PROJECT}/index.ts`;
  await lsp.didOpen(file);

  const names = (await lsp.documentSymbols(file)).map((symbol) => symbol.name);
  for (const expected of ['Point', 'distance', 'p']) {
    assert.ok(names.includes(expected), names.join(','));
  }
  const found = (await lsp.sandboxSymbols('dist')).map((symbol) => symbol.name);
  assert.ok(found.includes('distance'), found.join(','));

  const completions = await lsp.completions(file, { line: 3, character: 2 });
  const labels = completions.items.map((item) => item.label);
  assert.ok(labels.includes('x'), labels.join(','));
  assert.ok(labels.includes('y'), labels.join(','));

  await lsp.didClose(file);
  await lsp.stop();
  await assert.rejects(lsp.documentSymbols(file));
});
