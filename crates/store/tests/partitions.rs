//! PostgreSQL's archive partitioned by time: the migration of a filled
//! table, partitions made ahead and on demand, retention, a change of unit,
//! and reads that scan only the partitions that can hold their rows.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use sqlx::PgPool;
use switchboard_protocol::{Message, RoomName};
use switchboard_store::{Layout, PartitionUnit, Store, open_with_layout, pg_queries};
use uuid::Uuid;

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The URL of a fresh, empty schema of the test PostgreSQL.
async fn pg_schema() -> String {
    let base = std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("p_{}", Uuid::new_v4().simple());
    let admin = PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    format!("{base}?options=-c%20search_path%3D{schema}")
}

fn layout(unit: PartitionUnit, retention_days: Option<u32>) -> Layout {
    Layout {
        unit,
        retention_days,
        ahead: 3,
    }
}

fn message(room: &str, epoch: &str, seq: u64, ts: i64) -> Message {
    Message {
        id: Uuid::now_v7(),
        room: RoomName::parse(room).unwrap(),
        from: "ann".into(),
        text: format!("m{seq}"),
        ts,
        seq,
        epoch: epoch.into(),
        data: None,
        deleted: false,
    }
}

/// The partition each of `ids` is stored in.
async fn partitions_of(pool: &PgPool, ids: &[Uuid]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let name: String =
            sqlx::query_scalar("SELECT tableoid::regclass::text FROM messages WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap();
        out.push(name);
    }
    out
}

async fn partition_names(pool: &PgPool) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("SELECT name FROM archive_partitions")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn a_filled_table_becomes_the_first_partition_without_losing_a_row() {
    let url = pg_schema().await;
    let pool = PgPool::connect(&url).await.unwrap();
    let mut migrator = sqlx::migrate!("migrations/postgres");
    let before: Vec<_> = migrator
        .migrations
        .iter()
        .take_while(|m| !m.description.contains("partitioned"))
        .cloned()
        .collect();
    assert!(before.len() < migrator.migrations.len());
    migrator.migrations = before.into();
    migrator.run(&pool).await.unwrap();
    // 10,000 rows over ten days up to a day ago, in two rooms.
    let now = now_ms();
    let rows = 10_000i64;
    sqlx::query(
        "INSERT INTO messages (id, room, sender, body, sent_at, seq, epoch) \
         SELECT gen_random_uuid(), 'old-' || (n % 2), 'ann', 'text ' || n, \
                TIMESTAMPTZ 'epoch' + ($1 - (11 * 86400000) + n * 86400) * INTERVAL '1 millisecond', \
                n / 2 + 1, 'e0' \
         FROM generate_series(0, $2 - 1) AS n",
    )
    .bind(now)
    .bind(rows)
    .execute(&pool)
    .await
    .unwrap();
    let ids_before: BTreeSet<Uuid> = sqlx::query_scalar("SELECT id FROM messages")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids_before.len() as i64, rows);

    let store = open_with_layout(&url, true, layout(PartitionUnit::Day, None))
        .await
        .unwrap();
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE oid = 'messages'::regclass")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(kind, "p", "messages is partitioned");
    let ids_after: BTreeSet<Uuid> = sqlx::query_scalar("SELECT id FROM messages")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids_after, ids_before, "every row is still there");
    let legacy: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE tableoid = 'messages_before_partitioning'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(legacy, rows, "kept in place, as the first partition");
    // Reads work across the old rows and new ones, which go to the new
    // day partitions.
    let room = RoomName::parse("old-0").unwrap();
    let next = message("old-0", "e0", 5_001, now);
    store.insert(std::slice::from_ref(&next)).await.unwrap();
    let latest = store.history(&room, 3, None).await.unwrap();
    assert_eq!(
        latest.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [4_999, 5_000, 5_001]
    );
    assert_eq!(
        store.after_seq(&room, "e0", 4_998, 10).await.unwrap().len(),
        3
    );
    assert_eq!(store.last_seq(&room, "e0").await.unwrap(), 5_001);
    let [partition] = partitions_of(&pool, &[next.id]).await.try_into().unwrap();
    assert!(partition.starts_with("messages_day_"), "{partition}");
    // The same message again adds nothing.
    store.insert(std::slice::from_ref(&next)).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, rows + 1);
}

#[tokio::test]
async fn partitions_are_made_ahead_and_on_demand_and_dropped_past_the_retention() {
    let url = pg_schema().await;
    let store = open_with_layout(&url, true, layout(PartitionUnit::Day, Some(2)))
        .await
        .unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    // Yesterday to three days ahead, made at open.
    let made = partition_names(&pool).await;
    assert_eq!(made.len(), 5, "{made:?}");
    let now = now_ms();
    let old = message("r", "e", 1, now - 5 * DAY_MS);
    let recent = message("r", "e", 2, now - DAY_MS);
    let today = message("r", "e", 3, now);
    let ahead = message("r", "e", 4, now + 30 * DAY_MS);
    // A batch with a time no partition holds makes its partition.
    store
        .insert(&[old.clone(), recent.clone(), today.clone(), ahead.clone()])
        .await
        .unwrap();
    let parts = partitions_of(&pool, &[old.id, recent.id, today.id, ahead.id]).await;
    assert_eq!(parts.iter().collect::<BTreeSet<_>>().len(), 4, "{parts:?}");
    // Past two days, the old message's partition goes, whole.
    let done = store.maintain().await.unwrap();
    assert_eq!(done.dropped, [parts[0].clone()], "{done:?}");
    let room = RoomName::parse("r").unwrap();
    let kept = store.history(&room, 10, None).await.unwrap();
    assert_eq!(kept.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3, 4]);
    let gone: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&parts[0])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(gone, None, "the table itself was dropped");
    assert_eq!(
        store.maintain().await.unwrap().dropped,
        Vec::<String>::new()
    );

    // Another unit later: weeks fill the gaps between the days made.
    let weekly = open_with_layout(&url, false, layout(PartitionUnit::Month, None))
        .await
        .unwrap();
    let later = message("r", "e", 5, now + 60 * DAY_MS);
    weekly.insert(std::slice::from_ref(&later)).await.unwrap();
    let [p] = partitions_of(&pool, &[later.id]).await.try_into().unwrap();
    assert!(p.starts_with("messages_month_"), "{p}");
    let overlaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM archive_partitions a JOIN archive_partitions b \
         ON a.name < b.name AND a.starts < b.ends AND b.starts < a.ends",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(overlaps, 0);
}

