#!/usr/bin/env node
// Browser tests for Pilothouse.
//
// Starts one server on a fresh data directory, then runs every end2end/tests/*.mjs
// file (sorted by name, files starting with "_" are helpers) one after another
// against it: state carries over from one file to the next.
//
// A test file exports either `default async function (t)` or
// `export const tests = [{ name, fn }]`. `t` is described in makeContext().
//
// Environment:
//   PILOTHOUSE_BIN      server binary (default: target/debug/pilothouse)
//   LEPTOS_SITE_ROOT    site directory (default: target/site)
//   CHROMIUM_PATH       browser (default: /usr/bin/chromium)
//   E2E_TEST_TIMEOUT_MS per-test limit (default: 120000)
//   PILOTHOUSE_PILOT_INTERVAL_SECS  passed to the server (default here: 2)
//   CI                  "true" or "1": a test that would skip fails instead
//   PILOTHOUSE_TEST_SKIP_LOG  a file each skipped test is appended to (scripts/test.sh)
//
// Sign-in with OpenID Connect: when npm oidc-provider is installed, the run
// makes a throwaway CA and a certificate for localhost / 127.0.0.1 (openssl),
// configures the server with PILOTHOUSE_OIDC_* for a provider on a reserved
// port, and starts server/tests/helpers/oidc_provider.mjs there once the
// server's URL (the redirect URI) is known. Chromium trusts that one
// certificate (--ignore-certificate-errors-spki-list, its key's hash); the
// server trusts the CA (PILOTHOUSE_OIDC_CA_FILE). Tests see it as t.oidc.
//
// Sign-in with GitHub: the run starts server/tests/helpers/github_standin.mjs
// (a stand-in for GitHub's endpoints, which cannot be reached from here) on
// a reserved port and configures the server for it (PILOTHOUSE_GITHUB_*).
// Tests see it as t.github.
//
// Email: when npm smtp-server is installed, the run starts
// server/tests/helpers/smtp_sink.mjs on loopback before the server and
// configures the server to mail through it (PILOTHOUSE_SMTP_*). Tests read
// the messages as t.mail.
//
// Prints "ok - name" / "not ok - name" / "skip - name: why" per test and ends
// with "N passed, N failed"; a skipped test counts as neither, and the lines
// "# SKIP: N test(s) did not run:" and why come just before.

import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const E2E_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(E2E_DIR, '..');
const TESTS_DIR = path.join(E2E_DIR, 'tests');
const RESULTS_DIR = path.join(E2E_DIR, 'test-results');

const ACTION_TIMEOUT_MS = 15_000;
const STARTUP_TIMEOUT_MS = 60_000;
const TEST_TIMEOUT_MS = Number(process.env.E2E_TEST_TIMEOUT_MS || 120_000);
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07/g;
const stripAnsi = (s) => s.replace(ANSI_RE, '');

const IN_CI = ['true', '1'].includes(process.env.CI || '');

// Thrown by t.skip(): the test did not run, and says why.
class Skip extends Error {}

// ---------------------------------------------------------------------------
// Server

class Server {
  constructor(bin) {
    this.bin = bin;
    this.lines = [];
    this.exited = null; // { code, signal } once the process is gone
  }

  // Other processes' lines (the OpenID Provider's) join the server's log,
  // marked, so a failed test shows them with the server output.
  note(line) {
    this.lines.push(line);
    if (this.lines.length > 5000) this.lines.splice(0, 1000);
  }

  async start(dataDir, extraEnv = {}) {
    this.dataDir = dataDir;
    fs.mkdirSync(dataDir, { recursive: true });
    const env = { ...process.env, RUST_LOG: 'info', ...extraEnv };
    // The AI Pilot's rules every 2 s instead of every minute, so the
    // operations test sees its proposals quickly.
    if (!env.PILOTHOUSE_PILOT_INTERVAL_SECS) env.PILOTHOUSE_PILOT_INTERVAL_SECS = '2';
    if (!env.LEPTOS_SITE_ROOT) env.LEPTOS_SITE_ROOT = path.join(REPO, 'target', 'site');
    const args = ['serve', '--data-dir', this.dataDir, '--listen', '127.0.0.1:0', '--agent-listen', '127.0.0.1:0'];
    console.log(`# starting ${this.bin} ${args.join(' ')}`);
    this.proc = spawn(this.bin, args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });

