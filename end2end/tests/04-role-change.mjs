// The owner makes bob a viewer; bob sees the new role on his next page load.
import assert from 'node:assert/strict';
import { BOB, OWNER, expectShell, memberRow, signIn } from './_common.mjs';

export default async function roleChange(t) {
  assert.ok(t.state.bobStorage, 'needs the invite test to have run');

  const owner = await t.newPage();
  await signIn(t, owner, OWNER);
  await t.goto(owner, '/team');
  const row = memberRow(owner, BOB.email);
  await t.expectText(row.locator('[data-testid="member-role"]'), 'Member');
  await row.locator('select[name="role"]').selectOption('viewer');
  await row.getByRole('button', { name: 'Change role', exact: true }).click();
  await t.expectText(row.locator('[data-testid="member-role"]'), 'Viewer');

  // Stored, not just shown.
  await owner.reload();
  await t.waitHydrated(owner);
  await t.expectText(memberRow(owner, BOB.email).locator('[data-testid="member-role"]'), 'Viewer');
  await t.expectText(memberRow(owner, OWNER.email).locator('[data-testid="member-role"]'), 'Owner');

  // Bob's existing session picks up the new role.
  const bob = await (await t.newContext({ storageState: t.state.bobStorage })).newPage();
  await t.goto(bob, '/');
  await bob.reload();
  await t.waitHydrated(bob);
  await expectShell(t, bob, { email: BOB.email, role: 'Viewer' });

  await t.goto(bob, '/team');
  await t.expectText(memberRow(bob, BOB.email).locator('[data-testid="member-role"]'), 'Viewer');
  assert.equal(await bob.getByRole('button', { name: 'Send invitation' }).count(), 0, 'viewer sees the invite form');
  assert.equal(await bob.getByRole('button', { name: 'Change role' }).count(), 0, 'viewer sees "Change role"');
  assert.equal(await bob.getByRole('button', { name: 'Remove' }).count(), 0, 'viewer sees "Remove"');
}
