// `SwitchyardServer` (SPEC 18): what a backend service does with switchyard, each
// operation handed to the module of its concern — the HTTP API (http.js), Redis
// functions (redis.js), stream consumers (consumer.js), tokens (tokens.js), webhooks
// (webhooks.js). Everything it needs comes from its constructor: no globals, no
// environment variables.
import { HttpClient } from './http.js';
import { RedisPublisher } from './redis.js';
import { Consumer } from './consumer.js';
import { mintToken, mintSubscriptionToken } from './tokens.js';
import { verifyWebhook } from './webhooks.js';
import { newIdempotencyKey, toSeconds } from './retry.js';

const MAX_IDEMPOTENCY_KEY = 128;

function nonEmpty(v, name) {
  if (typeof v !== 'string' || v === '') throw new TypeError(`${name} must be a non-empty string`);
  return v;
}

function list(v, name) {
  if (v === undefined || v === null) return undefined;
  const items = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(items) || items.some((x) => typeof x !== 'string' || x === '' || x.includes(','))) {
    throw new TypeError(`${name} must be an array of non-empty strings without commas`);
  }
  return items.length ? items.join(',') : undefined;
}

function count(v, name) {
  if (!Number.isInteger(v) || v < 0) throw new TypeError(`${name} must be an integer >= 0`);
  return v;
}

function idempotencyKey(given) {
  if (given === undefined || given === null) return newIdempotencyKey();
  if (typeof given !== 'string' || given === '' || [...given].length > MAX_IDEMPOTENCY_KEY) {
    throw new TypeError(`idempotencyKey must be 1 to ${MAX_IDEMPOTENCY_KEY} characters`);
  }
  return given;
}

export class SwitchyardServer {
  #http;
  #redisUrl;
  #publisher = null;
  #prefix;
  #jwtSecret;
  #algorithm;
  #idempotencyWindow;
  #net;
  #consumers = new Set();

  /**
   * `url`: a node's base URL (`http://switchyard-internal:8080`), `apiKey`: its
   * `api.key`; `jwtSecret`: `auth.jwt_secret`, to mint tokens; `redis`: the nodes'
   * Redis URL, for `via: "redis"` and `consume`; `prefix`: `redis.prefix`
   * [`switchyard`]. Also `timeout` [5000 ms per attempt], `retries` [3],
   * `retryDelay` [100 ms] and `maxRetryDelay` [2000 ms], `idempotencyWindow`
   * [300 s, the nodes' `api.idempotency_window`], `jwtAlgorithm` [HS256], `fetch`.
   */
  constructor(options = {}) {
    const {
      url,
      apiKey,
      jwtSecret,
      redis,
      prefix = 'switchyard',
      timeout = 5000,
      retries = 3,
      retryDelay = 100,
      maxRetryDelay = 2000,
      idempotencyWindow = 300,
      jwtAlgorithm = 'HS256',
      fetch = globalThis.fetch,
    } = options;
    for (const [name, v] of Object.entries({ timeout, retryDelay, maxRetryDelay })) {
      if (typeof v !== 'number' || !(v > 0)) throw new TypeError(`SwitchyardServer: ${name} must be a positive number of ms`);
    }
    if (!Number.isInteger(retries) || retries < 0) throw new TypeError('SwitchyardServer: retries must be an integer >= 0');
    if (redis !== undefined && typeof redis !== 'string') throw new TypeError('SwitchyardServer: redis is a Redis URL (redis://host:port/db)');
    this.#net = { timeout, retries, retryDelay, maxRetryDelay };
    this.#http = new HttpClient({ url, apiKey, fetch, ...this.#net });
    this.#redisUrl = redis;
    this.#prefix = nonEmpty(prefix, 'prefix');
    this.#jwtSecret = jwtSecret;
    this.#algorithm = jwtAlgorithm;
    this.#idempotencyWindow = toSeconds(idempotencyWindow, 'idempotencyWindow');
  }

  #redis(what) {
    if (!this.#redisUrl) throw new TypeError(`${what} needs the \`redis\` option (the nodes' Redis URL)`);
    this.#publisher ??= new RedisPublisher({ url: this.#redisUrl, prefix: this.#prefix, ...this.#net });
    return this.#publisher;
  }

