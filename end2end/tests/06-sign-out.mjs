// Sign out ends on /login, protected pages redirect, and the old session
// cookie is dead on the server too.
import { OWNER, expectRedirectToLogin, signIn } from './_common.mjs';

export default async function signOut(t) {
  const page = await t.newPage();
  await signIn(t, page, OWNER);
  const before = await page.context().storageState();

  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await t.waitForPath(page, '/login');
  await t.waitHydrated(page);

  await expectRedirectToLogin(t, page, '/team');
  await expectRedirectToLogin(t, page, '/');

  // Replaying the cookies from before the sign-out must not work.
  const replay = await (await t.newContext({ storageState: before })).newPage();
  await expectRedirectToLogin(t, replay, '/team');
}
