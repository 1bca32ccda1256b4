// Read state and receipts in the SDK (SPEC 15.1, 15.2, 19) against a scripted node
// (test/fake.mjs): `sub.unread` / `sub.readOffset` from `subscribed`, publications and
// `read` frames; `markRead`; `client.unread`; `received` batches at most every 250 ms,
// for exactly the publications the application got, kept across a reconnect.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Switchyard } from '../src/index.js';
import { eventually } from '../../../tests/jskit/index.mjs';
import { fakeNode, pub } from './fake.mjs';

const opts = (extra = {}) => ({ websocket: WebSocket, token: 't', minReconnectDelay: 20, maxReconnectDelay: 60, timeout: 2000, ...extra });
const subscribed = (msg, fields) => ({ type: 'subscribed', id: msg.id, payload: { channel: msg.payload.channel, ...fields } });

async function connect(t, node, extra) {
  const client = new Switchyard(node.url, opts(extra));
  t.after(() => client.disconnect());
  client.connect();
  return client;
}

/** Every offset confirmed for `channel`, in the order the frames came. */
const confirmed = (node, channel) => node.sent('received').filter((f) => f.payload.channel === channel).flatMap((f) => f.payload.offsets);

test('unread: from subscribed, one more per new publication, never for replays or duplicates', async (t) => {
  const answers = [
    (msg) => subscribed(msg, { offset: 5, epoch: 'e', read_offset: 3, unread: 2 }),
    (msg) => [
      subscribed(msg, { offset: 8, epoch: 'e', recovered: true, read_offset: 3, unread: 5 }),
      ...[7, 8].map((offset) => pub('inbox:u1', 'msg', { offset, payload: { offset } })),
    ],
  ];
  const node = await fakeNode({ subscribe: (msg) => answers[node.sent('subscribe').length - 1](msg) });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('inbox:u1');
  assert.deepEqual([sub.unread, sub.readOffset], [0, null]);
  const seen = [];
  sub.on('unread', (n) => seen.push(n));
  const subs = [];
  sub.on('subscribed', (s) => subs.push(s));
  await sub.ready();
  assert.deepEqual([sub.unread, sub.readOffset], [2, 3]);
  assert.deepEqual(subs[0], { recovered: undefined, offset: 5, epoch: 'e', read_offset: 3, unread: 2 });
  node.send(pub('inbox:u1', 'msg', { offset: 6, payload: {} }));
  node.send(pub('inbox:u1', 'msg', { offset: 6, payload: {} }));
  node.send(pub('inbox:u1', 'typing', { payload: {} })); // volatile: no offset, not counted
  await eventually('6', () => sub.offset === 6);
  assert.equal(sub.unread, 3);
  node.conn.ws.close(4010);
  await eventually('resubscribed with 7 and 8 replayed', () => subs.length === 2 && sub.offset === 8);
  assert.deepEqual(node.sent('subscribe')[1].payload.since, { offset: 6, epoch: 'e' });
  assert.equal(sub.unread, 5, 'the node counted 7 and 8 already: replays add nothing');
  node.send(pub('inbox:u1', 'msg', { offset: 9, payload: {} }));
  node.send(pub('inbox:u1', 'msg', { offset: 9, payload: {} }));
  await eventually('9', () => sub.offset === 9);
  node.send(pub('inbox:u1', 'msg', { offset: 10, payload: {} }));
  await eventually('10', () => sub.offset === 10);
  assert.equal(sub.unread, 7);
  assert.deepEqual(seen, [2, 3, 5, 6, 7]);
});

