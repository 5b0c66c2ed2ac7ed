//! `vpngw`: the gateway daemon. It runs the data plane on the interfaces a
//! configuration file names, serves `vpnctl` on its control socket and
//! keeps the running configuration in its state file, until SIGINT or
//! SIGTERM.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vpngw_ctrl::daemon::{self, Options};
use vpngw_ctrl::server::Access;

/// The vpngw gateway daemon: IPsec (ESP) tunnels between a VPC or
/// cloud-connect network and customer data centres, forwarded by a
/// poll-mode engine on AF_XDP sockets.
///
/// At start the daemon restores the state file (the running configuration,
/// rewritten after every change made with vpnctl) if it exists; otherwise
/// it reads the configuration file. Both have one schema.
///
/// Examples:
///   vpngw --config /etc/vpngw/vpngw.toml --cores 0,1 --stats-file /run/vpngw/stats.json
///   vpngw --config /etc/vpngw/vpngw.toml --metrics 127.0.0.1:9477
///   vpngw --check --config /etc/vpngw/vpngw.toml
///   vpngw --check --config /var/lib/vpngw/state.toml
#[derive(Parser)]
#[command(name = "vpngw", version, verbatim_doc_comment)]
struct Cli {
    /// The configuration file (TOML; see ctrl/src/config.rs for the schema),
    /// used when there is no state file yet.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The state file: restored at start if it exists, rewritten atomically
    /// (mode 0600: it holds keys) after every accepted change.
    #[arg(long, default_value = "/var/lib/vpngw/state.toml")]
    state: PathBuf,
    /// Keep no state file: changes made over the socket end with the process.
    #[arg(long, conflicts_with = "state")]
    no_state: bool,
    /// The control socket vpnctl talks to (mode 0660).
    #[arg(long, default_value = "/run/vpngw/vpngw.sock")]
    socket: PathBuf,
    /// A group (name or number) whose members may use the control socket,
    /// besides root.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Check the configuration file and exit (0: valid, 2: not), without
    /// touching the kernel.
    #[arg(long)]
    check: bool,
    /// Run a worker on each of these CPUs (comma-separated), pinned; worker
    /// N serves receive queue N of every interface. Default: one worker,
    /// unpinned, on queue 0.
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Let a worker that found nothing to do for a while sleep this many
    /// microseconds between turns, instead of busy-polling, until traffic
    /// returns (for CPUs shared with other work; costs wake-up latency).
    #[arg(long, value_name = "MICROSECONDS")]
    idle_sleep_us: Option<u64>,
    /// Write the counters here as JSON, every second and on exit.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Serve the counters to Prometheus at http://ADDR/metrics (the text
    /// format). Off unless given; without an address, 127.0.0.1:9477.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = vpngw_ctrl::metrics::DEFAULT_ADDR)]
    metrics: Option<std::net::SocketAddr>,
    /// On exit, print the counters as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = |msg: &str| eprintln!("vpngw: {msg}");
    if cli.check {
        let Some(config) = &cli.config else {
            log("--check needs --config FILE");
            return ExitCode::from(2);
        };
        return match daemon::check(config) {
            Ok(_) => {
                println!("{}: valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                log(&e.to_string());
                ExitCode::from(2)
            }
        };
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).expect("signal handlers install");
    }
    let group = match cli.socket_group.as_deref().map(group_id).transpose() {
        Ok(g) => g,
        Err(e) => {
            log(&e);
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        config: cli.config,
        state: (!cli.no_state).then_some(cli.state),
        socket: Some(cli.socket),
        access: Access { group },
        cores: cli.cores,
        idle_sleep: cli.idle_sleep_us.map(std::time::Duration::from_micros),
        stats_file: cli.stats_file,
        metrics: cli.metrics,
    };
    match daemon::run(&opts, stop, log) {
        Ok(report) => {
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("a report serializes"));
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            log(&e.to_string());
            ExitCode::from(1)
        }
    }
}

/// A group's id, from its number or its name in /etc/group.
fn group_id(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").map_err(|e| format!("/etc/group: {e}"))?;
    groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .ok_or_else(|| format!("--socket-group {name}: no such group"))
}
