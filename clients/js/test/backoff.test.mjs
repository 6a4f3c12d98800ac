// Reconnect delays: exponential with jitter in [0.5, 1] of the step, capped,
// and back to the shortest after a reset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../switchboard.js';
import { retryDelay } from '../backoff.js';

/** A random source that returns `values` in turn, then repeats the last. */
function scripted(values) {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)];
}

test('delays double from min, each within [0.5, 1] of min(max, min * 2^n)', () => {
  for (const r of [0, 0.25, 0.5, 0.999999]) {
    const b = new Backoff({ min: 100, max: 3000, random: () => r });
    for (let n = 0; n < 12; n++) {
      const step = Math.min(3000, 100 * 2 ** n);
      const d = b.next();
      assert.ok(d >= step * 0.5 && d <= step, `attempt ${n} with random ${r}: ${d} outside [${step / 2}, ${step}]`);
      assert.equal(d, Math.round(step * (0.5 + r * 0.5)));
    }
  }
});

test('the jitter follows the injected random source', () => {
  const b = new Backoff({ min: 200, max: 10_000, random: scripted([0, 1, 0.5]) });
  assert.equal(b.next(), 100);   // 200 * 0.5
  assert.equal(b.next(), 400);   // 400 * 1
  assert.equal(b.next(), 600);   // 800 * 0.75
  assert.equal(b.attempt, 3);
});

test('the cap is reached and held, however many attempts', () => {
  const b = new Backoff({ min: 250, max: 10_000, random: () => 1 });
  const delays = Array.from({ length: 2000 }, () => b.next());
  assert.deepEqual(delays.slice(0, 7), [250, 500, 1000, 2000, 4000, 8000, 10_000]);
  assert.ok(delays.slice(6).every((d) => d === 10_000), 'held at max');
  assert.ok(delays.every((d) => Number.isFinite(d)), 'no overflow to Infinity or NaN');
  const low = new Backoff({ min: 250, max: 10_000, random: () => 0 });
  for (let i = 0; i < 50; i++) low.next();
  assert.equal(low.next(), 5000, 'the shortest jittered delay at the cap is max / 2');
});

test('reset starts over from the shortest delay', () => {
  const b = new Backoff({ min: 100, max: 1000, random: () => 1 });
  for (let i = 0; i < 6; i++) b.next();
  assert.equal(b.next(), 1000);
  b.reset();
  assert.equal(b.attempt, 0);
  assert.deepEqual([b.next(), b.next(), b.next()], [100, 200, 400]);
});

test('a factor other than 2 and the defaults', () => {
  const b = new Backoff({ min: 10, max: 1000, factor: 3, random: () => 1 });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()], [10, 30, 90, 270, 810, 1000]);
  const d = new Backoff();
  const first = d.next();
  assert.ok(first >= 125 && first <= 250, `default first delay ${first}`);
});

test('nonsense bounds are refused', () => {
  assert.throws(() => new Backoff({ min: 0 }), RangeError);
  assert.throws(() => new Backoff({ min: 500, max: 100 }), RangeError);
  assert.throws(() => new Backoff({ factor: 0.5 }), RangeError);
  assert.throws(() => new Backoff({ min: NaN }), RangeError);
});

test('request retries wait 100-200 ms first, doubling, at most 5 s', () => {
  for (let i = 0; i < 200; i++) {
    const first = retryDelay(1);
    assert.ok(first >= 100 && first <= 200, `first retry ${first}`);
    const late = retryDelay(20);
    assert.ok(late >= 2500 && late <= 5000, `late retry ${late}`);
  }
});
