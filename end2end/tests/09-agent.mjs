// A real pilothouse-agent against the real server: "Add server" gives the
// register command, the agent enrols and shows Online with metrics, Ping
// round-trips, Rotate Keys and Activate Post-Quantum Encryption change the
// Security tab, a Viewer sees the state but no actions, and a revoked agent
// is refused.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OWNER, signIn } from './_common.mjs';

const SLOW = 45_000;

// The dialog's command feeds the token on standard input, never as an argument.
function registerCommand(text) {
  const m = text.trim().match(/^printf '%s\\n' '(pht1_[0-9a-f_]+)' \| pilothouse-agent register --server (\S+) --token-file -$/);
  assert.ok(m, `no register command in ${JSON.stringify(text)}`);
  return { server: m[2], token: m[1] };
}

async function addServer(t, page) {
  await t.goto(page, '/servers');
  await page.getByRole('button', { name: 'Add server', exact: true }).click();
  // The one line first: it fetches the install script from the gateway and
  // hands it the same token on standard input.
  const install = await t.expectText(page.locator('[data-testid="install-command"]'), /\/install\/agent\.sh/, { rendered: true });
  const text = await t.expectText(page.locator('[data-testid="register-command"]'), /pilothouse-agent register/);
  const reg = registerCommand(text);
  assert.ok(install.startsWith(`printf '%s\\n' '${reg.token}' | sh -c '`), `install command: ${install}`);
  assert.ok(install.includes(`${reg.server}/install/ca.pem`), `install command: ${install}`);
  return reg;
}

function startAgent(t, { token, server, hostname, pqc }) {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pilothouse-agent-e2e-'));
  fs.chmodSync(stateDir, 0o700);
  const args = ['register', '--server', server, '--token-file', '-', '--state-dir', stateDir, '--hostname', hostname];
  if (!pqc) args.push('--no-pqc');
  const reg = spawnSync(t.agentBin, args, { encoding: 'utf8', timeout: 30_000, input: `${token}\n` });
  assert.equal(reg.status, 0, `register failed: ${reg.stderr}${reg.stdout}`);
  const config = path.join(stateDir, 'agent.toml');
  fs.writeFileSync(config, 'metrics_interval_secs = 2\n', { mode: 0o600 });
  const proc = spawn(t.agentBin, ['run', '--state-dir', stateDir, '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info' },
  });
  const output = [];
  proc.stdout.on('data', (d) => output.push(String(d)));
  proc.stderr.on('data', (d) => output.push(String(d)));
  return { proc, stateDir, output };
}

async function openServer(t, page, hostname) {
  await t.goto(page, '/servers');
  const row = page.locator('tr[data-testid="server-row"]', { hasText: hostname });
  await t.expectText(row.locator('[data-testid="server-status"]'), 'Online', { timeout: SLOW });
  await row.getByRole('link', { name: hostname }).click();
  await t.waitForPath(page, /^\/servers\/agt_/);
  await t.waitHydrated(page);
}

