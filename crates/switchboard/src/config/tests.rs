//! Configuration parsing and validation.

use super::*;

fn parse(args: &[&str]) -> Result<Config, String> {
    let mut all = vec!["switchboard"];
    all.extend_from_slice(args);
    let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
    cli.config.validate().map_err(|e| e.to_string())?;
    Ok(cli.config)
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let c = parse(&[
        "--jwt-secret",
        "0123456789abcdef0123456789abcdef-hush",
        "--api-key",
        "key-0123456789abcdef",
    ])
    .unwrap();
    let shown = format!("{c:?} {:?}", c.auth_config().unwrap());
    assert!(
        !shown.contains("hush") && !shown.contains("key-0123"),
        "{shown}"
    );
    assert!(shown.contains("<redacted>"));
}

#[test]
fn flags_override_and_validate() {
    let c = parse(&["--port", "9001", "--database-url", "sqlite::memory:"]).unwrap();
    assert_eq!(c.listener.port, 9001);
    assert_eq!(c.database_url(), "sqlite::memory:");
    let c = parse(&["serve", "--port", "9002"]).unwrap();
    assert_eq!(c.listener.port, 9002);
}

#[test]
fn aliases_apply_when_the_main_name_is_unset() {
    let c = parse(&["--postgres-url", "sqlite://alias.db"]).unwrap();
    assert_eq!(c.database_url(), "sqlite://alias.db");
    let c = parse(&["--kafka-broker-url", "localhost:9092"]).unwrap();
    assert_eq!(c.kafka.kafka_brokers().as_deref(), Some("localhost:9092"));
}

