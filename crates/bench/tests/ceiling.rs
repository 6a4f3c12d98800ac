//! The ceiling reference (`switchboard-ceiling`) speaks enough of `/ws` for
//! the load generator: a short broadcast and a rooms run against it account
//! for every delivery, and its probe prints its timings. No figures
//! asserted: it is a benchmark reference.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_bench::{Options, Protocol, Scenario, run};

struct Ceiling {
    child: Child,
    addr: SocketAddr,
}

impl Ceiling {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard-ceiling"))
            .env("PORT", port.to_string())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the reference did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr }
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_delivers_every_message_once_in_both_scenarios() {
    let ceiling = Ceiling::start();
    for scenario in [Scenario::Broadcast, Scenario::Rooms] {
        let r = run(Options {
            targets: vec![ceiling.addr],
            protocol: Protocol::Ws,
            scenario,
            connections: 40,
            senders: 4,
            rooms: 5,
            rate: 20.0,
            duration: Duration::from_millis(1500),
            pids: vec![ceiling.child.id()],
            drain: Duration::from_secs(3),
            ..Options::default()
        })
        .await
        .unwrap();
        assert!(r.sent > 0, "{scenario:?}");
        assert!(
            r.expected > r.sent,
            "{scenario:?}: each message to several members"
        );
        assert_eq!(
            (r.delivered, r.lost, r.duplicates),
            (r.expected, 0, 0),
            "{scenario:?}"
        );
        assert_eq!(r.servers.len(), 1, "{scenario:?}: its process is sampled");
        assert!(r.servers[0].rss_kib > 0, "{scenario:?}");
    }
}

#[test]
fn the_probe_prints_its_timings() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard-ceiling"))
        .arg("--probe")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["cpu_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["memory_ms"].as_f64().unwrap() > 0.0, "{v}");
}
