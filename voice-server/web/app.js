// The voice web client: sign-in, friends, conversations, group chats and
// calls in the browser. Plain ES modules with no build step and no
// dependencies; the server embeds this file and serves it at /app.js.
//
// Layout of this file: session (tokens shared by the tabs of a browser),
// api (REST), events (the WebSocket: reconnect and resume with `since`),
// state + rendering, chat, calls (RTCPeerConnection, signaling over the
// WebSocket, ringing on every tab).

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'voice.session';
const CURSOR_KEY = 'voice.cursor';
const LOGIN_KEY = 'voice.login';

// ---------------------------------------------------------------- session

// Tokens live in localStorage so every tab shares one session; refreshes
// are serialized across tabs with a Web Lock, because a refresh token is
// single-use and a second tab reusing it would end the session.
const session = {
  load() {
    try { return JSON.parse(localStorage.getItem(SESSION_KEY)); } catch { return null; }
  },
  save(tokens) {
    const value = {
      access_token: tokens.access_token,
      refresh_token: tokens.refresh_token,
      expires_at: Date.now() + tokens.expires_in * 1000,
    };
    localStorage.setItem(SESSION_KEY, JSON.stringify(value));
    return value;
  },
  clear() {
    localStorage.removeItem(SESSION_KEY);
    localStorage.removeItem(CURSOR_KEY);
  },
  async accessToken(force = false) {
    const current = this.load();
    if (!current) throw new SignedOut();
    if (!force && current.expires_at - Date.now() > 30_000) return current.access_token;
    return navigator.locks.request('voice-refresh', async () => {
      const latest = this.load();
      if (!latest) throw new SignedOut();
      // Another tab may have refreshed while we waited for the lock.
      if (latest.access_token !== current.access_token && latest.expires_at - Date.now() > 30_000) {
        return latest.access_token;
      }
      const response = await fetch('/v1/auth/refresh', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ refresh_token: latest.refresh_token }),
      });
      if (response.status === 401) { this.clear(); throw new SignedOut(); }
      if (!response.ok) throw await ApiError.from(response);
      return this.save(await response.json()).access_token;
    });
  },
};

class SignedOut extends Error {
  constructor() { super('signed out'); }
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  static async from(response) {
    try {
      const body = await response.json();
      return new ApiError(response.status, body.error.code, body.error.message);
    } catch {
      return new ApiError(response.status, 'unknown', response.statusText);
    }
  }
}

// -------------------------------------------------------------------- api

async function api(method, path, body) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const token = await session.accessToken(attempt > 0);
    const response = await fetch(path, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401 && attempt === 0) continue;
    if (response.status === 401) { session.clear(); throw new SignedOut(); }
    if (!response.ok) throw await ApiError.from(response);
    if (response.status === 204) return null;
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }
}

// ------------------------------------------------------------------ state

const state = {
  me: null,
  friends: new Map(),          // user id -> FriendView
  requests: { incoming: [], outgoing: [] },
  conversations: new Map(),    // conversation id -> ConversationSummary
  groups: new Map(),           // group id -> Group
  open: null,                  // { id, kind: 'direct'|'group', peer?, group?, oldest, messages: Map }
  typing: new Map(),           // user id -> timeout
  lastTypingSent: 0,
};

function nameOf(userId) {
  if (state.me && userId === state.me.id) return 'me';
  const friend = state.friends.get(userId);
  if (friend) return label(friend.user);
  return userId.slice(0, 8);
}

function label(user) {
  return user.name || user.email || user.id.slice(0, 8);
}

function directId(a, b) {
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

function status(text) {
  $('status').textContent = text;
  if (text) setTimeout(() => { if ($('status').textContent === text) $('status').textContent = ''; }, 4000);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) node.append(child);
  return node;
}

function button(text, onclick, ariaLabel) {
  return el('button', { type: 'button', onclick, 'aria-label': ariaLabel }, text);
}