/// The partitions `plan` (EXPLAIN ANALYZE, JSON) read rows from: scans
/// of `messages_*` that ran, outside the init plans that look up the
/// time of a position or an id (one index probe per partition).
fn scanned(plan: &Value, out: &mut BTreeSet<String>) {
    if plan["Parent Relationship"] == "InitPlan" {
        return;
    }
    if let Some(rel) = plan["Relation Name"].as_str()
        && plan["Actual Loops"].as_u64().unwrap_or(0) > 0
    {
        out.insert(rel.to_owned());
    }
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            scanned(child, out);
        }
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Runs `query` under EXPLAIN ANALYZE: the partitions it read, and the plan.
async fn explain(
    pool: &PgPool,
    query: &str,
    bind: impl FnOnce(Query<'_>) -> Query<'_>,
) -> (BTreeSet<String>, String) {
    let sql = format!("EXPLAIN (ANALYZE, FORMAT JSON) {query}");
    let json: Value = bind(sqlx::query(sqlx::AssertSqlSafe(sql.clone())))
        .fetch_one(pool)
        .await
        .map(|row| sqlx::Row::get::<Value, _>(&row, 0))
        .unwrap();
    let mut out = BTreeSet::new();
    scanned(&json[0]["Plan"], &mut out);
    (out, serde_json::to_string_pretty(&json).unwrap())
}

#[tokio::test]
async fn reads_scan_only_the_partitions_that_can_hold_their_rows() {
    let url = pg_schema().await;
    let store: Arc<dyn Store> = open_with_layout(&url, true, layout(PartitionUnit::Day, None))
        .await
        .unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    // Ten days of one room, 20 messages a day, seqs in time order.
    let now = now_ms();
    let mut batch = Vec::new();
    for day in 0..10 {
        for k in 0..20 {
            let seq = day * 20 + k + 1;
            batch.push(message(
                "busy",
                "e",
                seq as u64,
                now - (9 - day) * DAY_MS + k * 1_000,
            ));
        }
    }
    store.insert(&batch).await.unwrap();
    sqlx::query("ANALYZE messages")
        .execute(&pool)
        .await
        .unwrap();
    let all = partition_names(&pool).await.len();
    assert!(all >= 10, "{all} partitions");
    let ids: Vec<Uuid> = batch.iter().map(|m| m.id).collect();
    let held = partitions_of(&pool, &ids).await;
    // The partitions of messages `range` (by their index in the batch).
    let of = |range: std::ops::Range<usize>| -> BTreeSet<&String> { held[range].iter().collect() };

    // Recovery after a seq of yesterday: yesterday's and today's partitions
    // (and the ones made ahead, empty) at most, never the older days.
    let (hit, plan) = explain(&pool, pg_queries::AFTER_SEQ, |q| {
        q.bind("busy").bind("e").bind(170i64).bind(100i64)
    })
    .await;
    let older: Vec<_> = hit.iter().filter(|p| of(0..160).contains(p)).collect();
    assert!(
        older.is_empty(),
        "AFTER_SEQ read old partitions {older:?}:\n{plan}"
    );
    assert!(!hit.is_empty());
    println!("AFTER_SEQ scanned {hit:?}");

    // The latest page reads today's partition (it has enough rows) and
    // the empty ones made ahead, none older.
    let (hit, plan) = explain(&pool, pg_queries::LATEST, |q| q.bind("busy").bind(10i64)).await;
    let older: Vec<_> = hit.iter().filter(|p| of(0..180).contains(p)).collect();
    assert!(
        older.is_empty() && hit.contains(&held[199]),
        "LATEST read {hit:?}:\n{plan}"
    );
    println!("LATEST scanned {hit:?}");

    // A page before a message of three days ago: that day back, not the
    // newer days.
    let before = batch[6 * 20 + 5].id;
    let (hit, plan) = explain(&pool, pg_queries::BEFORE_ID, |q| {
        q.bind(before).bind("busy").bind(10i64)
    })
    .await;
    let newer: Vec<_> = hit.iter().filter(|p| of(7 * 20..200).contains(p)).collect();
    assert!(
        newer.is_empty(),
        "BEFORE_ID read newer partitions {newer:?}:\n{plan}"
    );
    println!("BEFORE_ID scanned {hit:?}");

    // A page before seq 30 (the second day): the first two days only.
    let (hit, plan) = explain(&pool, pg_queries::BEFORE_SEQ, |q| {
        q.bind("busy").bind("e").bind(30i64).bind(10i64)
    })
    .await;
    let newer: Vec<_> = hit.iter().filter(|p| of(2 * 20..200).contains(p)).collect();
    assert!(
        newer.is_empty(),
        "BEFORE_SEQ read newer partitions {newer:?}:\n{plan}"
    );
    println!("BEFORE_SEQ scanned {hit:?}");
}
