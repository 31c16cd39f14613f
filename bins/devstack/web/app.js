// The demo inbox: plain JavaScript on the real @stomp/stompjs (global StompJs) and
// sockjs-client (global SockJS). A user's JWT comes from devstack's dev-only /dev/token;
// the inbox comes from the gateway's REST API (keyset pages); new notifications arrive over
// STOMP/SockJS (recovered with last-id after a reconnect); read marks and the unread badge
// follow /user/{id}/queue/notification-state, so every tab of the user stays in sync.
'use strict';

const PAGE_SIZE = 20;
const TOKEN_MARGIN_SECS = 120; // mint a new token this long before the old one expires

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = {
  config: null,
  user: null,
  token: null,
  tokenExpiresAt: 0,
  client: null,
  lastId: null, // the newest notification id this page holds (null: nothing loaded yet)
  nextCursor: undefined, // undefined: first page not loaded; null: no more pages
  loading: false,
  unread: 0,
  transport: params.get('transport') || 'auto',
  generation: 0, // bumped when the user changes: late REST answers for the old one are dropped
};

function log(line) {
  const time = new Date().toLocaleTimeString();
  const el = $('log');
  el.textContent = `${time} ${line}\n` + el.textContent.slice(0, 8000);
}

function domain(type) {
  if (type === 'SYSTEM') return 'system';
  if (type.startsWith('BLOG_')) return 'blog';
  if (type.startsWith('PRISM_')) return 'prism';
  return 'shopping';
}

// ---- devstack's dev-only endpoints ----------------------------------------------------

