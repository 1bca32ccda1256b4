// The connection: one WebSocket at a time, a state machine (disconnected →
// connecting → connected) whose only door is #setState, authentication in an `auth`
// frame right after the socket opens (never in the URL), reconnects with the one
// backoff function, keepalive, requests keyed by id, and the subscriptions it drives
// through their own state machines (which keep the channel's values, read state,
// presence count and receipts).

import { Emitter } from './emitter.js';
import { backoff } from './backoff.js';
import { SwitchyardError } from './errors.js';
import { isReserved } from './protocol.js';
import { Subscription } from './subscription.js';

const DEFAULTS = {
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  timeout: 10000,
  pingInterval: 25000,
  // A connection up this long resets the backoff (extension, see README).
  stableAfter: 5000,
};

const describe = (err) => (err instanceof Error ? err.message : String(err));

export class Switchyard {
  #emitter = new Emitter();
  /** @type {'disconnected' | 'connecting' | 'connected'} */
  #state = 'disconnected';
  #ws = null;
  /** Whether the application wants a connection (connect() until disconnect()). */
  #want = false;
  /** Counts connect attempts; a pending getToken of an older one is ignored. */
  #dial = 0;
  #attempt = 0;
  #seq = 0;
  #requests = new Map();
  #subs = new Map();
  #resume = null;
  /** The id of the `auth` frame this socket presents (null: none), until its reply. */
  #authId = null;
  #lastDisconnect = null;
  #lastReceived = 0;
  #timers = { reconnect: null, stable: null, keepalive: null, auth: null };

  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    /** The last `auth_success` payload. */
    this.session = null;
  }

  /** 'disconnected' | 'connecting' | 'connected'; changes only through #setState. */
  get state() {
    return this.#state;
  }

  on(event, listener) {
    return this.#emitter.on(event, listener);
  }

  connect() {
    this.#want = true;
    if (this.#state === 'disconnected' && !this.#timers.reconnect) this.#open();
  }

  disconnect() {
    this.#want = false;
    this.#dial += 1;
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
      r.done(new SwitchyardError('disconnected', 'client disconnected'));
    }
    this.#setState('disconnected');
  }

  /**
   * The subscription of `channel` (the same object for the same channel; for an
   * existing one only a new `token` is taken from `options`).
   */
  subscribe(channel, options = {}) {
    let sub = this.#subs.get(channel);
    if (sub) {
      if (options.token) sub.token = options.token;
      return sub;
    }
    sub = new Subscription(this, channel, options);
    this.#subs.set(channel, sub);
    sub._moveToSubscribing();
    if (this.#state === 'connected') sub._subscribe();
    return sub;
  }

  /** The live subscription of `channel`, or null (beyond SPEC 14, as centrifuge-js). */
  getSubscription(channel) {
    return this.#subs.get(channel) ?? null;
  }

  /**
   * Unread counts (SPEC 15.1) of `channels`, or of every channel where the user has a
   * read position: resolves with `{channels: [{channel, offset, read_offset, unread}]}`.
   */
  unread(channels) {
    return this._request({ type: 'unread', payload: channels === undefined ? {} : { channels } });
  }

  /**
   * The current entries of a state channel without subscribing (SPEC 16.2, the client
   * `state` request): resolves with `{channel, offset, epoch, entries}`.
   */
  fetchState(channel, keys) {
    const payload = { channel };
    if (keys !== undefined) payload.keys = keys;
    return this._request({ type: 'state', payload });
  }

  /** @internal a subscription that ended is no longer this channel's. */
  _forget(sub) {
    if (this.#subs.get(sub.channel) === sub) this.#subs.delete(sub.channel);
  }

  /**
   * @internal sends a request; `done(err, reply)` is called synchronously when the
   * reply of its id arrives (so what follows the reply on the wire is handled after
   * it), or with a `timeout` / `disconnected` error. Returns the id.
   */
  _call(frame, done) {
    const id = String(++this.#seq);
    const entry = { frame: { ...frame, id }, done, sent: false, timer: null };
    entry.timer = setTimeout(() => {
      this.#requests.delete(id);
      done(new SwitchyardError('timeout', `no reply to ${frame.type} within ${this.options.timeout} ms`));
    }, this.options.timeout);
    this.#requests.set(id, entry);
    // Requests made while disconnected wait for the connection (up to the timeout).
    if (this.#state === 'connected') this.#send(entry);
    return id;
  }

  /** @internal forgets a request whose answer no longer matters. */
  _cancel(id) {
    const entry = this.#requests.get(id);
    if (!entry) return;
    this.#requests.delete(id);
    clearTimeout(entry.timer);
  }

  /**
   * @internal sends a frame that has no reply (`received`) on the live connection;
   * false when there is none (the caller keeps it for later).
   */
  _sendRaw(frame) {
    // readyState 1 is OPEN: a browser drops what is sent on a closing socket silently.
    if (this.#state !== 'connected' || !this.#ws || this.#ws.readyState !== 1) return false;
    try {
      this.#ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** @internal `_call` as a promise: resolves with the reply's payload. */
  _request(frame) {
    return new Promise((resolve, reject) => {
      this._call(frame, (err, reply) => (err ? reject(err) : resolve(reply)));
    });
  }

  /** @internal a publish; reserved names are requests, never publications. */
  _publish(frame) {
    if (isReserved(frame.type)) {
      return Promise.reject(new SwitchyardError('reserved_type', `"${frame.type}" is a reserved type, not an event name`));
    }
    return this._request(frame);
  }

  #send(entry) {
    try {
      this.#ws.send(JSON.stringify(entry.frame));
      entry.sent = true;
    } catch {
      // The socket is closing: the request waits for the next connection.
    }
  }

  /** The only place the connection's state changes. */
  #setState(state) {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.#emitter.emit('state', { state, previous });
  }

  #open() {
    const dial = ++this.#dial;
    this.#setState('connecting');
    // Nothing in the connect path may become an unhandled rejection: a failure is an
    // `error` event, then the usual backoff.
    this.#dialWith(dial).catch((cause) => {
      if (dial !== this.#dial) return;
      this.#emitter.emit('error', new SwitchyardError('connect_failed', `connect failed: ${describe(cause)}`, { cause }));
      this.#scheduleReconnect();
    });
  }

  async #dialWith(dial) {
    const token = this.options.getToken ? await this.options.getToken() : this.options.token;
    if (dial !== this.#dial) return; // disconnect() meanwhile
    const WS = this.options.websocket || globalThis.WebSocket;
    if (!WS) throw new Error('no WebSocket implementation: pass options.websocket');
    // The URL as given: tokens go in the `auth` frame, never in the query string
    // (SPEC 3: URLs end up in proxy logs).
    const ws = new WS(this.url);
    this.#ws = ws;
    this.#lastDisconnect = null;
    // What this socket presents is known now, before any frame can arrive.
    let auth = null;
    if (token) auth = { token };
    else if (this.#resume) auth = { resume: this.#resume };
    this.#authId = auth ? String(++this.#seq) : null;
    ws.onopen = () => this.#opened(ws, auth);
    ws.onmessage = (ev) => this.#message(ws, ev.data);
    ws.onclose = (ev) => this.#closed(ws, ev.code, ev.reason, true);
    ws.onerror = () => {};
  }

  /** The socket is open: authenticate, or wait for an anonymous node's auth_success. */
  #opened(ws, payload) {
    if (ws !== this.#ws) return;
    this.#touch();
    if (!payload) return;
    try {
      ws.send(JSON.stringify({ type: 'auth', id: this.#authId, payload }));
    } catch {
      return; // closing already: onclose follows
    }
    this.#timers.auth = setTimeout(() => this.#abort(ws, 4000, 'no reply to auth'), this.options.timeout);
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
    if (msg === null || typeof msg !== 'object') return;
    const { type, id, channel } = msg;
    if (id !== undefined && id === this.#authId) {
      this.#authReply(ws, msg);
      return;
    }
    if (type === 'disconnect') {
      this.#lastDisconnect = msg.payload || {};
      return;
    }
    if (type === 'auth_success') {
      // Unsolicited: an anonymous node's session. It is the connection only when
      // this socket presents nothing; else the reply to our `auth` decides.
      if (this.#state === 'connecting' && this.#authId === null) this.#connected(msg.payload || {});
      return;
    }
    if (id !== undefined && this.#requests.has(id)) {
      const r = this.#requests.get(id);
      this.#requests.delete(id);
      clearTimeout(r.timer);
      if (type === 'error' || type === 'auth_error') {
        const p = msg.payload || {};
        r.done(new SwitchyardError(p.code || 'internal', p.message));
      } else {
        r.done(null, msg.payload ?? {});
      }
      return;
    }
    const sub = channel !== undefined ? this.#subs.get(channel) : undefined;
    if (type === 'join' || type === 'leave') {
      sub?._event(type, msg.payload);
      return;
    }
    if (type === 'subscribed' || type === 'unsubscribed') {
      // With an id: the late answer to a request that timed out or was abandoned.
      if (id !== undefined) return;
      // Server-side (/api/subscribe, /api/unsubscribe): no id; the payload names the channel.
      const s = this.#subs.get(msg.payload?.channel);
      if (s && type === 'subscribed') s._moveToSubscribed(msg.payload);
      if (s && type === 'unsubscribed') s._moveToUnsubscribed();
      return;
    }
    if (type === 'error') {
      this.#emitter.emit('error', new SwitchyardError(msg.payload?.code || 'internal', msg.payload?.message));
      return;
    }
    if (type === 'snapshot' || type === 'read' || type === 'presence_count') {
      // Sections 15-16: the channel is in the payload (like `subscribed`).
      const p = msg.payload;
      if (p === null || typeof p !== 'object') return;
      const s = this.#subs.get(p.channel ?? channel);
      if (type === 'snapshot') s?._snapshot(p);
      else if (type === 'read') s?._read(p);
      else s?._presenceCount(p);
      return;
    }
    // Frames of reserved types (read, snapshot, presence_count, ...) are not
    // publications, whatever they carry.
    if (channel !== undefined && typeof type === 'string' && !isReserved(type)) {
      if (sub) sub._publication(msg);
      else this.#emitter.emit('publication', msg);
    }
  }

  #authReply(ws, msg) {
    this.#authId = null;
    if (msg.type === 'auth_success') {
      this.#connected(msg.payload || {});
      return;
    }
    const p = msg.payload || {};
    const err = new SwitchyardError(p.code || 'internal', p.message);
    this.#emitter.emit('error', err);
    if (msg.type === 'auth_error') {
      // The server closes with 4001 after a `disconnect` saying whether to come back;
      // if it did not, the auth timer closes, and this is what it says.
      this.#lastDisconnect = { code: 4001, reason: 'unauthorized', reconnect: false };
      return;
    }
    // Any other answer (e.g. `resume` on a node that no longer allows anonymous
    // sessions): forget the resume token and start over.
    this.#resume = null;
    this.#abort(ws, 4000, err.message);
  }

  #connected(payload) {
    clearTimeout(this.#timers.auth);
    this.session = payload;
    if (payload.resume) this.#resume = payload.resume;
    this.#setState('connected');
    clearTimeout(this.#timers.stable);
    this.#timers.stable = setTimeout(() => {
      this.#attempt = 0;
    }, this.options.stableAfter);
    this.#keepalive();
    this.#emitter.emit('connected', payload);
    for (const sub of this.#subs.values()) sub._subscribe();
    for (const entry of this.#requests.values()) {
      if (!entry.sent) this.#send(entry);
    }
  }

  #keepalive() {
    clearTimeout(this.#timers.keepalive);
    const ws = this.#ws;
    const check = () => {
      if (ws !== this.#ws || this.#state !== 'connected') return;
      const idle = Date.now() - this.#lastReceived;
      if (idle < this.options.pingInterval) {
        this.#timers.keepalive = setTimeout(check, this.options.pingInterval - idle);
        return;
      }
      const sentAt = Date.now();
      this._call({ type: 'ping' }, () => {});
      // Any frame within `timeout` proves the socket alive; nothing means it is dead.
      this.#timers.keepalive = setTimeout(() => {
        if (ws !== this.#ws) return;
        if (this.#lastReceived >= sentAt) return check();
        this.#abort(ws, 4000, 'keepalive timeout');
      }, this.options.timeout);
    };
    this.#timers.keepalive = setTimeout(check, this.options.pingInterval);
  }

  /** Gives up on a socket that does not answer; reconnects unless told otherwise. */
  #abort(ws, code, reason) {
    this.#closed(ws, code, reason, true);
    try {
      if (typeof ws.terminate === 'function') ws.terminate();
      else ws.close(code, reason);
    } catch {
      // already gone
    }
  }

  #closed(ws, code, reason, mayReconnect) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    this.#authId = null;
    clearTimeout(this.#timers.keepalive);
    clearTimeout(this.#timers.stable);
    clearTimeout(this.#timers.auth);
    const d = this.#lastDisconnect;
    // Without a `disconnect` message the network or the node went away: come back.
    const reconnect = mayReconnect && (d ? d.reconnect === true : true);
    for (const [id, r] of this.#requests) {
      if (r.sent) {
        this.#requests.delete(id);
        clearTimeout(r.timer);
        r.done(new SwitchyardError('disconnected', 'connection closed before the reply'));
      }
    }
    for (const sub of this.#subs.values()) sub._moveToSubscribing();
    const wasUp = this.#state !== 'disconnected';
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
