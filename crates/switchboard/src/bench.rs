//! `switchboard bench`: command-line face of the load generator.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use switchboard_bench::{Options, Protocol, Report, Scenario};

/// Load-generator settings. Load goes only to the targets given, which
/// should be loopback addresses.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A server to load, host:port; repeat to spread connections round-robin.
    #[arg(long = "target", default_value = "127.0.0.1:8000")]
    pub targets: Vec<SocketAddr>,
    /// `ws` (switchboard's /ws, or the ws peer) or `socket-io` (the original contract).
    #[arg(long, value_enum, default_value = "ws")]
    pub protocol: ProtocolArg,
    /// What load to generate.
    #[arg(long, value_enum, default_value = "broadcast")]
    pub scenario: Scenario,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Sending connections (broadcast).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Rooms (rooms scenario).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Messages per second per sending connection.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of sending (or of holding, for idle).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait for late deliveries after the last send.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages the connections miss before coming back (recovery).
    #[arg(long, default_value_t = 1000)]
    pub missed: usize,
    /// Connections opened (or, in recovery, brought back) at once at most.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Local address to connect from; repeat (127.0.0.2, 127.0.0.3...) for more ports.
    #[arg(long = "source")]
    pub sources: Vec<IpAddr>,
    /// Server process to sample for CPU% and RSS; repeat for several.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Step the offered load through these deliveries/s (comma-separated)
    /// until p99 exceeds --p99-limit-ms or a message is lost; reports the
    /// highest step that held.
    #[arg(long, value_delimiter = ',')]
    pub step: Vec<f64>,
    /// The p99 latency a step must stay under, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// The wire protocol, as a flag value.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProtocolArg {
    Ws,
    SocketIo,
}

impl BenchArgs {
    fn options(&self) -> Options {
        Options {
            targets: self.targets.clone(),
            protocol: match self.protocol {
                ProtocolArg::Ws => Protocol::Ws,
                ProtocolArg::SocketIo => Protocol::SocketIo,
            },
            scenario: self.scenario,
            connections: self.connections,
            senders: self.senders,
            rooms: self.rooms,
            rate: self.rate,
            duration: Duration::from_secs_f64(self.duration),
            payload: self.payload,
            sources: self.sources.clone(),
            pids: self.pids.clone(),
            drain: Duration::from_secs_f64(self.drain),
            connect_concurrency: self.concurrency.max(1),
            progress: !self.quiet,
            missed: self.missed,
        }
    }

    /// Messages per second per sender that offer `deliveries` per second.
    fn rate_for(&self, deliveries: f64) -> f64 {
        let per_message = match self.scenario {
            Scenario::Rooms => {
                let members = (self.connections as f64 / self.rooms.max(1) as f64).max(1.0);
                self.connections as f64 * members
            }
            _ => self.senders.min(self.connections) as f64 * self.connections as f64,
        };
        deliveries / per_message.max(1.0)
    }
}

/// Runs the benchmark (or the steps) and prints the results.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.targets.iter().any(|t| !t.ip().is_loopback()) {
        anyhow::bail!("bench only loads loopback targets (127.0.0.0/8, ::1)");
    }
    let mut reports: Vec<Report> = Vec::new();
    let mut best: Option<f64> = None;
    if args.step.is_empty() {
        let report = switchboard_bench::run(args.options())
            .await
            .map_err(anyhow::Error::msg)?;
        println!("{}", report.summary());
        reports.push(report);
    } else {
        for &step in &args.step {
            let mut options = args.options();
            options.rate = args.rate_for(step);
            let report = switchboard_bench::run(options)
                .await
                .map_err(anyhow::Error::msg)?;
            let held = report.lost == 0
                && report.duplicates == 0
                && report.latency_ms.p99 <= args.p99_limit_ms;
            println!(
                "step {:>10.0} deliveries/s offered: {:>10.0}/s delivered, p99 {:>8.2} ms, lost {}, duplicates {} -> {}",
                step,
                report.deliveries_per_second,
                report.latency_ms.p99,
                report.lost,
                report.duplicates,
                if held { "held" } else { "did not hold" }
            );
            reports.push(report);
            if !held {
                break;
            }
            best = Some(step);
        }
        match best {
            Some(b) => println!(
                "highest offered rate that held (p99 <= {} ms, no loss): {b:.0} deliveries/s",
                args.p99_limit_ms
            ),
            None => println!("no step held (p99 <= {} ms, no loss)", args.p99_limit_ms),
        }
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "reports": reports, "highest_held": best });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