async function devPost(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

async function token() {
  const now = Date.now() / 1000;
  if (!state.token || state.tokenExpiresAt - now < TOKEN_MARGIN_SECS) {
    const minted = await devPost('/dev/token', { userId: state.user });
    state.token = minted.token;
    state.tokenExpiresAt = minted.expiresAt;
  }
  return state.token;
}

// ---- the gateway's REST API -------------------------------------------------------------

async function api(method, path, retried = false) {
  const response = await fetch(`${state.config.gateway}/api/v1/notifications${path}`, {
    method,
    headers: { Authorization: `Bearer ${await token()}` },
  });
  if (response.status === 401 && !retried) {
    state.token = null;
    return api(method, path, true);
  }
  const body = await response.json();
  if (!body.success) throw new Error(`${body.error.code} ${body.error.message}`);
  return body.data;
}

// ---- the badge and the list ---------------------------------------------------------------

function setBadge(count) {
  state.unread = Math.max(0, count);
  const badge = $('badge');
  badge.textContent = String(state.unread);
  badge.dataset.count = String(state.unread);
  badge.classList.toggle('unread', state.unread > 0);
  document.title = `${state.unread > 0 ? `(${state.unread}) ` : ''}Notification inbox · devstack`;
}

function itemElement(id) {
  return document.querySelector(`#inbox li[data-id="${id}"]`);
}

function render(n, fresh) {
  const li = document.createElement('li');
  li.className = 'item' + (fresh ? ' fresh' : '');
  li.dataset.id = String(n.id);
  li.dataset.type = n.type;
  li.dataset.status = n.status;
  const chip = document.createElement('span');
  chip.className = `domain ${domain(n.type)}`;
  chip.textContent = domain(n.type);
  const title = document.createElement('div');
  title.className = 'title';
  title.textContent = n.title;
  const message = document.createElement('div');
  message.className = 'message';
  message.textContent = n.message;
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.textContent = [n.type, n.createdAt, n.link, `#${n.id}`].filter(Boolean).join(' · ');
  const actions = document.createElement('div');
  actions.className = 'actions';
  const read = document.createElement('button');
  read.className = 'read';
  read.type = 'button';
  read.textContent = 'Mark read';
  read.addEventListener('click', () => markRead(n.id));
  const remove = document.createElement('button');
  remove.className = 'delete';
  remove.type = 'button';
  remove.textContent = 'Delete';
  remove.addEventListener('click', () => removeItem(n.id));
  actions.append(read, remove);
  li.append(chip, title, actions, message, meta);
  return li;
}

// Newest first, by id (ids grow with time; recovered messages come oldest first).
function insert(n, fresh) {
  if (itemElement(n.id)) return false;
  const li = render(n, fresh);
  const list = $('inbox');
  const after = [...list.children].find((el) => Number(el.dataset.id) < n.id);
  list.insertBefore(li, after || null);
  state.lastId = Math.max(state.lastId ?? 0, n.id);
  $('empty').hidden = true;
  return true;
}

function markLocallyRead(id) {
  const li = itemElement(id);
  if (li) li.dataset.status = 'READ';
}

function removeLocally(id) {
  const li = itemElement(id);
  if (li) li.remove();
  $('empty').hidden = $('inbox').children.length > 0;
}

async function loadMore() {
  if (state.loading || state.nextCursor === null) return;
  state.loading = true;
  const generation = state.generation;
  try {
    const before = state.nextCursor === undefined ? '' : state.nextCursor;
    const page = await api('GET', `?before=${before}&size=${PAGE_SIZE}`);
    if (generation !== state.generation) return;
    page.items.forEach((n) => insert(n, false));
    state.nextCursor = page.nextCursor;
    $('more').hidden = state.nextCursor === null;
    $('empty').hidden = $('inbox').children.length > 0;
  } catch (err) {
    log(`loading the inbox failed: ${err.message}`);
  } finally {
    state.loading = false;
  }
}

async function reloadFirstPage() {
  $('inbox').replaceChildren();
  state.nextCursor = undefined;
  await loadMore();
}

// ---- actions (REST; every tab hears the result as a state event) ----------------------

async function markRead(id) {
  try {
    await api('PUT', `/${id}/read`);
    markLocallyRead(id);
  } catch (err) {
    log(`mark read failed: ${err.message}`);
  }
}

async function removeItem(id) {
  try {
    await api('DELETE', `/${id}`);
    removeLocally(id);
  } catch (err) {
    log(`delete failed: ${err.message}`);
  }
}

async function readAll() {
  try {
    const changed = await api('PUT', '/read-all');
    document.querySelectorAll('#inbox li').forEach((li) => { li.dataset.status = 'READ'; });
    log(`marked ${changed} read`);
  } catch (err) {
    log(`read all failed: ${err.message}`);
  }
}

// ---- STOMP over SockJS ------------------------------------------------------------------

function setStatus(status) {
  $('status').dataset.state = status;
  $('status').textContent = status;
}

function onNotification(message) {
  const n = JSON.parse(message.body);
  if (message.headers['recovery-truncated'] === 'true') {
    log('missed too many while away: reloading the first page');
    reloadFirstPage();
  }
  if (!insert(n, true)) return; // already held (dedup by id)
  if (n.status === 'UNREAD') setBadge(state.unread + 1);
  log(`notification #${n.id} ${n.type}`);
}

function onStateEvent(message) {
  const event = JSON.parse(message.body);
  setBadge(event.unreadCount);
  if (event.event === 'READ') event.ids.forEach(markLocallyRead);
  if (event.event === 'READ_ALL') {
    document.querySelectorAll('#inbox li').forEach((li) => { li.dataset.status = 'READ'; });
  }
  if (event.event === 'DELETED') event.ids.forEach(removeLocally);
  log(`state ${event.event} ${event.ids ? JSON.stringify(event.ids) : ''} unread=${event.unreadCount}`);
}

function onTimeDeal(message) {
  const deal = JSON.parse(message.body);
  $('timedeal-title').textContent = 'Time deal';
  $('timedeal-message').textContent = deal.message;
  $('timedeal-link').textContent = deal.link;
  $('timedeal').hidden = false;
  log(`time deal ${deal.timeDealId}`);
}

function connect() {
  const user = state.user;
  const transport = state.transport;
  const options = transport === 'auto' ? {} : { transports: [transport] };
  const client = new StompJs.Client({
    webSocketFactory: () => {
      const sock = new SockJS(`${state.config.gateway}/ws/notifications`, null, options);
      sock.addEventListener('open', () => { $('transport-in-use').textContent = sock.transport; });
      return sock;
    },
    // A fresh one-time ticket for every (re)connect, bought with the user's JWT.
    beforeConnect: async () => {
      try {
        const { ticket } = await api('POST', '/ws-ticket');
        client.connectHeaders = { 'X-WS-Ticket': ticket };
      } catch (err) {
        log(`no ticket: ${err.message}`);
        client.connectHeaders = {};
      }
    },
    reconnectDelay: 2000,
    heartbeatIncoming: 10000,
    heartbeatOutgoing: 10000,
    debug: () => {},
  });
  client.onConnect = () => {
    if (state.client !== client) return;
    setStatus('connected');
    // Recover what arrived while away: everything newer than the newest id held.
    const recovery = state.lastId === null ? {} : { 'last-id': String(state.lastId) };
    client.subscribe(`/user/${user}/queue/notifications`, onNotification, recovery);
    client.subscribe(`/user/${user}/queue/notification-state`, onStateEvent);
    client.subscribe('/topic/timedeals', onTimeDeal);
    log(`connected over ${$('transport-in-use').textContent}${recovery['last-id'] ? `, recovering after #${recovery['last-id']}` : ''}`);
  };
  client.onWebSocketClose = () => {
    if (state.client === client) setStatus(client.active ? 'reconnecting' : 'disconnected');
  };
  client.onStompError = (frame) => log(`STOMP ERROR: ${frame.headers.message}`);
  setStatus('connecting');
  client.activate();
  state.client = client;
}

async function disconnect() {
  const client = state.client;
  state.client = null;
  if (client) await client.deactivate();
  setStatus('disconnected');
  $('transport-in-use').textContent = '—';
}

// ---- the user, the transport, the sample buttons ----------------------------------------

function pageUrl() {
  const query = new URLSearchParams({ user: state.user });
  if (state.transport !== 'auto') query.set('transport', state.transport);
  return `${location.pathname}?${query}`;
}

async function openUser(user) {
  state.generation += 1;
  await disconnect();
  Object.assign(state, { user, token: null, tokenExpiresAt: 0, lastId: null, nextCursor: undefined });
  localStorage.setItem('devstack-user', user);
  history.replaceState(null, '', pageUrl());
  $('user').value = user;
  $('second-tab').href = pageUrl();
  $('inbox').replaceChildren();
  $('timedeal').hidden = true;
  setBadge(0);
  try {
    setBadge(await api('GET', '/unread/count'));
  } catch (err) {
    log(`unread count failed: ${err.message}`);
  }
  await loadMore();
  // Held nothing? Recover from the start, so nothing sent meanwhile is missed.
  if (state.lastId === null) state.lastId = 0;
  connect();
}

async function send(topic, button) {
  button.disabled = true;
  try {
    const result = await devPost('/dev/produce', { topic, userId: state.user });
    log(`produced ${result.produced.map((p) => `${p.count} to ${p.topic}`).join(', ')}`);
  } catch (err) {
    log(`produce failed: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

async function main() {
  state.config = await (await fetch('/dev/config')).json();
  const buttons = $('sample-buttons');
  for (const { topic, type } of state.config.topics) {
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.topic = topic;
    button.innerHTML = '<span></span> <small></small>';
    button.firstChild.textContent = topic;
    button.lastChild.textContent = type === 'TIMEDEAL_STARTED' ? 'banner for everyone' : type;
    button.addEventListener('click', () => send(topic, button));
    buttons.append(button);
  }
  $('send-all').addEventListener('click', (e) => send('all', e.currentTarget));
  $('read-all').addEventListener('click', readAll);
  $('more').addEventListener('click', loadMore);
  $('timedeal-close').addEventListener('click', () => { $('timedeal').hidden = true; });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.nextCursor) loadMore();
  }).observe($('sentinel'));
  $('transport').value = state.transport;
  $('transport').addEventListener('change', async () => {
    state.transport = $('transport').value;
    history.replaceState(null, '', pageUrl());
    $('second-tab').href = pageUrl();
    await disconnect();
    connect();
  });
  $('user-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const user = $('user').value.trim();
    if (user) openUser(user);
  });
  await openUser(params.get('user') || localStorage.getItem('devstack-user') || 'user-1');
}

main().catch((err) => log(`start failed: ${err.message}`));
