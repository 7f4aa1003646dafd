// End-to-end tests of warren's browser terminal: the real `warren serve` (development mode, an
// ephemeral loopback port, a temporary state directory, the auto backend) and Debian's
// headless Chromium driven by playwright-core. Run with `node --test` (scripts/e2e does).
//
// Answers are read from the xterm.js buffer (window.term) inside page.waitForFunction; every
// wait is on a condition with a bounded timeout, never a sleep.
//
// Environment: WARREN_BIN (default ../target/debug/warren), CHROMIUM (default /usr/bin/chromium),
// E2E_UID_BASE (default 2960000).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const WARREN = process.env.WARREN_BIN || resolve(here, '../target/debug/warren');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const UID_BASE = Number(process.env.E2E_UID_BASE || 2960000);
const WAIT = 30000;
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

let tmp;
let stateDir;
let configFile;
let server;
let baseUrl;
let browser;
const users = ['u_alice', 'u_bob'];

function warren(args) {
  return spawnSync(WARREN, ['--state-dir', stateDir, '--config', configFile, ...args], { encoding: 'utf8' });
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'warren-e2e-'));
  chmodSync(tmp, 0o711);
  stateDir = join(tmp, 'state');
  configFile = join(tmp, 'warren.toml');
  writeFileSync(configFile, `uid_base = ${UID_BASE}\nuid_count = 1000\n\n[server]\nrate_limit_rps = 0\n`);
  server = spawn(WARREN, ['--state-dir', stateDir, '--config', configFile, '--backend', 'auto',
    'serve', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: server.stdout });
  baseUrl = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('warren serve printed no address within 60 s')), 60000);
    server.once('exit', (code) => fail(new Error(`warren serve exited with ${code}`)));
    lines.on('line', (line) => {
      const m = /^warren listening on (http:\/\/\S+)/.exec(line);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
  });
  // playwright-core starts Chromium with a fresh temporary --user-data-dir of its own (and removes
  // it at close); it never downloads a browser.
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
});

