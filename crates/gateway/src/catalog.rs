//! Every metric switchboard exports, with its help text and the label
//! values it takes: registered at start with zero, so `/metrics` shows every
//! series (with `# HELP`) before its first event, and dashboards and alerts
//! never see a missing series. A test checks that every metric the code
//! records is listed here (`tests/metrics_catalog.rs`), and docs/operations.md
//! explains each one.

/// What a metric measures over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Which process exports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// `switchboard serve`.
    Node,
    /// `switchboard archive` (on its `METRICS_ADDR`).
    Archiver,
    /// `switchboard hooks` (on its `METRICS_ADDR`).
    Hooks,
}

/// One metric: its name, kind, help text and its label's values (none: a
/// single series; an empty list: series appear as values are seen).
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// The label's key and every value it takes.
    pub label: Option<(&'static str, &'static [&'static str])>,
}

impl Metric {
    /// The process that exports it.
    pub fn process(&self) -> Process {
        if self.name.starts_with("switchboard_archive_") {
            Process::Archiver
        } else if self.name.starts_with("switchboard_hooks_") {
            Process::Hooks
        } else {
            Process::Node
        }
    }
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
        label: None,
    }
}

const fn labeled(
    name: &'static str,
    help: &'static str,
    key: &'static str,
    values: &'static [&'static str],
) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
        label: Some((key, values)),
    }
}

