// Webhooks (SPEC 17) end to end: a real node POSTs signed batches to an HTTP server
// here, and verifyWebhook accepts them with the configured secret (and only with it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { verifyWebhook, WebhookSignatureError } from '../src/index.js';
import { startStack, connectClient, eventually } from './helpers.mjs';

test('the events a node posts verify with the secret and carry the transitions', async (t) => {
  const received = [];
  const hook = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    received.push({ body: Buffer.concat(chunks), headers: req.headers });
    res.writeHead(204).end();
  });
  await new Promise((r) => hook.listen(0, '127.0.0.1', r));
  t.after(() => hook.close());
  const toml = `[[webhooks]]\nurl = "http://127.0.0.1:${hook.address().port}/hooks"\nsecret = "whsec-e2e"\nevents = ["user_online", "user_offline"]\n`;
  const { node, server } = await startStack(t, { toml });

  const agent = await connectClient(t, node, await server.mintToken({ sub: 'agent-1' }, 60));
  agent.close();
  const events = () => received.flatMap((r) => verifyWebhook(r.body, r.headers, 'whsec-e2e'));
  await eventually('online and offline posted', () => events().some((e) => e.event === 'user_offline'));
  const got = events();
  assert.deepEqual(got.map((e) => [e.event, e.user_id]), [['user_online', 'agent-1'], ['user_offline', 'agent-1']]);
  assert.equal(got[0].node, 'js-node');
  assert.throws(() => verifyWebhook(received[0].body, received[0].headers, 'another'), WebhookSignatureError);
});
