// Operations and approvals with the real agent, whose agent.toml maps
// restart_service and install_package to harmless local scripts and watches
// a unit whose state is read from a file the test writes:
// - a failed watched unit makes the AI Pilot propose a restart; a Member
//   approves it on the Approvals page and the operation page shows the live
//   output and the state Succeeded; a Viewer sees no decision buttons;
// - a Member proposes a high-risk install from the server page: a second
//   Member gets the refusal note instead of the buttons, and so does the
//   proposer; an Admin approves it;
// - the Owner sets a secret in Settings and runs the backup whose profile
//   names it (`secret://E2E_DB_PASSWORD`): the task gets the value, the page
//   and the log never show it;
// - with Production Protection on, the pilot's proposal for a new failure is
//   refused and the server page shows the finding;
// - at 390 px wide the shell has no sideways scrolling and an approval works.
//
// The server runs the pilot's rules every 2 s (run.mjs sets
// PILOTHOUSE_PILOT_INTERVAL_SECS). State carries from one step to the next.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OWNER, escapeRe, signIn, sleep } from './_common.mjs';

const SLOW = 45_000;
const PASSWORD = 'Operations-test-passphrase-2024!';
const PEOPLE = {
  member: { email: 'mia.member@example.com', role: 'member' },
  member2: { email: 'max.member@example.com', role: 'member' },
  admin: { email: 'ada.admin@example.com', role: 'admin' },
  viewer: { email: 'vic.viewer@example.com', role: 'viewer' },
};
const HOST = 'e2e-ops';
const PHONE = { width: 390, height: 844 };
const DB_PASSWORD = 'e2e-db-password-from-settings-4b7a';

// ---------------------------------------------------------------------------
// Helpers

// The owner invites someone; they join in their own browser context.
// Returns that context's storage state (their session).
async function join(t, owner, { email, role }) {
  await t.goto(owner, '/team');
  const form = owner.locator('form').filter({
    has: owner.getByRole('button', { name: 'Send invitation', exact: true }),
  });
  await form.locator('input[name="email"]').fill(email);
  await form.locator('select[name="role"]').selectOption(role);
  await form.getByRole('button', { name: 'Send invitation', exact: true }).click();
  const link = await t.expectText(owner.locator('[data-testid="invite-link"]'), /\/invite\/[A-Za-z0-9_-]{16,}$/);
  const context = await t.newContext();
  const page = await context.newPage();
  await t.goto(page, link);
  await page.locator('input[name="password"]').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account and join', exact: true }).click();
  await t.waitForPath(page, '/');
  await t.waitHydrated(page);
  await t.expectText(page.locator('[data-testid="whoami"]'), new RegExp(escapeRe(email)));
  return context.storageState();
}

// A page signed in as someone who joined in an earlier step; with
// { js: false }, a browser without JavaScript (plain form posts).
async function as(t, who, { js = true } = {}) {
  const storage = t.state.ops?.people?.[who];
  assert.ok(storage, `no session for ${who}: the first step of this file must pass first`);
  return (await t.newContext({ storageState: storage, javaScriptEnabled: js })).newPage();
}

