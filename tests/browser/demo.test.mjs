// The demo storefront in a real browser (Debian's Chromium, driven by
// playwright-core) against a real development node on the Redis broker: two pages
// chat and see each other's presence and typing; API publications appear; the node
// is restarted and the pages reconnect by themselves and show what was published
// meanwhile. A screenshot is saved under test-output/.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { ROOT, startNode, startRedis, eventually } from '../jskit/index.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = join(ROOT, 'test-output');
const SDK = join(ROOT, 'clients', 'js', 'src');
/** A browser is slower than Node: every wait here gets 15 s. */
const wait = (what, check) => eventually(what, check, 15000);

test('two shoppers chat, see presence and typing, get live updates, and survive a node restart', async () => {
  const redis = await startRedis();
  after(() => redis.stop());
  const cli = redis.cli;

  // Development mode (no config file, no secret): the node serves /demo and makes new
  // secrets at every start; the page fetches a fresh token for every connect.
  const node = await startNode('', {
    dev: true,
    env: { SWITCHYARD_BROKER: 'redis', SWITCHYARD_REDIS__URL: redis.url },
    stderr: 'ignore',
  });
  after(() => node.stop());
  const base = node.base;
  const publish = (channel, type, payload) => node.publish(channel, type, payload);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  after(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1280, height: 640 } });
  // The page imports the SDK from /demo/sdk/, which the binary embeds when it is
  // built. Serve the working tree's clients/js/src instead, so this test runs the SDK
  // as it is now even against a binary built from an older tree (SWITCHYARD_BIN).
  await context.route('**/demo/sdk/*', (route) => {
    const name = new URL(route.request().url()).pathname.split('/').pop();
    if (!/^[a-z]+\.js$/.test(name)) return route.fulfill({ status: 404 });
    let body;
    try {
      body = readFileSync(join(SDK, name), 'utf8');
    } catch {
      return route.fulfill({ status: 404 });
    }
    return route.fulfill({ status: 200, contentType: 'text/javascript; charset=utf-8', body });
  });
  const alice = await context.newPage();
  const bob = await context.newPage();
  const errors = [];
  for (const p of [alice, bob]) p.on('pageerror', (e) => errors.push(e.message));
  await alice.goto(`${base}/demo?user=alice`);
  await bob.goto(`${base}/demo?user=bob`);
  const text = (page, sel) => page.locator(sel).innerText();
  for (const page of [alice, bob]) {
    await wait('the badge to say connected', async () => (await text(page, '#badge')) === 'connected');
  }

  // Presence both ways, and typing.
  await wait('alice sees bob online', async () => (await text(alice, '#online')).includes('bob'));
  await wait('bob sees alice online', async () => (await text(bob, '#online')).includes('alice'));
  await alice.locator('#text').pressSequentially('hel', { delay: 30 });
  await wait('bob sees alice typing', async () => (await text(bob, '#typing')).includes('alice is typing'));
  await alice.locator('#text').fill('hello from alice');
  await alice.locator('#chat button').click();
  await wait('bob gets the message', async () => (await text(bob, '#messages')).includes('alice: hello from alice'));
  await wait('alice sees her own message', async () => (await text(alice, '#messages')).includes('alice: hello from alice'));

  // Publications through the API appear on the pages.
  await publish('public:inventory', 'inventory_update', { sku: 'SNEAKER-X-42', quantity: 7 });
  await publish('order:demo-1001', 'order_update', { status: 'paid' });
  for (const page of [alice, bob]) {
    await wait('the stock counter', async () => (await text(page, '#stock')) === '7');
    await wait('the order status', async () => (await text(page, '#order-status')) === 'paid');
  }

  // The node goes away; services keep publishing into Redis; the node comes back.
  node.kill();
  await wait('alice notices', async () => (await text(alice, '#badge')) !== 'connected');
  cli('FCALL', 'switchyard_publish', '1', 'switchyard:{order:demo-1001}', JSON.stringify({ type: 'order_update', payload: { status: 'shipped' } }), '100', '86400');
  cli('FCALL', 'switchyard_publish', '1', 'switchyard:{chat:lobby}', JSON.stringify({ type: 'message', payload: { text: 'published while you were away' } }), '100', '604800');
  await node.start();
  for (const page of [alice, bob]) {
    await wait('the page to reconnect by itself', async () => (await text(page, '#badge')) === 'connected');
    await wait('the missed order update', async () => (await text(page, '#order-status')) === 'shipped');
    await wait('the missed chat message', async () => (await text(page, '#messages')).includes('published while you were away'));
  }
  const lines = (await text(bob, '#messages')).split('\n').filter((l) => l.includes('hello from alice'));
  assert.equal(lines.length, 1, 'nothing shown twice across the reconnect');
  mkdirSync(OUT, { recursive: true });
  await alice.screenshot({ path: join(OUT, 'demo.png') });
  assert.deepEqual(errors, [], 'no script errors on the pages');
});
