//! The subscriber: one dedicated Pub/Sub connection per node, applying
//! subscribe/unsubscribe commands in order, reconnecting with backoff and
//! re-subscribing every room still wanted, and moving what arrives into the
//! node's inbox.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::redis::{Command, Health, OP_TIMEOUT, net_change, wait_tracking};
use crate::{Inbound, Inbox, envelope};

/// How often the idle subscriber connection is pinged.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds for the subscribers (one Redis, a cluster).
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(crate) async fn subscribe_loop(
    client: redis::Client,
    mut commands: mpsc::UnboundedReceiver<Command>,
    inbox: Inbox,
    node_id: String,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut backoff = BACKOFF_MIN;
    let mut announced_down = false;
    loop {
        // Connect, re-subscribing every room still wanted.
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            c = tokio::time::timeout(OP_TIMEOUT, async {
                let mut pubsub = client.get_async_pubsub().await?;
                if !wanted.is_empty() {
                    pubsub.subscribe(wanted.iter().collect::<Vec<_>>()).await?;
                }
                Ok::<_, redis::RedisError>(pubsub)
            }) => c,
        };
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            outcome => {
                health.subscriber_up.store(false, Ordering::Relaxed);
                if !announced_down {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(error = %error, "redis subscriber cannot connect; retrying with backoff");
                    announced_down = true;
                }
                if !wait_tracking(backoff, &mut commands, &mut wanted, &mut waiting, &stop).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        if announced_down {
            tracing::info!(
                rooms = wanted.len(),
                "redis subscriber reconnected and re-subscribed"
            );
            health.resubscribed.fetch_add(1, Ordering::Relaxed);
        }
        backoff = BACKOFF_MIN;
        health.subscriber_up.store(true, Ordering::Relaxed);
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        let (mut sink, mut stream) = pubsub.split();
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        let lost = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                cmd = commands.recv() => {
                    let Some(first) = cmd else { return };
                    // Take everything already queued and apply only the net
                    // change, in one SUBSCRIBE and one UNSUBSCRIBE: join/leave
                    // churn costs a round trip per batch, not per command.
                    let (subscribe, unsubscribe, done) =
                        net_change(first, &mut commands, &mut wanted);
                    let applied = async {
                        if !subscribe.is_empty() {
                            sink.subscribe(&subscribe).await?;
                        }
                        if !unsubscribe.is_empty() {
                            sink.unsubscribe(&unsubscribe).await?;
                        }
                        Ok::<_, redis::RedisError>(())
                    };
                    match tokio::time::timeout(OP_TIMEOUT, applied).await {
                        Ok(Ok(())) => {
                            for tx in done {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Err(e)) => {
                            waiting.extend(done);
                            break e.to_string();
                        }
                        Err(_) => {
                            waiting.extend(done);
                            break "subscribe timed out".to_owned();
                        }
                    }
                }
                msg = stream.next() => match msg {
                    None => break "connection closed".to_owned(),
                    Some(msg) => deliver(&inbox, &node_id, msg.get_payload_bytes()),
                },
                // A half-open connection shows no error by itself: ping it.
                _ = keepalive.tick() => {
                    match tokio::time::timeout(OP_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break format!("keepalive failed: {e}"),
                        Err(_) => break "keepalive timed out".to_owned(),
                    }
                }
            }
        };
        health.subscriber_up.store(false, Ordering::Relaxed);
        tracing::warn!(error = %lost, "redis subscriber lost its connection; reconnecting");
        announced_down = true;
    }
}

/// Puts a decoded event into the inbox, counting what is dropped: the
/// inbox is full, or the payload did not decode (`None`).
fn forward(inbox: &Inbox, decoded: Option<Inbound>) {
    let reason = match decoded.map(|inbound| inbox.try_send(inbound).is_ok()) {
        Some(true) => return,
        Some(false) => "inbox_full",
        None => "undecodable",
    };
    metrics::counter!("switchboard_bus_dropped_total", "reason" => reason).increment(1);
}

/// Puts another node's message into the inbox; drops (and counts) when the
/// local fan-out is behind, so the pipe never grows without bound (the
/// receiving node fills such a gap from the room's window).
pub(crate) fn deliver(inbox: &Inbox, node_id: &str, payload: &[u8]) {
    if payload.starts_with(b"D ") {
        match crate::redis::control::decode_disconnect(payload) {
            Some((origin, _)) if origin == node_id => {}
            decoded => forward(inbox, decoded.map(|(_, name)| Inbound::Disconnect(name))),
        }
        return;
    }
    if payload.starts_with(b"P ") {
        // Presence events come to every node, the publishing one too.
        forward(
            inbox,
            crate::presence::decode(payload).map(Inbound::Presence),
        );
        return;
    }
    match envelope::unframe(payload) {
        Ok((origin, _)) if origin == node_id => {}
        Ok((_, message)) => {
            metrics::counter!("switchboard_bus_received_total").increment(1);
            if inbox.try_send(Inbound::Message(message)).is_err() {
                metrics::counter!("switchboard_bus_dropped_total", "reason" => "inbox_full")
                    .increment(1);
                static DROPS: AtomicU64 = AtomicU64::new(0);
                if let Some(n) = crate::sampled(&DROPS) {
                    tracing::warn!(
                        dropped_so_far = n,
                        "bus inbox full: messages from other nodes dropped"
                    );
                }
            }
        }
        Err(e) => {
            metrics::counter!("switchboard_bus_dropped_total", "reason" => "undecodable")
                .increment(1);
            static BAD: AtomicU64 = AtomicU64::new(0);
            if let Some(n) = crate::sampled(&BAD) {
                tracing::warn!(error = %e, undecodable_so_far = n, "undecodable message on the bus");
            }
        }
    }
}