// The agent's config and the scripts it runs. unit-state holds what the
// watched unit's state command prints.
function agentFiles(dir) {
  const write = (name, text, mode) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text, { mode });
    fs.chmodSync(file, mode);
    return file;
  };
  const unitState = write('unit-state', 'active\n', 0o644);
  const state = write('state.sh', `#!/bin/sh\ncat '${unitState}'\n`, 0o755);
  const restart = write('restart.sh', '#!/bin/sh\necho "restarting $1"\n', 0o755);
  const install = write('install.sh', '#!/bin/sh\necho "installing $1"\n', 0o755);
  // The backup that is given a control-plane secret leaves what it got here.
  const dbUrl = path.join(dir, 'db-url');
  const dump = write('dump.sh', `#!/bin/sh\nprintf %s "$DB_URL" > '${dbUrl}'\necho "dumping with $DB_URL"\n`, 0o755);
  const vault = write('vault.toml', 'e2e_note = "operations-test-vault-entry"\n', 0o600);
  const config = write(
    'agent.toml',
    [
      'metrics_interval_secs = 2',
      '[operations]',
      `work_dir = "${path.join(dir, 'tasks')}"`,
      `vault = "${vault}"`,
      'units = ["nginx.service"]',
      'watched_units = ["nginx.service"]',
      `unit_state = ["${state}", "{unit}"]`,
      `restart_service = ["${restart}", "{unit}"]`,
      `install_package = { tool = "apt-get", command = ["${install}", "{package}"] }`,
      '[operations.backup_profiles.db]',
      `command = ["${dump}"]`,
      'env = { DB_URL = "postgres://app:secret://E2E_DB_PASSWORD@db/app" }',
      '',
    ].join('\n'),
    0o600,
  );
  return { config, unitState, dbUrl };
}

async function addServer(t, page) {
  await t.goto(page, '/servers');
  await page.getByRole('button', { name: 'Add server', exact: true }).click();
  const text = await t.expectText(page.locator('[data-testid="register-command"]'), /pilothouse-agent register/);
  const m = text.match(/'(pht1_[0-9a-f_]+)' \| pilothouse-agent register --server (\S+) --token-file -$/);
  assert.ok(m, `no register command in ${JSON.stringify(text)}`);
  return { token: m[1], server: m[2] };
}

function startAgent(t, { token, server }) {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pilothouse-ops-agent-'));
  const opsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pilothouse-ops-files-'));
  fs.chmodSync(stateDir, 0o700);
  const args = ['register', '--server', server, '--token-file', '-', '--state-dir', stateDir, '--hostname', HOST];
  const reg = spawnSync(t.agentBin, args, { encoding: 'utf8', timeout: 30_000, input: `${token}\n` });
  assert.equal(reg.status, 0, `register failed: ${reg.stderr}${reg.stdout}`);
  const { config, unitState, dbUrl } = agentFiles(opsDir);
  const proc = spawn(t.agentBin, ['run', '--state-dir', stateDir, '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info' },
  });
  const output = [];
  proc.stdout.on('data', (d) => output.push(String(d)));
  proc.stderr.on('data', (d) => output.push(String(d)));
  // Never outlive the run, whatever happens to the steps.
  process.on('exit', () => proc.kill('SIGKILL'));
  return { proc, stateDir, opsDir, unitState, dbUrl, output };
}

function setUnit(state) {
  fs.writeFileSync(t0().agent.unitState, `${state}\n`);
}

// The shared state of this file's steps.
let shared = null;
const t0 = () => {
  assert.ok(shared?.agent, 'the first step of this file must pass first');
  return shared;
};

// Loads `target` until `locator` matches (pages without a timer of their own).
async function reloadUntil(t, page, target, locator, { timeout = SLOW } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    await t.goto(page, target);
    if ((await locator.count()) > 0) return;
    if (Date.now() > deadline) throw new Error(`${locator} did not appear on ${target} within ${timeout / 1000} s`);
    await sleep(1000);
  }
}

const pendingItem = (page, id) => page.locator(`[data-testid="pending-op"][data-op="${id}"]`);

// Fills the reason of the item's Approve or Reject form and submits it.
async function decide(item, button, reason) {
  const form = item.locator('form').filter({ has: item.page().getByRole('button', { name: button, exact: true }) });
  await form.locator('input[name="reason"]').fill(reason);
  await form.getByRole('button', { name: button, exact: true }).click();
}

async function expectNoDecisionButtons(page, where) {
  for (const name of ['Approve', 'Reject']) {
    assert.equal(await where.getByRole('button', { name, exact: true }).count(), 0, `"${name}" shown on ${page.url()}`);
  }
}

