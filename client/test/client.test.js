// The client's state machine, with a fake WebSocket and mocked timers:
// what it does after each close code, that it never holds two sockets,
// never loops, never puts a token into an event, and that close() stops
// everything. The real thing, in Chromium against authgate, is e2e/client_test.go.
//
//	node --test client/test/*.test.js

import assert from 'node:assert/strict';
import { afterEach, beforeEach, mock, test } from 'node:test';

import { AuthgateClient, connect } from '../authgate.js';

const T0 = 1_700_000_000_000;

// FakeWS records what the client does; the test plays the server.
class FakeWS {
  static all = [];
  static live = 0;
  static maxLive = 0;
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.protocol = '';
    this.sent = [];
    this.closedWith = null;
    FakeWS.all.push(this);
    FakeWS.live++;
    FakeWS.maxLive = Math.max(FakeWS.maxLive, FakeWS.live);
  }
  send(d) {
    this.sent.push(d);
  }
  close(code, reason) {
    this.closedWith = { code, reason };
    // The client lets go of a socket it closes (its close event is not
    // awaited after close()); the refresh test checks the order itself.
    if (!this.gone) FakeWS.live--;
    this.gone = true;
  }
  // The server's side.
  open(protocol = '') {
    this.readyState = 1;
    this.protocol = protocol;
    this.onopen?.({});
  }
  message(data) {
    this.onmessage?.({ data });
  }
  end(code, reason = '') {
    this.readyState = 3;
    if (!this.gone) FakeWS.live--;
    this.gone = true;
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }
}

const flush = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

function jwt(payload) {
  const b64url = (s) => Buffer.from(s).toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  return `${b64url('{"alg":"HS256"}')}.${b64url(JSON.stringify(payload))}.sig`;
}

// start connects with tokens handed out in order (the last one repeats);
// a token {throw: msg} throws, {never: true} never settles.
function start(tokens, opts = {}) {
  const events = [];
  const asked = [];
  const viaTarget = [];
  const queue = [...tokens];
  const getToken = ({ reason }) => {
    asked.push(reason);
    const t = queue.length > 1 ? queue.shift() : queue[0];
    if (t && typeof t === 'object' && 'throw' in t) throw new Error(t.throw);
    if (t && typeof t === 'object' && t.never) return new Promise(() => {});
    return Promise.resolve(t);
  };
  const c = connect('wss://gate.example/api/v1/pam/ws?v=2', {
    getToken,
    onEvent: (e) => events.push(e),
    WebSocket: FakeWS,
    random: () => 0.5,
    ...opts,
  });
  for (const type of ['connecting', 'open', 'message', 'disconnect', 'retrying', 'refresh', 'authrequired', 'legacyblocked', 'giveup', 'closed']) {
    c.addEventListener(type, (e) => viaTarget.push(e.detail));
  }
  return { c, events, asked, viaTarget, types: () => events.map((e) => e.type) };
}

// sock returns the newest socket after letting the client run (timers
// of 0 ms included).
async function sock() {
  await flush();
  mock.timers.tick(0);
  await flush();
  return FakeWS.all.at(-1);
}

beforeEach(() => {
  FakeWS.all = [];
  FakeWS.live = 0;
  FakeWS.maxLive = 0;
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
});

afterEach(() => {
  mock.timers.reset();
  assert.ok(FakeWS.maxLive <= 1, `${FakeWS.maxLive} sockets at once`);
});

