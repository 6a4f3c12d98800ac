//! Measurements of the durable pipeline on real services (figures for the
//! docs, not checks; ignored unless asked for): archive throughput from a
//! pre-filled topic, and send -> ack latency through Kafka.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::pipeline::{await_ready, await_rows, kafka, kafka_node, pg_schema, setup};
use common::unique;
use serde_json::{Value, json};
use uuid::Uuid;

/// Figures for docs (a measurement, not a check): archive throughput from a
/// pre-filled topic into PostgreSQL at batch sizes 100, 1000 and 5000. Run
/// with `cargo test --release -p switchboard --test pipeline_measure -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check; run by hand"]
async fn measure_archive_throughput() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    const N: usize = 100_000;
    let topic = unique("prefill");
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", kafka())
            .create()
            .unwrap();
    let new = rdkafka::admin::NewTopic::new(&topic, 6, rdkafka::admin::TopicReplication::Fixed(1));
    admin
        .create_topics([&new], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    let room = switchboard_protocol::RoomName::parse("bench").unwrap();
    let started = Instant::now();
    let mut pending = Vec::with_capacity(N);
    for i in 0..N {
        let m = switchboard_protocol::Message {
            id: Uuid::now_v7(),
            room: room.clone(),
            from: "bench".into(),
            text: format!("{i:064}"),
            ts: 1_700_000_000_000 + i as i64,
        };
        let payload = switchboard_journal::record::encode("bench", &m);
        let key = format!("room-{}", i % 64);
        let delivery = producer.send_result(FutureRecord::to(&topic).key(&key).payload(&payload));
        pending.push(delivery.map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    println!(
        "pre-filled {N} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for batch in [100usize, 1000, 5000] {
        let (schema, db) = pg_schema().await;
        let store = switchboard_store::open(&db).await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let options = switchboard_archive::ArchiveOptions {
            brokers: kafka(),
            topic: topic.clone(),
            partitions: 6,
            replication: 1,
            group: unique("bench"),
            batch,
            linger: Duration::from_millis(50),
            overrides: vec![],
        };
        let started = Instant::now();
        let task = tokio::spawn(switchboard_archive::run(options, store, shutdown.clone()));
        await_rows(&schema, N as i64, Duration::from_secs(600)).await;
        let secs = started.elapsed().as_secs_f64();
        shutdown.cancel();
        task.await.unwrap().unwrap();
        println!(
            "batch {batch:>5}: {N} messages archived in {secs:.2} s = {:.0} msgs/s",
            N as f64 / secs
        );
    }
}

/// Figures for docs: send -> ack latency through the Kafka journal at a
/// steady 1,000 messages/s for 10 s.
#[tokio::test]
#[ignore = "a measurement, not a check; run by hand"]
async fn measure_ack_latency_at_1000_per_second() {
    let s = setup().await;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    let room = unique("ack");
    let mut c = node.client("c").await;
    c.join(&room).await;
    let (mut tx, mut rx) = futures_util::StreamExt::split(c.ws);
    const RATE: u64 = 1_000;
    const SECONDS: u64 = 10;
    let total = (RATE * SECONDS) as usize;
    let sent_at = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<u64, Instant>::new()));
    let times = sent_at.clone();
    let reader = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        while latencies.len() < total {
            let Some(Ok(frame)) = futures_util::StreamExt::next(&mut rx).await else {
                break;
            };
            let Ok(text) = frame.into_text() else {
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["type"] == "ack" {
                let r = v["ref"].as_u64().unwrap();
                let start = times.lock().unwrap().remove(&r).unwrap();
                latencies.push(start.elapsed());
            }
        }
        latencies
    });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    for i in 0..total as u64 {
        tick.tick().await;
        sent_at.lock().unwrap().insert(i, Instant::now());
        let frame =
            json!({"type": "send", "room": room, "text": format!("{i:064}"), "ref": i}).to_string();
        futures_util::SinkExt::send(
            &mut tx,
            tokio_tungstenite::tungstenite::Message::text(frame),
        )
        .await
        .unwrap();
    }
    let mut latencies = reader.await.unwrap();
    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
    println!(
        "ack latency at {RATE}/s for {SECONDS} s ({} acks): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    assert_eq!(latencies.len(), total);
    node.stop().await;
}
