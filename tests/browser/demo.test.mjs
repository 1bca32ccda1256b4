// The demo storefront in a real browser (Debian's Chromium, driven by
// playwright-core) against real development nodes. On the Redis broker: two pages
// chat and see each other's presence and typing; API publications appear; the node
// is restarted and the pages reconnect by themselves and show what was published
// meanwhile. On the memory broker: the inventory table is a live state channel
// (seeded by the first page, changed through the API, the SDK applying the node's
// deltas), and the viewers badge counts the pages on the live stream. Screenshots
// go to test-output/; with UPDATE_SCREENSHOT=1 the storefront's also replaces
// docs/demo.png (the README's), which is otherwise left alone so a test run does
// not change a tracked file.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { ROOT, startNode, startRedis, eventually } from '../jskit/index.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = join(ROOT, 'test-output');
const SDK = join(ROOT, 'clients', 'js', 'src');
/** A browser is slower than Node: every wait here gets 15 s. */
const wait = (what, check) => eventually(what, check, 15000);
const text = (page, sel) => page.locator(sel).innerText();
/** The inventory table as SKU -> the row's cells (product, price, stock). */
const table = (page) =>
  page.$$eval('#inventory tbody tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.sku, [...r.cells].slice(1).map((c) => c.textContent)])));

async function launch() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  after(() => browser.close());
  return browser;
}

/** A browser context whose pages load the working tree's SDK. */
async function storefront(browser, viewport) {
  const context = await browser.newContext({ viewport });
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
  return context;
}

/** Every frame each page received, to tell how the node sent a change. */
const received = new Map();

/** Opens `/demo?user=<user>` and waits until it is connected. */
async function shopper(context, base, user, errors) {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`${user}: ${e.message}`));
  const frames = [];
  received.set(page, frames);
  page.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => frames.push(JSON.parse(String(payload)))));
  await page.goto(`${base}/demo?user=${user}`);
  await wait(`${user}'s badge to say connected`, async () => (await text(page, '#badge')) === 'connected');
  return page;
}

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
  const publish = (channel, type, payload) => node.publish(channel, type, payload);

  const context = await storefront(await launch(), { width: 1280, height: 640 });
  const errors = [];
  const alice = await shopper(context, node.base, 'alice', errors);
  const bob = await shopper(context, node.base, 'bob', errors);

  // Presence both ways, and typing.
  await wait('alice sees bob online', async () => (await text(alice, '#online')).includes('bob'));
  await wait('bob sees alice online', async () => (await text(bob, '#online')).includes('alice'));
  await alice.locator('#text').pressSequentially('hel', { delay: 30 });
  await wait('bob sees alice typing', async () => (await text(bob, '#typing')).includes('alice is typing'));
  await alice.locator('#text').fill('hello from alice');
  await alice.locator('#chat button').click();
  await wait('bob gets the message', async () => (await text(bob, '#messages')).includes('alice: hello from alice'));
  await wait('alice sees her own message', async () => (await text(alice, '#messages')).includes('alice: hello from alice'));

  // Publications through the API appear on the pages; the inventory is seeded once.
  await publish('order:demo-1001', 'order_update', { status: 'paid' });
  for (const page of [alice, bob]) {
    await wait('the order status', async () => (await text(page, '#order-status')) === 'paid');
    await wait('the seeded inventory', async () => Object.keys(await table(page)).length === 20);
  }

  // The node goes away; services keep publishing into Redis; the node comes back.
  node.kill();
  await wait('alice notices', async () => (await text(alice, '#badge')) !== 'connected');
  cli('FCALL', 'switchyard_publish', '1', 'switchyard:{order:demo-1001}', JSON.stringify({ type: 'order_update', payload: { status: 'shipped' } }), '100', '86400');
  cli('FCALL', 'switchyard_publish', '1', 'switchyard:{chat:lobby}', JSON.stringify({ type: 'message', payload: { text: 'published while you were away' } }), '100', '604800');
  cli('FCALL', 'switchyard_set', '1', 'switchyard:{inventory:demo}', JSON.stringify({ type: 'sku', key: 'SKU-05', payload: { name: 'Court Classic 40', price: 95, stock: 0 } }), '10000', '0');
  await node.start();
  for (const page of [alice, bob]) {
    await wait('the page to reconnect by itself', async () => (await text(page, '#badge')) === 'connected');
    await wait('the missed order update', async () => (await text(page, '#order-status')) === 'shipped');
    await wait('the missed chat message', async () => (await text(page, '#messages')).includes('published while you were away'));
    await wait('the missed stock change', async () => (await table(page))['SKU-05']?.[2] === '0');
    await wait('the viewers badge to count both pages again', async () => (await text(page, '#viewers')) === '2 watching');
  }
  const lines = (await text(bob, '#messages')).split('\n').filter((l) => l.includes('hello from alice'));
  assert.equal(lines.length, 1, 'nothing shown twice across the reconnect');
  assert.equal(Object.keys(await table(bob)).length, 20, 'the inventory was seeded once and kept');
  mkdirSync(OUT, { recursive: true });
  await alice.screenshot({ path: join(OUT, 'demo.png') });
  assert.deepEqual(errors, [], 'no script errors on the pages');
});