test('a URL that is not ws:/wss: or bad options throw synchronously', () => {
  const getToken = () => 't';
  for (const url of ['http://gate.example/ws', 'https://gate.example/ws', '/api/v1/pam/ws', 'not a url', '']) {
    assert.throws(() => connect(url, { getToken, WebSocket: FakeWS }), TypeError, url);
  }
  assert.throws(() => connect('ws://x/', {}), TypeError, 'no getToken');
  assert.throws(() => connect('ws://x/'), TypeError, 'no options');
  assert.throws(() => connect('ws://x/', { getToken: 'abc' }), TypeError, 'getToken not a function');
  assert.throws(() => connect('ws://x/', { getToken, tokenIn: 'cookie', WebSocket: FakeWS }), TypeError);
  assert.throws(() => connect('ws://x/', { getToken, baseDelayMs: -1, WebSocket: FakeWS }), TypeError);
  assert.throws(() => connect('ws://x/', { getToken, maxAttemptsPerMinute: 0, WebSocket: FakeWS }), TypeError);
  assert.throws(() => connect('ws://x/', { getToken, protocols: ['a b'], WebSocket: FakeWS }), TypeError);
  const c = connect(new URL('ws://x/'), { getToken, WebSocket: FakeWS });
  assert.ok(c instanceof AuthgateClient && c instanceof EventTarget);
  c.close();
});

test('the token goes into ?token= (replacing one in the URL), or the bearer subprotocol', async () => {
  const a = start(['tok-1'], {});
  let s = await sock();
  assert.equal(s.url, 'wss://gate.example/api/v1/pam/ws?v=2&token=tok-1');
  assert.equal(s.protocols, undefined);
  a.c.close();
  const b = start(['tok-2'], { tokenIn: 'bearer', protocols: ['echo'] });
  s = await sock();
  assert.equal(s.url, 'wss://gate.example/api/v1/pam/ws?v=2');
  assert.deepEqual(s.protocols, ['bearer', 'tok-2', 'echo']);
  s.open('bearer');
  assert.equal(b.c.protocol, 'bearer');
  b.c.close();
  const q = start(['tok-3'], { queryParam: 'access_token' });
  s = await sock();
  assert.equal(s.url, 'wss://gate.example/api/v1/pam/ws?v=2&access_token=tok-3');
  q.c.close();
  // A URL that already holds a token: replaced, never sent twice.
  const events = [];
  const c = connect('ws://gate.example/ws?token=stale', { getToken: () => 'fresh', WebSocket: FakeWS, onEvent: (e) => events.push(e) });
  s = await sock();
  assert.equal(s.url, 'ws://gate.example/ws?token=fresh');
  c.close();
  // A token that is no subprotocol value never reaches new WebSocket (whose
  // error message would quote it).
  const bad = start(['has space'], { tokenIn: 'bearer' });
  await flush();
  assert.deepEqual(bad.types(), ['authrequired']);
  assert.equal(FakeWS.all.length, 4);
});

test('4002: one fresh token and one reconnect; a second 4002 is authrequired', async () => {
  const { c, events, asked, types, viaTarget } = start(['expired-tok', 'fresh-tok', 'still-expired']);
  let s = await sock();
  s.open();
  s.end(4002, 'token expired (refresh and reconnect)');
  s = await sock();
  assert.equal(FakeWS.all.length, 2);
  assert.match(s.url, /token=fresh-tok$/);
  assert.deepEqual(asked, ['initial', 'expired']);
  s.open();
  s.end(4002, 'token expired (refresh and reconnect)');
  await flush();
  assert.equal(FakeWS.all.length, 2, 'no third socket');
  assert.deepEqual(types(), ['connecting', 'open', 'disconnect', 'retrying', 'connecting', 'open', 'disconnect', 'authrequired']);
  assert.equal(events[3].kind, 'expired');
  assert.equal(events[3].delayMs, 0);
  assert.equal(c.state, 'closed');
  assert.deepEqual(viaTarget, events, 'EventTarget and onEvent see the same events');
  mock.timers.tick(600_000);
  await flush();
  assert.equal(FakeWS.all.length, 2);
  const all = JSON.stringify(events);
  for (const tok of ['expired-tok', 'fresh-tok', 'still-expired']) assert.ok(!all.includes(tok), `an event holds ${tok}`);
});

test('4002 after a stable connection is answered again', async () => {
  const { asked } = start(['a', 'b', 'c']);
  let s = await sock();
  s.open();
  s.end(4002);
  s = await sock();
  s.open();
  s.message('hello'); // a message: the connection worked
  s.end(4002); // authgate's close_on_expiry, an hour later
  s = await sock();
  assert.equal(FakeWS.all.length, 3);
  assert.deepEqual(asked, ['initial', 'expired', 'expired']);
});