    let baseUrl = null;
    let setupCode = null;
    let wake = () => {};
    const onLine = (line) => {
      const clean = stripAnsi(line);
      this.note(clean);
      const listen = clean.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (listen && !baseUrl) baseUrl = listen[1];
      const gateway = clean.match(/agent gateway listening on (https:\/\/127\.0\.0\.1:\d+)/);
      if (gateway && !this.agentUrl) this.agentUrl = gateway[1];
      const code = clean.match(/setup code:\s*([0-9a-fA-F]{32})(?![0-9a-fA-F])/);
      if (code && !setupCode) setupCode = code[1];
      wake();
    };
    readline.createInterface({ input: this.proc.stdout }).on('line', onLine);
    readline.createInterface({ input: this.proc.stderr }).on('line', onLine);
    this.proc.on('error', (err) => {
      this.exited = { error: err };
      wake();
    });
    this.proc.on('exit', (code, signal) => {
      this.exited = { code, signal };
      wake();
    });

    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    while (!(baseUrl && setupCode)) {
      if (this.exited) {
        throw new Error(`server exited during start-up (${describeExit(this.exited)})\n${this.tail()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        const missing = [!baseUrl && '"listening on http://127.0.0.1:<port>"', !setupCode && '"setup code: <32 hex>"']
          .filter(Boolean)
          .join(' and ');
        throw new Error(`server did not print ${missing} within ${STARTUP_TIMEOUT_MS / 1000} s\n${this.tail()}`);
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 500));
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    this.baseUrl = baseUrl;
    this.setupCode = setupCode;
    console.log(`# server at ${baseUrl}`);
  }

  tail(n = 60, from = 0) {
    const lines = this.lines.slice(Math.max(from, this.lines.length - n));
    return lines.length ? lines.map((l) => `  | ${l}`).join('\n') : '  | (no output)';
  }

  async stop() {
    if (!this.proc || this.exited) return;
    this.proc.kill('SIGTERM');
    const gone = once(this.proc, 'exit');
    const timeout = new Promise((resolve) => setTimeout(resolve, 5000, 'timeout'));
    if ((await Promise.race([gone, timeout])) === 'timeout') {
      this.proc.kill('SIGKILL');
      await gone;
    }
  }

  killNow() {
    if (this.proc && !this.exited) this.proc.kill('SIGKILL');
  }
}

function describeExit(e) {
  if (e.error) return e.error.message;
  return e.signal ? `signal ${e.signal}` : `exit code ${e.code}`;
}

// ---------------------------------------------------------------------------
// OpenID Provider (npm oidc-provider through server/tests/helpers/oidc_provider.mjs)

const OIDC_MODULE = path.join(REPO, 'node_modules', 'oidc-provider');
const OIDC_SCRIPT = path.join(REPO, 'server', 'tests', 'helpers', 'oidc_provider.mjs');
const OPENSSL = '/usr/bin/openssl';
const OIDC_START_TIMEOUT_MS = 30_000;

// Who can sign in at the provider: the Owner 02-setup.mjs makes
// (end2end/tests/_common.mjs OWNER), someone at a domain that may join, and
// Bob (03-invite.mjs), whose password account must not be taken over.
const OIDC_ACCOUNTS = [
  { sub: 'g-owner', email: 'owner@example.com', email_verified: true },
  { sub: 'g-new', email: 'newcomer@acme.example', email_verified: true },
  { sub: 'g-bob', email: 'bob@example.com', email_verified: true },
];

// A free TCP port on 127.0.0.1 now (the provider binds it after the server
// has started: the server must know the issuer URL first).
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

class OidcProvider {
  constructor(dir) {
    this.dir = dir;
    this.state = 'absent'; // absent (not installed), broken (could not run), or running
    this.reason = null;
    this.proc = null;
    this.exited = null;
  }

  // The certificates, the port and the server's settings; null when the
  // provider cannot run (this.reason says why).
  async prepare() {
    if (!fs.existsSync(OIDC_MODULE)) {
      this.reason = 'npm oidc-provider is not installed in node_modules (scripts/install.sh installs it)';
      return null;
    }
    try {
      fs.mkdirSync(this.dir, { recursive: true });
      const f = (name) => path.join(this.dir, name);
      const openssl = (...args) => execFileSync(OPENSSL, args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
      const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
      // The CA (valid two days; it lives as long as this run's directory).
      openssl(
        'req', '-x509', ...ec, '-keyout', f('ca-key.pem'), '-out', f('ca.pem'), '-days', '2',
        '-subj', '/CN=Pilothouse e2e OIDC test CA',
        '-addext', 'basicConstraints=critical,CA:TRUE',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      );
      // The provider's certificate, for localhost and 127.0.0.1.
      openssl('req', '-new', ...ec, '-keyout', f('key.pem'), '-out', f('leaf.csr'), '-subj', '/CN=localhost');
      const extensions = [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=serverAuth',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        'authorityKeyIdentifier=keyid',
        'subjectKeyIdentifier=hash',
      ];
      fs.writeFileSync(f('leaf.ext'), `${extensions.join('\n')}\n`);
      openssl(
        'x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca-key.pem'),
        '-days', '2', '-extfile', f('leaf.ext'), '-out', f('cert.pem'),
      );
      this.caFile = f('ca.pem');
      this.certFile = f('cert.pem');
      this.keyFile = f('key.pem');
      // What Chromium is told to accept: this certificate's key, only.
      const spki = crypto.createPublicKey(fs.readFileSync(this.certFile)).export({ type: 'spki', format: 'der' });
      this.spkiHash = crypto.createHash('sha256').update(spki).digest('base64');
      this.port = await freePort();
    } catch (err) {
      const detail = err.stderr ? `: ${String(err.stderr).trim()}` : '';
      this.state = 'broken';
      this.reason = `cannot make the OpenID Provider's test certificates: ${err.message}${detail}`;
      return null;
    }
    this.issuer = `https://localhost:${this.port}`;
    this.clientId = 'pilothouse-e2e';
    this.clientSecret = crypto.randomBytes(24).toString('base64url');
    return {
      PILOTHOUSE_OIDC_CLIENT_ID: this.clientId,
      PILOTHOUSE_OIDC_CLIENT_SECRET: this.clientSecret,
      PILOTHOUSE_OIDC_ISSUER: this.issuer,
      PILOTHOUSE_OIDC_CA_FILE: this.caFile,
    };
  }

  // Starts it on the reserved port, knowing the server's redirect URI.
  // Failing leaves state 'broken' (the tests that need it fail, the others run).
  async start(server) {
    const config = {
      port: this.port,
      cert: this.certFile,
      key: this.keyFile,
      client: {
        client_id: this.clientId,
        client_secret: this.clientSecret,
        redirect_uris: [`${server.baseUrl}/auth/oidc/callback`],
      },
      accounts: OIDC_ACCOUNTS,
    };
    console.log(`# starting the OpenID Provider (npm oidc-provider) at ${this.issuer}`);
    const proc = spawn(process.execPath, [OIDC_SCRIPT, JSON.stringify(config)], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    readline.createInterface({ input: proc.stderr }).on('line', (l) => server.note(`[oidc-provider] ${stripAnsi(l)}`));
    const out = readline.createInterface({ input: proc.stdout });
    try {
      const ready = await new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`it did not print its ready line within ${OIDC_START_TIMEOUT_MS / 1000} s`)),
          OIDC_START_TIMEOUT_MS,
        );
        out.on('line', (line) => {
          let v = null;
          try {
            v = JSON.parse(line);
          } catch {
            // not the ready line
          }
          if (v && typeof v.port === 'number') {
            clearTimeout(timer);
            resolve(v);
          } else {
            server.note(`[oidc-provider] ${stripAnsi(line)}`);
          }
        });
        proc.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        // 'close': after its last stderr line, which the log should show.
        proc.on('close', (code, signal) => {
          this.exited = { code, signal };
          clearTimeout(timer);
          reject(new Error(`it exited at start (${describeExit(this.exited)})`));
        });
      });
      if (ready.issuer !== this.issuer) throw new Error(`it says its issuer is ${ready.issuer}, not ${this.issuer}`);
    } catch (err) {
      this.state = 'broken';
      this.reason = `the OpenID Provider did not start: ${err.message}\n${server.tail(30)}`;
      this.kill();
      return;
    }
    proc.on('exit', (code, signal) => {
      this.exited = { code, signal };
      server.note(`[oidc-provider] exited (${describeExit(this.exited)})`);
    });
    this.state = 'running';
    console.log(`# OpenID Provider at ${this.issuer}`);
  }

  // What tests see as t.oidc.
  forTests() {
    if (this.state !== 'running') return null;
    return { issuer: this.issuer, port: this.port, accounts: OIDC_ACCOUNTS.map((a) => ({ ...a })) };
  }

  async stop() {
    if (!this.proc || this.exited || this.proc.exitCode !== null) return;
    const gone = once(this.proc, 'exit');
    this.proc.kill('SIGTERM');
    const timeout = new Promise((resolve) => setTimeout(resolve, 5000, 'timeout'));
    if ((await Promise.race([gone, timeout])) === 'timeout') {
      this.proc.kill('SIGKILL');
      await gone;
    }
  }

  kill() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------
