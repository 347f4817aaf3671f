// Shared by the browser tests: the real voice-server binary on a loopback
// port with its own data directory, Debian's Chromium driven by
// playwright-core, and the `voice` CLI binary.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR || join(root, 'target');
export const serverBin = process.env.VOICE_SERVER_BIN || join(targetDir, 'debug', 'voice-server');
export const cliBin = process.env.VOICE_CLI_BIN || join(targetDir, 'debug', 'voice');
export const screenshots = join(root, 'docs', 'screenshots');

/** Starts voice-server; resolves to { url, stop() }. */
export async function startServer() {
  const dir = mkdtempSync(join(tmpdir(), 'voice-web-'));
  const child = spawn(serverBin, ['--bind', '127.0.0.1:0'], {
    cwd: dir,
    env: {
      ...process.env,
      VOICE_LOG: 'info',
      // Nothing leaves the machine: no public STUN servers, no responder.
      VOICE_ICE__STUN_SERVERS: '[]',
      VOICE_ICE__RESPONDER__ENABLED: 'false',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const addr = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('the server did not start')), 30_000);
    lines.on('line', (line) => {
      const match = /voice-server listening.*addr=(\S+)/.exec(line);
      if (match) { clearTimeout(timer); ok(match[1]); }
    });
    child.on('exit', (code) => fail(new Error(`the server exited with ${code}`)));
  });
  return {
    url: `http://${addr}`,
    dir,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((ok) => child.once('exit', ok));
    },
  };
}

/** Debian's Chromium with a fake microphone and loopback ICE allowed. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
    ],
  });
}

/** A browser context signed in by dev sign-in as `name`; returns its page. */
export async function signIn(browser, url, name, { screenshot } = {}) {
  const context = await browser.newContext({ permissions: ['microphone'], viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${name}] page error:`, e));
  await page.goto(url);
  await page.getByLabel('Developer sign-in: user name').fill(name);
  if (screenshot) await page.screenshot({ path: join(screenshots, screenshot) });
  await page.getByRole('button', { name: 'Sign in as developer' }).click();
  await page.locator('#connection.online').waitFor();
  return page;
}

/** `page` asks `friend` to be friends; `friendPage` accepts. */
export async function befriend(page, friendPage, name, friendName) {
  await page.getByLabel('Find people').fill(friendName);
  await page.getByRole('button', { name: 'Search' }).click();
  await page.getByRole('button', { name: `Add ${friendName} as a friend` }).click();
  await friendPage.getByRole('button', { name: `Accept ${name}` }).click();
  await page.getByRole('button', { name: `Call ${friendName}` }).waitFor();
  await friendPage.getByRole('button', { name: `Call ${name}` }).waitFor();
}

/** Audio packets the page's live call has received (getStats). */
export async function inboundAudioPackets(page) {
  return page.evaluate(async () => {
    const pc = window.voice.call?.pc;
    if (!pc) return 0;
    let packets = 0;
    (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') packets += r.packetsReceived; });
    return packets;
  });
}

/** Polls until `probe()` is truthy. */
export async function eventually(probe, what, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 200));
  }
}

/** Runs the CLI to completion. */
export function cli(config, server, args) {
  const result = spawnSync(cliBin, ['--server', server, ...args], {
    env: { ...process.env, VOICE_CONFIG: config },
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (result.status !== 0) throw new Error(`voice ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

/** Starts the CLI in the background; resolves its exit with stderr. */
export function cliBackground(config, server, args) {
  const child = spawn(cliBin, ['--server', server, ...args], {
    env: { ...process.env, VOICE_CONFIG: config },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const waiters = [];
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
    for (const w of waiters.splice(0)) w();
  });
  return {
    done: new Promise((ok) => child.on('exit', (code) => ok({ code, stderr }))),
    async waitFor(text, timeout = 20_000) {
      const deadline = Date.now() + timeout;
      while (!stderr.includes(text)) {
        if (Date.now() > deadline) throw new Error(`no "${text}" from the CLI: ${stderr}`);
        await new Promise((ok) => { waiters.push(ok); setTimeout(ok, 200); });
      }
    },
    kill() { child.kill('SIGINT'); },
  };
}

/** RMS level (0 to 1) of a 16-bit PCM WAV file, skipping `skipSeconds`. */
export function wavRms(path, skipSeconds = 0.5) {
  const bytes = readFileSync(path);
  let offset = 12;
  let rate = 48_000;
  let channels = 1;
  while (offset + 8 <= bytes.length) {
    const id = bytes.toString('ascii', offset, offset + 4);
    const size = bytes.readUInt32LE(offset + 4);
    if (id === 'fmt ') { channels = bytes.readUInt16LE(offset + 10); rate = bytes.readUInt32LE(offset + 12); }
    if (id === 'data') {
      const start = offset + 8 + Math.floor(skipSeconds * rate) * 2 * channels;
      const end = Math.min(offset + 8 + size, bytes.length);
      let sum = 0; let n = 0;
      for (let i = start; i + 1 < end; i += 2) { const s = bytes.readInt16LE(i) / 32768; sum += s * s; n++; }
      return n ? Math.sqrt(sum / n) : 0;
    }
    offset += 8 + size;
  }
  throw new Error(`${path} has no data chunk`);
}
