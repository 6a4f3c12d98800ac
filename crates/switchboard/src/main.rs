//! The `switchboard` binary: parse configuration, set up logs and metrics,
//! run the chosen command, and turn SIGINT/SIGTERM into a graceful stop.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use switchboard::{Cli, Command, LogFormat, NodeOptions};
use switchboard_archive::LagOf;
use switchboard_gateway::catalog::Process;
use tokio_util::sync::CancellationToken;

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// How long a stop may take before the process exits anyway.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut cli = cli;
    if let Some(Command::CheckConfig { file: Some(file) }) = &cli.command {
        cli.config.config_file = Some(file.clone());
    }
    if let Err(e) = cli.config.validate() {
        eprintln!("switchboard: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    init_logs(cli.config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "switchboard failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Bench(args) => switchboard::bench::run(*args).await,
        Command::CheckConfig { .. } => {
            let policies = cli.config.policies()?;
            match (&cli.config.config_file, policies) {
                (Some(file), Some(policies)) => println!(
                    "{}: ok: {} namespaces",
                    file.display(),
                    policies.namespaces()
                ),
                _ => println!("ok (no CONFIG_FILE: every room under the node's settings)"),
            }
            Ok(())
        }
        Command::Migrate => {
            let url = cli.config.database_url();
            switchboard_store::open_with_layout(&url, true, cli.config.layout()).await?;
            tracing::info!(store = %url.split('@').next_back().unwrap_or(""), "migrations applied");
            Ok(())
        }
        Command::Archive => {
            let Some(options) = cli.config.kafka.archive_options() else {
                anyhow::bail!(
                    "`switchboard archive` needs KAFKA_BROKERS (the journal topic to read)"
                );
            };
            let store = open_store(&cli.config).await?;
            let shutdown = CancellationToken::new();
            switchboard::keep_archive(store.clone(), shutdown.clone());
            if let Some(address) = cli.config.listener.metrics_addr {
                // The archiver's own metrics (records, retries, lag).
                serve_metrics(address, Process::Archiver, &shutdown).await?;
            }
            watch_and_beat(&cli.config, &options, LagOf::Archive, &store, &shutdown)?;
            tokio::spawn(stop_on_signal(shutdown.clone()));
            tracing::info!(store = store.kind(), "switchboard archive starting");
            switchboard_archive::run(options, store, shutdown).await?;
            Ok(())
        }
        Command::Hooks => {
            let Some(mut options) = cli.config.kafka.archive_options() else {
                anyhow::bail!(
                    "`switchboard hooks` needs KAFKA_BROKERS (the journal topic to read)"
                );
            };
            options.group = cli.config.hooks.hooks_group.clone();
            options.batch = cli.config.hooks.webhook_batch;
            options.linger = Duration::from_millis(cli.config.hooks.webhook_linger_ms);
            options.events_topic = cli.config.kafka.kafka_events_topic.clone();
            let hooks = cli
                .config
                .hooks
                .hooks_options(options.events_topic.as_deref())?;
            // Batches no endpoint takes go to webhook_dead_letters.
            let store = open_store(&cli.config).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            if let Some(address) = cli.config.listener.metrics_addr {
                serve_metrics(address, Process::Hooks, &shutdown).await?;
            }
            watch_and_beat(&cli.config, &options, LagOf::Hooks, &store, &shutdown)?;
            let endpoints = hooks.endpoints.len();
            let sink = switchboard_archive::hooks::HookSink::new(hooks, store)
                .map_err(|e| anyhow::anyhow!("cannot make the HTTP client: {e}"))?;
            tracing::info!(endpoints, group = %options.group, "switchboard hooks starting");
            switchboard_archive::consume(options, sink, shutdown).await?;
            Ok(())
        }
        Command::Serve => {
            if cli.config.kafka.kafka_brokers().is_some()
                && !cli.config.database_url().starts_with("postgres")
            {
                tracing::warn!(
                    "KAFKA_BROKERS is set but DATABASE_URL is not PostgreSQL: history is read from a store \
                     that only `switchboard archive` writes, so point both at the same PostgreSQL"
                );
            }
            let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .ok();
            if let Some(handle) = metrics.clone() {
                // Without upkeep the recorder's histograms keep every sample.
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        handle.run_upkeep();
                    }
                });
            }
            let address = cli.config.listener.address();
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {address} (PORT/HOST): {e}"))?;
            let operators = match cli.config.listener.metrics_addr {
                Some(address) => {
                    Some(tokio::net::TcpListener::bind(address).await.map_err(|e| {
                        anyhow::anyhow!("cannot listen on {address} (METRICS_ADDR): {e}")
                    })?)
                }
                None => None,
            };
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let options = NodeOptions::from_config(&cli.config)?;
            if options.gateway.auth.mode == switchboard_gateway::AuthMode::Off {
                tracing::warn!(
                    "AUTH=off: anyone who can reach this node may connect under any name; set AUTH=required with JWT_SECRET or JWT_PUBLIC_KEY in production"
                );
            }
            let node =
                switchboard::run_with(listener, operators, options, shutdown.clone(), metrics);
            tokio::pin!(node);
            tokio::select! {
                result = &mut node => result,
                () = async { shutdown.cancelled().await; tokio::time::sleep(STOP_DEADLINE).await } => {
                    anyhow::bail!("shutdown took longer than {} s", STOP_DEADLINE.as_secs())
                }
            }
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("stopping: closing connections and flushing the journal");
    shutdown.cancel();
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::filter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Whatever RUST_LOG asks for: the WebSocket library prints every frame
    // it reads and writes at trace level, tokens and messages included, so
    // those lines never reach the log. (Socket.IO's library is built
    // without its logging for the same reason.)
    let no_payloads = filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE && meta.target().starts_with("tungstenite"))
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // Global filters, not per-layer ones (`Layer::with_filter`): a
    // per-layer filter does bookkeeping on every span enter and exit, and
    // every connection's task enters its span on each poll; measured here,
    // that cost a fifth more CPU per delivery in a broadcast.
    let registry = tracing_subscriber::registry().with(env).with(no_payloads);
    match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json())
            .init(),
    }
}

