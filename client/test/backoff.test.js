// The pure parts of authgate.js: backoff arithmetic, the restart window,
// the attempt budget, the close-code table, and reading a JWT's exp.
//
//	node --test client/test/*.test.js

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  backoffCeiling,
  backoffDelay,
  closeAction,
  codes,
  defaults,
  jwtExp,
  refreshAt,
  restartDelay,
  withinBudget,
} from '../authgate.js';

test('backoff ceiling: min(cap, base * 2^attempt)', () => {
  const o = { baseDelayMs: 1000, maxDelayMs: 30000 };
  const want = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  want.forEach((w, n) => assert.equal(backoffCeiling(n, o), w, `attempt ${n}`));
  // 2^2000 is Infinity; the cap still holds, no NaN.
  assert.equal(backoffCeiling(2000, o), 30000);
  // Nonsense attempts count as the first.
  for (const n of [-1, NaN, undefined, Infinity * -1]) assert.equal(backoffCeiling(n, o), 1000, String(n));
  assert.equal(backoffCeiling(2.7, o), 4000, 'fractions round down');
  // Defaults are the module's.
  assert.equal(backoffCeiling(0), defaults.baseDelayMs);
  assert.equal(backoffCeiling(99), defaults.maxDelayMs);
});

test('backoff delay: full jitter, uniform in [0, ceiling)', () => {
  const o = { baseDelayMs: 250, maxDelayMs: 4000 };
  assert.equal(backoffDelay(3, o, () => 0), 0, 'random 0: no wait at all (full jitter starts at 0)');
  assert.equal(backoffDelay(3, o, () => 0.5), 1000);
  assert.equal(backoffDelay(3, o, () => 0.999999), 1999, 'never the ceiling itself');
  assert.equal(backoffDelay(9, o, () => 0.5), 2000, 'capped');
  // With the real random source: always in bounds, mean near half the
  // ceiling (n = 20000: the standard error of the mean is 0.2% of it).
  for (const n of [0, 1, 2, 4, 6]) {
    const ceil = backoffCeiling(n, o);
    let sum = 0, min = Infinity, max = -Infinity;
    for (let i = 0; i < 20000; i++) {
      const d = backoffDelay(n, o);
      assert.ok(Number.isInteger(d) && d >= 0 && d < ceil, `attempt ${n}: ${d} outside [0, ${ceil})`);
      sum += d; min = Math.min(min, d); max = Math.max(max, d);
    }
    const mean = sum / 20000;
    assert.ok(Math.abs(mean - ceil / 2) < ceil * 0.02, `attempt ${n}: mean ${mean}, want about ${ceil / 2}`);
    assert.ok(min < ceil * 0.01 && max > ceil * 0.99, `attempt ${n}: [${min}, ${max}] does not span [0, ${ceil})`);
  }
});

test('restart delay: uniform in [0, window)', () => {
  assert.equal(restartDelay(5000, () => 0), 0);
  assert.equal(restartDelay(5000, () => 0.5), 2500);
  assert.equal(restartDelay(5000, () => 0.99999), 4999);
  assert.equal(restartDelay(undefined, () => 0.5), defaults.restartWindowMs / 2, 'default window');
  const buckets = new Array(5).fill(0);
  for (let i = 0; i < 10000; i++) {
    const d = restartDelay(5000);
    assert.ok(d >= 0 && d < 5000);
    buckets[Math.floor(d / 1000)]++;
  }
  // 2000 expected per second of the window; 5 sigma is about 200.
  for (const [i, n] of buckets.entries()) assert.ok(n > 1750 && n < 2250, `second ${i} of the window: ${n} of 10000`);
});

