// A real client of a running devstack: gets a JWT from its dev-only /dev/token, connects
// to the gateway with @stomp/stompjs over sockjs-client, subscribes to the user's queue with
// a receipt (prints READY), prints MESSAGE <body> for each notification, and DONE after
// <count> of them (TIMEOUT if they do not all come).
// Usage: node receive.mjs <devstack page URL> <user> <count> <sockjs transport>
import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';

const [page, user, countArg, transport] = process.argv.slice(2);
const count = Number(countArg);
const TIMEOUT_MS = 150000;

const config = await (await fetch(new URL('/dev/config', page))).json();
const minted = await (await fetch(new URL('/dev/token', page), {
  method: 'POST',
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ userId: user }),
})).json();

let received = 0;
const client = new Client({
  webSocketFactory: () => new SockJS(`${config.gateway}/ws/notifications`, null, { transports: [transport] }),
  connectHeaders: { Authorization: `Bearer ${minted.token}` },
  reconnectDelay: 0,
  debug: () => {},
});
client.onConnect = () => {
  client.watchForReceipt('subscribed', () => console.log('READY'));
  client.subscribe(`/user/${user}/queue/notifications`, (message) => {
    console.log(`MESSAGE ${message.body}`);
    received += 1;
    if (received === count) {
      console.log('DONE');
      client.deactivate().then(() => process.exit(0));
    }
  }, { receipt: 'subscribed' });
};
client.onStompError = (frame) => {
  console.log(`ERROR ${frame.headers.message}`);
  process.exit(3);
};
setTimeout(() => {
  console.log(`TIMEOUT after ${received}`);
  process.exit(4);
}, TIMEOUT_MS);
client.activate();
