//! Starts nodes in-process on 127.0.0.1:0 and speaks the `/ws` protocol.

#![allow(dead_code)]

pub mod jwt;
pub mod pipeline;
pub mod policies;
pub mod process;
pub mod redis;
pub mod redis_cluster;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::NodeOptions;
use switchboard_gateway::GatewayConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Node {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Node {
    pub async fn start(database_url: &str, gateway: GatewayConfig) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = NodeOptions {
            gateway,
            database_url: database_url.to_owned(),
            migrate: true,
            redis: None,
            kafka: None,
            layout: Default::default(),
        };
        Node::start_with(listener, options).await
    }

    pub async fn start_with(listener: TcpListener, options: NodeOptions) -> Node {
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let metrics = Some(metrics_handle());
        let task = tokio::spawn(switchboard::run(
            listener,
            options,
            shutdown.clone(),
            metrics,
        ));
        Node {
            addr,
            shutdown,
            task,
        }
    }

    /// A node on the real Redis with channel `prefix`, its own store in
    /// memory, and `gateway` settings (`node_id` names it on the bus).
    pub async fn clustered(redis_url: &str, prefix: &str, gateway: GatewayConfig) -> Node {
        let redis = switchboard_bus::RedisOptions {
            window: gateway.recovery_window,
            ..switchboard_bus::RedisOptions::new(redis_url, prefix, gateway.node_id.clone())
        };
        Node::clustered_with(redis, gateway).await
    }

    /// The same with the bus settings as given.
    pub async fn clustered_with(
        redis: switchboard_bus::RedisOptions,
        gateway: GatewayConfig,
    ) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = NodeOptions {
            gateway,
            database_url: "sqlite::memory:".into(),
            migrate: true,
            redis: Some(redis),
            kafka: None,
            layout: Default::default(),
        };
        Node::start_with(listener, options).await
    }

    pub async fn memory() -> Node {
        Node::start("sqlite::memory:", GatewayConfig::default()).await
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn client(&self, name: &str) -> Client {
        Client::connect(self.addr, name).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Stream,
    /// Frames read while looking for another one, returned first by `recv`.
    backlog: std::collections::VecDeque<Value>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, name: &str) -> Client {
        let url = format!("ws://{addr}/ws?name={name}");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client::from_stream(ws)
    }

    pub fn from_stream(ws: Stream) -> Client {
        Client {
            ws,
            backlog: Default::default(),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws.send(Ws::text(frame.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, msg: Ws) {
        self.ws.send(msg).await.unwrap();
    }

    /// The next JSON frame, failing after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("read failed");
            match msg {
                Ws::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Ws::Ping(_) | Ws::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next frame of `ty`, skipping others (e.g. acks while waiting for messages).
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        if let Some(pos) = self.backlog.iter().position(|v| v["type"] == ty) {
            return self.backlog.remove(pos).unwrap();
        }
        loop {
            let v = self.recv_wire().await;
            if v["type"] == ty {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    pub async fn recv_wire(&mut self) -> Value {
        let backlog = std::mem::take(&mut self.backlog);
        let v = self.recv().await;
        self.backlog = backlog;
        v
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) {
        if let Ok(Some(Ok(msg))) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("expected silence, got {msg:?}");
        }
    }

    /// Asserts no frame of `ty` arrives within `wait` (others are kept).
    pub async fn silent_for_type(&mut self, ty: &str, wait: Duration) {
        assert!(
            !self.backlog.iter().any(|v| v["type"] == ty),
            "unexpected {ty} in backlog"
        );
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(v) = tokio::time::timeout_at(deadline, self.recv_wire()).await {
            assert_ne!(v["type"], ty, "expected no more {ty}, got {v}");
            self.backlog.push_back(v);
        }
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room})).await;
        let v = self.recv().await;
        assert_eq!(v["type"], "joined", "{v}");
        v
    }

    /// Sends `text` and returns the acked id.
    pub async fn send_text(&mut self, room: &str, text: &str) -> String {
        self.send(json!({"type": "send", "room": room, "text": text, "ref": text}))
            .await;
        loop {
            let v = self.recv_wire().await;
            if v["type"] == "ack" && v["ref"] == text {
                return v["id"].as_str().unwrap().to_owned();
            }
            assert_ne!(v["type"], "error", "{v}");
            self.backlog.push_back(v);
        }
    }

    /// Reads until the server closes; the close code, if a close frame came.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close")
            {
                Some(Ok(Ws::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// The test process's metrics recorder (one per process: every node a test
/// binary starts counts into it).
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .unwrap()
        })
        .clone()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Waits until something listens on `addr`.
pub async fn wait_for_port(addr: SocketAddr) {
    let started = std::time::Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(started.elapsed() < WAIT, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens `/ws` at `path` with extra request `headers`; the HTTP status and
/// JSON body of a refusal, or the connected client.
pub async fn open_ws(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Client, (u16, Value)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error as WsError, http};
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(Client::from_stream(ws)),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        }
        Err(e) => panic!("unexpected failure: {e}"),
    }
}