test('attempt budget: at most max attempts in any minute', () => {
  assert.equal(withinBudget([], 0, 1), true);
  assert.equal(withinBudget([1000], 1000, 1), false, 'the same instant counts');
  assert.equal(withinBudget([1000], 61000, 1), true, 'exactly a minute later is outside the window');
  assert.equal(withinBudget([1000], 60999, 1), false);
  const times = [0, 10000, 20000];
  assert.equal(withinBudget(times, 30000, 3), false);
  assert.equal(withinBudget(times, 30000, 4), true);
  assert.equal(withinBudget(times, 60001, 3), true, 'the first left the window');
  assert.equal(withinBudget([5000], 1000, 1), true, 'a later attempt is not in the past window');
  assert.equal(withinBudget(times, 25000, 2, 10000), true, 'custom window');
});

test('close codes: what each one does', () => {
  const table = {
    [codes.tokenExpired]: 'refresh',
    [codes.authRequired]: 'reauth',
    [codes.legacyBlocked]: 'legacy',
    [codes.rateLimited]: 'backoff',
    [codes.badGateway]: 'backoff',
    [codes.abnormal]: 'backoff',
    1005: 'backoff',
    1011: 'backoff',
    1013: 'backoff',
    1015: 'backoff',
    [codes.serviceRestart]: 'restart',
    1001: 'restart',
    1000: 'stop',
    1002: 'stop',
    1003: 'stop',
    1007: 'stop',
    1008: 'stop',
    1009: 'stop',
    1010: 'stop',
    3000: 'stop',
    4000: 'stop',
    4400: 'stop',
    4999: 'stop',
  };
  for (const [code, want] of Object.entries(table)) assert.equal(closeAction(Number(code)), want, `code ${code}`);
  assert.deepEqual(
    [codes.authRequired, codes.tokenExpired, codes.legacyBlocked, codes.rateLimited, codes.badGateway, codes.serviceRestart],
    [4001, 4002, 4003, 4029, 1014, 1012],
    "authgate's codes (SPEC Rejections)",
  );
});

// jwt builds an unsigned JWT with payload (the client never checks the
// signature).
function jwt(payload) {
  const b64url = (s) => Buffer.from(s, 'utf8').toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  return `${b64url('{"alg":"HS256","typ":"JWT"}')}.${b64url(JSON.stringify(payload))}.c2lnbmF0dXJl`;
}

test('jwtExp reads a JWT payload (base64url JSON)', () => {
  assert.equal(jwtExp(jwt({ sub: 'u', exp: 1893456000 })), 1893456000);
  // Payload bytes that make '-' and '_' in base64url, and UTF-8.
  const tricky = { sub: '\u00e9\u00e9>>>???~~~\u{1F600}', exp: 1700000000.5, pad: 'x' };
  const t = jwt(tricky);
  assert.match(t.split('.')[1], /[-_]/, 'the test token exercises base64url');
  assert.equal(jwtExp(t), 1700000000.5);
  for (const [what, tok] of [
    ['a UUID', '8f14e45f-ceea-467a-9575-6d4b4b3c7f21'],
    ['garbage', 'not-a-token'],
    ['empty', ''],
    ['two parts', 'a.b'],
    ['payload not JSON', 'eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig'],
    ['payload not base64url', 'a.b+c/d=.sig'],
    ['exp a string', jwt({ exp: '1893456000' })],
    ['no exp', jwt({ sub: 'u' })],
    ['payload null', jwt(null)],
    ['a number', 42],
    ['null', null],
    ['huge', 'a.' + 'b'.repeat(20000) + '.c'],
  ]) {
    assert.equal(jwtExp(tok), undefined, what);
  }
});

test('refreshAt: ahead of exp, not before half the remaining life', () => {
  const now = 1_000_000;
  assert.equal(refreshAt(now + 3600_000, now, 60_000), now + 3540_000, 'an hour-long token: a minute before');
  assert.equal(refreshAt(now + 30_000, now, 60_000), now + 15_000, 'shorter than the margin: half way');
  assert.equal(refreshAt(now, now, 60_000), undefined, 'expired now');
  assert.equal(refreshAt(now - 1, now, 60_000), undefined, 'expired');
  assert.equal(refreshAt(NaN, now, 60_000), undefined);
});
