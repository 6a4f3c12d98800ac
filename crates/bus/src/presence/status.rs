//! Each node's status for the operators (the admin console of any node):
//! a hash `{prefix}:nstatus` of node -> its latest status, a JSON document
//! with its `at` (Unix ms). Written by each node every second; a reader
//! drops what is older than it asks for, and a node removes its own on a
//! clean stop.

use std::collections::HashMap;

use super::{Inner, now_ms};
use crate::BusError;

impl Inner {
    /// The nodes' statuses: a hash of node -> JSON with its `at`.
    pub(super) fn statuses(&self) -> String {
        format!("{}:nstatus", self.prefix)
    }

    /// Writes this node's status.
    pub(super) async fn report(&self, status: String) -> Result<(), BusError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.statuses()).arg(&self.node).arg(status);
        self.read::<i64>(&cmd).await.map(|_| ())
    }

    /// Every node's status no older than `max_age_ms`; older ones are
    /// removed.
    pub(super) async fn reports(&self, max_age_ms: i64) -> Result<Vec<String>, BusError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.statuses());
        let all: HashMap<String, String> = self.read(&cmd).await?;
        let oldest = now_ms() - max_age_ms;
        let mut fresh = Vec::with_capacity(all.len());
        let mut stale = Vec::new();
        for (node, status) in all {
            let at = serde_json::from_str::<serde_json::Value>(&status)
                .ok()
                .and_then(|v| v["at"].as_i64())
                .unwrap_or(0);
            if at >= oldest {
                fresh.push(status);
            } else {
                stale.push(node);
            }
        }
        if !stale.is_empty() {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(self.statuses()).arg(stale);
            self.read::<i64>(&cmd).await?;
        }
        Ok(fresh)
    }
}
