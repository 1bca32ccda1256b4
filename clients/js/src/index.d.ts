// Types of @switchyard/client (SPEC 14, and 19 for sections 15-16).

export type ConnectionState = 'disconnected' | 'connecting' | 'connected';
export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';

/** The payload of every `state` event: the new state and the one it replaced. */
export interface StateChange<S extends string> {
  state: S;
  previous: S;
}

export interface SwitchyardOptions {
  /** A connection JWT, sent in an `auth` frame once the socket is open (never in the URL). */
  token?: string;
  /**
   * Called before every connect and after close 4011 (token expired); its token is
   * sent like `token`. A throw or rejection is an `error` event (`connect_failed`),
   * then the client retries with backoff.
   */
  getToken?: () => Promise<string | null | undefined> | string | null | undefined;
  /** WebSocket constructor (Node 20: `require("ws")`); defaults to the global one. */
  websocket?: unknown;
  /** ms; the smallest delay between reconnects (exponential backoff, full jitter above it). Default 500. */
  minReconnectDelay?: number;
  /** ms; the backoff ceiling. Default 20000. */
  maxReconnectDelay?: number;
  /** ms for every request and for the keepalive's answer. Default 10000. */
  timeout?: number;
  /** ms without any frame before a keepalive ping. Default 25000. */
  pingInterval?: number;
  /** ms a connection must stay up to reset the backoff. Default 5000. */
  stableAfter?: number;
}

export interface AuthSuccess {
  user_id: string | null;
  session_id: string | null;
  conn_id: string;
  node: string;
  channels: string[];
  anonymous?: boolean;
  resume?: string;
}

export interface ClientInfo {
  user_id?: string;
  session_id?: string;
  info?: unknown;
}

export interface Publication<P = unknown> {
  type: string;
  channel: string;
  /** Always the full value: a delta is delivered with the patch already applied. */
  payload: P;
  timestamp: string;
  offset?: number;
  from?: ClientInfo;
  /** State channels: the key this publication sets (or deletes). */
  key?: string;
  /** State channels: the key was removed (no payload). */
  deleted?: boolean;
  /** Conflated namespaces: this publication replaced older ones of its (channel, key). */
  conflated?: boolean;
}

export interface SubscribeOptions {
  /** A subscription JWT, or a function called at every subscribe. */
  token?: string | (() => Promise<string> | string);
  /**
   * State channels: the keys wanted. Sent in the subscribe (narrows the snapshot);
   * live changes of other keys are still `publication` events but stay out of `values`.
   */
  keys?: string[];
  /**
   * Send `received` receipts for the publications the application got. Default: on
   * when the `subscribed` reply carries `read_offset` (a read_state namespace), else
   * off; `true` turns it on for any channel, `false` off for any channel.
   */
  receipts?: boolean;
  /**
   * A conflated namespace without keys: offsets may skip and arrive out of order, so
   * only an exact repeat of the last delivered offset is dropped as a duplicate.
   */
  conflated?: boolean;
}

/** One key of a state channel, as in `snapshot` and `state` (a tombstone when `deleted`). */
export interface StateEntry<P = unknown> {
  key: string;
  type?: string;
  payload?: P;
  deleted?: boolean;
  offset: number;
  timestamp: string;
}

/** A `snapshot` frame's payload (SPEC 16.2). */
export interface SnapshotEvent<P = unknown> {
  channel: string;
  offset: number;
  epoch: string;
  /** true: the whole state (replaces the values); false: the keys changed since `since`. */
  full: boolean;
  entries: StateEntry<P>[];
  recovered?: boolean;
}

/** The answer to `client.fetchState` (the `state` request, SPEC 16.2). */
export interface StateResult<P = unknown> {
  channel: string;
  offset: number;
  epoch: string;
  entries: StateEntry<P>[];
}

/** A read position and the unread count after it (SPEC 15.1). */
export interface ReadEvent {
  read_offset: number;
  unread: number;
}

/** The `read` reply to `markRead`. */
export interface ReadResult extends ReadEvent {
  channel: string;
}

export interface UnreadResult {
  channels: Array<{ channel: string; offset: number; read_offset: number; unread: number }>;
}

/** A `presence = "counts"` channel's audience (SPEC 16.5). */
export interface PresenceCount {
  /** Connections. */
  count: number;
  /** Distinct users and sessions (may be approximate). */
  users: number;
}

export interface Disconnected {
  code: number;
  reason: string;
  reconnect: boolean;
}

export interface SubscribedEvent {
  recovered?: boolean;
  offset?: number;
  epoch?: string;
  /** read_state channels. */
  read_offset?: number;
  /** read_state channels. */
  unread?: number;
}

