//! Bounds on what clients may take: connections per node, new connections
//! per second per client address, and frames per second per connection.
//! Every refusal is counted in `switchboard_limit_refusals_total{limit=..}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use switchboard_protocol::{ErrorCode, FrameError};

use crate::error::ApiError;
use crate::peer::TrustedProxies;

/// A rate: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    fn quota(self, times: u32) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second.saturating_mul(times))?;
        let burst = NonZeroU32::new(self.burst.max(self.per_second).saturating_mul(times))?;
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

pub(crate) fn refused(limit: &'static str) {
    metrics::counter!("switchboard_limit_refusals_total", "limit" => limit).increment(1);
}

/// A count of open things under a cap, taken and given back atomically.
pub(crate) struct Slots {
    /// 0: no cap.
    max: usize,
    open: Arc<AtomicUsize>,
}

impl Slots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// One slot, unless all are taken. Atomic, so a burst cannot overshoot.
    pub fn take(&self) -> Option<ConnectionSlot> {
        let max = if self.max == 0 { usize::MAX } else { self.max };
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self.open.clone()))
    }

    /// Slots taken now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// The sockets an HTTP server holds before (or without) a WebSocket
/// upgrade: plain requests, Socket.IO polling, handshakes in progress. A
/// cap on all of them, and one per client address (the TCP peer; trusted
/// proxies are exempt, their clients are limited at upgrade).
pub(crate) struct HttpConnections {
    all: Slots,
    per_address: usize,
    by_address: ByAddress,
    trusted: TrustedProxies,
}

