//! The durable pipeline's real services for tests: the shared tansu broker
//! and PostgreSQL (the test script starts both), private tansu brokers a test
//! may kill, archivers as real `switchboard archive` processes, and a TCP
//! proxy that can cut a client off from PostgreSQL; and nodes journaling to
//! Kafka, each test with its own topic, group and schema.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::Row;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use serde_json::{Value, json};
use switchboard::NodeOptions;
use switchboard_bus::RedisOptions;
use switchboard_gateway::GatewayConfig;
use switchboard_journal::KafkaOptions;

use super::redis::{free_port, shared_url};
use super::{Node, unique};

pub fn kafka() -> String {
    std::env::var("SWITCHBOARD_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn pg_base() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema; returns its name and a URL whose search_path is it.
pub async fn pg_schema() -> (String, String) {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&pg_base()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = with_schema(&pg_base(), &schema);
    (schema, url)
}

pub fn with_schema(base: &str, schema: &str) -> String {
    format!("{base}?options=-c%20search_path%3D{schema}")
}

/// `(rows, distinct ids)` in the schema's messages table.
pub async fn count(schema: &str) -> (i64, i64) {
    let pool = sqlx::PgPool::connect(&pg_base()).await.unwrap();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT id) FROM {schema}.messages"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (row.get(0), row.get(1))
}

/// Every stored row: (id, room, sender, body, partition, offset).
pub async fn rows(schema: &str) -> Vec<(uuid::Uuid, String, String, String, i32, i64)> {
    let pool = sqlx::PgPool::connect(&pg_base()).await.unwrap();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, room, sender, body, kafka_partition, kafka_offset FROM {schema}.messages \
         ORDER BY kafka_partition, kafka_offset"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

/// Waits until the table holds `n` rows (or panics after `within`).
pub async fn await_rows(schema: &str, n: i64, within: Duration) -> (i64, i64) {
    let deadline = Instant::now() + within;
    loop {
        let c = count(schema).await;
        if c.0 >= n {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} rows after {within:?}",
            c.0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tansu broker of this test's own, with its log in a SQLite file that
/// survives a restart.
pub struct PrivateTansu {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateTansu {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        let mut t = Self {
            port: free_port(),
            dir,
            child: None,
        };
        t.restart();
        t
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://broker.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu must be installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Kills the broker at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateTansu {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `switchboard archive` process.
pub struct Archiver {
    child: Child,
}

impl Archiver {
    pub fn start(brokers: &str, topic: &str, group: &str, database_url: &str) -> Self {
        Self::start_with(brokers, topic, group, database_url, &[])
    }

    /// The same with further environment variables.
    pub fn start_with(
        brokers: &str,
        topic: &str,
        group: &str,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("archive")
            .env_clear()
            .envs(env.iter().copied())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KAFKA_BROKERS", brokers)
            .env("KAFKA_TOPIC", topic)
            .env("ARCHIVE_GROUP", group)
            .env("DATABASE_URL", database_url)
            .env(
                "RUST_LOG",
                std::env::var("ARCHIVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self { child }
    }

    /// kill -9.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        super::process::terminate(&mut self.child, "the archiver")
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of `target` that can cut every connection through
/// it and refuse new ones for a while: the database "goes away" for the
/// clients behind it only.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, l) = (cut.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                l.lock().await.push(link);
            }
        });
        Self {
            addr,
            cut,
            links,
            accept,
        }
    }

    /// Drops every connection and refuses new ones until [`Proxy::restore`].
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One test's own topic, consumer group and schema.
pub struct Setup {
    /// Partitions of the topic when a node creates it (3 unless changed).
    pub partitions: i32,
    pub topic: String,
    /// Where the nodes produce presence changes (`KAFKA_EVENTS_TOPIC`).
    pub events_topic: String,
    pub group: String,
    pub schema: String,
    pub db: String,
}

/// A fresh topic, group and schema.
pub async fn setup() -> Setup {
    let (schema, db) = pg_schema().await;
    Setup {
        partitions: 3,
        topic: unique("topic"),
        events_topic: unique("events"),
        group: unique("group"),
        schema,
        db,
    }
}

/// A node journaling to `brokers` and storing in the setup's schema,
/// optionally clustered over the shared Redis with `redis_prefix`.
pub async fn kafka_node(
    brokers: &str,
    s: &Setup,
    node_id: &str,
    redis_prefix: Option<&str>,
    ack_timeout: Duration,
) -> Node {
    let redis = redis_prefix.map(|prefix| RedisOptions::new(shared_url(), prefix, node_id));
    kafka_node_with(brokers, s, node_id, redis, ack_timeout).await
}

/// The same, clustered with `redis` as given.
pub async fn kafka_node_with(
    brokers: &str,
    s: &Setup,
    node_id: &str,
    redis: Option<RedisOptions>,
    ack_timeout: Duration,
) -> Node {
    let gateway = GatewayConfig {
        node_id: node_id.into(),
        ack_timeout,
        ..GatewayConfig::default()
    };
    kafka_node_config(brokers, s, gateway, redis).await
}

/// The same with `gateway` settings as given (`node_id` names it).
pub async fn kafka_node_config(
    brokers: &str,
    s: &Setup,
    gateway: GatewayConfig,
    redis: Option<RedisOptions>,
) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_id = gateway.node_id.clone();
    let kafka = KafkaOptions {
        brokers: brokers.into(),
        topic: s.topic.clone(),
        events_topic: Some(s.events_topic.clone()),
        partitions: s.partitions,
        replication: 1,
        node_id,
        overrides: vec![],
    };
    let options = NodeOptions {
        gateway,
        database_url: s.db.clone(),
        migrate: true,
        redis,
        kafka: Some(kafka),
        layout: Default::default(),
    };
    Node::start_with(listener, options).await
}

/// Waits until the node's journal reports ready (topic created).
pub async fn await_ready(node: &Node) {
    await_status(node, 200).await;
}

/// Waits until `/readyz` answers `status`.
pub async fn await_status(node: &Node, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = reqwest::get(node.http("/readyz")).await.unwrap();
        if res.status() == status {
            if status == 503 {
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["down"], json!(["kafka"]));
            }
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never answered {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record of `topic` (its three partitions), read from the start.
pub fn topic_records(topic: &str) -> Vec<serde_json::Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message as _, Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", super::unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    let mut end = 0;
    for partition in 0..3 {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .unwrap();
        end += high;
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (records.len() as i64) < end && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            records.push(
                serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default())
                    .unwrap(),
            );
        }
    }
    assert_eq!(records.len() as i64, end, "read the whole topic");
    records
}
