//! The `recovery` scenario: connections join a room, note its position and
//! drop; one connection sends `missed` messages; then every connection
//! comes back at once with `since` (round-robin over the targets, so
//! returning to another node than the one left). Measures each join ->
//! `joined` and the time until all have recovered, and counts the
//! `recovered: true` answers that carry exactly the missed messages.
//! Connections are opened `connect_concurrency` at a time in both phases
//! (clients that reconnect with jittered backoff, not one SYN flood); they
//! come back `drain` after the last missed message was acked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::proc::Meter;
use crate::tally::{histogram, now_us};
use crate::wire::{Conn, WireError};
use crate::{Latency, Options, ProcessUse, Report, Scenario};

/// Sends `frame` and waits for the first frame of type `want`.
async fn ask(conn: &mut Conn, frame: &Value, want: &str) -> Result<Value, WireError> {
    conn.ws.send(Message::text(frame.to_string())).await?;
    loop {
        match conn.ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str())
                    .map_err(|e| WireError::Protocol(e.to_string()))?;
                if v["type"] == want {
                    return Ok(v);
                }
                if v["type"] == "error" {
                    return Err(WireError::Protocol(format!("refused: {v}")));
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(WireError::Protocol("closed".into())),
        }
    }
}

/// One returning connection: how long its join took, and whether it got
/// exactly the `missed` messages after `since`.
async fn come_back(
    opts: &Options,
    i: usize,
    room: &str,
    since: Value,
    missed: usize,
) -> Result<(Duration, bool), WireError> {
    let target = opts.targets[(i + 1) % opts.targets.len()];
    let source = (!opts.sources.is_empty()).then(|| opts.sources[i % opts.sources.len()]);
    let mut conn = Conn::connect(target, source, opts.protocol, &format!("r{i}")).await?;
    let started = Instant::now();
    let join = json!({"type": "join", "room": room, "since": since});
    let joined = ask(&mut conn, &join, "joined").await?;
    let took = started.elapsed();
    let history = joined["history"].as_array().map_or(0, Vec::len);
    let exact = joined["recovered"] == true && history == missed;
    Ok((took, exact))
}

/// Runs the scenario.
pub async fn run(opts: Options) -> Result<Report, String> {
    let fail = |e: WireError| e.to_string();
    let room = format!("bench-{:x}", now_us());
    let missed = opts.missed;
    // Everyone joins and notes the room's position.
    let talker_at = opts.targets[0];
    let mut talker = Conn::open(talker_at, None, opts.protocol, "talker", &room)
        .await
        .map_err(fail)?;
    // Connections opened at once at most, in both phases.
    let limit = Arc::new(Semaphore::new(opts.connect_concurrency.max(1)));
    let mut away = JoinSet::new();
    for i in 0..opts.connections {
        let (target, room) = (opts.targets[i % opts.targets.len()], room.clone());
        let (protocol, limit) = (opts.protocol, limit.clone());
        away.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let mut conn = Conn::connect(target, None, protocol, &format!("r{i}")).await?;
            let join = json!({"type": "join", "room": room, "history": 0});
            let joined = ask(&mut conn, &join, "joined").await?;
            Ok::<_, WireError>(json!({"seq": joined["seq"], "epoch": joined["epoch"]}))
        });
    }
    let mut positions = Vec::with_capacity(opts.connections);
    while let Some(done) = away.join_next().await {
        positions.push(done.map_err(|e| e.to_string())?.map_err(fail)?);
    }
    // (Their connections closed with the tasks.) What they miss:
    for k in 0..missed {
        let text = format!("missed {k}");
        let send = json!({"type": "send", "room": room, "text": text, "ref": k});
        talker
            .ws
            .send(Message::text(send.to_string()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut acked = 0;
    while acked < missed {
        match talker.ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"ack\"") => acked += 1,
            Some(Ok(_)) => {}
            _ => return Err("the talker's connection ended".into()),
        }
    }
    // Time for what the returning connections read to settle (an archive
    // catching up), then every one comes back.
    tokio::time::sleep(opts.drain).await;
    let mut meters: Vec<Meter> = opts.pids.iter().map(|&p| Meter::start(p)).collect();
    let mut client_meter = Meter::start(std::process::id());
    let started = Instant::now();
    let mut back = JoinSet::new();
    for (i, since) in positions.into_iter().enumerate() {
        let (opts, room, limit) = (opts.clone(), room.clone(), limit.clone());
        back.spawn(async move {
            let _permit = limit.acquire_owned().await;
            come_back(&opts, i, &room, since, missed).await
        });
    }
    let mut latency = histogram();
    let (mut recovered, mut failures) = (0u64, 0usize);
    while let Some(done) = back.join_next().await {
        match done {
            Ok(Ok((took, exact))) => {
                latency.saturating_record(took.as_micros() as u64);
                recovered += u64::from(exact);
            }
            _ => failures += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let servers: Vec<ProcessUse> = crate::finish(&mut meters);
    let client_cpu_percent = client_meter.finish().map_or(0.0, |m| m.0);
    let expected = (opts.connections * missed) as u64;
    Ok(Report {
        scenario: Scenario::Recovery,
        protocol: opts.protocol,
        connections: opts.connections - failures,
        connect_failures: failures,
        sent: missed as u64,
        expected,
        delivered: recovered * missed as u64,
        lost: expected - recovered * missed as u64,
        duplicates: 0,
        seconds,
        deliveries_per_second: recovered as f64 * missed as f64 / seconds.max(1e-6),
        offered_per_second: 0.0,
        latency_ms: Latency::of(&latency),
        latency_by_target_ms: Vec::new(),
        rss_kib_per_connection: None,
        servers,
        client_cpu_percent,
        recovered: Some(recovered),
    })
}
