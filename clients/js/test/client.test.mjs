// The connection (SPEC 14, 3): requests, backoff, reconnects, auth in an `auth` frame,
// errors in the connect path, keepalive. In Node, against a real switchyard node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Switchyard, backoff } from '../src/index.js';
import { startNode, startProxy, eventually, next, freePort, recordingWebSocket } from '../../../tests/jskit/index.mjs';

const opts = (extra = {}) => ({ websocket: WebSocket, minReconnectDelay: 50, maxReconnectDelay: 400, timeout: 2000, ...extra });

// Nothing the SDK does may end in an unhandled rejection (SPEC 14: errors go through
// `error` / `disconnected`). Installing the listener keeps Node from exiting on one,
// so every test below checks this list instead.
const unhandled = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

test('request ids, replies, error codes and timeouts', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const proxy = await startProxy(node.port);
  t.after(() => proxy.stop());
  const client = new Switchyard(`ws://127.0.0.1:${proxy.port}/ws`, opts({ token: node.token('alice'), timeout: 600 }));
  t.after(() => client.disconnect());
  client.connect();
  const hello = await next(client, 'connected');
  assert.equal(hello.user_id, 'alice');
  const ok = client.subscribe('public:news');
  await ok.ready();
  const [p1, p2] = await Promise.all([ok.presence().catch((e) => e), ok.history().catch((e) => e)]);
  assert.equal(p1.code, 'forbidden', 'presence is off in public: and the code is the server\'s');
  assert.equal(p2.code, 'forbidden');
  const denied = client.subscribe('user:bob');
  await assert.rejects(denied.ready(), (e) => e.code === 'forbidden');
  await assert.rejects(ok.publish('shout', {}), (e) => e.code === 'forbidden');
  await assert.rejects(ok.publish('subscribe', {}), (e) => e.code === 'reserved_type', 'a reserved name is never sent as a publish');
  proxy.freeze();
  await assert.rejects(ok.presence(), (e) => e.code === 'timeout', 'no reply within timeout');
});

test('backoff: full jitter between minReconnectDelay and an exponential ceiling, capped', () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(20000, 500 * 2 ** (attempt + 1));
    assert.equal(backoff(attempt, 500, 20000, () => 0), 500, 'never below the minimum');
    assert.equal(backoff(attempt, 500, 20000, () => 0.999999), Math.floor(500 + 0.999999 * (ceiling - 500)));
    for (let i = 0; i < 100; i++) {
      const d = backoff(attempt, 500, 20000);
      assert.ok(d >= 500 && d <= ceiling, `${d} within [500, ${ceiling}]`);
    }
  }
  assert.equal(backoff(40, 500, 20000, () => 0.999999), Math.floor(500 + 0.999999 * 19500), 'capped at max');
  assert.equal(backoff(3, 800, 300, () => 0.5), 300, 'a minimum above the maximum is the maximum');
  const draws = new Set(Array.from({ length: 50 }, () => backoff(6, 500, 20000)));
  assert.ok(draws.size > 40, 'jittered');
});

test('reconnect attempts are never closer than minReconnectDelay', async () => {
  const port = await freePort(); // nobody listens: every attempt fails at once
  const wire = recordingWebSocket(WebSocket);
  const at = [];
  class Timed extends wire.WebSocket {
    constructor(...args) {
      at.push(performance.now());
      super(...args);
    }
  }
  const client = new Switchyard(`ws://127.0.0.1:${port}/ws`, opts({ websocket: Timed, minReconnectDelay: 150, maxReconnectDelay: 300 }));
  client.connect();
  await eventually('five attempts', () => at.length >= 5);
  client.disconnect();
  for (let i = 1; i < at.length; i++) {
    // Timers may fire a little early relative to performance.now(); 2 ms of slack.
    assert.ok(at[i] - at[i - 1] >= 148, `attempt ${i} came ${Math.round(at[i] - at[i - 1])} ms after the previous one`);
  }
});

test('backoff grows while the node is down and resets once a connection stays up', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('b'), stableAfter: 300 }));
  t.after(() => client.disconnect());
  client.connect();
  await next(client, 'connected');
  await eventually('the connection to count as stable', () => client._attempt === 0);
  node.kill();
  await eventually('several failed attempts', () => client._attempt >= 3);
  await node.start();
  await eventually('reconnected', () => client.state === 'connected');
  await eventually('the backoff reset after staying up', () => client._attempt === 0);
});

test('no reconnect after reconnect: false', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('banned') }));
  t.after(() => client.disconnect());
  const states = [];
  client.on('state', ({ state }) => states.push(state));
  client.connect();
  await next(client, 'connected');
  const gone = next(client, 'disconnected');
  await node.api('/api/disconnect', { user_id: 'banned' });
  const d = await gone;
  assert.deepEqual([d.code, d.reconnect], [4003, false]);
  // An absence check: nothing may happen; 20 backoff periods of silence prove it.
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(client.state, 'disconnected');
  assert.deepEqual(states, ['connecting', 'connected', 'disconnected']);
});

