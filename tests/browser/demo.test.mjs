// The demo storefront in a real browser (Debian's Chromium, driven by
// playwright-core) against a real development node on the Redis broker: two pages
// chat and see each other's presence and typing; API publications appear; the node
// is restarted and the pages reconnect by themselves and show what was published
// meanwhile. A screenshot is saved under test-output/.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const BIN = process.env.SWITCHYARD_BIN || join(root, 'target', 'debug', 'switchyard');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = join(root, 'test-output');
const KEY = 'browser-test-key';

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

async function eventually(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('two shoppers chat, see presence and typing, get live updates, and survive a node restart', async () => {
  const redisPort = await freePort();
  const redisDir = mkdtempSync(join(tmpdir(), 'switchyard-browser-redis-'));
  const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--dir', redisDir], { stdio: 'ignore' });
  after(() => {
    redis.kill('SIGKILL');
    rmSync(redisDir, { recursive: true, force: true });
  });
  const cli = (...args) => execFileSync('redis-cli', ['-p', String(redisPort), ...args], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  await eventually('redis', () => {
    try {
      return cli('PING').trim() === 'PONG';
    } catch {
      return false;
    }
  });

  // Development mode (no config file): the node serves /demo. Fixed secrets through
  // the environment so tokens stay valid across the restart.
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = { ...process.env };
  delete env.SWITCHYARD_CONFIG;
  Object.assign(env, {
    SWITCHYARD_LISTEN: `127.0.0.1:${port}`,
    SWITCHYARD_BROKER: 'redis',
    SWITCHYARD_REDIS__URL: `redis://127.0.0.1:${redisPort}`,
    SWITCHYARD_AUTH__JWT_SECRET: 'browser-test-secret',
    SWITCHYARD_API__KEY: KEY,
  });
  let node;
  const startNode = async () => {
    node = spawn(BIN, [], { env, stdio: 'ignore' });
    await eventually('the node to be ready', async () => {
      try {
        return (await fetch(`${base}/ready`)).ok;
      } catch {
        return false;
      }
    });
  };
  await startNode();
  after(() => node.kill('SIGKILL'));
  const publish = async (channel, type, payload) => {
    const r = await fetch(`${base}/api/publish`, {
      method: 'POST',
      headers: { 'X-API-Key': KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify({ channel, type, payload }),
    });
    assert.equal(r.status, 200, await r.text());
  };

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  after(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1280, height: 640 } });
  const alice = await context.newPage();
  const bob = await context.newPage();
  const errors = [];
  for (const p of [alice, bob]) p.on('pageerror', (e) => errors.push(e.message));
  await alice.goto(`${base}/demo?user=alice`);
  await bob.goto(`${base}/demo?user=bob`);
  const text = (page, sel) => page.locator(sel).innerText();
  for (const page of [alice, bob]) {
    await eventually('the badge to say connected', async () => (await text(page, '#badge')) === 'connected');
  }

  // Presence both ways, and typing.
  await eventually('alice sees bob online', async () => (await text(alice, '#online')).includes('bob'));
  await eventually('bob sees alice online', async () => (await text(bob, '#online')).includes('alice'));
  await alice.locator('#text').pressSequentially('hel', { delay: 30 });
  await eventually('bob sees alice typing', async () => (await text(bob, '#typing')).includes('alice is typing'));
  await alice.locator('#text').fill('hello from alice');
  await alice.locator('#chat button').click();
  await eventually('bob gets the message', async () => (await text(bob, '#messages')).includes('alice: hello from alice'));
  await eventually('alice sees her own message', async () => (await text(alice, '#messages')).includes('alice: hello from alice'));

  // Publications through the API appear on the pages.
  await publish('public:inventory', 'inventory_update', { sku: 'SNEAKER-X-42', quantity: 7 });
  await publish('order:demo-1001', 'order_update', { status: 'paid' });
  for (const page of [alice, bob]) {
    await eventually('the stock counter', async () => (await text(page, '#stock')) === '7');
    await eventually('the order status', async () => (await text(page, '#order-status')) === 'paid');
  }

  // The node goes away; services keep publishing into Redis; the node comes back.
  node.kill('SIGKILL');
  await eventually('alice notices', async () => (await text(alice, '#badge')) !== 'connected');
  cli('FCALL', 'switchyard_publish', '1', 'switchyard:{order:demo-1001}', JSON.stringify({ type: 'order_update', payload: { status: 'shipped' } }), '100', '86400');
  cli('FCALL', 'switchyard_publish', '1', 'switchyard:{chat:lobby}', JSON.stringify({ type: 'message', payload: { text: 'published while you were away' } }), '100', '604800');
  await startNode();
  for (const page of [alice, bob]) {
    await eventually('the page to reconnect by itself', async () => (await text(page, '#badge')) === 'connected');
    await eventually('the missed order update', async () => (await text(page, '#order-status')) === 'shipped');
    await eventually('the missed chat message', async () => (await text(page, '#messages')).includes('published while you were away'));
  }
  const lines = (await text(bob, '#messages')).split('\n').filter((l) => l.includes('hello from alice'));
  assert.equal(lines.length, 1, 'nothing shown twice across the reconnect');
  mkdirSync(OUT, { recursive: true });
  await alice.screenshot({ path: join(OUT, 'demo.png') });
  assert.deepEqual(errors, [], 'no script errors on the pages');
});
