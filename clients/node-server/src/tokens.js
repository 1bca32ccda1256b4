// Connection and subscription tokens (SPEC 3): JWTs signed with the nodes'
// `auth.jwt_secret` (HS256 by default), with `iat` (revocation compares it, SPEC 6
// /api/revoke) and `exp` = now + ttl.
import { SignJWT } from 'jose';
import { toSeconds } from './retry.js';

const ALGORITHMS = new Set(['HS256', 'HS384', 'HS512']);

/**
 * Signs `claims` (`sub`, `tenant_id`, `roles`, `info`, `channels`, `allow`, and
 * `iss`/`aud` when the nodes check them) for `ttl` seconds (or a duration string).
 */
export async function mintToken(secret, claims, ttl, algorithm = 'HS256') {
  if (typeof secret !== 'string' || secret === '') throw new TypeError('mintToken: `jwtSecret` is required to mint tokens');
  if (!ALGORITHMS.has(algorithm)) throw new TypeError('mintToken: the algorithm is HS256, HS384 or HS512');
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) throw new TypeError('mintToken: claims must be an object');
  const body = { ...claims };
  // A numeric user id (seed 002) is a string to the gateway, as JWT's `sub` must be.
  if (typeof body.sub === 'number') body.sub = String(body.sub);
  if (typeof body.user_id === 'number') body.user_id = String(body.user_id);
  if (typeof body.sub !== 'string' && typeof body.user_id !== 'string') {
    throw new TypeError('mintToken: claims need `sub` (the user id)');
  }
  const seconds = toSeconds(ttl, 'ttl');
  if (seconds <= 0) throw new TypeError('mintToken: ttl must be positive');
  const now = Math.floor(Date.now() / 1000);
  delete body.exp;
  return new SignJWT(body)
    .setProtectedHeader({ alg: algorithm, typ: 'JWT' })
    .setIssuedAt(typeof claims.iat === 'number' ? claims.iat : now)
    .setExpirationTime(now + seconds)
    .sign(new TextEncoder().encode(secret));
}

/** A subscription token: `{sub, channel, exp}` grants user `sub` the one `channel`. */
export async function mintSubscriptionToken(secret, sub, channel, ttl, algorithm = 'HS256') {
  if (typeof channel !== 'string' || channel === '') throw new TypeError('mintSubscriptionToken: channel must be a non-empty string');
  if (sub === undefined || sub === null || sub === '') throw new TypeError('mintSubscriptionToken: sub (the user id) is required');
  return mintToken(secret, { sub: String(sub), channel }, ttl, algorithm);
}