export interface PresenceResult {
  channel: string;
  count: number;
  users: number;
  clients: Array<{ conn_id: string; user_id: string | null; session_id: string | null; info: unknown }>;
}

export interface HistoryResult {
  channel: string;
  publications: Publication[];
  offset: number;
  epoch: string;
}

/**
 * An error: the server's code (`forbidden`, `unauthorized`, ...) or the client's own
 * (`timeout`, `disconnected`, `connect_failed`, `subscribe_failed`, `reserved_type`,
 * `unsubscribed`). `cause` holds the underlying error when there is one.
 */
export class SwitchyardError extends Error {
  code: string;
  cause?: unknown;
  constructor(code: string, message?: string, options?: { cause?: unknown });
}

export interface ClientEvents {
  state: StateChange<ConnectionState>;
  connected: AuthSuccess;
  disconnected: Disconnected;
  publication: Publication;
  error: SwitchyardError;
}

export interface SubscriptionEvents {
  state: StateChange<SubscriptionState>;
  publication: Publication;
  subscribed: SubscribedEvent;
  join: ClientInfo;
  leave: ClientInfo;
  error: SwitchyardError;
  unsubscribed: { channel: string };
  /** State channels: after `subscribed`, and again after every resubscribe. */
  snapshot: SnapshotEvent;
  /** The reply to `markRead`, or another device of the user read (forward moves only). */
  read: ReadEvent;
  /** `sub.unread` changed (beyond SPEC 19). */
  unread: number;
  presence_count: PresenceCount;
}

export class Subscription {
  readonly channel: string;
  /** Changes only inside the SDK, each change a `state` event. */
  readonly state: SubscriptionState;
  /** A string, or a function called at every subscribe. */
  token?: string | (() => Promise<string> | string);
  /** Offset of the last publication delivered (or of the last snapshot). */
  offset: number | null;
  epoch: string | null;
  /** The options it was created with (`token` apart). */
  readonly options: { keys?: string[]; receipts?: boolean; conflated: boolean };
  /**
   * State channels: key → current (full) payload, kept from snapshots, changes,
   * deletes and deltas. The same Map object throughout, changed in place.
   */
  readonly values: Map<string, unknown>;
  /** Read position (read_state channels); null until the node told one. */
  readOffset: number | null;
  /** Publications above the read position (read_state channels); 0 elsewhere. */
  unread: number;
  /** The last `presence_count` (presence = "counts" channels); null before one. */
  presenceCount: PresenceCount | null;
  /** Whether this subscription sends `received` receipts (see `SubscribeOptions.receipts`). */
  readonly receipts: boolean;
  /** After every snapshot and every change: the values and the keys that changed. */
  on(event: 'values', listener: (values: Map<string, unknown>, changedKeys: string[]) => void): () => void;
  on<K extends keyof SubscriptionEvents>(event: K, listener: (value: SubscriptionEvents[K]) => void): () => void;
  /** Resolves once subscribed; rejects when the subscribe is refused or the subscription ended. */
  ready(): Promise<void>;
  /** Rejects with `reserved_type` for a reserved name (SPEC 2) without sending anything. */
  publish(type: string, payload?: unknown, options?: { volatile?: boolean; to?: string }): Promise<{ offset?: number }>;
  presence(): Promise<PresenceResult>;
  history(options?: { limit?: number; since?: number }): Promise<HistoryResult>;
  /**
   * Moves the read position forward to `offset` (default: the last delivered
   * publication); resolves with the `read` reply, also applied and emitted as `read`.
   */
  markRead(offset?: number): Promise<ReadResult>;
  /** Sends the receipts still queued, then unsubscribes. */
  unsubscribe(): void;
}

export class Switchyard {
  constructor(url: string, options?: SwitchyardOptions);
  readonly url: string;
  /** Changes only inside the SDK, each change a `state` event. */
  readonly state: ConnectionState;
  /** The last `auth_success` payload. */
  session: AuthSuccess | null;
  on<K extends keyof ClientEvents>(event: K, listener: (value: ClientEvents[K]) => void): () => void;
  connect(): void;
  disconnect(): void;
  /** The same object for the same channel; for an existing one only a new `token` is taken. */
  subscribe(channel: string, options?: SubscribeOptions): Subscription;
  /** The live subscription of `channel`, or null. */
  getSubscription(channel: string): Subscription | null;
  /** Unread counts of `channels`, or of every channel where the user has a read position. */
  unread(channels?: string[]): Promise<UnreadResult>;
  /** A state channel's entries without subscribing (the `state` request). */
  fetchState(channel: string, keys?: string[]): Promise<StateResult>;
}

export function backoff(attempt: number, min: number, max: number, random?: () => number): number;
