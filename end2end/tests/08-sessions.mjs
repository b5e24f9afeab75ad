// /settings lists the owner's sessions; "Sign out everywhere else" ends the
// others and keeps this one.
import assert from 'node:assert/strict';
import { OWNER, expectRedirectToLogin, expectShell, signIn } from './_common.mjs';

export default async function sessions(t) {
  const here = await t.newPage();
  await signIn(t, here, OWNER);
  const elsewhere = await (await t.newContext()).newPage();
  await signIn(t, elsewhere, OWNER);

  await t.goto(here, '/settings');
  const rows = here.locator('[data-testid="session-row"]');
  await rows.first().waitFor({ state: 'visible' });
  const before = await rows.count();
  assert.ok(before >= 2, `expected at least 2 sessions, found ${before}`);
  // The audit public key to pin: 32 bytes, base64url.
  await t.expectText(here.locator('[data-testid="audit-public-key"]'), /^[A-Za-z0-9_-]{43}$/);

  here.on('dialog', (dialog) => dialog.accept()); // in case it asks to confirm
  await here.getByRole('button', { name: 'Sign out everywhere else', exact: true }).click();
  await t.expectCount(rows, 1);
  await here.reload();
  await t.waitHydrated(here);
  await t.expectCount(here.locator('[data-testid="session-row"]'), 1);

  await expectRedirectToLogin(t, elsewhere, '/');
  await t.goto(here, '/');
  await expectShell(t, here, { email: OWNER.email, role: 'Owner' });
}
