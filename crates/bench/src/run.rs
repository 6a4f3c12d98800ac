//! One benchmark run: connect, drive traffic, drain, count.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::proc::{Meter, sample};
use crate::tally::{Samples, Tally, Totals, histogram, now_us, payload};
use crate::wire::{Conn, Incoming, Protocol, decode, send_frame};
use crate::{Latency, Options, ProcessUse, Report, Scenario};

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    delivered: AtomicU64,
}

struct Done {
    room: usize,
    /// The index of the target it was connected to.
    target: usize,
    sent: u64,
    tally: Tally,
    acks: Samples,
}

/// Runs one benchmark and reports it.
pub async fn run(opts: Options) -> Result<Report, String> {
    if opts.targets.is_empty() {
        return Err("no target".into());
    }
    if opts.scenario == Scenario::Recovery {
        if opts.protocol == Protocol::SocketIo {
            return Err("the recovery scenario speaks /ws".into());
        }
        return crate::recovery::run(opts).await;
    }
    if opts.protocol == Protocol::SocketIo
        && matches!(opts.scenario, Scenario::Rooms | Scenario::Ack)
    {
        return Err("the socket.io protocol drives the original contract (one room, lobby): use broadcast or idle".into());
    }
    let tag = format!("{:x}", now_us());
    let room_names: Vec<String> = match (opts.protocol, opts.scenario) {
        (Protocol::SocketIo, _) => vec!["lobby".into()],
        (_, Scenario::Rooms) => (0..opts.rooms.max(1))
            .map(|k| format!("bench-{tag}-{k}"))
            .collect(),
        _ => vec![format!("bench-{tag}")],
    };
    let idle_client_meter = Meter::start(std::process::id());
    let mut idle_meters: Vec<Meter> = opts.pids.iter().map(|&p| Meter::start(p)).collect();
    let rss_before = opts.pids.first().and_then(|&p| sample(p)).map(|s| s.1);

    // Connect, a bounded number at a time. An open connection is held,
    // reading (which answers the server's pings), until every one is open:
    // at scale that takes longer than a node's idle timeout.
    let limit = Arc::new(Semaphore::new(opts.connect_concurrency.max(1)));
    let (start_tx, start_rx) = tokio::sync::watch::channel(false);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let mut connecting = JoinSet::new();
    for i in 0..opts.connections {
        let target = opts.targets[i % opts.targets.len()];
        let source = (!opts.sources.is_empty()).then(|| opts.sources[i % opts.sources.len()]);
        let room_index = i % room_names.len();
        let room = room_names[room_index].clone();
        let (limit, protocol) = (limit.clone(), opts.protocol);
        let (opened_tx, start_rx) = (opened_tx.clone(), start_rx.clone());
        connecting.spawn(async move {
            let permit = limit.acquire_owned().await;
            let opened = tokio::time::timeout(
                Duration::from_secs(20),
                Conn::open(target, source, protocol, &format!("b{i}"), &room),
            )
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            drop(permit);
            let _ = opened_tx.send(opened.as_ref().map(|_| ()).map_err(Clone::clone));
            // Told once: a task that dies before telling then ends the wait.
            drop(opened_tx);
            let conn = hold(opened?, start_rx).await?;
            Ok::<_, String>((i, room_index, conn))
        });
    }
    drop(opened_tx);
    let mut failures = 0;
    let mut first_error = None;
    let mut answered = 0;
    while answered < opts.connections {
        match opened_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
            // Every task has told, or ended without a word (it panicked).
            None => break,
        }
        answered += 1;
    }
    let _ = start_tx.send(true);
    let mut conns = Vec::with_capacity(opts.connections);
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok(Ok(conn)) => conns.push(conn),
            // Refused or timed out: counted above.
            Ok(Err(e)) if e.starts_with(CLOSED_WHILE_HELD) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
            Ok(Err(_)) => {}
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = &first_error {
        eprintln!("{failures} connections failed; first error: {e}");
    }
    conns.sort_by_key(|(i, _, _)| *i);
    let mut members = vec![0usize; room_names.len()];
    for (_, room, _) in &conns {
        members[*room] += 1;
    }

    if opts.scenario == Scenario::Idle {
        return Ok(idle(
            &opts,
            conns,
            failures,
            &mut idle_meters,
            rss_before,
            idle_client_meter,
        )
        .await);
    }

    // Let subscriptions settle before the clock starts; CPU is measured
    // over the sending window only, not over connecting or draining.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut meters: Vec<Meter> = opts.pids.iter().map(|&p| Meter::start(p)).collect();
    let mut client_meter = Meter::start(std::process::id());
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let send_until = started + opts.duration;
    let senders: Vec<usize> = conns
        .iter()
        .enumerate()
        .filter(|(n, _)| match opts.scenario {
            Scenario::Broadcast => *n < opts.senders,
            _ => true,
        })
        .map(|(n, _)| n)
        .collect();
    let sender_count = senders.len().max(1);
    let period = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
    let mut tasks = JoinSet::new();
    for (n, (i, room, conn)) in conns.into_iter().enumerate() {
        let sends = senders.binary_search(&n).is_ok();
        let first_tick = started + period.mul_f64(n as f64 / sender_count as f64 % 1.0);
        let plan = Plan {
            sender: sends.then_some(i as u32),
            first_tick,
            period,
            send_until,
            room: room_names[room].clone(),
            room_index: room,
            payload: opts.payload,
            ack: opts.scenario == Scenario::Ack,
            target: i % opts.targets.len(),
        };
        tasks.spawn(drive(conn, plan, stop.clone(), counters.clone()));
    }

    let progress = opts
        .progress
        .then(|| tokio::spawn(progress(counters.clone(), started)));
    let poll_meters = async {
        loop {
            for m in meters.iter_mut() {
                m.poll();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        () = tokio::time::sleep_until(send_until.into()) => {}
        () = poll_meters => {}
    }
    let servers = finish(&mut meters);
    let client_cpu_percent = client_meter.finish().map_or(0.0, |m| m.0);
    // Drain: wait until every sent message reached every member, or the drain time ran out.
    let drain_until = Instant::now() + opts.drain;
    let expected_now = |counters: &Counters| -> u64 {
        // An upper bound while sends finish; exact per room once tasks end.
        let per_member = match opts.scenario {
            Scenario::Rooms => {
                members.iter().map(|m| m * m).sum::<usize>() as f64 / opts.connections.max(1) as f64
            }
            _ => members.iter().sum::<usize>() as f64,
        };
        (counters.sent.load(Ordering::Relaxed) as f64 * per_member) as u64
    };
    while Instant::now() < drain_until
        && counters.delivered.load(Ordering::Relaxed) < expected_now(&counters)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started
        .elapsed()
        .as_secs_f64()
        .min(opts.duration.as_secs_f64() + opts.drain.as_secs_f64());
    stop.cancel();
    if let Some(p) = progress {
        p.abort();
    }

    let mut total = Totals::default();
    let mut by_target: Vec<_> = opts.targets.iter().map(|_| histogram()).collect();
    let mut acks = histogram();
    let mut sent_per_room = vec![0u64; room_names.len()];
    while let Some(done) = tasks.join_next().await {
        let Ok(done) = done else { continue };
        total.merge(&done.tally);
        done.tally.latency.add_to(&mut by_target[done.target]);
        done.acks.add_to(&mut acks);
        sent_per_room[done.room] += done.sent;
    }
    let sent: u64 = sent_per_room.iter().sum();
    let expected: u64 = sent_per_room
        .iter()
        .zip(&members)
        .map(|(s, m)| s * *m as u64)
        .sum();
    let offered: f64 = members
        .iter()
        .map(|&m| {
            let senders_here = match opts.scenario {
                Scenario::Broadcast => opts.senders.min(m),
                _ => m,
            };
            senders_here as f64 * opts.rate * m as f64
        })
        .sum();
    let latency = if opts.scenario == Scenario::Ack {
        Latency::of(&acks)
    } else {
        Latency::of(&total.latency)
    };
    Ok(Report {
        scenario: opts.scenario,
        protocol: opts.protocol,
        connections: opts.connections - failures,
        connect_failures: failures,
        sent,
        expected,
        delivered: total.delivered,
        lost: expected.saturating_sub(total.delivered),
        duplicates: total.duplicates,
        seconds,
        deliveries_per_second: total.delivered as f64 / opts.duration.as_secs_f64().max(1e-6),
        offered_per_second: offered,
        latency_ms: latency,
        latency_by_target_ms: if opts.targets.len() > 1 && opts.scenario != Scenario::Ack {
            by_target.iter().map(Latency::of).collect()
        } else {
            Vec::new()
        },
        rss_kib_per_connection: None,
        servers,
        client_cpu_percent,
        recovered: None,
    })
}

struct Plan {
    sender: Option<u32>,
    first_tick: Instant,
    period: Duration,
    send_until: Instant,
    room: String,
    room_index: usize,
    payload: usize,
    ack: bool,
    target: usize,
}

/// What a connection the server closed while it was held reports.
const CLOSED_WHILE_HELD: &str = "closed while the others connected";

/// Holds an open connection until `start` turns true, reading what comes
/// (which answers WebSocket pings, and engine.io's here) and dropping it.
async fn hold(
    mut conn: Conn,
    mut start: tokio::sync::watch::Receiver<bool>,
) -> Result<Conn, String> {
    loop {
        if *start.borrow_and_update() {
            return Ok(conn);
        }
        tokio::select! {
            changed = start.changed() => {
                if changed.is_err() {
                    return Err("stopped".into());
                }
            }
            frame = conn.ws.next() => match frame {
                Some(Ok(Message::Text(t))) if conn.protocol == Protocol::SocketIo && t.as_str() == "2" => {
                    let _ = conn.ws.send(Message::text("3")).await;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("{CLOSED_WHILE_HELD}: {e}")),
                None => return Err(CLOSED_WHILE_HELD.into()),
            },
        }
    }
}

async fn drive(conn: Conn, plan: Plan, stop: CancellationToken, counters: Arc<Counters>) -> Done {
    let protocol = conn.protocol;
    let (mut sink, mut stream) = conn.ws.split();
    let mut tally = Tally::default();
    let mut acks = Samples::default();
    let mut ack_sent_at: HashMap<u64, u64> = HashMap::new();
    let mut ticker = plan.sender.map(|_| {
        let mut t = tokio::time::interval_at(plan.first_tick.into(), plan.period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut seq = 0u64;
    let mut unreported = 0u64;
    let mut reported_at = now_us();
    let mut scratch = String::new();
    loop {
        let sending = ticker.is_some() && Instant::now() < plan.send_until;
        tokio::select! {
            () = stop.cancelled() => break,
            _ = async { ticker.as_mut().map(|t| t.tick()).unwrap_or_else(|| unreachable!()).await }, if sending => {
                // The tick may fire after the window closed; the drain
                // counts on no send starting then.
                if Instant::now() >= plan.send_until {
                    continue;
                }
                let sent_at = now_us();
                let text = payload(plan.sender.unwrap_or(0), seq, sent_at, plan.payload);
                if plan.ack {
                    ack_sent_at.insert(seq, sent_at);
                }
                // Counted before the write, so the drain never sees the
                // deliveries of a send it does not know of yet.
                counters.sent.fetch_add(1, Ordering::Relaxed);
                if sink.send(send_frame(protocol, &plan.room, &text, seq)).await.is_err() {
                    break;
                }
                seq += 1;
            }
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                let Message::Text(text) = frame else { continue };
                match decode(protocol, text.as_str(), &mut scratch) {
                    Incoming::Message(body) => {
                        let now = now_us();
                        tally.record(body, now);
                        unreported += 1;
                        // Shared counter touched in batches, but at least
                        // every 100 ms so progress and the drain see
                        // slow rooms too.
                        if unreported == 64 || now.saturating_sub(reported_at) > 100_000 {
                            counters.delivered.fetch_add(unreported, Ordering::Relaxed);
                            unreported = 0;
                            reported_at = now;
                        }
                    }
                    Incoming::Ack(r) => {
                        if let Some(t0) = ack_sent_at.remove(&r) {
                            acks.record(now_us().saturating_sub(t0));
                        }
                    }
                    Incoming::Ping => {
                        let _ = sink.send(Message::text("3")).await;
                    }
                    Incoming::Other => {}
                }
            }
        }
        if unreported > 0 && !sending && ticker.is_none() {
            counters.delivered.fetch_add(unreported, Ordering::Relaxed);
            unreported = 0;
        }
    }
    counters.delivered.fetch_add(unreported, Ordering::Relaxed);
    let _ = sink.close().await;
    Done {
        room: plan.room_index,
        target: plan.target,
        sent: seq,
        tally,
        acks,
    }
}

async fn progress(counters: Arc<Counters>, started: Instant) {
    let mut last = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let delivered = counters.delivered.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0}s] sent {:>9}  delivered {:>11}  ({:>9}/s)",
            started.elapsed().as_secs_f64(),
            counters.sent.load(Ordering::Relaxed),
            delivered,
            delivered - last
        );
        last = delivered;
    }
}