async function proposeFromServerPage(t, page, { kind, reason }) {
  await t.goto(page, t0().serverPath);
  const form = page.locator('[data-testid="propose-form"]');
  await form.locator('select[name="kind"]').selectOption(kind);
  await form.locator('input[name="reason"]').fill(reason);
  // The card refreshes itself every 5 s: what was typed and chosen survives it.
  // Two refreshes a tick apart: the first one's redraw has surely happened.
  for (let i = 0; i < 2; i++) {
    await page.waitForResponse((r) => r.url().includes('/server-detail') && r.ok(), { timeout: 15_000 });
    await sleep(1_000);
  }
  assert.equal(await form.locator('input[name="reason"]').inputValue(), reason, 'a refresh wiped the reason');
  assert.equal(await form.locator('select[name="kind"]').inputValue(), kind, 'a refresh reset the operation');
  await form.getByRole('button', { name: 'Propose', exact: true }).click();
  await t.waitForPath(page, /^\/operations\/op_[0-9a-f]{24}$/);
  await t.waitHydrated(page);
  return new URL(page.url()).pathname.split('/').pop();
}

async function expectFinished(t, page, id, { output }) {
  if (new URL(page.url()).pathname !== `/operations/${id}`) await t.goto(page, `/operations/${id}`);
  // The page refreshes itself every 2 s while the operation runs.
  await t.expectText(page.locator('[data-testid="target-output"]'), output, { timeout: SLOW });
  await t.expectText(page.locator('[data-testid="op-state"]'), 'Succeeded', { timeout: SLOW });
  await t.expectText(page.locator('[data-testid="target-output"]'), /\[exit 0\]/);
  await t.expectText(page.locator('[data-testid="target-state"]'), 'Succeeded');
  await t.expectText(page.locator('[data-testid="plan-hash"]'), /^[0-9a-f]{16,}$/);
}

async function expectNoSidewaysScroll(page, what) {
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= PHONE.width, `${what} at ${PHONE.width} px is ${width} px wide (scrolls sideways)`);
}

// ---------------------------------------------------------------------------
// Steps

async function setUp(t) {
  assert.ok(fs.existsSync(t.agentBin), `agent binary ${t.agentBin} missing: build it with cargo build -p agent`);
  const owner = await t.newPage();
  await signIn(t, owner, OWNER);
  const people = {};
  for (const [who, person] of Object.entries(PEOPLE)) people[who] = await join(t, owner, person);
  people.owner = await owner.context().storageState();

  const agent = startAgent(t, await addServer(t, owner));
  shared = { agent };
  t.state.ops = { people };
  await t.goto(owner, '/servers');
  const row = owner.locator('tr[data-testid="server-row"]', { hasText: HOST });
  await t.expectText(row.locator('[data-testid="server-status"]'), 'Online', { timeout: SLOW });
  await row.getByRole('link', { name: HOST, exact: true }).click();
  await t.waitForPath(owner, /^\/servers\/agt_[0-9a-f]{24}$/);
  await t.waitHydrated(owner);
  shared.serverPath = new URL(owner.url()).pathname;

  // The Operations card: what the agent declared, and the unit it watches.
  const card = owner.locator('[data-testid="server-operations"]');
  await reloadUntil(t, owner, shared.serverPath, card.locator('[data-testid="capability"][data-kind="install_package"]'));
  for (const kind of ['restart_service', 'install_package']) {
    assert.equal(await card.locator(`[data-testid="capability"][data-kind="${kind}"]`).count(), 1, `${kind} not offered`);
  }
  await t.expectText(card.locator('[data-testid="watched-unit"][data-unit="nginx.service"] [data-testid="unit-state"]'), 'active', { timeout: SLOW });
  await t.expectText(card.locator('[data-testid="production-state"]'), 'Off');
  // Only the kinds the agent declared are offered (plans of them too).
  const kinds = await card.locator('select[name="kind"] option').evaluateAll((opts) => opts.map((o) => o.value));
  assert.deepEqual(kinds.sort(), ['install_package', 'restart_service', 'run_backup', 'run_plan'], `kinds offered: ${kinds}`);
}

