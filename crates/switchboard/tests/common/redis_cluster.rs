//! A Redis Cluster of a test's own: three masters and three replicas as
//! `redis-server --cluster-enabled yes` processes on free ports, created
//! with `redis-cli --cluster create`, so a test may kill a master or move
//! slots without disturbing tests running beside it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;

pub struct PrivateCluster {
    pub ports: Vec<u16>,
    bus_ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: PathBuf,
}

/// Starts one cluster node keeping its cluster state in `dir`.
fn spawn(port: u16, bus: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--cluster-port",
            &bus.to_string(),
        ])
        .args(["--bind", "127.0.0.1", "--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args([
            "--cluster-node-timeout",
            "1000",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--dir", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/test installs it)")
}

impl PrivateCluster {
    /// Starts six nodes and creates the cluster; returns once every live
    /// node says `cluster_state:ok`.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(super::unique("redis-cluster"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ports = Vec::new();
        let mut bus_ports = Vec::new();
        let mut children = Vec::new();
        for _ in 0..6 {
            let (port, bus) = (free_port(), free_port());
            children.push(Some(spawn(port, bus, &dir)));
            ports.push(port);
            bus_ports.push(bus);
        }
        let cluster = Self {
            ports,
            bus_ports,
            children,
            dir,
        };
        for &port in &cluster.ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "redis-server did not start on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.await_ok();
        cluster
    }

    /// The `REDIS_URL` naming the cluster by two of its nodes.
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.ports[0], self.ports[1]
        )
    }

    /// Runs `redis-cli -p port args...` and returns its output.
    pub fn cli(port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn live_port(&self) -> u16 {
        self.ports
            .iter()
            .zip(&self.children)
            .find(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .unwrap()
    }

    /// Waits until every live node says `cluster_state:ok` and agrees on
    /// who serves every slot, and every replica is in sync with its master.
    pub fn await_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let live: Vec<u16> = self
                .ports
                .iter()
                .zip(&self.children)
                .filter(|(_, c)| c.is_some())
                .map(|(p, _)| *p)
                .collect();
            let ok = live
                .iter()
                .all(|&p| Self::cli(p, &["cluster", "info"]).contains("cluster_state:ok"));
            let maps: Vec<Vec<(u16, u16)>> = live.iter().map(|&p| self.slot_owners(p)).collect();
            // A replica that has not synced with its master yet could not
            // take over from it.
            let synced = live.iter().all(|&p| {
                let info = Self::cli(p, &["info", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            });
            if ok && synced && maps.windows(2).all(|w| w[0] == w[1]) && !maps[0].is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not settle");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// (first slot, master port) of every slot range, as node `port` sees it.
    fn slot_owners(&self, port: u16) -> Vec<(u16, u16)> {
        let Ok(mut conn) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        else {
            return Vec::new();
        };
        let Ok(redis::Value::Array(ranges)) = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn)
        else {
            return Vec::new();
        };
        let mut owners: Vec<(u16, u16)> = ranges
            .iter()
            .filter_map(|range| match range {
                redis::Value::Array(f) => match f.as_slice() {
                    [redis::Value::Int(start), _, redis::Value::Array(master), ..] => {
                        match master.get(1) {
                            Some(redis::Value::Int(p)) => Some((*start as u16, *p as u16)),
                            _ => None,
                        }
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        owners.sort_unstable();
        owners
    }

    /// The port of the master serving `key`'s slot now.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.live_port();
        let slot: u16 = Self::cli(port, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        let owners = self.slot_owners(port);
        owners
            .iter()
            .rev()
            .find(|(start, _)| *start <= slot)
            .map(|(_, master)| *master)
            .unwrap()
    }

    /// The master ports, as node `port` sees them.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<u16> = self
            .slot_owners(self.live_port())
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        masters.sort_unstable();
        masters.dedup();
        masters
    }

    /// A node's id in the cluster.
    pub fn node_id(port: u16) -> String {
        Self::cli(port, &["cluster", "myid"]).trim().to_owned()
    }

    /// Subscribers of shard channel `channel` on the node at `port`
    /// (`PUBSUB SHARDNUMSUB`).
    pub fn shard_numsub(port: u16, channel: &str) -> i64 {
        let out = Self::cli(port, &["pubsub", "shardnumsub", channel]);
        out.lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(-1)
    }

    /// Kills the node at `port` at once (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed node at `port` again, with the cluster state it
    /// had (and no data): it rejoins as a replica of whoever took over.
    pub fn restart(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        assert!(self.children[i].is_none(), "{port} is running");
        self.children[i] = Some(spawn(port, self.bus_ports[i], &self.dir));
    }

    /// Moves `slots` slots from the master at `from` to the master at `to`
    /// with `redis-cli --cluster reshard` (blocking: run it beside the load).
    pub fn reshard(from: u16, to: u16, slots: u32) -> std::process::Output {
        Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &Self::node_id(from)])
            .args(["--cluster-to", &Self::node_id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .unwrap()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
