// SSH access tokens through the TypeScript SDK: create, validate and revoke.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DaytonaError } from '@daytonaio/sdk';

import { client, withSandbox } from './helpers.mjs';

const daytona = client();

test('SSH access tokens can be created, validated and revoked', async () => {
  await withSandbox(daytona, undefined, async (sandbox) => {
    const access = await sandbox.createSshAccess(15);
    assert.equal(access.sandboxId, sandbox.id);
    assert.match(access.token, /^[A-Za-z0-9]{32,}$/);
    assert.match(access.sshCommand, new RegExp(`^ssh -p \\d+ ${access.token}@\\S+$`));
    const lifetime = new Date(access.expiresAt) - new Date(access.createdAt);
    assert.ok(Math.abs(lifetime - 15 * 60_000) < 60_000, `lifetime ${lifetime} ms`);

    const valid = await sandbox.validateSshAccess(access.token);
    assert.deepEqual({ valid: valid.valid, sandboxId: valid.sandboxId }, { valid: true, sandboxId: sandbox.id });

    await sandbox.revokeSshAccess(access.token);
    const revoked = await sandbox.validateSshAccess(access.token);
    assert.equal(revoked.valid, false);

    await assert.rejects(sandbox.createSshAccess(0), (error) => {
      assert.ok(error instanceof DaytonaError, `${error}`);
      assert.match(error.message, /expiresInMinutes/);
      return true;
    });
  });
});