async function pilotProposesAMemberApproves(t) {
  const { agent } = t0();
  setUnit('failed');

  // The pilot's proposal reaches the Member's queue, with its evidence.
  const member = await as(t, 'member');
  const item = member.locator('[data-testid="pending-op"][data-kind="restart_service"]');
  await reloadUntil(t, member, '/approvals', item);
  const id = await item.getAttribute('data-op');
  await t.expectText(item.locator('[data-testid="op-proposer"]'), 'AI Pilot');
  await t.expectText(item.locator('[data-testid="risk"]'), 'Medium risk');
  await t.expectText(item.locator('[data-testid="op-targets"]'), new RegExp(HOST));
  await t.expectText(item.locator('[data-testid="op-evidence"]'), /nginx\.service.*failed/);
  await t.expectText(item.locator('[data-testid="op-plan"]'), /"unit": "nginx\.service"/);
  // The nav badge counts what this Member could approve. (Loaded again: the
  // load that first showed the item may have counted just before it.)
  await t.goto(member, '/approvals');
  await t.expectText(member.locator('aside [data-testid="approvals-badge"]'), '1');

  // A Viewer sees the queue but no way to decide, and no note either.
  const viewer = await as(t, 'viewer');
  await t.goto(viewer, '/approvals');
  await pendingItem(viewer, id).waitFor();
  await expectNoDecisionButtons(viewer, viewer.locator('main'));
  assert.equal(await viewer.locator('[data-testid="decide-refusal"]').count(), 0, 'a Viewer sees a refusal note');
  assert.equal(await viewer.locator('aside [data-testid="approvals-badge"]').count(), 0, 'a Viewer sees the badge');

  // The Member approves with a reason; the proposal leaves the queue.
  await decide(pendingItem(member, id), 'Approve', 'nginx is down, restart it');
  await t.expectCount(pendingItem(member, id), 0);
  const recent = member.locator(`tr[data-testid="recent-op"][data-op="${id}"]`);
  await recent.getByRole('link', { name: 'Restart service', exact: true }).click();
  await t.waitForPath(member, `/operations/${id}`);
  await expectFinished(t, member, id, { output: /restarting nginx\.service/ });
  const approval = member.locator('[data-testid="approval"]');
  await t.expectText(approval, new RegExp(`${escapeRe(PEOPLE.member.email)}.*Member.*nginx is down, restart it`));
  const states = await member.locator('[data-testid="timeline-entry"]').evaluateAll((es) => es.map((e) => e.dataset.state));
  for (const s of ['proposed', 'approved', 'succeeded']) assert.ok(states.includes(s), `timeline lacks ${s}: ${states}`);
  t.log(`pilot operation ${id} ran on the agent (${agent.output.length} agent log chunks)`);
}

