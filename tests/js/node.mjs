// Starts a real switchyard binary on a free port for JavaScript tests, mints tokens
// with its `token` command, and publishes through its HTTP API.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.SWITCHYARD_BIN || join(here, '..', '..', 'target', 'debug', 'switchyard');
export const API_KEY = 'js-test-key';

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a truthy value or fails after `ms`. */
export async function eventually(what, check, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function startNode(extraToml = '') {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-js-'));
  const port = await freePort();
  const config = join(dir, 'switchyard.toml');
  writeFileSync(
    config,
    `listen = "127.0.0.1:${port}"\nnode_id = "js-node"\nauth.jwt_secret = "js-secret"\napi.key = "${API_KEY}"\n${extraToml}\n`,
  );
  const child = spawn(BIN, ['--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
  const base = `http://127.0.0.1:${port}`;
  await eventually('node /health', async () => {
    try {
      return (await fetch(`${base}/health`)).ok;
    } catch {
      return false;
    }
  });
  return {
    port,
    base,
    ws: `ws://127.0.0.1:${port}`,
    token(sub, ...args) {
      return execFileSync(BIN, ['token', '--sub', sub, ...args, '--config', config]).toString().trim();
    },
    async publish(channel, type, payload) {
      const r = await fetch(`${base}/api/publish`, {
        method: 'POST',
        headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
        body: JSON.stringify({ channel, type, payload }),
      });
      if (!r.ok) throw new Error(`publish ${channel}: ${r.status} ${await r.text()}`);
      return r.json();
    },
    stop() {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
