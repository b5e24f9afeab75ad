// The audit log records what the earlier tests did.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { OWNER, signIn, sleep } from './_common.mjs';

const EXPECTED = [
  'setup.completed',
  'user.login',
  'invite.created',
  'invite.accepted',
  'member.role_changed',
  'user.logout',
];

export default async function audit(t) {
  const page = await t.newPage();
  await signIn(t, page, OWNER);
  await t.goto(page, '/audit');

  const rows = page.locator('[data-testid="audit-row"]');
  await rows.first().waitFor({ state: 'visible' });
  const deadline = Date.now() + t.timeout;
  let missing = EXPECTED;
  while (missing.length) {
    const texts = await rows.allTextContents();
    missing = EXPECTED.filter((action) => !texts.some((text) => text.includes(action)));
    if (!missing.length) break;
    if (Date.now() > deadline) {
      throw new Error(`audit log lacks ${missing.join(', ')}; rows:\n${texts.map((s) => s.trim()).join('\n')}`);
    }
    await sleep(200);
  }

  // An Owner downloads the log as CSV; the export is itself in the log.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('[data-testid="audit-export"] a', { hasText: 'CSV' }).click(),
  ]);
  assert.match(download.suggestedFilename(), /^audit-\d+-\d{4}-\d{2}-\d{2}\.csv$/);
  const csv = fs.readFileSync(await download.path(), 'utf8').split('\n');
  assert.equal(csv[0], 'org,seq,at,actor_user_id,actor,ip,user_agent,action,target,details,prev_hash,hash');
  assert.ok(csv.some((line) => line.includes('setup.completed')), 'the CSV lacks the first events');
  assert.ok(csv.some((line) => line.includes('audit.exported')), 'the CSV lacks its own record');
  await t.goto(page, '/audit');
  await t.expectText(rows.first(), /audit\.exported/);

  // With a filter in the URL, the download holds what the filter selects.
  await t.goto(page, '/audit?group=team');
  await t.expectText(page.locator('[data-testid="audit-export"]'), /this filter selects/);
  const [filtered] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('[data-testid="audit-export"] a', { hasText: 'CSV' }).click(),
  ]);
  const lines = fs.readFileSync(await filtered.path(), 'utf8').trim().split('\n').slice(1);
  assert.ok(lines.some((line) => line.includes('invite.created')), 'the team export lacks invite.created');
  assert.ok(!lines.some((line) => line.includes('user.login')), 'the team export holds sign-ins');
}