function time(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// Runs an action from a control, reporting failures instead of throwing.
function act(fn) {
  return async (event) => {
    event?.preventDefault?.();
    try { await fn(event); } catch (e) { report(e); }
  };
}

function report(e) {
  if (e instanceof SignedOut) { showSignIn(); return; }
  console.error(e);
  status(e.message || String(e));
}

// ---------------------------------------------------------------- sign-in

async function showSignIn() {
  events.stop();
  $('app').hidden = true;
  $('signin').hidden = false;
  const methods = await fetch('/v1/auth/methods').then((r) => r.json()).catch(() => ({}));
  $('provider-signin').hidden = !methods.provider;
  $('dev-signin').hidden = !methods.dev_login;
  if (!methods.provider && !methods.dev_login) $('signin-error').textContent = 'This server has no way to sign in configured.';
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

async function startProviderSignIn() {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  const stateParam = base64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem(LOGIN_KEY, JSON.stringify({ verifier, state: stateParam }));
  const redirect = `${location.origin}/`;
  const query = new URLSearchParams({
    redirect_uri: redirect, code_challenge: challenge, code_challenge_method: 'S256', state: stateParam,
  });
  location.assign(`/v1/auth/login?${query}`);
}

// The provider sent the browser back here with a one-time login code.
async function finishProviderSignIn() {
  const params = new URLSearchParams(location.search);
  const code = params.get('code');
  const error = params.get('error');
  if (!code && !error) return false;
  history.replaceState(null, '', '/');
  const pending = JSON.parse(sessionStorage.getItem(LOGIN_KEY) || 'null');
  sessionStorage.removeItem(LOGIN_KEY);
  if (error) { $('signin-error').textContent = `Sign-in failed: ${params.get('error_description') || error}`; return false; }
  if (!pending || pending.state !== params.get('state')) {
    $('signin-error').textContent = 'Sign-in failed: this page did not start it. Try again.';
    return false;
  }
  const response = await fetch('/v1/auth/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code, code_verifier: pending.verifier }),
  });
  if (!response.ok) {
    $('signin-error').textContent = `Sign-in failed: ${(await ApiError.from(response)).message}`;
    return false;
  }
  session.save(await response.json());
  return true;
}

async function devSignIn(event) {
  event.preventDefault();
  const response = await fetch('/v1/auth/dev-login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: $('dev-username').value.trim() }),
  });
  if (!response.ok) {
    $('signin-error').textContent = (await ApiError.from(response)).message;
    return;
  }
  session.save(await response.json());
  await start();
}

async function signOut() {
  try { await api('POST', '/v1/auth/logout'); } catch { /* signed out anyway */ }
  session.clear();
  calls.endLocal('signed out');
  await showSignIn();
}

// ----------------------------------------------------------------- events

// One WebSocket per tab, authenticated by a single-use ticket, resumed
// with `since` after any drop, with jittered backoff.
const events = {
  socket: null,
  attempt: 0,
  timer: null,
  stopped: true,
  // Requests sent on the socket that wait for their answer, by `ref`.
  pending: new Map(),
  nextRef: 0,

  start() { this.stopped = false; this.connect(); },

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.settleAll();
    if (this.socket) { this.socket.onclose = null; this.socket.close(1000); this.socket = null; }
    setConnection(false);
  },

  async connect() {
    if (this.stopped) return;
    try {
      const { ticket } = await api('POST', '/v1/ws/ticket');
      const since = localStorage.getItem(CURSOR_KEY);
      const query = new URLSearchParams({ ticket });
      if (since) query.set('since', since);
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      const socket = new WebSocket(`${scheme}://${location.host}/v1/ws?${query}`);
      this.socket = socket;
      socket.onmessage = (message) => this.receive(message.data);
      socket.onclose = (close) => {
        setConnection(false);
        this.socket = null;
        this.settleAll();
        if (close.code === 4001) { session.clear(); showSignIn(); return; }
        this.retry();
      };
    } catch (e) {
      if (e instanceof SignedOut) { showSignIn(); return; }
      this.retry();
    }
  },

  retry() {
    if (this.stopped) return;
    const delay = Math.min(5000, 100 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt++;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  },

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) { this.socket.send(JSON.stringify(message)); return true; }
    return false;
  },

  // Sends `message` with a fresh `ref` and resolves with the server's answer
  // (the event carrying that ref), or with null when there is no open
  // socket, it closes first, or no answer comes within `timeoutMs`: then
  // the outcome is unknown and the caller retries another way.
  request(message, timeoutMs = 10_000) {
    const ref = `r${++this.nextRef}`;
    if (!this.send({ ...message, ref })) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.settle(ref, null), timeoutMs);
      this.pending.set(ref, (answer) => { clearTimeout(timer); resolve(answer); });
    });
  },

  settle(ref, answer) {
    const resolve = this.pending.get(ref);
    if (!resolve) return false;
    this.pending.delete(ref);
    resolve(answer);
    return true;
  },

  settleAll() {
    for (const ref of [...this.pending.keys()]) this.settle(ref, null);
  },

  receive(text) {
    let event;
    try { event = JSON.parse(text); } catch { return; }
    if (typeof event.ref === 'string' && this.settle(event.ref, event)) return;
    if (typeof event.seq === 'number') {
      const cursor = Number(localStorage.getItem(CURSOR_KEY) || 0);
      if (event.seq > cursor) localStorage.setItem(CURSOR_KEY, String(event.seq));
    }
    handleEvent(event).catch(report);
  },
};