async function highRiskNeedsAnAdmin(t) {
  // A Member proposes a high-risk install from the server page, without
  // JavaScript: the form shows the fields of the kind chosen (CSS only) and
  // its plain post leads to the new operation's page.
  const plain = await as(t, 'member', { js: false });
  await plain.goto(t0().serverPath);
  const form = plain.locator('[data-testid="propose-form"]');
  assert.equal(await form.locator('input[name="package"]').isVisible(), false, 'the package field shows for a restart');
  await form.locator('select[name="kind"]').selectOption('install_package');
  assert.equal(await form.locator('select[name="unit"]').isVisible(), false, 'the unit field shows for an install');
  await form.locator('input[name="package"]').fill('htop');
  await form.locator('input[name="reason"]').fill('operators need htop');
  await form.getByRole('button', { name: 'Propose', exact: true }).click();
  await t.waitForPath(plain, /^\/operations\/op_[0-9a-f]{24}$/);
  const id = new URL(plain.url()).pathname.split('/').pop();

  const member = await as(t, 'member');
  await t.goto(member, `/operations/${id}`);
  await t.expectText(member.locator('[data-testid="op-state"]'), 'Awaiting approval');
  await t.expectText(member.locator('[data-testid="risk"]'), 'High risk');
  await t.expectText(member.locator('[data-testid="op-plan"]'), /"name": "htop"/);
  // Its proposer cannot approve it.
  await t.expectText(member.locator('[data-testid="decide-refusal"]'), /Nobody approves their own proposal/);
  await expectNoDecisionButtons(member, member.locator('main'));

  // A second Member may not either: the note says who can.
  const member2 = await as(t, 'member2');
  await t.goto(member2, '/approvals');
  const item = pendingItem(member2, id);
  await t.expectText(item.locator('[data-testid="decide-refusal"]'), /High-risk .* need an Admin or Owner/);
  await expectNoDecisionButtons(member2, item);
  assert.equal(await member2.locator('aside [data-testid="approvals-badge"]').count(), 0, 'badge counts what a Member cannot approve');
  // The proposer's queue says the same as their operation page.
  await t.goto(member, '/approvals');
  await t.expectText(pendingItem(member, id).locator('[data-testid="decide-refusal"]'), /Nobody approves their own proposal/);
  await expectNoDecisionButtons(member, pendingItem(member, id));

  // The Admin approves it (a plain form post again), and the agent runs it.
  const adminPlain = await as(t, 'admin', { js: false });
  await adminPlain.goto('/approvals');
  await decide(pendingItem(adminPlain, id), 'Approve', 'htop is harmless');
  await t.expectCount(pendingItem(adminPlain, id), 0);
  assert.equal(new URL(adminPlain.url()).pathname, '/approvals', 'the plain post did not come back to the queue');
  const admin = await as(t, 'admin');
  await expectFinished(t, admin, id, { output: /installing htop/ });
  await t.expectText(admin.locator('[data-testid="approval"]'), /Admin/);
}

async function aPlanFromTheServerPage(t) {
  // A Member runs a plan of their own (medium risk: no second person needed)
  // from the server page; a broken step is refused by its place first.
  const fill = async (page, plan) => {
    const form = page.locator('[data-testid="propose-form"]');
    await form.locator('select[name="kind"]').selectOption('run_plan');
    const steps = form.locator('textarea[name="steps"]');
    assert.equal(await steps.isVisible(), true, 'the steps field is hidden for a plan');
    await steps.fill(JSON.stringify(plan));
    await form.locator('input[name="reason"]').fill('restart twice');
    await form.locator('input[name="run_now"]').check();
    await form.getByRole('button', { name: 'Propose', exact: true }).click();
  };
  const member = await as(t, 'member');
  await t.goto(member, t0().serverPath);
  await fill(member, [{ kind: 'restart_service', args: { unit: '../../etc' } }]);
  await t.expectText(member.locator('[data-testid="form-error"]'), /steps\[0\]\.unit/);

  // Without JavaScript, a plain post leads to the new operation's page.
  const plain = await as(t, 'member', { js: false });
  await plain.goto(t0().serverPath);
  const restart = { kind: 'restart_service', args: { unit: 'nginx.service' } };
  await fill(plain, [restart, restart]);
  await t.waitForPath(plain, /^\/operations\/op_[0-9a-f]{24}$/);
  const id = new URL(plain.url()).pathname.split('/').pop();
  await t.goto(member, `/operations/${id}`);
  await t.expectText(member.locator('[data-testid="op-plan"]'), /restart_service/);
  await t.expectText(member.locator('[data-testid="op-state"]'), 'Succeeded', { timeout: SLOW });
  const output = await t.expectText(member.locator('[data-testid="target-output"]'), /restarting nginx\.service/);
  assert.equal((output.match(/restarting nginx\.service/g) || []).length, 2, `both steps ran: ${output}`);
}