test('markRead sends mark_read and resolves with the read reply; read frames from other devices; forward only', async (t) => {
  const node = await fakeNode({
    subscribe: (msg) => subscribed(msg, { offset: 4, epoch: 'e', read_offset: 0, unread: 4 }),
    mark_read: (msg) => ({ type: 'read', id: msg.id, payload: { channel: msg.payload.channel, read_offset: msg.payload.offset, unread: 4 - msg.payload.offset } }),
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('inbox:u1');
  const reads = [];
  sub.on('read', (r) => reads.push(r));
  await sub.ready();
  const reply = await sub.markRead(3);
  assert.deepEqual(reply, { channel: 'inbox:u1', read_offset: 3, unread: 1 });
  const [frame] = node.sent('mark_read');
  assert.deepEqual(frame.payload, { channel: 'inbox:u1', offset: 3 });
  assert.equal(typeof frame.id, 'string');
  assert.deepEqual([sub.readOffset, sub.unread], [3, 1]);
  // The laptop read everything: the phone's badge clears.
  node.send({ type: 'read', payload: { channel: 'inbox:u1', read_offset: 4, unread: 0 } });
  await eventually('the pushed read', () => reads.length === 2);
  assert.deepEqual([sub.readOffset, sub.unread], [4, 0]);
  // An older position (a reply that crossed a newer push) never moves it back.
  node.send({ type: 'read', payload: { channel: 'inbox:u1', read_offset: 2, unread: 2 } });
  node.send(pub('inbox:u1', 'msg', { offset: 5, payload: {} }));
  await eventually('5', () => sub.offset === 5);
  assert.deepEqual([sub.readOffset, sub.unread], [4, 1]);
  assert.deepEqual(reads, [{ read_offset: 3, unread: 1 }, { read_offset: 4, unread: 0 }]);
  await sub.markRead();
  assert.deepEqual(node.sent('mark_read')[1].payload, { channel: 'inbox:u1', offset: 5 }, 'default: the last delivered offset');
  assert.deepEqual([sub.readOffset, sub.unread], [5, 0]);
});

test('client.unread sends unread {channels?} and resolves with the counts', async (t) => {
  const node = await fakeNode({
    unread: (msg) => ({
      type: 'unread',
      id: msg.id,
      payload: { channels: (msg.payload.channels ?? ['inbox:a', 'inbox:b']).map((channel) => ({ channel, offset: 9, read_offset: 7, unread: 2 })) },
    }),
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const all = await client.unread();
  const one = await client.unread(['inbox:b']);
  assert.deepEqual(all.channels.map((c) => c.channel), ['inbox:a', 'inbox:b']);
  assert.deepEqual(one, { channels: [{ channel: 'inbox:b', offset: 9, read_offset: 7, unread: 2 }] });
  assert.deepEqual(node.sent('unread').map((f) => f.payload), [{}, { channels: ['inbox:b'] }]);
});

test('receipts: batched at most every 250 ms, each delivered offset once, none for duplicates', async (t) => {
  const node = await fakeNode({ subscribe: (msg) => subscribed(msg, { offset: 0, epoch: 'e', read_offset: 0, unread: 0 }) });
  t.after(() => node.close());
  // When the SDK sent each frame (the node's arrival times may bunch up in a busy process).
  const sentAt = [];
  class Timed extends WebSocket {
    send(data, ...rest) {
      const frame = JSON.parse(String(data));
      if (frame.type === 'received') sentAt.push(performance.now());
      return super.send(data, ...rest);
    }
  }
  const client = await connect(t, node, { websocket: Timed });
  const sub = client.subscribe('inbox:u1');
  const delivered = [];
  sub.on('publication', (p) => {
    // The handler runs before its receipt can be queued, let alone sent.
    assert.ok(!confirmed(node, 'inbox:u1').includes(p.offset));
    delivered.push(p.offset);
  });
  await sub.ready();
  assert.equal(sub.receipts, true, 'on: the subscribed reply carried read_offset');
  // 40 publications over about 800 ms, each fifth one followed by a duplicate of an older one.
  let offset = 0;
  const pace = setInterval(() => {
    offset += 1;
    node.send(pub('inbox:u1', 'msg', { offset, payload: {} }));
    if (offset % 5 === 0) node.send(pub('inbox:u1', 'msg', { offset: offset - 2, payload: {} }));
    if (offset === 40) clearInterval(pace);
  }, 20);
  t.after(() => clearInterval(pace));
  await eventually('every offset confirmed', () => confirmed(node, 'inbox:u1').length >= 40, 5000);
  const frames = node.sent('received').filter((f) => f.payload.channel === 'inbox:u1');
  const offsets = confirmed(node, 'inbox:u1');
  assert.deepEqual(offsets, Array.from({ length: 40 }, (_, i) => i + 1), 'each once, in order');
  assert.deepEqual(delivered, offsets);
  assert.ok(frames.length >= 3, `batched over the 800 ms (${frames.length} frames)`);
  assert.ok(frames.length < 40, `batched, not one per publication (${frames.length} frames)`);
  assert.equal(sentAt.length, frames.length);
  for (let i = 1; i < sentAt.length; i++) {
    const gap = sentAt[i] - sentAt[i - 1];
    // Timers may fire a little early relative to performance.now(); 2 ms of slack.
    assert.ok(gap >= 248, `frame ${i} was sent ${Math.round(gap)} ms after the previous one`);
  }
  for (const f of frames) assert.equal(f.id, undefined, 'no id: no reply expected');
});

test('receipts are on with receipts: true, off with receipts: false, off by default without read state', async (t) => {
  const node = await fakeNode({
    subscribe: (msg) => subscribed(msg, msg.payload.channel.startsWith('inbox:') ? { offset: 0, epoch: 'e', read_offset: 0, unread: 0 } : { offset: 0, epoch: 'e' }),
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const subs = {
    'inbox:off': client.subscribe('inbox:off', { receipts: false }),
    'order:on': client.subscribe('order:on', { receipts: true }),
    'order:default': client.subscribe('order:default'),
  };
  await Promise.all(Object.values(subs).map((s) => s.ready()));
  assert.deepEqual(Object.values(subs).map((s) => s.receipts), [false, true, false]);
  for (const channel of Object.keys(subs)) {
    for (const offset of [1, 2, 3]) node.send(pub(channel, 'msg', { offset, payload: {} }));
  }
  await eventually('all delivered', () => Object.values(subs).every((s) => s.offset === 3));
  // Unsubscribing sends what is queued first: once the node has the unsubscribe
  // frames, every receipt there will ever be has arrived.
  for (const s of Object.values(subs)) s.unsubscribe();
  await node.waitSent('unsubscribe', 3);
  assert.deepEqual(confirmed(node, 'order:on'), [1, 2, 3]);
  assert.deepEqual(confirmed(node, 'inbox:off'), []);
  assert.deepEqual(confirmed(node, 'order:default'), []);
});

test('receipts queued when the connection drops are sent after the resubscribe, on the new connection', async (t) => {
  const node = await fakeNode({ subscribe: (msg) => subscribed(msg, { offset: 0, epoch: 'e', read_offset: 0, unread: 0 }) });
  t.after(() => node.close());
  // A slow reconnect: the 250 ms batch falls due while there is no connection.
  const client = await connect(t, node, { minReconnectDelay: 400, maxReconnectDelay: 500 });
  const sub = client.subscribe('inbox:u1');
  await sub.ready();
  node.send(pub('inbox:u1', 'msg', { offset: 1, payload: {} }));
  await eventually('1 confirmed', () => confirmed(node, 'inbox:u1').length === 1);
  node.send(pub('inbox:u1', 'msg', { offset: 2, payload: {} }));
  node.conn.ws.close(4010);
  await eventually('the second connection subscribed', () => node.connections.length === 2 && sub.state === 'subscribed');
  await eventually('2 confirmed', () => confirmed(node, 'inbox:u1').length === 2);
  assert.deepEqual(node.connections[0].received.filter((f) => f.type === 'received').flatMap((f) => f.payload.offsets), [1]);
  const second = node.connections[1].received.map((f) => f.type);
  assert.deepEqual(node.connections[1].received.filter((f) => f.type === 'received').map((f) => f.payload.offsets), [[2]]);
  assert.ok(second.indexOf('subscribe') < second.indexOf('received'), 'after the subscribe');
});

test('unsubscribe sends the queued receipts at once, before the unsubscribe frame', async (t) => {
  const node = await fakeNode({ subscribe: (msg) => subscribed(msg, { offset: 0, epoch: 'e' }) });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('order:u', { receipts: true });
  await sub.ready();
  node.send(pub('order:u', 'msg', { offset: 1, payload: {} }));
  await eventually('1 confirmed', () => confirmed(node, 'order:u').length === 1);
  node.send(pub('order:u', 'msg', { offset: 2, payload: {} }));
  await eventually('2 delivered', () => sub.offset === 2);
  sub.unsubscribe();
  await node.waitSent('unsubscribe');
  const types = node.conn.received.map((f) => f.type);
  assert.deepEqual(types.slice(-2), ['received', 'unsubscribe']);
  assert.deepEqual(confirmed(node, 'order:u'), [1, 2]);
});

test('no receipt for a delta the SDK could not apply: the application never got it', async (t) => {
  const node = await fakeNode({
    subscribe: (msg) => [
      subscribed(msg, { offset: 1, epoch: 'e' }),
      { type: 'snapshot', payload: { channel: msg.payload.channel, offset: 1, epoch: 'e', full: !msg.payload.since, entries: [{ key: 'a', offset: 1, payload: { n: 1 }, timestamp: 't' }] } },
    ],
  });
  t.after(() => node.close());
  const client = await connect(t, node);
  const sub = client.subscribe('stock:rc', { receipts: true });
  await sub.ready();
  node.send(pub('stock:rc', 'level', { key: 'a', offset: 2, delta: true, base: 1, payload: { n: 2 } }));
  node.send(pub('stock:rc', 'level', { key: 'a', offset: 3, delta: true, base: 9, payload: { n: 3 } }));
  await node.waitSent('subscribe', 2);
  await eventually('subscribed again', () => sub.state === 'subscribed');
  sub.unsubscribe();
  await node.waitSent('unsubscribe');
  assert.deepEqual(confirmed(node, 'stock:rc'), [2]);
});
