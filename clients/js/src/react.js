// React bindings: subscribe for the lifetime of a component, follow the connection
// state. React is an optional peer dependency.
import { useEffect, useRef, useSyncExternalStore } from 'react';

/** Subscribes to `channel` while the component is mounted; calls `onPublication`. */
export function useSubscription(client, channel, onPublication) {
  const handler = useRef(onPublication);
  handler.current = onPublication;
  useEffect(() => {
    if (!client || !channel) return undefined;
    const sub = client.subscribe(channel);
    const off = sub.on('publication', (p) => handler.current?.(p));
    return () => {
      off();
      sub.unsubscribe();
    };
  }, [client, channel]);
}

/** The client's connection state, re-rendering on every change. */
export function useConnectionState(client) {
  return useSyncExternalStore(
    (notify) => client.on('state', notify),
    () => client.state,
    () => client.state,
  );
}
