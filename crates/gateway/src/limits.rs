//! Bounds on what clients may take: connections per node, new connections
//! per second per client address, and frames per second per connection.
//! Every refusal is counted in `switchboard_limit_refusals_total{limit=..}`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use axum::response::Response;
use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use switchboard_protocol::{ErrorCode, FrameError};

use crate::http::json_error;

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

fn refused(limit: &'static str) {
    metrics::counter!("switchboard_limit_refusals_total", "limit" => limit).increment(1);
}

/// Admits new connections.
pub(crate) struct Admission {
    max_connections: usize,
    open: Arc<AtomicUsize>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The node holds `MAX_CONNECTIONS` already.
    Full,
    /// This address opened too many connections in the last second.
    TooFast,
}

impl Refusal {
    /// The HTTP answer to a refused upgrade.
    pub fn response(self) -> Response {
        match self {
            Refusal::Full => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "over_capacity",
                "this node holds as many connections as it may; try another node or later",
            ),
            Refusal::TooFast => json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many new connections from this address; slow down",
            ),
        }
    }

    /// The message of a refused Socket.IO connect.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Full => "over_capacity: this node holds as many connections as it may",
            Refusal::TooFast => "rate_limited: too many new connections from this address",
        }
    }
}

/// One admitted connection; the node's count drops when it does.
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
            max_connections,
            open: Arc::default(),
            per_ip: per_ip.and_then(|r| r.quota(1)).map(RateLimiter::keyed),
        }
    }

    /// Admits a connection from `ip`, or says why not. Taking the slot is
    /// atomic, so a burst of connects cannot overshoot the cap.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        if let Some(limiter) = &self.per_ip
            && limiter.check_key(&ip).is_err()
        {
            refused("connect_rate");
            return Err(Refusal::TooFast);
        }
        let max = if self.max_connections == 0 {
            usize::MAX
        } else {
            self.max_connections
        };
        match self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            }) {
            Ok(_) => Ok(ConnectionSlot(self.open.clone())),
            Err(_) => {
                refused("max_connections");
                Err(Refusal::Full)
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
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
        assert_eq!(a.admit(ip).unwrap_err(), Refusal::Full);
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
        assert_eq!(a.admit(x).unwrap_err(), Refusal::TooFast);
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
