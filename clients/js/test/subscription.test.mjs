// Subscriptions (SPEC 14): the state machine, recovery across reconnects, the order of
// `subscribed` and replayed publications, duplicates. In Node, against a real node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Switchyard } from '../src/index.js';
import { startNode, startRedis, eventually, next } from '../../../tests/jskit/index.mjs';

const opts = (extra = {}) => ({ websocket: WebSocket, minReconnectDelay: 50, maxReconnectDelay: 400, timeout: 2000, ...extra });

const unhandled = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

/** Every event of a subscription in one list, in the order the application saw them. */
function journal(sub) {
  const events = [];
  sub.on('subscribed', (s) => events.push(`subscribed:${s.recovered === true ? 'recovered' : 'fresh'}`));
  sub.on('publication', (p) => events.push(`pub:${p.payload.i}`));
  return events;
}

test('subscribed fires before the publications its subscribe replays, in the order the frames came', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('o') }));
  t.after(() => client.disconnect());
  client.connect();
  const sub = client.subscribe('order:seq', { token: node.token('o', '--channel', 'order:seq') });
  const events = journal(sub);
  await sub.ready();
  await node.publish('order:seq', 'order_update', { i: 1 });
  await eventually('the first publication', () => events.length === 2);
  client.disconnect();
  for (const i of [2, 3, 4]) await node.publish('order:seq', 'order_update', { i });
  client.connect();
  await eventually('three replayed publications', () => events.length === 6);
  assert.deepEqual(events, ['subscribed:fresh', 'pub:1', 'subscribed:recovered', 'pub:2', 'pub:3', 'pub:4']);
  assert.equal(sub.offset, 4);
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
  const events = journal(sub);
  const subscribed = [];
  sub.on('subscribed', (s) => subscribed.push(s));
  await sub.ready();
  for (const i of [1, 2, 3]) await node.publish('order:1', 'order_update', { i });
  await eventually('three live publications', () => events.length === 4);
  node.kill();
  await eventually('the client to notice', () => client.state !== 'connected');
  for (const i of [4, 5, 6]) {
    redis.cli('FCALL', 'switchyard_publish', '1', 'switchyard:{order:1}', JSON.stringify({ type: 'order_update', payload: { i } }), '100', '86400');
  }
  await node.start();
  await eventually('resubscribed with since', () => subscribed.length === 2);
  assert.equal(subscribed[1].recovered, true);
  await eventually('missed publications', () => events.length === 8);
  await node.publish('order:1', 'order_update', { i: 7 });
  await eventually('live again', () => events.length === 9);
  assert.deepEqual(events, [
    'subscribed:fresh', 'pub:1', 'pub:2', 'pub:3',
    'subscribed:recovered', 'pub:4', 'pub:5', 'pub:6', 'pub:7',
  ]);
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

test('the subscription state machine: one state event per change, driven by the client', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('m') }));
  t.after(() => client.disconnect());
  const sub = client.subscribe('order:m', { token: node.token('m', '--channel', 'order:m') });
  assert.equal(sub.state, 'subscribing', 'a new subscription waits for the connection');
  const seen = [];
  sub.on('state', (e) => seen.push(e));
  client.connect();
  await sub.ready();
  node.kill();
  await eventually('subscribing again', () => sub.state === 'subscribing');
  await node.start();
  await eventually('subscribed again', () => sub.state === 'subscribed');
  sub.unsubscribe();
  assert.deepEqual(seen, [
    { state: 'subscribed', previous: 'subscribing' },
    { state: 'subscribing', previous: 'subscribed' },
    { state: 'subscribed', previous: 'subscribing' },
    { state: 'unsubscribed', previous: 'subscribed' },
  ]);
  assert.throws(() => {
    sub.state = 'subscribed';
  }, TypeError, 'only the subscription changes its state');
  const refused = client.subscribe('user:someone-else');
  const refusedStates = [];
  refused.on('state', ({ state }) => refusedStates.push(state));
  await assert.rejects(refused.ready(), (e) => e.code === 'forbidden');
  assert.deepEqual(refusedStates, ['unsubscribed']);
  assert.notEqual(client.subscribe('user:someone-else'), refused, 'a refused subscription is forgotten');
});

test('a subscription token function that fails is an error event and is retried, never an unhandled rejection', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('f') }));
  t.after(() => client.disconnect());
  let calls = 0;
  const token = async () => {
    calls += 1;
    if (calls === 1) throw new Error('grant service down');
    return node.token('f', '--channel', 'order:f');
  };
  const sub = client.subscribe('order:f', { token });
  const errors = [];
  sub.on('error', (e) => errors.push(e));
  client.connect();
  await sub.ready();
  assert.equal(calls, 2);
  assert.deepEqual(errors.map((e) => [e.code, e.cause?.message]), [['subscribe_failed', 'grant service down']]);
  assert.deepEqual(unhandled, []);
});

test('the server ending a subscription (/api/unsubscribe) moves it to unsubscribed', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const client = new Switchyard(node.ws, opts({ token: node.token('u') }));
  t.after(() => client.disconnect());
  client.connect();
  const sub = client.subscribe('public:u');
  await sub.ready();
  const ended = next(sub, 'unsubscribed');
  const state = next(sub, 'state');
  await node.api('/api/unsubscribe', { user_id: 'u', channel: 'public:u' });
  assert.deepEqual(await ended, { channel: 'public:u' });
  assert.deepEqual(await state, { state: 'unsubscribed', previous: 'subscribed' });
  assert.equal(sub.state, 'unsubscribed');
});
