// The portal front end's inbox flow with the real client libraries, for
// tests/tests/inbox_flow.rs: a WebSocket ticket over REST, STOMP over SockJS with that
// ticket, a subscription with a receipt, the inbox and unread count over REST, one live
// notification, then marking it read and the count again. Prints one JSON line per step
// ({"step": ..., ...}); the test publishes the notification after the "ready" line.
// Usage: node inbox_flow.mjs <http-base> <jwt> <user-id>
import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import WebSocket from 'ws';

globalThis.WebSocket = WebSocket;

const [base, jwt, userId] = process.argv.slice(2);
const api = base + '/api/v1/notifications';
const auth = { Authorization: 'Bearer ' + jwt };

function report(step, fields) {
  console.log(JSON.stringify({ step, ...fields }));
}

function fail(step, error) {
  report(step, { error: String(error && error.stack ? error.stack : error) });
  process.exit(2);
}

// One REST call; its status, content type and parsed body.
async function call(method, path) {
  const response = await fetch(api + path, { method, headers: auth });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: response.status, contentType: response.headers.get('content-type'), body };
}

setTimeout(() => {
  report('timeout', {});
  process.exit(4);
}, 25000);

// 1) The ticket.
const ticket = await call('POST', '/ws-ticket').catch((e) => fail('ticket', e));
report('ticket', ticket);
if (ticket.status !== 200) process.exit(2);

// 2) STOMP over SockJS, authenticated by the ticket.
const client = new Client({
  webSocketFactory: () => new SockJS(base + '/ws/notifications'),
  connectHeaders: { 'X-WS-Ticket': ticket.body.data.ticket },
  heartbeatIncoming: 10000,
  heartbeatOutgoing: 10000,
  reconnectDelay: 0,
  debug: () => {},
});

client.onStompError = (frame) => {
  report('stomp-error', { message: frame.headers.message });
  process.exit(3);
};

let received = false;
client.onConnect = (connected) => {
  report('connected', { userName: connected.headers['user-name'] ?? null });
  // 3) The user's queue, confirmed by a receipt.
  client.watchForReceipt('inbox-subscribed', () => {
    report('subscribed', {});
    loadInbox().catch((e) => fail('inbox', e));
  });
  client.subscribe(`/user/${userId}/queue/notifications`, (message) => {
    report('message', {
      body: message.body,
      destination: message.headers.destination,
      contentType: message.headers['content-type'],
    });
    // Only one notification is published: a second message shows up as a second line.
    if (!received) afterMessage(message.body).catch((e) => fail('read', e));
    received = true;
  }, { receipt: 'inbox-subscribed' });
};

// 4) The inbox and the unread count, as the page shows them when it opens.
async function loadInbox() {
  report('inbox', await call('GET', '?page=1&size=20'));
  report('count', await call('GET', '/unread/count'));
  report('ready', {});
}

// 5) to 7): the count with the new notification, the read mark, the count after it.
async function afterMessage(body) {
  const id = JSON.parse(body).id;
  report('count', await call('GET', '/unread/count'));
  report('read', await call('PUT', `/${id}/read`));
  report('count', await call('GET', '/unread/count'));
  await client.deactivate();
  report('done', {});
  process.exit(0);
}

client.activate();
