// Reading the streams the nodes write (SPEC 8.3 upstream, 17 events) with a consumer
// group, at least once: XREADGROUP hands each entry to the handler, XACK follows only
// when the handler resolved. An entry whose handler threw stays pending, and so do
// the entries of a consumer that died; both are taken over with XAUTOCLAIM once idle
// for `claimIdle`, by this consumer or another of the group, and handled again.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { connect, disconnect, classify } from './redis.js';
import { SwitchyardError } from './errors.js';
import { backoff, pause } from './retry.js';

/** The fields of each stream's entries, in the nodes' order; one holds JSON text. */
const STREAMS = {
  upstream: { fields: ['channel', 'type', 'payload', 'user_id', 'session_id', 'conn_id', 'node', 'ts'], json: 'payload' },
  events: { fields: ['event', 'channel', 'user_id', 'session_id', 'conn_id', 'node', 'ts', 'data'], json: 'data' },
};

/**
 * One stream entry as the handler gets it: `{id, ...fields}` with the JSON field
 * (`payload` or `data`) parsed and empty strings (absent ids) left out. Field names
 * are the wire's, so an `events` entry has the shape of a webhook's event.
 */
export function decodeEntry(stream, id, flat) {
  if (!STREAMS[stream]) throw new TypeError('decodeEntry: the stream is "upstream" or "events"');
  const { fields, json } = STREAMS[stream];
  const raw = new Map();
  for (let i = 0; i + 1 < flat.length; i += 2) raw.set(String(flat[i]), String(flat[i + 1]));
  const entry = { id };
  const names = [...fields, ...[...raw.keys()].filter((k) => !fields.includes(k))];
  for (const name of names) {
    const v = raw.get(name);
    if (v === undefined || v === '') continue;
    if (name === json) {
      try {
        entry[name] = JSON.parse(v);
      } catch (e) {
        throw new SwitchyardError(`${stream} entry ${id}: ${name} is not JSON`, { code: 'invalid_entry', cause: e });
      }
    } else {
      entry[name] = v;
    }
  }
  return entry;
}

/** A running consumer; `SwitchyardServer.consume` makes them. */
export class Consumer {
  #stream;
  #key;
  #group;
  #name;
  #handler;
  #count;
  #block;
  #claimIdle;
  #claimInterval;
  #startId;
  #retries;
  #minDelay;
  #maxDelay;
  #onError;
  #reader;
  #commands;
  #stopping = false;
  #done;
  #ready;
  #markReady;
  #onStop;

