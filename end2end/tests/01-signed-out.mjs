// Signed out: "/" sends you to /login, and /login is rendered on the server.
import assert from 'node:assert/strict';
import { expectRedirectToLogin } from './_common.mjs';

export default async function signedOut(t) {
  // Plain HTTP, no JavaScript: the sign-in form must already be in the HTML.
  const res = await fetch(`${t.baseUrl}/login`);
  assert.equal(res.status, 200, `GET /login answered ${res.status}`);
  assert.match(res.headers.get('content-type') || '', /text\/html/);
  const html = await res.text();
  assert.match(html, /<form\b/i, 'no <form> in the server-rendered /login');
  assert.match(html, /<input\b[^>]*\bname="email"/, 'no email input in the server-rendered /login');
  assert.match(html, /<input\b[^>]*\bname="password"/, 'no password input in the server-rendered /login');
  assert.match(html, /<button\b[^>]*>(?:(?!<\/button>)[\s\S])*Sign in(?:(?!<\/button>)[\s\S])*<\/button>/, 'no "Sign in" button in the server-rendered /login');

  const page = await t.newPage();
  await expectRedirectToLogin(t, page, '/');
  await page.getByRole('button', { name: 'Sign in', exact: true }).waitFor({ state: 'visible' });
  await page.locator('input[name="email"]').waitFor({ state: 'visible' });
  await page.locator('input[name="password"]').waitFor({ state: 'visible' });
}
