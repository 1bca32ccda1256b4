// mintToken / mintSubscriptionToken (SPEC 3, 18): HS256 JWTs with iat and exp that a
// real node accepts, and subscription tokens that grant exactly one channel to one user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jwtVerify, decodeProtectedHeader } from 'jose';
import { SwitchyardServer } from '../src/index.js';
import { startStack, connectClient, JWT_SECRET } from './helpers.mjs';

const key = new TextEncoder().encode(JWT_SECRET);

test('tokens carry the claims, iat and exp = iat + ttl, signed HS256 with jwtSecret', async () => {
  const server = new SwitchyardServer({ jwtSecret: JWT_SECRET });
  const before = Math.floor(Date.now() / 1000);
  const token = await server.mintToken({ sub: 42, roles: ['admin'], info: { name: 'Ana' } }, 3600);
  const { payload } = await jwtVerify(token, key, { algorithms: ['HS256'] });
  assert.deepEqual(decodeProtectedHeader(token), { alg: 'HS256', typ: 'JWT' });
  assert.equal(payload.sub, '42', 'a numeric user id becomes the string JWT wants');
  assert.deepEqual(payload.roles, ['admin']);
  assert.deepEqual(payload.info, { name: 'Ana' });
  assert.ok(payload.iat >= before && payload.iat <= before + 2);
  assert.equal(payload.exp, payload.iat + 3600);
  const sub = await server.mintSubscriptionToken('7', 'order:123', '10m');
  const s = (await jwtVerify(sub, key)).payload;
  assert.deepEqual([s.sub, s.channel, s.exp - s.iat], ['7', 'order:123', 600]);

  await assert.rejects(new SwitchyardServer({}).mintToken({ sub: 'a' }, 60), /jwtSecret/);
  await assert.rejects(server.mintToken({ roles: [] }, 60), /sub/);
  await assert.rejects(server.mintToken({ sub: 'a' }, 0), /ttl/);
  await assert.rejects(server.mintToken({ sub: 'a' }, 'soon'), /ttl/);
  await assert.rejects(server.mintSubscriptionToken('a', '', 60), /channel/);
  await assert.rejects(new SwitchyardServer({ jwtSecret: 'x', jwtAlgorithm: 'none' }).mintToken({ sub: 'a' }, 60), /algorithm/);
});

test('a real node accepts the tokens; a subscription token grants one channel to one user', async (t) => {
  const { node, server } = await startStack(t);
  const alice = await connectClient(t, node, await server.mintToken({ sub: 'alice', channels: ['public:news'] }, 60));
  assert.equal(alice.hello.user_id, 'alice');
  assert.deepEqual(alice.hello.channels.sort(), ['public:news', 'user:alice']);

  const granted = await alice.request('subscribe', { channel: 'order:55', token: await server.mintSubscriptionToken('alice', 'order:55', 60) });
  assert.equal(granted.type, 'subscribed');
  const otherChannel = await alice.request('subscribe', { channel: 'order:56', token: await server.mintSubscriptionToken('alice', 'order:55', 60) });
  assert.deepEqual([otherChannel.type, otherChannel.payload.code], ['error', 'forbidden']);
  const otherUser = await alice.request('subscribe', { channel: 'order:57', token: await server.mintSubscriptionToken('bob', 'order:57', 60) });
  assert.deepEqual([otherUser.type, otherUser.payload.code], ['error', 'forbidden']);

  const hs512 = new SwitchyardServer({ jwtSecret: JWT_SECRET, jwtAlgorithm: 'HS512' });
  const bob = await connectClient(t, node, await hs512.mintToken({ sub: 'bob' }, 60));
  assert.equal(bob.hello.user_id, 'bob');
});
