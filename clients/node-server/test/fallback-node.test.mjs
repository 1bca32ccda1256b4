// fallback (SPEC 15.3) through the SDK: a publication no device confirmed in time
// becomes exactly one `undelivered` event, read here with consume("events").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, redisFor, connectClient, eventually } from './helpers.mjs';

const RECEIPTS = '[namespaces.user]\nreceipts = true\nhistory_size = 100\nhistory_ttl = "1h"\n';

test('an unconfirmed publication gives one undelivered event; a confirmed one none', async (t) => {
  const redis = await redisFor(t);
  const { node, server } = await startStack(t, { redis, toml: RECEIPTS });
  const events = [];
  const consumer = server.consume('events', 'push', (e) => {
    if (e.event === 'undelivered') events.push(e);
  });
  await consumer.ready;

  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice' }, 60));
  const confirmed = await server.publish('user:alice', 'notification', { title: 'seen' }, { fallback: { after: 1 } });
  const got = await alice.waitFor((f) => f.type === 'notification');
  alice.send({ type: 'received', payload: { channel: 'user:alice', offset: got.offset } });

  const r = await server.publish('user:bob', 'order_shipped', { order: 7 }, {
    idempotencyKey: 'order-7-shipped',
    fallback: { after: '1s', data: { email: 'bob@example.com' } },
  });
  assert.equal(r.offset, 1);
  await eventually('the undelivered event', () => events.length >= 1, 15000);
  const [e] = events;
  assert.equal(e.channel, 'user:bob');
  assert.deepEqual(e.data, { channel: 'user:bob', offset: 1, user_id: 'bob', type: 'order_shipped', payload: { order: 7 }, data: { email: 'bob@example.com' } });
  // The confirmed one is counted as such, and never becomes an event.
  await eventually('the confirmed fallback counted', async () => {
    const text = await (await fetch(`${node.base}/metrics`)).text();
    return /switchyard_fallbacks_total\{outcome="confirmed"\} 1\b/.test(text);
  }, 15000);
  assert.ok(events.every((x) => x.data.offset !== confirmed.offset || x.channel !== 'user:alice'));
});