after(async () => {
  if (browser) await browser.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((ok) => server.once('exit', ok));
    server.kill('SIGTERM');
    await exited;
  }
  for (const u of users) warren(['workspace', 'destroy', u]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

// --- helpers running in the page ---------------------------------------------------------------

/** Every logical line of the terminal's active buffer (scrollback and screen; wrapped rows joined). */
function lines(page) {
  return page.evaluate(() => {
    const b = window.term.buffer.active;
    const out = [];
    for (let i = 0; i < b.length; i += 1) {
      const line = b.getLine(i);
      if (line.isWrapped && out.length) out[out.length - 1] += line.translateToString(true);
      else out.push(line.translateToString(true));
    }
    return out;
  });
}

/** Waits for a buffer line that `kind` matches (`exact`, `ends`, `includes`); returns it. */
async function waitLine(page, kind, text, timeout = WAIT) {
  const handle = await page.waitForFunction(([k, t]) => {
    const b = window.term.buffer.active;
    for (let i = b.length - 1; i >= 0; i -= 1) {
      const l = b.getLine(i).translateToString(true).trimEnd();
      if ((k === 'exact' && l === t) || (k === 'ends' && l.endsWith(t)) || (k === 'includes' && l.includes(t))) return l;
    }
    return false;
  }, [kind, text], { timeout, polling: 50 });
  return handle.jsonValue();
}

/** Types a command line and presses Enter. */
async function run(page, line) {
  await page.keyboard.type(line);
  await page.keyboard.press('Enter');
}

/** Runs `cmd` and returns the output lines between it and a marker the shell computes. */
async function output(page, cmd) {
  const n = Math.floor(Math.random() * 1e6);
  await run(page, `${cmd}; echo "end-$((${n}+1))"`);
  await waitLine(page, 'exact', `end-${n + 1}`);
  const all = await lines(page);
  const end = all.lastIndexOf(`end-${n + 1}`);
  let start = end - 1;
  while (start >= 0 && !all[start].includes(`end-$((${n}+1))`)) start -= 1;
  return all.slice(start + 1, end).map((l) => l.trimEnd());
}

async function connected(page) {
  await page.waitForFunction(() => window.warren && window.warren.status === 'connected', null, { timeout: 60000 });
}

async function signInLocally(page, user) {
  await page.goto(`${baseUrl}/terminal`);
  await page.waitForSelector('#dev:not([hidden])', { timeout: WAIT });
  await page.fill('#dev-user', user);
  await page.click('#signin-local');
  await connected(page);
  await page.click('#terminal');
}

async function signInWithToken(page, token) {
  await page.goto(`${baseUrl}/container-terminal`);
  await page.fill('#token', token);
  await page.click('#signin-token');
  await connected(page);
  await page.click('#terminal');
}

// --- the tests ---------------------------------------------------------------------------------

let alice; // the first user's page, kept across tests
let aliceHome;

test('sign in locally, whoami, files in a new directory', async () => {
  const context = await browser.newContext();
  alice = await context.newPage();
  await signInLocally(alice, 'u_alice');
  assert.equal(await alice.textContent('#who'), 'u_alice');
  assert.match(await alice.textContent('#status'), /connected/);

  assert.deepEqual(await output(alice, 'whoami'), ['u_alice']);
  await run(alice, 'mkdir test && cd test');
  await run(alice, 'echo "Hello" > file.txt && cat file.txt');
  await waitLine(alice, 'exact', 'Hello');
  const [pwd] = await output(alice, 'pwd');
  assert.ok(pwd.endsWith('/test'), pwd);
  aliceHome = pwd.slice(0, -'/test'.length);
  const info = await output(alice, 'container-info');
  assert.ok(info.some((l) => l.startsWith('user:       u_alice')), info.join('\n'));
  assert.ok(info.some((l) => l.startsWith('workspace:  ')), info.join('\n'));
  assert.ok(info.some((l) => /^backend: {4}(ns|dir)/.test(l)), info.join('\n'));
});

test('a reload finds the same session and its screen', async () => {
  const before = await alice.evaluate(() => window.warren.session);
  assert.match(before, /^t_[0-9a-f]{32}$/);
  await alice.reload();
  await connected(alice);
  assert.equal(await alice.evaluate(() => window.warren.session), before);
  assert.match(await alice.textContent('#status'), /resumed/);
  // The screen came back (replayed from the server's terminal state) ...
  await waitLine(alice, 'exact', 'Hello');
  await waitLine(alice, 'exact', 'u_alice');
  // ... and it is the same shell, still in `test`.
  await alice.click('#terminal');
  const [pwd] = await output(alice, 'pwd');
  assert.ok(pwd.endsWith('/test'), pwd);
});

test('two users in two browser contexts see neither files nor processes of the other', async () => {
  // Alice starts a process that outlives the command line.
  await run(alice, 'sleep 4242 &');
  const mine = 'pgrep -cx -u "$(id -u)" sleep';
  assert.deepEqual(await output(alice, mine), ['1']);

  // Bob signs in with a token (pasted), in his own browser context.
  const r = await fetch(`${baseUrl}/terminal/dev-login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user: 'u_bob' }),
  });
  assert.equal(r.status, 200);
  const { token } = await r.json();
  const bobContext = await browser.newContext();
  const bob = await bobContext.newPage();
  await signInWithToken(bob, token);
  assert.deepEqual(await output(bob, 'whoami'), ['u_bob']);
  assert.notEqual(await bob.evaluate(() => window.warren.session), await alice.evaluate(() => window.warren.session));

  // Alice's file, by the path she sees and by its path on the host.
  const hostHome = join(stateDir, 'workspaces', 'u_alice');
  for (const path of [`${aliceHome}/test/file.txt`, `${hostHome}/test/file.txt`]) {
    const out = await output(bob, `cat ${path} 2>/dev/null; echo "rc-$?"`);
    assert.deepEqual(out, ['rc-1'], `bob reading ${path}: ${out.join('\n')}`);
  }
  assert.deepEqual(await output(bob, `ls ${hostHome} >/dev/null 2>&1; echo "ls-$?"`), ['ls-2']);
  // Alice's processes: bob can signal none of them (and, with namespaces, sees none).
  assert.deepEqual(await output(bob, 'pkill -x sleep; echo "pkill-$?"'), ['pkill-1']);
  const backend = await bob.evaluate(async () => {
    const t = sessionStorage.getItem('warren.token');
    const w = await fetch('/v1/workspaces/me', { headers: { Authorization: `Bearer ${t}` } });
    return (await w.json()).backend;
  });
  if (backend === 'ns') {
    assert.deepEqual(await output(bob, 'pgrep -cx sleep'), ['0']);
  }
  assert.deepEqual(await output(alice, mine), ['1'], 'alice\'s sleep survived');
  await run(alice, 'kill %1');
  await bobContext.close();
});

test('resizing the viewport changes stty size', async () => {
  await alice.setViewportSize({ width: 1200, height: 700 });
  const big = await alice.evaluate(() => [window.term.rows, window.term.cols]);
  await alice.setViewportSize({ width: 700, height: 420 });
  await alice.waitForFunction((c) => window.term.cols < c, big[1], { timeout: WAIT });
  const [rows, cols] = await alice.evaluate(() => [window.term.rows, window.term.cols]);
  assert.ok(cols < big[1] && rows <= big[0], `${rows}x${cols} after ${big}`);
  // The resize message travels beside the typed input: wait until the shell sees it.
  let seen = '';
  for (let i = 0; i < 20 && seen !== `${rows} ${cols}`; i += 1) {
    [seen] = await output(alice, 'stty size');
  }
  assert.equal(seen, `${rows} ${cols}`);
});
