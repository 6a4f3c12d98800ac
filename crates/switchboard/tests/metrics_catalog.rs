//! `/metrics` shows every series from the start, with its help text, and
//! every metric the code records is in the catalog (so a new one cannot be
//! missing from dashboards, alerts and docs/operations.md).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use std::time::Duration;

use common::pipeline::{Archiver, await_ready, await_rows, kafka, kafka_node, setup};
use common::redis::free_port;
use common::{Node, unique};
use switchboard_gateway::catalog::{Kind, METRICS, Metric, Process};

/// Checks `text` (a `/metrics` page) has every series of `metrics` that
/// exists from the start, with its help text (histograms have none before
/// their first sample, nor labels whose values come later).
fn has_every_series<'a>(text: &str, metrics: impl Iterator<Item = &'a Metric>) {
    let from_start =
        |m: &&Metric| m.kind != Kind::Histogram && m.label.is_none_or(|(_, v)| !v.is_empty());
    for m in metrics.filter(from_start) {
        assert!(
            text.contains(&format!("# HELP {} {}", m.name, m.help)),
            "no help for {}",
            m.name
        );
        let series: Vec<String> = match m.label {
            Some((key, values)) => values
                .iter()
                .map(|v| format!("{}{{{key}=\"{v}\"}} ", m.name))
                .collect(),
            None => vec![format!("{} ", m.name)],
        };
        for s in series {
            let line = text.lines().find(|l| l.starts_with(&s));
            assert!(line.is_some(), "no series {s}in:\n{text}");
        }
    }
}

#[tokio::test]
async fn a_fresh_node_shows_every_series_at_zero_with_its_help() {
    let node = Node::memory().await;
    let text = reqwest::get(node.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    has_every_series(
        &text,
        METRICS.iter().filter(|m| m.process() == Process::Node),
    );
    assert!(
        !text.contains("switchboard_archive_"),
        "a node shows no archiver metrics"
    );
    node.stop().await;
}

/// The value of the series `series` (name and labels) on a metrics page.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn an_archiver_with_metrics_addr_shows_its_records_and_its_lag() {
    let s = setup().await;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let archiver = Archiver::start_with(
        &kafka(),
        &s.topic,
        &s.group,
        &s.db,
        &[("METRICS_ADDR", addr.as_str())],
    );
    let url = format!("http://{addr}/metrics");
    let page = || async {
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    // Every archiver series from the start.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut text = page().await;
    while text.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no metrics on {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = page().await;
    }
    has_every_series(
        &text,
        METRICS.iter().filter(|m| m.process() == Process::Archiver),
    );
    assert!(!text.contains("switchboard_connections"), "no node metrics");
    // Records counted; the lag comes down to zero once they are stored.
    let room = unique("m");
    let mut c = node.client("ann").await;
    c.join(&room).await;
    for i in 0..50 {
        c.send_text(&room, &format!("m{i}")).await;
    }
    await_rows(&s.schema, 50, Duration::from_secs(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = page().await;
        let records = value(&text, "switchboard_archive_records_total").unwrap_or(0.0);
        let lag = value(&text, "switchboard_archive_lag_records");
        if records >= 50.0
            && lag == Some(0.0)
            && text.contains("switchboard_archive_partition_lag_records{partition=")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "records {records}, lag {lag:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(archiver.stop().success());
    node.stop().await;
}

/// Every `metrics::counter!/gauge!/histogram!("name", "key" => "value")` in
/// the crates' sources: (name, literal label values).
fn recorded() -> BTreeSet<(String, Option<(String, String)>)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut found = BTreeSet::new();
    let mut stack = vec![crates.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("tests") && !path.ends_with("target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for kind in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(&format!("metrics::{kind}")) {
                        let call = &text[at + kind.len() + 9..];
                        let call = &call[..call.find(')').unwrap_or(call.len())];
                        let mut quoted = call.split('"').skip(1).step_by(2);
                        let Some(name) = quoted.next() else { continue };
                        if !name.starts_with("switchboard_") {
                            continue;
                        }
                        let label = match (quoted.next(), quoted.next()) {
                            (Some(k), Some(v)) => Some((k.to_owned(), v.to_owned())),
                            _ => None,
                        };
                        found.insert((name.to_owned(), label));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_metric_the_code_records_is_in_the_catalog() {
    let found = recorded();
    assert!(found.len() > 20, "the scan found {found:?}");
    for (name, label) in &found {
        let m = METRICS
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} is recorded but not in the catalog"));
        if let Some((key, value)) = label {
            let (k, values) = m.label.unwrap_or_else(|| panic!("{name} has a label"));
            assert_eq!(k, key, "{name}'s label");
            assert!(
                values.contains(&value.as_str()),
                "{name}{{{key}=\"{value}\"}} is not in the catalog"
            );
        }
    }
    // And nothing in the catalog is stale.
    let names: BTreeSet<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    for m in METRICS {
        assert!(
            names.contains(m.name),
            "{} is in the catalog but never recorded",
            m.name
        );
    }
}
