// authgate.js: the browser half of an authgate migration.
//
// A frontend uses connect() instead of a bare `new WebSocket(url)`. The
// returned client holds at most one WebSocket at a time and turns
// authgate's close codes (SPEC "Rejections") into the right behaviour, so
// that a stale or misconfigured client can never loop:
//
//	4002 token expired      ask getToken() for a fresh token, reconnect once
//	4001 invalid / missing  ask getToken() once more, then stop: authrequired
//	4003 legacy refused     stop for good: legacyblocked (this build must update)
//	4029, 1014, 1006        exponential backoff with full jitter and a cap
//	1012 service restart    reconnect after a random delay in a window
//	1001 going away         as 1012 (a server or proxy restarting)
//	1000 normal closure     stop: closed (the server ended the session on purpose)
//
// plus 1005, 1011, 1013 and 1015 as backoff, and every other code (1002,
// 1003, 1007-1010, 3000-4999 not listed above) as stop: those repeat on a
// reconnect. Every automatic reconnect counts against maxAttemptsPerMinute;
// past it the client gives up. A token whose `exp` is near is replaced, and
// the socket reconnected, before authgate's close_on_expiry fires.
//
// Every decision is an event, delivered both to options.onEvent and as a
// CustomEvent (its detail the same object) on the client, an EventTarget.
// No event ever contains a token.
//
// No dependencies, no build step: an ES module for browsers (and any
// runtime with WebSocket, EventTarget and CustomEvent, such as Node 22).

/** Defaults of connect()'s options; each can be overridden. */
export const defaults = Object.freeze({
  tokenIn: 'query', // 'query' (?token=) or 'bearer' (Sec-WebSocket-Protocol: bearer, <token>)
  queryParam: 'token',
  protocols: [], // the app's own subprotocols, offered after authgate's bearer entries
  binaryType: 'blob',
  baseDelayMs: 1000, // backoff: attempt n waits random(0, min(maxDelayMs, baseDelayMs * 2^n))
  maxDelayMs: 30000,
  maxAttemptsPerMinute: 10, // connection attempts in any 60 s, the first one included
  restartWindowMs: 5000, // 1012 / 1001: reconnect after random(0, restartWindowMs)
  refreshBeforeExpiryMs: 60000, // replace a JWT this long before its exp
  stableAfterMs: 5000, // a connection open this long (or that got a message) resets the retry counters
  tokenTimeoutMs: 10000, // a getToken() that has not settled by then is a failure
});

/** Close codes authgate sends (SPEC "Rejections"), and the ones a browser reports. */
export const codes = Object.freeze({
  normal: 1000,
  goingAway: 1001,
  noStatus: 1005,
  abnormal: 1006,
  internalError: 1011,
  serviceRestart: 1012,
  tryAgainLater: 1013,
  badGateway: 1014,
  tlsFailure: 1015,
  authRequired: 4001,
  tokenExpired: 4002,
  legacyBlocked: 4003,
  rateLimited: 4029,
});

const minute = 60000;

/**
 * What the client does after a socket closed with code: 'refresh' (4002),
 * 'reauth' (4001), 'legacy' (4003), 'backoff', 'restart' or 'stop'.
 * @param {number} code
 * @returns {'refresh'|'reauth'|'legacy'|'backoff'|'restart'|'stop'}
 */
export function closeAction(code) {
  switch (code) {
    case codes.tokenExpired:
      return 'refresh';
    case codes.authRequired:
      return 'reauth';
    case codes.legacyBlocked:
      return 'legacy';
    case codes.rateLimited:
    case codes.badGateway:
    case codes.abnormal:
    case codes.noStatus:
    case codes.internalError:
    case codes.tryAgainLater:
    case codes.tlsFailure:
      return 'backoff';
    case codes.serviceRestart:
    case codes.goingAway:
      return 'restart';
    default:
      return 'stop';
  }
}

/**
 * The delay before retry number attempt (0 for the first retry after a
 * failure), by "full jitter" (AWS Architecture Blog, "Exponential Backoff
 * And Jitter"): random_between(0, min(cap, base * 2 ** attempt)).
 * @param {number} attempt failures so far, from 0
 * @param {{baseDelayMs?: number, maxDelayMs?: number}} [o]
 * @param {() => number} [random] uniform in [0, 1)
 * @returns {number} whole milliseconds in [0, min(cap, base * 2^attempt))
 */
