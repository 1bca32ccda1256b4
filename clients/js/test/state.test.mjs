// State channels in the SDK (SPEC 16, 19) against a scripted node (test/fake.mjs):
// snapshots, `sub.values`, keyed changes and deletes, deltas with their base (and the
// re-subscribe when it is missing), `since` on reconnect with partial and full
// snapshots, `keys`, conflation, presence counts and `client.fetchState`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Switchyard } from '../src/index.js';
import { eventually } from '../../../tests/jskit/index.mjs';
import { fakeNode, pub } from './fake.mjs';

const opts = { websocket: WebSocket, token: 't', minReconnectDelay: 20, maxReconnectDelay: 60, timeout: 2000 };
const entry = (key, offset, payload) => ({ key, type: 'level', payload, offset, timestamp: 't' });
const tomb = (key, offset) => ({ key, deleted: true, offset, timestamp: 't' });
const subscribed = (msg, fields) => ({ type: 'subscribed', id: msg.id, payload: { channel: msg.payload.channel, ...fields } });
const snapshot = (msg, fields) => ({ type: 'snapshot', payload: { channel: msg.payload.channel, ...fields } });
const plain = (map) => Object.fromEntries([...map].sort(([a], [b]) => a.localeCompare(b)));

async function connect(t, node) {
  const client = new Switchyard(node.url, opts);
  t.after(() => client.disconnect());
  client.connect();
  return client;
}

/** Everything a subscription tells the application, in order. */
function journal(sub) {
  const events = [];
  sub.on('subscribed', (s) => events.push(['subscribed', s.recovered ?? null]));
  sub.on('snapshot', (s) => events.push(['snapshot', s.full, s.entries.map((e) => e.key)]));
  sub.on('values', (map, changed) => events.push(['values', plain(map), [...changed].sort()]));
  sub.on('publication', (p) => events.push(['publication', p.key, p.payload, p.offset]));
  return events;
}