  /**
   * Starts at once. `stream`: "upstream" | "events"; `key`: the stream's Redis key;
   * `opts` as documented on `SwitchyardServer.consume`.
   */
  constructor({ url, key, stream, group, handler, timeout, retries, retryDelay, maxRetryDelay, onStop }, opts = {}) {
    if (!STREAMS[stream]) throw new TypeError('consume: the stream is "upstream" or "events"');
    if (typeof group !== 'string' || group === '') throw new TypeError('consume: group must be a non-empty string');
    if (typeof handler !== 'function') throw new TypeError('consume: handler must be a function');
    this.#stream = stream;
    this.#key = key;
    this.#group = group;
    this.#handler = handler;
    this.#name = opts.consumer ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.#count = positive(opts.count ?? 10, 'count');
    this.#block = positive(opts.block ?? 5000, 'block');
    this.#claimIdle = positive(opts.claimIdle ?? 30000, 'claimIdle');
    this.#claimInterval = positive(opts.claimInterval ?? Math.min(Math.max(this.#claimIdle / 2, 10), 10000), 'claimInterval');
    this.#startId = opts.startId ?? '$';
    this.#retries = retries;
    this.#minDelay = retryDelay;
    this.#maxDelay = maxRetryDelay;
    this.#onError =
      opts.onError ??
      ((err, entry) => console.error(`switchyard consumer ${this.#name} (${stream}/${group})${entry ? ` entry ${entry.id}` : ''}:`, err));
    this.#onStop = onStop;
    this.#reader = connect(url, { timeout, blocking: true, name: `switchyard-consumer-${this.#name}` });
    this.#commands = connect(url, { timeout, name: `switchyard-consumer-${this.#name}` });
    this.#ready = new Promise((resolve, reject) => {
      this.#markReady = { resolve, reject };
    });
    // Nobody has to await `ready`: a stop before it settles is no unhandled rejection.
    this.#ready.catch(() => {});
    this.#done = this.#run();
  }

  /** This consumer's name in the group. */
  get name() {
    return this.#name;
  }

  /** Resolves once the group exists (created with MKSTREAM if missing) and reading began. */
  get ready() {
    return this.#ready;
  }

  /** Resolves when the consumer has stopped (after `stop()`). */
  get done() {
    return this.#done;
  }

  /**
   * Stops reading. Resolves once the entries already read are handled and
   * acknowledged and the connections are closed.
   */
  async stop() {
    if (!this.#stopping) {
      this.#stopping = true;
      // Ends a blocked XREADGROUP at once; handling goes on over the other connection.
      this.#reader.disconnect();
    }
    await this.#done;
  }

  /** The same as `stop()`. */
  close() {
    return this.stop();
  }

  async #run() {
    try {
      await this.#loop();
    } finally {
      this.#markReady.reject(new SwitchyardError('consumer stopped before it was ready', { code: 'stopped' }));
      this.#reader.disconnect();
      await disconnect(this.#commands);
      this.#onStop?.(this);
    }
  }

  async #loop() {
    let failures = 0;
    let grouped = false;
    // The first pass claims at once: a restarted worker picks up what a dead one left.
    let nextClaim = 0;
    while (!this.#stopping) {
      try {
        if (!grouped) {
          await this.#createGroup();
          grouped = true;
          this.#markReady.resolve();
        }
        if (Date.now() >= nextClaim) {
          await this.#claim();
          nextClaim = Date.now() + this.#claimInterval;
        }
        if (this.#stopping) break;
        const block = Math.max(1, Math.min(this.#block, nextClaim - Date.now()));
        const reply = await this.#reader.xreadgroup(
          'GROUP', this.#group, this.#name, 'COUNT', this.#count, 'BLOCK', block, 'STREAMS', this.#key, '>',
        );
        for (const [, entries] of reply ?? []) {
          for (const [id, fields] of entries) await this.#handle(id, fields);
        }
        failures = 0;
      } catch (e) {
        if (this.#stopping) break;
        // The stream or the group was deleted under us: make them again.
        if (/NOGROUP/.test(String(e?.message))) grouped = false;
        const err = e instanceof SwitchyardError ? e : classify(e, `switchyard consumer on ${this.#key}`, 1).error;
        this.#report(err);
        await pause(backoff(failures++, this.#minDelay, this.#maxDelay));
      }
    }
  }

  async #createGroup() {
    try {
      await this.#commands.call('XGROUP', 'CREATE', this.#key, this.#group, this.#startId, 'MKSTREAM');
    } catch (e) {
      if (!/BUSYGROUP/.test(String(e?.message))) throw e;
    }
  }

  /** XAUTOCLAIM: takes over entries pending longer than `claimIdle`, and handles them. */
  async #claim() {
    let cursor = '0-0';
    // At most ten batches a pass, so new entries are not starved by a big backlog.
    for (let batch = 0; batch < 10 && !this.#stopping; batch++) {
      const [next, entries, deleted] = await this.#commands.call(
        'XAUTOCLAIM', this.#key, this.#group, this.#name, this.#claimIdle, cursor, 'COUNT', this.#count,
      );
      const gone = [...(deleted ?? [])];
      for (const item of entries ?? []) {
        // Redis 6.2 answers an entry trimmed from the stream as nil; 7 lists it apart.
        if (!item || !item[1]) {
          if (item?.[0]) gone.push(item[0]);
          continue;
        }
        await this.#handle(item[0], item[1]);
      }
      // A trimmed entry can never be handled: it leaves the pending list.
      if (gone.length > 0) await this.#commands.call('XACK', this.#key, this.#group, ...gone);
      cursor = String(next);
      if (cursor === '0-0') break;
    }
  }

  /** Decodes, calls the handler, and acknowledges only if it resolved. */
  async #handle(id, fields) {
    let entry;
    try {
      entry = decodeEntry(this.#stream, id, fields);
      await this.#handler(entry);
    } catch (e) {
      // Left pending: handled again once idle for claimIdle.
      this.#report(e, entry ?? { id });
      return;
    }
    for (let attempt = 0; ; attempt++) {
      try {
        await this.#commands.call('XACK', this.#key, this.#group, id);
        return;
      } catch (e) {
        const { error, retry } = classify(e, `switchyard XACK ${id} on ${this.#key}`, attempt + 1);
        if (!retry || attempt >= this.#retries) {
          // Not acknowledged: the entry will be handled again (at least once).
          this.#report(error, entry);
          return;
        }
      }
      await pause(backoff(attempt, this.#minDelay, this.#maxDelay));
    }
  }

  #report(err, entry) {
    try {
      this.#onError(err, entry);
    } catch {
      // An onError that throws must not stop the consumer.
    }
  }
}

function positive(v, name) {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new TypeError(`consume: ${name} must be a positive number (ms)`);
  return Math.ceil(v);
}