function setConnection(online) {
  const pill = $('connection');
  pill.textContent = online ? 'online' : 'reconnecting…';
  pill.classList.toggle('online', online);
}

window.addEventListener('online', () => { if (!events.socket && !events.stopped) { events.attempt = 0; events.connect(); } });

async function handleEvent(event) {
  switch (event.type) {
    case 'ready':
      events.attempt = 0;
      localStorage.setItem(CURSOR_KEY, String(Math.max(event.latest_seq, Number(localStorage.getItem(CURSOR_KEY) || 0))));
      setConnection(true);
      // Catch up what REST shows; live events keep it current from here.
      await Promise.all([loadFriends(), loadConversations(), loadCallHistory()]);
      await calls.resume();
      break;
    case 'resync_required':
      localStorage.setItem(CURSOR_KEY, String(event.latest_seq));
      await loadAll();
      if (state.open) await openConversation(state.open.id);
      break;
    case 'session.ended':
      session.clear();
      await showSignIn();
      break;
    case 'message.created': onMessage(event.message); break;
    case 'message.deleted': onDeleted(event.conversation, event.message_id); break;
    case 'friend.request': case 'friend.accepted': case 'friend.removed':
      await loadFriends();
      break;
    case 'group.updated': case 'group.member_added': case 'group.member_removed':
      await loadConversations();
      if (state.open?.kind === 'group') await showGroupAdmin(state.open.group);
      break;
    case 'presence.changed': {
      const friend = state.friends.get(event.user_id);
      if (friend) { friend.presence = event.presence; renderFriends(); }
      break;
    }
    case 'typing': onTyping(event.conversation, event.user_id); break;
    case 'error': status(event.error?.message || 'error'); break;
    default:
      if (event.type?.startsWith('call.')) await calls.onEvent(event);
  }
}

// ---------------------------------------------------------- friends, lists

async function loadAll() {
  await Promise.all([loadFriends(), loadConversations(), loadCallHistory()]);
}

async function loadFriends() {
  const [friends, requests] = await Promise.all([api('GET', '/v1/friends'), api('GET', '/v1/friends/requests')]);
  state.friends = new Map(friends.friends.map((f) => [f.user.id, f]));
  state.requests = requests;
  renderFriends();
  renderGroupForm();
}

function renderFriends() {
  const list = $('friends');
  list.replaceChildren(...[...state.friends.values()].map((f) => {
    const name = label(f.user);
    return el('li', { 'data-user': f.user.id },
      el('span', { class: `presence ${f.presence.online ? 'online' : ''}`, role: 'img', 'aria-label': f.presence.online ? 'online' : 'offline' }),
      el('span', { class: 'name' }, name),
      button('Chat', act(() => openConversation(directId(state.me.id, f.user.id))), `Chat with ${name}`),
      button('Call', act(() => calls.start(f.user)), `Call ${name}`),
      button('Remove', act(async () => {
        if (!confirm(`Remove ${name} from your friends?`)) return;
        await api('DELETE', `/v1/friends/${f.user.id}`);
        await loadFriends();
      }), `Remove ${name}`));
  }));
  if (!state.friends.size) list.replaceChildren(el('li', {}, 'No friends yet: search for someone above.'));
  const requests = $('requests');
  requests.replaceChildren(
    ...state.requests.incoming.map((r) => el('li', {},
      el('span', { class: 'name' }, `${label(r.user)} wants to be friends`),
      button('Accept', act(async () => { await api('POST', `/v1/friends/requests/${r.user.id}/accept`); await loadFriends(); }), `Accept ${label(r.user)}`),
      button('Decline', act(async () => { await api('POST', `/v1/friends/requests/${r.user.id}/decline`); await loadFriends(); }), `Decline ${label(r.user)}`))),
    ...state.requests.outgoing.map((r) => el('li', {},
      el('span', { class: 'name' }, `Waiting for ${label(r.user)}`),
      button('Cancel', act(async () => { await api('DELETE', `/v1/friends/requests/${r.user.id}`); await loadFriends(); }), `Cancel request to ${label(r.user)}`))),
  );
}

