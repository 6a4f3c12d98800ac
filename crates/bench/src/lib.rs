//! `switchboard bench`: a load generator that drives switchboard and its
//! peers over the same wire, and reports what came back.
//!
//! Every payload carries its sender, a sequence number and its send time
//! ([`tally`]), so receivers count deliveries, duplicates and losses and
//! measure latency without coordination. Senders are open-loop: they keep
//! their schedule whatever the server does, so a saturated server shows up
//! as latency and loss instead of a slower offered rate.

mod proc;
mod recovery;
mod run;
pub mod tally;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

pub(crate) use run::finish;
pub use run::run;
pub use wire::Protocol;

/// What load to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// All connections in one room, `senders` of them sending `rate` msgs/s
    /// each (the original system's use case).
    Broadcast,
    /// Connections spread over `rooms` rooms, every connection sending
    /// `rate` msgs/s.
    Rooms,
    /// Open the connections, hold them, report server memory per connection.
    Idle,
    /// One connection sending `rate` msgs/s; latency is send -> ack.
    Ack,
    /// `connections` join and drop, `missed` messages are sent, and all
    /// come back at once with `since`; latency is join -> `joined`.
    Recovery,
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Servers, used round-robin.
    pub targets: Vec<SocketAddr>,
    pub protocol: Protocol,
    pub scenario: Scenario,
    pub connections: usize,
    pub senders: usize,
    pub rooms: usize,
    /// Messages per second per sending connection.
    pub rate: f64,
    pub duration: Duration,
    /// Payload size in bytes.
    pub payload: usize,
    /// Local addresses to connect from, round-robin (several 127.0.0.x
    /// addresses give more ephemeral ports).
    pub sources: Vec<IpAddr>,
    /// Server processes to sample (CPU%, RSS).
    pub pids: Vec<u32>,
    /// How long to wait for stragglers after the last send.
    pub drain: Duration,
    /// Connections opened at once at most.
    pub connect_concurrency: usize,
    /// Print a progress line every second (stderr).
    pub progress: bool,
    /// Messages the returning connections missed (recovery).
    pub missed: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            targets: vec![SocketAddr::from(([127, 0, 0, 1], 8000))],
            protocol: Protocol::Ws,
            scenario: Scenario::Broadcast,
            connections: 100,
            senders: 10,
            rooms: 10,
            rate: 10.0,
            duration: Duration::from_secs(10),
            payload: 64,
            sources: Vec::new(),
            pids: Vec::new(),
            drain: Duration::from_secs(3),
            connect_concurrency: 256,
            progress: false,
            missed: 1_000,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// CPU and memory of one sampled process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUse {
    pub pid: u32,
    /// Average CPU over the sending window, 100 = one core.
    pub cpu_percent: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub protocol: Protocol,
    pub connections: usize,
    pub connect_failures: usize,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub seconds: f64,
    pub deliveries_per_second: f64,
    /// Offered deliveries per second (sends scheduled x room members).
    pub offered_per_second: f64,
    pub latency_ms: Latency,
    /// With several targets: the delivery latency of the connections on
    /// each target, in `targets` order (connection `i` is on target
    /// `i % targets`; in `broadcast` the senders are the first
    /// connections), so a delivery within a node and one across nodes can
    /// be told apart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_by_target_ms: Vec<Latency>,
    /// For `idle`: server memory per connection, KiB (first pid).
    pub rss_kib_per_connection: Option<f64>,
    pub servers: Vec<ProcessUse>,
    /// This load generator's own CPU% over the sending window.
    pub client_cpu_percent: f64,
    /// For `recovery`: the connections answered `recovered: true` with
    /// exactly the missed messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<u64>,
}

impl Report {
    /// A human-readable summary.
    pub fn summary(&self) -> String {
        let l = &self.latency_ms;
        let mut s = format!(
            "{:?}/{:?}: {} connections ({} failed), sent {}, delivered {}/{} (lost {}, duplicates {}), {:.0} deliveries/s (offered {:.0}/s)\n\
             latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
            self.scenario,
            self.protocol,
            self.connections,
            self.connect_failures,
            self.sent,
            self.delivered,
            self.expected,
            self.lost,
            self.duplicates,
            self.deliveries_per_second,
            self.offered_per_second,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
        );
        for (i, l) in self.latency_by_target_ms.iter().enumerate() {
            s.push_str(&format!(
                "  on target {i}: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ({} deliveries)\n",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            ));
        }
        for p in &self.servers {
            s.push_str(&format!(
                "server pid {}: cpu {:.0}%, rss {} KiB (peak {} KiB)\n",
                p.pid, p.cpu_percent, p.rss_kib, p.peak_rss_kib
            ));
        }
        if let Some(n) = self.recovered {
            s.push_str(&format!(
                "recovered exactly: {n} of {} connections, all back in {:.2} s\n",
                self.connections + self.connect_failures,
                self.seconds
            ));
        }
        if let Some(k) = self.rss_kib_per_connection {
            s.push_str(&format!("server memory per connection: {k:.2} KiB\n"));
        }
        s.push_str(&format!(
            "load generator cpu {:.0}%",
            self.client_cpu_percent
        ));
        s
    }
}
