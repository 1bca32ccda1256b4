// State channels (SPEC 16.1) through the SDK: keyed publishes over HTTP and with
// FCALL switchyard_set, deletes, GET /api/state, and the state_max_keys limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, redisFor, connectClient } from './helpers.mjs';

const LIVE = '[namespaces.live]\nsubscribe = "any"\nstate = true\nstate_max_keys = 3\n';
const VIA_REDIS = { via: 'redis', stateMaxKeys: 3, stateTtl: 0 };

test('keyed publishes over HTTP and Redis; state() returns the newest value per key', async (t) => {
  const redis = await redisFor(t);
  const { node, server } = await startStack(t, { redis, toml: LIVE });
  const viewer = await connectClient(t, node, await server.mintToken({ sub: 'v1' }, 60));
  assert.equal((await viewer.request('subscribe', { channel: 'live:s1' })).type, 'subscribed');

  const a = await server.publish('live:s1', 'viewers', { count: 10 }, { key: 'viewers' });
  const b = await server.publish('live:s1', 'pinned', { sku: 'serum-1' }, { ...VIA_REDIS, key: 'pinned' });
  const c = await server.publish('live:s1', 'viewers', { count: 12 }, { ...VIA_REDIS, key: 'viewers' });
  assert.deepEqual([a.offset, b.offset, c.offset], [1, 2, 3]);
  assert.equal(b.epoch, a.epoch);
  await viewer.waitFor((f) => f.type === 'viewers' && f.key === 'viewers' && f.payload.count === 12);

  const all = await server.state('live:s1');
  assert.equal(all.channel, 'live:s1');
  assert.equal(all.offset, 3);
  assert.deepEqual(all.entries.map((e) => [e.key, e.payload, e.offset]), [['pinned', { sku: 'serum-1' }, 2], ['viewers', { count: 12 }, 3]]);
  const some = await server.state('live:s1', ['pinned']);
  assert.deepEqual(some.entries.map((e) => e.key), ['pinned']);

  await server.publish('live:s1', 'pinned', undefined, { key: 'pinned', delete: true });
  const gone = await viewer.waitFor((f) => f.type === 'pinned' && f.deleted === true);
  assert.ok(!('payload' in gone));
  const after = await server.state('live:s1');
  assert.deepEqual(after.entries.filter((e) => !e.deleted).map((e) => e.key), ['viewers']);
  await server.publish('live:s1', 'viewers', undefined, { ...VIA_REDIS, key: 'viewers', delete: true });
  assert.deepEqual((await server.state('live:s1')).entries.filter((e) => !e.deleted), []);
});

test('a state channel refuses a publish without key and a key beyond state_max_keys', async (t) => {
  const redis = await redisFor(t);
  const { server } = await startStack(t, { redis, toml: LIVE });
  const nokey = await server.publish('live:s2', 'viewers', { count: 1 }).catch((e) => e);
  assert.equal(nokey.status, 400);
  for (const k of ['a', 'b', 'c']) await server.publish('live:s2', 'k', 1, { key: k });
  const http = await server.publish('live:s2', 'k', 1, { key: 'd' }).catch((e) => e);
  assert.deepEqual([http.code, http.status], ['limit_exceeded', 400]);
  const viaRedis = await server.publish('live:s2', 'k', 1, { ...VIA_REDIS, key: 'e' }).catch((e) => e);
  assert.deepEqual([viaRedis.code, viaRedis.attempts], ['limit_exceeded', 1]);
  await server.publish('live:s2', 'k', 2, { key: 'a' });
});
