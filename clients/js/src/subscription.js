// One channel's subscription: its state machine (unsubscribed → subscribing →
// subscribed) whose only door is _setState, its position in the channel's history,
// and its requests. The client moves it with _moveToSubscribing / _subscribe /
// _moveToSubscribed / _moveToUnsubscribed; it never assigns the state itself.
// Beside the position it keeps what the node tells about the channel (SPEC 15-16):
// the values of a state channel (values.js), the read position and unread count,
// the presence count, and the receipts still to confirm (receipts.js).

import { Emitter } from './emitter.js';
import { backoff } from './backoff.js';
import { SwitchyardError } from './errors.js';
import { ChannelValues } from './values.js';
import { Receipts } from './receipts.js';

const describe = (err) => (err instanceof Error ? err.message : String(err));

export class Subscription {
  #emitter = new Emitter();
  #client;
  /** @type {'unsubscribed' | 'subscribing' | 'subscribed'} */
  #state = 'unsubscribed';
  #waiters = [];
  /** Counts subscribe attempts: the answer to an older one is ignored. */
  #attempt = 0;
  /** Failed attempts in a row on a live connection, for the retry backoff. */
  #failures = 0;
  #requestId = null;
  #retry = null;
  /** Set once unsubscribed: a subscription that ended never comes back. */
  #ended = false;
  /** The offset of the last publication delivered (for the `conflated` duplicate rule). */
  #lastOffset = null;
  #values;
  /**
   * Set while a delta's base is missing: the resubscribe asks `since` no later than
   * this, so the partial snapshot holds the key. Cleared by the next snapshot.
   */
  #resyncFloor = null;
  /** The newest offset of the channel known here (read-state channels), for `unread`. */
  #newest = null;
  /** Whether a `subscribed` reply carried `read_offset` (a read_state namespace). */
  #readState = false;
  #receipts;

  /** @internal */
  constructor(client, channel, options = {}) {
    this.#client = client;
    this.channel = channel;
    this.token = options.token;
    /** `keys`, `receipts`, `conflated` as given to `client.subscribe`. */
    this.options = { keys: options.keys, receipts: options.receipts, conflated: options.conflated === true };
    /** Offset of the last publication delivered (or the position at subscribe / of the last snapshot). */
    this.offset = null;
    this.epoch = null;
    /** The read position (read_state channels), null until the node told one. */
    this.readOffset = null;
    /** Publications above the read position (read_state channels), kept current. */
    this.unread = 0;
    /** `{count, users}` from the last `presence_count` frame, null before one. */
    this.presenceCount = null;
    this.#values = new ChannelValues(options.keys);
    this.#receipts = new Receipts((offsets) => this.#sendReceipts(offsets));
  }

  /** 'unsubscribed' | 'subscribing' | 'subscribed'; changes only through _setState. */
  get state() {
    return this.#state;
  }

  /** key → current payload on a state channel; the same Map, changed in place. */
  get values() {
    return this.#values.map;
  }

  /** @internal counts changes of `values` (a view's cache key). */
  get _valuesVersion() {
    return this.#values.version;
  }

