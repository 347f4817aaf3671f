// The web client end to end in real Chromium: two users sign in, become
// friends, chat, and call each other with WebRTC; both show the call
// connected and getStats() counts inbound audio on both sides. Screenshots
// of the main screens go to docs/screenshots/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  befriend, eventually, inboundAudioPackets, launchBrowser, screenshots, signIn, startServer,
} from './harness.mjs';

test('two browser users befriend, chat and call each other', { timeout: 180_000 }, async () => {
  mkdirSync(screenshots, { recursive: true });
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const alice = await signIn(browser, server.url, 'alice', { screenshot: 'sign-in.png' });
    const bob = await signIn(browser, server.url, 'bob');
    await befriend(alice, bob, 'alice', 'bob');
    await bob.locator('[data-user] .presence.online').first().waitFor();

    // Chat: live delivery, unread count, typing, delete. With its socket
    // up, a tab sends over the socket, not with POST /v1/messages.
    const posted = [];
    alice.on('request', (request) => {
      if (request.method() === 'POST' && new URL(request.url()).pathname === '/v1/messages') posted.push(request);
    });
    await alice.locator('#connection.online').waitFor();
    await alice.getByRole('button', { name: 'Chat with bob' }).click();
    await alice.getByRole('textbox', { name: 'Message' }).fill('hello bob');
    await alice.getByRole('button', { name: 'Send' }).click();
    await bob.getByRole('button', { name: /Open alice, 1 unread/ }).waitFor();
    await bob.getByRole('button', { name: /Open alice/ }).click();
    await bob.locator('#messages').getByText('hello bob').waitFor();
    await bob.getByRole('textbox', { name: 'Message' }).pressSequentially('hi alice', { delay: 20 });
    await alice.locator('#typing').getByText('bob is typing').waitFor();
    await bob.getByRole('textbox', { name: 'Message' }).press('Enter');
    await alice.locator('#messages').getByText('hi alice').waitFor();
    await alice.getByRole('textbox', { name: 'Message' }).fill('oops');
    await alice.getByRole('textbox', { name: 'Message' }).press('Enter');
    await bob.locator('#messages').getByText('oops').waitFor();
    await alice.locator('#messages li', { hasText: 'oops' }).getByRole('button', { name: 'Delete this message' }).click();
    await bob.locator('#messages').getByText('message deleted').waitFor();
    assert.equal(posted.length, 0, 'messages went over the WebSocket');
    await alice.screenshot({ path: join(screenshots, 'chat.png') });

    // A group.
    await alice.getByText('New group').click();
    await alice.getByLabel('Group name').first().fill('crew');
    await alice.getByRole('checkbox', { name: 'bob' }).check();
    await alice.getByRole('button', { name: 'Create group' }).click();
    // The new group opens once it is created; typing before that would
    // send to the conversation still open (bob).
    await alice.locator('#chat-title', { hasText: 'crew' }).waitFor();
    await alice.getByRole('textbox', { name: 'Message' }).fill('hi crew');
    await alice.getByRole('textbox', { name: 'Message' }).press('Enter');
    await bob.getByRole('button', { name: /Open crew/ }).click();
    await bob.locator('#messages').getByText('hi crew').waitFor();

    // Alice calls Bob: it rings, Bob accepts, both connect, audio flows.
    await alice.getByRole('button', { name: 'Call bob' }).click();
    await alice.locator('#call[data-state="ringing"]').waitFor();
    await alice.screenshot({ path: join(screenshots, 'outgoing-call.png') });
    await bob.locator('#call[data-state="incoming"]').waitFor();
    await bob.screenshot({ path: join(screenshots, 'incoming-call.png') });
    await bob.getByRole('button', { name: 'Accept' }).click();
    await alice.locator('#call[data-state="connected"]').waitFor({ timeout: 20_000 });
    await bob.locator('#call[data-state="connected"]').waitFor({ timeout: 20_000 });
    await eventually(async () => (await inboundAudioPackets(alice)) > 20, 'audio at alice');
    await eventually(async () => (await inboundAudioPackets(bob)) > 20, 'audio at bob');
    await eventually(async () => /Quality: \w+/.test(await alice.locator('#call-quality').textContent()), 'quality shown');
    await alice.screenshot({ path: join(screenshots, 'in-call.png') });

    // Mute, then hang up: both sides end, history shows the call.
    await alice.getByRole('button', { name: 'Mute' }).click();
    assert.equal(await alice.getByRole('button', { name: 'Unmute' }).getAttribute('aria-pressed'), 'true');
    await alice.getByRole('button', { name: 'Hang up' }).click();
    await bob.locator('#call').waitFor({ state: 'hidden' });
    await bob.locator('#call-history li', { hasText: 'alice' }).first().waitFor();

    // A call Bob does not answer is a missed call on his side.
    await alice.getByRole('button', { name: 'Call bob' }).click();
    await bob.locator('#call[data-state="incoming"]').waitFor();
    await alice.getByRole('button', { name: 'Cancel' }).click();
    await bob.locator('#call').waitFor({ state: 'hidden' });
    await bob.screenshot({ path: join(screenshots, 'friends-and-history.png') });
  } finally {
    await browser.close();
    await server.stop();
  }
});
