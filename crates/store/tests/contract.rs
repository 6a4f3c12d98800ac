//! One contract for every [`Store`]: each test body is written once and run
//! against each implementation.

use std::sync::Arc;

use switchboard_protocol::{Message, RoomName};
use switchboard_store::{Archived, DeadLetter, Store, StoreError, open};
use uuid::Uuid;

fn msg(room: &str, text: &str, ts: i64) -> Message {
    Message {
        id: Uuid::now_v7(),
        room: RoomName::parse(room).unwrap(),
        from: "alice".into(),
        text: text.into(),
        ts,
    }
}

async fn stores_once_per_id(store: Arc<dyn Store>) {
    let room = RoomName::parse("r1").unwrap();
    let m = msg("r1", "hello", 1);
    store.insert(std::slice::from_ref(&m)).await.unwrap();
    let mut retry = m.clone();
    retry.text = "changed on retry".into();
    store
        .insert(&[retry, msg("r1", "second", 2)])
        .await
        .unwrap();
    let h = store.history(&room, 10, None).await.unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0], m, "the first write of an id wins");
    assert_eq!(h[1].text, "second");
}

async fn history_is_latest_oldest_first(store: Arc<dyn Store>) {
    let room = RoomName::parse("r2").unwrap();
    let all: Vec<Message> = (0..10)
        .map(|i| msg("r2", &format!("m{i}"), 100 + i))
        .collect();
    store.insert(&all).await.unwrap();
    store
        .insert(&[msg("other", "elsewhere", 105)])
        .await
        .unwrap();
    let h = store.history(&room, 3, None).await.unwrap();
    assert_eq!(
        h.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["m7", "m8", "m9"]
    );
    let h = store.history(&room, 3, Some(all[7].id)).await.unwrap();
    assert_eq!(
        h.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["m4", "m5", "m6"]
    );
    assert!(
        store
            .history(&room, 3, Some(all[0].id))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .history(&room, 3, Some(Uuid::now_v7()))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.history(&room, 100, None).await.unwrap().len(), 10);
    assert!(store.history(&room, 0, None).await.unwrap().is_empty());
}

async fn same_millisecond_orders_by_id(store: Arc<dyn Store>) {
    let room = RoomName::parse("r3").unwrap();
    let batch: Vec<Message> = (0..5).map(|i| msg("r3", &format!("m{i}"), 7)).collect();
    store.insert(&batch).await.unwrap();
    let h = store.history(&room, 5, None).await.unwrap();
    assert_eq!(h, batch, "v7 ids break ties in send order");
    let h = store.history(&room, 5, Some(batch[2].id)).await.unwrap();
    assert_eq!(h, batch[..2]);
}

async fn keeps_text_exactly(store: Arc<dyn Store>) {
    let room = RoomName::parse("r4").unwrap();
    let m = msg("r4", "quotes \" ' ; DROP TABLE messages; -- ünï 🎉\n", 1);
    store.insert(std::slice::from_ref(&m)).await.unwrap();
    assert_eq!(store.history(&room, 1, None).await.unwrap(), vec![m]);
}

async fn archive_stores_once_with_dead_letters(store: Arc<dyn Store>) {
    let room = RoomName::parse("r5").unwrap();
    let records: Vec<Archived> = (0..5)
        .map(|i| Archived {
            message: msg("r5", &format!("a{i}"), 10 + i),
            node: Some("n1".into()),
            partition: 2,
            offset: i,
        })
        .collect();
    let dead = DeadLetter {
        topic: "messages".into(),
        partition: 2,
        offset: 99,
        key: Some(b"r5".to_vec()),
        payload: Some(b"\xffnot json".to_vec()),
        error: "expected value".into(),
    };
    store
        .archive(&records, std::slice::from_ref(&dead))
        .await
        .unwrap();
    // The same batch again (a re-read after a crash) adds nothing.
    store
        .archive(&records, std::slice::from_ref(&dead))
        .await
        .unwrap();
    let h = store.history(&room, 100, None).await.unwrap();
    assert_eq!(
        h,
        records
            .iter()
            .map(|r| r.message.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(store.dead_letters(10).await.unwrap(), vec![dead]);
}

macro_rules! contract {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;
            #[tokio::test]
            async fn stores_once_per_id() {
                super::stores_once_per_id($open).await
            }
            #[tokio::test]
            async fn history_is_latest_oldest_first() {
                super::history_is_latest_oldest_first($open).await
            }
            #[tokio::test]
            async fn same_millisecond_orders_by_id() {
                super::same_millisecond_orders_by_id($open).await
            }
            #[tokio::test]
            async fn keeps_text_exactly() {
                super::keeps_text_exactly($open).await
            }
            #[tokio::test]
            async fn archive_stores_once_with_dead_letters() {
                super::archive_stores_once_with_dead_letters($open).await
            }
        }
    };
}

contract!(sqlite_memory, open("sqlite::memory:").await.unwrap());
contract!(sqlite_file, {
    let dir = tempfile::tempdir().unwrap().keep();
    open(&format!("sqlite://{}", dir.join("t.db").display()))
        .await
        .unwrap()
});

/// A store in a fresh schema of the test PostgreSQL, so tests run in
/// parallel and reruns see no old rows.
async fn pg() -> Arc<dyn Store> {
    let base = std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("t_{}", Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    open(&format!("{base}?options=-c%20search_path%3D{schema}"))
        .await
        .unwrap()
}

contract!(postgres, pg().await);

#[tokio::test]
async fn sqlite_file_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("reopen.db").display());
    let m = msg("keep", "persisted", 1);
    open(&url)
        .await
        .unwrap()
        .insert(std::slice::from_ref(&m))
        .await
        .unwrap();
    let again = open(&url).await.unwrap();
    assert_eq!(
        again
            .history(&RoomName::parse("keep").unwrap(), 5, None)
            .await
            .unwrap(),
        vec![m]
    );
}

#[tokio::test]
async fn urls_are_checked() {
    assert!(matches!(
        open("mysql://x/y").await.err(),
        Some(StoreError::UnsupportedUrl(_))
    ));
}
