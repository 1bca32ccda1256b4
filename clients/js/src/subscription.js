// One channel's subscription: its state machine (unsubscribed → subscribing →
// subscribed) whose only door is _setState, its position in the channel's history,
// and its requests. The client moves it with _moveToSubscribing / _subscribe /
// _moveToSubscribed / _moveToUnsubscribed; it never assigns the state itself.

import { Emitter } from './emitter.js';
import { backoff } from './backoff.js';
import { SwitchyardError } from './errors.js';

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

  /** @internal */
  constructor(client, channel, options = {}) {
    this.#client = client;
    this.channel = channel;
    this.token = options.token;
    /** Offset of the last publication delivered (or the position at subscribe). */
    this.offset = null;
    this.epoch = null;
  }

  /** 'unsubscribed' | 'subscribing' | 'subscribed'; changes only through _setState. */
  get state() {
    return this.#state;
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
      if (this.offset !== null && this.epoch !== null) payload.since = { offset: this.offset, epoch: this.epoch };
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
   * application before any publication this subscribe replays.
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
      }
      this.epoch = p.epoch;
    }
    this._setState('subscribed');
    this.#emitter.emit('subscribed', { recovered: p?.recovered, offset: p?.offset, epoch: p?.epoch });
    for (const w of this.#waiters.splice(0)) w.resolve();
  }

  /** @internal the server ended this subscription (`/api/unsubscribe`). */
  _moveToUnsubscribed() {
    this.#end(new SwitchyardError('unsubscribed', `${this.channel} was unsubscribed by the server`));
    this.#emitter.emit('unsubscribed', { channel: this.channel });
  }

  /** @internal a publication for this channel; duplicates (by offset) are dropped. */
  _publication(envelope) {
    if (this.#state === 'unsubscribed') return;
    if (typeof envelope.offset === 'number') {
      if (this.offset !== null && envelope.offset <= this.offset) return;
      this.offset = envelope.offset;
    }
    this.#emitter.emit('publication', envelope);
  }

  /** @internal join / leave events of this channel. */
  _event(name, value) {
    this.#emitter.emit(name, value);
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

  unsubscribe() {
    if (this.#state === 'unsubscribed') return;
    this.#end(new SwitchyardError('unsubscribed', 'unsubscribed before it was ready'));
    if (this.#client.state === 'connected') {
      this.#client._request({ type: 'unsubscribe', payload: { channel: this.channel } }).catch(() => {});
    }
    this.#emitter.emit('unsubscribed', { channel: this.channel });
  }
}
