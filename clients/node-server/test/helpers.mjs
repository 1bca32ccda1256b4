// What this package's tests share, on top of the repository's JavaScript test kit
// (tests/jskit: the real binary on a free port, a real redis-server, polling waits):
// a node on Redis with an SDK pointed at it, an authenticated WebSocket client,
// a redis-server restartable on its port, and two proxies that fail on purpose — an
// HTTP one answering 503 or holding answers, a TCP one dropping Redis's replies.
import net from 'node:net';
import http from 'node:http';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startNode, startRedis, eventually, freePort, API_KEY, JWT_SECRET } from '../../../tests/jskit/index.mjs';
import { SwitchyardServer } from '../src/index.js';

export { startNode, startRedis, eventually, freePort, API_KEY, JWT_SECRET };

/** SDK options that keep failing tests short. */
export const FAST = { timeout: 2000, retries: 3, retryDelay: 20, maxRetryDelay: 100 };

/**
 * A node (`broker = "redis"` when `redis` is given), and a `SwitchyardServer` for it.
 * Stops both after the test `t`.
 */
export async function startStack(t, { toml = '', redis, prefix = 'switchyard', sdk = {} } = {}) {
  const brokerToml = redis ? `broker = "redis"\n[redis]\nurl = "${redis.url}"\nprefix = "${prefix}"\n` : '';
  const node = await startNode(`${brokerToml}${toml}`, { stderr: 'ignore' });
  t.after(() => node.stop());
  const server = new SwitchyardServer({
    url: node.base,
    apiKey: API_KEY,
    jwtSecret: JWT_SECRET,
    redis: redis?.url,
    prefix,
    ...FAST,
    ...sdk,
  });
  t.after(() => server.close());
  return { node, server };
}

/** A redis-server that `startRedis` started, for each test `t`, stopped after it. */
export async function redisFor(t) {
  const r = await startRedis();
  t.after(() => r.stop());
  return r;
}

/**
 * A WebSocket client authenticated with `token` on `node`: `frames` (every frame
 * received, parsed), `waitFor(pred)` (the first frame matching, polled with a
 * deadline), `send(frame)`, `closed` ({code, reason} once closed), `close()`.
 */
export async function connectClient(t, node, token) {
  const ws = new WebSocket(node.ws);
  const frames = [];
  let closed = null;
  ws.on('message', (d) => frames.push(JSON.parse(String(d))));
  ws.on('close', (code, reason) => {
    closed = { code, reason: String(reason) };
  });
  ws.on('error', () => {});
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  t.after(() => ws.terminate());
  let ids = 0;
  const client = {
    ws,
    frames,
    get closed() {
      return closed;
    },
    send(frame) {
      ws.send(JSON.stringify(frame));
    },
    waitFor(pred, what = 'a frame', ms = 10000) {
      return eventually(what, () => frames.find(pred), ms);
    },
    /** Sends `{type, id, payload}` and resolves with the reply of that id. */
    async request(type, payload) {
      const id = `r${++ids}`;
      this.send({ type, id, payload });
      return this.waitFor((f) => f.id === id, `the reply to ${type}`);
    },
    close() {
      ws.close();
    },
  };
  const hello = await client.request('auth', { token });
  if (hello.type !== 'auth_success') throw new Error(`auth failed: ${JSON.stringify(hello)}`);
  client.hello = hello.payload;
  return client;
}

/** A redis-server on `port` (no persistence), stopped by PID after `t`; `cli(...)`, `await stop()`. */
export async function startRedisAt(t, port) {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-node-server-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: 'ignore',
  });
  const cli = (...args) => execFileSync('redis-cli', ['-p', String(port), ...args], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  let exited = false;
  const gone = new Promise((resolve) => child.once('exit', resolve)).then(() => {
    exited = true;
  });
  const r = {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid,
    cli,
    /** SIGKILL by PID; resolves once the process is gone and its port is free. */
    stop() {
      if (!exited) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      return gone.then(() => rmSync(dir, { recursive: true, force: true }));
    },
  };
  t.after(() => r.stop());
  await eventually(`redis-server on ${port}`, () => {
    if (exited) throw new Error(`redis-server on ${port} exited`);
    try {
      return cli('PING').trim() === 'PONG';
    } catch {
      return false;
    }
  });
  return r;
}

/**
 * An HTTP proxy to `target` (a base URL) that treats the n-th request by
 * `plan[n]` (default "pass"): "pass" forwards it, "503" answers 503 without
 * forwarding, "hold" forwards it and withholds the answer (the client times out).
 * `requests` holds `{method, path, body}` of each request as received.
 */
export async function flakyProxy(t, target, plan = []) {
  const requests = [];
  const held = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const text = Buffer.concat(chunks).toString();
    const n = requests.length;
    requests.push({ method: req.method, path: req.url, body: text ? JSON.parse(text) : undefined });
    const step = plan[n] ?? 'pass';
    if (step === '503') {
      res.writeHead(503, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'unavailable', message: 'broker unavailable: not done, retry' } }));
      return;
    }
    const headers = { ...req.headers };
    delete headers.host;
    delete headers['content-length'];
    const upstream = await fetch(target + req.url, { method: req.method, headers, body: text || undefined });
    const answer = await upstream.text();
    if (step === 'hold') {
      held.push(res);
      return;
    }
    res.writeHead(upstream.status, { 'Content-Type': 'application/json' });
    res.end(answer);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const res of held) res.destroy();
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${server.address().port}`, requests };
}

/**
 * A TCP proxy to a Redis on `port` that can lose replies: after `dropReplies()` the
 * connections open at that moment still carry commands to Redis, which runs them,
 * but no answer comes back (a reply lost on the way); connections made later work.
 */
export async function replyDroppingProxy(t, port) {
  const conns = new Set();
  const proxy = {
    connections: 0,
    dropReplies() {
      for (const c of conns) c.dropping = true;
    },
  };
  const server = net.createServer((client) => {
    proxy.connections++;
    const upstream = net.connect(port, '127.0.0.1');
    const c = { client, upstream, dropping: false };
    conns.add(c);
    client.on('data', (d) => upstream.write(d));
    upstream.on('data', (d) => {
      if (!c.dropping) client.write(d);
    });
    const end = () => {
      conns.delete(c);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('close', end);
      s.on('error', end);
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const c of conns) {
      c.client.destroy();
      c.upstream.destroy();
    }
    server.close();
  });
  proxy.url = `redis://127.0.0.1:${server.address().port}`;
  return proxy;
}