async function searchPeople(event) {
  const query = $('friend-search').value.trim();
  if (!query) return;
  const result = await api('GET', `/v1/users?q=${encodeURIComponent(query)}`);
  const people = result.users.filter((u) => u.id !== state.me.id);
  $('search-results').replaceChildren(...people.map((u) => el('li', {},
    el('span', { class: 'name' }, label(u)),
    state.friends.has(u.id)
      ? el('span', {}, 'friend')
      : button('Add friend', act(async () => {
        await api('POST', '/v1/friends/requests', { user_id: u.id });
        $('search-results').replaceChildren();
        await loadFriends();
        status(`Asked ${label(u)} to be friends`);
      }), `Add ${label(u)} as a friend`))));
  if (!people.length) $('search-results').replaceChildren(el('li', {}, 'Nobody found.'));
}

async function loadConversations() {
  const [conversations, groups] = await Promise.all([api('GET', '/v1/conversations'), api('GET', '/v1/groups')]);
  state.conversations = new Map(conversations.conversations.map((c) => [c.conversation, c]));
  state.groups = new Map(groups.groups.map((g) => [g.id, g]));
  renderConversations();
}

function conversationTitle(id) {
  if (id.startsWith('g:')) return state.groups.get(id.slice(2))?.name || 'Group';
  const [, a, b] = id.split(':');
  return nameOf(a === state.me.id ? b : a);
}

function renderConversations() {
  const ids = new Set([...state.conversations.keys(), ...[...state.groups.keys()].map((g) => `g:${g}`)]);
  const items = [...ids].map((id) => {
    const summary = state.conversations.get(id);
    const unread = summary?.unread || 0;
    const last = summary?.last_message;
    const title = conversationTitle(id);
    return el('li', { 'data-conversation': id },
      el('button', { type: 'button', class: 'name', onclick: act(() => openConversation(id)), 'aria-label': `Open ${title}${unread ? `, ${unread} unread` : ''}` },
        title, last ? ` — ${last.body ? last.body.slice(0, 40) : 'message deleted'}` : ''),
      unread ? el('span', { class: 'unread', 'aria-hidden': 'true' }, String(unread)) : '');
  });
  $('conversations').replaceChildren(...items);
}

function renderGroupForm() {
  $('group-members').replaceChildren(el('legend', {}, 'Members'), ...[...state.friends.values()].map((f) =>
    el('label', {}, el('input', { type: 'checkbox', value: f.user.id }), ` ${label(f.user)}`)));
}

async function createGroup() {
  const name = $('group-name').value.trim();
  const members = [...$('group-members').querySelectorAll('input:checked')].map((i) => i.value);
  const view = await api('POST', '/v1/groups', { name, members });
  $('group-name').value = '';
  $('new-group').open = false;
  await loadConversations();
  await openConversation(`g:${view.group.id}`);
}

// ------------------------------------------------------------------- chat

async function openConversation(id) {
  const kind = id.startsWith('g:') ? 'group' : 'direct';
  state.open = { id, kind, group: kind === 'group' ? id.slice(2) : null, oldest: null, messages: new Map() };
  $('chat').hidden = false;
  $('chat-title').textContent = conversationTitle(id);
  $('messages').replaceChildren();
  $('typing').textContent = '';
  $('group-admin').hidden = kind !== 'group';
  if (kind === 'group') await showGroupAdmin(state.open.group);
  await loadOlder();
  $('message-input').focus();
}

async function loadOlder() {
  const open = state.open;
  if (!open) return;
  const query = new URLSearchParams({ limit: '30' });
  if (open.oldest) query.set('before', String(open.oldest));
  const page = await api('GET', `/v1/conversations/${open.id}/messages?${query}`);
  if (state.open !== open) return;
  const list = $('messages');
  const atTop = list.scrollTop;
  for (const message of page.messages) {
    if (open.messages.has(message.id)) continue;
    open.messages.set(message.id, message);
    list.prepend(renderMessage(message));
  }
  open.oldest = page.next_before;
  $('older').hidden = !page.next_before;
  if (!atTop) list.scrollTop = list.scrollHeight;
  await markRead();
}

function renderMessage(message) {
  const mine = message.sender === state.me.id;
  const body = message.deleted_at
    ? el('span', { class: 'deleted' }, 'message deleted')
    : el('span', { class: 'body' }, message.body);
  return el('li', { 'data-message': message.id, 'data-seq': String(message.seq) },
    el('span', { class: 'time' }, time(message.created_at)),
    el('span', { class: 'sender' }, `${nameOf(message.sender)}:`),
    body,
    mine && !message.deleted_at
      ? button('Delete', act(async () => { await api('DELETE', `/v1/messages/${message.id}`); }), 'Delete this message')
      : '');
}

