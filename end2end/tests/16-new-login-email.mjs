// The new-sign-in email, read from a real SMTP server (npm smtp-server on
// loopback, started by end2end/run.mjs): the Owner signs in from a browser
// the account has not used; the message that arrives names the time, the
// address, the browser and the method, and carries a "this wasn't me" link,
// which opens a page with a button (so a mail scanner that fetches the link
// does nothing). The link is not followed through: it would lock the Owner out.
//
// Skipped (visibly; a failure under CI=true) when npm smtp-server is not installed.
import assert from 'node:assert/strict';
import { OWNER, decodeQp, signIn } from './_common.mjs';

export default async function newLoginEmail(t) {
  const mail = t.requireMail();
  const before = mail.messages().length;

  const page = await (await t.newContext()).newPage();
  await signIn(t, page, OWNER);
  const userAgent = await page.evaluate(() => navigator.userAgent);

  // This sign-in's message (by password): an earlier test's GitHub sign-in may
  // be told by a message that arrives after this test began.
  const message = await mail.waitFor(
    (m) => m.to.includes(OWNER.email) && /^Subject: New sign-in/im.test(m.data) && /Method: password/.test(decodeQp(m.data)),
    before,
  );
  const text = decodeQp(message.data);
  assert.match(text, /Address: 127\.0\.0\.1/, text);
  assert.match(text, /Method: password/, text);
  assert.ok(text.includes(userAgent.slice(0, 40)), `the browser is not named:\n${text}`);
  const link = text.match(/(http:\/\/127\.0\.0\.1:\d+\/not-me\/[0-9a-f]+)/);
  assert.ok(link, `no "this wasn't me" link:\n${text}`);
  // Nothing of the session in the message.
  const cookies = await page.context().cookies();
  for (const c of cookies) {
    assert.ok(!message.data.includes(c.value), `the message carries the ${c.name} cookie`);
  }

  // The link opens a confirmation page; nothing happens until its button.
  const check = await (await t.newContext()).newPage();
  await check.goto(link[1]);
  await t.waitHydrated(check);
  const button = check.getByRole('button', { name: 'Sign out everywhere and lock the password' });
  await button.waitFor({ state: 'visible' });
  // The Owner is still signed in.
  await t.goto(page, '/settings');
  await t.expectText(page.locator('[data-testid="whoami"]'), OWNER.email);
}
