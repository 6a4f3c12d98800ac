// Reconnect and retry delays: exponential, with jitter, capped, and reset
// once a connection has proved stable.

/**
 * Exponential backoff with jitter: attempt n waits
 * `min(max, min * factor ** n) * (0.5 + random * 0.5)` ms, so a crowd of
 * clients cut at once spreads its returns instead of arriving together.
 */
export class Backoff {
  /**
   * @param {{ min?: number, max?: number, factor?: number, random?: () => number }} [options]
   */
  constructor({ min = 250, max = 10_000, factor = 2, random = Math.random } = {}) {
    if (!(min > 0) || !(max >= min) || !(factor >= 1)) throw new RangeError('backoff needs 0 < min <= max and factor >= 1');
    this.min = min;
    this.max = max;
    this.factor = factor;
    this.random = random;
    /** Attempts since the last reset. */
    this.attempt = 0;
  }

  /** The delay before the next attempt, in ms; counts the attempt. */
  next() {
    const base = Math.min(this.max, this.min * this.factor ** this.attempt);
    this.attempt++;
    return Math.round(base * (0.5 + this.random() * 0.5));
  }

  /** Starts over from the shortest delay (after a stable connection). */
  reset() {
    this.attempt = 0;
  }
}

/**
 * The delay before automatic retry `n` (1-based) of a request, in ms:
 * 100 to 200 ms for the first, doubling, at most 5 s.
 * @param {number} n
 */
export function retryDelay(n) {
  return Math.round(Math.min(5000, 200 * 2 ** (n - 1)) * (0.5 + Math.random() * 0.5));
}