test('state changes: one event per change with the previous state; state is read-only', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('s') }));
  t.after(() => client.disconnect());
  const seen = [];
  client.on('state', (e) => seen.push(e));
  client.connect();
  await next(client, 'connected');
  node.kill();
  await eventually('reconnecting', () => seen.length >= 4);
  client.disconnect();
  assert.deepEqual(seen.slice(0, 4), [
    { state: 'connecting', previous: 'disconnected' },
    { state: 'connected', previous: 'connecting' },
    { state: 'disconnected', previous: 'connected' },
    { state: 'connecting', previous: 'disconnected' },
  ]);
  for (let i = 1; i < seen.length; i++) assert.equal(seen[i].previous, seen[i - 1].state, 'no change is skipped');
  assert.throws(() => {
    client.state = 'connected';
  }, TypeError);
});

test('tokens travel in an auth frame, never in the URL; connected only after auth_success', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const proxy = await startProxy(node.port);
  t.after(() => proxy.stop());
  const token = node.token('alice');
  const wire = recordingWebSocket(WebSocket);
  const client = new Switchyard(`ws://127.0.0.1:${proxy.port}/ws`, opts({ token, websocket: wire.WebSocket }));
  t.after(() => client.disconnect());
  let seenAtConnected;
  client.on('connected', () => {
    seenAtConnected = wire.connections[0].received.map((f) => f.type);
  });
  client.connect();
  const hello = await next(client, 'connected');
  assert.equal(hello.user_id, 'alice', 'the token authenticated the connection');
  assert.equal(wire.urls[0], `ws://127.0.0.1:${proxy.port}/ws`, 'the URL is the one given, untouched');
  assert.ok(!/token=|resume=/.test(proxy.requestLines[0]), `request line: ${proxy.requestLines[0]}`);
  assert.ok(!proxy.requestLines[0].includes(token));
  const [auth] = wire.connections[0].sent;
  assert.equal(auth.type, 'auth', 'the first frame is auth');
  assert.equal(typeof auth.id, 'string');
  assert.deepEqual(auth.payload, { token });
  assert.deepEqual(seenAtConnected, ['auth_success'], 'connected once the reply arrived');
  assert.equal(wire.connections[0].received[0].id, auth.id);
});

test('on an anonymous node, a token still makes a user: the unsolicited anonymous auth_success is not the connection', async (t) => {
  const node = await startNode('auth.allow_anonymous = true');
  t.after(() => node.stop());
  const wire = recordingWebSocket(WebSocket);
  const client = new Switchyard(node.ws, opts({ token: node.token('carol'), websocket: wire.WebSocket }));
  t.after(() => client.disconnect());
  const connected = [];
  client.on('connected', (s) => connected.push(s));
  client.connect();
  await eventually('connected', () => client.state === 'connected');
  assert.equal(connected.length, 1);
  assert.equal(connected[0].user_id, 'carol');
  assert.equal(client.session.user_id, 'carol');
  const sub = client.subscribe('user:carol');
  await sub.ready();
});

test('an anonymous session keeps its id across reconnects, with resume in the auth frame', async (t) => {
  const node = await startNode('auth.allow_anonymous = true');
  t.after(() => node.stop());
  const wire = recordingWebSocket(WebSocket);
  const client = new Switchyard(node.ws, opts({ websocket: wire.WebSocket }));
  t.after(() => client.disconnect());
  client.connect();
  const first = await next(client, 'connected');
  assert.equal(first.anonymous, true);
  assert.equal(wire.connections[0].sent.filter((f) => f.type === 'auth').length, 0, 'nothing to present the first time');
  await node.api('/api/disconnect', { session_id: first.session_id, code: 4010 });
  const again = await next(client, 'connected');
  assert.equal(again.session_id, first.session_id);
  assert.notEqual(again.conn_id, first.conn_id);
  assert.equal(wire.urls[1], node.ws, 'no resume in the URL');
  assert.deepEqual(wire.connections[1].sent[0].payload, { resume: first.resume });
  assert.equal(client.session.session_id, first.session_id);
});

test('getToken is called before every connect and after 4011; the new token goes in the auth frame', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const tokens = [];
  const getToken = async () => {
    tokens.push(node.token('t', '--ttl', tokens.length === 0 ? '1s' : '1h'));
    return tokens.at(-1);
  };
  const wire = recordingWebSocket(WebSocket);
  const client = new Switchyard(node.ws, opts({ getToken, websocket: wire.WebSocket }));
  t.after(() => client.disconnect());
  client.connect();
  await next(client, 'connected');
  const d = await next(client, 'disconnected', 5000);
  assert.deepEqual([d.code, d.reason, d.reconnect], [4011, 'token_expired', true]);
  const again = await next(client, 'connected');
  assert.equal(again.user_id, 't');
  assert.equal(tokens.length, 2);
  assert.deepEqual(wire.connections.map((c) => c.sent[0].payload.token), tokens);
  assert.deepEqual(wire.urls, [node.ws, node.ws]);
});

