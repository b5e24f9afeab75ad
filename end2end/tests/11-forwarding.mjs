// Audit forwarding on the Settings page: an Owner adds a webhook whose
// receiver is not there (a closed loopback port), sees it failing with the
// reason and how far behind it is, and its HMAC key never appears in the
// page; the addition is in the log; a Viewer sees the list without the form;
// the Owner removes it. Delivery itself is tested against real receivers in
// server/tests/forwarding.rs.
import assert from 'node:assert/strict';
import net from 'node:net';
import { OWNER, signIn } from './_common.mjs';

const KEY = 'an HMAC key nobody may read back';

// A loopback port with nothing listening on it.
async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export default async function forwarding(t) {
  const page = await t.newPage();
  await signIn(t, page, OWNER);
  await t.goto(page, '/settings');
  const section = page.locator('[data-testid="forwarding"]');
  await t.expectText(section.locator('[data-testid="no-destinations"]'), 'No destinations.');

  // A bad address is refused naming the field; nothing is added.
  const form = section.locator('[data-testid="add-destination"]');
  await form.locator('select[name="kind"]').selectOption('webhook');
  await form.locator('input[name="name"]').fill('siem');
  await form.locator('input[name="address"]').fill('http://127.0.0.1/hook');
  await form.locator('input[name="secret"]').fill(KEY);
  await form.getByRole('button', { name: 'Add destination', exact: true }).click();
  await t.expectText(form.locator('[data-testid="form-error"]'), /address: a webhook URL starts with https:\/\//);

  const url = `https://127.0.0.1:${await closedPort()}/hook`;
  await form.locator('input[name="address"]').fill(url);
  await form.locator('input[name="secret"]').fill(KEY);
  await form.getByRole('button', { name: 'Add destination', exact: true }).click();
  const row = section.locator('[data-testid="destination"][data-name="siem"]');
  await t.expectText(row, new RegExp(url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  // The forwarder tries every second; the list refreshes every 5 s.
  await t.expectText(row.locator('[data-testid="destination-state"]'), /^Failing \(\d+ attempt\(s\)\): the webhook request failed: .*[Cc]onnection refused/, {
    timeout: 20_000,
  });
  await t.expectText(row.locator('[data-testid="destination-lag"]'), /^\d+ event\(s\), oldest from /);
  const html = await page.content();
  assert.ok(!html.includes(KEY), 'the HMAC key is shown back');
  assert.equal(await form.locator('input[name="secret"]').inputValue(), '', 'the key stays in the form after it was added');

  // The log has the addition.
  await t.goto(page, '/audit?group=audit');
  await t.expectText(page.locator('[data-testid="audit-row"]').first(), /audit\.forwarding_added/);

  // A Viewer reads the list, without the form or the Remove button.
  const viewerState = t.state.ops?.people?.viewer;
  assert.ok(viewerState, 'no Viewer session: 10-operations must pass first');
  {
    const viewer = await (await t.newContext({ storageState: viewerState })).newPage();
    await t.goto(viewer, '/settings');
    const theirs = viewer.locator('[data-testid="forwarding"]');
    await t.expectText(theirs.locator('[data-testid="destination"]'), /siem/);
    assert.equal(await theirs.locator('[data-testid="add-destination"]').count(), 0);
    assert.equal(await theirs.getByRole('button', { name: 'Remove', exact: true }).count(), 0);
  }

  // The Owner removes it.
  await t.goto(page, '/settings');
  await row.getByRole('button', { name: 'Remove', exact: true }).click();
  await t.expectText(section.locator('[data-testid="no-destinations"]'), 'No destinations.');
}
