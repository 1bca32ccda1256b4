// Retries (SPEC 18): a 503 or a timeout is retried with backoff, and every retry of a
// publish carries the idempotency key of the first attempt, so a publication whose
// answer was lost is stored and delivered once. Between the SDK and a real node sits
// an HTTP proxy that answers 503 or withholds answers on purpose; the last test
// takes the node's own Redis away so that the node itself answers 503.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SwitchyardServer } from '../src/index.js';
import { startStack, connectClient, flakyProxy, startRedisAt, freePort, eventually, API_KEY, FAST } from './helpers.mjs';

const sdk = (url, extra = {}) => new SwitchyardServer({ url, apiKey: API_KEY, ...FAST, ...extra });

test('503 answers are retried with the same idempotency key until one is accepted', async (t) => {
  const { node } = await startStack(t);
  const proxy = await flakyProxy(t, node.base, ['503', '503', 'pass', '503', 'pass']);
  const server = sdk(proxy.url);
  const r = await server.publish('order:1', 'order_update', { status: 'paid' });
  assert.equal(r.offset, 1);
  assert.equal(r.duplicate, undefined, 'the first two attempts did nothing');
  const keys = proxy.requests.slice(0, 3).map((q) => q.body.idempotency_key);
  assert.match(keys[0], /^[0-9a-f-]{36}$/, 'a key is generated when the caller gives none');
  assert.deepEqual(new Set(keys).size, 1, 'every retry repeats it');

  const b = await server.broadcast(['order:1', 'order:2'], 'sale', {}, { idempotencyKey: 'sale-7' });
  assert.deepEqual(b.results.map((x) => x.offset), [2, 1]);
  assert.deepEqual(proxy.requests.slice(3).map((q) => q.body.idempotency_key), ['sale-7', 'sale-7']);
});

test('a timed-out publish is retried with its key: the node publishes it once', async (t) => {
  const { node, server: direct } = await startStack(t);
  const alice = await connectClient(t, node, await direct.mintToken({ sub: 'alice' }, 60));
  await alice.request('subscribe', { channel: 'order:5', token: await direct.mintSubscriptionToken('alice', 'order:5', 60) });
  const proxy = await flakyProxy(t, node.base, ['hold']);
  const server = sdk(proxy.url, { timeout: 400 });
  // The node accepts the first attempt, but its answer never comes back.
  const r = await server.publish('order:5', 'order_shipped', { tracking: 'Z1' }, { idempotencyKey: 'ship-5' });
  assert.deepEqual(r, { offset: 1, epoch: r.epoch, duplicate: true }, 'the retry learns the first attempt was accepted');
  assert.equal(proxy.requests.length, 2);
  assert.deepEqual(proxy.requests.map((q) => q.body.idempotency_key), ['ship-5', 'ship-5']);
  // Publications of a channel arrive in order: once the marker is in, any duplicate would be too.
  await direct.publish('order:5', 'marker', {});
  await alice.waitFor((f) => f.type === 'marker');
  assert.equal(alice.frames.filter((f) => f.type === 'order_shipped').length, 1);
  assert.equal((await direct.history('order:5')).publications.length, 2);
});

test('when every attempt fails the error says why, after retries + 1 attempts', async (t) => {
  const { node } = await startStack(t);
  const unavailable = await flakyProxy(t, node.base, ['503', '503', '503', '503', '503']);
  const e1 = await sdk(unavailable.url, { retries: 3 }).publish('user:a', 'x', {}).catch((e) => e);
  assert.deepEqual([e1.code, e1.status, e1.attempts], ['unavailable', 503, 4]);
  assert.equal(new Set(unavailable.requests.map((q) => q.body.idempotency_key)).size, 1);

  const silent = await flakyProxy(t, node.base, ['hold', 'hold']);
  const e2 = await sdk(silent.url, { retries: 1, timeout: 200 }).presence('chat:x').catch((e) => e);
  assert.deepEqual([e2.code, e2.status, e2.attempts], ['timeout', undefined, 2]);

  const nobody = `http://127.0.0.1:${await freePort()}`;
  const e3 = await sdk(nobody, { retries: 2 }).stats().catch((e) => e);
  assert.deepEqual([e3.code, e3.attempts], ['network', 3]);
});

test('a node whose Redis is down answers 503; the SDK retries until Redis is back', async (t) => {
  const port = await freePort();
  let redis = await startRedisAt(t, port);
  const { server: direct, node } = await startStack(t, { redis });
  const statuses = [];
  let restarted = null;
  // The fetch the SDK uses: records each answer; Redis comes back after the first 503.
  const watching = async (url, init) => {
    const res = await fetch(url, init);
    statuses.push(res.status);
    if (res.status === 503 && !restarted) restarted = startRedisAt(t, port);
    return res;
  };
  const server = sdk(node.base, { fetch: watching, retries: 100, maxRetryDelay: 100 });
  await direct.publish('order:3', 'order_update', { n: 1 });
  await redis.stop();
  const r = await server.publish('order:3', 'order_update', { n: 2 }, { idempotencyKey: 'n-2' });
  redis = await restarted;
  assert.equal(statuses[0], 503, 'the node said: not accepted, retry');
  assert.equal(statuses.at(-1), 200);
  assert.ok(r.offset >= 1);
  await eventually('the publication in history', async () => {
    const h = await direct.history('order:3');
    return h.publications.some((p) => p.payload.n === 2);
  });
});
