// Secrets on the Settings page: an Owner sets one; its name appears, its
// value never does (not in the page, and the form is emptied); setting the
// same name replaces it; the change is in the log without the value; a
// Viewer sees the list without the form or Delete; the Owner deletes it. An
// SSH key generated here shows its public key, never its private key.
import assert from 'node:assert/strict';
import { OWNER, signIn } from './_common.mjs';

const VALUE = 'a database password nobody may read back';

export default async function secrets(t) {
  const page = await t.newPage();
  await signIn(t, page, OWNER);
  await t.goto(page, '/settings');
  const section = page.locator('[data-testid="secrets"]');
  await t.expectText(section.locator('[data-testid="no-secrets"]'), 'No secrets.');

  // A bad name is refused naming the field.
  const form = section.locator('[data-testid="set-secret"]');
  await form.locator('input[name="name"]').evaluate((el) => el.removeAttribute('pattern'));
  await form.locator('input[name="name"]').fill('1BAD');
  await form.locator('input[name="value"]').fill(VALUE);
  await form.getByRole('button', { name: 'Set secret', exact: true }).click();
  await t.expectText(form.locator('[data-testid="form-error"]'), /name: letters, digits and _/);

  await form.locator('input[name="name"]').fill('DB_PASSWORD');
  await form.locator('input[name="value"]').fill(VALUE);
  await form.getByRole('button', { name: 'Set secret', exact: true }).click();
  const row = section.locator('[data-testid="secret"][data-name="DB_PASSWORD"]');
  await t.expectText(row, /All servers/);
  await t.expectText(row, /Environment variable/);
  assert.equal(await form.locator('input[name="value"]').inputValue(), '', 'the value stays in the form after it was set');
  assert.ok(!(await page.content()).includes(VALUE), 'the value is shown back');

  // The same name again replaces the value: still one row.
  await form.locator('input[name="name"]').fill('DB_PASSWORD');
  await form.locator('input[name="value"]').fill(`${VALUE} (new)`);
  await form.getByRole('button', { name: 'Set secret', exact: true }).click();
  await page.waitForFunction(() => document.querySelector('[data-testid="set-secret"] input[name="value"]').value === '');
  assert.equal(await section.locator('[data-testid="secret"]').count(), 1);

  // The log has both changes, without the value.
  await t.goto(page, '/audit?group=keys');
  await t.expectText(page.locator('[data-testid="audit-row"]').first(), /secret\.set/);
  assert.ok(!(await page.content()).includes(VALUE), 'the audit log shows the value');

  // A Viewer reads the list, without the form or the Delete button.
  const viewerState = t.state.ops?.people?.viewer;
  assert.ok(viewerState, 'no Viewer session: 10-operations must pass first');
  {
    const viewer = await (await t.newContext({ storageState: viewerState })).newPage();
    await t.goto(viewer, '/settings');
    const theirs = viewer.locator('[data-testid="secrets"]');
    await t.expectText(theirs.locator('[data-testid="secret"]'), /DB_PASSWORD/);
    assert.equal(await theirs.locator('[data-testid="set-secret"]').count(), 0);
    assert.equal(await theirs.getByRole('button', { name: 'Delete', exact: true }).count(), 0);
    assert.ok(!(await viewer.content()).includes(VALUE), 'the value is shown to a Viewer');
  }

  // The Owner deletes it.
  await t.goto(page, '/settings');
  await row.getByRole('button', { name: 'Delete', exact: true }).click();
  await t.expectText(section.locator('[data-testid="no-secrets"]'), 'No secrets.');

  // An SSH key is generated here: its public key is shown, the private key
  // never (not in the page, not in the log).
  const generate = section.locator('[data-testid="generate-ssh-key"]');
  await generate.locator('input[name="name"]').fill('DEPLOY_KEY');
  await generate.getByRole('button', { name: 'Generate SSH key', exact: true }).click();
  const key = section.locator('[data-testid="secret"][data-name="DEPLOY_KEY"]');
  await t.expectText(key.locator('[data-testid="ssh-public-key"]'), /^ssh-ed25519 AAAA[0-9A-Za-z+/=]+ pilothouse:DEPLOY_KEY$/);
  await t.expectText(key, /SSH key/);
  assert.ok(!(await page.content()).includes('PRIVATE KEY'), 'the private key is shown');
  await t.goto(page, '/audit?group=keys');
  await t.expectText(page.locator('[data-testid="audit-row"]').first(), /secret\.set/);
  assert.ok(!(await page.content()).includes('PRIVATE KEY'), 'the audit log shows the private key');
  await t.goto(page, '/settings');
  await key.getByRole('button', { name: 'Delete', exact: true }).click();
  await t.expectText(section.locator('[data-testid="no-secrets"]'), 'No secrets.');
}
