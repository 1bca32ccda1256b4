// Every SPEC 14 behaviour of the SDK, in Node, against a real switchyard node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Switchyard, backoff } from '../src/index.js';
import { startNode, startRedis, startProxy, eventually, next, freePort } from '../../../tests/jskit/index.mjs';

const opts = (extra = {}) => ({ websocket: WebSocket, minReconnectDelay: 50, maxReconnectDelay: 400, timeout: 2000, ...extra });

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
  proxy.freeze();
  await assert.rejects(ok.presence(), (e) => e.code === 'timeout', 'no reply within timeout');
});

test('backoff: full jitter under an exponential ceiling, capped', () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(20000, 500 * 2 ** attempt);
    assert.equal(backoff(attempt, 500, 20000, () => 0), 0);
    assert.equal(backoff(attempt, 500, 20000, () => 0.999999), Math.floor(0.999999 * ceiling));
  }
  const draws = new Set(Array.from({ length: 50 }, () => backoff(6, 500, 20000)));
  assert.ok(draws.size > 40, 'jittered');
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

test('getToken is called before every connect and after 4011', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  let calls = 0;
  const getToken = async () => {
    calls += 1;
    return calls === 1 ? node.token('t', '--ttl', '1s') : node.token('t', '--ttl', '1h');
  };
  const client = new Switchyard(node.ws, opts({ getToken }));
  t.after(() => client.disconnect());
  client.connect();
  await next(client, 'connected');
  const d = await next(client, 'disconnected', 5000);
  assert.deepEqual([d.code, d.reason, d.reconnect], [4011, 'token_expired', true]);
  await next(client, 'connected');
  assert.equal(calls, 2);
});

test('after the node is killed and restarted on Redis: missed publications once, in order, recovered', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const node = await startNode(`broker = "redis"\nredis.url = "${redis.url}"`);
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('7') }));
  t.after(() => client.disconnect());
  client.connect();
  const sub = client.subscribe('order:1', { token: node.token('7', '--channel', 'order:1') });
  const seen = [];
  sub.on('publication', (p) => seen.push(p.payload.i));
  const subscribed = [];
  sub.on('subscribed', (s) => subscribed.push(s));
  await sub.ready();
  for (const i of [1, 2, 3]) await node.publish('order:1', 'order_update', { i });
  await eventually('three live publications', () => seen.length === 3);
  node.kill();
  await eventually('the client to notice', () => client.state !== 'connected');
  for (const i of [4, 5, 6]) {
    redis.cli('FCALL', 'switchyard_publish', '1', 'switchyard:{order:1}', JSON.stringify({ type: 'order_update', payload: { i } }), '100', '86400');
  }
  await node.start();
  await eventually('resubscribed with since', () => subscribed.length === 2);
  assert.equal(subscribed[1].recovered, true);
  await eventually('missed publications', () => seen.length === 6);
  await node.publish('order:1', 'order_update', { i: 7 });
  await eventually('live again', () => seen.length === 7);
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7]);
});

test('publications at or below the last delivered offset are dropped', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('d') }));
  t.after(() => client.disconnect());
  client.connect();
  const sub = client.subscribe('order:dup', { token: node.token('d', '--channel', 'order:dup') });
  const seen = [];
  sub.on('publication', (p) => seen.push(p.offset));
  await sub.ready();
  for (const i of [1, 2, 3]) await node.publish('order:dup', 'e', { i });
  await eventually('three', () => seen.length === 3);
  // The server replays 2 and 3 again (a subscribe with an older `since`).
  await client._request({
    type: 'subscribe',
    payload: { channel: 'order:dup', token: node.token('d', '--channel', 'order:dup'), since: { offset: 1, epoch: sub.epoch } },
  });
  await node.publish('order:dup', 'e', { i: 4 });
  await eventually('the fourth', () => seen.length >= 4);
  assert.deepEqual(seen, [1, 2, 3, 4], 'replayed duplicates dropped');
});

test('recovered: false is surfaced when history cannot fill the gap', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('r') }));
  t.after(() => client.disconnect());
  client.connect();
  const sub = client.subscribe('order:gone', { token: node.token('r', '--channel', 'order:gone') });
  const events = [];
  sub.on('subscribed', (s) => events.push(s));
  await sub.ready();
  await node.publish('order:gone', 'e', { i: 1 });
  await eventually('first', () => sub.offset === 1);
  node.kill(); // memory broker: the history dies with the node
  await node.start();
  await eventually('resubscribed', () => events.length === 2);
  assert.equal(events[1].recovered, false);
  assert.notEqual(events[1].epoch, events[0].epoch);
  assert.equal(sub.offset, 0, 'position restarts at the new history');
});

test('an anonymous session keeps its id across reconnects', async (t) => {
  const node = await startNode('auth.allow_anonymous = true');
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts());
  t.after(() => client.disconnect());
  client.connect();
  const first = await next(client, 'connected');
  assert.equal(first.anonymous, true);
  await node.api('/api/disconnect', { session_id: first.session_id, code: 4010 });
  const again = await next(client, 'connected');
  assert.equal(again.session_id, first.session_id);
  assert.notEqual(again.conn_id, first.conn_id);
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