test('4001: one more token, then authrequired', async () => {
  const { c, asked, types, events } = start(['']);
  let s = await sock();
  assert.doesNotMatch(s.url, /token=/, "'' connects without a token");
  s.open();
  s.end(4001, 'authentication required');
  s = await sock();
  s.open();
  s.end(4001, 'authentication required');
  await flush();
  assert.equal(FakeWS.all.length, 2);
  assert.deepEqual(asked, ['initial', 'rejected']);
  assert.deepEqual(types(), ['connecting', 'open', 'disconnect', 'retrying', 'connecting', 'open', 'disconnect', 'authrequired']);
  assert.deepEqual(events.at(-1), { type: 'authrequired', code: 4001, reason: 'authentication required' });
  assert.equal(c.state, 'closed');
});

test('4003: legacyblocked, and nothing more, ever', async () => {
  const { c, asked, types, events } = start(['8f14e45f-ceea-467a-9575-6d4b4b3c7f21']);
  const s = await sock();
  s.open();
  s.end(4003, 'legacy authentication no longer accepted');
  mock.timers.tick(3600_000);
  await flush();
  assert.equal(FakeWS.all.length, 1);
  assert.deepEqual(asked, ['initial']);
  assert.deepEqual(types(), ['connecting', 'open', 'disconnect', 'legacyblocked']);
  assert.deepEqual(events.at(-1), { type: 'legacyblocked', code: 4003, reason: 'legacy authentication no longer accepted' });
  assert.equal(c.state, 'closed');
  assert.equal(c.send('x'), false);
});

test('1014, 4029, 1006: exponential backoff with full jitter, then giveup past the budget', async () => {
  let r = 0.5;
  const { c, events, asked } = start(['tok'], { baseDelayMs: 100, maxDelayMs: 1000, maxAttemptsPerMinute: 8, random: () => r });
  const codesSeen = [1014, 4029, 1006, 1014, 1014, 1014, 1014, 1014];
  const waits = [];
  for (const [i, code] of codesSeen.entries()) {
    const s = await sock();
    assert.equal(FakeWS.all.length, i + 1);
    if (code !== 1006) s.open();
    s.end(code);
    await flush();
    const ev = events.at(-1);
    if (i === codesSeen.length - 1) {
      assert.equal(ev.type, 'giveup', 'the 9th attempt within a minute is refused');
      assert.equal(ev.code, 1014);
      break;
    }
    assert.equal(ev.type, 'retrying');
    assert.equal(ev.kind, 'backoff');
    assert.equal(ev.attempt, i);
    waits.push(ev.delayMs);
    // Just before the delay: no socket yet; at it: one.
    mock.timers.tick(ev.delayMs - 1);
    await flush();
    assert.equal(FakeWS.all.length, i + 1, `retry ${i} came early`);
    mock.timers.tick(1);
  }
  // random 0.5: half of min(1000, 100 * 2^n).
  assert.deepEqual(waits, [50, 100, 200, 400, 500, 500, 500]);
  assert.ok(asked.every((a, i) => a === (i === 0 ? 'initial' : 'backoff')));
  assert.equal(c.state, 'closed');
  mock.timers.tick(600_000);
  await flush();
  assert.equal(FakeWS.all.length, 8);
  r = 0;
});

test('the budget counts a minute: spaced-out failures go on', async () => {
  // 29.7 s apart: never 3 in a minute.
  const { events } = start(['tok'], { baseDelayMs: 30000, maxDelayMs: 30000, maxAttemptsPerMinute: 3, random: () => 0.99 });
  for (let i = 0; i < 6; i++) {
    const s = await sock();
    s.end(1006);
    await flush();
    assert.equal(events.at(-1).type, 'retrying', `failure ${i}`);
    mock.timers.tick(events.at(-1).delayMs);
  }
});

