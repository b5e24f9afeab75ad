// A wrong password is refused on /login; the right one still works afterwards.
import assert from 'node:assert/strict';
import { OWNER, expectFormError, expectShell } from './_common.mjs';

export default async function wrongPassword(t) {
  const page = await t.newPage();
  await t.goto(page, '/login');
  await page.locator('input[name="email"]').fill(OWNER.email);
  await page.locator('input[name="password"]').fill('not the right password at all');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  const message = await expectFormError(t, page, '/login');
  t.log(`wrong password refused: ${message}`);
  assert.equal(await page.locator('[data-testid="whoami"]').count(), 0, 'signed in with a wrong password');

  // Still not signed in when loading a protected page.
  await page.goto('/team');
  await t.waitForPath(page, '/login');
  await t.waitHydrated(page);

  // One failure does not lock the account.
  await page.locator('input[name="email"]').fill(OWNER.email);
  await page.locator('input[name="password"]').fill(OWNER.password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await t.waitForPath(page, '/');
  await t.waitHydrated(page);
  await expectShell(t, page, { email: OWNER.email, role: 'Owner' });
}