  /** Whether this subscription confirms publications with `received` (see README). */
  get receipts() {
    return this.options.receipts === true || (this.options.receipts !== false && this.#readState);
  }

  on(event, listener) {
    return this.#emitter.on(event, listener);
  }

  /** Resolves once subscribed; rejects when the subscribe is refused or it ended. */
  ready() {
    if (this.#state === 'subscribed') return Promise.resolve();
    if (this.#state === 'unsubscribed') {
      return Promise.reject(new SwitchyardError('unsubscribed', `${this.channel} is not subscribed`));
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** @internal The only place the subscription's state changes. */
  _setState(state) {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.#emitter.emit('state', { state, previous });
  }

  /**
   * @internal the subscription waits for the connection: it is new, or the
   * connection went away. Whatever attempt was under way no longer counts.
   */
  _moveToSubscribing() {
    if (this.#ended) return;
    this.#abandonAttempt();
    this._setState('subscribing');
  }

  /** @internal the client is connected: (re)subscribe, with `since` once a position is known. */
  _subscribe() {
    if (this.#state !== 'subscribing') return;
    this.#abandonAttempt();
    const attempt = this.#attempt;
    const current = () => attempt === this.#attempt && this.#state === 'subscribing';
    const send = (token) => {
      if (!current()) return;
      const payload = { channel: this.channel };
      if (token) payload.token = token;
      if (this.offset !== null && this.epoch !== null) {
        const offset = this.#resyncFloor === null ? this.offset : Math.min(this.offset, this.#resyncFloor);
        payload.since = { offset, epoch: this.epoch };
      }
      if (Array.isArray(this.options.keys)) payload.keys = this.options.keys;
      this.#requestId = this.#client._call({ type: 'subscribe', payload }, (err, reply) => {
        if (!current()) return;
        this.#requestId = null;
        if (err) this.#subscribeFailed(err);
        else this._moveToSubscribed(reply);
      });
    };
    const tokenFailed = (cause) => {
      if (!current()) return;
      const err = new SwitchyardError('subscribe_failed', `no subscription token for ${this.channel}: ${describe(cause)}`, { cause });
      this.#emitter.emit('error', err);
      this.#scheduleRetry();
    };
    // A string token (or none) sends at once, so the subscribe goes out before
    // requests queued while disconnected; a token function may be async.
    let token;
    try {
      token = typeof this.token === 'function' ? this.token() : this.token;
    } catch (cause) {
      tokenFailed(cause);
      return;
    }
    if (token && typeof token.then === 'function') Promise.resolve(token).then(send, tokenFailed);
    else send(token);
  }

  /**
   * @internal the server confirmed the subscription (the reply to our subscribe, or
   * a server-side subscribe). Runs as the frame arrives, so `subscribed` reaches the
   * application before any publication (or snapshot) this subscribe replays.
   */
  _moveToSubscribed(p) {
    if (this.#state === 'unsubscribed') return;
    this.#abandonAttempt();
    this.#failures = 0;
    if (p && p.epoch !== undefined) {
      const recovered = p.recovered === true && this.epoch === p.epoch;
      if (!recovered) {
        // A first subscribe, or history could not fill the gap: start from now.
        this.offset = p.offset ?? 0;
        this.#lastOffset = null;
      }
      this.epoch = p.epoch;
    }
    if (p && typeof p.read_offset === 'number') {
      this.#readState = true;
      // The node's count is the truth at subscribe: replayed publications are in it.
      const unread = typeof p.unread === 'number' ? p.unread : Math.max(0, (p.offset ?? p.read_offset) - p.read_offset);
      this.#newest = p.read_offset + unread;
      this.readOffset = p.read_offset;
      this.#setUnread(unread);
    }
    this._setState('subscribed');
    const event = { recovered: p?.recovered, offset: p?.offset, epoch: p?.epoch };
    if (this.#readState) Object.assign(event, { read_offset: this.readOffset, unread: this.unread });
    this.#emitter.emit('subscribed', event);
    for (const w of this.#waiters.splice(0)) w.resolve();
    this.#receipts.resume();
  }

  /** @internal the server ended this subscription (`/api/unsubscribe`). */
  _moveToUnsubscribed() {
    this.#end(new SwitchyardError('unsubscribed', `${this.channel} was unsubscribed by the server`));
    this.#emitter.emit('unsubscribed', { channel: this.channel });
  }

  /**
   * @internal a publication for this channel. Duplicates are dropped: by the key's own
   * offset on keyed (state) publications, by exact offset with the `conflated`
   * option, else anything not above the last delivered offset.
   */
  _publication(envelope) {
    if (this.#state === 'unsubscribed') return;
    const offset = typeof envelope.offset === 'number' ? envelope.offset : null;
    const key = typeof envelope.key === 'string' ? envelope.key : null;
    if (offset !== null && this.#isDuplicate(key, offset)) return;
    let delivered = envelope;
    let changed = false;
    if (key !== null) {
      const applied = this.#values.publication(envelope);
      if (applied.missingBase && this.#values.wants(key)) {
        this.#resync(offset);
        return;
      }
      if (!applied.missingBase) {
        changed = applied.changed;
        if (envelope.delta === true) {
          // Always the full value: the patch applied to the version it was made against.
          const { delta, base, ...full } = envelope;
          delivered = { ...full, payload: applied.payload };
        }
      }
    }
    if (offset !== null) {
      this.offset = this.offset === null ? offset : Math.max(this.offset, offset);
      this.#lastOffset = offset;
      this.#countUnread(offset);
    }
    this.#emitter.emit('publication', delivered);
    if (changed) this.#emitter.emit('values', this.values, [key]);
    // After the handlers returned: the application has it.
    if (offset !== null && this.receipts) this.#receipts.add(offset);
  }

  /** @internal a `snapshot` frame: the values of a state channel at its `offset`. */
  _snapshot(p) {
    if (this.#state === 'unsubscribed' || !Array.isArray(p.entries)) return;
    const changed = this.#values.snapshot(p);
    if (typeof p.offset === 'number') {
      this.offset = p.full === true || this.offset === null ? p.offset : Math.max(this.offset, p.offset);
    }
    if (typeof p.epoch === 'string') this.epoch = p.epoch;
    this.#resyncFloor = null;
    this.#emitter.emit('snapshot', p);
    this.#emitter.emit('values', this.values, changed);
  }

  /**
   * @internal a `read` frame: the reply to `mark_read`, or another device of the user
   * read. Forward only; returns whether it was applied.
   */
  _read(p) {
    if (this.#state === 'unsubscribed' || typeof p?.read_offset !== 'number') return false;
    if (this.readOffset !== null && p.read_offset < this.readOffset) return false;
    this.#readState = true;
    const unread = typeof p.unread === 'number' ? p.unread : 0;
    // Never forget a publication delivered here that the node had not counted yet.
    this.#newest = Math.max(this.#newest ?? 0, p.read_offset + unread);
    this.readOffset = p.read_offset;
    this.#setUnread(Math.max(0, this.#newest - p.read_offset));
    this.#emitter.emit('read', { read_offset: this.readOffset, unread: this.unread });
    return true;
  }

  /** @internal a `presence_count` frame. */
  _presenceCount(p) {
    if (this.#state === 'unsubscribed' || typeof p?.count !== 'number') return;
    this.presenceCount = { count: p.count, users: typeof p.users === 'number' ? p.users : 0 };
    this.#emitter.emit('presence_count', this.presenceCount);
  }

  /** @internal join / leave events of this channel. */
  _event(name, value) {
    this.#emitter.emit(name, value);
  }

  #isDuplicate(key, offset) {
    if (key !== null) return this.#values.isStale(key, offset);
    if (this.options.conflated) return offset === this.#lastOffset;
    return this.offset !== null && offset <= this.offset;
  }

  #countUnread(offset) {
    if (this.readOffset === null) return;
    if (offset <= (this.#newest ?? 0)) return;
    this.#newest = offset;
    this.#setUnread(Math.max(0, offset - this.readOffset));
  }

  #setUnread(unread) {
    if (unread === this.unread) return;
    this.unread = unread;
    this.#emitter.emit('unread', unread);
  }

  /**
   * A delta whose base is not held: re-subscribe with `since` before that offset, so
   * the node answers a snapshot with the key's full value. Through the state
   * machine: `subscribing` until the answer, then `subscribed` again.
   */
  #resync(offset) {
    const floor = Math.min(this.offset ?? 0, offset - 1);
    this.#resyncFloor = this.#resyncFloor === null ? floor : Math.min(this.#resyncFloor, floor);
    if (this.#state !== 'subscribed') return; // a subscribe is due anyway; it asks from the floor
    this._moveToSubscribing();
    if (this.#client.state === 'connected') this._subscribe();
  }

  #sendReceipts(offsets) {
    if (this.#state !== 'subscribed') return false;
    return this.#client._sendRaw({ type: 'received', payload: { channel: this.channel, offsets } });
  }

  #subscribeFailed(err) {
    // The client resubscribes every live subscription when the connection is back.
    if (err.code === 'disconnected') return;
    if (err.code === 'timeout') {
      this.#emitter.emit('error', err);
      this.#scheduleRetry();
      return;
    }
    // Refused by the server (forbidden, invalid_channel, ...): final.
    this.#end(err);
    this.#emitter.emit('error', err);
  }

  /** Retries on the live connection after the SDK's one backoff. */
  #scheduleRetry() {
    const { minReconnectDelay, maxReconnectDelay } = this.#client.options;
    const delay = backoff(this.#failures++, minReconnectDelay, maxReconnectDelay);
    clearTimeout(this.#retry);
    this.#retry = setTimeout(() => {
      this.#retry = null;
      if (this.#client.state === 'connected') this._subscribe();
    }, delay);
  }

  /** Makes any answer still due to an earlier attempt irrelevant. */
  #abandonAttempt() {
    this.#attempt += 1;
    clearTimeout(this.#retry);
    this.#retry = null;
    if (this.#requestId !== null) this.#client._cancel(this.#requestId);
    this.#requestId = null;
  }

  /** The subscription is over: forgotten by the client, waiters rejected. */
  #end(err) {
    this.#ended = true;
    this.#abandonAttempt();
    this.#receipts.stop();
    this._setState('unsubscribed');
    this.#client._forget(this);
    for (const w of this.#waiters.splice(0)) w.reject(err);
  }

  /** Publishes on this channel; resolves with `{offset?}` once acknowledged. */
  publish(type, payload, options = {}) {
    const frame = { type, channel: this.channel, payload };
    if (options.volatile) frame.volatile = true;
    if (options.to !== undefined && options.to !== null) frame.to = options.to;
    return this.#client._publish(frame);
  }

  presence() {
    return this.#client._request({ type: 'presence', payload: { channel: this.channel } });
  }

  history(options = {}) {
    return this.#client._request({ type: 'history', payload: { channel: this.channel, ...options } });
  }

  /**
   * Moves the read position to `offset` (default: the last delivered publication);
   * resolves with the `read {channel, read_offset, unread}` reply, also applied here
   * and emitted as a `read` event.
   */
  markRead(offset = this.offset) {
    if (typeof offset !== 'number') {
      return Promise.reject(new SwitchyardError('invalid_payload', `no offset to mark read on ${this.channel}`));
    }
    return new Promise((resolve, reject) => {
      this.#client._call({ type: 'mark_read', payload: { channel: this.channel, offset } }, (err, reply) => {
        if (err) return reject(err);
        this._read(reply);
        return resolve(reply);
      });
    });
  }

  unsubscribe() {
    if (this.#state === 'unsubscribed') return;
    // What reached the application is confirmed before the subscription goes.
    this.#receipts.flushNow();
    this.#end(new SwitchyardError('unsubscribed', 'unsubscribed before it was ready'));
    if (this.#client.state === 'connected') {
      this.#client._request({ type: 'unsubscribe', payload: { channel: this.channel } }).catch(() => {});
    }
    this.#emitter.emit('unsubscribed', { channel: this.channel });
  }
}
