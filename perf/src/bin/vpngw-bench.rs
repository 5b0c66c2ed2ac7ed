//! `vpngw-bench`: vpngw's benchmarks, each printing a table a person can
//! read and writing JSON a script can compare.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vpngw_perf::esp;

/// Benchmarks of the vpngw data plane. Ratios are measured within one run,
/// interleaved, so they hold on a shared, noisy machine; absolute numbers
/// depend on the CPU and on what else it is doing.
#[derive(Parser)]
#[command(name = "vpngw-bench", version)]
struct Cli {
    /// A short run (fewer, shorter rounds) for smoke tests.
    #[arg(long, global = true)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// ESP encap and decap on one core for 64, 512 and 1400-byte inner
    /// packets and every suite, next to raw AEAD speed on the same size.
    Esp {
        /// Only these suites (default: all).
        #[arg(long)]
        suite: Vec<vpngw_engine::Suite>,
        /// Only these inner packet sizes in bytes (default: 64, 512, 1400).
        #[arg(long, value_parser = clap::value_parser!(u16).range(64..=9000))]
        size: Vec<u16>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (rounds, round) = if cli.quick { (1, Duration::from_millis(20)) } else { (5, Duration::from_millis(200)) };
    let report = match cli.command {
        Command::Esp { suite, size } => {
            let suites = if suite.is_empty() { vpngw_engine::Suite::ALL.to_vec() } else { suite };
            let sizes = if size.is_empty() { esp::SIZES.to_vec() } else { size.into_iter().map(usize::from).collect() };
            esp::run(&suites, &sizes, rounds, round, |msg| eprintln!("[vpngw-bench] {msg}"))
        }
    };
    esp::print(&report);
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report).expect("a report serializes");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("vpngw-bench: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
