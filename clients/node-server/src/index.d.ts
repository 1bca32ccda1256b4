// Types of @switchyard/server (SPEC 18). Field names of what the server sends
// (publications, presence clients, stream entries, webhook events) are the wire's.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Seconds, or a duration string like the server's config takes: "500ms", "30s", "5m", "24h", "7d". */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h' | 'd'}`;

export interface SwitchyardServerOptions {
  /** A node's base URL, e.g. "http://switchyard-internal:8080" (needed for HTTP API calls). */
  url?: string;
  /** The nodes' `api.key`, sent as `X-API-Key` (needed for HTTP API calls). */
  apiKey?: string;
  /** The nodes' `auth.jwt_secret` (needed to mint tokens). */
  jwtSecret?: string;
  /** The nodes' Redis URL (needed for `via: "redis"` and `consume`). */
  redis?: string;
  /** The nodes' `redis.prefix`. Default "switchyard". */
  prefix?: string;
  /** Milliseconds per attempt of every network call. Default 5000. */
  timeout?: number;
  /** Attempts after the first on 503 / 502 / 504 / 408, timeouts and failed connections. Default 3. */
  retries?: number;
  /** Backoff bounds between attempts in ms (full jitter). Defaults 100 and 2000. */
  retryDelay?: number;
  maxRetryDelay?: number;
  /** Window of idempotency keys on `via: "redis"` publishes: the nodes' `api.idempotency_window`. Default 300 s. */
  idempotencyWindow?: Duration;
  /** HS256 (default), HS384 or HS512. */
  jwtAlgorithm?: 'HS256' | 'HS384' | 'HS512';
  /** The fetch function for the HTTP API. Default: the global fetch. */
  fetch?: (input: string, init?: any) => Promise<any>;
}

export interface Fallback {
  /** How long a receipt may take before `undelivered` is emitted: 1 s to 7 d. */
  after: Duration;
  /** Handed back in the `undelivered` event. */
  data?: unknown;
}

export interface PublishOptions {
  /** "http" (default): POST /api/publish. "redis": FCALL switchyard_publish / switchyard_set. */
  via?: 'http' | 'redis';
  /** State channels: the key this publication sets (FCALL switchyard_set via Redis). */
  key?: string;
  /** State channels: remove `key` (no payload). */
  delete?: boolean;
  /** Repeats within the window publish nothing again and answer `duplicate: true`. Default: a new random key per call, reused by its retries. */
  idempotencyKey?: string;
  /** `via: "http"` only: an `undelivered` event when no device confirms in time. */
  fallback?: Fallback;
  /** `via: "redis"`: the namespace's `history_size`. Default 0 (not kept, no offset). */
  historySize?: number;
  /** `via: "redis"`: the namespace's `history_ttl`. Default 0. */
  historyTtl?: Duration;
  /** `via: "redis"` with `key`: the namespace's `state_max_keys`. Default 10000. */
  stateMaxKeys?: number;
  /** `via: "redis"` with `key`: the namespace's `state_ttl`. Default 0 (forever). */
  stateTtl?: Duration;
  /** `via: "http"` only: neither stored nor forwarded. */
  volatile?: boolean;
  /** `via: "http"` only: deliver only to the subscribers with this user or session id. */
  to?: string;
}

export interface PublishResult {
  /** The publication's offset, on channels that number publications. */
  offset?: number;
  epoch?: string;
  /** The idempotency key was seen within its window: nothing was published again. */
  duplicate?: true;
}

export interface BroadcastOptions {
  key?: string;
  delete?: boolean;
  idempotencyKey?: string;
  volatile?: boolean;
}

export interface ApiErrorBody {
  code: string;
  message: string;
}

export interface BroadcastResult {
  results: Array<PublishResult & { channel: string; error?: ApiErrorBody }>;
}

export type DisconnectTarget = (
  | { userId: string | number; sessionId?: never; connId?: never }
  | { sessionId: string; userId?: never; connId?: never }
  | { connId: string; userId?: never; sessionId?: never }
) & {
  /** 4000-4999; default 4003. */
  code?: number;
  reason?: string;
};

export interface PresenceClient {
  conn_id: string;
  user_id?: string | null;
  session_id?: string | null;
  info?: Json;
}