export function backoffDelay(attempt, o = {}, random = Math.random) {
  return Math.floor(random() * backoffCeiling(attempt, o));
}

/**
 * The upper bound of backoffDelay(attempt): min(cap, base * 2^attempt).
 * @param {number} attempt
 * @param {{baseDelayMs?: number, maxDelayMs?: number}} [o]
 * @returns {number}
 */
export function backoffCeiling(attempt, { baseDelayMs = defaults.baseDelayMs, maxDelayMs = defaults.maxDelayMs } = {}) {
  const n = Number.isFinite(attempt) && attempt > 0 ? Math.floor(attempt) : 0;
  // 2 ** n overflows to Infinity for a large n; min() then gives the cap.
  return Math.min(maxDelayMs, baseDelayMs * 2 ** n);
}

/**
 * The delay before reconnecting after a restart (1012): uniform in
 * [0, windowMs), so that every client of an instance does not come back in
 * the same instant.
 * @param {number} windowMs
 * @param {() => number} [random]
 * @returns {number}
 */
export function restartDelay(windowMs = defaults.restartWindowMs, random = Math.random) {
  return Math.floor(random() * windowMs);
}

/**
 * Whether an attempt at time at keeps within max attempts in any window:
 * fewer than max of the earlier attempts lie in (at - windowMs, at].
 * @param {number[]} attempts times of earlier attempts (ms)
 * @param {number} at
 * @param {number} max
 * @param {number} [windowMs]
 * @returns {boolean}
 */
export function withinBudget(attempts, at, max, windowMs = minute) {
  let n = 0;
  for (const t of attempts) if (t > at - windowMs && t <= at) n++;
  return n < max;
}

/**
 * The `exp` claim of a JWT, in seconds since the epoch, or undefined when
 * token is not a JWT with a numeric exp. Only the payload is read (base64url
 * JSON, RFC 7519 §7.2); the signature is the server's business.
 * @param {unknown} token
 * @returns {number|undefined}
 */
