//! Smoke runs of every load-generator scenario against a node started
//! in-process: the tool's own accounting must add up (no figures asserted).

mod common;

use std::time::Duration;

use common::Node;
use switchboard_bench::{Options, Protocol, Scenario, run};

fn options(node: &Node, protocol: Protocol, scenario: Scenario) -> Options {
    Options {
        targets: vec![node.addr],
        protocol,
        scenario,
        connections: 20,
        senders: 4,
        rooms: 5,
        rate: 20.0,
        duration: Duration::from_millis(1500),
        payload: 64,
        pids: vec![std::process::id()],
        drain: Duration::from_secs(5),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_over_ws_and_socket_io_accounts_for_every_delivery() {
    let node = Node::memory().await;
    for protocol in [Protocol::Ws, Protocol::SocketIo] {
        let r = run(options(&node, protocol, Scenario::Broadcast))
            .await
            .unwrap();
        assert_eq!(r.connections, 20, "{protocol:?}");
        assert!(r.sent >= 4 * 20, "{protocol:?} sent {}", r.sent);
        assert_eq!(
            r.expected,
            r.sent * 20,
            "{protocol:?}: every member gets every message"
        );
        assert_eq!(
            (r.delivered, r.lost, r.duplicates),
            (r.expected, 0, 0),
            "{protocol:?}"
        );
        assert_eq!(r.latency_ms.count, r.delivered);
        assert!(
            r.latency_ms.p50 > 0.0
                && r.latency_ms.p50 <= r.latency_ms.p99
                && r.latency_ms.p99 <= r.latency_ms.max
        );
        assert_eq!(r.servers.len(), 1);
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_split_by_target() {
    let (a, b) = (Node::memory().await, Node::memory().await);
    let mut o = options(&a, Protocol::Ws, Scenario::Broadcast);
    // Two nodes that share no bus: each connection hears only the senders
    // on its own node (connections 0 and 2 on the first, 1 and 3 on the
    // second), and its deliveries count for its own target.
    o.targets = vec![a.addr, b.addr];
    let r = run(o).await.unwrap();
    assert_eq!(r.latency_by_target_ms.len(), 2);
    let counts: Vec<u64> = r.latency_by_target_ms.iter().map(|l| l.count).collect();
    assert_eq!(counts.iter().sum::<u64>(), r.delivered, "{counts:?}");
    assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");
    let one = run(options(&a, Protocol::Ws, Scenario::Broadcast))
        .await
        .unwrap();
    assert!(one.latency_by_target_ms.is_empty(), "one target, no split");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_scenario_counts_per_room() {
    let node = Node::memory().await;
    let r = run(options(&node, Protocol::Ws, Scenario::Rooms))
        .await
        .unwrap();
    // 20 connections in 5 rooms: every message reaches the 4 members of its room.
    assert_eq!(r.expected, r.sent * 4);
    assert_eq!((r.delivered, r.lost, r.duplicates), (r.expected, 0, 0));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_scenario_measures_acks() {
    let node = Node::memory().await;
    let mut o = options(&node, Protocol::Ws, Scenario::Ack);
    o.connections = 1;
    let r = run(o).await.unwrap();
    assert!(r.sent > 0);
    assert_eq!(r.latency_ms.count, r.sent, "one ack per send");
    assert_eq!(r.delivered, r.sent, "the sender receives its own messages");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_scenario_reports_memory_per_connection() {
    let node = Node::memory().await;
    let mut o = options(&node, Protocol::Ws, Scenario::Idle);
    o.duration = Duration::from_millis(500);
    let r = run(o).await.unwrap();
    assert_eq!(r.connections, 20);
    assert!(r.rss_kib_per_connection.is_some());
    node.stop().await;
}

#[tokio::test]
async fn refuses_what_it_cannot_do() {
    let node = Node::memory().await;
    assert!(
        run(options(&node, Protocol::SocketIo, Scenario::Rooms))
            .await
            .is_err()
    );
    assert!(
        run(Options {
            targets: vec![],
            ..Options::default()
        })
        .await
        .is_err()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_counts_the_connections_that_got_exactly_what_they_missed() {
    let node = Node::memory().await;
    let r = run(Options {
        missed: 30,
        ..options(&node, Protocol::Ws, Scenario::Recovery)
    })
    .await
    .unwrap();
    assert_eq!(r.recovered, Some(20), "{}", r.summary());
    assert_eq!((r.sent, r.expected, r.delivered, r.lost), (30, 600, 600, 0));
    assert_eq!(r.latency_ms.count, 20, "one join -> joined per connection");
    // Past RECOVERY_MAX (1,000 by default) nobody can be recovered, and the
    // tool says so.
    let r = run(Options {
        connections: 3,
        missed: 1_001,
        ..options(&node, Protocol::Ws, Scenario::Recovery)
    })
    .await
    .unwrap();
    assert_eq!((r.recovered, r.lost), (Some(0), 3 * 1_001));
    node.stop().await;
}