export interface Presence {
  count: number;
  users: number;
  clients: PresenceClient[];
}

export interface Publication {
  type: string;
  channel: string;
  payload?: Json;
  offset?: number;
  timestamp: string;
  from?: { user_id?: string; session_id?: string; info?: Json };
  key?: string;
  deleted?: boolean;
  [field: string]: unknown;
}

export interface History {
  publications: Publication[];
  offset: number;
  epoch: string;
}

export interface StateEntry {
  key: string;
  type?: string;
  payload?: Json;
  offset: number;
  timestamp: string;
  deleted?: boolean;
}

export interface State {
  channel: string;
  offset: number;
  epoch: string;
  entries: StateEntry[];
}

export interface Unread {
  channels: Array<{ channel: string; offset: number; read_offset: number; unread: number }>;
}

export interface Channels {
  channels: Array<{ channel: string; subscribers: number }>;
}

export interface Stats {
  node: { node_id: string; connections: number; subscriptions: number; channels: number; uptime_s: number; [k: string]: unknown };
  cluster: { nodes: Array<Record<string, unknown>>; connections: number; users: number; channels: number };
}

/** Claims of a connection token (SPEC 3); `sub` is the user id. */
export interface TokenClaims {
  sub: string | number;
  tenant_id?: string;
  roles?: string[];
  info?: Json;
  channels?: string[];
  allow?: string[];
  iss?: string;
  aud?: string | string[];
  nbf?: number;
  iat?: number;
  [claim: string]: unknown;
}

/** A client publication from `<prefix>:upstream` (SPEC 8.3). Empty ids are absent. */
export interface UpstreamEntry {
  /** The stream entry id. */
  id: string;
  channel: string;
  type: string;
  payload: Json;
  user_id?: string;
  session_id?: string;
  conn_id?: string;
  node: string;
  /** RFC 3339 UTC. */
  ts: string;
}

export type EventName =
  | 'occupied'
  | 'vacated'
  | 'user_online'
  | 'user_offline'
  | 'connect'
  | 'disconnect'
  | 'subscribe'
  | 'unsubscribe'
  | 'received'
  | 'read'
  | 'undelivered';

/** A lifecycle event (SPEC 17), as webhooks deliver it. */
export interface SwitchyardEvent {
  event: EventName | (string & {});
  channel?: string;
  user_id?: string;
  session_id?: string;
  conn_id?: string;
  node: string;
  ts: string;
  data: Json;
}

/** A lifecycle event from `<prefix>:events`: the webhook shape plus the entry id. */
export interface EventEntry extends SwitchyardEvent {
  id: string;
}

export interface ConsumeOptions {
  /** This consumer's name in the group. Default "<hostname>-<pid>-<random>". */
  consumer?: string;
  /** Entries per read. Default 10. */
  count?: number;
  /** Longest wait of one XREADGROUP, ms. Default 5000. */
  block?: number;
  /** Entries pending longer than this (ms) are claimed and handled again: a failed handler, a dead consumer. Default 30000. */
  claimIdle?: number;
  /** How often pending entries are looked for, ms. Default claimIdle / 2, at most 10000. */
  claimInterval?: number;
  /** Where a new group starts: "$" (default, new entries only) or "0" (the whole stream). */
  startId?: string;
  /** Called with every failure: a handler that threw (with its entry), Redis errors. Default: console.error. */
  onError?: (error: Error, entry?: { id: string; [field: string]: unknown }) => void;
}

export declare class Consumer {
  /** This consumer's name in the group. */
  readonly name: string;
  /** Resolves once the group exists and reading began; rejects if stopped before. */
  readonly ready: Promise<void>;
  /** Resolves when the consumer has stopped. */
  readonly done: Promise<void>;
  /** Stops reading; resolves once the entries already read are handled and acknowledged. */
  stop(): Promise<void>;
  /** The same as stop(). */
  close(): Promise<void>;
}

/** Headers as Node (`req.headers`), fetch (`Headers`) or any plain object give them. */
export type WebhookHeaders =
  | { get(name: string): string | null }
  | Record<string, string | string[] | undefined>;