function onMessage(message) {
  const summary = state.conversations.get(message.conversation) || { conversation: message.conversation, unread: 0 };
  summary.last_message = message;
  const viewing = state.open?.id === message.conversation && document.visibilityState === 'visible';
  if (message.sender !== state.me.id && !viewing) summary.unread = (summary.unread || 0) + 1;
  state.conversations.set(message.conversation, summary);
  renderConversations();
  if (state.open?.id !== message.conversation || state.open.messages.has(message.id)) return;
  state.open.messages.set(message.id, message);
  const list = $('messages');
  list.append(renderMessage(message));
  list.scrollTop = list.scrollHeight;
  clearTyping(message.sender);
  markRead().catch(report);
}

function onDeleted(conversation, messageId) {
  const summary = state.conversations.get(conversation);
  if (summary?.last_message?.id === messageId) {
    summary.last_message = { ...summary.last_message, body: null, deleted_at: new Date().toISOString() };
    renderConversations();
  }
  if (state.open?.id !== conversation) return;
  const message = state.open.messages.get(messageId);
  if (!message) return;
  message.deleted_at = new Date().toISOString();
  message.body = null;
  $('messages').querySelector(`[data-message="${messageId}"]`)?.replaceWith(renderMessage(message));
}

async function markRead() {
  const open = state.open;
  if (!open || document.visibilityState !== 'visible') return;
  const newest = [...open.messages.values()].reduce((a, b) => (!a || b.seq > a.seq ? b : a), null);
  const summary = state.conversations.get(open.id);
  if (!newest || (summary && summary.last_read_seq >= newest.seq && !summary.unread)) return;
  await api('POST', `/v1/conversations/${open.id}/read`, { message_id: newest.id });
  if (summary) { summary.unread = 0; summary.last_read_seq = newest.seq; renderConversations(); }
}

async function sendMessage() {
  const input = $('message-input');
  const body = input.value.trim();
  if (!body || !state.open) return;
  const to = state.open.kind === 'group'
    ? { group: state.open.group }
    : { user: state.open.id.split(':').slice(1).find((u) => u !== state.me.id) || state.me.id };
  // Over the open socket, answered after the server stored it; over HTTP
  // when there is no socket or its answer did not come. The one client id
  // makes the server store it once, however many ways it was sent.
  const request = { to, body, client_id: crypto.randomUUID() };
  const answer = await events.request({ type: 'message.send', ...request });
  if (answer?.type === 'error') throw new ApiError(0, answer.error.code, answer.error.message);
  if (!answer) await api('POST', '/v1/messages', request);
  input.value = '';
}

function sendTyping() {
  if (!state.open || Date.now() - state.lastTypingSent < 3000) return;
  state.lastTypingSent = Date.now();
  events.send({ type: 'typing', conversation: state.open.id });
}

function onTyping(conversation, userId) {
  if (state.open?.id !== conversation || userId === state.me.id) return;
  clearTimeout(state.typing.get(userId));
  state.typing.set(userId, setTimeout(() => clearTyping(userId), 5000));
  renderTyping();
}

function clearTyping(userId) {
  clearTimeout(state.typing.get(userId));
  state.typing.delete(userId);
  renderTyping();
}

function renderTyping() {
  const names = [...state.typing.keys()].map(nameOf);
  $('typing').textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
}

async function showGroupAdmin(groupId) {
  const view = await api('GET', `/v1/groups/${groupId}`);
  $('chat-title').textContent = view.group.name;
  $('rename-input').value = view.group.name;
  const memberIds = new Set(view.members.map((m) => m.user_id));
  const myRole = view.members.find((m) => m.user_id === state.me.id)?.role;
  const canManage = myRole === 'owner' || myRole === 'admin';
  $('rename-group').hidden = !canManage;
  $('group-member-list').replaceChildren(...view.members.map((m) => el('li', {},
    el('span', { class: 'name' }, `${nameOf(m.user_id)} (${m.role})`),
    canManage && m.user_id !== state.me.id && m.role !== 'owner'
      ? button('Remove', act(async () => { await api('DELETE', `/v1/groups/${groupId}/members/${m.user_id}`); }), `Remove ${nameOf(m.user_id)} from the group`)
      : '')));
  const addable = [...state.friends.values()].filter((f) => !memberIds.has(f.user.id));
  $('add-member-select').replaceChildren(...addable.map((f) => el('option', { value: f.user.id }, label(f.user))));
  $('add-member').hidden = !canManage || !addable.length;
  $('leave-group').hidden = myRole === 'owner';
}

// ------------------------------------------------------------------ calls

