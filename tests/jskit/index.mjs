// The real parts every JavaScript test of switchyard runs against (clients/js/test,
// tests/js, tests/browser): the switchyard binary on a free port (restartable on the
// same port, stopped by its PID), tokens minted with the binary's own `token` command,
// the HTTP API, a real redis-server on a free port, and a TCP proxy whose connections
// can go silent. Plain ES module, Node builtins only. Waits poll a condition with a
// deadline; nothing here sleeps for a fixed time.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (tests/jskit/../..). */
export const ROOT = join(here, '..', '..');
/** The binary under test: `SWITCHYARD_BIN`, else the debug build. */
export const BIN = process.env.SWITCHYARD_BIN || join(ROOT, 'target', 'debug', 'switchyard');
export const API_KEY = 'jskit-test-key';
export const JWT_SECRET = 'jskit-test-secret';

/** A TCP port nobody listens on right now (127.0.0.1). */
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

/**
 * Polls `check` (sync or async) until it returns a truthy value, which it resolves
 * with; throws `timed out waiting for: <what>` after `ms`.
 */
export async function eventually(what, check, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the next value `target.on(event, …)` delivers, or rejects after `ms`. */
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

async function ok(url) {
  try {
    return (await fetch(url)).ok;
  } catch {
    return false;
  }
}

/** PIDs of the processes started here and not stopped yet. */
const running = new Set();
// A test process that dies before its `after` hooks ran leaves no node behind.
process.on('exit', () => {
  for (const pid of running) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** SIGKILL by PID, once. */
function killPid(pid) {
  if (pid === null || pid === undefined) return;
  running.delete(pid);
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** The environment for a child binary: ours, without the variables meant for us. */
function childEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  // The binary warns about unknown SWITCHYARD_* variables; this one is the tests'.
  delete env.SWITCHYARD_BIN;
  return env;
}

/**
 * Starts the binary on a free port and waits for `/health` and `/ready`.
 *
 * `toml` is appended to a config file that sets `listen`, `node_id`,
 * `auth.jwt_secret` and `api.key`. With `{ dev: true }` there is no config file and
 * no secret in the environment (development mode, which serves `/demo`): the node
 * generates its secrets at every start, and the API key is read from the banner it
 * prints; `toml` must be empty. `env` adds variables (e.g. `SWITCHYARD_BROKER`).
 * `stderr` is the child's stderr: 'inherit' (default) or 'ignore'.
 *
 * The node: `{port, base, ws, pid, start(), kill(), stop(), token(sub, ...args),
 * api(path, body), publish(channel, type, payload)}` (`token` only with a config).
 * `kill()` then `start()` restarts it on the same port with the same secrets.
 */
export async function startNode(toml = '', { dev = false, env = {}, nodeId = 'js-node', stderr = 'inherit' } = {}) {
  if (dev && toml) throw new Error('startNode: a development-mode node takes no config');
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-jskit-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const config = join(dir, 'switchyard.toml');
  let args;
  let vars;
  if (dev) {
    args = [];
    vars = childEnv({
      SWITCHYARD_LISTEN: `127.0.0.1:${port}`,
      SWITCHYARD_NODE_ID: nodeId,
      ...env,
    });
    delete vars.SWITCHYARD_CONFIG;
    delete vars.SWITCHYARD_AUTH__JWT_SECRET;
    delete vars.SWITCHYARD_AUTH__JWT_PUBLIC_KEY_FILE;
    delete vars.SWITCHYARD_API__KEY;
  } else {
    writeFileSync(
      config,
      `listen = "127.0.0.1:${port}"\nnode_id = "${nodeId}"\nauth.jwt_secret = "${JWT_SECRET}"\napi.key = "${API_KEY}"\n${toml}\n`,
    );
    args = ['--config', config];
    vars = childEnv(env);
  }
  const node = {
    port,
    base,
    ws: `ws://127.0.0.1:${port}/ws`,
    /** The PID of the running binary; null while it is down. */
    pid: null,
    /** The API key: fixed with a config, read from the banner in development mode. */
    apiKey: dev ? null : API_KEY,
    async start() {
      const child = spawn(BIN, args, { env: vars, stdio: ['ignore', dev ? 'pipe' : 'ignore', stderr] });
      if (dev) {
        this.apiKey = null;
        let banner = '';
        child.stdout.on('data', (chunk) => {
          banner += chunk;
          const m = banner.match(/X-API-Key: ([0-9a-f]+)/);
          if (m) this.apiKey = m[1];
        });
      }
      this.pid = child.pid;
      running.add(child.pid);
      let gone = null;
      child.on('error', (err) => {
        gone = `cannot start ${BIN}: ${err.message}`;
      });
      child.on('exit', (code, signal) => {
        running.delete(child.pid);
        gone ??= `${BIN} exited (${signal ?? code})`;
      });
      const up = async (path) => {
        if (gone) throw new Error(gone);
        return ok(`${base}${path}`);
      };
      await eventually('node /health', () => up('/health'));
      await eventually('node /ready', () => up('/ready'));
      if (dev) await eventually('the development banner with the API key', () => this.apiKey);
    },
    /** SIGKILL by PID: the node dies at once, as in a crash. */
    kill() {
      killPid(this.pid);
      this.pid = null;
    },
    stop() {
      this.kill();
      rmSync(dir, { recursive: true, force: true });
    },
    /**
     * A JWT from `switchyard token --sub <sub> ...args` with this node's secret (the
     * command needs a config file: not for a development-mode node).
     */
    token(sub, ...rest) {
      if (dev) throw new Error('startNode: token() needs a node with a config (dev: false)');
      const cmd = ['token', '--sub', sub, ...rest, '--config', config];
      return execFileSync(BIN, cmd, { env: vars, stdio: ['ignore', 'pipe', 'inherit'] }).toString().trim();
    },
    /** POSTs `body` to an `/api/*` path with the API key; throws on a non-2xx status. */
    async api(path, body) {
      const r = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'X-API-Key': this.apiKey, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
      return r.json();
    },
    publish(channel, type, payload) {
      return this.api('/api/publish', { channel, type, payload });
    },
  };
  await node.start();
  return node;
}

/** A redis-server on a free port with no persistence; `cli(...args)` runs redis-cli. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-jskit-redis-'));
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: 'ignore' },
  );
  running.add(child.pid);
  child.on('exit', () => running.delete(child.pid));
  const cli = (...args) =>
    execFileSync('redis-cli', ['-p', String(port), ...args], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
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
    pid: child.pid,
    cli,
    stop() {
      killPid(child.pid);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A TCP proxy to `upstreamPort` whose open connections can be frozen (up, but
 * forwarding nothing: a dead network path). `requestLines` holds the first line each
 * client sent (the HTTP request line of a WebSocket upgrade), as a proxy's access log
 * would.
 */
export async function startProxy(upstreamPort) {
  const conns = new Set();
  const requestLines = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    const c = { client, upstream, frozen: false, first: true };
    conns.add(c);
    client.on('data', (d) => {
      if (c.first) {
        c.first = false;
        requestLines.push(d.toString('latin1').split('\r\n')[0]);
      }
      if (!c.frozen) upstream.write(d);
    });
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
    requestLines,
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

/**
 * Wraps a WebSocket class (the `ws` package's in Node) so a test sees what crosses
 * the wire, as the SDK's `websocket` option: every connection in `connections`
 * (`{url, sent, received}`, frames parsed from JSON), and `urls` as given to the
 * constructor, whether or not it threw.
 */
export function recordingWebSocket(Base) {
  const log = { urls: [], connections: [] };
  class Recording extends Base {
    #conn;
    constructor(url, ...rest) {
      log.urls.push(String(url));
      super(url, ...rest);
      this.#conn = { url: String(url), sent: [], received: [] };
      log.connections.push(this.#conn);
      // Registered before the SDK's own handler, so it records a frame first.
      this.addEventListener('message', (ev) => this.#conn.received.push(JSON.parse(String(ev.data))));
    }
    send(data, ...rest) {
      this.#conn.sent.push(JSON.parse(String(data)));
      return super.send(data, ...rest);
    }
  }
  log.WebSocket = Recording;
  return log;
}
