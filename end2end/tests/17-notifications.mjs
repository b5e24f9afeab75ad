// Notification channels on the Settings page, with the real SMTP server
// (npm smtp-server on loopback, started by end2end/run.mjs): the Owner adds
// an email channel, then a Slack-style channel whose URL (the secret) is
// never shown back: the list shows only its host, and with no receiver there
// the channel shows its failure, without the URL. Adding the second channel
// is itself announced: the email channel's message arrives, naming it,
// without the URL. Both channels are removed at the end.
//
// Skipped (visibly; a failure under CI=true) when npm smtp-server is not installed.
import assert from 'node:assert/strict';
import { OWNER, decodeQp, signIn } from './_common.mjs';

const TOKEN = 'T0E2E/B0E2E/notifications-token-5d2c';

export default async function notifications(t) {
  const mail = t.requireMail();
  const before = mail.messages().length;
  const page = await t.newPage();
  await signIn(t, page, OWNER);
  await t.goto(page, '/settings');
  const section = page.locator('[data-testid="notifications"]');
  await t.expectText(section.locator('[data-testid="no-channels"]'), 'No notification channels.');
  const form = section.locator('[data-testid="add-channel"]');

  // An address that is not one is refused, naming the field.
  await form.locator('input[name="name"]').fill('security team');
  await form.locator('input[name="address"]').fill('not an address');
  await form.getByRole('button', { name: 'Add channel', exact: true }).click();
  await t.expectText(form.locator('[data-testid="form-error"]'), /address: an email address/);

  await form.locator('input[name="address"]').fill('security@acme.example');
  await form.getByRole('button', { name: 'Add channel', exact: true }).click();
  const email = section.locator('[data-testid="channel"][data-name="security team"]');
  await t.expectText(email.locator('[data-testid="channel-address"]'), 'security@acme.example');

  // A Slack channel: its URL is the secret. Nothing listens at that port.
  const url = `https://127.0.0.1:9/services/${TOKEN}`;
  await form.locator('select[name="kind"]').selectOption('slack');
  await form.locator('input[name="name"]').fill('ops chat');
  await form.locator('input[name="secret"]').fill(url);
  await form.getByRole('button', { name: 'Add channel', exact: true }).click();
  const slack = section.locator('[data-testid="channel"][data-name="ops chat"]');
  await t.expectText(slack.locator('[data-testid="channel-address"]'), '127.0.0.1:9');
  assert.equal(await form.locator('input[name="secret"]').inputValue(), '', 'the URL stays in the form');
  // It fails (nothing listens), says so, and never shows the URL.
  await t.expectText(slack.locator('[data-testid="channel-state"]'), /^Failing \(\d+ attempt\(s\)\): /, { timeout: 30_000 });
  assert.ok(!(await page.content()).includes(TOKEN), 'the Slack URL is shown back');

  // The email channel was told the Slack channel was added.
  const message = await mail.waitFor(
    (m) => m.to.includes('security@acme.example') && /name: ops chat/.test(decodeQp(m.data)),
    before,
  );
  assert.match(message.data, /^Subject: \[Pilothouse\] Acme: a notification channel was added/im);
  assert.ok(!decodeQp(message.data).includes(TOKEN), 'the announcement carries the Slack URL');

  // Removed again.
  for (const channel of [slack, email]) {
    await channel.getByRole('button', { name: 'Remove', exact: true }).click();
    await t.expectCount(channel, 0);
  }
  await t.expectText(section.locator('[data-testid="no-channels"]'), 'No notification channels.');
}
