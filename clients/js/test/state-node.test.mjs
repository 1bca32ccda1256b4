// State channels, deltas, conflation and presence counts (SPEC 16, 19) with the SDK
// against a real node (SWITCHYARD_BIN) configured with the namespaces of realnode.mjs;
// `sub.values` must equal the node's state (GET /api/state) through changes, deletes,
// deltas, a lost connection and conflation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import WebSocket from 'ws';
import { startNode, startProxy, eventually, next, recordingWebSocket } from '../../../tests/jskit/index.mjs';
import { NAMESPACES, connectAs, setKey, deleteKey, serverValues, sorted, get } from './realnode.mjs';

const shoe = (qty, extra = {}) => ({ qty, sizes: [40, 41, 42, 43], name: 'Runner', price: { amount: 100, currency: 'EUR' }, ...extra });

/** Polls until `sub.values` equals the node's state of `channel`. */
async function converges(what, node, sub, keys) {
  let last;
  try {
    await eventually(what, async () => {
      last = [sorted(sub.values), await serverValues(node, sub.channel, keys)];
      return isDeepStrictEqual(last[0], last[1]);
    });
  } catch (e) {
    if (last) assert.deepEqual(last[0], last[1], e.message); // shows the difference
    throw e;
  }
}

test('a state channel with deltas: snapshot, changes, deletes and patches keep sub.values equal to the node', async (t) => {
  const node = await startNode(NAMESPACES);
  t.after(() => node.stop());
  for (const [key, qty] of [['sku1', 10], ['sku2', 5], ['sku3', 1]]) await setKey(node, 'stock:shoes', key, shoe(qty));
  const wire = recordingWebSocket(WebSocket);
  const client = connectAs(t, node, 's1', { websocket: wire.WebSocket });
  const sub = client.subscribe('stock:shoes');
  const snap = await next(sub, 'snapshot');
  assert.equal(snap.full, true);
  assert.deepEqual(snap.entries.map((e) => e.key), ['sku1', 'sku2', 'sku3'], 'entries in ascending offset order');
  assert.deepEqual(snap.entries.map((e) => e.offset), [1, 2, 3]);
  assert.deepEqual(sorted(sub.values), { sku1: shoe(10), sku2: shoe(5), sku3: shoe(1) });

  const pubs = [];
  sub.on('publication', (p) => pubs.push(p));
  await setKey(node, 'stock:shoes', 'sku1', shoe(9)); // a small change: a delta
  await setKey(node, 'stock:shoes', 'sku1', shoe(9, { sizes: [41] })); // an array: replaced wholesale
  const { name, ...nameless } = shoe(9, { sizes: [41] });
  void name;
  await setKey(node, 'stock:shoes', 'sku1', nameless); // a member removed: null in the patch
  await deleteKey(node, 'stock:shoes', 'sku2');
  await setKey(node, 'stock:shoes', 'sku4', shoe(7));
  await eventually('five changes', () => pubs.length === 5);
  await converges('values equal to the node', node, sub);
  assert.deepEqual(sub.values.get('sku1'), nameless);
  assert.deepEqual(pubs.map((p) => [p.key, p.offset, p.deleted === true]), [
    ['sku1', 4, false], ['sku1', 5, false], ['sku1', 6, false], ['sku2', 7, true], ['sku4', 8, false],
  ]);
  assert.deepEqual(pubs[2].payload, nameless, 'the application sees full values');
  const deltas = wire.connections[0].received.filter((f) => f.delta === true);
  assert.ok(deltas.length >= 1, 'the node sent patches, which the SDK applied');
  assert.ok(deltas.every((f) => typeof f.base === 'number'));

  const fetched = await client.fetchState('stock:shoes');
  const rest = await get(node, '/api/state/stock:shoes');
  assert.deepEqual(fetched.entries, rest.entries);
  assert.deepEqual([fetched.channel, fetched.offset, fetched.epoch], ['stock:shoes', rest.offset, rest.epoch]);
  assert.deepEqual((await client.fetchState('stock:shoes', ['sku4'])).entries.map((e) => e.key), ['sku4']);
});