/// Every metric, by area.
pub const METRICS: &[Metric] = &[
    // Connections and rooms.
    Metric {
        name: "switchboard_connections",
        kind: Kind::Gauge,
        help: "Open client connections on this node, by protocol.",
        label: Some(("protocol", &["ws", "socket.io"])),
    },
    Metric {
        name: "switchboard_rooms",
        kind: Kind::Gauge,
        help: "Rooms with at least one member on this node.",
        label: None,
    },
    // Messages.
    counter(
        "switchboard_messages_accepted_total",
        "Messages accepted (given a position) on this node; resends of a known id are not counted.",
    ),
    counter(
        "switchboard_messages_retried_total",
        "Sends of an id that already had its position (a client's resend).",
    ),
    counter(
        "switchboard_messages_ephemeral_total",
        "Live-only messages fanned out (never journaled or stored).",
    ),
    counter(
        "switchboard_messages_deleted_total",
        "Messages deleted through the server API.",
    ),
    counter(
        "switchboard_deliveries_total",
        "Messages handed to local connections (one per member per message).",
    ),
    labeled(
        "switchboard_slow_consumers_total",
        "Connections cut because their queue filled (close 1008), by protocol.",
        "protocol",
        &["ws", "socket.io"],
    ),
    // Refusals.
    labeled(
        "switchboard_auth_refusals_total",
        "Requests refused for their credentials, by reason.",
        "reason",
        &["token", "origin", "api_key", "metrics", "admin"],
    ),
    labeled(
        "switchboard_admin_logins_total",
        "Admin console logins, by result (accepted, refused: a wrong token, limited: too many attempts).",
        "result",
        &["accepted", "refused", "limited"],
    ),
    labeled(
        "switchboard_limit_refusals_total",
        "Requests refused by a limit, by limit.",
        "limit",
        &[
            "connect_rate",
            "frame_rate",
            "http_connections_per_ip",
            "max_connections",
            "max_http_connections",
            "send_rate",
        ],
    ),
    counter(
        "switchboard_token_expiries_total",
        "Connections closed because their token expired without a refresh.",
    ),
    counter(
        "switchboard_token_refreshes_total",
        "Tokens refreshed on open connections.",
    ),
    counter(
        "switchboard_users_disconnected_total",
        "Connections closed by the server API's disconnect.",
    ),
    // The bus between nodes.
    counter(
        "switchboard_bus_published_total",
        "Messages this node published to the other nodes.",
    ),
    counter(
        "switchboard_bus_received_total",
        "Messages received from the other nodes.",
    ),
    counter(
        "switchboard_bus_publish_failed_total",
        "Messages that could not be published to the other nodes (Redis unreachable).",
    ),
    labeled(
        "switchboard_bus_dropped_total",
        "Messages dropped on the bus, by reason (the receiving node fills such gaps from the room's log).",
        "reason",
        &["publish_queue_full", "inbox_full", "undecodable"],
    ),
    counter(
        "switchboard_bus_duplicates_total",
        "Messages a room's flow had delivered already (dropped by seq).",
    ),
    counter(
        "switchboard_bus_topology_changes_total",
        "Changes of a Redis Cluster's slot map this node followed (failovers, slot migrations).",
    ),
    counter(
        "switchboard_bus_replica_wait_failed_total",
        "Sends refused because fewer replicas than REDIS_WAIT_REPLICAS confirmed the position.",
    ),
    counter(
        "switchboard_gaps_filled_total",
        "Gaps in a room's positions filled from the room's log.",
    ),
    counter(
        "switchboard_gaps_unfilled_total",
        "Gaps in a room's positions that could not be filled in time.",
    ),
    counter(
        "switchboard_gap_messages_lost_total",
        "Messages in gaps that could not be filled (members missed them live).",
    ),
    counter(
        "switchboard_epoch_changes_total",
        "Rooms whose position began a new epoch (Redis lost the room's keys).",
    ),
    counter(
        "switchboard_presence_nodes_cleared_total",
        "Nodes that stopped beating whose members this node removed from presence.",
    ),
    Metric {
        name: "switchboard_presence_events_total",
        kind: Kind::Counter,
        help: "Presence changes produced to KAFKA_EVENTS_TOPIC for the webhooks, by result.",
        label: Some(("result", &["produced", "failed"])),
    },
    // The journal.
    counter(
        "switchboard_journal_appended_total",
        "Messages made durable by the journal.",
    ),
    counter(
        "switchboard_journal_failed_total",
        "Messages the journal could not make durable (the sender got `unavailable`).",
    ),
    Metric {
        name: "switchboard_journal_batch_seconds",
        kind: Kind::Histogram,
        help: "Time to make one batch durable (the embedded journal's commit, or Kafka's acknowledgement).",
        label: None,
    },
    // The archiver (switchboard archive).
    counter(
        "switchboard_archive_records_total",
        "Records the archiver stored and committed.",
    ),
    counter(
        "switchboard_archive_retries_total",
        "Batch writes the archiver retried (the store failed).",
    ),
    counter(
        "switchboard_archive_dead_letters_total",
        "Records the archiver could not decode, kept in dead_letters.",
    ),
    Metric {
        name: "switchboard_archive_lag_records",
        kind: Kind::Gauge,
        help: "Records in the journal topic not yet archived by the archivers' group, over every partition.",
        label: None,
    },
    Metric {
        name: "switchboard_archive_partition_lag_records",
        kind: Kind::Gauge,
        help: "Records not yet archived by the archivers' group, per partition.",
        label: Some(("partition", &[])),
    },
    Metric {
        name: "switchboard_archive_batch_seconds",
        kind: Kind::Histogram,
        help: "Time to store and commit one batch.",
        label: None,
    },
    // Webhooks (switchboard hooks).
    counter(
        "switchboard_hooks_batches_delivered_total",
        "Webhook batches an endpoint answered 2xx.",
    ),
    counter(
        "switchboard_hooks_events_total",
        "Events delivered to endpoints (counted once per endpoint that took them).",
    ),
    counter(
        "switchboard_hooks_attempts_failed_total",
        "Webhook POSTs that failed (an error, a timeout or a non-2xx answer) and were retried.",
    ),
    counter(
        "switchboard_hooks_dead_letters_total",
        "Webhook batches kept in webhook_dead_letters after WEBHOOK_MAX_ATTEMPTS.",
    ),
    Metric {
        name: "switchboard_hooks_lag_records",
        kind: Kind::Gauge,
        help: "Records in the journal and events topics not yet delivered by the hooks' group, over every partition.",
        label: None,
    },
    Metric {
        name: "switchboard_hooks_partition_lag_records",
        kind: Kind::Gauge,
        help: "Records not yet delivered by the hooks' group, per topic partition (`topic:partition`).",
        label: Some(("partition", &[])),
    },
];

/// Describes every metric of `process` to the installed recorder and sets
/// each series to zero (counters and gauges; a histogram has no series
/// until its first sample).
pub fn register(process: Process) {
    for m in METRICS.iter().filter(|m| m.process() == process) {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
        let series: Vec<Vec<(&str, &str)>> = match m.label {
            Some((key, values)) => values.iter().map(|v| vec![(key, *v)]).collect(),
            None => vec![vec![]],
        };
        for labels in series {
            let labels: Vec<metrics::Label> = labels
                .into_iter()
                .map(|(k, v)| metrics::Label::new(k, v))
                .collect();
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, labels).increment(0),
                Kind::Gauge => metrics::gauge!(m.name, labels).increment(0.0),
                Kind::Histogram => {}
            }
        }
    }
}
