// consume() (SPEC 8.3, 17, 18) against a real node on a real redis-server: client
// publications of `forward` namespaces from the upstream stream and lifecycle events
// from the events stream, decoded; XACK only after the handler resolved; a failed
// entry or one left by a dead consumer is claimed with XAUTOCLAIM and handled again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, redisFor, connectClient, eventually, startRedisAt, freePort } from './helpers.mjs';

const pending = (redis, stream, group) => Number(redis.cli('XPENDING', `switchyard:${stream}`, group).split('\n')[0]);

/** Sends a client publication to `channel` and waits for its ack. */
async function say(client, channel, text) {
  const id = `say-${text}`;
  client.send({ type: 'chat_message', id, channel, payload: { text } });
  const ack = await client.waitFor((f) => f.id === id);
  assert.equal(ack.type, 'ack', JSON.stringify(ack));
}

test('upstream: client publications, decoded, acknowledged after the handler resolved', async (t) => {
  const redis = await redisFor(t);
  const { node, server } = await startStack(t, { redis });
  const got = [];
  const consumer = server.consume('upstream', 'moderation', async (entry) => {
    got.push(entry);
  });
  await consumer.ready;
  assert.match(redis.cli('EXISTS', 'switchyard:upstream'), /1/, 'the group was made with MKSTREAM');
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice', allow: ['chat:*'] }, 60));
  await alice.request('subscribe', { channel: 'chat:live-1' });
  await say(alice, 'chat:live-1', 'hello');
  await eventually('the entry handled', () => got.length === 1);
  const [e] = got;
  assert.match(e.id, /^\d+-\d+$/);
  assert.deepEqual(
    { ...e, id: undefined, ts: undefined },
    { id: undefined, ts: undefined, channel: 'chat:live-1', type: 'chat_message', payload: { text: 'hello' }, user_id: 'alice', conn_id: alice.hello.conn_id, node: 'js-node' },
  );
  assert.ok(!('session_id' in e), 'an empty id is absent');
  assert.ok(!Number.isNaN(Date.parse(e.ts)));
  await eventually('acknowledged', () => pending(redis, 'upstream', 'moderation') === 0);
  await consumer.stop();
  await consumer.done;
});

test('a handler that throws leaves its entry pending; it is handled again once idle', async (t) => {
  const redis = await redisFor(t);
  const { node, server } = await startStack(t, { redis });
  const calls = [];
  const errors = [];
  const consumer = server.consume(
    'upstream',
    'moderation',
    async (entry) => {
      calls.push(entry.payload.text);
      if (calls.length === 1) throw new Error('moderation service down');
    },
    { claimIdle: 200, onError: (err, entry) => errors.push([err.message, entry.payload.text]) },
  );
  await consumer.ready;
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice', allow: ['chat:*'] }, 60));
  await alice.request('subscribe', { channel: 'chat:live-1' });
  await say(alice, 'chat:live-1', 'buy now');
  await eventually('the failed entry pending', () => errors.length === 1 && pending(redis, 'upstream', 'moderation') === 1);
  await eventually('handled again and acknowledged', () => calls.length === 2 && pending(redis, 'upstream', 'moderation') === 0);
  assert.deepEqual(calls, ['buy now', 'buy now']);
  assert.deepEqual(errors, [['moderation service down', 'buy now']]);
});

test('entries left pending by a dead consumer are claimed and handled', async (t) => {
  const redis = await redisFor(t);
  const { node, server } = await startStack(t, { redis });
  redis.cli('XGROUP', 'CREATE', 'switchyard:upstream', 'billing', '$', 'MKSTREAM');
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice', allow: ['chat:*'] }, 60));
  await alice.request('subscribe', { channel: 'chat:live-1' });
  for (const text of ['one', 'two', 'three']) await say(alice, 'chat:live-1', text);
  // A worker read them and died before acknowledging.
  redis.cli('XREADGROUP', 'GROUP', 'billing', 'dead-worker', 'COUNT', '10', 'STREAMS', 'switchyard:upstream', '>');
  assert.equal(pending(redis, 'upstream', 'billing'), 3);
  const got = [];
  const consumer = server.consume('upstream', 'billing', (e) => got.push(e.payload.text), { claimIdle: 100, consumer: 'worker-2' });
  await eventually('claimed and handled', () => got.length === 3 && pending(redis, 'upstream', 'billing') === 0);
  assert.deepEqual(got, ['one', 'two', 'three']);
  assert.equal(consumer.name, 'worker-2');
});

