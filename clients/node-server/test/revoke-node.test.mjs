// POST /api/revoke (SPEC 3, 6) through the SDK: the user's connections close with
// 4003 and tokens issued before `before` are refused; newer ones work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startStack, connectClient, eventually } from './helpers.mjs';

async function authAnswer(t, node, token) {
  const ws = new WebSocket(node.ws);
  t.after(() => ws.terminate());
  const frames = [];
  ws.on('message', (d) => frames.push(JSON.parse(String(d))));
  ws.on('error', () => {});
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ type: 'auth', id: '1', payload: { token } }));
  return eventually('the auth answer', () => frames.find((f) => f.id === '1'));
}

test('revoke closes the connections and refuses older tokens', async (t) => {
  const { node, server } = await startStack(t);
  const before = Math.floor(Date.now() / 1000);
  const old = await server.mintToken({ sub: 'alice', iat: before - 60 }, 3600);
  const alice = await connectClient(t, node, old);
  const bob = await connectClient(t, node, await server.mintToken({ sub: 'bob', iat: before - 60 }, 3600));

  await server.revoke('alice', before);
  await eventually('alice closed', () => alice.closed);
  assert.equal(alice.closed.code, 4003);
  assert.equal(bob.closed, null, 'only that user');
  assert.equal((await authAnswer(t, node, old)).type, 'auth_error');
  const fresh = await server.mintToken({ sub: 'alice', iat: before + 1 }, 3600);
  assert.equal((await authAnswer(t, node, fresh)).type, 'auth_success');

  await server.revoke('bob', new Date());
  await eventually('bob closed', () => bob.closed);
});
