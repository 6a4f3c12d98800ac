//! A consumer process's heartbeat: every two seconds `switchboard archive`
//! and `switchboard hooks` write their state to the store's
//! `process_heartbeats` (records per second, the group's lag per
//! partition), where the admin console of any node reads it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_store::Store;
use tokio_util::sync::CancellationToken;

use crate::lag::{LagView, latest};

/// How often a process beats; the console counts one silent for three
/// beats as gone.
pub const EVERY: Duration = Duration::from_secs(2);

/// Who is beating.
#[derive(Debug, Clone)]
pub struct Beating {
    /// `archive` or `hooks`.
    pub kind: &'static str,
    /// The process's id (NODE_ID, else host and pid).
    pub process: String,
    /// Its consumer group.
    pub group: String,
}

/// Beats until `shutdown`.
pub fn keep_beating(
    store: Arc<dyn Store>,
    who: Beating,
    lag: LagView,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let started_at = switchboard_protocol::now_ms();
        let mut every = tokio::time::interval(EVERY);
        let mut before = (Instant::now(), crate::TAKEN.load(Ordering::Relaxed));
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let now = (Instant::now(), crate::TAKEN.load(Ordering::Relaxed));
            let seconds = now.0.duration_since(before.0).as_secs_f64().max(0.001);
            let per_s = (now.1 - before.1) as f64 / seconds;
            before = now;
            let lag = latest(&lag);
            let status = json!({
                "group": who.group,
                "started_at": started_at,
                "records": now.1,
                "records_per_s": (per_s * 10.0).round() / 10.0,
                "lag_total": lag.total,
                "lag": lag.partitions,
            })
            .to_string();
            match store.beat(who.kind, &who.process, &status).await {
                Ok(()) => failing = false,
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "the heartbeat could not be written; retrying");
                    }
                }
            }
        }
    });
}
