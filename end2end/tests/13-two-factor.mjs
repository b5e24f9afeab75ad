// Two-factor sign-in in a real browser: Bob sets up an authenticator app in
// Settings (the QR code is drawn, the key is shown, a code turns it on and the
// ten recovery codes appear once), then a password sign-in stops at
// /login/code until a code is right: a wrong code is refused, the current
// TOTP code signs in, a recovery code signs in once and only once. Bob turns
// it off again with his password. The sign-ins from new browsers show as
// notices; Bob acknowledges one, then changes his password (last: later
// files do not sign in as Bob).
//
// The codes are computed here the way an authenticator app does (RFC 6238:
// HMAC-SHA1 over the 30-second step) from the key the page shows.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { BOB, escapeRe, expectFormError, signIn } from './_common.mjs';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function decodeBase32(text) {
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of text.replace(/\s/g, '')) {
    const v = ALPHABET.indexOf(c);
    assert.ok(v >= 0, `the key shown is not base32: ${JSON.stringify(c)}`);
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

function totp(seed, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', seed).update(counter).digest();
  const offset = mac[19] & 0x0f;
  const bin = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(bin % 1_000_000).padStart(6, '0');
}

const stepNow = () => Math.floor(Date.now() / 30_000);

// Signs in with the password and expects the code step.
async function passwordStep(t, page) {
  await t.goto(page, '/login');
  await page.locator('input[name="email"]').fill(BOB.email);
  await page.locator('input[name="password"]').fill(BOB.password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await t.waitForPath(page, '/login/code');
  await t.waitHydrated(page);
  assert.equal(await page.locator('[data-testid="whoami"]').count(), 0, 'signed in before the code');
}

async function enterCode(page, code) {
  const form = page.locator('[data-testid="code-form"]');
  await form.locator('input[name="code"]').fill(code);
  await form.getByRole('button', { name: 'Sign in', exact: true }).click();
}

export default async function twoFactor(t) {
  const page = await t.newPage();
  await signIn(t, page, BOB);
  await t.goto(page, '/settings');
  const section = page.locator('[data-testid="two-factor"]');
  await section.locator('[data-testid="mfa-off"]').waitFor();

  // Set up: the QR code and the key.
  await section.locator('[data-testid="mfa-begin"]').click();
  const setup = section.locator('[data-testid="mfa-setup"]');
  await setup.waitFor();
  assert.ok((await setup.locator('svg path').count()) > 0, 'no QR code drawn');
  const key = (await setup.locator('[data-testid="mfa-secret"]').innerText()).trim();
  assert.match(key, /^[A-Z2-7]{32}$/, 'a 160-bit key in base32');
  const seed = decodeBase32(key);

  // A wrong code does not turn it on.
  const confirm = setup.locator('[data-testid="mfa-confirm"]');
  const window = new Set([-1, 0, 1].map((d) => totp(seed, stepNow() + d)));
  const wrong = ['000000', '111111', '222222', '333333'].find((c) => !window.has(c));
  await confirm.locator('input[name="code"]').fill(wrong);
  await confirm.getByRole('button', { name: 'Turn on', exact: true }).click();
  await t.expectText(confirm.locator('[data-testid="form-error"]'), /not right/);

  // The current code does, and shows the recovery codes once.
  await confirm.locator('input[name="code"]').fill(totp(seed, stepNow()));
  await confirm.getByRole('button', { name: 'Turn on', exact: true }).click();
  const codes = section.locator('[data-testid="recovery-code"]');
  await section.locator('[data-testid="recovery-codes"]').waitFor();
  assert.equal(await codes.count(), 10, 'ten recovery codes');
  const recovery = (await codes.allInnerTexts()).map((c) => c.trim());
  for (const c of recovery) assert.match(c, /^[A-Z2-7]{4}(-[A-Z2-7]{4}){3}$/);
  await t.expectText(section.locator('[data-testid="mfa-on"]'), /10 recovery code\(s\) left/);
  await page.reload();
  await t.waitHydrated(page);
  await section.locator('[data-testid="mfa-on"]').waitFor();
  assert.equal(await section.locator('[data-testid="recovery-code"]').count(), 0, 'recovery codes shown again after a reload');

  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await t.waitForPath(page, '/login');

  // The password alone stops at the code step; a protected page sends back to /login.
  await passwordStep(t, page);
  const held = await (await t.newContext({ storageState: await page.context().storageState() })).newPage();
  await held.goto('/team');
  await t.waitForPath(held, '/login');

  // A wrong code is refused and the page stays on the code step.
  const nowWindow = new Set([-1, 0, 1, 2].map((d) => totp(seed, stepNow() + d)));
  await enterCode(page, ['000000', '111111', '222222', '333333'].find((c) => !nowWindow.has(c)));
  const message = await expectFormError(t, page, '/login/code');
  t.log(`wrong code refused: ${message}`);

  // The next step's code (the one used to turn it on may not be used again).
  await enterCode(page, totp(seed, stepNow() + 1));
  await t.waitForPath(page, '/');
  await t.waitHydrated(page);
  await t.expectText(page.locator('[data-testid="whoami"]'), new RegExp(escapeRe(BOB.email)));

  // A recovery code signs in once, in another browser.
  const other = await (await t.newContext()).newPage();
  await passwordStep(t, other);
  await enterCode(other, recovery[3].toLowerCase());
  await t.waitForPath(other, '/');
  await t.waitHydrated(other);
  await t.expectText(other.locator('[data-testid="whoami"]'), new RegExp(escapeRe(BOB.email)));
  const third = await (await t.newContext()).newPage();
  await passwordStep(t, third);
  await enterCode(third, recovery[3]);
  await expectFormError(t, third, '/login/code');

  // Turning it off needs the password.
  await t.goto(page, '/settings');
  await t.expectText(section.locator('[data-testid="mfa-on"]'), /9 recovery code\(s\) left/);
  const off = section.locator('[data-testid="mfa-disable"]');
  await off.locator('input[name="password"]').fill('not the password');
  await off.getByRole('button', { name: 'Turn off two-factor sign-in', exact: true }).click();
  await t.expectText(off.locator('[data-testid="form-error"]'), /\S/);
  await off.locator('input[name="password"]').fill(BOB.password);
  await off.getByRole('button', { name: 'Turn off two-factor sign-in', exact: true }).click();
  await section.locator('[data-testid="mfa-off"]').waitFor();

  // And the password alone signs in again.
  const last = await (await t.newContext()).newPage();
  await signIn(t, last, BOB);

  // Those were sign-ins from browsers new to the account: the top bar says
  // so, and Settings lists them; "This was me" clears one.
  const badge = last.locator('[data-testid="notices-badge"]');
  const before = Number((await t.expectText(badge, /\d+ new sign-in/)).match(/\d+/)[0]);
  assert.ok(before >= 1, `badge: ${before}`);
  await t.goto(last, '/settings');
  const open = last.locator('[data-testid="sign-in-notice"][data-read="false"]');
  assert.equal(await open.count(), before, 'unread notices in Settings');
  await open.first().getByRole('button', { name: 'This was me', exact: true }).click();
  const deadline = Date.now() + 15_000;
  while ((await open.count()) !== before - 1) {
    assert.ok(Date.now() < deadline, `still ${await open.count()} unread after "This was me"`);
    await new Promise((r) => setTimeout(r, 200));
  }
  await last.reload();
  await t.waitHydrated(last);
  if (before > 1) await t.expectText(badge, new RegExp(`^${before - 1} new sign-in`));
  else assert.equal(await badge.count(), 0, 'the badge stayed');

  // Changing the password needs the current one and signs out the others.
  const form = last.locator('[data-testid="password"]');
  await form.locator('input[name="current"]').fill('not the password');
  await form.locator('input[name="new_password"]').fill(`${BOB.password}-changed`);
  await form.locator('input[name="repeat"]').fill(`${BOB.password}-changed`);
  await form.getByRole('button', { name: 'Change password', exact: true }).click();
  await t.expectText(form.locator('[data-testid="form-error"]'), /not right/);
  await form.locator('input[name="current"]').fill(BOB.password);
  await form.getByRole('button', { name: 'Change password', exact: true }).click();
  await t.expectText(form.locator('[data-testid="password-changed"]'), /Password changed\. \d+ other session/);
  await page.goto('/team');
  await t.waitForPath(page, '/login');
  await signIn(t, await (await t.newContext()).newPage(), { email: BOB.email, password: `${BOB.password}-changed` });
}
