// Webhook verification (SPEC 17), after Stripe's `constructEvent`: the signature is an
// HMAC-SHA256 over "<timestamp>.<raw body>", compared in constant time; a timestamp
// outside the tolerance is a replay; each failure is its own error class.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { WebhookBodyError, WebhookHeaderError, WebhookSignatureError, WebhookTimestampError } from './errors.js';

export const TIMESTAMP_HEADER = 'X-Switchyard-Timestamp';
export const SIGNATURE_HEADER = 'X-Switchyard-Signature';

/** A header from a fetch `Headers`, a Node `IncomingHttpHeaders` or any object, by any case. */
function header(headers, name) {
  if (headers === null || typeof headers !== 'object') throw new TypeError('verifyWebhook: headers must be an object or a Headers');
  let v;
  if (typeof headers.get === 'function') {
    v = headers.get(name) ?? headers.get(name.toLowerCase());
  } else {
    const lower = name.toLowerCase();
    for (const k of Object.keys(headers)) {
      if (k.toLowerCase() === lower) {
        v = headers[k];
        break;
      }
    }
  }
  if (Array.isArray(v)) v = v[0];
  return v === undefined || v === null ? undefined : String(v).trim();
}

/** The raw body as bytes; a parsed object cannot be verified. */
function rawBytes(body) {
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  throw new WebhookBodyError(
    'verifyWebhook needs the raw request body (a string or Buffer), not a parsed object: ' +
      'e.g. express.raw({ type: "application/json" }) on the webhook route',
  );
}

function sign(secret, timestamp, bytes) {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(bytes).digest();
}

/**
 * Checks a webhook request and returns its events (`JSON.parse(body).events`).
 * `secret` may be an array (any of them, while rotating secrets); `tolerance` in
 * seconds (`Infinity`: no check). Throws `WebhookHeaderError`,
 * `WebhookSignatureError`, `WebhookTimestampError` or `WebhookBodyError`.
 */
export function verifyWebhook(body, headers, secret, tolerance = 300, now = Date.now() / 1000) {
  const secrets = Array.isArray(secret) ? secret : [secret];
  if (secrets.length === 0 || secrets.some((s) => typeof s !== 'string' || s === '')) {
    throw new TypeError('verifyWebhook: secret must be a non-empty string (or an array of them)');
  }
  if (typeof tolerance !== 'number' || Number.isNaN(tolerance) || tolerance <= 0) {
    throw new TypeError('verifyWebhook: tolerance must be a positive number of seconds');
  }
  const bytes = rawBytes(body);
  const ts = header(headers, TIMESTAMP_HEADER);
  const sig = header(headers, SIGNATURE_HEADER);
  if (!ts) throw new WebhookHeaderError(`missing ${TIMESTAMP_HEADER} header`, 'missing_header');
  if (!sig) throw new WebhookHeaderError(`missing ${SIGNATURE_HEADER} header`, 'missing_header');
  if (!/^\d{1,15}$/.test(ts)) throw new WebhookHeaderError(`${TIMESTAMP_HEADER} is not unix seconds`);
  const given = [];
  for (const part of sig.split(',')) {
    const m = /^sha256=([0-9a-fA-F]{64})$/.exec(part.trim());
    if (m) given.push(Buffer.from(m[1], 'hex'));
  }
  if (given.length === 0) throw new WebhookHeaderError(`${SIGNATURE_HEADER} is not "sha256=<64 hex digits>"`);
  // Every pair is compared, in constant time: the answer's timing says nothing.
  let match = false;
  for (const s of secrets) {
    const expected = sign(s, ts, bytes);
    for (const g of given) match = timingSafeEqual(expected, g) || match;
  }
  if (!match) throw new WebhookSignatureError('no signature matches the body with the secret');
  const age = Math.abs(now - Number(ts));
  if (age > tolerance) {
    throw new WebhookTimestampError(`the timestamp is ${Math.round(age)} s away from now (tolerance ${tolerance} s)`);
  }
  let parsed;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new WebhookBodyError('the body is not JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || !Array.isArray(parsed.events)) {
    throw new WebhookBodyError('the body is not {"events": [...]}');
  }
  return parsed.events;
}

/**
 * The headers switchyard would send with `body` (for testing a webhook endpoint):
 * `{"X-Switchyard-Timestamp", "X-Switchyard-Signature"}`.
 */
export function signWebhook(body, secret, timestamp = Math.floor(Date.now() / 1000)) {
  const ts = String(Math.floor(timestamp));
  return {
    [TIMESTAMP_HEADER]: ts,
    [SIGNATURE_HEADER]: `sha256=${sign(secret, ts, rawBytes(body)).toString('hex')}`,
  };
}
