//! The ceiling reference: the smallest fan-out server that speaks `/ws`'s
//! `join`/`send` in and `joined`/`ack`/`message` out, built only to show
//! what this machine can do. One process, no store, no bus, no limits, no
//! ordering guarantees beyond TCP's, no authentication: nothing a real
//! server needs. WebSocket is framed by hand. Each send is encoded once
//! into its room's pending buffer; a hub task, every 20 ms, hands each
//! room's whole buffer (one shared allocation) to every member and wakes
//! each member's writer once, which writes it with one call.
//!
//! `scripts/bench` runs it beside switchboard and the peers, so every
//! figure has a same-run reference (docs/benchmarks.md). Not for
//! production: it trusts every byte a client sends.
//!
//! Usage: `switchboard-ceiling` with `PORT` (9300) and `HOST` (127.0.0.1).
//! `switchboard-ceiling --probe` instead times a fixed amount of work (one
//! core's arithmetic, then memory copies) and prints it as JSON: the
//! machine's state when a benchmark ran, so a slow day can be told from a
//! slow change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How often the hub hands out what was sent.
const TICK: Duration = Duration::from_millis(20);
/// The largest frame or request head read.
const MAX_FRAME: usize = 64 * 1024;

/// Frames waiting for one connection's writer.
#[derive(Default)]
struct Outbox {
    queue: Mutex<Vec<Arc<Vec<u8>>>>,
    wake: Notify,
}

impl Outbox {
    fn push(&self, bytes: Arc<Vec<u8>>) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(bytes);
        self.wake.notify_one();
    }
}

#[derive(Default)]
struct Room {
    members: Vec<Arc<Outbox>>,
    /// Message frames sent since the last tick, framed and concatenated.
    pending: Vec<u8>,
}

#[derive(Default)]
struct Hub {
    rooms: Mutex<HashMap<String, Room>>,
    ids: AtomicU64,
}

impl Hub {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every tick: each room's pending frames to each member, one wake each.
    async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let mut rooms = self.rooms();
            for room in rooms.values_mut() {
                if room.pending.is_empty() {
                    continue;
                }
                let batch = Arc::new(std::mem::take(&mut room.pending));
                for member in &room.members {
                    member.push(batch.clone());
                }
            }
        }
    }
}

/// A server-to-client text frame (unmasked) appended to `out`.
fn frame_into(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

fn framed(payload: &[u8]) -> Arc<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    frame_into(&mut out, payload);
    Arc::new(out)
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[derive(serde::Deserialize)]
struct Request<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(rename = "ref", default)]
    r#ref: Option<u64>,
}

/// Reads the request head; answers the upgrade of `GET /ws?name=…` and
/// returns the name, or `None` (after a 404 for anything else).
async fn handshake(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_FRAME {
            return Ok(None);
        }
        let byte = reader.read_u8().await?;
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let target = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("");
    let key = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    });
    let (Some(query), Some(key)) = (target.strip_prefix("/ws"), key) else {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(None);
    };
    let name = query
        .trim_start_matches('?')
        .split('&')
        .find_map(|p| p.strip_prefix("name="))
        .unwrap_or("anon")
        .to_owned();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    reader.get_mut().write_all(answer.as_bytes()).await?;
    Ok(Some(name))
}

/// One client frame: its opcode and unmasked payload.
async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let first = reader.read_u8().await?;
    let second = reader.read_u8().await?;
    let len = match second & 0x7f {
        126 => u64::from(reader.read_u16().await?),
        127 => reader.read_u64().await?,
        n => u64::from(n),
    };
    if first & 0x80 == 0 || len > MAX_FRAME as u64 {
        return Ok(None); // fragments and large frames are not this server's job
    }
    let mut mask = [0u8; 4];
    if second & 0x80 != 0 {
        reader.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload).await?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(Some((first & 0x0f, payload)))
}