test('auth_error: reported, closed with 4001, no reconnect', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const wire = recordingWebSocket(WebSocket);
  const client = new Switchyard(node.ws, opts({ token: 'forged.token.value', websocket: wire.WebSocket }));
  t.after(() => client.disconnect());
  const errors = [];
  client.on('error', (e) => errors.push(e));
  client.connect();
  const d = await next(client, 'disconnected');
  assert.deepEqual([d.code, d.reconnect], [4001, false]);
  assert.equal(errors[0]?.code, 'unauthorized');
  // An absence check: six times the longest first retry delay (100 ms) without a second attempt.
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(wire.urls.length, 1);
  assert.equal(client.state, 'disconnected');
  assert.deepEqual(unhandled, []);
});

test('getToken failing is an error event, then the client retries with backoff', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  let calls = 0;
  const getToken = async () => {
    calls += 1;
    if (calls === 1) throw new Error('auth backend down');
    if (calls === 2) return Promise.reject(new Error('still down'));
    return node.token('g');
  };
  const client = new Switchyard(node.ws, opts({ getToken }));
  t.after(() => client.disconnect());
  const errors = [];
  client.on('error', (e) => errors.push(e));
  client.connect();
  const hello = await next(client, 'connected');
  assert.equal(hello.user_id, 'g');
  assert.equal(calls, 3);
  assert.deepEqual(errors.map((e) => [e.code, e.cause?.message]), [
    ['connect_failed', 'auth backend down'],
    ['connect_failed', 'still down'],
  ]);
  assert.deepEqual(unhandled, []);
});

test('a WebSocket constructor that throws (bad URL) is an error event; the client keeps retrying', async () => {
  const wire = recordingWebSocket(WebSocket);
  const client = new Switchyard('not a url', opts({ websocket: wire.WebSocket }));
  const errors = [];
  client.on('error', (e) => errors.push(e));
  client.connect();
  await eventually('three attempts', () => wire.urls.length >= 3);
  client.disconnect();
  assert.ok(errors.length >= 2);
  assert.equal(errors[0].code, 'connect_failed');
  assert.ok(errors[0].cause instanceof Error);
  assert.equal(client.state, 'disconnected');
  assert.deepEqual(unhandled, []);
});

test('no WebSocket implementation at all is an error event, not an unhandled rejection', async (t) => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  delete globalThis.WebSocket; // Node 20 has none; Node 22 has one.
  t.after(() => saved && Object.defineProperty(globalThis, 'WebSocket', saved));
  const client = new Switchyard('ws://127.0.0.1:1/ws', { minReconnectDelay: 20, maxReconnectDelay: 40 });
  const err = next(client, 'error', 2000);
  client.connect();
  assert.equal((await err).code, 'connect_failed');
  client.disconnect();
  // A rejection, if there was one, is reported once the microtask queue drained.
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(unhandled, []);
});

test('keepalive detects a dead socket and reconnects', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const proxy = await startProxy(node.port);
  t.after(() => proxy.stop());
  const client = new Switchyard(`ws://127.0.0.1:${proxy.port}/ws`, opts({ token: node.token('k'), pingInterval: 300, timeout: 500 }));
  t.after(() => client.disconnect());
  client.connect();
  const first = await next(client, 'connected');
  proxy.freeze();
  const d = await next(client, 'disconnected', 5000);
  assert.equal(d.code, 4000);
  assert.equal(d.reconnect, true);
  const second = await next(client, 'connected', 5000);
  assert.notEqual(second.conn_id, first.conn_id);
});

test('requests made while disconnected wait for the connection', async (t) => {
  const node = await startNode(`[namespaces.room]\nsubscribe = "any"\npublish = "subscribers"\nhistory_size = 10\nhistory_ttl = "1h"`);
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('q') }));
  t.after(() => client.disconnect());
  const sub = client.subscribe('room:1');
  const got = [];
  sub.on('publication', (p) => got.push(p.payload));
  const ack = sub.publish('msg', { text: 'queued' });
  client.connect();
  assert.deepEqual(await ack, { offset: 1 });
  await eventually('own publication', () => got.length === 1);
  assert.equal(client.subscribe('room:1'), sub, 'same object for the same channel');
  const port = await freePort();
  const nowhere = new Switchyard(`ws://127.0.0.1:${port}/ws`, opts({ timeout: 300 }));
  const waiting = nowhere.subscribe('room:1').publish('msg', {});
  nowhere.connect();
  await assert.rejects(waiting, (e) => e.code === 'timeout');
  nowhere.disconnect();
});
