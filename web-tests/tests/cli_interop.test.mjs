// The browser and the `voice` CLI (str0m, Opus) call each other, both
// ways: the CLI's recording of the browser has energy in it, and the
// browser's getStats() counts the CLI's audio packets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  cli, cliBackground, eventually, inboundAudioPackets, launchBrowser, signIn, startServer, wavRms,
} from './harness.mjs';

test('a browser user and a CLI user call each other both ways', { timeout: 180_000 }, async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  const dir = mkdtempSync(join(tmpdir(), 'voice-cli-'));
  const carol = join(dir, 'carol.json');
  try {
    const alice = await signIn(browser, server.url, 'alice');
    cli(carol, server.url, ['login', '--dev', 'carol']);
    cli(carol, server.url, ['friends', 'add', 'alice']);
    await alice.getByRole('button', { name: 'Accept carol' }).click();
    await alice.getByRole('button', { name: 'Call carol' }).waitFor();

    // The browser calls; the CLI answers with a tone and records.
    const heardByCli = join(dir, 'from-browser.wav');
    const answering = cliBackground(carol, server.url, [
      'answer', '--auto', '--wait', '60', '--tone', '440', '--duration', '5', '--record', heardByCli,
    ]);
    await answering.waitFor('waiting for a call');
    await alice.getByRole('button', { name: 'Call carol' }).click();
    await alice.locator('#call[data-state="connected"]').waitFor({ timeout: 20_000 });
    await eventually(async () => (await inboundAudioPackets(alice)) > 50, 'the CLI audio in the browser');
    const first = await answering.done;
    assert.equal(first.code, 0, first.stderr);
    await alice.locator('#call').waitFor({ state: 'hidden' });
    const rmsFromBrowser = wavRms(heardByCli);
    console.log(`CLI recording of the browser (browser called): RMS ${rmsFromBrowser.toFixed(4)}`);
    assert.ok(rmsFromBrowser > 0.005, `the CLI heard only ${rmsFromBrowser} RMS from the browser`);

    // The CLI calls; the browser accepts.
    const heardByCli2 = join(dir, 'from-browser-2.wav');
    const calling = cliBackground(carol, server.url, [
      'call', 'alice', '--tone', '660', '--duration', '5', '--record', heardByCli2,
    ]);
    await alice.locator('#call[data-state="incoming"]').waitFor({ timeout: 20_000 });
    await alice.getByRole('button', { name: 'Accept' }).click();
    await alice.locator('#call[data-state="connected"]').waitFor({ timeout: 20_000 });
    await eventually(async () => (await inboundAudioPackets(alice)) > 50, 'the CLI audio in the browser');
    const second = await calling.done;
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /connected/);
    const rms2 = wavRms(heardByCli2);
    console.log(`CLI recording of the browser (CLI called): RMS ${rms2.toFixed(4)}`);
    assert.ok(rms2 > 0.005, `the CLI heard only ${rms2} RMS from the browser`);
  } finally {
    await browser.close();
    await server.stop();
  }
});