export declare class SwitchyardServer {
  constructor(options: SwitchyardServerOptions);
  publish(channel: string, type: string, payload?: unknown, options?: PublishOptions): Promise<PublishResult>;
  broadcast(channels: string[], type: string, payload?: unknown, options?: BroadcastOptions): Promise<BroadcastResult>;
  disconnect(target: DisconnectTarget): Promise<void>;
  /** Refuses the user's tokens issued before `before` (unix seconds or a Date; default now) and closes their connections. */
  revoke(userId: string | number, before?: number | Date): Promise<void>;
  subscribe(userId: string | number, channel: string): Promise<void>;
  unsubscribe(userId: string | number, channel: string): Promise<void>;
  presence(channel: string): Promise<Presence>;
  history(channel: string, options?: { limit?: number; since?: number }): Promise<History>;
  state(channel: string, keys?: string[]): Promise<State>;
  unread(userId: string | number, channels?: string[]): Promise<Unread>;
  channels(prefix?: string): Promise<Channels>;
  stats(): Promise<Stats>;
  /** A connection token, valid `ttl` seconds. */
  mintToken(claims: TokenClaims, ttl: Duration): Promise<string>;
  /** A subscription token granting user `sub` the one `channel`, valid `ttl` seconds. */
  mintSubscriptionToken(sub: string | number, channel: string, ttl: Duration): Promise<string>;
  consume(stream: 'upstream', group: string, handler: (entry: UpstreamEntry) => unknown, options?: ConsumeOptions): Consumer;
  consume(stream: 'events', group: string, handler: (entry: EventEntry) => unknown, options?: ConsumeOptions): Consumer;
  verifyWebhook(body: string | Uint8Array, headers: WebhookHeaders, secret: string | string[], tolerance?: number): SwitchyardEvent[];
  /** Stops the consumers started here and closes the Redis connection. */
  close(): Promise<void>;
}

/**
 * Checks a webhook request (the raw body, its headers) and returns its events.
 * Throws WebhookHeaderError, WebhookSignatureError, WebhookTimestampError or WebhookBodyError.
 */
export declare function verifyWebhook(
  body: string | Uint8Array,
  headers: WebhookHeaders,
  secret: string | string[],
  tolerance?: number,
): SwitchyardEvent[];

/** The headers a node would send with `body`, for testing a webhook endpoint. */
export declare function signWebhook(
  body: string | Uint8Array,
  secret: string,
  timestamp?: number,
): { 'X-Switchyard-Timestamp': string; 'X-Switchyard-Signature': string };

export declare const TIMESTAMP_HEADER: 'X-Switchyard-Timestamp';
export declare const SIGNATURE_HEADER: 'X-Switchyard-Signature';

/** Decodes one raw stream entry (field/value list) as `consume` hands it over. */
export declare function decodeEntry(stream: 'upstream', id: string, fields: string[]): UpstreamEntry;
export declare function decodeEntry(stream: 'events', id: string, fields: string[]): EventEntry;

export type SwitchyardErrorCode =
  | 'bad_request'
  | 'invalid_channel'
  | 'reserved_type'
  | 'limit_exceeded'
  | 'unauthorized'
  | 'not_found'
  | 'too_large'
  | 'unavailable'
  | 'internal'
  | 'timeout'
  | 'network'
  | 'unexpected_response'
  | 'function_missing'
  | 'redis_error'
  | 'invalid_entry'
  | 'stopped'
  | (string & {});

/** A failed call: the server's error code and HTTP status, or one of the SDK's codes. */
export declare class SwitchyardError extends Error {
  readonly code: SwitchyardErrorCode;
  readonly status?: number;
  /** How many attempts were made. */
  readonly attempts?: number;
  /** A non-error JSON body that came with the failure (e.g. /api/broadcast's results with a 503). */
  readonly body?: unknown;
}

export declare class WebhookVerificationError extends Error {
  readonly code: 'missing_header' | 'invalid_header' | 'bad_signature' | 'timestamp_out_of_tolerance' | 'invalid_body';
}
export declare class WebhookHeaderError extends WebhookVerificationError {
  readonly code: 'missing_header' | 'invalid_header';
}
export declare class WebhookSignatureError extends WebhookVerificationError {
  readonly code: 'bad_signature';
}
export declare class WebhookTimestampError extends WebhookVerificationError {
  readonly code: 'timestamp_out_of_tolerance';
}
export declare class WebhookBodyError extends WebhookVerificationError {
  readonly code: 'invalid_body';
}
