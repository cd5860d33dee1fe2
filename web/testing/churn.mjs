// Connection churn against a running signalling server in development mode, for memory
// measurements (docs/architecture.md, "Signalling memory under connection churn"):
// N clients take a /dev/token, connect over WebSocket and join rooms of ten, then print
// "ready" and wait to be killed, so that the server sees them all vanish at once.
//
//   node web/testing/churn.mjs http://127.0.0.1:8080 200 [label]
import { io } from 'socket.io-client';

const [url = 'http://127.0.0.1:8080', countText = '200', label = 'churn'] = process.argv.slice(2);
const count = Number(countText);

async function client(i) {
  const room = `${label}-${Math.floor(i / 10)}`;
  const response = await fetch(`${url}/dev/token?room=${room}&name=c${i}`);
  const body = await response.text();
  let token = body;
  try {
    token = JSON.parse(body).token ?? body;
  } catch {
    // A bare token.
  }
  const socket = io(url, { auth: { token }, transports: ['websocket'], reconnection: false });
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  const joined = await socket.timeout(15000).emitWithAck('join-room', { roomId: room });
  if (joined?.error) throw new Error(`join-room: ${joined.error.code} ${joined.error.message}`);
  return socket;
}

const sockets = [];
for (let i = 0; i < count; i += 20) {
  sockets.push(...(await Promise.all(Array.from({ length: Math.min(20, count - i) }, (_, j) => client(i + j)))));
}
console.log(`ready ${sockets.length}`);
setInterval(() => {}, 1 << 30);
