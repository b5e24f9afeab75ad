// The audit log records what the earlier tests did.
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
}
