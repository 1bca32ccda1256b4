// Publishing straight into Redis (SPEC 8.2, 16.1): the `switchyard_publish` and
// `switchyard_set` functions that the nodes load into Redis, called with FCALL. Every
// call has a command timeout; a call that failed on the way (timeout, lost
// connection) is sent again with backoff, and a publish carries an idempotency key
// that every retry repeats, so one whose reply was lost is not published twice.
import { Redis } from 'ioredis';
import { SwitchyardError } from './errors.js';
import { backoff, pause } from './retry.js';

/** `<prefix>:{<channel>}`: the channel's pub/sub channel and its keys' hash tag. */
export function channelKey(prefix, channel) {
  return `${prefix}:{${channel}}`;
}

/**
 * An ioredis connection that connects on first use, bounds every command by
 * `timeout` ms (a blocking reader instead bounds its reads by their BLOCK time plus
 * `timeout`), and reports connection errors to `onError` instead of the console.
 */
export function connect(url, { timeout, blocking = false, name, onError = () => {} }) {
  const options = {
    lazyConnect: true,
    connectTimeout: timeout,
    maxRetriesPerRequest: 1,
    connectionName: name,
    // Plain Redis, not a managed service with maintenance notifications: no handshake for them.
    maintNotifications: 'disabled',
  };
  if (blocking) {
    options.blockingTimeout = timeout;
    options.blockingTimeoutGrace = timeout;
  } else {
    options.commandTimeout = timeout;
  }
  const redis = new Redis(url, options);
  redis.on('error', onError);
  return redis;
}

/** Closes a connection: QUIT when it is up (bounded by its command timeout), else drop it. */
export async function disconnect(redis) {
  if (redis.status === 'ready') {
    try {
      await redis.quit();
      return;
    } catch {
      // fall through: drop it
    }
  }
  redis.disconnect();
}

/** Error replies that mean "not now" (a loading replica, a failover) rather than "never". */
const TRANSIENT_REPLY = /^(LOADING|BUSY|TRYAGAIN|CLUSTERDOWN|MASTERDOWN|READONLY)\b/;

/**
 * Turns an ioredis failure into a `SwitchyardError`, and says whether the command
 * may be sent again (`retry`) and whether the connection is suspect (`reconnect`).
 */
export function classify(e, what, attempts) {
  if (e?.name === 'ReplyError') {
    const msg = String(e.message);
    if (TRANSIENT_REPLY.test(msg)) {
      return { error: new SwitchyardError(`${what}: ${msg}`, { code: 'unavailable', attempts, cause: e }), retry: true };
    }
    let code = 'redis_error';
    if (/function not found/i.test(msg)) code = 'function_missing';
    else if (/switchyard:/.test(msg)) code = /limit|max_keys|too many/i.test(msg) ? 'limit_exceeded' : 'bad_request';
    const hint =
      code === 'function_missing'
        ? ' (the switchyard function library in this Redis lacks it: no node has loaded it here yet, or the nodes are older than this SDK)'
        : '';
    return { error: new SwitchyardError(`${what}: ${msg}${hint}`, { code, attempts, cause: e }), retry: false };
  }
  if (/timed out/i.test(String(e?.message))) {
    return { error: new SwitchyardError(`${what}: no reply within the timeout`, { code: 'timeout', attempts, cause: e }), retry: true, reconnect: true };
  }
  return { error: new SwitchyardError(`${what}: ${e?.message ?? e}`, { code: 'network', attempts, cause: e }), retry: true };
}

/** The FCALL publisher of one `SwitchyardServer`. */
export class RedisPublisher {
  #redis;
  #prefix;
  #retries;
  #minDelay;
  #maxDelay;

  constructor({ url, prefix, timeout, retries, retryDelay, maxRetryDelay }) {
    this.#redis = connect(url, { timeout, name: 'switchyard-server-publisher' });
    this.#prefix = prefix;
    this.#retries = retries;
    this.#minDelay = retryDelay;
    this.#maxDelay = maxRetryDelay;
  }

  /**
   * `FCALL switchyard_publish 1 <prefix>:{<channel>} <envelope> <history_size>
   * <history_ttl> <idempotency_key> <window>` → `{offset?, epoch?, duplicate?}`
   * (`offset`/`epoch` only when the channel keeps history).
   */
  async publish(channel, envelope, { historySize, historyTtl, idempotencyKey, window }) {
    const args = [channelKey(this.#prefix, channel), envelope, historySize, historyTtl, idempotencyKey, window];
    const reply = await this.#fcall('switchyard_publish', args, channel);
    return published(reply, channel);
  }

  /**
   * `FCALL switchyard_set 1 <prefix>:{<channel>} <envelope-with-key> <state_max_keys>
   * <state_ttl>` → `{offset, epoch}`. The contract has no idempotency key for it: a
   * retry after a lost reply may set the key again (same value, a newer offset).
   */
  async set(channel, envelope, { stateMaxKeys, stateTtl }) {
    const reply = await this.#fcall('switchyard_set', [channelKey(this.#prefix, channel), envelope, stateMaxKeys, stateTtl], channel);
    return published(reply, channel);
  }

  async #fcall(fn, args, channel) {
    const what = `switchyard FCALL ${fn} on ${channel}`;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#redis.call('FCALL', fn, 1, ...args.map(String));
      } catch (e) {
        const { error, retry, reconnect } = classify(e, what, attempt + 1);
        // A command that timed out may be stuck behind a dead connection: a new one
        // carries the retry.
        if (reconnect) this.#redis.disconnect(true);
        if (!retry || attempt >= this.#retries) throw error;
      }
      await pause(backoff(attempt, this.#minDelay, this.#maxDelay));
    }
  }

  close() {
    return disconnect(this.#redis);
  }
}

/** `[offset, epoch, duplicate?]` → `{offset?, epoch?, duplicate?}`. */
function published(reply, channel) {
  if (!Array.isArray(reply) || reply.length < 2) {
    throw new SwitchyardError(`switchyard FCALL on ${channel}: unexpected reply ${JSON.stringify(reply)}`, { code: 'unexpected_response' });
  }
  const [offset, epoch, dup] = reply;
  const out = {};
  if (Number(offset) > 0) {
    out.offset = Number(offset);
    out.epoch = String(epoch);
  }
  if (Number(dup) === 1) out.duplicate = true;
  return out;
}