export function jwtExp(token) {
  if (typeof token !== 'string' || token.length > 16384) return undefined;
  const parts = token.split('.');
  if (parts.length !== 3 || !/^[A-Za-z0-9_-]+$/.test(parts[1])) return undefined;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    b64 += '='.repeat((4 - (b64.length % 4)) % 4);
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    const exp = claims !== null && typeof claims === 'object' ? claims.exp : undefined;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * When to replace a token that expires at expMs: refreshBeforeExpiryMs
 * ahead of it, but not before half its remaining life has passed (so that a
 * token shorter-lived than the margin does not cause a reconnect at once,
 * and one that keeps coming back short cannot loop). undefined when it has
 * already expired.
 * @param {number} expMs
 * @param {number} nowMs
 * @param {number} aheadMs
 * @returns {number|undefined}
 */
export function refreshAt(expMs, nowMs, aheadMs) {
  if (!(expMs > nowMs)) return undefined;
  return Math.max(expMs - aheadMs, nowMs + (expMs - nowMs) / 2);
}

// Characters of an RFC 9110 §5.6.2 token: what a WebSocket subprotocol
// entry may hold (RFC 6455 §4.1). A browser refuses anything else, and its
// error message would quote the token.
const tchar = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

// tokenTimeout is what a getToken() that did not settle in time rejects with.
const tokenTimeout = Symbol('getToken timeout');

function checkMs(name, v) {
  if (typeof v !== 'number' || !(v >= 0) || v === Infinity) {
    throw new TypeError(`authgate: options.${name} must be a non-negative finite number of milliseconds`);
  }
}

/**
 * Opens a WebSocket to url through authgate, with the token from
 * options.getToken(), and keeps it open per authgate's close codes.
 * @param {string|URL} url ws: or wss:
 * @param {import('./authgate.js').ConnectOptions} options
 * @returns {AuthgateClient}
 */
export function connect(url, options) {
  return new AuthgateClient(url, options);
}

/**
 * One logical connection: at most one WebSocket at a time, reconnected per
 * authgate's close codes until it stops. An EventTarget.
 */
export class AuthgateClient extends EventTarget {
  #url; // URL without the token
  #o; // options, defaults filled in
  #WS;
  #random;
  #onEvent;
  #state = 'connecting'; // connecting | open | waiting | closed
  #ws = null; // the one socket, from construction until its close event
  #gen = 0; // bumped to invalidate pending getToken() results and timers
  #timers = new Set();
  #attempts = []; // times of socket creations in the last minute
  #failures = 0; // consecutive backoff retries since the last stable connection
  #reauthed = false; // a 4001 was answered with one more getToken() already
  #refreshed = false; // a 4002 was answered with a fresh token already
  #token = null; // the current socket's token (never in an event)
  #nextToken = null; // the token a proactive refresh reconnects with
  #openedAt = 0;
  #gotMessage = false;

  /**
   * @param {string|URL} url
   * @param {object} options
   */
  constructor(url, options) {
    super();
    let u;
    try {
      u = new URL(String(url));
    } catch {
      throw new TypeError('authgate: url is not an absolute URL');
    }
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
      throw new TypeError(`authgate: url must be ws: or wss:, not ${u.protocol}`);
    }
    if (options === null || typeof options !== 'object' || typeof options.getToken !== 'function') {
      throw new TypeError('authgate: options.getToken must be a function returning a token (or a promise of one)');
    }
    const o = { ...defaults, ...options };
    if (o.tokenIn !== 'query' && o.tokenIn !== 'bearer') {
      throw new TypeError(`authgate: options.tokenIn must be 'query' or 'bearer'`);
    }
    if (typeof o.queryParam !== 'string' || o.queryParam === '') {
      throw new TypeError('authgate: options.queryParam must be a non-empty string');
    }
    if (!Array.isArray(o.protocols) || o.protocols.some((p) => typeof p !== 'string' || !tchar.test(p))) {
      throw new TypeError('authgate: options.protocols must be an array of subprotocol names');
    }
    for (const k of ['baseDelayMs', 'maxDelayMs', 'restartWindowMs', 'refreshBeforeExpiryMs', 'stableAfterMs', 'tokenTimeoutMs']) {
      checkMs(k, o[k]);
    }
    if (!Number.isInteger(o.maxAttemptsPerMinute) || o.maxAttemptsPerMinute < 1) {
      throw new TypeError('authgate: options.maxAttemptsPerMinute must be a positive integer');
    }
    if (o.onEvent !== undefined && typeof o.onEvent !== 'function') {
      throw new TypeError('authgate: options.onEvent must be a function');
    }
    this.#WS = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WS !== 'function') {
      throw new TypeError('authgate: no WebSocket constructor (pass options.WebSocket)');
    }
    this.#random = typeof o.random === 'function' ? o.random : Math.random;
    this.#onEvent = o.onEvent;
    u.searchParams.delete(o.queryParam);
    this.#url = u;
    this.#o = o;
    // Start after the caller had the chance to add listeners.
    const gen = this.#gen;
    queueMicrotask(() => {
      if (gen === this.#gen) this.#attempt('initial');
    });
  }

  /** 'connecting', 'open', 'waiting' (a reconnect is scheduled) or 'closed' (stopped for good). */
  get state() {
    return this.#state;
  }

  /** The open socket's subprotocol ('bearer' with tokenIn 'bearer' unless the backend chose one), or ''. */
  get protocol() {
    return this.#state === 'open' && this.#ws ? this.#ws.protocol : '';
  }

  /**
   * Sends data on the open socket. Returns false, sending nothing, when
   * there is none (connecting, waiting, closed): nothing is queued, since
   * what to resend after a reconnect is the app's decision.
   * @param {string|ArrayBufferLike|Blob|ArrayBufferView} data
   * @returns {boolean}
   */
  send(data) {
    if (this.#state !== 'open' || !this.#ws || this.#ws.readyState !== 1) return false;
    this.#ws.send(data);
    return true;
  }

  /**
   * Stops for good: cancels every timer and pending token request, closes
   * the socket with code (1000 or 3000-4999) and reason, and emits
   * `closed` {by: 'app'}. Idempotent.
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = '') {
    if (code !== 1000 && !(Number.isInteger(code) && code >= 3000 && code <= 4999)) {
      throw new RangeError('authgate: close code must be 1000 or in 3000-4999');
    }
    if (this.#state === 'closed') return;
    const ws = this.#ws;
    this.#stop('closed', { by: 'app', code, reason: String(reason) });
    if (ws) ws.close(code, String(reason));
  }

  // ---- internals ----

  #emit(type, detail = {}) {
    const d = Object.freeze({ type, ...detail });
    this.dispatchEvent(new CustomEvent(type, { detail: d }));
    if (this.#onEvent) {
      try {
        this.#onEvent(d);
      } catch (e) {
        // An app handler's exception must not stop the state machine; the
        // platform reports it the way it reports a listener's.
        if (typeof reportError === 'function') reportError(e);
        else setTimeout(() => { throw e; });
      }
    }
  }

  #timer(ms, fn) {
    const gen = this.#gen;
    const id = setTimeout(() => {
      this.#timers.delete(id);
      if (gen === this.#gen) fn();
    }, ms);
    this.#timers.add(id);
    return id;
  }

  #clearTimers() {
    for (const id of this.#timers) clearTimeout(id);
    this.#timers.clear();
  }

  // #stop ends the client: no timer, no pending token, no socket handlers.
  #stop(type, detail) {
    this.#gen++;
    this.#clearTimers();
    if (this.#ws) this.#detach(this.#ws);
    this.#ws = null;
    this.#token = this.#nextToken = null;
    this.#state = 'closed';
    this.#emit(type, detail);
  }

  #detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  // #getToken asks the app, with a timeout; it resolves to {token} or
  // {error}, or to null when the client was closed or moved on meanwhile.
  async #getToken(reason) {
    const gen = this.#gen;
    let timeout;
    try {
      const token = await Promise.race([
        Promise.resolve().then(() => this.#o.getToken({ reason })),
        new Promise((_, reject) => {
          timeout = this.#timer(this.#o.tokenTimeoutMs, () => reject(tokenTimeout));
        }),
      ]);
      if (gen !== this.#gen) return null;
      if (typeof token !== 'string') {
        return { error: `getToken() returned ${token === null ? 'null' : typeof token}, not a string` };
      }
      return { token };
    } catch (e) {
      if (gen !== this.#gen) return null;
      if (e === tokenTimeout) return { error: `getToken() did not settle within ${this.#o.tokenTimeoutMs} ms` };
      return { error: `getToken() failed: ${e instanceof Error ? e.message : String(e)}` };
    } finally {
      if (timeout !== undefined) {
        clearTimeout(timeout);
        this.#timers.delete(timeout);
      }
    }
  }

  // #attempt gets a token and opens a socket.
  async #attempt(kind) {
    this.#state = 'connecting';
    const r = await this.#getToken(kind);
    if (r === null) return;
    if (r.error !== undefined) {
      this.#stop('authrequired', { error: r.error });
      return;
    }
    this.#open(r.token, kind);
  }

  #open(token, kind) {
    if (this.#ws !== null) throw new Error('authgate: internal error: a second socket'); // never
    const o = this.#o;
    const u = new URL(this.#url);
    let protocols = o.protocols;
    if (o.tokenIn === 'query') {
      if (token !== '') u.searchParams.set(o.queryParam, token);
    } else if (token !== '') {
      if (!tchar.test(token)) {
        this.#stop('authrequired', { error: 'the token cannot be sent as a subprotocol (characters outside RFC 9110 token)' });
        return;
      }
      protocols = ['bearer', token, ...o.protocols];
    }
    this.#attempts = this.#attempts.filter((t) => t > Date.now() - minute);
    this.#attempts.push(Date.now());
    this.#state = 'connecting';
    this.#emit('connecting', { kind, attempt: this.#failures, tokenIn: o.tokenIn, hasToken: token !== '' });
    let ws;
    try {
      ws = protocols.length ? new this.#WS(u.href, protocols) : new this.#WS(u.href);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      this.#stop('closed', { by: 'client', error: token ? msg.split(token).join('…') : msg });
      return;
    }
    ws.binaryType = o.binaryType;
    this.#ws = ws;
    this.#token = token;
    this.#gotMessage = false;
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (e) => {
      this.#gotMessage = true;
      this.#emit('message', { data: e.data });
    };
    ws.onclose = (e) => this.#onClose(ws, e.code, e.reason, e.wasClean);
    // A failed connection also fires error, then close with 1006: close
    // is where the decision is made.
    ws.onerror = null;
  }

  #onOpen(ws) {
    if (ws !== this.#ws) return;
    this.#state = 'open';
    this.#openedAt = Date.now();
    this.#emit('open', { protocol: ws.protocol });
    const exp = jwtExp(this.#token);
    if (exp !== undefined) {
      const at = refreshAt(exp * 1000, Date.now(), this.#o.refreshBeforeExpiryMs);
      if (at !== undefined) this.#timer(Math.max(0, at - Date.now()), () => this.#refresh(ws, exp));
    }
  }

  // #refresh replaces a token nearing its exp: a fresh one from getToken()
  // closes this socket (1000 "token refresh") and opens the next with it.
  async #refresh(ws, exp) {
    if (ws !== this.#ws || this.#state !== 'open') return;
    const expiresInMs = exp * 1000 - Date.now();
    const r = await this.#getToken('expiring');
    if (r === null || ws !== this.#ws || this.#state !== 'open') return;
    if (r.error !== undefined) {
      this.#stop('authrequired', { error: r.error });
      ws.close(1000, 'token refresh failed');
      return;
    }
    const next = jwtExp(r.token);
    const fresher = next !== undefined ? next > exp : r.token !== '' && r.token !== this.#token;
    this.#emit('refresh', { expiresInMs, reconnect: fresher });
    if (!fresher) return; // authgate's 4002 will come; it gets one more getToken()
    this.#nextToken = r.token;
    ws.close(1000, 'token refresh');
  }

  #onClose(ws, code, reason, wasClean) {
    if (ws !== this.#ws) return;
    this.#detach(ws);
    this.#ws = null;
    const stable = this.#gotMessage || (this.#state === 'open' && Date.now() - this.#openedAt >= this.#o.stableAfterMs);
    if (stable) {
      this.#failures = 0;
      this.#reauthed = this.#refreshed = false;
    }
    this.#emit('disconnect', { code, reason, wasClean });
    const next = this.#nextToken;
    this.#nextToken = null;
    if (next !== null) {
      // Our own close for a proactive refresh: reconnect at once.
      this.#schedule(0, 'refresh', code, reason, () => this.#open(next, 'refresh'));
      return;
    }
    switch (closeAction(code)) {
      case 'legacy':
        this.#stop('legacyblocked', { code, reason });
        return;
      case 'refresh':
        if (this.#refreshed) {
          this.#stop('authrequired', { code, reason, error: 'the token was expired again after a refresh' });
          return;
        }
        this.#refreshed = true;
        this.#schedule(0, 'expired', code, reason);
        return;
      case 'reauth':
        if (this.#reauthed) {
          this.#stop('authrequired', { code, reason });
          return;
        }
        this.#reauthed = true;
        this.#schedule(0, 'rejected', code, reason);
        return;
      case 'backoff': {
        const delay = backoffDelay(this.#failures, this.#o, this.#random);
        this.#schedule(delay, 'backoff', code, reason);
        this.#failures++;
        return;
      }
      case 'restart':
        this.#schedule(restartDelay(this.#o.restartWindowMs, this.#random), 'restart', code, reason);
        return;
      default:
        this.#stop('closed', { by: 'server', code, reason });
    }
  }

  // #schedule reconnects after delayMs, or gives up when that attempt would
  // exceed maxAttemptsPerMinute.
  #schedule(delayMs, kind, code, reason, open = () => this.#attempt(kind)) {
    const at = Date.now() + delayMs;
    if (!withinBudget(this.#attempts, at, this.#o.maxAttemptsPerMinute)) {
      this.#stop('giveup', { code, reason, attemptsPerMinute: this.#o.maxAttemptsPerMinute });
      return;
    }
    this.#state = 'waiting';
    this.#emit('retrying', { kind, code, reason, delayMs, attempt: this.#failures });
    this.#timer(delayMs, open);
  }
}
