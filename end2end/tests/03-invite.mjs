// The owner invites bob as a member; bob joins through the link and, as a
// member, gets no invite form. The link then refuses a second use.
import assert from 'node:assert/strict';
import { BOB, OWNER, escapeRe, expectShell, memberRow, pathOf, signIn } from './_common.mjs';

export default async function invite(t) {
  const owner = await t.newPage();
  await signIn(t, owner, OWNER);
  await t.goto(owner, '/team');

  const form = owner.locator('form').filter({
    has: owner.getByRole('button', { name: 'Send invitation', exact: true }),
  });
  await form.locator('input[name="email"]').fill(BOB.email);
  await form.locator('select[name="role"]').selectOption('member');
  await form.getByRole('button', { name: 'Send invitation', exact: true }).click();

  const link = await t.expectText(
    owner.locator('[data-testid="invite-link"]'),
    new RegExp(`^${escapeRe(t.baseUrl)}/invite/[A-Za-z0-9_-]{16,}$`),
  );
  t.state.inviteLink = link;
  t.log(`invite link: ${link}`);

  // Bob, in his own browser context.
  const bobContext = await t.newContext();
  const bob = await bobContext.newPage();
  await t.goto(bob, link);
  await t.expectText(bob.locator('body'), new RegExp(escapeRe(OWNER.org), 'i'), { rendered: true });
  await t.expectText(bob.locator('body'), new RegExp(escapeRe(BOB.email), 'i'), { rendered: true });
  await bob.locator('input[name="password"]').fill(BOB.password);
  await bob.getByRole('button', { name: 'Create account and join', exact: true }).click();
  await t.waitForPath(bob, '/');
  await t.waitHydrated(bob);
  await expectShell(t, bob, { email: BOB.email, role: 'Member' });

  // A member sees the team but cannot invite or manage it.
  await t.goto(bob, '/team');
  await t.expectText(memberRow(bob, OWNER.email).locator('[data-testid="member-role"]'), 'Owner');
  await t.expectText(memberRow(bob, BOB.email).locator('[data-testid="member-role"]'), 'Member');
  assert.equal(await bob.getByRole('button', { name: 'Send invitation' }).count(), 0, 'member sees the invite form');
  assert.equal(await bob.getByRole('button', { name: 'Change role' }).count(), 0, 'member sees "Change role"');
  assert.equal(await bob.getByRole('button', { name: 'Remove' }).count(), 0, 'member sees "Remove"');
  assert.equal(await bob.locator('select[name="role"]').count(), 0, 'member sees a role select');
  t.state.bobStorage = await bobContext.storageState();

  // The owner's team page now lists bob as a member.
  await owner.reload();
  await t.waitHydrated(owner);
  await t.expectText(memberRow(owner, BOB.email).locator('[data-testid="member-role"]'), 'Member');

  // The link is single-use, for anyone.
  const stranger = await (await t.newContext()).newPage();
  await t.goto(stranger, link);
  await t.expectText(stranger.locator('body'), /already been used/i, { rendered: true });
  assert.equal(
    await stranger.getByRole('button', { name: 'Create account and join' }).count(),
    0,
    'a used invite still offers to create the account',
  );
  assert.notEqual(pathOf(stranger), '/', 'a used invite signed the visitor in');
}
