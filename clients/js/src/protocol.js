// The reserved type names of the wire protocol (SPEC 2): what the server sends and
// what a client sends besides publications. Kept as plain arrays of string literals,
// one declaration each, so the server's tests can read them from this file with a
// regex and compare them with the server's own list.

/** Types the server sends; a frame of one of these is never a publication. */
export const SERVER_TYPES = [
  'auth_success', 'auth_error', 'subscribed', 'unsubscribed', 'pong', 'presence', 'history',
  'ack', 'error', 'join', 'leave', 'disconnect',
  'read', 'unread', 'snapshot', 'state', 'presence_count',
];

/** Types a client sends that are requests, not publications. */
export const CLIENT_TYPES = [
  'auth', 'subscribe', 'unsubscribe', 'ping', 'presence', 'history',
  'mark_read', 'received', 'unread', 'state',
];

const RESERVED = new Set([...SERVER_TYPES, ...CLIENT_TYPES]);

/** Whether `type` is a reserved name: no one may publish an event by that name. */
export function isReserved(type) {
  return RESERVED.has(type);
}
