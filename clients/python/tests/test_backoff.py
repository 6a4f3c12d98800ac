"""The reconnect and retry delays."""

from __future__ import annotations

import random
import unittest

from switchboard_client.backoff import Backoff, backoff_delay


class BackoffDelayTest(unittest.TestCase):
    def test_bounds_per_attempt(self) -> None:
        for attempt in range(12):
            base = min(10.0, 0.25 * 2**attempt)
            low = backoff_delay(attempt, 0.25, 10.0, rand=lambda a, b: a)
            high = backoff_delay(attempt, 0.25, 10.0, rand=lambda a, b: b)
            self.assertAlmostEqual(low, base * 0.5)
            self.assertAlmostEqual(high, base)

    def test_jitter_stays_in_range_and_varies(self) -> None:
        rng = random.Random(7)
        samples = [backoff_delay(3, 0.25, 10.0, rand=rng.uniform) for _ in range(2000)]
        self.assertTrue(all(1.0 <= s <= 2.0 for s in samples), (min(samples), max(samples)))
        self.assertGreater(len(set(samples)), 1000)
        # Spread over the whole range, not bunched at one end.
        self.assertLess(min(samples), 1.05)
        self.assertGreater(max(samples), 1.95)

    def test_default_jitter_range(self) -> None:
        for _ in range(500):
            self.assertTrue(0.125 <= backoff_delay(0, 0.25, 10.0) <= 0.25)

    def test_cap(self) -> None:
        for attempt in (6, 10, 63, 64, 1000, 10**6):
            delay = backoff_delay(attempt, 0.25, 10.0, rand=lambda a, b: b)
            self.assertEqual(delay, 10.0)
            self.assertGreaterEqual(backoff_delay(attempt, 0.25, 10.0), 5.0)

    def test_negative_attempt(self) -> None:
        with self.assertRaises(ValueError):
            backoff_delay(-1, 0.25, 10.0)


class BackoffTest(unittest.TestCase):
    def test_grows_until_the_cap(self) -> None:
        b = Backoff(0.25, 10.0, 10.0, rand=lambda a, c: c)
        delays = [b.next_delay() for _ in range(8)]
        self.assertEqual(delays, [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0])
        self.assertEqual(b.attempt, 8)

    def test_resets_after_a_stable_connection(self) -> None:
        b = Backoff(0.25, 10.0, 10.0, rand=lambda a, c: c)
        for _ in range(5):
            b.next_delay()
        b.closed(3.0)  # a short-lived connection: keep backing off
        self.assertEqual(b.attempt, 5)
        self.assertEqual(b.next_delay(), 8.0)
        b.closed(10.0)  # stayed open stable_after seconds
        self.assertEqual(b.attempt, 0)
        self.assertEqual(b.next_delay(), 0.25)

    def test_reset(self) -> None:
        b = Backoff(1.0, 2.0, 1.0)
        b.next_delay()
        b.reset()
        self.assertEqual(b.attempt, 0)

    def test_invalid(self) -> None:
        with self.assertRaises(ValueError):
            Backoff(0.0, 1.0)
        with self.assertRaises(ValueError):
            Backoff(2.0, 1.0)


if __name__ == "__main__":
    unittest.main()
