// Reconnect delays: exponential backoff with full jitter (a uniform draw between 0 and
// the exponential ceiling), so many clients dropped at once do not return at once.

/**
 * @param {number} attempt 0 for the first retry
 * @param {number} min ms
 * @param {number} max ms
 * @param {() => number} [random] in [0, 1)
 */
export function backoff(attempt, min, max, random = Math.random) {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