// One call at a time per tab. Every tab of the callee rings; the tab that
// accepts owns the call, the others stop when `call.accepted` or
// `call.answered_elsewhere` arrives.
const calls = {
  current: null, // { id, peer, role, pc, state, startedAt, muted, timer, pendingCandidates, remoteSet }
  ringing: new Map(), // call id -> caller profile
  ringer: null,

  async iceServers() {
    try { return (await api('GET', '/v1/ice-servers')).ice_servers; } catch { return []; }
  },

  async start(user) {
    if (this.current) { status('You are already in a call.'); return; }
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const started = await api('POST', '/v1/calls', { callee: user.id });
    this.current = this.newCall(started.call_id, user, 'caller', started.ice_servers, stream);
    this.show('ringing');
    const offer = await this.current.pc.createOffer();
    await this.current.pc.setLocalDescription(offer);
    this.signal({ sdp: { type: offer.type, sdp: offer.sdp } });
    if (started.status === 'accepted') this.show('connecting');
  },

  newCall(id, peer, role, iceServers, stream) {
    const pc = new RTCPeerConnection({ iceServers: iceServers || [] });
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    const call = { id, peer, role, pc, stream, state: 'new', startedAt: null, muted: false, timer: null, pendingCandidates: [], remoteSet: false, reported: false };
    pc.onicecandidate = (e) => {
      if (e.candidate) this.signal({ candidate: { candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex } }, call);
    };
    pc.ontrack = (e) => { $('remote-audio').srcObject = e.streams[0] || new MediaStream([e.track]); };
    pc.onconnectionstatechange = () => {
      if (this.current !== call) return;
      if (pc.connectionState === 'connected') this.connected(call);
      if (pc.connectionState === 'failed') this.hangup('the connection failed');
      if (pc.connectionState === 'disconnected') $('call-state').textContent = 'Reconnecting…';
    };
    return call;
  },

  signal(payload, call = this.current) {
    if (!call) return;
    if (!events.send({ type: 'call.signal', call_id: call.id, payload })) status('Signal not sent: reconnecting');
  },

  async onEvent(event) {
    const call = this.current;
    switch (event.type) {
      case 'call.incoming':
        if (new Date(event.expires_at) < new Date()) return;
        this.ringing.set(event.call_id, event.caller);
        if (!call) this.ring(event.call_id, event.caller);
        break;
      case 'call.accepted':
        this.ringing.delete(event.call_id);
        if (call?.id === event.call_id && call.role === 'caller') this.show('connecting');
        else if (call?.id === event.call_id && call.role === 'callee' && call.state === 'incoming') this.endLocal('answered on another device');
        break;
      case 'call.answered_elsewhere':
        this.ringing.delete(event.call_id);
        if (call?.id === event.call_id) this.endLocal('answered on another device');
        break;
      case 'call.rejected': case 'call.cancelled': case 'call.expired': case 'call.busy': case 'call.ended': {
        this.ringing.delete(event.call_id);
        const reasons = { 'call.rejected': 'rejected', 'call.cancelled': 'cancelled', 'call.expired': 'no answer', 'call.busy': 'busy', 'call.ended': event.reason || 'ended' };
        if (call?.id === event.call_id) this.endLocal(reasons[event.type]);
        await loadCallHistory();
        break;
      }
      case 'call.signal':
        if (call?.id === event.call_id) await this.onSignal(call, event.payload);
        break;
    }
  },

  async onSignal(call, payload) {
    if (payload.sdp) {
      if (payload.sdp.type === 'offer') {
        if (call.remoteSet) return;
        await call.pc.setRemoteDescription(payload.sdp);
        call.remoteSet = true;
        const answer = await call.pc.createAnswer();
        await call.pc.setLocalDescription(answer);
        this.signal({ sdp: { type: answer.type, sdp: answer.sdp } }, call);
      } else if (payload.sdp.type === 'answer' && !call.remoteSet) {
        await call.pc.setRemoteDescription(payload.sdp);
        call.remoteSet = true;
      }
      for (const candidate of call.pendingCandidates.splice(0)) await call.pc.addIceCandidate(candidate).catch(() => {});
    } else if (payload.candidate) {
      if (call.remoteSet) await call.pc.addIceCandidate(payload.candidate).catch(() => {});
      else call.pendingCandidates.push(payload.candidate);
    }
  },

  // A tab that (re)connects while a call rings for this user rings too.
  async resume() {
    const active = await api('GET', '/v1/calls/active');
    for (const call of active.calls) {
      if (call.callee === state.me.id && call.status === 'ringing' && !this.ringing.has(call.call_id)) {
        const friend = state.friends.get(call.caller);
        const caller = friend ? friend.user : { id: call.caller };
        this.ringing.set(call.call_id, caller);
        if (!this.current) this.ring(call.call_id, caller);
      }
    }
  },

  ring(id, caller) {
    this.current = { id, peer: caller, role: 'callee', state: 'incoming', pc: null };
    this.show('incoming');
    this.startRinger();
  },

  async accept() {
    const call = this.current;
    if (!call || call.state !== 'incoming') return;
    this.stopRinger();
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const ready = this.newCall(call.id, call.peer, 'callee', await this.iceServers(), stream);
    this.current = ready;
    this.show('connecting');
    try {
      await api('POST', `/v1/calls/${call.id}/accept`);
    } catch (e) {
      this.endLocal(e.code === 'conflict' ? 'answered on another device' : e.message);
    }
  },

  async reject() {
    const call = this.current;
    if (!call) return;
    this.endLocal('rejected');
    await api('POST', `/v1/calls/${call.id}/reject`).catch(() => {});
  },

  async cancel() {
    const call = this.current;
    if (!call) return;
    this.endLocal('cancelled');
    await api('POST', `/v1/calls/${call.id}/cancel`).catch(() => {});
  },

  async hangup(reason = 'hung up') {
    const call = this.current;
    if (!call) return;
    this.endLocal(reason);
    await api('POST', `/v1/calls/${call.id}/hangup`).catch(() => {});
    await loadCallHistory();
  },

  connected(call) {
    if (call.startedAt) return;
    call.startedAt = Date.now();
    this.show('connected');
    if (!call.reported) { call.reported = true; api('POST', `/v1/calls/${call.id}/connected`).catch(() => {}); }
    call.timer = setInterval(() => this.tick(call), 1000);
  },

  async tick(call) {
    if (this.current !== call) return;
    const seconds = Math.floor((Date.now() - call.startedAt) / 1000);
    $('call-duration').textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
    const quality = await this.quality(call);
    $('call-quality').textContent = quality.text;
  },

  // Connection quality from the browser's own statistics.
  async quality(call) {
    const stats = await call.pc.getStats();
    let rtt = null; let received = 0; let lost = 0; let jitter = null;
    stats.forEach((report) => {
      if (report.type === 'candidate-pair' && report.nominated && report.currentRoundTripTime !== undefined) rtt = report.currentRoundTripTime;
      if (report.type === 'inbound-rtp' && report.kind === 'audio') { received = report.packetsReceived; lost = report.packetsLost; jitter = report.jitter; }
    });
    const lossRate = received + lost ? lost / (received + lost) : 0;
    const grade = rtt === null ? 'measuring' : rtt < 0.15 && lossRate < 0.02 ? 'good' : rtt < 0.4 && lossRate < 0.08 ? 'fair' : 'poor';
    const text = `Quality: ${grade}${rtt !== null ? `, ${Math.round(rtt * 1000)} ms` : ''}, ${received} packets received, ${lost} lost${jitter !== null ? `, jitter ${Math.round(jitter * 1000)} ms` : ''}`;
    return { grade, rtt, received, lost, jitter, text };
  },

  toggleMute() {
    const call = this.current;
    if (!call?.stream) return;
    call.muted = !call.muted;
    for (const track of call.stream.getAudioTracks()) track.enabled = !call.muted;
    $('call-mute').textContent = call.muted ? 'Unmute' : 'Mute';
    $('call-mute').setAttribute('aria-pressed', String(call.muted));
  },

  endLocal(reason) {
    const call = this.current;
    this.stopRinger();
    if (!call) return;
    clearInterval(call.timer);
    call.pc?.close();
    call.stream?.getTracks().forEach((t) => t.stop());
    this.current = null;
    $('remote-audio').srcObject = null;
    $('call').hidden = true;
    status(`Call ended: ${reason}`);
    // Another call may be ringing for this user meanwhile.
    const [next] = this.ringing.entries();
    if (next) this.ring(next[0], next[1]);
  },

  show(phase) {
    const call = this.current;
    call.state = phase;
    const who = label(call.peer);
    const titles = { ringing: `Calling ${who}…`, incoming: `${who} is calling`, connecting: `Call with ${who}`, connected: `Call with ${who}` };
    const states = { ringing: 'Ringing', incoming: 'Incoming call', connecting: 'Connecting…', connected: 'Connected' };
    $('call').hidden = false;
    $('call').dataset.state = phase;
    $('call-title').textContent = titles[phase];
    $('call-state').textContent = states[phase];
    if (phase !== 'connected') { $('call-duration').textContent = ''; $('call-quality').textContent = ''; }
    const visible = {
      'call-accept': phase === 'incoming', 'call-reject': phase === 'incoming',
      'call-cancel': phase === 'ringing', 'call-mute': phase === 'connecting' || phase === 'connected',
      'call-hangup': phase === 'connecting' || phase === 'connected',
    };
    for (const [id, on] of Object.entries(visible)) $(id).hidden = !on;
    const focus = { incoming: 'call-accept', ringing: 'call-cancel', connecting: 'call-hangup', connected: 'call-hangup' }[phase];
    $(focus)?.focus();
  },

  // A ring made with Web Audio: two tones, one second on, two off.
  startRinger() {
    this.stopRinger();
    try {
      const context = new AudioContext();
      const gain = context.createGain();
      gain.gain.value = 0;
      gain.connect(context.destination);
      for (const hz of [440, 480]) { const o = context.createOscillator(); o.frequency.value = hz; o.connect(gain); o.start(); }
      let on = false;
      const interval = setInterval(() => { on = !on; gain.gain.setTargetAtTime(on ? 0.15 : 0, context.currentTime, 0.01); }, 1000);
      this.ringer = { context, interval };
    } catch { /* no audio output: the dialog still shows */ }
  },

  stopRinger() {
    if (!this.ringer) return;
    clearInterval(this.ringer.interval);
    this.ringer.context.close();
    this.ringer = null;
  },
};

