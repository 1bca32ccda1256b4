// React bindings: subscribe for the lifetime of a component, follow the connection
// state, a state channel's values, a read-state channel's unread count and a
// channel's presence count. React (18 or later: useSyncExternalStore) is an optional
// peer dependency.
//
// Several hooks (in one component or many) may use the same channel: they share its
// Subscription, counted per (client, channel), and the last one to unmount
// unsubscribes it, unless the application had subscribed it itself (then it stays).
import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from 'react';

/** client → channel → {sub, users, owned}. */
const shared = new WeakMap();

function acquire(client, channel, options) {
  let channels = shared.get(client);
  if (!channels) {
    channels = new Map();
    shared.set(client, channels);
  }
  let entry = channels.get(channel);
  const live = client.getSubscription(channel);
  if (!entry || entry.sub !== live || live === null) {
    // First user, or the shared one ended (refused, unsubscribed by the server).
    const owned = live === null;
    entry = { sub: live ?? client.subscribe(channel, options), users: 0, owned };
    channels.set(channel, entry);
  }
  entry.users += 1;
  return entry.sub;
}

function release(client, channel, sub) {
  const channels = shared.get(client);
  const entry = channels?.get(channel);
  if (!entry || entry.sub !== sub) return;
  entry.users -= 1;
  if (entry.users > 0) return;
  channels.delete(channel);
  if (entry.owned) sub.unsubscribe();
}

/**
 * The shared Subscription of `channel` while the component is mounted (null before
 * the effect ran, and without a client or channel). `options` are read when it is
 * created; `keys` is part of its identity.
 */
function useSharedSubscription(client, channel, options) {
  const [sub, setSub] = useState(null);
  const opts = useRef(options);
  opts.current = options;
  const keys = Array.isArray(options?.keys) ? JSON.stringify(options.keys) : '';
  useEffect(() => {
    if (!client || !channel) {
      setSub(null);
      return undefined;
    }
    const s = acquire(client, channel, opts.current);
    setSub(s);
    return () => release(client, channel, s);
  }, [client, channel, keys]);
  return sub;
}

const noop = () => {};

/** A value of the subscription kept current by `events`, re-rendering on each. */
function useSubscriptionValue(sub, events, read, fallback) {
  const subscribe = useCallback(
    (notify) => {
      if (!sub) return noop;
      const offs = events.map((e) => sub.on(e, notify));
      return () => offs.forEach((off) => off());
    },
    [sub], // `events` is a constant of each caller
  );
  const get = () => (sub ? read(sub) : fallback);
  return useSyncExternalStore(subscribe, get, get);
}

/** Subscribes to `channel` while the component is mounted; calls `onPublication`. */
export function useSubscription(client, channel, onPublication) {
  const handler = useRef(onPublication);
  handler.current = onPublication;
  const sub = useSharedSubscription(client, channel);
  useEffect(() => sub?.on('publication', (p) => handler.current?.(p)), [sub]);
}

/** The client's connection state, re-rendering on every change. */
export function useConnectionState(client) {
  return useSyncExternalStore(
    (notify) => client.on('state', notify),
    () => client.state,
    () => client.state,
  );
}

const EMPTY = new Map();

/**
 * The values of a state channel (key → current payload): a new Map object after
 * every snapshot and change, so React re-renders; the same object in between.
 */
export function useChannelState(client, channel, options) {
  const sub = useSharedSubscription(client, channel, options);
  const view = useRef({ sub: null, version: -1, map: EMPTY });
  return useSubscriptionValue(
    sub,
    ['values'],
    (s) => {
      const v = view.current;
      if (s._valuesVersion === 0) return EMPTY; // nothing yet: no render for an empty copy
      if (v.sub !== s || v.version !== s._valuesVersion) {
        view.current = { sub: s, version: s._valuesVersion, map: new Map(s.values) };
      }
      return view.current.map;
    },
    EMPTY,
  );
}

/**
 * The unread count of a read_state channel, kept current, and `markRead(offset?)`
 * (default: the last delivered publication).
 */
export function useUnread(client, channel) {
  const sub = useSharedSubscription(client, channel);
  const unread = useSubscriptionValue(sub, ['unread', 'subscribed', 'read'], (s) => s.unread, 0);
  const markRead = useCallback(
    (offset) => {
      if (!sub) return Promise.reject(new Error(`${channel} is not subscribed yet`));
      return sub.markRead(offset);
    },
    [sub, channel],
  );
  return { unread, markRead };
}

const NOBODY = Object.freeze({ count: 0, users: 0 });

/** `{count, users}` of a `presence = "counts"` channel, kept current from `presence_count`. */
export function usePresenceCount(client, channel) {
  const sub = useSharedSubscription(client, channel);
  return useSubscriptionValue(sub, ['presence_count'], (s) => s.presenceCount ?? NOBODY, NOBODY);
}