/// Open HTTP connections per client address (addresses with none are
/// removed, so the table holds only who is connected).
type ByAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One HTTP connection's place; given back when dropped.
pub(crate) struct HttpSlot {
    _all: ConnectionSlot,
    address: Option<(IpAddr, ByAddress)>,
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        if let Some((ip, by_address)) = self.address.take() {
            let mut counts = by_address.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = counts.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

impl HttpConnections {
    /// `max` and `per_address` 0 mean no cap.
    pub fn new(max: usize, per_address: usize, trusted: TrustedProxies) -> Self {
        Self {
            all: Slots::new(max),
            per_address,
            by_address: Arc::default(),
            trusted,
        }
    }

    /// A slot for a socket from `peer`, unless a cap is reached (counted).
    pub fn take(&self, peer: IpAddr) -> Option<HttpSlot> {
        let Some(all) = self.all.take() else {
            refused("max_http_connections");
            return None;
        };
        let key = crate::peer::rate_key(peer);
        let address = if self.per_address == 0 || self.trusted.trusts(peer) {
            None
        } else {
            let mut counts = self
                .by_address
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = counts.entry(key).or_insert(0);
            if *n >= self.per_address {
                drop(counts);
                refused("http_connections_per_ip");
                return None;
            }
            *n += 1;
            Some((key, self.by_address.clone()))
        };
        Some(HttpSlot { _all: all, address })
    }

    /// HTTP connections open now.
    pub fn open(&self) -> usize {
        self.all.open()
    }
}

/// Admits new connections.
pub(crate) struct Admission {
    slots: Slots,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// One admitted connection (or socket); the count drops when it does.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// `max_connections` 0 means no cap; `per_ip` none means no rate.
    pub fn new(max_connections: usize, per_ip: Option<Rate>) -> Self {
        Self {
            slots: Slots::new(max_connections),
            per_ip: per_ip.and_then(|r| r.quota(1)).map(RateLimiter::keyed),
        }
    }

    /// Admits a connection from the address `key` (see
    /// `peer::Client::rate_key`), or says why not. Taking the slot is
    /// atomic, so a burst of connects cannot overshoot the cap.
    pub fn admit(&self, key: IpAddr) -> Result<ConnectionSlot, ApiError> {
        if let Some(limiter) = &self.per_ip
            && limiter.check_key(&key).is_err()
        {
            refused("connect_rate");
            return Err(ApiError::connecting_too_fast());
        }
        self.slots.take().ok_or_else(|| {
            refused("max_connections");
            ApiError::over_capacity()
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.slots.open()
    }

    /// Forgets addresses whose rate state has fully replenished, so the
    /// per-address table does not grow with every address ever seen.
    pub fn forget_idle_addresses(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// What to do with a frame from a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Over the send rate: answer `rate_limited`, keep the connection.
    Limited,
    /// Past ten times the rate: close with 1008.
    Disconnect,
}

/// A connection's frame budget: sends take from a bucket of `Rate`; every
/// frame takes from a bucket ten times larger, and emptying that one ends
/// the connection. (Std's monotonic clock: the limiters stay ~40 bytes each.)
pub(crate) struct FrameBudget {
    sends: Limiter,
    frames: Limiter,
}

type Limiter =
    RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

impl FrameBudget {
    /// `None` when the rate is 0 (unlimited).
    pub fn new(rate: Rate) -> Option<Box<Self>> {
        Some(Box::new(Self {
            sends: RateLimiter::direct_with_clock(rate.quota(1)?, MonotonicClock),
            frames: RateLimiter::direct_with_clock(rate.quota(10)?, MonotonicClock),
        }))
    }

    /// Takes one incoming frame, of any kind.
    pub fn frame(&self) -> Verdict {
        if self.frames.check().is_err() {
            refused("frame_rate");
            return Verdict::Disconnect;
        }
        Verdict::Allow
    }

    /// Takes one `send` from `budget` (no budget: unlimited); the
    /// `rate_limited` error when it is spent.
    pub fn check_send(budget: Option<&FrameBudget>) -> Result<(), FrameError> {
        match budget.map(FrameBudget::send) {
            Some(Verdict::Limited) => Err(FrameError::new(
                ErrorCode::RateLimited,
                "sending faster than the rate limit; this message was not accepted",
            )),
            _ => Ok(()),
        }
    }

    /// Takes one `send` (after [`FrameBudget::frame`]).
    pub fn send(&self) -> Verdict {
        if self.sends.check().is_err() {
            refused("send_rate");
            return Verdict::Limited;
        }
        Verdict::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_connections_exactly_and_frees_slots() {
        let a = Admission::new(2, None);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let one = a.admit(ip).unwrap();
        let _two = a.admit(ip).unwrap();
        assert_eq!(a.admit(ip).unwrap_err(), ApiError::over_capacity());
        drop(one);
        assert_eq!(a.open(), 1);
        assert!(a.admit(ip).is_ok());
    }

    #[test]
    fn admission_limits_each_address_on_its_own() {
        let a = Admission::new(
            0,
            Some(Rate {
                per_second: 1,
                burst: 3,
            }),
        );
        let (x, y) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let slots: Vec<_> = (0..3).map(|_| a.admit(x).unwrap()).collect();
        assert_eq!(a.admit(x).unwrap_err(), ApiError::connecting_too_fast());
        assert!(a.admit(y).is_ok(), "another address has its own budget");
        assert_eq!(slots.len(), 3);
    }

    #[test]
    fn budget_limits_then_disconnects() {
        let b = FrameBudget::new(Rate {
            per_second: 2,
            burst: 4,
        })
        .unwrap();
        let verdicts: Vec<_> = (0..60)
            .map(|_| match b.frame() {
                Verdict::Allow => b.send(),
                cut => cut,
            })
            .collect();
        assert!(
            verdicts[..4].iter().all(|v| *v == Verdict::Allow),
            "the burst passes"
        );
        assert_eq!(verdicts[4], Verdict::Limited);
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Allow).count(), 4);
        let first_cut = verdicts
            .iter()
            .position(|v| *v == Verdict::Disconnect)
            .unwrap();
        assert_eq!(first_cut, 40, "ten times the burst, then cut");
        assert!(
            FrameBudget::new(Rate {
                per_second: 0,
                burst: 0
            })
            .is_none()
        );
    }
}
