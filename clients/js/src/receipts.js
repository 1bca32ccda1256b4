// Delivery receipts of one channel (SPEC 15.2): the offsets of publications whose
// `publication` handlers returned, sent as `received {channel, offsets}` batches, at
// most one batch per `interval` (250 ms). A batch that cannot be sent (no
// connection, not subscribed) waits in the queue until `resume()`; nothing that
// reached the application is forgotten, nothing is confirmed twice.

/** Offsets per `received` frame, well under the node's message size limit. */
const MAX_BATCH = 1000;

export class Receipts {
  #pending = new Set();
  #timer = null;
  /** When the last batch went out (ms, performance.now(): monotonic). */
  #last = -Infinity;
  #send;
  #interval;

  /**
   * @param {(offsets: number[]) => boolean} send sends one batch; false when it cannot now
   * @param {number} interval ms between two batches, at least
   */
  constructor(send, interval = 250) {
    this.#send = send;
    this.#interval = interval;
  }

  /** Queues the offset of a publication the application got. */
  add(offset) {
    this.#pending.add(offset);
    this.#schedule();
  }

  /** The connection or the subscription is back: send what waits, within the interval. */
  resume() {
    this.#schedule();
  }

  /** Sends everything queued now, ignoring the interval (the subscription is ending). */
  flushNow() {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#flush();
  }

  /** Forgets everything (the subscription ended). */
  stop() {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#pending.clear();
  }

  #schedule() {
    if (this.#timer !== null || this.#pending.size === 0) return;
    const delay = Math.max(0, this.#last + this.#interval - performance.now());
    this.#timer = setTimeout(() => {
      this.#timer = null;
      // A timer may fire a millisecond early: never two batches closer than the interval.
      if (performance.now() - this.#last < this.#interval) this.#schedule();
      else this.#flush();
    }, delay);
  }

  #flush() {
    if (this.#pending.size === 0) return;
    const offsets = [...this.#pending].sort((a, b) => a - b);
    for (let i = 0; i < offsets.length; i += MAX_BATCH) {
      const batch = offsets.slice(i, i + MAX_BATCH);
      if (!this.#send(batch)) return; // kept: resume() tries again
      for (const o of batch) this.#pending.delete(o);
      this.#last = performance.now();
    }
  }
}