async function aSecretFromSettingsReachesItsBackup(t) {
  const owner = await as(t, 'owner');
  await t.goto(owner, '/settings');
  const section = owner.locator('[data-testid="secrets"]');
  const form = section.locator('[data-testid="set-secret"]');
  await form.locator('input[name="name"]').fill('E2E_DB_PASSWORD');
  await form.locator('input[name="value"]').fill(DB_PASSWORD);
  await form.getByRole('button', { name: 'Set secret', exact: true }).click();
  const row = section.locator('[data-testid="secret"][data-name="E2E_DB_PASSWORD"]');
  await t.expectText(row, /All servers/);
  await t.expectText(row.locator('[data-testid="secret-last-used"]'), 'never');
  assert.equal(await form.locator('input[name="value"]').inputValue(), '', 'the value stays in the form');
  assert.ok(!(await owner.content()).includes(DB_PASSWORD), 'Settings shows the value back');

  // The server page says which secrets its backups are given; the Owner
  // runs the backup (medium risk: self-approved).
  await t.goto(owner, t0().serverPath);
  await t.expectText(owner.locator('[data-testid="capabilities"]'), /db: E2E_DB_PASSWORD/);
  const propose = owner.locator('[data-testid="propose-form"]');
  await propose.locator('select[name="kind"]').selectOption('run_backup');
  await propose.locator('select[name="profile"]').selectOption('db');
  await propose.locator('input[name="reason"]').fill('dump the database');
  await propose.locator('input[name="run_now"]').check();
  await propose.getByRole('button', { name: 'Propose', exact: true }).click();
  await t.waitForPath(owner, /^\/operations\/op_[0-9a-f]{24}$/);
  await t.waitHydrated(owner);
  const id = new URL(owner.url()).pathname.split('/').pop();
  await expectFinished(t, owner, id, { output: /dumping with postgres:\/\/app:\[REDACTED\]@db\/app/ });
  assert.ok(!(await owner.content()).includes(DB_PASSWORD), 'the operation page shows the secret');
  // The task had the real value.
  assert.equal(fs.readFileSync(t0().agent.dbUrl, 'utf8'), `postgres://app:${DB_PASSWORD}@db/app`);

  // The log names the delivery, never the value; Settings shows the use.
  await t.goto(owner, '/audit?group=keys');
  await t.expectText(owner.locator('[data-testid="audit-row"]').first(), /secret\.delivered/);
  assert.ok(!(await owner.content()).includes(DB_PASSWORD), 'the audit log shows the secret');
  await t.goto(owner, '/settings');
  assert.notEqual((await row.locator('[data-testid="secret-last-used"]').textContent()).trim(), 'never');
  // Deleted again: the secrets steps start from none.
  await row.getByRole('button', { name: 'Delete', exact: true }).click();
  await t.expectCount(section.locator('[data-testid="secret"]'), 0);
}

