//! A `/ws` connection's clocks: when to flush what it wrote, when to ping
//! a silent client and when to give up on it, all on one timer.

use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use super::FLUSH_INTERVAL;

/// What the timer asks for when it fires.
pub(super) struct Due {
    pub flush: bool,
    pub ping: bool,
    pub idle: bool,
    /// The token expires in this many ms: warn the client (once per expiry).
    pub expiring: Option<u64>,
    /// The token has expired (and was not refreshed).
    pub expired: bool,
}

/// When a connection last flushed and last heard its client, and what is
/// due next.
///
/// Write coalescing: a connection that has been quiet for FLUSH_INTERVAL
/// flushes at once (low latency when idle); a busy one gathers frames and
/// flushes at most once per FLUSH_INTERVAL, so a room at high rate costs
/// one syscall per connection per interval, not one per message.
///
/// Keepalive: a client silent for `ping_after` is pinged, and one silent
/// for `idle_after` (a half-open TCP connection, say) is closed. Hearing
/// anything counts; the clock is read per frame but the connection's one
/// timer is only re-armed when it fires.
pub(super) struct Clocks {
    last_flush: Instant,
    flush_due: Option<Instant>,
    last_heard: Instant,
    pinged: bool,
    pub ping_after: Duration,
    idle_after: Duration,
    /// How long before its token expires a client is warned.
    warn_before: Duration,
    /// The expiry (Unix seconds) the client was warned of.
    warned_for: u64,
}

/// Now, in Unix milliseconds.
impl Clocks {
    pub fn new(config: &crate::GatewayConfig) -> Self {
        let now = Instant::now();
        Self {
            last_flush: now - FLUSH_INTERVAL,
            flush_due: None,
            last_heard: now,
            pinged: false,
            ping_after: config.ping_interval,
            idle_after: config.idle_timeout,
            warn_before: config.token_warning,
            warned_for: 0,
        }
    }

    /// How long until the timer must first fire: a ping, or a token's
    /// warning, whichever comes first.
    pub fn first_wait(&self, expires_at: Option<u64>) -> Duration {
        let warn = expires_at.map(|at| crate::time_until(at).saturating_sub(self.warn_before));
        warn.map_or(self.ping_after, |w| w.min(self.ping_after))
    }

    /// Whether a batch just fed should be flushed now; if not, makes sure
    /// `timer` fires when it is due.
    pub fn flush_now(&mut self, timer: Pin<&mut Sleep>) -> bool {
        let now = Instant::now();
        if now.duration_since(self.last_flush) >= FLUSH_INTERVAL {
            self.flush_due = None;
            self.last_flush = now;
            return true;
        }
        if self.flush_due.is_none() {
            let due = self.last_flush + FLUSH_INTERVAL;
            self.flush_due = Some(due);
            if due < timer.deadline().into_std() {
                timer.reset(due.into());
            }
        }
        false
    }

    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.pinged = false;
    }

    /// What is due now that the timer fired, re-arming it for what comes
    /// next; `expires_at` is when the connection's token runs out (Unix
    /// seconds), as refreshes moved it.
    pub fn fired(&mut self, timer: Pin<&mut Sleep>, expires_at: Option<u64>) -> Due {
        let now = Instant::now();
        let left = expires_at.map(|at| (at, crate::time_until(at).as_millis() as u64));
        let expired = left.is_some_and(|(_, ms)| ms == 0);
        let mut expiring = None;
        let mut token_check = None;
        if let Some((at, ms)) = left
            && !expired
        {
            let warn_in = Duration::from_millis(ms).saturating_sub(self.warn_before);
            if warn_in.is_zero() && self.warned_for != at {
                self.warned_for = at;
                expiring = Some(ms);
            }
            // Next: the warning, or (once warned) the expiry itself.
            let wait = if self.warned_for == at {
                Duration::from_millis(ms)
            } else {
                warn_in
            };
            token_check = Some(now + wait);
        }
        let flush = self.flush_due.is_some_and(|due| now >= due);
        if flush {
            self.flush_due = None;
            self.last_flush = now;
        }
        let idle = now >= self.last_heard + self.idle_after;
        let ping = !idle && !self.pinged && now >= self.last_heard + self.ping_after;
        self.pinged |= ping;
        let check = self.last_heard
            + if self.pinged {
                self.idle_after
            } else {
                self.ping_after
            };
        let check = token_check.map_or(check, |t| t.min(check));
        timer.reset(self.flush_due.map_or(check, |due| due.min(check)).into());
        Due {
            flush,
            ping,
            idle,
            expiring,
            expired,
        }
    }
}
