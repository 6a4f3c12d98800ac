//! The journal contract, written once as generic functions over a way to
//! start a journal and read back what it made durable, and run against the
//! embedded journal (a real SQLite store) and the Kafka journal (the real
//! tansu broker on 127.0.0.1:9092, a fresh topic per test).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use switchboard_journal::{
    EmbeddedJournal, Journal, JournalError, JournalOptions, KafkaJournal, KafkaOptions, record,
};
use switchboard_protocol::{Message, RoomName};
use switchboard_store::Store;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type Read = Pin<Box<dyn Future<Output = Vec<Message>> + Send>>;

/// A journal under test and what reads back everything it made durable,
/// in the order it is kept per room.
struct Harness {
    journal: Arc<dyn Journal>,
    read_back: Box<dyn Fn() -> Read + Send + Sync>,
}

fn msg(room: &str, text: &str) -> Message {
    Message {
        id: Uuid::now_v7(),
        room: RoomName::parse(room).unwrap(),
        from: "a".into(),
        text: text.into(),
        ts: 1,
        seq: 0,
        epoch: String::new(),
        data: None,
        deleted: false,
    }
}

fn ids(messages: &[Message]) -> HashSet<Uuid> {
    messages.iter().map(|m| m.id).collect()
}

async fn an_append_resolves_once_the_message_is_durable(h: Harness) {
    let m = msg("one", "durable");
    h.journal.append(m.clone()).await.unwrap();
    let back = (h.read_back)().await;
    assert_eq!(back, vec![m], "readable the moment append resolved");
    assert!(h.journal.is_ready());
    assert!(!h.journal.kind().is_empty());
}

async fn concurrent_appends_all_become_durable(h: Harness) {
    let messages: Vec<Message> = (0..300)
        .map(|i| msg(&format!("room{}", i % 3), &i.to_string()))
        .collect();
    let mut tasks = Vec::new();
    for m in messages.iter().cloned() {
        let journal = h.journal.clone();
        tasks.push(tokio::spawn(async move { journal.append(m).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(ids(&(h.read_back)().await), ids(&messages));
}

async fn one_senders_messages_keep_their_order_per_room(h: Harness) {
    let messages: Vec<Message> = (0..50).map(|i| msg("ordered", &i.to_string())).collect();
    for m in &messages {
        h.journal.append(m.clone()).await.unwrap();
    }
    let back: Vec<String> = (h.read_back)().await.into_iter().map(|m| m.text).collect();
    let sent: Vec<String> = messages.into_iter().map(|m| m.text).collect();
    assert_eq!(back, sent);
}

async fn close_makes_what_was_accepted_durable_and_refuses_more(h: Harness) {
    let messages: Vec<Message> = (0..100).map(|i| msg("closing", &i.to_string())).collect();
    let mut pending = Vec::new();
    for m in messages.iter().cloned() {
        let journal = h.journal.clone();
        pending.push(tokio::spawn(async move { journal.append(m).await }));
    }
    // Let every append be taken before closing.
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.journal.close().await;
    for p in pending {
        p.await.unwrap().expect("accepted before close, durable");
    }
    assert_eq!(ids(&(h.read_back)().await), ids(&messages));
    let late = h.journal.append(msg("closing", "late")).await;
    assert!(
        matches!(late, Err(JournalError::Closed)),
        "after close: {late:?}"
    );
}

async fn embedded() -> Harness {
    let store: Arc<dyn Store> = switchboard_store::open("sqlite::memory:").await.unwrap();
    let journal = Arc::new(EmbeddedJournal::start(
        store.clone(),
        JournalOptions::default(),
    ));
    Harness {
        journal,
        read_back: Box::new(move || {
            let store = store.clone();
            Box::pin(async move {
                let mut all = Vec::new();
                for room in ["one", "room0", "room1", "room2", "ordered", "closing"] {
                    let room = RoomName::parse(room).unwrap();
                    all.extend(store.history(&room, 1000, None).await.unwrap());
                }
                all
            })
        }),
    }
}

fn brokers() -> String {
    std::env::var("SWITCHBOARD_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Every record of `topic`, decoded, partition by partition (a room's
/// messages share a partition, in order); a record produced twice (a
/// retry) is read once. Reads until the topic has been quiet for a second
/// (the broker's watermarks count batches, not records, so they cannot say
/// when everything was read).
fn read_topic(topic: &str, partitions: i32) -> Vec<Message> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("contract-{}", Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    // Up to 10 s for the consumer to connect and fetch the first record,
    // then until a second passes without one.
    let mut quiet_since = std::time::Instant::now();
    let mut quiet_for = Duration::from_secs(10);
    while quiet_since.elapsed() < quiet_for {
        let Some(record) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        quiet_since = std::time::Instant::now();
        quiet_for = Duration::from_secs(1);
        let (message, _node) = record::decode(record.unwrap().payload().unwrap()).unwrap();
        if seen.insert(message.id) {
            all.push(message);
        }
    }
    all
}

async fn kafka() -> Harness {
    const PARTITIONS: i32 = 3;
    let topic = format!("contract-{}", Uuid::new_v4().simple());
    switchboard_journal::ensure_topic(&brokers(), &topic, PARTITIONS, 1)
        .await
        .unwrap();
    let options = KafkaOptions {
        brokers: brokers(),
        topic: topic.clone(),
        events_topic: None,
        partitions: PARTITIONS,
        replication: 1,
        node_id: "contract".into(),
        overrides: Vec::new(),
    };
    let journal = Arc::new(KafkaJournal::start(options, &CancellationToken::new()).unwrap());
    // Ready once its probe has seen the topic.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !journal.is_ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "the Kafka journal never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Harness {
        journal,
        read_back: Box::new(move || {
            let topic = topic.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || read_topic(&topic, PARTITIONS))
                    .await
                    .unwrap()
            })
        }),
    }
}

/// Runs every contract function against one implementation.
macro_rules! contract {
    ($module:ident, $harness:ident) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn an_append_resolves_once_the_message_is_durable() {
                super::an_append_resolves_once_the_message_is_durable($harness().await).await;
            }

            #[tokio::test]
            async fn concurrent_appends_all_become_durable() {
                super::concurrent_appends_all_become_durable($harness().await).await;
            }

            #[tokio::test]
            async fn one_senders_messages_keep_their_order_per_room() {
                super::one_senders_messages_keep_their_order_per_room($harness().await).await;
            }

            #[tokio::test]
            async fn close_makes_what_was_accepted_durable_and_refuses_more() {
                super::close_makes_what_was_accepted_durable_and_refuses_more($harness().await)
                    .await;
            }
        }
    };
}

contract!(embedded_journal, embedded);
contract!(kafka_journal, kafka);
