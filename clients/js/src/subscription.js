// One channel's subscription: its state machine (unsubscribed → subscribing →
// subscribed), its position in the channel's history, and its requests.

import { Emitter } from './emitter.js';
import { SwitchyardError } from './errors.js';

export class Subscription {
  #emitter = new Emitter();
  #client;
  #waiters = [];

  /** @internal */
  constructor(client, channel, options = {}) {
    this.#client = client;
    this.channel = channel;
    this.token = options.token;
    /** @type {'unsubscribed' | 'subscribing' | 'subscribed'} */
    this.state = 'unsubscribed';
    /** Offset of the last publication delivered (or the position at subscribe). */
    this.offset = null;
    this.epoch = null;
  }

  on(event, listener) {
    return this.#emitter.on(event, listener);
  }

  /** Resolves once subscribed; rejects when the subscribe is refused. */
  ready() {
    if (this.state === 'subscribed') return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** @internal (re)subscribes, with `since` once a position is known. */
  async _subscribe() {
    this.state = 'subscribing';
    const payload = { channel: this.channel };
    if (this.token) {
      payload.token = typeof this.token === 'function' ? await this.token() : this.token;
    }
    if (this.offset !== null && this.epoch !== null) {
      payload.since = { offset: this.offset, epoch: this.epoch };
    }
    let reply;
    try {
      reply = await this.#client._request({ type: 'subscribe', payload });
    } catch (err) {
      if (this.state === 'unsubscribed') return;
      if (err.code === 'disconnected' || err.code === 'timeout') {
        // The client resubscribes every live subscription when it is back.
        this.state = 'subscribing';
        return;
      }
      this.state = 'unsubscribed';
      this.#client._forget(this);
      this.#emitter.emit('error', err);
      for (const w of this.#waiters.splice(0)) w.reject(err);
      return;
    }
    this._subscribed(reply);
  }

  /** @internal */
  _subscribed(p) {
    if (this.state === 'unsubscribed') return;
    if (p && p.epoch !== undefined) {
      const recovered = p.recovered === true && this.epoch === p.epoch;
      if (!recovered) {
        // A first subscribe, or history could not fill the gap: start from now.
        this.offset = p.offset ?? 0;
      }
      this.epoch = p.epoch;
    }
    this.state = 'subscribed';
    this.#emitter.emit('subscribed', { recovered: p?.recovered, offset: p?.offset, epoch: p?.epoch });
    for (const w of this.#waiters.splice(0)) w.resolve();
  }

  /** @internal a publication for this channel; duplicates (by offset) are dropped. */
  _publication(envelope) {
    if (typeof envelope.offset === 'number') {
      if (this.offset !== null && envelope.offset <= this.offset) return;
      this.offset = envelope.offset;
    }
    this.#emitter.emit('publication', envelope);
  }

  /** @internal join / leave / error events of this channel. */
  _event(name, value) {
    this.#emitter.emit(name, value);
  }

  /** @internal the server ended this subscription (`/api/unsubscribe`). */
  _ended() {
    this.state = 'unsubscribed';
    this.#client._forget(this);
    this.#emitter.emit('unsubscribed', { channel: this.channel });
  }

  /** Publishes on this channel; resolves with `{offset?}` once acknowledged. */
  publish(type, payload, options = {}) {
    const frame = { type, channel: this.channel, payload };
    if (options.volatile) frame.volatile = true;
    if (options.to !== undefined && options.to !== null) frame.to = options.to;
    return this.#client._request(frame);
  }

  presence() {
    return this.#client._request({ type: 'presence', payload: { channel: this.channel } });
  }

  history(options = {}) {
    return this.#client._request({ type: 'history', payload: { channel: this.channel, ...options } });
  }

  unsubscribe() {
    if (this.state === 'unsubscribed') return;
    this.state = 'unsubscribed';
    this.#client._forget(this);
    const err = new SwitchyardError('unsubscribed', 'unsubscribed before it was ready');
    for (const w of this.#waiters.splice(0)) w.reject(err);
    if (this.#client.state === 'connected') {
      this.#client._request({ type: 'unsubscribe', payload: { channel: this.channel } }).catch(() => {});
    }
    this.#emitter.emit('unsubscribed', { channel: this.channel });
  }
}
