//! The embedded journal against a real SQLite store.

use std::sync::Arc;

use switchboard_journal::{EmbeddedJournal, Journal, JournalError, JournalOptions};
use switchboard_protocol::{Message, RoomName};
use switchboard_store::Store;
use uuid::Uuid;

fn msg(text: &str) -> Message {
    Message {
        id: Uuid::now_v7(),
        room: RoomName::parse("j").unwrap(),
        from: "a".into(),
        text: text.into(),
        ts: 1,
        seq: 0,
        epoch: String::new(),
        data: None,
        deleted: false,
    }
}

async fn store() -> Arc<dyn Store> {
    switchboard_store::open("sqlite::memory:").await.unwrap()
}

#[tokio::test]
async fn append_resolves_after_commit() {
    let store = store().await;
    let journal = EmbeddedJournal::start(store.clone(), JournalOptions::default());
    let m = msg("durable");
    journal.append(m.clone()).await.unwrap();
    let h = store.history(&m.room, 10, None).await.unwrap();
    assert_eq!(h, vec![m]);
}

#[tokio::test]
async fn concurrent_appends_all_land_once() {
    let store = store().await;
    let journal = Arc::new(EmbeddedJournal::start(
        store.clone(),
        JournalOptions {
            queue: 4096,
            max_batch: 64,
        },
    ));
    let msgs: Vec<Message> = (0..500).map(|i| msg(&i.to_string())).collect();
    let mut tasks = Vec::new();
    for m in msgs.iter().cloned().chain(msgs.iter().take(50).cloned()) {
        let j = journal.clone();
        tasks.push(tokio::spawn(async move { j.append(m).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        store
            .history(&msgs[0].room, 1000, None)
            .await
            .unwrap()
            .len(),
        500
    );
}

#[tokio::test]
async fn close_flushes_then_refuses() {
    let store = store().await;
    let journal = Arc::new(EmbeddedJournal::start(
        store.clone(),
        JournalOptions::default(),
    ));
    let waits: Vec<_> = (0..100)
        .map(|i| {
            let j = journal.clone();
            tokio::spawn(async move { j.append(msg(&i.to_string())).await })
        })
        .collect();
    tokio::task::yield_now().await;
    journal.close().await;
    let mut acked = 0;
    for w in waits {
        match w.await.unwrap() {
            Ok(()) => acked += 1,
            Err(JournalError::Closed) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let stored = store
        .history(&RoomName::parse("j").unwrap(), 1000, None)
        .await
        .unwrap()
        .len();
    assert_eq!(
        stored, acked,
        "every acked message is stored, and only those were acked"
    );
    assert!(matches!(
        journal.append(msg("late")).await,
        Err(JournalError::Closed)
    ));
}

#[tokio::test]
async fn full_queue_refuses_at_once() {
    let store = store().await;
    let journal = Arc::new(EmbeddedJournal::start(
        store,
        JournalOptions {
            queue: 1,
            max_batch: 1,
        },
    ));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let j = journal.clone();
        tasks.push(tokio::spawn(
            async move { j.append(msg(&i.to_string())).await },
        ));
    }
    let mut full = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Err(JournalError::Full)) {
            full += 1;
        }
    }
    assert!(
        full > 0,
        "a one-slot queue under 200 concurrent appends must refuse some"
    );
}