async function loadCallHistory() {
  const history = await api('GET', '/v1/calls/history?limit=20');
  $('call-history').replaceChildren(...history.calls.map((entry) => {
    const outgoing = entry.caller === state.me.id;
    const other = outgoing ? entry.callee : entry.caller;
    // A call that stopped ringing before this user answered is a missed
    // call to them, whether it timed out or the caller gave up.
    const missed = !outgoing && (entry.outcome === 'missed' || entry.outcome === 'cancelled');
    const duration = entry.duration_secs != null ? ` ${Math.floor(entry.duration_secs / 60)}:${String(entry.duration_secs % 60).padStart(2, '0')}` : '';
    return el('li', { class: missed ? 'missed' : '' },
      el('span', { class: 'name' }, `${outgoing ? '↗' : '↙'} ${nameOf(other)} — ${missed ? 'missed' : entry.outcome || 'in progress'}${duration}`),
      el('span', { class: 'time' }, time(entry.started_at)));
  }));
}

// ------------------------------------------------------------------ start

async function start() {
  try {
    state.me = await api('GET', '/v1/me');
  } catch (e) {
    if (e instanceof SignedOut) { await showSignIn(); return; }
    throw e;
  }
  $('signin').hidden = true;
  $('app').hidden = false;
  $('me').textContent = label(state.me);
  await loadAll();
  events.start();
}

