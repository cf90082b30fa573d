// The sandbox's resource use through the official TypeScript SDK (getMetricsLatest).
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

test('getMetricsLatest', async () => {
  const metrics = await sandbox.getMetricsLatest();
  assert.ok(Number.isInteger(metrics.cpuCount));
  assert.ok(metrics.cpuCount >= 1);
  assert.ok(metrics.cpuUsedPct >= 0);
  assert.ok(metrics.cpuUsedPct <= 100);
  assert.ok(Number.isInteger(metrics.memTotal));
  assert.ok(metrics.memTotal > 0);
  assert.ok(metrics.memUsed > 0);
  assert.ok(metrics.memUsed <= metrics.memTotal);
  assert.ok(Number.isInteger(metrics.diskTotal));
  assert.ok(metrics.diskTotal > 0);
  assert.ok(metrics.diskUsed <= metrics.diskTotal);
  assert.ok(Math.abs(new Date(metrics.timestamp).getTime() - Date.now()) < 120_000);
});
