// Errors carry the server's code (`forbidden`, `rate_limited`, ...) or the client's
// own (`timeout`, `disconnected`).

export class SwitchyardError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'SwitchyardError';
    this.code = code;
  }
}