async function productionProtection(t) {
  const owner = await as(t, 'owner');
  const { serverPath } = t0();
  await t.goto(owner, serverPath);
  const card = owner.locator('[data-testid="server-operations"]');
  await card.getByRole('button', { name: 'Turn on Production Protection', exact: true }).click();
  await t.expectText(card.locator('[data-testid="production-state"]'), 'On');

  // A new failure: the unit recovers first, so the next failure is a new condition.
  const unit = card.locator('[data-testid="watched-unit"][data-unit="nginx.service"] [data-testid="unit-state"]');
  setUnit('active');
  await t.expectText(unit, 'active', { timeout: SLOW });
  setUnit('failed');
  await t.expectText(unit, 'failed', { timeout: SLOW });
  const refused = card.locator('[data-testid="pilot-finding"][data-outcome="refused"]');
  await t.expectText(refused.locator('[data-testid="finding-reason"]'), /Production Protection/, { timeout: SLOW });
  // The earlier finding, which became a proposal, is listed too.
  await t.expectText(card.locator('[data-testid="pilot-finding"][data-outcome="proposed"] [data-testid="finding-reason"]'), /nginx\.service failed/);

  // The dashboard points at the server and counts the fleet.
  await t.goto(owner, '/');
  await t.expectText(owner.locator('[data-testid="pq-coverage"]'), /^\d+ of \d+ servers post-quantum$/);
  await t.expectText(owner.locator('[data-testid="attention-row"]', { hasText: HOST }), /nginx\.service failed/);
  await t.expectText(owner.locator('[data-testid="pending-for-you"]'), /^\d+ waiting$/);
  assert.ok((await owner.locator('[data-testid="latest-operations"] [data-testid="recent-op"]').count()) >= 2, 'latest operations missing');
  assert.ok((await owner.locator('[data-testid="latest-audit-row"]').count()) > 0, 'latest audit events missing');
}

async function phoneWidth(t) {
  try {
    const { serverPath } = t0();
    // Someone proposes a restart for the Admin to approve on a phone.
    const member2 = await as(t, 'member2');
    const id = await proposeFromServerPage(t, member2, {
      kind: 'restart_service',
      reason: 'restart from the phone test',
    });

    const admin = await as(t, 'admin');
    await admin.setViewportSize(PHONE);
    await t.goto(admin, '/');
    await expectNoSidewaysScroll(admin, 'the dashboard');
    assert.equal(await admin.locator('aside').isVisible(), false, 'the sidebar shows on a phone');
    // The menu (a <details>) shows the badge and leads to Approvals.
    const menu = admin.locator('[data-testid="mobile-menu"]');
    await t.expectText(menu.locator('summary [data-testid="approvals-badge"]'), /^[1-9]\d*$/);
    await menu.locator('summary').click();
    await menu.getByRole('link', { name: 'Approvals', exact: true }).click();
    await t.waitForPath(admin, '/approvals');
    assert.equal(await menu.getAttribute('open'), null, 'the menu stays open after picking a page');
    const item = pendingItem(admin, id);
    await item.waitFor();
    await expectNoSidewaysScroll(admin, 'the Approvals page');
    await decide(item, 'Approve', 'approved on a phone');
    await t.expectCount(item, 0);
    await expectFinished(t, admin, id, { output: /restarting nginx\.service/ });
    await expectNoSidewaysScroll(admin, 'the operation page');
    for (const target of ['/', '/approvals', '/servers', serverPath, '/audit', '/team', '/settings']) {
      await t.goto(admin, target);
      await expectNoSidewaysScroll(admin, target);
    }
  } finally {
    if (shared?.agent) {
      shared.agent.proc.kill('SIGTERM');
      fs.rmSync(shared.agent.stateDir, { recursive: true, force: true });
      fs.rmSync(shared.agent.opsDir, { recursive: true, force: true });
    }
  }
}

