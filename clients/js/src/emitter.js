// A tiny typed-by-convention event emitter: `on` returns the function that removes
// the listener, and a throwing listener never breaks the others. Listeners get every
// argument `emit` was given (`values` passes the map and the changed keys).

export class Emitter {
  #listeners = new Map();

  on(event, listener) {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => set.delete(listener);
  }

  emit(event, ...args) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (err) {
        // A bug in one listener must not stop delivery to the others.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
