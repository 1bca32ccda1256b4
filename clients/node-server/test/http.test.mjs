// The HTTP API half of SwitchyardServer (SPEC 6, 18) against a real node: publish,
// idempotency, broadcast, disconnect, server-side subscribe/unsubscribe, presence,
// history, channels, stats, and the server's error codes on the thrown errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SwitchyardServer, SwitchyardError } from '../src/index.js';
import { startStack, connectClient, eventually, FAST } from './helpers.mjs';

test('publish reaches a user on any channel; history channels answer offset and epoch', async (t) => {
  const { node, server } = await startStack(t);
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice' }, 60));
  const r = await server.publish('user:alice', 'notification', { title: 'Your bid has been matched!' });
  assert.deepEqual(r, {}, 'user: keeps no history: no offset');
  const got = await alice.waitFor((f) => f.type === 'notification');
  assert.equal(got.channel, 'user:alice');
  assert.deepEqual(got.payload, { title: 'Your bid has been matched!' });

  const sub = await alice.request('subscribe', { channel: 'order:123', token: await server.mintSubscriptionToken('alice', 'order:123', 60) });
  assert.equal(sub.type, 'subscribed');
  const first = await server.publish('order:123', 'order_update', { status: 'paid' });
  const second = await server.publish('order:123', 'order_update', { status: 'shipped' });
  assert.equal(first.offset, 1);
  assert.equal(second.offset, 2);
  assert.equal(typeof first.epoch, 'string');
  assert.equal(second.epoch, first.epoch);
  const shipped = await alice.waitFor((f) => f.type === 'order_update' && f.offset === 2);
  assert.deepEqual(shipped.payload, { status: 'shipped' });
});

test('an idempotency key publishes once: a repeat answers the first result with duplicate: true', async (t) => {
  const { server } = await startStack(t);
  const a = await server.publish('order:7', 'order_paid', { total: 220 }, { idempotencyKey: 'order-7-paid' });
  const b = await server.publish('order:7', 'order_paid', { total: 220 }, { idempotencyKey: 'order-7-paid' });
  assert.deepEqual(b, { ...a, duplicate: true });
  // Without a key the SDK makes a fresh one per call: two calls are two publications.
  const c = await server.publish('order:7', 'order_shipped', {});
  const d = await server.publish('order:7', 'order_shipped', {});
  assert.deepEqual([c.offset, d.offset, c.duplicate, d.duplicate], [2, 3, undefined, undefined]);
  const h = await server.history('order:7');
  assert.deepEqual(h.publications.map((p) => p.type), ['order_paid', 'order_shipped', 'order_shipped']);
});

test('errors carry the server code and status, and are not retried', async (t) => {
  const { node, server } = await startStack(t);
  const rejects = async (p, code, status) => {
    const e = await p.then(() => assert.fail('resolved'), (err) => err);
    assert.ok(e instanceof SwitchyardError, `${e}`);
    assert.equal(e.code, code);
    assert.equal(e.status, status);
    assert.equal(e.attempts, 1);
  };
  await rejects(server.publish('nope:1', 'x', {}), 'invalid_channel', 400);
  await rejects(server.publish('user:a', 'subscribe', {}), 'reserved_type', 400);
  await rejects(server.presence('public:news'), 'not_found', 404);
  await rejects(server.disconnect({ userId: 'a', code: 1000 }), 'bad_request', 400);
  const wrongKey = new SwitchyardServer({ url: node.base, apiKey: 'wrong', ...FAST });
  await rejects(wrongKey.stats(), 'unauthorized', 401);

  // Misuse is a TypeError before anything is sent.
  await assert.rejects(server.publish('user:a', 'x', {}, { via: 'redis', fallback: { after: '30s' } }), TypeError);
  await assert.rejects(server.publish('user:a', 'x', {}, { via: 'redis' }), /needs the `redis` option/);
  await assert.rejects(server.publish('user:a', 'x', {}, { via: 'carrier-pigeon' }), TypeError);
  await assert.rejects(server.publish('user:a', 'x', {}, { idempotencyKey: 'k'.repeat(129) }), TypeError);
  await assert.rejects(server.disconnect({ userId: 'a', sessionId: 'b' }), TypeError);
  await assert.rejects(server.broadcast([], 'x', {}), TypeError);
  assert.throws(() => server.consume('upstream', 'g', () => {}), /needs the `redis` option/);
  await assert.rejects(new SwitchyardServer({ apiKey: 'k' }).stats(), /`url` is required/);
});