// GitHub stand-in (server/tests/helpers/github_standin.mjs): GitHub's servers
// cannot be reached from here. Plain HTTP on loopback, node built-ins only,
// so it always runs. The server is configured for it as a GitHub Enterprise
// Server (PILOTHOUSE_GITHUB_URL; its API under /api/v3).

const GITHUB_SCRIPT = path.join(REPO, 'server', 'tests', 'helpers', 'github_standin.mjs');

// The Owner (02-setup.mjs) and someone at a domain that may join.
const GITHUB_USERS = [
  { id: 5001, login: 'owner-gh', emails: [{ email: 'owner@example.com', primary: true, verified: true }], orgs: [] },
  { id: 5002, login: 'gh-newcomer', emails: [{ email: 'octo@acme.example', primary: true, verified: true }], orgs: [] },
];

class GitHubStandIn {
  async prepare() {
    this.port = await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    this.clientId = 'Iv1.pilothouse-e2e';
    this.clientSecret = crypto.randomBytes(24).toString('base64url');
    return {
      PILOTHOUSE_GITHUB_CLIENT_ID: this.clientId,
      PILOTHOUSE_GITHUB_CLIENT_SECRET: this.clientSecret,
      PILOTHOUSE_GITHUB_URL: this.url,
    };
  }

