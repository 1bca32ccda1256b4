// What the tests against a real node share: the namespaces of SPEC 15-16 they need,
// and the HTTP calls they make besides jskit's POSTs.
import WebSocket from 'ws';
import { Switchyard } from '../src/index.js';

/** The node configuration these tests are written for (SPEC 15-16 namespace options). */
export const NAMESPACES = `
[namespaces.inbox]
subscribe = "owner"
history_size = 100
history_ttl = "1h"
read_state = true
receipts = true

[namespaces.stock]
subscribe = "any"
state = true
delta = true

[namespaces.ticker]
subscribe = "any"
state = true
conflate = "200ms"

[namespaces.live]
subscribe = "any"
presence = "counts"
presence_push_interval = "200ms"
`;

export const opts = (extra = {}) => ({ websocket: WebSocket, minReconnectDelay: 50, maxReconnectDelay: 400, timeout: 3000, ...extra });

/** A connected client of user `sub` (closed after the test). */
export function connectAs(t, node, sub, extra = {}) {
  const client = new Switchyard(extra.url ?? node.ws, opts({ token: node.token(sub), ...extra }));
  t.after(() => client.disconnect());
  client.connect();
  return client;
}

/** GET an `/api/*` path with the API key; throws on a non-2xx status. */
export async function get(node, path) {
  const r = await fetch(`${node.base}${path}`, { headers: { 'X-API-Key': node.apiKey } });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

/** Sets `key` of a state channel through POST /api/publish. */
export function setKey(node, channel, key, payload, type = 'level') {
  return node.api('/api/publish', { channel, type, key, payload });
}

/** Deletes `key` of a state channel through POST /api/publish. */
export function deleteKey(node, channel, key, type = 'level') {
  return node.api('/api/publish', { channel, type, key, delete: true });
}

/** The node's state of `channel` (GET /api/state) as a plain object key → payload. */
export async function serverValues(node, channel, keys) {
  const q = keys ? `?keys=${keys.map(encodeURIComponent).join(',')}` : '';
  const { entries } = await get(node, `/api/state/${encodeURIComponent(channel)}${q}`);
  return sorted(new Map(entries.filter((e) => !e.deleted).map((e) => [e.key, e.payload])));
}

/** A Map as a plain object with sorted keys, for deepEqual. */
export function sorted(map) {
  return Object.fromEntries([...map].sort(([a], [b]) => a.localeCompare(b)));
}