test('broadcast publishes per channel; an invalid channel fails only its own entry', async (t) => {
  const { node, server } = await startStack(t);
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice' }, 60));
  const bob = await connectClient(t, node, await server.mintToken({ sub: 'bob' }, 60));
  const channels = ['user:alice', 'user:bob', 'order:9', 'bad channel'];
  const { results } = await server.broadcast(channels, 'sale', { pct: 20 }, { idempotencyKey: 'sale-1' });
  assert.deepEqual(results.map((r) => r.channel), channels);
  assert.equal(results[2].offset, 1);
  assert.equal(results[3].error.code, 'invalid_channel');
  for (const c of [alice, bob]) assert.deepEqual((await c.waitFor((f) => f.type === 'sale')).payload, { pct: 20 });
  const again = await server.broadcast(channels, 'sale', { pct: 20 }, { idempotencyKey: 'sale-1' });
  assert.deepEqual(again.results.slice(0, 3).map((r) => r.duplicate), [true, true, true], 'the key applies per channel');
  assert.equal(again.results[2].offset, 1);
});

test('subscribe, unsubscribe and disconnect act on every connection of a user', async (t) => {
  const { node, server } = await startStack(t);
  const token = await server.mintToken({ sub: 'alice' }, 60);
  const phone = await connectClient(t, node, token);
  const laptop = await connectClient(t, node, token);
  const other = await connectClient(t, node, await server.mintToken({ sub: 'bob' }, 60));

  await server.subscribe('alice', 'public:drops');
  for (const c of [phone, laptop]) await c.waitFor((f) => f.type === 'subscribed' && f.payload.channel === 'public:drops');
  await server.publish('public:drops', 'drop', { sku: 'AJ1-9' });
  for (const c of [phone, laptop]) await c.waitFor((f) => f.type === 'drop');
  await server.unsubscribe('alice', 'public:drops');
  for (const c of [phone, laptop]) await c.waitFor((f) => f.type === 'unsubscribed' && f.payload.channel === 'public:drops');

  await server.disconnect({ connId: laptop.hello.conn_id, code: 4005, reason: 'one device' });
  await eventually('the laptop closed', () => laptop.closed);
  assert.equal(laptop.closed.code, 4005);
  assert.equal(phone.closed, null, 'only that connection');

  await server.disconnect({ userId: 'alice', reason: 'banned' });
  const bye = await phone.waitFor((f) => f.type === 'disconnect');
  assert.equal(bye.payload.code, 4003);
  await eventually('the phone closed', () => phone.closed);
  assert.equal(phone.closed.code, 4003);
  assert.equal(other.closed, null, 'other users stay');
});

test('presence, history, channels and stats', async (t) => {
  const { node, server } = await startStack(t);
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice', info: { name: 'Alice' }, allow: ['chat:*'] }, 60));
  assert.equal((await alice.request('subscribe', { channel: 'chat:room-1' })).type, 'subscribed');

  const p = await server.presence('chat:room-1');
  assert.equal(p.count, 1);
  assert.equal(p.users, 1);
  assert.equal(p.clients[0].user_id, 'alice');
  assert.deepEqual(p.clients[0].info, { name: 'Alice' });

  for (const text of ['a', 'b', 'c']) await server.publish('chat:room-1', 'chat_message', { text });
  const newest = await server.history('chat:room-1', { limit: 2 });
  assert.deepEqual(newest.publications.map((x) => [x.offset, x.payload.text]), [[2, 'b'], [3, 'c']]);
  assert.equal(newest.offset, 3);
  const after = await server.history('chat:room-1', { since: 1 });
  assert.deepEqual(after.publications.map((x) => x.offset), [2, 3]);

  const { channels } = await server.channels('chat:');
  assert.deepEqual(channels, [{ channel: 'chat:room-1', subscribers: 1 }]);
  const stats = await server.stats();
  assert.equal(stats.node.connections, 1);
  assert.equal(stats.cluster.users, 1);
});
