// Types of authgate.js, the browser half of an authgate migration.

/** Why the client asks for a token. */
export type TokenReason =
  | 'initial' // the first connection
  | 'expired' // authgate closed with 4002: return a freshly refreshed token
  | 'rejected' // authgate closed with 4001: the last chance before authrequired
  | 'backoff' // reconnecting after 4029, 1014, 1006, ...
  | 'restart' // reconnecting after 1012 / 1001
  | 'expiring'; // the current JWT's exp is near (refreshBeforeExpiryMs)

/** Why a connection attempt is made: a TokenReason, or 'refresh' (with the token got for 'expiring'). */
export type AttemptKind = Exclude<TokenReason, 'expiring'> | 'refresh';

export interface ConnectOptions {
  /**
   * Returns the token to connect with (a Supabase access token, say), or a
   * promise of one. Called before every connection attempt. A '' connects
   * without a token. null or undefined (no session), anything else that is
   * not a string, a throw, a rejection, or no answer within tokenTimeoutMs
   * stops the client with authrequired, without opening a socket.
   */
  getToken(ctx: { reason: TokenReason }): string | null | undefined | PromiseLike<string | null | undefined>;
  /** Called with every event, the same object as the CustomEvent's detail. */
  onEvent?: (event: AuthgateEvent) => void;
  /** Where the token goes: ?token= (default) or the `bearer` subprotocol (SPEC "Token sources"). */
  tokenIn?: 'query' | 'bearer';
  /** The query parameter for tokenIn 'query'. Default 'token'. */
  queryParam?: string;
  /** The app's own subprotocols, offered after authgate's bearer entries. Default []. */
  protocols?: string[];
  /** The sockets' binaryType. Default 'blob'. */
  binaryType?: BinaryType;
  /** Backoff base: retry n waits random(0, min(maxDelayMs, baseDelayMs * 2^n)). Default 1000. */
  baseDelayMs?: number;
  /** Backoff cap. Default 30000. */
  maxDelayMs?: number;
  /** Connection attempts in any 60 s, the first included; one more would be giveup. Default 10. */
  maxAttemptsPerMinute?: number;
  /** 1012 / 1001: reconnect after random(0, restartWindowMs). Default 5000. */
  restartWindowMs?: number;
  /** Replace a JWT this long before its exp (not before half its remaining life). Default 60000. */
  refreshBeforeExpiryMs?: number;
  /** A connection open this long, or that got a message, resets the retry counters. Default 5000. */
  stableAfterMs?: number;
  /** How long getToken() may take. Default 10000. */
  tokenTimeoutMs?: number;
  /** The WebSocket constructor. Default globalThis.WebSocket. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
  /** Uniform random numbers in [0, 1) for the jitter. Default Math.random. */
  random?: () => number;
}

export type ClientState = 'connecting' | 'open' | 'waiting' | 'closed';

export interface ConnectingEvent {
  type: 'connecting';
  kind: AttemptKind;
  /** Backoff retries since the last stable connection. */
  attempt: number;
  tokenIn: 'query' | 'bearer';
  hasToken: boolean;
}
export interface OpenEvent {
  type: 'open';
  protocol: string;
}
export interface MessageDataEvent {
  type: 'message';
  data: string | Blob | ArrayBuffer;
}
/** A socket closed (authgate's rejections arrive as open, then disconnect with the code). */
export interface DisconnectEvent {
  type: 'disconnect';
  code: number;
  reason: string;
  wasClean: boolean;
}
/** A reconnect is scheduled after delayMs. */
export interface RetryingEvent {
  type: 'retrying';
  kind: 'expired' | 'rejected' | 'backoff' | 'restart' | 'refresh';
  code: number;
  reason: string;
  delayMs: number;
  attempt: number;
}
/** A token nearing exp was replaced (reconnect true) or getToken() returned no fresher one. */
export interface RefreshEvent {
  type: 'refresh';
  expiresInMs: number;
  reconnect: boolean;
}
/** Stopped: no usable token (4001 twice, 4002 twice, or getToken() failed). */
export interface AuthRequiredEvent {
  type: 'authrequired';
  code?: number;
  reason?: string;
  error?: string;
}
/** Stopped for good: authgate refuses this client's legacy credential (4003). */
export interface LegacyBlockedEvent {
  type: 'legacyblocked';
  code: number;
  reason: string;
}
/** Stopped: one more attempt would exceed maxAttemptsPerMinute. */
export interface GiveUpEvent {
  type: 'giveup';
  code: number;
  reason: string;
  attemptsPerMinute: number;
}
/** Stopped: by the app's close(), the server's 1000 or another final code, or a WebSocket that could not be made. */
export interface ClosedEvent {
  type: 'closed';
  by: 'app' | 'server' | 'client';
  code?: number;
  reason?: string;
  error?: string;
}

export type AuthgateEvent =
  | ConnectingEvent
  | OpenEvent
  | MessageDataEvent
  | DisconnectEvent
  | RetryingEvent
  | RefreshEvent
  | AuthRequiredEvent
  | LegacyBlockedEvent
  | GiveUpEvent
  | ClosedEvent;

export type AuthgateEventMap = {
  [E in AuthgateEvent as E['type']]: CustomEvent<E>;
};

export declare class AuthgateClient extends EventTarget {
  constructor(url: string | URL, options: ConnectOptions);
  readonly state: ClientState;
  readonly protocol: string;
  /** Sends on the open socket; false (nothing sent, nothing queued) when there is none. */
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): boolean;
  /** Stops for good: timers cancelled, socket closed, `closed` {by: 'app'}. */
  close(code?: number, reason?: string): void;
  addEventListener<K extends keyof AuthgateEventMap>(
    type: K,
    listener: (this: AuthgateClient, ev: AuthgateEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof AuthgateEventMap>(
    type: K,
    listener: (this: AuthgateClient, ev: AuthgateEventMap[K]) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** Opens a WebSocket through authgate and keeps it per authgate's close codes. Throws a TypeError for a URL that is not ws:/wss: or bad options. */
export declare function connect(url: string | URL, options: ConnectOptions): AuthgateClient;

export type CloseAction = 'refresh' | 'reauth' | 'legacy' | 'backoff' | 'restart' | 'stop';
export declare function closeAction(code: number): CloseAction;
export declare function backoffDelay(attempt: number, o?: { baseDelayMs?: number; maxDelayMs?: number }, random?: () => number): number;
export declare function backoffCeiling(attempt: number, o?: { baseDelayMs?: number; maxDelayMs?: number }): number;
export declare function restartDelay(windowMs?: number, random?: () => number): number;
export declare function withinBudget(attempts: readonly number[], at: number, max: number, windowMs?: number): boolean;
export declare function jwtExp(token: unknown): number | undefined;
export declare function refreshAt(expMs: number, nowMs: number, aheadMs: number): number | undefined;

export declare const defaults: Readonly<Required<Omit<ConnectOptions, 'getToken' | 'onEvent' | 'WebSocket' | 'random'>>>;
export declare const codes: Readonly<{
  normal: 1000;
  goingAway: 1001;
  noStatus: 1005;
  abnormal: 1006;
  internalError: 1011;
  serviceRestart: 1012;
  tryAgainLater: 1013;
  badGateway: 1014;
  tlsFailure: 1015;
  authRequired: 4001;
  tokenExpired: 4002;
  legacyBlocked: 4003;
  rateLimited: 4029;
}>;