/// Starts a consumer process's lag reader (the gauges) and its heartbeat
/// (the admin console's view of it).
fn watch_and_beat(
    config: &switchboard::Config,
    options: &switchboard_archive::ArchiveOptions,
    of: LagOf,
    store: &std::sync::Arc<dyn switchboard_store::Store>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let lag = switchboard_archive::watch_lag(options, of, shutdown.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the lag reader: {e}"))?;
    let who = switchboard_archive::beat::Beating {
        kind: match of {
            LagOf::Archive => "archive",
            LagOf::Hooks => "hooks",
        },
        process: config.process_id(),
        group: options.group.clone(),
    };
    switchboard_archive::beat::keep_beating(store.clone(), who, lag, shutdown.clone());
    Ok(())
}

/// Serves the metrics of a process that is not a node (`archive`, `hooks`)
/// on `address` (METRICS_ADDR): `/metrics` with every series of `process`
/// from the start, and `/healthz`.
async fn serve_metrics(
    address: std::net::SocketAddr,
    process: Process,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address} (METRICS_ADDR): {e}"))?;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    switchboard_gateway::catalog::register(process);
    tracing::info!(%address, "metrics listening");
    tokio::spawn(switchboard_gateway::serve_metrics(
        listener,
        handle.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            handle.run_upkeep();
        }
    });
    Ok(())
}

/// The store of DATABASE_URL, migrated unless `--no-migrate`, with the
/// archive's layout (`archive`, `hooks`).
async fn open_store(
    config: &switchboard::Config,
) -> anyhow::Result<std::sync::Arc<dyn switchboard_store::Store>> {
    Ok(switchboard_store::open_with_layout(
        &config.database_url(),
        !config.no_migrate,
        config.layout(),
    )
    .await?)
}