pub(crate) fn finish(meters: &mut [Meter]) -> Vec<ProcessUse> {
    meters
        .iter_mut()
        .filter_map(|m| {
            let (cpu, rss) = m.finish()?;
            Some(ProcessUse {
                pid: m.pid,
                cpu_percent: cpu,
                rss_kib: rss,
                peak_rss_kib: m.peak_rss_kib,
            })
        })
        .collect()
}

async fn idle(
    opts: &Options,
    conns: Vec<(usize, usize, Conn)>,
    failures: usize,
    meters: &mut [Meter],
    rss_before: Option<u64>,
    client_meter: Meter,
) -> Report {
    let open = conns.len();
    let started = Instant::now();
    // Answer engine.io pings while holding, as real clients would.
    let stop = CancellationToken::new();
    let mut holders = JoinSet::new();
    for (_, _, conn) in conns {
        let stop = stop.clone();
        holders.spawn(async move {
            let protocol = conn.protocol;
            let (mut sink, mut stream) = conn.ws.split();
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    frame = stream.next() => match frame {
                        Some(Ok(Message::Text(t))) if protocol == Protocol::SocketIo && t.as_str() == "2" => {
                            let _ = sink.send(Message::text("3")).await;
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
        });
    }
    tokio::time::sleep(opts.duration).await;
    let rss_after = opts.pids.first().and_then(|&p| sample(p)).map(|s| s.1);
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if open > 0 => Some(a.saturating_sub(b) as f64 / open as f64),
        _ => None,
    };
    let servers = finish(meters);
    stop.cancel();
    while holders.join_next().await.is_some() {}
    Report {
        scenario: Scenario::Idle,
        protocol: opts.protocol,
        connections: open,
        connect_failures: failures,
        sent: 0,
        expected: 0,
        delivered: 0,
        lost: 0,
        duplicates: 0,
        seconds: started.elapsed().as_secs_f64(),
        deliveries_per_second: 0.0,
        offered_per_second: 0.0,
        latency_ms: Latency::default(),
        latency_by_target_ms: Vec::new(),
        rss_kib_per_connection: per_conn,
        servers,
        client_cpu_percent: { client_meter }.finish().map_or(0.0, |m| m.0),
        recovered: None,
    }
}
