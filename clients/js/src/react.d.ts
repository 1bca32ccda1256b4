import type { ConnectionState, Publication, Switchyard } from './index.js';

export function useSubscription(
  client: Switchyard | null | undefined,
  channel: string | null | undefined,
  onPublication: (publication: Publication) => void,
): void;

export function useConnectionState(client: Switchyard): ConnectionState;
