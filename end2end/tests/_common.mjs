// Shared data and steps for the browser tests (not a test itself: "_" prefix).
import assert from 'node:assert/strict';

export const OWNER = {
  org: 'Acme',
  email: 'owner@example.com',
  password: 'correct horse battery staple',
};

export const BOB = {
  email: 'bob@example.com',
  password: 'Bob-keeps-a-much-longer-passphrase-42!',
};

export const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// A mail's quoted-printable undone, soft line breaks joined.
export function decodeQp(text) {
  return text
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const pathOf = (page) => new URL(page.url()).pathname;

// Signs in through the login form and checks the shell shows the user.
export async function signIn(t, page, { email, password }) {
  await t.goto(page, '/login');
  await page.locator('input[name="email"]').fill(email);
  await page.locator('input[name="password"]').fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await t.waitForPath(page, '/');
  await t.waitHydrated(page);
  await t.expectText(page.locator('[data-testid="whoami"]'), new RegExp(escapeRe(email)));
}

// The shell of a signed-in user: whoami, role label, the navigation.
export async function expectShell(t, page, { email, role }) {
  await t.expectText(page.locator('[data-testid="whoami"]'), new RegExp(escapeRe(email)));
  await t.expectText(page.locator('[data-testid="role"]'), role);
  for (const name of ['Dashboard', 'Servers', 'Approvals', 'Audit log', 'Team', 'Settings']) {
    const links = page.getByRole('link', { name, exact: true });
    assert.ok((await links.count()) > 0, `navigation link "${name}" missing on ${page.url()}`);
  }
}

// A visit to a page that needs a session ends on /login.
export async function expectRedirectToLogin(t, page, target) {
  await page.goto(target);
  await t.waitForPath(page, '/login');
  await t.waitHydrated(page);
  assert.equal(await page.locator('[data-testid="whoami"]').count(), 0, `${target}: signed-out page shows a user`);
}

// After a refused submit: waits for the form error, checks the page stayed put.
export async function expectFormError(t, page, stayOn) {
  const error = page.locator('[data-testid="form-error"]');
  await error.first().waitFor({ state: 'visible' });
  const message = await t.expectText(error, /\S/);
  assert.equal(pathOf(page), stayOn, `after the refused form the page moved to ${page.url()}`);
  return message;
}

export const memberRow = (page, email) => page.locator(`tr[data-testid="member-row"][data-email="${email}"]`);
