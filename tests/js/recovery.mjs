// A client that never misses a notification: @stomp/stompjs over sockjs-client, keeping the
// newest notification id it holds and subscribing with `last-id` when it (re)connects, so
// the gateway sends what it missed before going live. Driven by the test over stdin:
// `connect`, `disconnect`, `exit`. Prints SUBSCRIBED (the subscription's receipt),
// MESSAGE <id> [truncated], DISCONNECTED, ERROR <message>.
// Usage: node recovery.mjs <http-base> <transport> <user> <jwt>
import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import WebSocket from 'ws';
import readline from 'node:readline';

globalThis.WebSocket = WebSocket;

const [base, transport, user, jwt] = process.argv.slice(2);
let lastId = null;
const client = new Client({
  connectHeaders: { Authorization: `Bearer ${jwt}` },
  webSocketFactory: () => new SockJS(base + '/ws/notifications', null, { transports: [transport] }),
  reconnectDelay: 0,
  debug: () => {},
});
client.onConnect = () => {
  const headers = { receipt: 'subscribed' };
  if (lastId !== null) headers['last-id'] = String(lastId);
  client.watchForReceipt('subscribed', () => console.log('SUBSCRIBED'));
  client.subscribe(`/user/${user}/queue/notifications`, (message) => {
    const id = JSON.parse(message.body).id;
    lastId = lastId === null ? id : Math.max(lastId, id);
    const truncated = message.headers['recovery-truncated'] === 'true' ? ' truncated' : '';
    console.log(`MESSAGE ${id}${truncated}`);
  }, headers);
};
client.onStompError = (frame) => console.log('ERROR ' + frame.headers.message);

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (command) => {
  if (command === 'connect') client.activate();
  if (command === 'disconnect') {
    await client.deactivate();
    console.log('DISCONNECTED');
  }
  if (command === 'exit') {
    await client.deactivate();
    process.exit(0);
  }
});
setTimeout(() => {
  console.log('TIMEOUT');
  process.exit(4);
}, 60000);
