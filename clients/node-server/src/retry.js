// What every network call of the SDK shares: the delay between attempts (exponential
// backoff with full jitter, as the JavaScript client reconnects), idempotency keys,
// and durations given as seconds or as the server's duration strings.
import { randomUUID } from 'node:crypto';

/**
 * The delay in ms before retry number `attempt` (0 = the first retry): uniformly
 * random between `min` and `min(max, min * 2^(attempt + 1))`.
 */
export function backoff(attempt, min, max, random = Math.random) {
  const lo = Math.min(min, max);
  const ceiling = Math.min(max, min * 2 ** (attempt + 1));
  return Math.floor(lo + random() * Math.max(0, ceiling - lo));
}

/** Waits `ms`; between retries only, never to wait for a condition. */
export function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A fresh idempotency key (a random UUID, 36 characters; the API takes up to 128). */
export function newIdempotencyKey() {
  return randomUUID();
}

const UNITS = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

/**
 * A duration in whole seconds from a number of seconds or a string like the
 * server's config takes (`"500ms"`, `"30s"`, `"5m"`, `"24h"`, `"7d"`). Rounds up, so
 * a positive duration never becomes 0 (which would mean "off" to the server).
 */
export function toSeconds(value, name) {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new TypeError(`${name} must be a non-negative number of seconds`);
    return Math.ceil(value);
  }
  if (typeof value === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(value);
    if (m) return Math.ceil(Number(m[1]) * UNITS[m[2]]);
  }
  throw new TypeError(`${name} must be seconds (a number) or a duration like "30s", "5m", "24h", "7d"`);
}
