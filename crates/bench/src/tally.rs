//! Counting what arrived: every payload names its sender, a sequence number
//! and its send time, so a receiver can tell a delivery from a duplicate or
//! a gap, and measure latency, without any coordination.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Microseconds since the Unix epoch (shared by every process on the box).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The text of a benchmark message: `sender:seq:sent_us:` padded with `x`
/// to `size` bytes.
pub fn payload(sender: u32, seq: u64, sent_us: u64, size: usize) -> String {
    let mut text = format!("{sender}:{seq}:{sent_us}:");
    if text.len() < size {
        text.extend(std::iter::repeat_n('x', size - text.len()));
    }
    text
}

/// Reads `(sender, seq, sent_us)` back from a payload.
pub fn parse(text: &str) -> Option<(u32, u64, u64)> {
    let mut parts = text.splitn(4, ':');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((sender, seq, sent))
}

/// One receiver's view (merged into the run's totals at the end).
#[derive(Debug, Clone)]
pub struct Tally {
    /// Delivery latency in microseconds.
    pub latency: Histogram<u64>,
    /// Unique deliveries.
    pub delivered: u64,
    /// Deliveries of a sequence number already seen (or arriving after a
    /// later one of the same sender: out of order counts as duplicate).
    pub duplicates: u64,
    /// Frames that were not benchmark messages of this run.
    pub foreign: u64,
    next: HashMap<u32, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            // 1 us .. 100 s at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 100_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds")),
            delivered: 0,
            duplicates: 0,
            foreign: 0,
            next: HashMap::new(),
        }
    }
}

impl Tally {
    /// Records one received payload at `now_us`.
    pub fn record(&mut self, text: &str, now_us: u64) {
        let Some((sender, seq, sent)) = parse(text) else {
            self.foreign += 1;
            return;
        };
        let next = self.next.entry(sender).or_insert(0);
        if seq < *next {
            self.duplicates += 1;
            return;
        }
        *next = seq + 1;
        self.delivered += 1;
        let _ = self.latency.record(now_us.saturating_sub(sent).max(1));
    }

    /// Adds another receiver's counts to these.
    pub fn merge(&mut self, other: &Tally) {
        let _ = self.latency.add(&other.latency);
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.foreign += other.foreign;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_at_the_requested_size() {
        let p = payload(7, 42, 1_000_000, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(parse(&p), Some((7, 42, 1_000_000)));
        assert_eq!(parse("hello"), None);
        let long = payload(1, 2, 3, 4);
        assert_eq!(parse(&long), Some((1, 2, 3)));
    }

    #[test]
    fn counts_deliveries_duplicates_and_gaps() {
        let mut t = Tally::default();
        for seq in [0, 1, 1, 2, 5, 3, 6] {
            t.record(&payload(1, seq, 100, 16), 150);
        }
        t.record(&payload(2, 0, 100, 16), 400);
        t.record("not ours", 0);
        // 0,1,2,5,6 from sender 1 and 0 from sender 2; the second 1 and the
        // late 3 count as duplicates.
        assert_eq!(t.delivered, 6);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.foreign, 1);
        assert_eq!(t.latency.len(), 6);
        assert_eq!(t.latency.max(), 300);
        assert_eq!(t.latency.value_at_quantile(0.5), 50);
    }

    #[test]
    fn merges() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        a.record(&payload(1, 0, 0, 8), 1_000);
        b.record(&payload(1, 0, 0, 8), 3_000);
        b.record(&payload(1, 0, 0, 8), 3_000);
        a.merge(&b);
        assert_eq!((a.delivered, a.duplicates), (2, 1));
        assert!(a.latency.max().abs_diff(3_000) <= 3, "3 significant digits");
        assert!((a.latency.value_at_quantile(0.5) as i64 - 1_000).abs() <= 1);
    }
}
