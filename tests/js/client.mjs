// A real browser-library client for the integration tests: @stomp/stompjs over
// sockjs-client (or a raw WebSocket). Prints READY once subscribed, then the first
// MESSAGE body, or ERROR <message>, and exits. With a count, it subscribes with a receipt,
// prints READY when the receipt arrives, and prints BURST <ids as JSON> after that many.
// Usage: node client.mjs <http-base> <raw|websocket|xhr-streaming|xhr-polling|eventsource>
//                        <header-name> <header-value> <destination> [count]
import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import WebSocket from 'ws';

globalThis.WebSocket = WebSocket;

const [base, transport, headerName, headerValue, destination, countArg] = process.argv.slice(2);
const count = countArg ? Number(countArg) : 0;
const connectHeaders = headerName ? { [headerName]: headerValue } : {};
const client = new Client({
  connectHeaders,
  heartbeatIncoming: 10000,
  heartbeatOutgoing: 10000,
  reconnectDelay: 0,
  debug: () => {},
});
if (transport === 'raw') {
  client.brokerURL = base.replace(/^http/, 'ws') + '/ws/notifications/websocket';
} else {
  client.webSocketFactory = () => new SockJS(base + '/ws/notifications', null, { transports: [transport] });
}
client.onConnect = () => {
  if (count > 0) {
    const ids = [];
    client.watchForReceipt('subscribed', () => console.log('READY'));
    client.subscribe(destination, (message) => {
      ids.push(JSON.parse(message.body).id);
      if (ids.length === count) {
        console.log('BURST ' + JSON.stringify(ids));
        client.deactivate().then(() => process.exit(0));
      }
    }, { receipt: 'subscribed' });
    return;
  }
  client.subscribe(destination, (message) => {
    console.log('MESSAGE ' + message.body);
    client.deactivate().then(() => process.exit(0));
  });
  console.log('READY');
};
client.onStompError = (frame) => {
  console.log('ERROR ' + frame.headers.message);
  process.exit(3);
};
setTimeout(() => {
  console.log('TIMEOUT');
  process.exit(4);
}, 20000);
client.activate();