  /**
   * Publishes `type` with `payload` to `channel` (SPEC 6 /api/publish, or 8.2/16.1
   * FCALL with `via: "redis"`). Always sends an idempotency key (the given one or a
   * new one), which retries repeat. Resolves `{offset?, epoch?, duplicate?}`.
   */
  async publish(channel, type, payload, opts = {}) {
    nonEmpty(channel, 'channel');
    nonEmpty(type, 'type');
    const { via = 'http', key, fallback, volatile, to } = opts;
    const del = opts.delete === true;
    if (via !== 'http' && via !== 'redis') throw new TypeError('publish: via is "http" or "redis"');
    if (key !== undefined) nonEmpty(key, 'key');
    if (del && key === undefined) throw new TypeError('publish: delete needs the key to remove');
    const idem = idempotencyKey(opts.idempotencyKey);
    if (via === 'redis') {
      if (fallback !== undefined) throw new TypeError('publish: fallback needs via: "http" (the node arms its deadline)');
      if (volatile !== undefined || to !== undefined) throw new TypeError('publish: volatile and to need via: "http"');
      const envelope = { type };
      if (!del && payload !== undefined) envelope.payload = payload;
      if (key !== undefined) envelope.key = key;
      if (del) envelope.delete = true;
      const text = JSON.stringify(envelope);
      const redis = this.#redis('publish via "redis"');
      if (key !== undefined) {
        return redis.set(channel, text, {
          stateMaxKeys: count(opts.stateMaxKeys ?? 10000, 'stateMaxKeys'),
          stateTtl: toSeconds(opts.stateTtl ?? 0, 'stateTtl'),
        });
      }
      return redis.publish(channel, text, {
        historySize: count(opts.historySize ?? 0, 'historySize'),
        historyTtl: toSeconds(opts.historyTtl ?? 0, 'historyTtl'),
        idempotencyKey: idem,
        window: this.#idempotencyWindow,
      });
    }
    const body = { channel, type, idempotency_key: idem };
    if (!del && payload !== undefined) body.payload = payload;
    if (key !== undefined) body.key = key;
    if (del) body.delete = true;
    if (volatile !== undefined) body.volatile = Boolean(volatile);
    if (to !== undefined) body.to = nonEmpty(to, 'to');
    if (fallback !== undefined) body.fallback = fallbackBody(fallback);
    return this.#http.post('/api/publish', body);
  }

  /**
   * Publishes to up to 1000 channels (SPEC 6 /api/broadcast); the idempotency key
   * applies per channel. Resolves `{results: [{channel, offset?, epoch?, duplicate?, error?}]}`.
   */
  async broadcast(channels, type, payload, opts = {}) {
    if (!Array.isArray(channels) || channels.length === 0) throw new TypeError('broadcast: channels must be a non-empty array');
    nonEmpty(type, 'type');
    const body = { channels, type, idempotency_key: idempotencyKey(opts.idempotencyKey) };
    const del = opts.delete === true;
    if (!del && payload !== undefined) body.payload = payload;
    if (opts.key !== undefined) body.key = nonEmpty(opts.key, 'key');
    if (del) body.delete = true;
    if (opts.volatile !== undefined) body.volatile = Boolean(opts.volatile);
    return this.#http.post('/api/broadcast', body);
  }

  /** Closes every connection of a user, a session or one connection, cluster-wide. */
  async disconnect(target = {}) {
    const { userId, sessionId, connId, code, reason } = target;
    const given = [userId, sessionId, connId].filter((v) => v !== undefined && v !== null);
    if (given.length !== 1) throw new TypeError('disconnect: give exactly one of userId, sessionId, connId');
    const body = {};
    if (userId !== undefined && userId !== null) body.user_id = String(userId);
    if (sessionId !== undefined && sessionId !== null) body.session_id = nonEmpty(sessionId, 'sessionId');
    if (connId !== undefined && connId !== null) body.conn_id = nonEmpty(connId, 'connId');
    if (code !== undefined) body.code = code;
    if (reason !== undefined) body.reason = reason;
    await this.#http.post('/api/disconnect', body);
  }

  /**
   * Refuses the user's tokens issued before `before` (unix seconds or a Date;
   * default: now, set by the node) and closes their connections.
   */
  async revoke(userId, before) {
    const body = { user_id: nonEmpty(String(userId ?? ''), 'userId') };
    if (before instanceof Date) body.before = Math.floor(before.getTime() / 1000);
    else if (typeof before === 'number') body.before = Math.floor(before);
    else if (before !== undefined) throw new TypeError('revoke: before is unix seconds or a Date');
    await this.#http.post('/api/revoke', body);
  }

