import type { ConnectionState, PresenceCount, Publication, ReadResult, SubscribeOptions, Switchyard } from './index.js';

/** Subscribes to `channel` while the component is mounted (shared with the other hooks of that channel). */
export function useSubscription(
  client: Switchyard | null | undefined,
  channel: string | null | undefined,
  onPublication: (publication: Publication) => void,
): void;

export function useConnectionState(client: Switchyard): ConnectionState;

/** A state channel's values: a new Map object after every snapshot and change. */
export function useChannelState<P = unknown>(
  client: Switchyard | null | undefined,
  channel: string | null | undefined,
  options?: SubscribeOptions,
): Map<string, P>;

/** A read_state channel's unread count, kept current, and `markRead` (default: the last delivered offset). */
export function useUnread(
  client: Switchyard | null | undefined,
  channel: string | null | undefined,
): { unread: number; markRead: (offset?: number) => Promise<ReadResult> };

/** `{count, users}` of a `presence = "counts"` channel (zeros until the first `presence_count`). */
export function usePresenceCount(client: Switchyard | null | undefined, channel: string | null | undefined): PresenceCount;
