// A real client of a running devstack: gets a JWT from its dev-only /dev/token, connects
// to the gateway with @stomp/stompjs over sockjs-client, subscribes to /topic/timedeals and
// to the user's queue, each with a receipt (prints READY after both), prints MESSAGE <body>
// for each notification and TIMEDEAL <body> for each time deal, and DONE once <count>
// notifications and a time deal came (TIMEOUT if they do not).
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
let timeDeals = 0;
let receipts = 0;
const finishIfDone = () => {
  if (received === count && timeDeals > 0) {
    console.log('DONE');
    client.deactivate().then(() => process.exit(0));
  }
};
const client = new Client({
  webSocketFactory: () => new SockJS(`${config.gateway}/ws/notifications`, null, { transports: [transport] }),
  connectHeaders: { Authorization: `Bearer ${minted.token}` },
  reconnectDelay: 0,
  debug: () => {},
});
const subscribed = () => {
  receipts += 1;
  if (receipts === 2) console.log('READY');
};
client.onConnect = () => {
  client.watchForReceipt('deals', subscribed);
  client.subscribe('/topic/timedeals', (message) => {
    console.log(`TIMEDEAL ${message.body}`);
    timeDeals += 1;
    finishIfDone();
  }, { receipt: 'deals' });
  client.watchForReceipt('notifications', subscribed);
  client.subscribe(`/user/${user}/queue/notifications`, (message) => {
    console.log(`MESSAGE ${message.body}`);
    received += 1;
    finishIfDone();
  }, { receipt: 'notifications' });
};
client.onStompError = (frame) => {
  console.log(`ERROR ${frame.headers.message}`);
  process.exit(3);
};
setTimeout(() => {
  console.log(`TIMEOUT after ${received} notifications and ${timeDeals} time deals`);
  process.exit(4);
}, TIMEOUT_MS);
client.activate();