test('the inventory table shows live state through deltas, and the viewers badge counts the pages', async () => {
  const node = await startNode('', { dev: true, stderr: 'ignore' });
  after(() => node.stop());
  const sku = (key, payload) => node.api('/api/publish', { channel: 'inventory:demo', type: 'sku', key, payload });

  const context = await storefront(await launch(), { width: 1280, height: 760 });
  const errors = [];
  const alice = await shopper(context, node.base, 'alice', errors);
  const bob = await shopper(context, node.base, 'bob', errors);

  // A fresh node has no inventory: the first page seeds the 20 SKUs, both show them.
  for (const page of [alice, bob]) {
    await wait('20 SKUs in the table', async () => Object.keys(await table(page)).length === 20);
  }
  assert.deepEqual((await table(alice))['SKU-03'], ['Trail Runner 42', '$89', '24']);
  assert.deepEqual(await table(bob), await table(alice));

  // Two shoppers on the live stream.
  for (const page of [alice, bob]) {
    await wait('the viewers badge to count both pages', async () => (await text(page, '#viewers')) === '2 watching');
  }

  // A service changes one field of a SKU. A page that got the SKU's last version in
  // its snapshot gets the first change whole; the next is a patch of the stock
  // alone, which the SDK merges: the table shows the full value.
  await sku('SKU-03', { name: 'Trail Runner 42', price: 89, stock: 40 });
  await sku('SKU-03', { name: 'Trail Runner 42', price: 89, stock: 38 });
  for (const page of [alice, bob]) {
    await wait('the full value after the delta', async () => (await table(page))['SKU-03']?.join('|') === 'Trail Runner 42|$89|38');
    const last = received.get(page).filter((f) => f.key === 'SKU-03').at(-1);
    assert.deepEqual([last.delta, last.payload], [true, { stock: 38 }], 'the node sent the change as a merge patch');
  }

  // "Simulate sales" publishes through the API from the page; both tables follow.
  const before = await table(alice);
  await alice.locator('#sell').click();
  await wait('some stock to change', async () => {
    const now = await table(alice);
    return Object.keys(now).some((k) => now[k][2] !== before[k][2]);
  });
  await wait('bob sees the same table', async () => JSON.stringify(await table(bob)) === JSON.stringify(await table(alice)));

  // A chat line for the screenshot, then the picture the README shows.
  await bob.locator('#text').fill('Is the Hiker Pro 42 back in stock?');
  await bob.locator('#chat button').click();
  await wait('alice gets the message', async () => (await text(alice, '#messages')).includes('Hiker Pro 42'));
  await wait('the typing line to clear', async () => (await text(alice, '#typing')) === '');
  mkdirSync(OUT, { recursive: true });
  const picture = await alice.screenshot({ path: join(OUT, 'storefront.png'), fullPage: true });
  if (process.env.UPDATE_SCREENSHOT === '1') {
    mkdirSync(join(ROOT, 'docs'), { recursive: true });
    writeFileSync(join(ROOT, 'docs', 'demo.png'), picture);
  }

  // A deleted SKU leaves the table.
  await node.api('/api/publish', { channel: 'inventory:demo', type: 'sku', key: 'SKU-20', delete: true });
  for (const page of [alice, bob]) {
    await wait('SKU-20 to disappear', async () => {
      const rows = await table(page);
      return Object.keys(rows).length === 19 && !('SKU-20' in rows);
    });
  }

  // One shopper leaves: the other's badge counts one.
  await bob.close();
  await wait('the viewers badge to count one page', async () => (await text(alice, '#viewers')) === '1 watching');
  assert.deepEqual(errors, [], 'no script errors on the pages');
});