export default async function agent(t) {
  assert.ok(t.agentUrl, 'the server printed its agent gateway address');
  assert.ok(fs.existsSync(t.agentBin), `agent binary ${t.agentBin} missing: build it with cargo build -p agent`);
  const agents = [];
  try {
    const page = await t.newPage();
    await signIn(t, page, OWNER);

    // Enrol a post-quantum agent with the command the dashboard shows.
    const first = await addServer(t, page);
    assert.equal(first.server, t.agentUrl, 'the register command names the agent gateway');
    // Until its agent enrols, the new server waits with "Agent not installed".
    await t.expectCount(page.locator('[data-testid="token-row"]'), 1);
    agents.push(startAgent(t, { ...first, hostname: 'e2e-pq', pqc: true }));
    await openServer(t, page, 'e2e-pq');
    await t.expectText(page.locator('[data-testid="pqc-state"]'), 'Post-quantum encryption active');
    await t.expectText(page.locator('[data-testid="tls-group"]'), 'X25519MLKEM768', { timeout: SLOW });
    await t.expectText(page.locator('[data-testid="chart-cpu-latest"]'), /%$/, { timeout: SLOW });
    // Its health came with the metrics: up for seconds, clock in step.
    await t.expectText(page.locator('[data-testid="agent-clock"]'), /^in sync \(/, { timeout: SLOW });
    await t.expectText(page.locator('[data-testid="agent-uptime"]'), /^\d+ (s|min) \(reported /);
    // The Agent card: the version the agent reported; no release is held by
    // this control plane, so nothing is offered.
    await t.expectText(page.locator('[data-testid="agent-version"]'), /^\d+\.\d+\.\d+/);
    await t.expectText(page.locator('[data-testid="release-version"]'), 'none held here');
    assert.equal(await page.locator('[data-testid="update-agent"]').count(), 0, 'an update is offered without a release');

    // "Update selected agents" on the servers list: the ticked server goes to
    // the control plane, which holds no release to offer and says so.
    await t.goto(page, '/servers');
    await t.waitHydrated(page);
    await page.locator('tr[data-testid="server-row"]', { hasText: 'e2e-pq' }).locator('[data-testid="select-server"]').check();
    await page.getByRole('button', { name: 'Update selected agents', exact: true }).click();
    await t.expectText(page.locator('[data-testid="form-error"]'), /holds no agent release/);
    await openServer(t, page, 'e2e-pq');

    // Ping round-trips.
    await page.getByRole('button', { name: 'Ping', exact: true }).click();
    await t.expectText(page.locator('tr[data-testid="command-row"][data-kind="ping"] [data-testid="command-state"]'), 'succeeded', { timeout: SLOW });

    // Rotate Keys: new keys registered, a new registration date.
    const kemBefore = await t.expectText(page.locator('[data-testid="kem-key-id"]'), /^[0-9a-f]{16}$/);
    const serialBefore = await t.expectText(page.locator('[data-testid="cert-serial"]'), /\S/);
    await page.getByRole('button', { name: 'Rotate Keys', exact: true }).click();
    await t.expectText(page.locator('tr[data-testid="command-row"][data-kind="rotate_keys"] [data-testid="command-state"]'), 'succeeded', { timeout: SLOW });
    const kemAfter = await t.expectText(page.locator('[data-testid="kem-key-id"]'), /^[0-9a-f]{16}$/);
    assert.notEqual(kemAfter, kemBefore, 'the X-Wing key changed');
    const serialAfter = await t.expectText(page.locator('[data-testid="cert-serial"]'), /\S/);
    assert.notEqual(serialAfter, serialBefore, 'the client certificate changed');
    await t.expectText(page.locator('[data-testid="pqc-state"]'), 'Post-quantum encryption active');
    // The channel works on the new keys.
    await page.getByRole('button', { name: 'Ping', exact: true }).click();
    await t.expectCount(page.locator('tr[data-testid="command-row"][data-kind="ping"][data-state="succeeded"]'), 2, { timeout: SLOW });

    // The dashboard counts it.
    await t.goto(page, '/');
    await t.waitHydrated(page);
    await t.expectText(page.locator('[data-testid="servers-online"]'), '1 online');
    await t.expectText(page.locator('[data-testid="servers-other"]'), '0 offline · 0 awaiting their agent');

    // An agent in classical fallback, then Activate Post-Quantum Encryption.
    const second = await addServer(t, page);
    agents.push(startAgent(t, { ...second, hostname: 'e2e-classic', pqc: false }));
    await openServer(t, page, 'e2e-classic');
    await t.expectText(page.locator('[data-testid="pqc-state"]'), 'Classical fallback');
    await page.getByRole('button', { name: 'Activate Post-Quantum Encryption', exact: true }).click();
    await t.expectText(page.locator('[data-testid="pqc-state"]'), 'Post-quantum encryption active', { timeout: SLOW });

    // A Viewer sees the state but no actions.
    if (t.state.bobStorage) {
      const bob = await (await t.newContext({ storageState: t.state.bobStorage })).newPage();
      await t.goto(bob, page.url());
      await t.expectText(bob.locator('[data-testid="pqc-state"]'), 'Post-quantum encryption active');
      await t.expectText(bob.locator('[data-testid="agent-version"]'), /^\d+\.\d+\.\d+/);
      for (const name of ['Rotate Keys', 'Activate Post-Quantum Encryption', 'Ping', 'Confirm revoke']) {
        assert.equal(await bob.getByRole('button', { name }).count(), 0, `viewer sees "${name}"`);
      }
    }

    // Revoke the first agent: its certificate is refused from then on.
    await openServer(t, page, 'e2e-pq');
    await page.locator('summary', { hasText: 'Revoke agent' }).click();
    const linesBefore = t.serverLines().length;
    await page.getByRole('button', { name: 'Confirm revoke', exact: true }).click();
    await t.expectText(page.locator('[data-testid="server-status"]'), 'Revoked', { timeout: SLOW });
    const deadline = Date.now() + SLOW;
    while (!t.serverLines().slice(linesBefore).some((l) => l.includes('This agent has been revoked'))) {
      assert.ok(Date.now() < deadline, 'the revoked agent was not refused by the gateway');
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    for (const a of agents) {
      a.proc.kill('SIGTERM');
      fs.rmSync(a.stateDir, { recursive: true, force: true });
    }
  }
}
