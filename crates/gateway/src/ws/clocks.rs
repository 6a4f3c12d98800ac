//! A `/ws` connection's clocks: when to flush what it wrote, when to ping
//! a silent client and when to give up on it, all on one timer.

use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use super::FLUSH_INTERVAL;
use crate::mailbox::Mailbox;

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
    /// `timer` fires when it is due. `mailbox` defers its wakes exactly
    /// while a flush is scheduled (see [`Mailbox::defer`]).
    pub fn flush_now(&mut self, timer: Pin<&mut Sleep>, mailbox: &Mailbox) -> bool {
        let now = Instant::now();
        let flush = now.duration_since(self.last_flush) >= FLUSH_INTERVAL;
        if flush {
            self.flush_due = None;
            self.last_flush = now;
        } else if self.flush_due.is_none() {
            let due = self.last_flush + FLUSH_INTERVAL;
            self.flush_due = Some(due);
            if due < timer.deadline().into_std() {
                timer.reset(due.into());
            }
        }
        mailbox.defer(self.flush_due.is_some());
        flush
    }

    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.pinged = false;
    }

    /// What is due now that the timer fired, re-arming it for what comes
    /// next; `expires_at` is when the connection's token runs out (Unix
    /// seconds), as refreshes moved it. A flush due ends `mailbox`'s
    /// deferral: what it holds goes out in that flush.
    pub fn fired(
        &mut self,
        timer: Pin<&mut Sleep>,
        expires_at: Option<u64>,
        mailbox: &Mailbox,
    ) -> Due {
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
        mailbox.defer(self.flush_due.is_some());
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mailbox::reply;
    use std::task::{Context, Poll, Wake, Waker};

    struct Flag(std::sync::atomic::AtomicBool);

    impl Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Whether a push into `mailbox` wakes its (registered) task.
    fn push_wakes(mailbox: &Mailbox) -> bool {
        let flag = std::sync::Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        while mailbox.pop().is_some() {}
        assert_eq!(
            mailbox.poll_ready(&mut Context::from_waker(&waker)),
            Poll::Pending
        );
        mailbox.push(reply("x".into()));
        flag.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn pushes_are_deferred_exactly_while_a_flush_is_scheduled() {
        let mailbox = Mailbox::new(64);
        let mut clocks = Clocks::new(&crate::GatewayConfig::default());
        let timer = tokio::time::sleep(Duration::from_secs(25));
        tokio::pin!(timer);
        // Batches fed 0 to 12 ms apart: some flush at once, the others
        // wait for the timer. Whichever it was, pushes wake exactly when no
        // flush is scheduled (a deferral left on after a flush made at
        // once would hold what comes next until the queue fills).
        let (mut now, mut later) = (0, 0);
        for i in 0..60u64 {
            std::thread::sleep(Duration::from_millis(i % 5 * 3));
            let flushed = clocks.flush_now(timer.as_mut(), &mailbox);
            assert_eq!(push_wakes(&mailbox), flushed, "batch {i}");
            if flushed {
                now += 1
            } else {
                later += 1
            }
            if i % 10 == 9 {
                // The timer's turn: a due flush ends the deferral.
                std::thread::sleep(FLUSH_INTERVAL);
                let due = clocks.fired(timer.as_mut(), None, &mailbox);
                assert!(push_wakes(&mailbox), "after the timer, batch {i}");
                assert_eq!(due.flush, !flushed, "batch {i}");
            }
        }
        assert!(
            now > 0 && later > 0,
            "both kinds of batch: {now} at once, {later} later"
        );
    }
}
