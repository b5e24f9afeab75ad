// First-run setup: a wrong code is refused, the right one creates the owner,
// and afterwards /setup no longer offers the form.
import assert from 'node:assert/strict';
import { OWNER, expectFormError, expectShell, pathOf, sleep } from './_common.mjs';

async function fillSetup(page, code) {
  await page.locator('input[name="code"]').fill(code);
  await page.locator('input[name="org_name"]').fill(OWNER.org);
  await page.locator('input[name="email"]').fill(OWNER.email);
  await page.locator('input[name="password"]').fill(OWNER.password);
  await page.getByRole('button', { name: 'Create owner account', exact: true }).click();
}

// /setup must not show the form once an owner exists: it may redirect
// (to /login or /) or say that setup is complete.
async function expectSetupClosed(t, page) {
  await page.goto('/setup');
  await t.waitHydrated(page);
  const deadline = Date.now() + t.timeout;
  for (;;) {
    if (pathOf(page) !== '/setup') break;
    const text = (await page.locator('body').innerText().catch(() => '')) || '';
    if (/already|complete/i.test(text)) break;
    if (Date.now() > deadline) throw new Error('/setup still looks open after setup was completed');
    await sleep(100);
  }
  await t.waitHydrated(page);
  assert.ok(['/setup', '/login', '/'].includes(pathOf(page)), `/setup went to ${page.url()}`);
  assert.equal(await page.locator('input[name="code"]').count(), 0, 'setup code field still shown');
  assert.equal(
    await page.getByRole('button', { name: 'Create owner account', exact: true }).count(),
    0,
    'setup button still shown',
  );
}

export default async function setup(t) {
  assert.match(t.setupCode, /^[0-9a-f]{32}$/i);
  const wrong = t.setupCode.toLowerCase() === '0'.repeat(32) ? '1'.repeat(32) : '0'.repeat(32);

  const page = await t.newPage();
  await t.goto(page, '/setup');

  await fillSetup(page, wrong);
  const message = await expectFormError(t, page, '/setup');
  t.log(`wrong setup code refused: ${message}`);
  assert.equal(await page.locator('[data-testid="whoami"]').count(), 0, 'signed in despite the wrong code');

  await t.waitHydrated(page);
  await fillSetup(page, t.setupCode);
  await t.waitForPath(page, '/');
  await t.waitHydrated(page);
  await expectShell(t, page, { email: OWNER.email, role: 'Owner' });

  // Signed in as the owner, and signed out in a fresh context.
  await expectSetupClosed(t, page);
  const other = await (await t.newContext()).newPage();
  await expectSetupClosed(t, other);
  assert.notEqual(pathOf(other), '/', 'a signed-out visitor ended on the dashboard');
}