test('1012: one reconnect after a random delay in the restart window', async () => {
  const { events } = start(['tok'], { random: () => 0.7 });
  let s = await sock();
  s.open();
  s.message('hi');
  s.end(1012, 'service restart');
  await flush();
  const ev = events.at(-1);
  assert.deepEqual(ev, { type: 'retrying', kind: 'restart', code: 1012, reason: 'service restart', delayMs: 3500, attempt: 0 });
  mock.timers.tick(3499);
  await flush();
  assert.equal(FakeWS.all.length, 1);
  mock.timers.tick(1);
  s = await sock();
  assert.equal(FakeWS.all.length, 2);
  // The restarted authgate is not up yet: the backoff starts from 0.
  s.end(1006);
  await flush();
  assert.equal(events.at(-1).kind, 'backoff');
  assert.equal(events.at(-1).attempt, 0);
  assert.equal(events.at(-1).delayMs, 700);
});

test('1001 is a restart, 1000 and unknown codes stop', async () => {
  const a = start(['tok'], { random: () => 0.2 });
  let s = await sock();
  s.open();
  s.end(1001);
  await flush();
  assert.equal(a.events.at(-1).kind, 'restart');
  assert.equal(a.events.at(-1).delayMs, 1000);
  a.c.close();
  for (const code of [1000, 1008, 4400]) {
    const b = start(['tok']);
    s = await sock();
    s.open();
    s.end(code, 'bye');
    await flush();
    assert.deepEqual(b.events.at(-1), { type: 'closed', by: 'server', code, reason: 'bye' }, `code ${code}`);
    assert.equal(b.c.state, 'closed');
  }
});

test('a stable connection resets the backoff', async () => {
  const { events } = start(['tok'], { baseDelayMs: 100, stableAfterMs: 5000 });
  let s = await sock();
  s.end(1006);
  await flush();
  mock.timers.tick(events.at(-1).delayMs);
  s = await sock();
  s.end(1006);
  await flush();
  assert.equal(events.at(-1).attempt, 1);
  mock.timers.tick(events.at(-1).delayMs);
  s = await sock();
  s.open();
  mock.timers.tick(5000); // open for 5 s, no message: stable too
  s.end(1014);
  await flush();
  assert.equal(events.at(-1).attempt, 0);
});

test('getToken that throws, returns a non-string, or hangs: authrequired, no socket, no loop', async () => {
  for (const [tok, want] of [
    [{ throw: 'no session' }, 'getToken() failed: no session'],
    [42, 'getToken() returned number, not a string'],
    [null, 'getToken() returned null, not a string'],
    [undefined, 'getToken() returned undefined, not a string'],
    [{ never: true }, 'getToken() did not settle within 10000 ms'],
  ]) {
    FakeWS.all = [];
    const { c, types, events } = start([tok]);
    await flush();
    mock.timers.tick(10_000);
    await flush();
    assert.deepEqual(types(), ['authrequired'], JSON.stringify(tok));
    assert.equal(events[0].error, want);
    assert.equal(FakeWS.all.length, 0);
    assert.equal(c.state, 'closed');
    mock.timers.tick(600_000);
    await flush();
    assert.equal(FakeWS.all.length, 0);
  }
  // A getToken that throws synchronously, too.
  const c = connect('ws://x/', { getToken: () => { throw new TypeError('boom'); }, WebSocket: FakeWS, onEvent: (e) => { assert.equal(e.type, 'authrequired'); } });
  await flush();
  assert.equal(c.state, 'closed');
});