test('events: user_online/user_offline and occupied/vacated, in the order of the transitions', async (t) => {
  const redis = await redisFor(t);
  const { node, server } = await startStack(t, { redis });
  const got = [];
  const consumer = server.consume('events', 'agents', (e) => got.push(e));
  await consumer.ready;
  const agent = await connectClient(t, node, await server.mintToken({ sub: 'agent-7', roles: ['admin'] }, 60));
  await eventually('user_online', () => got.some((e) => e.event === 'user_online'));
  agent.close();
  await eventually('user_offline and vacated', () => got.some((e) => e.event === 'user_offline') && got.some((e) => e.event === 'vacated'));
  const online = got.find((e) => e.event === 'user_online');
  assert.equal(online.user_id, 'agent-7');
  assert.equal(online.conn_id, agent.hello.conn_id);
  assert.equal(online.node, 'js-node');
  assert.deepEqual(online.data, {});
  assert.ok(!('channel' in online) && !('session_id' in online));
  const occupied = got.find((e) => e.event === 'occupied');
  assert.deepEqual([occupied.channel, occupied.data], ['user:agent-7', { channel: 'user:agent-7' }]);
  const order = got.map((e) => e.event);
  assert.ok(order.indexOf('user_online') < order.indexOf('user_offline'));
  assert.ok(order.indexOf('occupied') < order.indexOf('vacated'));
  await eventually('all acknowledged', () => pending(redis, 'events', 'agents') === 0);
});

test('consumers of one group share the entries; another group gets them all', async (t) => {
  const redis = await redisFor(t);
  const { node, server } = await startStack(t, { redis });
  const a = [];
  const b = [];
  const all = [];
  const consumers = [
    server.consume('upstream', 'workers', (e) => a.push(e.id), { count: 1 }),
    server.consume('upstream', 'workers', (e) => b.push(e.id), { count: 1 }),
    server.consume('upstream', 'audit', (e) => all.push(e.id)),
  ];
  await Promise.all(consumers.map((c) => c.ready));
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice', allow: ['chat:*'] }, 60));
  await alice.request('subscribe', { channel: 'chat:live-1' });
  for (let i = 0; i < 10; i++) await say(alice, 'chat:live-1', `m${i}`);
  await eventually('every entry handled in both groups', () => a.length + b.length === 10 && all.length === 10);
  assert.equal(new Set([...a, ...b]).size, 10, 'each entry once within a group');
  assert.deepEqual([...a, ...b].sort(), [...all].sort());
  await server.close();
  await Promise.all(consumers.map((c) => c.done));
});

test('stop() lets the entry in hand finish and be acknowledged', async (t) => {
  const redis = await redisFor(t);
  const { node, server } = await startStack(t, { redis });
  let release;
  const gate = new Promise((r) => {
    release = r;
  });
  let started = false;
  let finished = false;
  const consumer = server.consume('upstream', 'slow', async () => {
    started = true;
    await gate;
    finished = true;
  });
  await consumer.ready;
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice', allow: ['chat:*'] }, 60));
  await alice.request('subscribe', { channel: 'chat:live-1' });
  await say(alice, 'chat:live-1', 'slow one');
  await eventually('the handler started', () => started);
  const stopping = consumer.stop();
  release();
  await stopping;
  assert.ok(finished);
  assert.equal(pending(redis, 'upstream', 'slow'), 0);
});

test('a consumer rides out a Redis restart: it reconnects and makes its group again', async (t) => {
  const port = await freePort();
  let redis = await startRedisAt(t, port);
  const { node, server } = await startStack(t, { redis });
  const got = [];
  const errors = [];
  const consumer = server.consume('upstream', 'moderation', (e) => got.push(e.payload.text), { onError: (e) => errors.push(e) });
  await consumer.ready;
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice', allow: ['chat:*'] }, 60));
  await alice.request('subscribe', { channel: 'chat:live-1' });
  await say(alice, 'chat:live-1', 'before');
  await eventually('handled', () => got.length === 1);

  await redis.stop();
  redis = await startRedisAt(t, port);
  // The new Redis is empty: the consumer notices its group is gone and makes it again.
  await eventually('the group made again', () => /moderation/.test(redis.cli('XINFO', 'GROUPS', 'switchyard:upstream')), 15000);
  await eventually('the node ready again', async () => (await fetch(`${node.base}/ready`)).ok, 15000);
  // History was lost with Redis: the node closed alice's chat (4012); bob joins now.
  const bob = await connectClient(t, node, await server.mintToken({ sub: 'bob', allow: ['chat:*'] }, 60));
  assert.equal((await bob.request('subscribe', { channel: 'chat:live-1' })).type, 'subscribed');
  await say(bob, 'chat:live-1', 'after');
  await eventually('handled after the restart', () => got.includes('after'));
  assert.ok(errors.length > 0, 'the outage was reported to onError');
});
