// The protocol's reserved type names (SPEC 2) live in src/protocol.js, in a shape a
// Rust test can read with a regex; a frame of a reserved type is never a publication;
// and the SDK's sources keep the rules the README states.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket, { WebSocketServer } from 'ws';
import { Switchyard } from '../src/index.js';
import { eventually } from '../../../tests/jskit/index.mjs';

const src = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');

const SERVER = [
  'auth_success', 'auth_error', 'subscribed', 'unsubscribed', 'pong', 'presence', 'history', 'ack', 'error',
  'join', 'leave', 'disconnect', 'read', 'unread', 'snapshot', 'state', 'presence_count',
];
const CLIENT = ['auth', 'subscribe', 'unsubscribe', 'ping', 'presence', 'history', 'mark_read', 'received', 'unread', 'state'];

/** What a Rust test does: find the array by name, then every string literal in it. */
function parse(text, name) {
  const m = new RegExp(`export const ${name} = \\[([^\\]]*)\\];`).exec(text);
  assert.ok(m, `${name} is declared as a plain array`);
  return [...m[1].matchAll(/['"]([a-z_]+)['"]/g)].map((x) => x[1]);
}

test('protocol.js exports SERVER_TYPES and CLIENT_TYPES, readable with a regex', async () => {
  const protocol = await import('../src/protocol.js');
  assert.deepEqual(protocol.SERVER_TYPES, SERVER);
  assert.deepEqual(protocol.CLIENT_TYPES, CLIENT);
  const text = readFileSync(join(src, 'protocol.js'), 'utf8');
  assert.deepEqual(parse(text, 'SERVER_TYPES'), SERVER);
  assert.deepEqual(parse(text, 'CLIENT_TYPES'), CLIENT);
});

/**
 * A scripted server: answers `auth` and `subscribe`, then sends `frames` (each with
 * the subscribed channel) in one burst. For frames that a node of this version never
 * sends with a channel (sections 15-16), which the SDK must still not mistake for
 * publications.
 */
async function scripted(frames) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  const hello = (id) => JSON.stringify({ type: 'auth_success', id, payload: { user_id: null, session_id: 's', conn_id: 'c', node: 'n', channels: [], anonymous: true } });
  wss.on('connection', (ws) => {
    ws.send(hello()); // as an anonymous node does, before any auth
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data));
      if (msg.type === 'auth') {
        ws.send(hello(msg.id));
      } else if (msg.type === 'subscribe') {
        const channel = msg.payload.channel;
        ws.send(JSON.stringify({ type: 'subscribed', id: msg.id, payload: { channel } }));
        for (const f of frames) ws.send(JSON.stringify({ channel, ...f }));
      }
    });
  });
  return { url: `ws://127.0.0.1:${wss.address().port}/ws`, close: () => wss.close() };
}

test('frames of a reserved type are never publications, even with a channel', async (t) => {
  const reserved = SERVER.filter((type) => type !== 'disconnect').map((type) => ({ type, payload: {} }));
  const server = await scripted([...reserved, { type: 'order_update', payload: { i: 1 } }]);
  t.after(() => server.close());
  const client = new Switchyard(server.url, { websocket: WebSocket, token: 't', timeout: 2000 });
  t.after(() => client.disconnect());
  const onClient = [];
  client.on('publication', (p) => onClient.push(p.type));
  client.connect();
  const sub = client.subscribe('room:1');
  const onSub = [];
  sub.on('publication', (p) => onSub.push(p.type));
  await eventually('the real publication', () => onSub.length > 0);
  assert.deepEqual(onSub, ['order_update']);
  assert.deepEqual(onClient, []);
});

test('the SDK sources: state changes in one method each, files under 600 lines, no imports from outside src', () => {
  const files = readdirSync(src).filter((f) => f.endsWith('.js'));
  for (const f of files) {
    const text = readFileSync(join(src, f), 'utf8');
    assert.ok(text.split('\n').length <= 600, `${f} is under 600 lines`);
    for (const m of text.matchAll(/from\s+'([^']+)'/g)) {
      assert.ok(m[1].startsWith('./') || (f === 'react.js' && m[1] === 'react'), `${f} imports only its siblings (${m[1]})`);
    }
  }
  for (const [file, method] of [['client.js', '#setState'], ['subscription.js', '_setState']]) {
    const text = readFileSync(join(src, file), 'utf8');
    // `x.state = ` or `this.#state = ` (the field's initial value is not a change).
    const assignments = [...text.matchAll(/\.#?state\s*=(?!=)/g)];
    assert.equal(assignments.length, 1, `${file}: one assignment of the state`);
    const at = assignments[0].index;
    const start = text.lastIndexOf(`${method}(`, at);
    assert.ok(start >= 0 && !text.slice(start, at).includes('\n  }\n'), `${file}: the state is assigned inside ${method}`);
  }
  const client = readFileSync(join(src, 'client.js'), 'utf8');
  assert.ok(!/\bsub\.state\s*=(?!=)|\bs\.state\s*=(?!=)/.test(client), 'the client never assigns a subscription\'s state');
});
