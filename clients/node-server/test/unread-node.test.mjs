// GET /api/unread (SPEC 15.1) through the SDK: read positions a client moved with
// mark_read, as a backend sees them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, redisFor, connectClient } from './helpers.mjs';

test('unread() gives offset, read_offset and unread per channel of a user', async (t) => {
  const redis = await redisFor(t);
  const { node, server } = await startStack(t, { redis, toml: '[namespaces.chat]\nread_state = true\n' });
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice', allow: ['chat:*'] }, 60));
  for (const ch of ['chat:c1', 'chat:c2']) assert.equal((await alice.request('subscribe', { channel: ch })).type, 'subscribed');
  for (let i = 0; i < 3; i++) await server.publish('chat:c1', 'chat_message', { i });
  await server.publish('chat:c2', 'chat_message', { i: 0 });
  const read = await alice.request('mark_read', { channel: 'chat:c1', offset: 2 });
  assert.deepEqual([read.type, read.payload.read_offset, read.payload.unread], ['read', 2, 1]);
  await alice.request('mark_read', { channel: 'chat:c2', offset: 1 });

  const all = await server.unread('alice');
  const byChannel = Object.fromEntries(all.channels.map((c) => [c.channel, c]));
  assert.deepEqual(byChannel['chat:c1'], { channel: 'chat:c1', offset: 3, read_offset: 2, unread: 1 });
  assert.deepEqual(byChannel['chat:c2'], { channel: 'chat:c2', offset: 1, read_offset: 1, unread: 0 });
  const one = await server.unread('alice', ['chat:c1']);
  assert.deepEqual(one.channels.map((c) => c.channel), ['chat:c1']);
});