  async start(server) {
    const config = {
      port: this.port,
      client: {
        client_id: this.clientId,
        client_secret: this.clientSecret,
        redirect_uri: `${server.baseUrl}/auth/github/callback`,
      },
      users: GITHUB_USERS,
    };
    this.proc = spawn(process.execPath, [GITHUB_SCRIPT, JSON.stringify(config)], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    readline.createInterface({ input: this.proc.stderr }).on('line', (l) => server.note(`[github] ${stripAnsi(l)}`));
    const out = readline.createInterface({ input: this.proc.stdout });
    // Each racer resolves (none rejects later, unhandled): a line, or why not.
    let timer = null;
    const first = await Promise.race([
      once(out, 'line').then(([line]) => ({ line })),
      once(this.proc, 'exit').then(() => ({ error: `the GitHub stand-in exited at start\n${server.tail(20)}` })),
      new Promise((resolve) => {
        timer = setTimeout(() => resolve({ error: 'the GitHub stand-in did not start within 30 s' }), 30_000);
      }),
    ]);
    clearTimeout(timer);
    if (first.error) throw new Error(first.error);
    if (JSON.parse(first.line).port !== this.port) {
      throw new Error(`the GitHub stand-in is not on port ${this.port}: ${first.line}`);
    }
    console.log(`# GitHub stand-in at ${this.url}`);
  }

  forTests() {
    return { url: this.url, users: GITHUB_USERS.map((u) => ({ ...u })) };
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const gone = once(this.proc, 'exit');
    this.proc.kill('SIGTERM');
    await gone;
  }

  kill() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------
// SMTP server (npm smtp-server through server/tests/helpers/smtp_sink.mjs):
// the server mails through it (plain SMTP, allowed only to a loopback
// address); tests read what it received.

const SMTP_MODULE = path.join(REPO, 'node_modules', 'smtp-server');
const SMTP_SCRIPT = path.join(REPO, 'server', 'tests', 'helpers', 'smtp_sink.mjs');

class SmtpSink {
  constructor() {
    this.messages = [];
    this.reason = null;
    this.proc = null;
  }

  // Starts it on any free port; the server's settings, or null (this.reason).
  async start(server) {
    if (!fs.existsSync(SMTP_MODULE)) {
      this.reason = 'npm smtp-server is not installed in node_modules (scripts/install.sh installs it)';
      return null;
    }
    this.proc = spawn(process.execPath, [SMTP_SCRIPT, '--port', '0'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    readline.createInterface({ input: this.proc.stderr }).on('line', (l) => server.note(`[smtp] ${stripAnsi(l)}`));
    const out = readline.createInterface({ input: this.proc.stdout });
    let timer = null;
    const port = await new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), 30_000);
      out.on('line', (line) => {
        const listening = line.match(/^listening (\d+)$/);
        if (listening) return resolve(Number(listening[1]));
        try {
          this.messages.push(JSON.parse(line));
        } catch {
          server.note(`[smtp] ${line}`);
        }
      });
      this.proc.on('exit', () => resolve(null));
    });
    clearTimeout(timer);
    if (!port) {
      this.reason = 'the SMTP server (smtp_sink.mjs) did not start';
      return null;
    }
    console.log(`# SMTP server on 127.0.0.1:${port}`);
    return {
      PILOTHOUSE_SMTP_SERVER: `127.0.0.1:${port}`,
      PILOTHOUSE_SMTP_SECURITY: 'none',
      PILOTHOUSE_MAIL_FROM: 'Pilothouse <pilothouse@example.com>',
    };
  }