test('a lost connection: resubscribed with since, a partial snapshot (deletes included) brings the values back in line', async (t) => {
  const node = await startNode(NAMESPACES);
  t.after(() => node.stop());
  const proxy = await startProxy(node.port);
  t.after(() => proxy.stop());
  for (const [key, qty] of [['a', 1], ['b', 2], ['c', 3]]) await setKey(node, 'stock:lost', key, shoe(qty));
  const wire = recordingWebSocket(WebSocket);
  const client = connectAs(t, node, 's2', { url: `ws://127.0.0.1:${proxy.port}/ws`, websocket: wire.WebSocket, pingInterval: 300, timeout: 600 });
  const sub = client.subscribe('stock:lost');
  const subscribed = [];
  const snapshots = [];
  sub.on('subscribed', (s) => subscribed.push(s));
  sub.on('snapshot', (s) => snapshots.push(s));
  await eventually('the snapshot', () => snapshots.length === 1);
  await setKey(node, 'stock:lost', 'a', shoe(11));
  await eventually('a', () => sub.values.get('a')?.qty === 11);
  const before = sub.offset;
  proxy.freeze(); // the network path dies silently; the keepalive notices
  await setKey(node, 'stock:lost', 'b', shoe(22));
  await deleteKey(node, 'stock:lost', 'c');
  await setKey(node, 'stock:lost', 'd', shoe(4));
  await eventually('resubscribed', () => snapshots.length === 2, 10000);
  const again = wire.connections[1].sent.find((f) => f.type === 'subscribe');
  assert.deepEqual(again.payload.since, { offset: before, epoch: subscribed[0].epoch });
  assert.equal(subscribed[1].recovered, true);
  assert.equal(snapshots[1].full, false);
  assert.deepEqual(snapshots[1].entries.map((e) => [e.key, e.deleted === true]), [['b', false], ['c', true], ['d', false]]);
  await converges('values equal to the node after the gap', node, sub);
  await setKey(node, 'stock:lost', 'd', shoe(5));
  await converges('and after a change on the new connection', node, sub);
});

test('keys narrows the snapshot and the values; other keys still arrive as publications', async (t) => {
  const node = await startNode(NAMESPACES);
  t.after(() => node.stop());
  for (const key of ['a', 'b', 'c']) await setKey(node, 'stock:k', key, { v: key });
  const client = connectAs(t, node, 's3');
  const sub = client.subscribe('stock:k', { keys: ['a', 'c'] });
  const snap = await next(sub, 'snapshot');
  assert.deepEqual(snap.entries.map((e) => e.key), ['a', 'c']);
  const pubs = [];
  sub.on('publication', (p) => pubs.push(p.key));
  await setKey(node, 'stock:k', 'b', { v: 'b2' });
  await setKey(node, 'stock:k', 'c', { v: 'c2' });
  await eventually('both', () => pubs.length === 2);
  assert.deepEqual(pubs, ['b', 'c']);
  assert.deepEqual(sorted(sub.values), { a: { v: 'a' }, c: { v: 'c2' } });
  await converges('the narrowed values equal the node\'s', node, sub, ['a', 'c']);
});

test('a conflated state channel: fewer publications, none of them dropped by the SDK, values end equal to the node', async (t) => {
  const node = await startNode(NAMESPACES);
  t.after(() => node.stop());
  const wire = recordingWebSocket(WebSocket);
  const client = connectAs(t, node, 's4', { websocket: wire.WebSocket });
  const sub = client.subscribe('ticker:btc');
  await next(sub, 'snapshot');
  const pubs = [];
  sub.on('publication', (p) => pubs.push(p));
  for (let i = 1; i <= 10; i++) {
    for (const key of ['bid', 'ask', 'last']) await setKey(node, 'ticker:btc', key, { price: 100 + i, key }, 'tick');
  }
  await converges('the newest value of every key', node, sub);
  const sent = wire.connections[0].received.filter((f) => f.channel === 'ticker:btc' && f.key);
  assert.ok(sent.length < 30, `conflated: ${sent.length} of 30 publications sent`);
  assert.ok(sent.some((f) => f.conflated === true), 'some carry conflated: true');
  assert.equal(pubs.length, sent.length, 'the SDK dropped none of them');
  for (const key of ['bid', 'ask', 'last']) assert.deepEqual(sub.values.get(key), { price: 110, key });
});

test('presence counts: presence_count frames instead of join/leave, kept current as viewers come and go', async (t) => {
  const node = await startNode(NAMESPACES);
  t.after(() => node.stop());
  const viewers = ['v1', 'v2', 'v2'].map((user) => connectAs(t, node, user));
  const subs = viewers.map((c) => c.subscribe('live:show'));
  const joins = [];
  for (const s of subs) s.on('join', (j) => joins.push(j));
  await Promise.all(subs.map((s) => s.ready()));
  await eventually('everyone sees 3 connections of 2 users', () => subs.every((s) => s.presenceCount?.count === 3 && s.presenceCount.users === 2), 5000);
  const counts = [];
  subs[0].on('presence_count', (c) => counts.push(c));
  viewers[1].disconnect();
  await eventually('2 connections of 2 users', () => subs[0].presenceCount.count === 2, 5000);
  assert.deepEqual(subs[0].presenceCount, { count: 2, users: 2 });
  assert.deepEqual(counts.at(-1), { count: 2, users: 2 });
  viewers[2].disconnect();
  await eventually('1 of 1', () => subs[0].presenceCount.count === 1, 5000);
  assert.deepEqual(subs[0].presenceCount, { count: 1, users: 1 });
  const p = await subs[0].presence();
  assert.deepEqual([p.count, p.users, p.clients.length], [1, 1, 1], 'presence() still answers, with a sample');
  assert.deepEqual(joins, [], 'no join/leave per viewer');
});
