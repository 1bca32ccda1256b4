// Every way a call of this SDK fails, as classes a caller can tell apart with
// `instanceof` and a `code` it can switch on. The HTTP API's errors keep the server's
// own code (`invalid_channel`, `unavailable`, …) and status; failures on our side of
// the wire get codes of their own (`timeout`, `network`).

/**
 * A call to a switchyard node (HTTP API or Redis) failed.
 * `code`: the server's error code (SPEC 6: `bad_request`, `invalid_channel`,
 * `reserved_type`, `limit_exceeded`, `unauthorized`, `not_found`, `too_large`,
 * `unavailable`, `internal`, …) or one of ours: `timeout` (no answer within the
 * timeout), `network` (the connection failed), `unexpected_response` (an answer
 * that is not the API's JSON, e.g. a proxy's error page).
 * `status`: the HTTP status when there was one. `attempts`: how many tries were made.
 */
export class SwitchyardError extends Error {
  constructor(message, { code, status, attempts, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'SwitchyardError';
    this.code = code;
    if (status !== undefined) this.status = status;
    if (attempts !== undefined) this.attempts = attempts;
  }
}

/**
 * `verifyWebhook` refused a request (SPEC 17). Subclasses name the reason, and
 * `code` says it too: `missing_header`, `invalid_header`, `bad_signature`,
 * `timestamp_out_of_tolerance`, `invalid_body`.
 */
export class WebhookVerificationError extends Error {
  constructor(message, code) {
    super(message);
    this.name = 'WebhookVerificationError';
    this.code = code;
  }
}

/** A signature or timestamp header is missing or malformed. */
export class WebhookHeaderError extends WebhookVerificationError {
  constructor(message, code = 'invalid_header') {
    super(message, code);
    this.name = 'WebhookHeaderError';
  }
}

/** No signature matches the body and timestamp with the secret. */
export class WebhookSignatureError extends WebhookVerificationError {
  constructor(message) {
    super(message, 'bad_signature');
    this.name = 'WebhookSignatureError';
  }
}

/** The timestamp is further from now than the tolerance (a replayed request). */
export class WebhookTimestampError extends WebhookVerificationError {
  constructor(message) {
    super(message, 'timestamp_out_of_tolerance');
    this.name = 'WebhookTimestampError';
  }
}

/** The signed body is not `{"events": [...]}` (or was not given as raw text). */
export class WebhookBodyError extends WebhookVerificationError {
  constructor(message) {
    super(message, 'invalid_body');
    this.name = 'WebhookBodyError';
  }
}
