//! The listener under abuse, on a real node: handshakes trickled slowly,
//! sockets that send nothing or an HTTP/2 preface, bodies trickled a byte
//! at a time, and more sockets than an address or the node may hold.

mod common;

use std::time::{Duration, Instant};

use common::Node;
use switchboard_gateway::GatewayConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(config: GatewayConfig) -> Node {
    Node::start("sqlite::memory:", config).await
}

#[tokio::test]
async fn a_handshake_trickled_slowly_is_cut_at_the_timeout() {
    let node = start(GatewayConfig {
        handshake_timeout: Duration::from_millis(500),
        ..GatewayConfig::default()
    })
    .await;
    let mut tcp = TcpStream::connect(node.addr).await.unwrap();
    let started = Instant::now();
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header line a while, never the blank line that ends the head.
    let mut buf = [0u8; 1024];
    let closed = loop {
        tokio::select! {
            read = tcp.read(&mut buf) => break read,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if tcp.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    break Ok(0);
                }
            }
        }
    };
    let waited = started.elapsed();
    println!("the server ended the slow request with {closed:?}");
    assert!(
        waited >= Duration::from_millis(450),
        "cut too early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "not cut: {waited:?}");
    println!("slow handshake cut after {waited:?}");
    // A well-behaved client still gets in.
    assert!(common::open_ws(node.addr, "/ws", &[]).await.is_ok());
    node.stop().await;
}

/// Whether the server closed `tcp` (EOF or reset) within `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn silent_sockets_and_http2_prefaces_are_cut_at_the_handshake_deadline() {
    let node = start(GatewayConfig {
        handshake_timeout: Duration::from_millis(500),
        ..GatewayConfig::default()
    })
    .await;
    let started = Instant::now();
    let mut sockets = Vec::new();
    for i in 0..30 {
        let mut tcp = TcpStream::connect(node.addr).await.unwrap();
        match i % 3 {
            // Nothing at all.
            0 => {}
            // The first bytes of an HTTP/2 preface.
            1 => tcp.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(),
            // A whole preface and SETTINGS: h2c with prior knowledge.
            _ => tcp
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                .await
                .unwrap(),
        }
        sockets.push(tcp);
    }
    for (i, tcp) in sockets.iter_mut().enumerate() {
        assert!(
            closed_within(tcp, Duration::from_secs(3)).await,
            "socket {i} (kind {}) still open after {:?}",
            i % 3,
            started.elapsed()
        );
    }
    println!(
        "30 silent or HTTP/2 sockets all closed after {:?}",
        started.elapsed()
    );
    // A keep-alive connection idle between requests is cut the same way.
    let mut idle = TcpStream::connect(node.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await);
    node.stop().await;
}

#[tokio::test]
async fn a_request_body_trickled_slowly_is_cut() {
    let node = start(GatewayConfig {
        handshake_timeout: Duration::from_millis(500),
        ..GatewayConfig::default()
    })
    .await;
    let mut tcp = TcpStream::connect(node.addr).await.unwrap();
    tcp.write_all(
        b"POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n{\"te",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut answer = Vec::new();
    let closed = loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => break true,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if started.elapsed() > Duration::from_secs(5) {
                    break false;
                }
                if tcp.write_all(b"x").await.is_err() {
                    break true;
                }
            }
        }
    };
    println!(
        "a trickled body was cut after {:?}: {:?}",
        started.elapsed(),
        String::from_utf8_lossy(&answer).lines().next()
    );
    assert!(closed, "the slow body was not cut");
    assert!(started.elapsed() < Duration::from_secs(3));
    node.stop().await;
}

#[tokio::test]
async fn http_connections_are_capped_per_address_and_the_node_keeps_serving_others() {
    let node = start(GatewayConfig {
        http_connections_per_ip: 10,
        max_http_connections: 50,
        ..GatewayConfig::default()
    })
    .await;
    // Fifteen silent sockets from 127.0.0.1: ten are held (until their
    // deadline), five are closed at once.
    let mut held = Vec::new();
    for _ in 0..15 {
        held.push(TcpStream::connect(node.addr).await.unwrap());
    }
    let mut closed_at_once = 0;
    for tcp in &mut held {
        closed_at_once += usize::from(closed_within(tcp, Duration::from_millis(200)).await);
    }
    assert_eq!(closed_at_once, 5);
    // Another address is served meanwhile.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut tcp = other.connect(node.addr).await.unwrap();
    tcp.write_all(b"GET /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let stats: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        stats["http_connections"], 11,
        "every held socket is counted"
    );
    node.stop().await;
}
