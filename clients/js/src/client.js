// The connection: one WebSocket at a time, a state machine (disconnected →
// connecting → connected), reconnects with full-jitter backoff, keepalive, requests
// keyed by id, and the subscriptions it resubscribes after every reconnect.

import { Emitter } from './emitter.js';
import { backoff } from './backoff.js';
import { SwitchyardError } from './errors.js';
import { Subscription } from './subscription.js';

const SERVER_TYPES = new Set([
  'auth_success', 'auth_error', 'subscribed', 'unsubscribed', 'pong', 'presence', 'history',
  'ack', 'error', 'join', 'leave', 'disconnect',
]);

const DEFAULTS = {
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  timeout: 10000,
  pingInterval: 25000,
  // A connection up this long resets the backoff (extension, see README).
  stableAfter: 5000,
};

export class Switchyard {
  #emitter = new Emitter();
  #ws = null;
  #want = false;
  #attempt = 0;
  #seq = 0;
  #requests = new Map();
  #subs = new Map();
  #resume = null;
  #lastDisconnect = null;
  #lastReceived = 0;
  #timers = { reconnect: null, stable: null, keepalive: null };

  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    /** @type {'disconnected' | 'connecting' | 'connected'} */
    this.state = 'disconnected';
    /** The last `auth_success` payload. */
    this.session = null;
  }

  on(event, listener) {
    return this.#emitter.on(event, listener);
  }

  connect() {
    this.#want = true;
    if (this.state === 'disconnected' && !this.#timers.reconnect) this.#open();
  }

  disconnect() {
    this.#want = false;
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = null;
    const ws = this.#ws;
    if (ws) {
      this.#closed(ws, 1000, 'client disconnect', false);
      try {
        ws.close(1000, 'client disconnect');
      } catch {
        // already closing
      }
    }
    for (const [id, r] of this.#requests) {
      this.#requests.delete(id);
      clearTimeout(r.timer);
      r.reject(new SwitchyardError('disconnected', 'client disconnected'));
    }
    this.#setState('disconnected');
  }

  /** The subscription of `channel` (the same object for the same channel). */
  subscribe(channel, options = {}) {
    let sub = this.#subs.get(channel);
    if (sub) {
      if (options.token) sub.token = options.token;
      return sub;
    }
    sub = new Subscription(this, channel, options);
    this.#subs.set(channel, sub);
    sub.state = 'subscribing';
    if (this.state === 'connected') sub._subscribe();
    return sub;
  }

  /** @internal */
  _forget(sub) {
    if (this.#subs.get(sub.channel) === sub) this.#subs.delete(sub.channel);
  }

  /** @internal sends a request; settles with the reply carrying its id. */
  _request(frame) {
    return new Promise((resolve, reject) => {
      const id = String(++this.#seq);
      const entry = { frame: { ...frame, id }, resolve, reject, sent: false, timer: null };
      entry.timer = setTimeout(() => {
        this.#requests.delete(id);
        reject(new SwitchyardError('timeout', `no reply to ${frame.type} within ${this.options.timeout} ms`));
      }, this.options.timeout);
      this.#requests.set(id, entry);
      // Requests made while disconnected wait for the connection (up to the timeout).
      if (this.state === 'connected') this.#send(entry);
    });
  }

  #send(entry) {
    try {
      this.#ws.send(JSON.stringify(entry.frame));
      entry.sent = true;
    } catch {
      // The socket is closing: the request waits for the next connection.
    }
  }

  #setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.#emitter.emit('state', { state, previous });
  }

  async #open() {
    this.#setState('connecting');
    let token = this.options.token;
    if (this.options.getToken) {
      try {
        token = await this.options.getToken();
      } catch {
        this.#scheduleReconnect();
        return;
      }
    }
    if (!this.#want) {
      this.#setState('disconnected');
      return;
    }
    const params = new URLSearchParams();
    if (token) params.set('token', token);
    if (this.#resume) params.set('resume', this.#resume);
    const query = params.toString();
    const url = query ? `${this.url}${this.url.includes('?') ? '&' : '?'}${query}` : this.url;
    const WS = this.options.websocket || globalThis.WebSocket;
    if (!WS) throw new Error('no WebSocket implementation: pass options.websocket');
    let ws;
    try {
      ws = new WS(url);
    } catch {
      this.#scheduleReconnect();
      return;
    }
    this.#ws = ws;
    this.#lastDisconnect = null;
    ws.onopen = () => this.#touch();
    ws.onmessage = (ev) => this.#message(ws, ev.data);
    ws.onclose = (ev) => this.#closed(ws, ev.code, ev.reason, true);
    ws.onerror = () => {};
  }

  #touch() {
    this.#lastReceived = Date.now();
  }

  #message(ws, data) {
    if (ws !== this.#ws) return;
    this.#touch();
    let msg;
    try {
      msg = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch {
      return;
    }
    const { type, id, channel } = msg;
    if (type === 'disconnect') {
      this.#lastDisconnect = msg.payload || {};
      return;
    }
    if (type === 'auth_success' && this.state !== 'connected') {
      this.#connected(msg.payload || {});
    }
    if (id !== undefined && this.#requests.has(id)) {
      const r = this.#requests.get(id);
      this.#requests.delete(id);
      clearTimeout(r.timer);
      if (type === 'error' || type === 'auth_error') {
        const p = msg.payload || {};
        r.reject(new SwitchyardError(p.code || 'internal', p.message));
      } else {
        r.resolve(msg.payload ?? {});
      }
      return;
    }
    const sub = channel !== undefined ? this.#subs.get(channel) : undefined;
    if (type === 'join' || type === 'leave') {
      sub?._event(type, msg.payload);
      return;
    }
    if (type === 'subscribed' || type === 'unsubscribed') {
      // Server-side (/api/subscribe): no id; the payload names the channel.
      const s = this.#subs.get(msg.payload?.channel);
      if (s && type === 'subscribed') s._subscribed(msg.payload);
      if (s && type === 'unsubscribed') s._ended();
      return;
    }
    if (type === 'error') {
      this.#emitter.emit('error', new SwitchyardError(msg.payload?.code || 'internal', msg.payload?.message));
      return;
    }
    if (channel !== undefined && !SERVER_TYPES.has(type)) {
      if (sub && sub.state !== 'unsubscribed') sub._publication(msg);
      else this.#emitter.emit('publication', msg);
    }
  }

  #connected(payload) {
    this.session = payload;
    if (payload.resume) this.#resume = payload.resume;
    this.#setState('connected');
    clearTimeout(this.#timers.stable);
    this.#timers.stable = setTimeout(() => {
      this.#attempt = 0;
    }, this.options.stableAfter);
    this.#keepalive();
    this.#emitter.emit('connected', payload);
    for (const sub of this.#subs.values()) {
      if (sub.state !== 'unsubscribed') sub._subscribe();
    }
    for (const entry of this.#requests.values()) {
      if (!entry.sent) this.#send(entry);
    }
  }

  #keepalive() {
    clearTimeout(this.#timers.keepalive);
    const ws = this.#ws;
    const check = () => {
      if (ws !== this.#ws || this.state !== 'connected') return;
      const idle = Date.now() - this.#lastReceived;
      if (idle < this.options.pingInterval) {
        this.#timers.keepalive = setTimeout(check, this.options.pingInterval - idle);
        return;
      }
      const sentAt = Date.now();
      this._request({ type: 'ping' }).catch(() => {});
      // Any frame within `timeout` proves the socket alive; nothing means it is dead.
      this.#timers.keepalive = setTimeout(() => {
        if (ws !== this.#ws) return;
        if (this.#lastReceived >= sentAt) return check();
        this.#closed(ws, 4000, 'keepalive timeout', true);
        try {
          if (typeof ws.terminate === 'function') ws.terminate();
          else ws.close(4000, 'keepalive timeout');
        } catch {
          // already gone
        }
      }, this.options.timeout);
    };
    this.#timers.keepalive = setTimeout(check, this.options.pingInterval);
  }

  #closed(ws, code, reason, mayReconnect) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    clearTimeout(this.#timers.keepalive);
    clearTimeout(this.#timers.stable);
    const d = this.#lastDisconnect;
    // Without a `disconnect` message the network or the node went away: come back.
    const reconnect = mayReconnect && (d ? d.reconnect === true : true);
    for (const [id, r] of this.#requests) {
      if (r.sent) {
        this.#requests.delete(id);
        clearTimeout(r.timer);
        r.reject(new SwitchyardError('disconnected', 'connection closed before the reply'));
      }
    }
    for (const sub of this.#subs.values()) {
      if (sub.state === 'subscribed') sub.state = 'subscribing';
    }
    const wasUp = this.state !== 'disconnected';
    this.#setState('disconnected');
    if (wasUp) {
      this.#emitter.emit('disconnected', { code: d?.code ?? code, reason: d?.reason ?? reason, reconnect });
    }
    if (this.#want && reconnect) this.#scheduleReconnect();
    else this.#want = false;
  }

  #scheduleReconnect() {
    this.#setState('disconnected');
    const delay = backoff(this.#attempt++, this.options.minReconnectDelay, this.options.maxReconnectDelay);
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = setTimeout(() => {
      this.#timers.reconnect = null;
      if (this.#want) this.#open();
    }, delay);
  }

  /** @internal for tests: the current retry attempt count. */
  get _attempt() {
    return this.#attempt;
  }
}
