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
//
// Prints "ok - name" / "not ok - name" per test and ends with "N passed, N failed".

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
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

// ---------------------------------------------------------------------------
// Server

class Server {
  constructor(bin) {
    this.bin = bin;
    this.lines = [];
    this.exited = null; // { code, signal } once the process is gone
  }

  async start() {
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pilothouse-e2e-'));
    const env = { ...process.env, RUST_LOG: 'info' };
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
      this.lines.push(clean);
      if (this.lines.length > 5000) this.lines.splice(0, 1000);
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
// Per-test context

function makeContext({ server, browser, shared }) {
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
  let browser = null;
  let passed = 0;
  let failed = 0;
  const cleanup = () => server.killNow();
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      cleanup();
      process.exit(130);
    });
  }

  try {
    await server.start();
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
    });

    const shared = {};
    for (const test of tests) {
      const started = Date.now();
      const logFrom = server.lines.length;
      const ctx = makeContext({ server, browser, shared });
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
      if (error) {
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
    await server.stop();
  }

  if (failed === 0) {
    fs.rmSync(server.dataDir, { recursive: true, force: true });
  } else if (server.dataDir) {
    console.log(`# data directory kept for inspection: ${server.dataDir}`);
  }
  if (passed + failed === 0) console.log('# no tests ran');
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

process.exit(await main());
