//! Counting what arrived: every payload names its sender, a sequence number
//! and its send time, so a receiver can tell a delivery from a duplicate or
//! a gap, and measure latency, without any coordination.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Microseconds since the Unix epoch (shared by every process on the box).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
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

/// A histogram of microseconds, 1 us .. 100 s at 3 significant digits
/// (~150 KB: one per run, not one per connection).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// Latency samples in microseconds as one connection records them: a push
/// per delivery. (A histogram per connection cost the load generator
/// seconds of CPU zeroing them at 10,000 connections, which showed up as
/// delivery latency.) Merged into one histogram when the run ends.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<u32>);

impl Samples {
    pub fn record(&mut self, micros: u64) {
        self.0.push(micros.clamp(1, u64::from(u32::MAX)) as u32);
    }

    /// Adds every sample to `into`.
    pub fn add_to(&self, into: &mut Histogram<u64>) {
        for &s in &self.0 {
            into.saturating_record(u64::from(s));
        }
    }
}

/// One receiver's view (merged into the run's totals at the end).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Delivery latencies.
    pub latency: Samples,
    /// Unique deliveries.
    pub delivered: u64,
    /// Deliveries of a sequence number already seen (or arriving after a
    /// later one of the same sender: out of order counts as duplicate).
    pub duplicates: u64,
    /// Frames that were not benchmark messages of this run.
    pub foreign: u64,
    next: HashMap<u32, u64>,
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
        self.latency.record(now_us.saturating_sub(sent));
    }
}

/// Every receiver's views together.
#[derive(Debug)]
pub struct Totals {
    pub latency: Histogram<u64>,
    pub delivered: u64,
    pub duplicates: u64,
    pub foreign: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            latency: histogram(),
            delivered: 0,
            duplicates: 0,
            foreign: 0,
        }
    }
}

impl Totals {
    /// Adds one receiver's counts and samples.
    pub fn merge(&mut self, one: &Tally) {
        one.latency.add_to(&mut self.latency);
        self.delivered += one.delivered;
        self.duplicates += one.duplicates;
        self.foreign += one.foreign;
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
        let mut one = Tally::default();
        for seq in [0, 1, 1, 2, 5, 3, 6] {
            one.record(&payload(1, seq, 100, 16), 150);
        }
        one.record(&payload(2, 0, 100, 16), 400);
        one.record("not ours", 0);
        one.record(&payload(2, 1, 100, 16), 60_000_100);
        let mut t = Totals::default();
        t.merge(&one);
        // 0,1,2,5,6 from sender 1 and 0,1 from sender 2; the second 1 and
        // the late 3 count as duplicates.
        assert_eq!(t.delivered, 7);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.foreign, 1);
        assert_eq!(t.latency.len(), 7);
        assert!(
            t.latency.max().abs_diff(60_000_000) <= 60_000,
            "a minute, at 3 digits"
        );
        assert_eq!(t.latency.value_at_quantile(0.5), 50);
    }

    #[test]
    fn merges() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        a.record(&payload(1, 0, 0, 8), 1_000);
        b.record(&payload(1, 0, 0, 8), 3_000);
        b.record(&payload(1, 0, 0, 8), 3_000);
        let mut t = Totals::default();
        t.merge(&a);
        t.merge(&b);
        let a = t;
        assert_eq!((a.delivered, a.duplicates), (2, 1));
        assert!(a.latency.max().abs_diff(3_000) <= 3, "3 significant digits");
        assert!((a.latency.value_at_quantile(0.5) as i64 - 1_000).abs() <= 1);
    }
}
