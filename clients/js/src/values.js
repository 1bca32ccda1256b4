// The values of a state channel (SPEC 16): key → current payload, kept from
// snapshots and keyed publications (sets, deletes, merge-patch deltas), with the
// offset of each key's newest version. Plain data and functions: no socket, no
// timer, so every rule can be tested by calling it. The Subscription owns one and
// decides what to do when a delta's base is missing (re-subscribe with `since`).

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * RFC 7396 JSON merge patch: `patch` applied to `target`, as a new value (neither
 * argument is modified; untouched members are shared). An object patch merges
 * member by member, `null` removes a member, anything else (arrays included)
 * replaces the target wholesale.
 */
export function mergePatch(target, patch) {
  if (!isObject(patch)) return patch;
  const result = isObject(target) ? { ...target } : {};
  for (const [name, value] of Object.entries(patch)) {
    if (value === null) {
      delete result[name];
    } else {
      // defineProperty: a member named "__proto__" is data, never the prototype.
      Object.defineProperty(result, name, {
        value: mergePatch(result[name], value),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
  }
  return result;
}

export class ChannelValues {
  /**
   * key → current payload, for the keys the application asked for (all without
   * `keys`). Always the same Map object, changed in place.
   */
  map = new Map();
  /** Payloads of keys outside `keys`: kept only so their deltas can be applied. */
  #others = new Map();
  /** key → offset of its newest version seen (deleted keys too). */
  #offsets = new Map();
  /** The epoch the offsets belong to (from the last snapshot). */
  #epoch = null;
  /**
   * The offset of the last snapshot: after it the node sends only changes above it,
   * so a keyed publication at or below it is old news even for a key it did not hold.
   */
  #snapshotOffset = null;
  /** Counts changes of `map`: lets a view tell whether it holds the current values. */
  version = 0;

  /** @param {string[] | undefined} keys the keys the application asked for */
  constructor(keys) {
    this.keys = Array.isArray(keys) ? new Set(keys) : null;
  }

  /** Whether `key` is one the application asked for. */
  wants(key) {
    return this.keys === null || this.keys.has(key);
  }

  /** Offset of the newest version of `key` seen, or undefined. */
  offsetOf(key) {
    return this.#offsets.get(key);
  }

  /**
   * Whether a publication of `key` at `offset` is old news: not above the key's own
   * newest version, or not above the last snapshot. Only per key: on a conflated
   * channel different keys' publications arrive out of offset order on purpose.
   */
  isStale(key, offset) {
    const last = this.#offsets.get(key);
    if (last !== undefined && offset <= last) return true;
    return this.#snapshotOffset !== null && offset <= this.#snapshotOffset;
  }

  #has(key) {
    return this.wants(key) ? this.map.has(key) : this.#others.has(key);
  }

  #get(key) {
    return this.wants(key) ? this.map.get(key) : this.#others.get(key);
  }

  /** Sets or removes one key; returns whether the visible map changed. */
  #put(key, deleted, payload) {
    const target = this.wants(key) ? this.map : this.#others;
    if (deleted) {
      if (!target.delete(key)) return false;
    } else {
      target.set(key, payload);
    }
    return target === this.map;
  }

  /**
   * A `snapshot` frame. `full: true` replaces everything (keys absent from it are
   * gone); `full: false` merges its entries, tombstones removing keys, and never
   * moves a key back to an older version than one already seen. Returns the keys of
   * `map` that changed (added, removed, or at another version).
   */
  snapshot({ full, entries, epoch, offset }) {
    const changed = new Set();
    if (full === true) {
      this.#snapshotOffset = null;
      const sameEpoch = epoch !== undefined && epoch === this.#epoch;
      const before = new Map([...this.map.keys()].map((k) => [k, this.#offsets.get(k)]));
      this.map.clear();
      this.#others.clear();
      this.#offsets.clear();
      for (const e of entries) {
        this.#offsets.set(e.key, e.offset);
        if (!e.deleted) this.#put(e.key, false, e.payload);
      }
      for (const [k, offset] of before) {
        if (!this.map.has(k) || !sameEpoch || this.#offsets.get(k) !== offset) changed.add(k);
      }
      for (const k of this.map.keys()) if (!before.has(k)) changed.add(k);
    } else {
      for (const e of entries) {
        const last = this.#offsets.get(e.key);
        if (last !== undefined && e.offset <= last) continue;
        this.#offsets.set(e.key, e.offset);
        if (this.#put(e.key, e.deleted === true, e.payload)) changed.add(e.key);
      }
    }
    if (epoch !== undefined) this.#epoch = epoch;
    if (typeof offset === 'number') this.#snapshotOffset = Math.max(this.#snapshotOffset ?? offset, offset);
    if (changed.size > 0 || full === true) this.version += 1;
    return [...changed];
  }

  /**
   * A publication with a `key` (not stale: the caller checked `isStale`). Returns
   * `{missingBase: true}` for a delta whose base version is not the one held (nothing
   * is changed then), else `{payload, changed}`: the full payload now held for the
   * key (undefined once deleted) and whether `map` changed.
   */
  publication(envelope) {
    const { key, offset } = envelope;
    let payload = envelope.payload;
    const deleted = envelope.deleted === true;
    if (!deleted && envelope.delta === true) {
      if (this.#offsets.get(key) !== envelope.base || !this.#has(key)) return { missingBase: true };
      payload = mergePatch(this.#get(key), envelope.payload);
    }
    if (typeof offset === 'number') this.#offsets.set(key, offset);
    const changed = this.#put(key, deleted, payload);
    if (changed) this.version += 1;
    return { payload: deleted ? undefined : payload, changed };
  }
}