async function labelsAndSafeDelete(t) {
  const { serverPath } = t0();
  const owner = await as(t, 'owner');
  await t.goto(owner, serverPath);
  const card = owner.locator('[data-testid="server-lifecycle"]');
  await card.locator('input[name="labels"]').fill('env=e2e,role=web');
  await card.getByRole('button', { name: 'Save labels', exact: true }).click();
  await t.expectText(card.locator('[data-testid="server-labels"]'), 'env=e2e,role=web');

  // The name must be typed exactly.
  await card.locator('input[name="name"]').fill('not-the-name');
  await card.getByRole('button', { name: 'Delete server', exact: true }).click();
  await t.expectText(owner.locator('[data-testid="form-error"]'), /type the server's name/);
  await card.locator('input[name="name"]').fill(HOST);
  await card.getByRole('button', { name: 'Delete server', exact: true }).click();
  await t.expectText(card.locator('[data-testid="deletion-scheduled"]'), /Scheduled for deletion on/);

  // A Member sees the schedule but no Restore or Delete button.
  const member = await as(t, 'member');
  await t.goto(member, serverPath);
  const seen = member.locator('[data-testid="server-lifecycle"]');
  await t.expectText(seen.locator('[data-testid="deletion-scheduled"]'), /Scheduled for deletion/);
  assert.equal(await seen.getByRole('button', { name: 'Restore', exact: true }).count(), 0, 'a Member can restore');

  // The Owner restores it within the grace period.
  await card.getByRole('button', { name: 'Restore', exact: true }).click();
  await t.expectCount(card.locator('[data-testid="deletion-scheduled"]'), 0);
  await card.getByRole('button', { name: 'Delete server', exact: true }).waitFor();
}

async function aViewerReadsTheAuditLog(t) {
  // A Viewer filters the log by this server and the Servers actions (a plain
  // GET form: the filter is in the URL), opens an event, follows its link.
  const viewer = await as(t, 'viewer');
  const { serverPath } = t0();
  const id = serverPath.split('/').pop();
  await t.goto(viewer, '/audit');
  const form = viewer.locator('[data-testid="audit-filters"]');
  await form.locator('input[name="server"]').fill(id);
  await form.locator('select[name="group"]').selectOption('servers');
  await form.getByRole('button', { name: 'Filter', exact: true }).click();
  await t.waitForPath(viewer, /^\/audit$/);
  const url = new URL(viewer.url());
  assert.equal(url.searchParams.get('server'), id);
  assert.equal(url.searchParams.get('group'), 'servers');
  const rows = viewer.locator('[data-testid="audit-row"]');
  await t.expectText(rows.first(), /server\.restored/);
  for (const text of await rows.allTextContents()) {
    assert.match(text, /(server|agent)\./, `a row outside the filter: ${text}`);
    assert.ok(text.includes(`agent:${id}`), `a row of another server: ${text}`);
  }
  await rows.first().locator('[data-testid="audit-event-link"]').click();
  await t.waitForPath(viewer, /^\/audit\/\d+$/);
  await t.expectText(viewer.locator('[data-testid="event-action"]'), 'server.restored');
  await t.expectText(viewer.locator('[data-testid="event-hash"]'), /^[0-9a-f]{64}$/);
  await t.expectText(viewer.locator('[data-testid="event-prev-hash"]'), /^[0-9a-f]{64}$/);
  await viewer.locator('[data-testid="audit-event"] [data-testid="target-link"]').click();
  await t.waitForPath(viewer, new RegExp(`^/servers/${id}$`));

  // A bad filter gets a clear message and the page still renders.
  await t.goto(viewer, '/audit?since=someday');
  await t.expectText(viewer.locator('main'), /since: .* is not a date/);
  assert.equal(await viewer.locator('[data-testid="audit-filters"]').count(), 1, 'the form is gone');
}

export const tests = [
  { name: 'people and a server whose agent offers operations', fn: setUp },
  { name: 'the AI Pilot proposes a restart, a Member approves, the output arrives', fn: pilotProposesAMemberApproves },
  { name: 'a high-risk proposal needs an Admin, never its proposer', fn: highRiskNeedsAnAdmin },
  { name: 'a plan proposed and run from the server page', fn: aPlanFromTheServerPage },
  { name: 'a secret set in Settings reaches the backup that uses it, never shown', fn: aSecretFromSettingsReachesItsBackup },
  { name: 'Production Protection refuses the pilot, shown on the server page', fn: productionProtection },
  { name: 'at 390 px wide the shell does not scroll sideways and an approval works', fn: phoneWidth },
  { name: 'labels, and a deletion that asks for the name and can be restored', fn: labelsAndSafeDelete },
  { name: 'a Viewer filters the audit log by server and action, opens an event, follows its link', fn: aViewerReadsTheAuditLog },
];
