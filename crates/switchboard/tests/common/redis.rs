//! Redis for cluster tests: the shared server (the test script starts it)
//! for ordinary tests, and private `redis-server` processes that a test may
//! kill and restart without disturbing tests running beside it.

#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shared Redis.
pub fn shared_url() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` process of this test's own.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// A server keeping nothing on disk: a restart loses every key.
    pub fn start_on(port: u16) -> Self {
        Self::spawn(port, &["--appendonly", "no"])
    }

    /// A server with an append-only file in `dir`, written on every
    /// command: a restart on the same `dir` keeps every key.
    pub fn start_persistent(port: u16, dir: &std::path::Path) -> Self {
        let dir = dir.to_str().unwrap();
        Self::spawn(
            port,
            &[
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                dir,
            ],
        )
    }

    fn spawn(port: u16, persistence: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(persistence)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL): every connection drops.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Subscribers of `channel` right now (`PUBSUB NUMSUB`).
pub async fn numsub(url: &str, channel: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .unwrap();
    n
}

/// Waits until `channel` has exactly `n` subscribers; panics after 10 s.
pub async fn await_numsub(url: &str, channel: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = numsub(url, channel).await;
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} has {now} subscribers, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
