// Real parts for the SDK tests: the switchyard binary on a free port (restartable on
// the same port), a real redis-server, a TCP proxy that can go silent, token minting
// with the binary's own `token` command. Waits poll with a deadline; nothing sleeps.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.SWITCHYARD_BIN || join(here, '..', '..', '..', 'target', 'debug', 'switchyard');
export const API_KEY = 'sdk-test-key';

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function eventually(what, check, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the next value `emitterOn(event)` delivers. */
export function next(target, event, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    const off = target.on(event, (v) => {
      clearTimeout(timer);
      off();
      resolve(v);
    });
  });
}

async function healthy(base) {
  try {
    return (await fetch(`${base}/health`)).ok;
  } catch {
    return false;
  }
}

export async function startNode(extraToml = '') {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-sdk-'));
  const port = await freePort();
  const config = join(dir, 'switchyard.toml');
  writeFileSync(
    config,
    `listen = "127.0.0.1:${port}"\nnode_id = "sdk-node"\nauth.jwt_secret = "sdk-secret"\napi.key = "${API_KEY}"\n${extraToml}\n`,
  );
  const base = `http://127.0.0.1:${port}`;
  const node = {
    port,
    base,
    ws: `ws://127.0.0.1:${port}/ws`,
    child: null,
    async start() {
      this.child = spawn(BIN, ['--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
      await eventually('node /health', () => healthy(base));
      await eventually('node /ready', async () => {
        try {
          return (await fetch(`${base}/ready`)).ok;
        } catch {
          return false;
        }
      });
    },
    kill() {
      this.child?.kill('SIGKILL');
      this.child = null;
    },
    token(sub, ...args) {
      return execFileSync(BIN, ['token', '--sub', sub, ...args, '--config', config]).toString().trim();
    },
    async api(path, body) {
      const r = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
      return r.json();
    },
    publish(channel, type, payload) {
      return this.api('/api/publish', { channel, type, payload });
    },
    stop() {
      this.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await node.start();
  return node;
}

export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-sdk-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: 'ignore',
  });
  const cli = (...args) => execFileSync('redis-cli', ['-p', String(port), ...args]).toString();
  await eventually('redis-server', () => {
    try {
      return cli('PING').trim() === 'PONG';
    } catch {
      return false;
    }
  });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    cli,
    stop() {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A TCP proxy whose open connections can be frozen (up, but forwarding nothing). */
export async function startProxy(upstreamPort) {
  const conns = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    const c = { client, upstream, frozen: false };
    conns.add(c);
    client.on('data', (d) => c.frozen || upstream.write(d));
    upstream.on('data', (d) => c.frozen || client.write(d));
    const end = () => {
      conns.delete(c);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    freeze() {
      for (const c of conns) c.frozen = true;
    },
    stop() {
      for (const c of conns) {
        c.client.destroy();
        c.upstream.destroy();
      }
      server.close();
    },
  };
}
