// Types of @switchyard/client (SPEC 14).

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
  payload: P;
  timestamp: string;
  offset?: number;
  from?: ClientInfo;
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
}

export class Subscription {
  readonly channel: string;
  /** Changes only inside the SDK, each change a `state` event. */
  readonly state: SubscriptionState;
  /** A string, or a function called at every subscribe. */
  token?: string | (() => Promise<string> | string);
  /** Offset of the last publication delivered. */
  offset: number | null;
  epoch: string | null;
  on<K extends keyof SubscriptionEvents>(event: K, listener: (value: SubscriptionEvents[K]) => void): () => void;
  /** Resolves once subscribed; rejects when the subscribe is refused or the subscription ended. */
  ready(): Promise<void>;
  /** Rejects with `reserved_type` for a reserved name (SPEC 2) without sending anything. */
  publish(type: string, payload?: unknown, options?: { volatile?: boolean; to?: string }): Promise<{ offset?: number }>;
  presence(): Promise<PresenceResult>;
  history(options?: { limit?: number; since?: number }): Promise<HistoryResult>;
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
  subscribe(channel: string, options?: { token?: string | (() => Promise<string> | string) }): Subscription;
}

export function backoff(attempt: number, min: number, max: number, random?: () => number): number;