  /** Subscribes every connection of a user to `channel`, cluster-wide. */
  async subscribe(userId, channel) {
    await this.#http.post('/api/subscribe', { user_id: nonEmpty(String(userId ?? ''), 'userId'), channel: nonEmpty(channel, 'channel') });
  }

  /** Unsubscribes every connection of a user from `channel`, cluster-wide. */
  async unsubscribe(userId, channel) {
    await this.#http.post('/api/unsubscribe', { user_id: nonEmpty(String(userId ?? ''), 'userId'), channel: nonEmpty(channel, 'channel') });
  }

  /** `{count, users, clients}` of a presence channel. */
  async presence(channel) {
    return this.#http.get(HttpClient.path('presence', nonEmpty(channel, 'channel')));
  }

  /** `{publications, offset, epoch}`: the newest `limit`, or those after offset `since`. */
  async history(channel, { limit, since } = {}) {
    return this.#http.get(HttpClient.path('history', nonEmpty(channel, 'channel')), { limit, since });
  }

  /** `{channel, offset, epoch, entries}` of a state channel, optionally only `keys`. */
  async state(channel, keys) {
    return this.#http.get(HttpClient.path('state', nonEmpty(channel, 'channel')), { keys: list(keys, 'keys') });
  }

  /** `{channels: [{channel, offset, read_offset, unread}]}` of a user. */
  async unread(userId, channels) {
    return this.#http.get(HttpClient.path('unread', nonEmpty(String(userId ?? ''), 'userId')), {
      channels: list(channels, 'channels'),
    });
  }

  /** `{channels: [{channel, subscribers}]}`, cluster-wide, optionally by name prefix. */
  async channels(prefix) {
    return this.#http.get('/api/channels', { prefix });
  }

  /** `{node, cluster}` connection statistics. */
  async stats() {
    return this.#http.get('/api/stats');
  }

  /** A connection token for `claims` (`sub` required), valid `ttl` seconds. */
  async mintToken(claims, ttl) {
    return mintToken(this.#jwtSecret, claims, ttl, this.#algorithm);
  }

  /** A subscription token granting user `sub` the one `channel`, valid `ttl` seconds. */
  async mintSubscriptionToken(sub, channel, ttl) {
    return mintSubscriptionToken(this.#jwtSecret, sub, channel, ttl, this.#algorithm);
  }

  /**
   * Reads `<prefix>:upstream` or `<prefix>:events` in consumer group `group` and
   * calls `handler(entry)` for each entry, acknowledging it once the handler
   * resolved. Returns the running `Consumer` (`ready`, `stop()`).
   */
  consume(stream, group, handler, opts = {}) {
    if (stream !== 'upstream' && stream !== 'events') throw new TypeError('consume: the stream is "upstream" or "events"');
    if (!this.#redisUrl) throw new TypeError('consume needs the `redis` option (the nodes\' Redis URL)');
    const consumer = new Consumer(
      {
        url: this.#redisUrl,
        key: `${this.#prefix}:${stream}`,
        stream,
        group,
        handler,
        ...this.#net,
        onStop: (c) => this.#consumers.delete(c),
      },
      opts,
    );
    this.#consumers.add(consumer);
    return consumer;
  }

  /** The same as the module's `verifyWebhook`. */
  verifyWebhook(body, headers, secret, tolerance = 300) {
    return verifyWebhook(body, headers, secret, tolerance);
  }

  /** Stops the consumers started here and closes the Redis connection. */
  async close() {
    await Promise.all([...this.#consumers].map((c) => c.stop()));
    const p = this.#publisher;
    this.#publisher = null;
    if (p) await p.close();
  }
}

/** `{after: "30s" | seconds, data?}` as the API takes it. */
function fallbackBody(fallback) {
  if (fallback === null || typeof fallback !== 'object') throw new TypeError('publish: fallback is {after, data?}');
  const { after, data } = fallback;
  let text;
  if (typeof after === 'number') text = `${toSeconds(after, 'fallback.after')}s`;
  else if (typeof after === 'string') {
    toSeconds(after, 'fallback.after');
    text = after;
  } else throw new TypeError('publish: fallback.after is seconds or a duration like "30s"');
  const out = { after: text };
  if (data !== undefined) out.data = data;
  return out;
}
