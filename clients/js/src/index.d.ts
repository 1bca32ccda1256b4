// Types of @switchyard/client (SPEC 14).

export type ConnectionState = 'disconnected' | 'connecting' | 'connected';

export interface SwitchyardOptions {
  /** A connection JWT, sent as the `token` query parameter. */
  token?: string;
  /** Called before every connect and after close 4011 (token expired). */
  getToken?: () => Promise<string> | string;
  /** WebSocket constructor (Node 20: `require("ws")`); defaults to the global one. */
  websocket?: unknown;
  /** ms; exponential backoff with full jitter between reconnects. Default 500. */
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

/** Rejection of a request: the server's error code, or `timeout` / `disconnected`. */
export class SwitchyardError extends Error {
  code: string;
  constructor(code: string, message?: string);
}

export interface ClientEvents {
  state: { state: ConnectionState; previous: ConnectionState };
  connected: AuthSuccess;
  disconnected: Disconnected;
  publication: Publication;
  error: SwitchyardError;
}

export interface SubscriptionEvents {
  publication: Publication;
  subscribed: SubscribedEvent;
  join: ClientInfo;
  leave: ClientInfo;
  error: SwitchyardError;
  unsubscribed: { channel: string };
}

export class Subscription {
  readonly channel: string;
  state: 'unsubscribed' | 'subscribing' | 'subscribed';
  /** Offset of the last publication delivered. */
  offset: number | null;
  epoch: string | null;
  on<K extends keyof SubscriptionEvents>(event: K, listener: (value: SubscriptionEvents[K]) => void): () => void;
  ready(): Promise<void>;
  publish(type: string, payload?: unknown, options?: { volatile?: boolean; to?: string }): Promise<{ offset?: number }>;
  presence(): Promise<PresenceResult>;
  history(options?: { limit?: number; since?: number }): Promise<HistoryResult>;
  unsubscribe(): void;
}

export class Switchyard {
  constructor(url: string, options?: SwitchyardOptions);
  readonly url: string;
  state: ConnectionState;
  /** The last `auth_success` payload. */
  session: AuthSuccess | null;
  on<K extends keyof ClientEvents>(event: K, listener: (value: ClientEvents[K]) => void): () => void;
  connect(): void;
  disconnect(): void;
  subscribe(channel: string, options?: { token?: string | (() => Promise<string> | string) }): Subscription;
}

export function backoff(attempt: number, min: number, max: number, random?: () => number): number;