#[test]
fn invalid_values_name_the_variable() {
    let e = parse(&["--port", "eighty"]).unwrap_err();
    assert!(e.contains("PORT"), "{e}");
    let e = parse(&["--redis-url", "http://x"]).unwrap_err();
    assert!(e.contains("REDIS_URL"), "{e}");
    // A Redis Cluster by its seeds.
    assert!(parse(&["--redis-url", "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"]).is_ok());
    for bad in [
        "redis+cluster://",
        "redis+cluster://h:port",
        "redis+cluster://,",
    ] {
        let e = parse(&["--redis-url", bad]).unwrap_err();
        assert!(
            e.contains("REDIS_URL") && e.contains("redis+cluster"),
            "{bad}: {e}"
        );
    }
    let e = parse(&["--archive-partition", "hour"]).unwrap_err();
    assert!(e.contains("ARCHIVE_PARTITION"), "{e}");
    let e = parse(&["--retention-days", "0"]).unwrap_err();
    assert!(e.contains("RETENTION_DAYS"), "{e}");
    let c = parse(&["--archive-partition", "week", "--retention-days", "30"]).unwrap();
    assert_eq!(c.layout().unit, switchboard_store::PartitionUnit::Week);
    assert_eq!(c.layout().retention_days, Some(30));
    for bad in ["ftp://x/y", "https://h/x;events=wave", "   "] {
        let e = parse(&["--webhook-url", bad]).unwrap_err();
        assert!(e.contains("WEBHOOK_URL"), "{bad}: {e}");
    }
    let c = parse(&[
        "--webhook-url",
        "https://a/x;events=message http://b:8080/y",
    ])
    .unwrap();
    assert!(
        c.hooks.hooks_options(None).is_err(),
        "a secret is needed too"
    );
    let presence = ["--webhook-secret", "0123456789abcdef", "--webhook-url"];
    let c = parse(&[&presence[..], &["http://h/x;events=member_joined"]].concat()).unwrap();
    let e = c.hooks.hooks_options(None).unwrap_err().to_string();
    assert!(e.contains("KAFKA_EVENTS_TOPIC"), "{e}");
    assert!(c.hooks.hooks_options(Some("events")).is_ok());
    let c = parse(&[&presence[..], &["http://h/x"]].concat()).unwrap();
    assert!(c.hooks.hooks_options(None).is_ok(), "every event there is");
    let e = parse(&["--kafka-events-topic", "messages"]).unwrap_err();
    assert!(e.contains("KAFKA_EVENTS_TOPIC"), "{e}");
    let e = parse(&["--kafka-events-topic", "bad name"]).unwrap_err();
    assert!(e.contains("KAFKA_EVENTS_TOPIC"), "{e}");
    let e = parse(&["--admin-token", "short"]).unwrap_err();
    assert!(e.contains("ADMIN_TOKEN"), "{e}");
    assert!(
        parse(&["--admin-token", ""])
            .unwrap()
            .admin_token()
            .is_none()
    );
    let e = parse(&["--webhook-secret", "short"]).unwrap_err();
    assert!(e.contains("WEBHOOK_SECRET"), "{e}");
    let e = parse(&["--redis-wait-replicas", "17"]).unwrap_err();
    assert!(e.contains("REDIS_WAIT_REPLICAS"), "{e}");
    let e = parse(&["--database-url", "postgres://"]).unwrap_err();
    assert!(e.contains("DATABASE_URL"), "{e}");
    assert!(parse(&["--database-url", "postgres://postgres@localhost/db"]).is_ok());
    let e = parse(&["--database-url", "mysql://x"]).unwrap_err();
    assert!(e.contains("DATABASE_URL"), "{e}");
    let e = parse(&["--redis-prefix", "has space"]).unwrap_err();
    assert!(e.contains("REDIS_PREFIX"), "{e}");
    // `chat` + room `room:lobby` and `chat:room` + `lobby` would share
    // the channel `chat:room:room:lobby`: a prefix may not contain `:`.
    let e = parse(&["--redis-prefix", "chat:room"]).unwrap_err();
    assert!(e.contains("REDIS_PREFIX"), "{e}");
    assert!(parse(&["--redis-prefix", "chat.prod-1"]).is_ok());
    let e = parse(&["--trusted-proxies", "10.0.0.0/8,nginx"]).unwrap_err();
    assert!(e.contains("TRUSTED_PROXIES") && e.contains("nginx"), "{e}");
    assert!(parse(&["--trusted-proxies", "10.0.0.0/8, ::1"]).is_ok());
    let e = parse(&["--jwt-audience", "chat"]).unwrap_err();
    assert!(e.contains("JWT_AUDIENCE"), "{e}");
    let e = parse(&["--metrics-addr", "nowhere"]).unwrap_err();
    assert!(e.contains("METRICS_ADDR"), "{e}");
    let e = parse(&["--kafka-brokers", "nohostport"]).unwrap_err();
    assert!(e.contains("KAFKA_BROKERS"), "{e}");
    let e = parse(&["--kafka-config", "novalue"]).unwrap_err();
    assert!(e.contains("KAFKA_CONFIG"), "{e}");
    let e = parse(&["--kafka-compression", "brotli"]).unwrap_err();
    assert!(e.contains("KAFKA_COMPRESSION"), "{e}");
    let e = parse(&["--archive-batch", "0"]).unwrap_err();
    assert!(e.contains("ARCHIVE_BATCH"), "{e}");
    let e = parse(&["--kafka-topic", "bad topic"]).unwrap_err();
    assert!(e.contains("KAFKA_TOPIC"), "{e}");
    let e = parse(&["--history-default", "600"]).unwrap_err();
    assert!(e.contains("HISTORY_DEFAULT"), "{e}");
    let e = parse(&["--max-message-bytes=-1"]).unwrap_err();
    assert!(e.contains("MAX_MESSAGE_BYTES"), "{e}");
    let e = parse(&["--max-frame-bytes", "100"]).unwrap_err();
    assert!(e.contains("MAX_FRAME_BYTES"), "{e}");
    let e = parse(&["--client-queue-frames", "0"]).unwrap_err();
    assert!(e.contains("CLIENT_QUEUE_FRAMES"), "{e}");
    for bad in ["0", "100001", "-1"] {
        let e = parse(&[&format!("--recovery-max={bad}")]).unwrap_err();
        assert!(e.contains("RECOVERY_MAX"), "{bad}: {e}");
    }
    let e = parse(&["--recovery-window", "0"]).unwrap_err();
    assert!(e.contains("RECOVERY_WINDOW"), "{e}");
    let c = parse(&["--recovery-max", "20", "--recovery-window", "5"]).unwrap();
    let g = c.gateway().unwrap();
    assert_eq!((g.recovery_max, g.recovery_window), (20, 5));
    for (flag, var) in [
        ("--recovery-ttl=0", "RECOVERY_TTL"),
        ("--presence-ttl=0", "PRESENCE_TTL"),
        ("--presence-ttl=3601", "PRESENCE_TTL"),
        ("--presence-events-max=100001", "PRESENCE_EVENTS_MAX"),
    ] {
        let e = parse(&[flag]).unwrap_err();
        assert!(e.contains(var), "{flag}: {e}");
    }
}