function wire() {
  $('dev-signin').addEventListener('submit', act(devSignIn));
  $('provider-signin').addEventListener('click', act(startProviderSignIn));
  $('signout').addEventListener('click', act(signOut));
  $('add-friend').addEventListener('submit', act(searchPeople));
  $('create-group').addEventListener('submit', act(createGroup));
  $('composer').addEventListener('submit', act(sendMessage));
  $('message-input').addEventListener('input', sendTyping);
  $('older').addEventListener('click', act(loadOlder));
  $('messages').addEventListener('scroll', () => { if ($('messages').scrollTop === 0 && state.open?.oldest) loadOlder().catch(report); });
  $('rename-group').addEventListener('submit', act(async () => {
    await api('PATCH', `/v1/groups/${state.open.group}`, { name: $('rename-input').value.trim() });
    await loadConversations();
  }));
  $('add-member').addEventListener('submit', act(async () => {
    const userId = $('add-member-select').value;
    if (userId) await api('POST', `/v1/groups/${state.open.group}/members`, { user_id: userId });
  }));
  $('leave-group').addEventListener('click', act(async () => {
    await api('POST', `/v1/groups/${state.open.group}/leave`);
    state.open = null;
    $('chat').hidden = true;
    await loadConversations();
  }));
  $('call-accept').addEventListener('click', act(() => calls.accept()));
  $('call-reject').addEventListener('click', act(() => calls.reject()));
  $('call-cancel').addEventListener('click', act(() => calls.cancel()));
  $('call-hangup').addEventListener('click', act(() => calls.hangup()));
  $('call-mute').addEventListener('click', act(() => calls.toggleMute()));
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && calls.current?.state === 'incoming') calls.reject().catch(report); });
  document.addEventListener('visibilitychange', () => markRead().catch(report));
}

// For tests and debugging: the live call's peer connection and its stats.
window.voice = {
  get call() { return calls.current; },
  quality: () => (calls.current?.pc ? calls.quality(calls.current) : null),
};

wire();
(async () => {
  const signedIn = await finishProviderSignIn().catch((e) => { report(e); return false; });
  if (signedIn || session.load()) await start();
  else await showSignIn();
})().catch(report);