  // What tests see as t.mail, or null when it is not running.
  forTests() {
    if (!this.proc || this.reason) return null;
    const sink = this;
    return {
      // The messages received so far ({ from, to, data }).
      messages: () => sink.messages.slice(),
      // The first message received after `since` (an index into messages())
      // that `match` accepts, within `timeoutMs`.
      async waitFor(match, since = 0, timeoutMs = 30_000) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const found = sink.messages.slice(since).find(match);
          if (found) return found;
          if (Date.now() > deadline) throw new Error(`no such message within ${timeoutMs / 1000} s (${sink.messages.length} received)`);
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      },
    };
  }

  kill() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------
// Per-test context

function makeContext({ server, oidc, github, smtp, browser, shared }) {
  const contexts = [];
  const pages = []; // every page opened in this test, in order
  const problems = []; // console errors and page errors

  const watch = (page) => {
    pages.push(page);
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const where = msg.location()?.url || '';
      // Tolerated: a missing favicon, and the browser's own note about a
      // server function answering 4xx (a refused login is a 401 by design;
      // the page shows the message, which the tests check). 5xx still fails.
      if (/favicon/i.test(`${where} ${msg.text()}`) && /404/.test(msg.text())) return;
      if (/\/api\//.test(where) && /status of 4\d\d/.test(msg.text())) return;
      problems.push(`console error on ${page.url()}: ${msg.text()}${where ? ` (${where})` : ''}`);
    });
    page.on('pageerror', (err) => {
      problems.push(`page error on ${page.url()}: ${err.stack || err.message || err}`);
    });
  };

  const newContext = async (options = {}) => {
    const context = await browser.newContext({ baseURL: server.baseUrl, ...options });
    context.setDefaultTimeout(ACTION_TIMEOUT_MS);
    context.setDefaultNavigationTimeout(ACTION_TIMEOUT_MS);
    context.on('page', watch);
    contexts.push(context);
    return context;
  };

  let mainContext = null;

  const t = {
    baseUrl: server.baseUrl,
    setupCode: server.setupCode,
    // The agent gateway (https://127.0.0.1:PORT) and the agent binary, for tests that run a real agent.
    agentUrl: server.agentUrl,
    agentBin: process.env.PILOTHOUSE_AGENT_BIN || path.join(REPO, 'target', 'debug', 'pilothouse-agent'),
    serverLines: () => server.lines.slice(),
    // The OpenID Provider ({ issuer, port, accounts }), or null when it is
    // not running; a test that needs it calls t.requireOidc() first.
    oidc: oidc.forTests(),
    // The GitHub stand-in ({ url, users }).
    github: github.forTests(),
    // The SMTP server's messages ({ messages(), waitFor() }), or null; a test
    // that needs it calls t.requireMail() first.
    mail: smtp.forTests(),
    browser,
    // Plain object shared by all tests of the run (state carries over).
    state: shared,
    timeout: ACTION_TIMEOUT_MS,

    // A page in this test's own fresh context (one context per test).
    async newPage() {
      if (!mainContext) mainContext = await newContext();
      return mainContext.newPage();
    },

    // Another, separate browser context (another user); options go to
    // browser.newContext (e.g. { storageState }).
    newContext,

    async waitHydrated(page, { timeout = ACTION_TIMEOUT_MS } = {}) {
      try {
        await page.locator('body[data-hydrated="true"]').waitFor({ state: 'attached', timeout });
      } catch (err) {
        throw new Error(`page ${page.url()} did not hydrate within ${timeout} ms: ${err.message}`);
      }
    },

    // Navigate to a path (or full URL) and wait for hydration.
    async goto(page, target) {
      await page.goto(target);
      await t.waitHydrated(page);
    },

    // Wait until the page's path matches (string: exact path; RegExp: tested on the path).
    async waitForPath(page, expected, { timeout = ACTION_TIMEOUT_MS } = {}) {
      const matches = (url) => (expected instanceof RegExp ? expected.test(url.pathname) : url.pathname === expected);
      try {
        await page.waitForURL(matches, { timeout, waitUntil: 'commit' });
      } catch {
        throw new Error(`expected path ${expected} but the page is at ${page.url()}`);
      }
    },

    // Wait until the locator's first match has the text (string: equal after
    // collapsing whitespace; RegExp: tested on that text). Returns the text.
    // Uses textContent (CSS text-transform must not matter) unless
    // { rendered: true }: innerText, which skips <script> and hidden elements;
    // use that for whole-page checks such as locator('body').
    async expectText(locator, expected, { timeout = ACTION_TIMEOUT_MS, rendered = false } = {}) {
      const deadline = Date.now() + timeout;
      let last = '(element not found)';
      for (;;) {
        try {
          if ((await locator.count()) > 0) {
            const el = locator.first();
            const raw = rendered ? await el.innerText({ timeout: 1000 }) : await el.textContent({ timeout: 1000 });
            last = (raw || '').replace(/\s+/g, ' ').trim();
            const ok = expected instanceof RegExp ? expected.test(last) : last === expected;
            if (ok) return last;
          }
        } catch {
          // detached while re-rendering: try again
        }
        if (Date.now() > deadline) {
          throw new Error(`expected ${locator} to have text ${expected instanceof RegExp ? expected : JSON.stringify(expected)}, got ${JSON.stringify(last)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },

    // Wait until the locator matches exactly n elements.
    async expectCount(locator, n, { timeout = ACTION_TIMEOUT_MS } = {}) {
      const deadline = Date.now() + timeout;
      let count;
      while ((count = await locator.count()) !== n) {
        if (Date.now() > deadline) throw new Error(`expected ${n} element(s) for ${locator}, found ${count}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },

    log(...args) {
      console.log('#', ...args);
    },

    // Ends the test as skipped, saying why; in CI (CI=true) a failure instead.
    skip(why) {
      if (IN_CI) throw new Error(`cannot run (CI=${process.env.CI}, where everything must run): ${why}`);
      throw new Skip(why);
    },

    // The SMTP server: skips when npm smtp-server is not installed.
    requireMail() {
      if (!t.mail) t.skip(smtp.reason || 'the SMTP server is not running');
      return t.mail;
    },

    // The running OpenID Provider: skips when npm oidc-provider is not
    // installed, fails when it is but could not start or has stopped.
    requireOidc() {
      if (oidc.state === 'absent') t.skip(oidc.reason);
      if (oidc.state !== 'running') throw new Error(oidc.reason || 'the OpenID Provider is not running');
      if (oidc.exited) throw new Error(`the OpenID Provider has stopped (${describeExit(oidc.exited)})`);
      return t.oidc;
    },
  };

  return {
    t,
    pages,
    problems,
    async close() {
      for (const context of contexts) await context.close().catch(() => {});
    },
  };
}

// ---------------------------------------------------------------------------
// Test discovery and running

async function loadTests() {
  const files = fs
    .readdirSync(TESTS_DIR)
    .filter((f) => f.endsWith('.mjs') && !f.startsWith('_'))
    .sort();
  const tests = [];
  for (const file of files) {
    const base = file.replace(/\.mjs$/, '');
    const mod = await import(pathToFileURL(path.join(TESTS_DIR, file)).href);
    if (typeof mod.default === 'function') tests.push({ name: base, fn: mod.default });
    if (Array.isArray(mod.tests)) {
      for (const { name, fn } of mod.tests) tests.push({ name: `${base}: ${name}`, fn });
    }
    if (typeof mod.default !== 'function' && !Array.isArray(mod.tests)) {
      throw new Error(`${file} exports neither a default function nor a "tests" array`);
    }
  }
  return tests;
}

const fileSafe = (name) => name.replace(/[^A-Za-z0-9._-]+/g, '_');

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function screenshots(name, pages) {
  const open = pages.filter((p) => !p.isClosed());
  const saved = [];
  // The most recent page is the one most likely to show the failure.
  for (let i = open.length - 1, n = 0; i >= 0; i--, n++) {
    const file = path.join(RESULTS_DIR, n === 0 ? `${fileSafe(name)}.png` : `${fileSafe(name)}-${n + 1}.png`);
    try {
      await open[i].screenshot({ path: file, fullPage: true, timeout: 5000 });
      saved.push(path.relative(REPO, file));
    } catch {
      // page or browser already gone
    }
  }
  return saved;
}

const indent = (text) =>
  String(text)
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');

async function main() {
  const bin = process.env.PILOTHOUSE_BIN
    ? path.resolve(REPO, process.env.PILOTHOUSE_BIN)
    : path.join(REPO, 'target', 'debug', 'pilothouse');
  if (!fs.existsSync(bin)) {
    console.error(`server binary ${bin} not found: run \`cargo leptos build\` first (or set PILOTHOUSE_BIN)`);
    console.log('0 passed, 1 failed');
    return 1;
  }

  const tests = await loadTests();
  fs.rmSync(RESULTS_DIR, { recursive: true, force: true });
  fs.mkdirSync(RESULTS_DIR, { recursive: true });

  const server = new Server(bin);
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pilothouse-e2e-'));
  const oidc = new OidcProvider(path.join(runDir, 'oidc'));
  const github = new GitHubStandIn();
  const smtp = new SmtpSink();
  let browser = null;
  let passed = 0;
  let failed = 0;
  const skipped = [];
  const cleanup = () => {
    server.killNow();
    oidc.kill();
    github.kill();
    smtp.kill();
  };
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      cleanup();
      process.exit(130);
    });
  }

  try {
    const oidcEnv = await oidc.prepare();
    if (!oidcEnv) console.log(`# OpenID Connect sign-in not configured: ${oidc.reason}`);
    const githubEnv = await github.prepare();
    const smtpEnv = await smtp.start(server);
    if (!smtpEnv) console.log(`# email not configured: ${smtp.reason}`);
    await server.start(path.join(runDir, 'data'), { ...(oidcEnv || {}), ...githubEnv, ...(smtpEnv || {}) });
    if (oidcEnv) await oidc.start(server);
    await github.start(server);
    const chromiumArgs = [...CHROMIUM_ARGS];
    // The provider's certificate (from the throwaway CA), and no other.
    if (oidc.spkiHash) chromiumArgs.push(`--ignore-certificate-errors-spki-list=${oidc.spkiHash}`);
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      headless: true,
      args: chromiumArgs,
    });

    const shared = {};
    for (const test of tests) {
      const started = Date.now();
      const logFrom = server.lines.length;
      const ctx = makeContext({ server, oidc, github, smtp, browser, shared });
      let error = null;
      try {
        if (server.exited) throw new Error(`server is not running (${describeExit(server.exited)})`);
        await withTimeout(Promise.resolve().then(() => test.fn(ctx.t)), TEST_TIMEOUT_MS, `test "${test.name}"`);
        if (ctx.problems.length) {
          error = new Error(`${ctx.problems.length} browser error(s):\n${ctx.problems.join('\n')}`);
          error.stack = error.message; // where the runner noticed is of no interest
        }
      } catch (err) {
        error = err;
        if (ctx.problems.length) error.message += `\nbrowser errors:\n${ctx.problems.join('\n')}`;
      }
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      if (error instanceof Skip) {
        skipped.push(`${test.name}: ${error.message}`);
        console.log(`skip - ${test.name} (${secs} s): ${error.message}`);
        if (process.env.PILOTHOUSE_TEST_SKIP_LOG) {
          try {
            fs.appendFileSync(process.env.PILOTHOUSE_TEST_SKIP_LOG, `browser test ${test.name} (${error.message})\n`);
          } catch {
            // the summary still shows it
          }
        }
      } else if (error) {
        failed++;
        const shots = await screenshots(test.name, ctx.pages);
        console.log(`not ok - ${test.name} (${secs} s)`);
        console.log(indent(error.stack || error.message || error));
        if (error.stack && !error.stack.includes(error.message)) console.log(indent(error.message));
        if (shots.length) console.log(indent(`screenshot: ${shots.join(', ')}`));
        console.log(indent(`server output during the test:\n${server.tail(40, logFrom)}`));
      } else {
        passed++;
        console.log(`ok - ${test.name} (${secs} s)`);
      }
      await ctx.close();
    }
  } catch (err) {
    failed++;
    console.log(`not ok - start-up`);
    console.log(indent(err.stack || err.message || err));
  } finally {
    if (browser) await browser.close().catch(() => {});
    await oidc.stop();
    await github.stop();
    await server.stop();
    smtp.kill();
  }

  if (failed === 0) {
    fs.rmSync(runDir, { recursive: true, force: true });
  } else {
    console.log(`# data directory kept for inspection: ${server.dataDir || runDir}`);
  }
  if (passed + failed === 0) console.log('# no tests ran');
  if (skipped.length) {
    console.log(`# SKIP: ${skipped.length} test(s) did not run:`);
    for (const s of skipped) console.log(`#   ${s}`);
  }
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

process.exit(await main());
