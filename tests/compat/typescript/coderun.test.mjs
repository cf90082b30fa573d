// process.codeRun in JavaScript and TypeScript sandboxes: argv, env, timeouts, no network at run time.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { client } from './helpers.mjs';

const daytona = client();
let javascript;
let typescript;
before(async () => {
  javascript = await daytona.create({ language: 'javascript' });
  typescript = await daytona.create({ language: 'typescript' });
});
after(async () => {
  await daytona.delete(javascript).catch(() => {});
  await daytona.delete(typescript).catch(() => {});
});

test('codeRun javascript argv, env and exit code', async () => {
  const result = await javascript.process.codeRun(
    "console.log(process.argv.slice(2).join(','), process.env.GREETING); process.exit(3)",
    { argv: ['x', 'y'], env: { GREETING: 'hi' } },
  );
  assert.equal(result.exitCode, 3);
  assert.equal(result.result, 'x,y hi\n');
});

test('codeRun javascript timeout', async () => {
  const started = Date.now();
  await assert.rejects(javascript.process.codeRun('setTimeout(() => {}, 60000)', undefined, 2));
  assert.ok(Date.now() - started < 10000);
});

test('codeRun typescript types, imports, argv and env', async () => {
  const code = [
    "import * as path from 'path';",
    'interface Greeting { text: string }',
    "const greeting: Greeting = { text: process.env.GREETING ?? '' };",
    "console.log(greeting.text, process.argv.slice(2).join(','), path.basename('/a/b.ts'));",
  ].join('\n');
  const result = await typescript.process.codeRun(code, { argv: ['one', 'two'], env: { GREETING: 'hello' } });
  assert.equal(result.exitCode, 0, result.result);
  assert.equal(result.result, 'hello one,two b.ts\n');
});

test('codeRun typescript top-level await', async () => {
  const result = await typescript.process.codeRun('const v: number = await Promise.resolve(6);\nconsole.log(v * 7);');
  assert.equal(result.exitCode, 0, result.result);
  assert.equal(result.result, '42\n');
});

test('codeRun typescript error points at the source line', async () => {
  const result = await typescript.process.codeRun("function fail(): never {\n  throw new Error('boom');\n}\nfail();");
  assert.equal(result.exitCode, 1);
  assert.match(result.result, /Error: boom/);
  assert.match(result.result, /\.ts:2:/);
});

test('codeRun typescript needs no network', async () => {
  const result = await typescript.process.codeRun('const n: number = 1;\nconsole.log(n);');
  assert.equal(result.result, '1\n');
  const check = await typescript.process.executeCommand('test -e ~/.npm && echo fetched || echo offline');
  assert.equal(check.result.trim(), 'offline');
});

test('codeRun typescript timeout', async () => {
  const started = Date.now();
  await assert.rejects(typescript.process.codeRun('setTimeout(() => {}, 60000);', undefined, 2));
  assert.ok(Date.now() - started < 10000);
});