#[test]
fn metrics_are_public_only_without_auth_unless_told() {
    let secret = "0123456789abcdef0123456789abcdef";
    assert!(parse(&[]).unwrap().metrics_public());
    let required = parse(&["--auth", "required", "--jwt-secret", secret]).unwrap();
    assert!(!required.metrics_public());
    let told = parse(&[
        "--auth",
        "required",
        "--jwt-secret",
        secret,
        "--metrics-public",
        "true",
    ])
    .unwrap();
    assert!(told.metrics_public());
    assert!(
        !parse(&["--metrics-public", "false"])
            .unwrap()
            .metrics_public()
    );
}

#[test]
fn defaults_match_the_gateway_defaults() {
    let vars = [
        "MAX_MESSAGE_BYTES",
        "MAX_FRAME_BYTES",
        "MAX_ROOMS_PER_CONNECTION",
        "CLIENT_QUEUE_FRAMES",
        "HISTORY_DEFAULT",
        "HISTORY_MAX",
        "ACK_TIMEOUT_MS",
        "RECOVERY_MAX",
        "RECOVERY_WINDOW",
        "PRESENCE_EVENTS_MAX",
    ];
    if vars.iter().any(|v| std::env::var_os(v).is_some()) {
        return; // the environment overrides the defaults under test
    }
    let from_cli = parse(&[]).unwrap().gateway().unwrap();
    let defaults = GatewayConfig::default();
    assert_eq!(from_cli.limits, defaults.limits);
    assert_eq!(from_cli.max_frame_bytes, defaults.max_frame_bytes);
    assert_eq!(
        from_cli.max_rooms_per_connection,
        defaults.max_rooms_per_connection
    );
    assert_eq!(from_cli.client_queue_frames, defaults.client_queue_frames);
    assert_eq!(from_cli.ack_timeout, defaults.ack_timeout);
    assert_eq!(from_cli.recovery_max, defaults.recovery_max);
    assert_eq!(from_cli.recovery_window, defaults.recovery_window);
    assert_eq!(from_cli.presence_events_max, defaults.presence_events_max);
}

#[test]
fn the_policy_file_is_read_and_a_bad_one_names_file_line_and_field() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/switchboard.toml");
    let c = parse(&["--config-file", example]).unwrap();
    let policies = c.policies().unwrap().expect("a file was given");
    assert_eq!(policies.namespaces(), 3);
    assert!(!policies.of("typing:lobby").store);
    assert!(c.gateway().unwrap().policies.is_some());

    let dir = std::env::temp_dir().join(format!("sb-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[default]\nhistory = 10\n[namespaces.x]\nstroe = false\n",
    )
    .unwrap();
    let e = parse(&["--config-file", bad.to_str().unwrap()]).unwrap_err();
    assert!(e.contains("CONFIG_FILE"), "{e}");
    assert!(e.contains("bad.toml:4: `stroe`"), "{e}");
    let e = parse(&["--config-file", dir.join("missing.toml").to_str().unwrap()]).unwrap_err();
    assert!(
        e.contains("CONFIG_FILE") && e.contains("cannot read it"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
