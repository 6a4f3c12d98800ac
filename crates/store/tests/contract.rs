//! One contract for every [`Store`]: each test body is written once and run
//! against each implementation.

use std::sync::Arc;

use switchboard_protocol::{Data, Message, RoomName};
use switchboard_store::{Archived, DeadLetter, Store, StoreError, open};
use uuid::Uuid;

fn msg(room: &str, text: &str, ts: i64) -> Message {
    Message {
        id: Uuid::now_v7(),
        room: RoomName::parse(room).unwrap(),
        from: "alice".into(),
        text: text.into(),
        ts,
        seq: 0,
        epoch: String::new(),
        data: None,
        deleted: false,
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
    // The same id in another room is another message (ids are per room,
    // like positions and resends).
    let elsewhere = Message {
        room: RoomName::parse("r1-other").unwrap(),
        text: "same id, other room".into(),
        ..m.clone()
    };
    store
        .insert(std::slice::from_ref(&elsewhere))
        .await
        .unwrap();
    let other = store.history(&elsewhere.room, 10, None).await.unwrap();
    assert_eq!(other, vec![elsewhere.clone()]);
    assert_eq!(store.history(&room, 10, None).await.unwrap()[0], m);
    // Paging before it reads its own room's place of it.
    assert_eq!(
        store
            .history(&elsewhere.room, 10, Some(m.id))
            .await
            .unwrap(),
        vec![]
    );
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

fn at(room: &str, epoch: &str, seq: u64) -> Message {
    Message {
        seq,
        epoch: epoch.into(),
        ..msg(room, &format!("{epoch}-{seq}"), 1_000 + seq as i64)
    }
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

async fn positions_page_both_ways(store: Arc<dyn Store>) {
    let room = RoomName::parse("pos").unwrap();
    let mut batch: Vec<Message> = (1..=10).map(|n| at("pos", "e1", n)).collect();
    batch.extend((1..=3).map(|n| at("pos", "e2", n)));
    batch.push(at("other", "e1", 11));
    batch.push(msg("pos", "no position", 5_000));
    store.insert(&batch).await.unwrap();
    // A retry of a stored message changes nothing.
    store.insert(&batch[..2]).await.unwrap();
    assert_eq!(
        seqs(&store.after_seq(&room, "e1", 4, 3).await.unwrap()),
        [5, 6, 7]
    );
    assert_eq!(
        seqs(&store.after_seq(&room, "e1", 8, 10).await.unwrap()),
        [9, 10]
    );
    assert!(
        store
            .after_seq(&room, "e1", 10, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        seqs(&store.before_seq(&room, "e1", 5, 3).await.unwrap()),
        [2, 3, 4]
    );
    assert_eq!(
        seqs(&store.before_seq(&room, "e2", 100, 10).await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(store.last_seq(&room, "e1").await.unwrap(), 10);
    assert_eq!(store.last_seq(&room, "e2").await.unwrap(), 3);
    assert_eq!(store.last_seq(&room, "nope").await.unwrap(), 0);
    // Positions come back with the message, and history shows them too.
    let read = store.after_seq(&room, "e1", 0, 1).await.unwrap();
    assert_eq!(read, vec![batch[0].clone()]);
    let latest = store.history(&room, 2, None).await.unwrap();
    assert_eq!((latest[1].seq, latest[1].epoch.as_str()), (0, ""));
    assert_eq!((latest[0].seq, latest[0].epoch.as_str()), (10, "e1"));
}

async fn keeps_data_and_applies_tombstones(store: Arc<dyn Store>) {
    let room = RoomName::parse("moderated").unwrap();
    let value = serde_json::json!({"move": "e4", "clock": [300, 295.5], "nested": {"ok": true}});
    let with_data = Message {
        text: String::new(),
        data: Some(Data::from_value(&value)),
        ..at("moderated", "e1", 1)
    };
    let both = Message {
        data: Some(Data::from_value(&serde_json::json!([1, "two", null]))),
        ..at("moderated", "e1", 2)
    };
    let doomed = at("moderated", "e1", 3);
    let kept = at("moderated", "e1", 4);
    // The message and its deletion in one batch: the deletion comes after.
    store
        .insert(&[
            with_data.clone(),
            both.clone(),
            doomed.clone(),
            doomed.tombstone(),
        ])
        .await
        .unwrap();
    store.insert(std::slice::from_ref(&kept)).await.unwrap();
    let read = store.after_seq(&room, "e1", 0, 10).await.unwrap();
    assert_eq!(seqs(&read), [1, 2, 3, 4], "a tombstone keeps its position");
    let stored: serde_json::Value =
        serde_json::from_str(read[0].data.as_ref().unwrap().get()).unwrap();
    assert_eq!(stored, value, "the same JSON value comes back");
    assert_eq!(read[0].text, "");
    assert_eq!(read[1].text, both.text);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(read[1].data.as_ref().unwrap().get()).unwrap(),
        serde_json::json!([1, "two", null])
    );
    assert!(read[2].deleted && read[2].text.is_empty() && read[2].data.is_none());
    assert_eq!((read[2].id, read[2].seq), (doomed.id, 3));
    assert!(!read[3].deleted && read[3].text == kept.text);
    // Deleting a stored message later, and again: one tombstone, idempotent.
    store.insert(&[with_data.tombstone()]).await.unwrap();
    store.insert(&[with_data.tombstone()]).await.unwrap();
    let got = store.get(&room, with_data.id).await.unwrap().unwrap();
    assert!(got.deleted && got.data.is_none());
    // A resend of a deleted message does not bring it back.
    store
        .insert(std::slice::from_ref(&with_data))
        .await
        .unwrap();
    assert!(
        store
            .get(&room, with_data.id)
            .await
            .unwrap()
            .unwrap()
            .deleted
    );
    // A tombstone of a message never stored, or of another room, adds nothing.
    store
        .insert(&[msg("moderated", "never", 9).tombstone()])
        .await
        .unwrap();
    store
        .insert(&[Message {
            room: RoomName::parse("elsewhere").unwrap(),
            ..kept.tombstone()
        }])
        .await
        .unwrap();
    assert_eq!(store.history(&room, 10, None).await.unwrap().len(), 4);
    assert!(!store.get(&room, kept.id).await.unwrap().unwrap().deleted);
    assert!(store.get(&room, Uuid::now_v7()).await.unwrap().is_none());
}

async fn an_epoch_outlives_only_a_clean_run(store: Arc<dyn Store>) {
    let first = store.begin_epoch().await.unwrap();
    assert!(!first.is_empty());
    store.end_epoch(&first).await.unwrap();
    assert_eq!(store.begin_epoch().await.unwrap(), first, "clean: kept");
    // No end: the run crashed, positions may have been lost.
    let second = store.begin_epoch().await.unwrap();
    assert_ne!(second, first);
    // Ending an epoch that is no longer current changes nothing.
    store.end_epoch(&first).await.unwrap();
    assert_ne!(store.begin_epoch().await.unwrap(), second);
}

async fn heartbeats_keep_the_latest_per_process(store: Arc<dyn Store>) {
    assert!(store.beats(10_000).await.unwrap().is_empty());
    store.beat("archive", "a1", r#"{"lag":5}"#).await.unwrap();
    store.beat("hooks", "h1", "{}").await.unwrap();
    store.beat("archive", "a1", r#"{"lag":0}"#).await.unwrap();
    let beats = store.beats(10_000).await.unwrap();
    let seen: Vec<_> = beats
        .iter()
        .map(|b| (b.kind.as_str(), b.process.as_str(), b.status.as_str()))
        .collect();
    assert_eq!(
        seen,
        [("archive", "a1", r#"{"lag":0}"#), ("hooks", "h1", "{}")]
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        beats.iter().all(|b| (now - b.at).abs() < 5_000),
        "{beats:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    assert!(
        store.beats(10).await.unwrap().is_empty(),
        "older than 10 ms"
    );
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
            #[tokio::test]
            async fn positions_page_both_ways() {
                super::positions_page_both_ways($open).await
            }
            #[tokio::test]
            async fn keeps_data_and_applies_tombstones() {
                super::keeps_data_and_applies_tombstones($open).await
            }
            #[tokio::test]
            async fn an_epoch_outlives_only_a_clean_run() {
                super::an_epoch_outlives_only_a_clean_run($open).await
            }
            #[tokio::test]
            async fn heartbeats_keep_the_latest_per_process() {
                super::heartbeats_keep_the_latest_per_process($open).await
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
    open(&pg_schema().await).await.unwrap()
}

/// The URL of a fresh, empty schema of the test PostgreSQL.
async fn pg_schema() -> String {
    let base = std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("t_{}", Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    format!("{base}?options=-c%20search_path%3D{schema}")
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

/// Migrations before the one that adds positions, as a store had them then.
fn before_positions(mut migrator: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    let kept: Vec<_> = migrator
        .migrations
        .iter()
        .take_while(|m| !m.description.contains("positions"))
        .cloned()
        .collect();
    assert!(kept.len() < migrator.migrations.len());
    migrator.migrations = kept.into();
    migrator
}

/// Rows stored before positions existed get them: numbered per room in
/// history order, in the store's epoch, so recovery works across the
/// upgrade and the ordering point continues after them.
async fn old_rows_are_numbered(store: Arc<dyn Store>) {
    let epoch = store.begin_epoch().await.unwrap();
    let a = RoomName::parse("old-a").unwrap();
    let read = store.after_seq(&a, &epoch, 0, 10).await.unwrap();
    assert_eq!(
        read.iter()
            .map(|m| (m.seq, m.text.as_str()))
            .collect::<Vec<_>>(),
        [(1, "first"), (2, "second"), (3, "third")]
    );
    let b = RoomName::parse("old-b").unwrap();
    assert_eq!(store.last_seq(&b, &epoch).await.unwrap(), 1);
}

const OLD_ROWS: [(&str, &str, i64); 4] = [
    ("old-a", "third", 30),
    ("old-a", "first", 10),
    ("old-b", "only", 5),
    ("old-a", "second", 20),
];

#[tokio::test]
async fn the_positions_migration_numbers_old_rows_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    before_positions(sqlx::migrate!("migrations/sqlite"))
        .run(&pool)
        .await
        .unwrap();
    for (room, text, ts) in OLD_ROWS {
        sqlx::query(
            "INSERT INTO messages (id, room, sender, body, sent_at) VALUES (?, ?, 'a', ?, ?)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(room)
        .bind(text)
        .bind(ts)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    old_rows_are_numbered(open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn the_positions_migration_numbers_old_rows_in_postgres() {
    let url = pg_schema().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    before_positions(sqlx::migrate!("migrations/postgres"))
        .run(&pool)
        .await
        .unwrap();
    for (room, text, ts) in OLD_ROWS {
        sqlx::query(
            "INSERT INTO messages (id, room, sender, body, sent_at) \
             VALUES ($1, $2, 'a', $3, TIMESTAMPTZ 'epoch' + $4 * INTERVAL '1 millisecond')",
        )
        .bind(Uuid::now_v7())
        .bind(room)
        .bind(text)
        .bind(ts as f64)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    old_rows_are_numbered(open(&url).await.unwrap()).await;
}
