// Publishing straight into Redis (SPEC 8.2, 18 `via: "redis"`) against a real node on
// a real redis-server: the FCALL with the namespace's history settings, idempotency
// keys, a reply lost on the way (the retry repeats the key: stored once), refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SwitchyardServer } from '../src/index.js';
import { startStack, redisFor, connectClient, replyDroppingProxy, API_KEY, FAST } from './helpers.mjs';

const ORDER = { via: 'redis', historySize: 100, historyTtl: '24h' };

test('via redis: FCALL switchyard_publish with the history settings, one history with the API', async (t) => {
  const redis = await redisFor(t);
  const { node, server } = await startStack(t, { redis, prefix: 'shop' });
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice' }, 60));
  await alice.request('subscribe', { channel: 'order:11', token: await server.mintSubscriptionToken('alice', 'order:11', 60) });

  const a = await server.publish('order:11', 'order_update', { status: 'paid' }, ORDER);
  assert.equal(a.offset, 1);
  assert.equal(typeof a.epoch, 'string');
  const b = await server.publish('order:11', 'order_update', { status: 'shipped' });
  assert.deepEqual([b.offset, b.epoch], [2, a.epoch], 'the API continues the same history');
  const got = await alice.waitFor((f) => f.type === 'order_update' && f.offset === 1);
  assert.deepEqual(got.payload, { status: 'paid' });
  assert.match(redis.cli('EXISTS', 'shop:{order:11}:history'), /1/, 'under the configured prefix');
  const h = await server.history('order:11');
  assert.deepEqual(h.publications.map((p) => p.payload.status), ['paid', 'shipped']);

  // Without history settings: live only, no offset.
  assert.deepEqual(await server.publish('user:alice', 'notification', { title: 'hi' }, { via: 'redis' }), {});
  assert.deepEqual((await alice.waitFor((f) => f.type === 'notification')).payload, { title: 'hi' });
});

test('via redis: an idempotency key publishes once', async (t) => {
  const redis = await redisFor(t);
  const { server } = await startStack(t, { redis });
  const a = await server.publish('order:12', 'order_paid', { total: 220 }, { ...ORDER, idempotencyKey: 'pay-12' });
  const b = await server.publish('order:12', 'order_paid', { total: 220 }, { ...ORDER, idempotencyKey: 'pay-12' });
  assert.deepEqual(b, { ...a, duplicate: true });
  const c = await server.publish('order:12', 'order_paid', { total: 220 }, ORDER);
  assert.equal(c.offset, 2, 'no key given: a fresh one, a new publication');
  assert.equal((await server.history('order:12')).publications.length, 2);
});

test('via redis: a reply lost on the way is retried with the same key, and stored once', async (t) => {
  const redis = await redisFor(t);
  const { node, server: direct } = await startStack(t, { redis });
  const alice = await connectClient(t, node, await direct.mintToken({ sub: 'alice' }, 60));
  await alice.request('subscribe', { channel: 'order:13', token: await direct.mintSubscriptionToken('alice', 'order:13', 60) });
  const proxy = await replyDroppingProxy(t, redis.port);
  const server = new SwitchyardServer({ url: node.base, apiKey: API_KEY, redis: proxy.url, ...FAST, timeout: 300 });
  t.after(() => server.close());
  assert.equal((await server.publish('order:13', 'order_update', { n: 1 }, ORDER)).offset, 1);
  proxy.dropReplies();
  // No key given: the SDK's own key is what makes the retry safe.
  const r = await server.publish('order:13', 'order_update', { n: 2 }, ORDER);
  assert.deepEqual(r, { offset: 2, epoch: r.epoch, duplicate: true }, 'Redis ran the first call; the retry says so');
  assert.equal(proxy.connections, 2, 'the retry went over a new connection');
  await direct.publish('order:13', 'marker', {});
  await alice.waitFor((f) => f.type === 'marker');
  assert.deepEqual(alice.frames.filter((f) => f.type === 'order_update').map((f) => f.payload.n), [1, 2]);
  assert.equal((await direct.history('order:13')).publications.length, 3);
});

test('via redis: refusals are errors with a code, not retried', async (t) => {
  const redis = await redisFor(t);
  const { server } = await startStack(t, { redis });
  const refused = await server.publish('order:14', 'subscribe', {}, ORDER).catch((e) => e);
  assert.deepEqual([refused.code, refused.attempts], ['bad_request', 1]);
  assert.match(refused.message, /reserved/);

  const empty = await redisFor(t);
  const lonely = new SwitchyardServer({ redis: empty.url, ...FAST });
  t.after(() => lonely.close());
  const missing = await lonely.publish('order:1', 'x', {}, ORDER).catch((e) => e);
  assert.deepEqual([missing.code, missing.attempts], ['function_missing', 1], 'no node ever loaded the library there');
});