async fn serve(hub: Arc<Hub>, tcp: TcpStream) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(8 * 1024, tcp);
    let Some(name) = handshake(&mut reader).await? else {
        return Ok(());
    };
    let (read, mut write) = reader.into_inner().into_split();
    let mut reader = BufReader::with_capacity(8 * 1024, read);
    let outbox = Arc::new(Outbox::default());
    let writer = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            loop {
                outbox.wake.notified().await;
                let batches = std::mem::take(
                    &mut *outbox.queue.lock().unwrap_or_else(PoisonError::into_inner),
                );
                for batch in batches {
                    if write.write_all(&batch).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let name_json = serde_json::to_string(&name).unwrap_or_else(|_| "\"anon\"".into());
    let mut joined: Vec<String> = Vec::new();
    while let Some((opcode, payload)) = read_frame(&mut reader).await? {
        match opcode {
            0x1 => {}
            0x8 => break,
            0x9 => {
                let mut pong = vec![0x8a, payload.len().min(125) as u8];
                pong.extend_from_slice(&payload[..payload.len().min(125)]);
                outbox.push(Arc::new(pong));
                continue;
            }
            _ => continue,
        }
        let Ok(request) = serde_json::from_slice::<Request<'_>>(&payload) else {
            continue;
        };
        let Some(room) = request.room else { continue };
        let room_json = serde_json::to_string(&room).unwrap_or_default();
        match request.ty {
            "join" => {
                hub.rooms()
                    .entry(room.clone())
                    .or_default()
                    .members
                    .push(outbox.clone());
                joined.push(room);
                let answer = format!(r#"{{"type":"joined","room":{room_json},"history":[]}}"#);
                outbox.push(framed(answer.as_bytes()));
            }
            "send" => {
                let id = hub.ids.fetch_add(1, Ordering::Relaxed);
                let text = serde_json::to_string(request.text.as_deref().unwrap_or(""))
                    .unwrap_or_default();
                let message = format!(
                    r#"{{"type":"message","id":"c{id}","room":{room_json},"from":{name_json},"text":{text},"ts":{}}}"#,
                    now_ms()
                );
                if let Some(r) = hub.rooms().get_mut(&room) {
                    frame_into(&mut r.pending, message.as_bytes());
                }
                if let Some(r#ref) = request.r#ref {
                    let ack = format!(r#"{{"type":"ack","ref":{ref},"id":"c{id}"}}"#);
                    outbox.push(framed(ack.as_bytes()));
                }
            }
            _ => {}
        }
    }
    let mut rooms = hub.rooms();
    for room in joined {
        if let Some(r) = rooms.get_mut(&room) {
            r.members.retain(|m| !Arc::ptr_eq(m, &outbox));
            if r.members.is_empty() {
                rooms.remove(&room);
            }
        }
    }
    drop(rooms);
    writer.abort();
    Ok(())
}

/// The fixed work of `--probe`: milliseconds of arithmetic (a xorshift
/// chain of 200 million steps) and of copying 64 MiB eight times.
fn probe() -> String {
    let started = std::time::Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200_000_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    let cpu = started.elapsed();
    let source = vec![x as u8; 64 << 20];
    let mut target = vec![0u8; 64 << 20];
    let started = std::time::Instant::now();
    for i in 0..8u8 {
        target.copy_from_slice(&source);
        target[0] ^= i;
        std::hint::black_box(&target);
    }
    let memory = started.elapsed();
    serde_json::json!({
        "cpu_ms": cpu.as_secs_f64() * 1000.0,
        "memory_ms": memory.as_secs_f64() * 1000.0,
        "checksum": std::hint::black_box(x) & 0xff,
    })
    .to_string()
}

fn main() -> std::io::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--probe") {
        println!("{}", probe());
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve_forever())
}

async fn serve_forever() -> std::io::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "9300".into());
    let listener = TcpListener::bind(format!("{host}:{port}")).await?;
    eprintln!("ceiling reference on {host}:{port}");
    let hub = Arc::new(Hub::default());
    tokio::spawn(hub.clone().run());
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(serve(hub.clone(), tcp));
    }
}
