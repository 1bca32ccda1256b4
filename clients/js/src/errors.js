// Errors carry the server's code (`forbidden`, `rate_limited`, ...) or the client's
// own (`timeout`, `disconnected`, `connect_failed`, `subscribe_failed`,
// `reserved_type`, `unsubscribed`); `cause` holds the underlying error when there is one.

export class SwitchyardError extends Error {
  constructor(code, message, options) {
    super(message || code, options);
    this.name = 'SwitchyardError';
    this.code = code;
  }
}
