// Sign-in with GitHub in a real browser, against the stand-in for GitHub's
// OAuth and API endpoints (server/tests/helpers/github_standin.mjs, started
// by end2end/run.mjs): GitHub's servers cannot be reached from this machine.
// Its sign-in page is a plain form where one types a GitHub login.
//
// The Owner links GitHub from Settings -> Sign-in methods; signed out, "Sign
// in with GitHub" signs the Owner in; someone at acme.example (allowed to
// join as Member by 14-sso.mjs) joins through GitHub at the first sign-in.
import assert from 'node:assert/strict';
import { OWNER, expectShell, signIn } from './_common.mjs';

async function signInAtGitHub(t, page, github, login) {
  await page.waitForURL((url) => url.origin === github.url, { waitUntil: 'commit' });
  await page.locator('#login').fill(login);
  await page.locator('#sign-in').click();
  await page.waitForURL((url) => url.origin === t.baseUrl, { waitUntil: 'commit' }).catch(() => {
    throw new Error(`GitHub did not send the browser back to ${t.baseUrl}: at ${page.url()}`);
  });
}

export default async function github(t) {
  const gh = t.github;

  // The Owner links GitHub from Settings.
  const owner = await t.newPage();
  await signIn(t, owner, OWNER);
  await t.goto(owner, '/settings');
  const row = owner.locator('[data-testid="sign-in-methods"] [data-testid="method-github"]');
  const link = row.locator('[data-testid="link-provider"]');
  await t.expectText(link, 'Link GitHub');
  assert.match(await link.getAttribute('href'), /^\/auth\/github\/start\?link=[^&]+$/);
  await link.click();
  await signInAtGitHub(t, owner, gh, 'owner-gh');
  await t.waitForPath(owner, '/settings');
  await t.waitHydrated(owner);
  await t.expectText(row.locator('[data-testid="linked-email"]'), `Linked: ${OWNER.email}`);

  // Signed out, "Sign in with GitHub" signs the Owner in.
  const again = await (await t.newContext()).newPage();
  await t.goto(again, '/login');
  const button = again.locator('[data-testid="sso-github"]');
  await t.expectText(button, 'Sign in with GitHub');
  await button.click();
  await signInAtGitHub(t, again, gh, 'owner-gh');
  await t.waitForPath(again, '/');
  await t.waitHydrated(again);
  await expectShell(t, again, { email: OWNER.email, role: 'Owner' });

  // Someone at acme.example joins through GitHub as a Member.
  const octo = await (await t.newContext()).newPage();
  await t.goto(octo, '/login');
  await octo.locator('[data-testid="sso-github"]').click();
  await signInAtGitHub(t, octo, gh, 'gh-newcomer');
  await t.waitForPath(octo, '/');
  await t.waitHydrated(octo);
  await expectShell(t, octo, { email: 'octo@acme.example', role: 'Member' });
}
