// Reconnect and resubscribe delays: the one backoff function of the SDK. Exponential
// with full jitter (a uniform draw between the minimum and the exponential ceiling),
// so many clients dropped at once do not return at once, and never sooner than the
// minimum.

/**
 * A delay in [min, min(max, min · 2^(attempt+1))].
 * @param {number} attempt 0 for the first retry
 * @param {number} min ms, the smallest delay (a min above max counts as max)
 * @param {number} max ms, the largest delay
 * @param {() => number} [random] in [0, 1)
 */
export function backoff(attempt, min, max, random = Math.random) {
  const floor = Math.min(min, max);
  const ceiling = Math.min(max, floor * 2 ** (Math.min(attempt, 30) + 1));
  return Math.floor(floor + random() * (ceiling - floor));
}
