//! `vpngw`: the gateway daemon. It runs the data plane on the interfaces a
//! configuration file names, until SIGINT or SIGTERM.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vpngw_ctrl::daemon::{self, Options};

/// The vpngw gateway daemon: IPsec (ESP) tunnels between a VPC or
/// cloud-connect network and customer data centres, forwarded by a
/// poll-mode engine on AF_XDP sockets.
///
/// Examples:
///   vpngw --config /etc/vpngw/vpngw.toml --cores 0,1 --stats-file /run/vpngw/stats.json
///   vpngw --check --config /etc/vpngw/vpngw.toml
#[derive(Parser)]
#[command(name = "vpngw", version, verbatim_doc_comment)]
struct Cli {
    /// The configuration file (TOML; see ctrl/src/config.rs for the schema).
    #[arg(long, short)]
    config: PathBuf,
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
    /// On exit, print the counters as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = |msg: &str| eprintln!("vpngw: {msg}");
    if cli.check {
        return match daemon::check(&cli.config) {
            Ok(_) => {
                println!("{}: valid", cli.config.display());
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
    let opts = Options {
        config: cli.config,
        cores: cli.cores,
        idle_sleep: cli.idle_sleep_us.map(std::time::Duration::from_micros),
        stats_file: cli.stats_file,
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