test('snapshot, then keyed sets and deletes: sub.values, the snapshot and values events', async (t) => {
  const node = await fakeNode({
    subscribe: (msg) => [
      subscribed(msg, { offset: 2, epoch: 'e1' }),
      snapshot(msg, { offset: 2, epoch: 'e1', full: true, entries: [entry('sku1', 1, { qty: 5 }), entry('sku2', 2, { qty: 1 })] }),
    ],
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('stock:shoes');
  assert.ok(sub.values instanceof Map);
  assert.equal(sub.values.size, 0);
  const events = journal(sub);
  await eventually('the snapshot', () => sub.values.size === 2);
  assert.deepEqual(plain(sub.values), { sku1: { qty: 5 }, sku2: { qty: 1 } });
  node.send(pub('stock:shoes', 'level', { key: 'sku3', offset: 3, payload: { qty: 9 } }));
  node.send(pub('stock:shoes', 'level', { key: 'sku2', offset: 4, deleted: true }));
  node.send(pub('stock:shoes', 'level', { key: 'sku1', offset: 5, payload: { qty: 4 } }));
  await eventually('three changes', () => events.length === 9);
  assert.deepEqual(events, [
    ['subscribed', null],
    ['snapshot', true, ['sku1', 'sku2']],
    ['values', { sku1: { qty: 5 }, sku2: { qty: 1 } }, ['sku1', 'sku2']],
    ['publication', 'sku3', { qty: 9 }, 3],
    ['values', { sku1: { qty: 5 }, sku2: { qty: 1 }, sku3: { qty: 9 } }, ['sku3']],
    ['publication', 'sku2', undefined, 4],
    ['values', { sku1: { qty: 5 }, sku3: { qty: 9 } }, ['sku2']],
    ['publication', 'sku1', { qty: 4 }, 5],
    ['values', { sku1: { qty: 4 }, sku3: { qty: 9 } }, ['sku1']],
  ]);
  assert.equal(sub.offset, 5);
});

test('deltas: the patch is applied to the held base; the application sees full values only', async (t) => {
  const node = await fakeNode({
    subscribe: (msg) => [
      subscribed(msg, { offset: 1, epoch: 'e1' }),
      snapshot(msg, { offset: 1, epoch: 'e1', full: true, entries: [entry('sku1', 1, { qty: 5, sizes: [40, 41, 42], label: 'new', price: { amount: 100, currency: 'EUR' } })] }),
    ],
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('stock:d');
  const pubs = [];
  sub.on('publication', (p) => pubs.push(p));
  await eventually('the snapshot', () => sub.values.size === 1);
  node.send(pub('stock:d', 'level', { key: 'sku1', offset: 2, delta: true, base: 1, payload: { qty: 4, sizes: [41], label: null, price: { amount: 90 } } }));
  node.send(pub('stock:d', 'level', { key: 'sku1', offset: 3, delta: true, base: 2, payload: { qty: 3 } }));
  await eventually('two deltas', () => pubs.length === 2);
  const v2 = { qty: 4, sizes: [41], price: { amount: 90, currency: 'EUR' } };
  const v3 = { ...v2, qty: 3 };
  assert.deepEqual(pubs[0].payload, v2, 'arrays replaced wholesale, null removed the member, objects merged');
  assert.deepEqual(pubs[1].payload, v3);
  for (const p of pubs) {
    assert.equal(p.delta, undefined, 'no delta flag: a full value');
    assert.equal(p.base, undefined);
  }
  assert.deepEqual(sub.values.get('sku1'), v3);
  assert.equal(node.sent('subscribe').length, 1, 'no re-subscribe while every base is held');
});

test('a delta whose base is not held: re-subscribe with since the last delivered offset, the partial snapshot fills the value', async (t) => {
  const node = await fakeNode({
    subscribe: (msg) => {
      if (!msg.payload.since) {
        return [
          subscribed(msg, { offset: 3, epoch: 'e1' }),
          snapshot(msg, { offset: 3, epoch: 'e1', full: true, entries: [entry('sku1', 1, { qty: 5, c: 'red' }), entry('sku2', 3, { qty: 1 })] }),
        ];
      }
      return [
        subscribed(msg, { offset: 4, epoch: 'e1', recovered: true }),
        snapshot(msg, { offset: 4, epoch: 'e1', full: false, entries: [entry('sku1', 4, { qty: 7, c: 'blue' })] }),
      ];
    },
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('stock:m', { keys: ['sku1', 'sku2'] });
  const events = journal(sub);
  const states = [];
  sub.on('state', ({ state }) => states.push(state));
  await eventually('the snapshot', () => sub.values.size === 2);
  // The node thinks this client holds sku1 at offset 2 (it does not: it has 1).
  node.send(pub('stock:m', 'level', { key: 'sku1', offset: 4, delta: true, base: 2, payload: { qty: 7 } }));
  const [, again] = await node.waitSent('subscribe', 2);
  assert.deepEqual(again.payload, { channel: 'stock:m', since: { offset: 3, epoch: 'e1' }, keys: ['sku1', 'sku2'] });
  await eventually('the partial snapshot', () => sub.values.get('sku1')?.qty === 7);
  assert.deepEqual(plain(sub.values), { sku1: { qty: 7, c: 'blue' }, sku2: { qty: 1 } });
  assert.deepEqual(states, ['subscribed', 'subscribing', 'subscribed']);
  assert.equal(events.filter(([e]) => e === 'publication').length, 0, 'a patch it could not apply never reaches the application');
  assert.deepEqual(events.slice(-3), [
    ['subscribed', true],
    ['snapshot', false, ['sku1']],
    ['values', { sku1: { qty: 7, c: 'blue' }, sku2: { qty: 1 } }, ['sku1']],
  ]);
  // The next delta is against offset 4, which it now holds.
  node.send(pub('stock:m', 'level', { key: 'sku1', offset: 5, delta: true, base: 4, payload: { qty: 6 } }));
  await eventually('the next delta', () => sub.values.get('sku1').qty === 6);
  assert.deepEqual(sub.values.get('sku1'), { qty: 6, c: 'blue' });
  assert.equal(node.sent('subscribe').length, 2);
});

test('a missing base followed by a lost connection: the reconnect still asks since before the missing version', async (t) => {
  let subscribes = 0;
  const node = await fakeNode({
    subscribe: (msg, conn) => {
      subscribes += 1;
      if (subscribes === 1) {
        return [
          subscribed(msg, { offset: 3, epoch: 'e1' }),
          snapshot(msg, { offset: 3, epoch: 'e1', full: true, entries: [entry('a', 3, { n: 1 })] }),
        ];
      }
      if (subscribes === 2) {
        // The resync's answer never comes: a newer change, then the connection drops.
        conn.send(pub('stock:r', 'level', { key: 'b', offset: 5, payload: { n: 5 } }));
        conn.ws.close(4010);
        return undefined;
      }
      return [
        subscribed(msg, { offset: 5, epoch: 'e1', recovered: true }),
        snapshot(msg, { offset: 5, epoch: 'e1', full: false, entries: [entry('a', 4, { n: 4 }), entry('b', 5, { n: 5 })] }),
      ];
    },
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('stock:r');
  await eventually('the snapshot', () => sub.values.size === 1);
  node.send(pub('stock:r', 'level', { key: 'a', offset: 4, delta: true, base: 2, payload: { n: 4 } }));
  const all = await node.waitSent('subscribe', 3);
  assert.deepEqual(all[1].payload.since, { offset: 3, epoch: 'e1' });
  assert.deepEqual(all[2].payload.since, { offset: 3, epoch: 'e1' }, 'not 5: the value of a at 4 is still missing');
  await eventually('the values after the reconnect', () => sub.values.get('a')?.n === 4);
  assert.deepEqual(plain(sub.values), { a: { n: 4 }, b: { n: 5 } });
  assert.equal(sub.offset, 5);
});

test('reconnects resubscribe with since; a partial snapshot merges (deletes too), a full one of a new epoch replaces', async (t) => {
  const answers = [
    (msg) => [
      subscribed(msg, { offset: 2, epoch: 'e1' }),
      snapshot(msg, { offset: 2, epoch: 'e1', full: true, entries: [entry('a', 1, 'a1'), entry('b', 2, 'b2')] }),
    ],
    (msg) => [
      subscribed(msg, { offset: 5, epoch: 'e1', recovered: true }),
      snapshot(msg, { offset: 5, epoch: 'e1', full: false, entries: [tomb('a', 4), entry('d', 5, 'd5')] }),
    ],
    (msg) => [
      subscribed(msg, { offset: 1, epoch: 'e2', recovered: false }),
      snapshot(msg, { offset: 1, epoch: 'e2', full: true, entries: [entry('z', 1, { n: 1 })] }),
    ],
  ];
  const node = await fakeNode({ subscribe: (msg) => answers[node.sent('subscribe').length - 1](msg) });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('stock:s');
  const snapshots = [];
  sub.on('snapshot', (s) => snapshots.push(s));
  await eventually('the first snapshot', () => snapshots.length === 1);
  node.send(pub('stock:s', 'level', { key: 'c', offset: 3, payload: 'c3' }));
  await eventually('c', () => sub.values.has('c'));
  node.conn.ws.close(4010);
  await eventually('the partial snapshot', () => snapshots.length === 2);
  assert.deepEqual(node.sent('subscribe')[1].payload.since, { offset: 3, epoch: 'e1' });
  assert.deepEqual(plain(sub.values), { b: 'b2', c: 'c3', d: 'd5' });
  assert.equal(sub.offset, 5);
  node.send(pub('stock:s', 'level', { key: 'b', offset: 6, payload: 'b6' }));
  await eventually('b6', () => sub.values.get('b') === 'b6');
  node.conn.ws.close(4010);
  await eventually('the full snapshot', () => snapshots.length === 3);
  assert.deepEqual(node.sent('subscribe')[2].payload.since, { offset: 6, epoch: 'e1' });
  assert.deepEqual(plain(sub.values), { z: { n: 1 } });
  assert.deepEqual([sub.offset, sub.epoch], [1, 'e2']);
  node.send(pub('stock:s', 'level', { key: 'z', offset: 2, delta: true, base: 1, payload: { m: 2 } }));
  await eventually('a delta on the new epoch', () => sub.values.get('z').m === 2);
  assert.deepEqual(sub.values.get('z'), { n: 1, m: 2 });
});

test('keys: sent in the subscribe; changes of other keys are publications but not values', async (t) => {
  const node = await fakeNode({
    subscribe: (msg) => [
      subscribed(msg, { offset: 1, epoch: 'e' }),
      snapshot(msg, { offset: 1, epoch: 'e', full: true, entries: [entry('a', 1, 1)] }),
    ],
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('stock:k', { keys: ['a'] });
  const events = journal(sub);
  await eventually('the snapshot', () => sub.values.size === 1);
  assert.deepEqual(node.sent('subscribe')[0].payload, { channel: 'stock:k', keys: ['a'] });
  node.send(pub('stock:k', 'level', { key: 'b', offset: 2, payload: 2 }));
  node.send(pub('stock:k', 'level', { key: 'a', offset: 3, payload: 3 }));
  await eventually('both', () => events.filter(([e]) => e === 'publication').length === 2);
  assert.deepEqual(events.slice(-3), [
    ['publication', 'b', 2, 2],
    ['publication', 'a', 3, 3],
    ['values', { a: 3 }, ['a']],
  ]);
  assert.deepEqual(plain(sub.values), { a: 3 });
});

test('conflated keyed publications out of offset order are delivered; only each key\'s own repeats are dropped', async (t) => {
  const node = await fakeNode({
    subscribe: (msg) => [
      subscribed(msg, { offset: 0, epoch: 'e' }),
      snapshot(msg, { offset: 0, epoch: 'e', full: true, entries: [] }),
    ],
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('ticker:x');
  const seen = [];
  sub.on('publication', (p) => seen.push(`${p.key}@${p.offset}`));
  await sub.ready();
  const send = (key, offset, conflated) => node.send(pub('ticker:x', 'price', { key, offset, payload: { p: offset }, ...(conflated ? { conflated } : {}) }));
  send('a', 1);
  send('b', 2);
  send('b', 5, true); // b@3 and b@4 were replaced by b@5
  send('a', 4, true); // a@3 replaced by a@4, sent after b@5 when a's interval ended
  send('a', 4); // repeats
  send('b', 5);
  send('a', 3);
  send('c', 6);
  await eventually('c', () => seen.includes('c@6'));
  assert.deepEqual(seen, ['a@1', 'b@2', 'b@5', 'a@4', 'c@6']);
  assert.deepEqual(plain(sub.values), { a: { p: 4 }, b: { p: 5 }, c: { p: 6 } });
  assert.equal(sub.offset, 6);
});

test('the conflated option (channels without keys): skips and lower offsets are delivered, exact repeats dropped', async (t) => {
  const node = await fakeNode({ subscribe: (msg) => subscribed(msg, { offset: 0, epoch: 'e' }) });
  t.after(() => node.close());
  const client = await connect(t, node);
  const conflated = client.subscribe('feed:c', { conflated: true });
  const strict = client.subscribe('feed:s');
  const got = { 'feed:c': [], 'feed:s': [] };
  for (const s of [conflated, strict]) s.on('publication', (p) => got[p.channel].push(p.offset));
  await Promise.all([conflated.ready(), strict.ready()]);
  for (const channel of ['feed:c', 'feed:s']) {
    for (const offset of [2, 5, 4, 4, 6, 6]) node.send(pub(channel, 'tick', { offset, payload: {} }));
    node.send(pub(channel, 'tick', { payload: { end: true } }));
  }
  await eventually('both ends', () => got['feed:c'].includes(undefined) && got['feed:s'].includes(undefined));
  assert.deepEqual(got['feed:c'], [2, 5, 4, 6, undefined]);
  assert.deepEqual(got['feed:s'], [2, 5, 6, undefined], 'without the option, not above the last delivered offset is a duplicate');
});

test('presence_count frames: sub.presenceCount and the presence_count event', async (t) => {
  const node = await fakeNode({ subscribe: (msg) => [subscribed(msg, {}), { type: 'presence_count', payload: { channel: msg.payload.channel, count: 3, users: 2 } }] });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('live:show');
  assert.equal(sub.presenceCount, null);
  const counts = [];
  sub.on('presence_count', (c) => counts.push(c));
  await eventually('the first count', () => counts.length === 1);
  assert.deepEqual(sub.presenceCount, { count: 3, users: 2 });
  node.send({ type: 'presence_count', payload: { channel: 'live:show', count: 100000, users: 98000 } });
  node.send({ type: 'presence_count', payload: { channel: 'live:other', count: 1, users: 1 } });
  await eventually('the second count', () => counts.length === 2);
  assert.deepEqual(counts, [{ count: 3, users: 2 }, { count: 100000, users: 98000 }]);
  assert.deepEqual(sub.presenceCount, { count: 100000, users: 98000 });
});

test('client.fetchState sends `state {channel, keys?}` and resolves with the entries', async (t) => {
  const node = await fakeNode({
    state: (msg) => ({
      type: 'state',
      id: msg.id,
      payload: { channel: msg.payload.channel, offset: 7, epoch: 'e', entries: [entry('a', 7, { n: 1 })] },
    }),
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const all = await client.fetchState('stock:f');
  const some = await client.fetchState('stock:f', ['a']);
  assert.deepEqual(all, { channel: 'stock:f', offset: 7, epoch: 'e', entries: [entry('a', 7, { n: 1 })] });
  assert.deepEqual(some, all);
  const [first, second] = node.sent('state');
  assert.deepEqual([first.payload, second.payload], [{ channel: 'stock:f' }, { channel: 'stock:f', keys: ['a'] }]);
  assert.equal(typeof first.id, 'string');
  assert.notEqual(first.id, second.id);
  assert.equal(client.getSubscription('stock:f'), null, 'fetching state subscribes nothing');
});
