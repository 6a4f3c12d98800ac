//! The subscriber in a Redis Cluster: sharded Pub/Sub (`SSUBSCRIBE`), so a
//! room's messages travel through its own shard only.
//!
//! One cluster connection with RESP3 pushes: the client keeps a connection
//! per master and sends each room's `SSUBSCRIBE` to the master of its slot,
//! so a node holds subscriptions only on the shards of the rooms it hosts.
//! Messages are decoded as they arrive and put in the node's inbox (no
//! queue in between). Interest changes are applied in order, one command
//! per slot. When the watcher sees the slot map change (a failover, a slot
//! migration), the subscriber makes a new connection and subscribes every
//! room it still wants on the new owners; a subscription the server drops
//! (its slot moved away) is taken again; a shard connection that was lost
//! is re-established by the client. After each of these the node catches
//! up on its rooms from their windows (`resubscriptions` moves).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::join_all;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::Inbox;
use crate::redis::{Command, Health, OP_TIMEOUT, net_change, wait_tracking};
use crate::subscriber::{BACKOFF_MAX, BACKOFF_MIN};
use crate::target::{Cluster, by_slot};

/// How often subscriptions that failed are tried again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// What the push handler tells the loop (rare events; messages go
/// straight to the inbox).
enum Event {
    /// The server dropped this subscription (its slot moved away).
    Dropped(String),
    /// A shard connection was lost; the client re-establishes it.
    Lost,
}

pub(crate) async fn subscribe_loop(
    cluster: Arc<Cluster>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    inbox: Inbox,
    node_id: String,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut topology = cluster.topology();
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let conn = tokio::select! {
            () = stop.cancelled() => return,
            c = connect(&cluster, inbox.clone(), node_id.clone(), events_tx) => c,
        };
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                health.subscriber_up.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "redis cluster subscriber cannot connect; retrying");
                if !wait_tracking(backoff, &mut commands, &mut wanted, &mut waiting, &stop).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        let generation = topology.borrow_and_update().generation;
        // Subscriptions not (yet) in effect: taken again every RETRY_EVERY.
        let mut retry: HashSet<String> = wanted.clone();
        retry = subscribe(&mut conn, retry).await;
        health.subscriber_up.store(true, Ordering::Relaxed);
        if !first {
            tracing::info!(
                rooms = wanted.len(),
                pending = retry.len(),
                "redis cluster subscriber re-subscribed"
            );
            health.resubscribed.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        if retry.is_empty() {
            for done in waiting.drain(..) {
                let _ = done.send(());
            }
        }
        let mut lost = false;
        let mut tick = tokio::time::interval(RETRY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                cmd = commands.recv() => {
                    let Some(first) = cmd else { return };
                    let (subscribe_now, unsubscribe_now, done) =
                        net_change(first, &mut commands, &mut wanted);
                    for channel in &unsubscribe_now {
                        retry.remove(channel);
                    }
                    retry.extend(subscribe_now);
                    retry = subscribe(&mut conn, retry).await;
                    unsubscribe(&mut conn, unsubscribe_now).await;
                    if retry.is_empty() {
                        for tx in done {
                            let _ = tx.send(());
                        }
                    } else {
                        waiting.extend(done);
                    }
                }
                event = events.recv() => match event {
                    Some(Event::Dropped(channel)) => {
                        if wanted.contains(&channel) {
                            retry.insert(channel);
                            lost = true;
                        }
                    }
                    Some(Event::Lost) => lost = true,
                    // The connection dropped its push handler: it is gone.
                    None => break,
                },
                changed = topology.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new slot map: subscribe again on a connection
                    // that routes by it.
                    if topology.borrow_and_update().generation != generation {
                        break;
                    }
                }
                _ = tick.tick() => {
                    if !retry.is_empty() {
                        retry = subscribe(&mut conn, retry).await;
                        if retry.is_empty() {
                            for done in waiting.drain(..) {
                                let _ = done.send(());
                            }
                        }
                    }
                    // Once the shards answer again, catch up on what was
                    // published while a subscription was away.
                    if lost && retry.is_empty() && topology.borrow().unreachable.is_empty() {
                        lost = false;
                        health.resubscribed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// A cluster connection whose pushes go to the inbox (messages) and to
/// `events` (everything else that matters).
async fn connect(
    cluster: &Cluster,
    inbox: Inbox,
    node_id: String,
    events: mpsc::UnboundedSender<Event>,
) -> redis::RedisResult<ClusterConnection> {
    let push = move |info: PushInfo| -> Result<(), std::convert::Infallible> {
        match info.kind {
            PushKind::SMessage => {
                if let [_, Value::BulkString(payload)] = info.data.as_slice() {
                    crate::subscriber::deliver(&inbox, &node_id, payload);
                }
            }
            PushKind::SUnsubscribe => {
                if let Some(Value::BulkString(channel)) = info.data.first() {
                    let channel = String::from_utf8_lossy(channel).into_owned();
                    let _ = events.send(Event::Dropped(channel));
                }
            }
            PushKind::Disconnection => {
                let _ = events.send(Event::Lost);
            }
            _ => {}
        }
        Ok(())
    };
    let client = Cluster::builder(cluster.seeds())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(push)
        .build()?;
    tokio::time::timeout(OP_TIMEOUT, client.get_async_connection())
        .await
        .map_err(|_| std::io::Error::other("connecting to the redis cluster timed out"))?
}

/// Subscribes `channels`, one command per slot, all at once; returns the
/// ones that failed.
async fn subscribe(conn: &mut ClusterConnection, channels: HashSet<String>) -> HashSet<String> {
    if channels.is_empty() {
        return channels;
    }
    let groups = by_slot(channels.into_iter().collect());
    let outcomes = join_all(groups.into_iter().map(|group| {
        let mut conn = conn.clone();
        async move {
            let result = tokio::time::timeout(OP_TIMEOUT, conn.ssubscribe(&group)).await;
            (group, matches!(result, Ok(Ok(()))))
        }
    }))
    .await;
    let mut failed = HashSet::new();
    for (group, ok) in outcomes {
        if !ok {
            failed.extend(group);
        }
    }
    if !failed.is_empty() {
        tracing::debug!(
            channels = failed.len(),
            "sharded subscriptions failed; retrying"
        );
    }
    failed
}

/// Unsubscribes `channels`, one command per slot. A failure is left alone:
/// a subscription the node no longer wants only brings messages it drops
/// (no local members), and a new connection does not take it again.
async fn unsubscribe(conn: &mut ClusterConnection, channels: Vec<String>) {
    if channels.is_empty() {
        return;
    }
    join_all(by_slot(channels).into_iter().map(|group| {
        let mut conn = conn.clone();
        async move {
            let _ = tokio::time::timeout(OP_TIMEOUT, conn.sunsubscribe(&group)).await;
        }
    }))
    .await;
}