test('close() stops every timer and pending token request', async () => {
  // While waiting for a backoff.
  const a = start(['tok']);
  let s = await sock();
  s.end(1014);
  await flush();
  assert.equal(a.c.state, 'waiting');
  a.c.close();
  assert.equal(a.c.state, 'closed');
  mock.timers.tick(600_000);
  await flush();
  assert.equal(FakeWS.all.length, 1);
  assert.deepEqual(a.types(), ['connecting', 'disconnect', 'retrying', 'closed']);
  assert.deepEqual(a.events.at(-1), { type: 'closed', by: 'app', code: 1000, reason: '' });
  a.c.close(); // idempotent
  assert.equal(a.events.length, 4);
  // While open, with a refresh timer armed.
  const b = start([jwt({ exp: T0 / 1000 + 3600 })]);
  s = await sock();
  s.open();
  b.c.close(4000, 'logout');
  assert.deepEqual(s.closedWith, { code: 4000, reason: 'logout' });
  mock.timers.tick(7200_000);
  await flush();
  assert.deepEqual(b.asked, ['initial']);
  assert.throws(() => b.c.close(1001), RangeError);
  // While getToken is pending.
  let resolve;
  const c = connect('ws://x/', { getToken: () => new Promise((r) => { resolve = r; }), WebSocket: FakeWS });
  await flush();
  c.close();
  resolve('late');
  await flush();
  assert.equal(FakeWS.all.length, 2);
  // Before the first attempt.
  const d = connect('ws://x/', { getToken: () => 't', WebSocket: FakeWS });
  d.close();
  await flush();
  assert.equal(FakeWS.all.length, 2);
});

test('a JWT nearing exp is replaced before authgate closes with 4002', async () => {
  const exp = T0 / 1000 + 600; // ten minutes
  const first = jwt({ sub: 'u', exp });
  const second = jwt({ sub: 'u', exp: exp + 3600 });
  const { events, asked, types } = start([first, second], { refreshBeforeExpiryMs: 60_000 });
  let s = await sock();
  s.open();
  s.message('hello');
  mock.timers.tick(540_000 - 1);
  await flush();
  assert.deepEqual(asked, ['initial']);
  mock.timers.tick(1);
  await flush();
  assert.deepEqual(asked, ['initial', 'expiring']);
  assert.deepEqual(s.closedWith, { code: 1000, reason: 'token refresh' });
  assert.equal(FakeWS.all.length, 1, 'the old socket closes before the new one opens');
  s.end(1000, 'token refresh');
  s = await sock();
  assert.equal(FakeWS.all.length, 2);
  assert.ok(s.url.endsWith('token=' + second));
  assert.deepEqual(types(), ['connecting', 'open', 'message', 'refresh', 'disconnect', 'retrying', 'connecting']);
  assert.deepEqual(events[3], { type: 'refresh', expiresInMs: 60_000, reconnect: true });
  assert.equal(events[5].kind, 'refresh');
  assert.equal(events[6].kind, 'refresh');
  const all = JSON.stringify(events);
  assert.ok(!all.includes(first) && !all.includes(second));
});

test('a refresh that brings no fresher token keeps the socket', async () => {
  const tok = jwt({ exp: T0 / 1000 + 120 });
  const { events, asked } = start([tok]);
  const s = await sock();
  s.open();
  mock.timers.tick(60_000);
  await flush();
  assert.deepEqual(asked, ['initial', 'expiring']);
  assert.equal(s.closedWith, null);
  assert.deepEqual(events.at(-1), { type: 'refresh', expiresInMs: 60_000, reconnect: false });
  // authgate's close_on_expiry then gets one more getToken().
  s.end(4002);
  await flush();
  assert.equal(events.at(-1).kind, 'expired');
});

test('an exception in onEvent does not break the client', async () => {
  const errors = [];
  const orig = globalThis.reportError;
  globalThis.reportError = (e) => errors.push(e);
  try {
    const c = connect('ws://x/', { getToken: () => 't', WebSocket: FakeWS, onEvent: () => { throw new Error('app bug'); } });
    const s = await sock();
    s.open();
    assert.equal(c.state, 'open');
    assert.equal(c.send('x'), true);
    assert.deepEqual(s.sent, ['x']);
    c.close();
    assert.equal(errors.length, 3);
  } finally {
    if (orig === undefined) delete globalThis.reportError;
    else globalThis.reportError = orig;
  }
});
