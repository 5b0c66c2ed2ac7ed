//! `vpngw-bench`: vpngw's benchmarks, each printing a table a person can
//! read and writing JSON a script can compare.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vpngw_perf::report::{self, Doc};
use vpngw_perf::traffic::{self, FlowSpec, SizeMix};
use vpngw_perf::{compare, crypto, ctl, esp, fib, monitoring, pipeline, spd, wire};

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
    /// Also write the run up for people into this directory: markdown
    /// (BENCH.md) with SVG charts beside it (BENCH-*.svg).
    #[arg(long, global = true, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Compare with a saved JSON report of the same benchmark: every
    /// measurement both have, as this run / that one; those that moved by
    /// more than --threshold are listed.
    #[arg(long, global = true, value_name = "FILE")]
    compare: Option<PathBuf>,
    /// What counts as a change for --compare (0.05: 5%).
    #[arg(long, global = true, default_value_t = 0.05, value_parser = threshold)]
    threshold: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw cipher speed on one core (the crates the engine uses, no ESP):
    /// seal and open of 64, 512, 1400 and 9000-byte buffers per suite.
    Crypto {
        /// Only these suites (default: all).
        #[arg(long)]
        suite: Vec<vpngw_engine::Suite>,
        /// Only these buffer sizes in bytes (default: 64, 512, 1400, 9000).
        #[arg(long, value_parser = clap::value_parser!(u16).range(16..=9000))]
        size: Vec<u16>,
    },
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
    /// FIB longest-prefix-match lookups on one core: IPv4 tables of 10,
    /// 10 k and 1 M prefixes (with a DIR-24-8 baseline), IPv6 tables of 10
    /// and 100 k, on random addresses and on addresses inside the prefixes.
    Fib,
    /// SPD classification on one core with 10, 1,000 and 10,000 rules:
    /// every lookup a full classification, and through the flow cache.
    Spd,
    /// The whole pipeline in process on one core: one gateway with 1, 1,000
    /// and 100,000 tunnels (as many SPD rules) and a route table of 1 M
    /// routes; outbound and inbound at 64 B, IMIX and 1400 B, next to raw
    /// AES-GCM-128 speed on the same sizes.
    Pipeline {
        /// Tunnel counts to measure (default: 1, 1000, 100000; --quick: 1, 1000).
        #[arg(long)]
        tunnels: Vec<usize>,
        /// Routes in the table (default 1000000; --quick 10000).
        #[arg(long)]
        routes: Option<usize>,
    },
    /// What monitoring costs forwarding: the pipeline with one tunnel,
    /// plain and with a bandwidth limit (never reached), a health check,
    /// a capture running on the tunnel, and all three; ratios to plain.
    Monitoring,
    /// The configuration rate while forwarding: routes and tunnels
    /// installed through the control socket (JSON, checks, snapshot build,
    /// state file synced) while a worker forwards over an existing tunnel;
    /// objects/s, the slowest request, and the packets lost meanwhile.
    Ctl {
        /// Routes to install (default 100000; --quick 2000).
        #[arg(long)]
        routes: Option<usize>,
        /// Tunnels to install (default 10000; --quick 200).
        #[arg(long)]
        tunnels: Option<usize>,
        /// Objects per request (default 1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        batch: u64,
    },
    /// On the wire, in the namespace lab (root; iperf3 and strongSwan, as
    /// scripts/deps.sh installs them): 64-byte, IMIX and 1400-byte UDP from
    /// a generator to a sink through the gateway namespace: the kernel's
    /// own forwarding, vpngw unencrypted (a hairpin on the inside port),
    /// vpngw ESP AES-GCM-128 through two daemons, and strongSwan with its
    /// userspace ESP (kernel-libipsec) carrying the same tunnel. Maximum
    /// rates (pps, Gbit/s, loss, cores used), TCP goodput (iperf3), the
    /// no-drop rate at 1400 B, and one-way latency at 10%, 50% and 90% of
    /// each setup's maximum (about five minutes; --quick: one).
    Wire {
        /// The vpngw daemon (default: `vpngw` next to this binary).
        #[arg(long)]
        vpngw: Option<PathBuf>,
        /// Rounds (default 5; --quick 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
        rounds: Option<u64>,
        /// Measurement window per setup and size, ms (default 2000; --quick 300).
        #[arg(long, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        window_ms: Option<u64>,
        /// Pin gw's worker to this CPU, or `none` (default: the last CPU).
        #[arg(long)]
        gw_core: Option<String>,
        /// Pin cgw's worker to this CPU, or `none` (default: the last but
        /// one CPU: on two CPUs, the generator's).
        #[arg(long)]
        cgw_core: Option<String>,
        /// Niceness of the generator and the daemons (default -10: ahead of
        /// other work on the machine; 0: as everything else).
        #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
        nice: Option<i32>,
        /// The full-rate generator: own (`vpngw-bench generate`, AF_XDP)
        /// or trafgen (netsniff-ng). The rate-controlled runs use our own.
        #[arg(long, default_value = "own")]
        generator: wire::GeneratorKind,
        /// The vpngw daemons' --idle-sleep-us: their idle workers nap this
        /// many microseconds, for CPUs shared with other work; 0: they
        /// busy-poll. Default: 50 on a machine with fewer than four CPUs
        /// (the daemons then share theirs with the generator, the sink,
        /// iperf3 and each other), 0 on a larger one.
        #[arg(long, value_name = "MICROSECONDS", value_parser = clap::value_parser!(u64).range(0..=100_000))]
        idle_sleep_us: Option<u64>,
        /// iperf3's run per setup, seconds (default 5; --quick 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
        tcp_seconds: Option<u64>,
        /// Each latency measurement, ms (default 2000; --quick 300).
        #[arg(long, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        latency_ms: Option<u64>,
        /// Steps of the no-drop-rate search (default 7; --quick 2).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=20))]
        ndr_steps: Option<u64>,
    },
    /// Our own packet generator: UDP/IPv4 frames on an AF_XDP socket at a
    /// set rate, size mix and flow count, each stamped with a sequence
    /// number and its send time (for `sink`). Prints what it sent (JSON
    /// with --json). Root; run it where the interface is (`ip netns exec`).
    Generate {
        /// The interface to send on (its queue 0).
        #[arg(long)]
        dev: String,
        /// Next hop's MAC address.
        #[arg(long)]
        dst_mac: String,
        /// Source MAC (default: the interface's).
        #[arg(long)]
        src_mac: Option<String>,
        #[arg(long)]
        src: std::net::Ipv4Addr,
        #[arg(long)]
        dst: std::net::Ipv4Addr,
        /// UDP destination port.
        #[arg(long, default_value_t = 9)]
        port: u16,
        /// Packets per second; 0: as fast as the socket takes them.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// IP packet size in bytes (52-1500), or imix (64:576:1400 as 7:4:1).
        #[arg(long, default_value = "64")]
        size: SizeMix,
        /// Flows (UDP source ports 10000 and up), 1-50000.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50_000))]
        flows: u32,
        /// How long to send.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// The generator's sink: receives on a UDP port, checks the sequence
    /// numbers (missing, reordered) and measures one-way latency from the
    /// send time in each packet to the kernel's receive time (p50, p99,
    /// p99.9, max). Prints JSON with --json.
    Sink {
        #[arg(long, default_value_t = 9)]
        port: u16,
        /// The longest it listens.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Stop this long after the last packet (once one came).
        #[arg(long, default_value_t = 500)]
        idle_ms: u64,
        /// Leave the packets sent in the first N ms out of the latency
        /// (the generator's start); they are still counted.
        #[arg(long, default_value_t = 0)]
        warmup_ms: u64,
    },
}

fn threshold(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=100.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?}: a fraction from 0 to 100 (0.05 is 5%)")),
    }
}

/// `none` or a CPU number.
fn core(arg: Option<String>, default: Option<usize>) -> Result<Option<usize>, String> {
    match arg.as_deref() {
        None => Ok(default),
        Some("none") => Ok(None),
        Some(n) => n.parse().map(Some).map_err(|_| format!("{n:?}: expected a CPU number or none")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (rounds, round) = if cli.quick { (1, Duration::from_millis(20)) } else { (5, Duration::from_millis(200)) };
    let progress = |msg: &str| eprintln!("[vpngw-bench] {msg}");
    let out = match cli.command {
        Command::Crypto { suite, size } => {
            let suites = if suite.is_empty() { vpngw_engine::Suite::ALL.to_vec() } else { suite };
            let sizes =
                if size.is_empty() { crypto::SIZES.to_vec() } else { size.into_iter().map(usize::from).collect() };
            let report = crypto::run(&suites, &sizes, rounds, round, progress);
            crypto::print(&report);
            Out::bench(&report, Some(crypto::doc(&report)))
        }
        Command::Generate { dev, dst_mac, src_mac, src, dst, port, rate, size, flows, seconds } => {
            let macs = traffic::parse_mac(&dst_mac)
                .and_then(|d| Ok((d, src_mac.as_deref().map_or_else(|| traffic::mac_of(&dev), traffic::parse_mac)?)));
            let (dst_mac, src_mac) = match macs {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("vpngw-bench: generate: {e}");
                    return ExitCode::from(2);
                }
            };
            if !(rate >= 0.0 && rate.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
                eprintln!("vpngw-bench: generate: --rate must be 0 or more, --seconds from 0 to 86400");
                return ExitCode::from(2);
            }
            let spec = FlowSpec { src_mac, dst_mac, src, dst, dst_port: port, flows };
            match traffic::generate(&dev, &spec, &size, rate, seconds) {
                Ok(r) => {
                    println!(
                        "sent {} packets ({} B, {} flow(s)) on {} ({} mode) in {:.3} s: {:.1} kpps",
                        r.sent,
                        r.sizes,
                        r.flows,
                        r.interface,
                        r.mode,
                        r.seconds,
                        r.sent_pps / 1e3
                    );
                    Out::tool(&r)
                }
                Err(e) => {
                    eprintln!("vpngw-bench: generate: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Command::Sink { port, seconds, idle_ms, warmup_ms } => match traffic::sink(port, seconds, idle_ms, warmup_ms) {
            Ok(r) => {
                let l = &r.latency;
                println!(
                    "received {} packets ({} missing, {} reordered, {} dropped at the socket, {} foreign); \
                     one-way latency us: p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
                    r.received,
                    r.missing,
                    r.reordered,
                    r.socket_drops,
                    r.foreign,
                    l.p50_ns as f64 / 1e3,
                    l.p99_ns as f64 / 1e3,
                    l.p999_ns as f64 / 1e3,
                    l.max_ns as f64 / 1e3
                );
                Out::tool(&r)
            }
            Err(e) => {
                eprintln!("vpngw-bench: sink: {e}");
                return ExitCode::from(1);
            }
        },
        Command::Esp { suite, size } => {
            let suites = if suite.is_empty() { vpngw_engine::Suite::ALL.to_vec() } else { suite };
            let sizes = if size.is_empty() { esp::SIZES.to_vec() } else { size.into_iter().map(usize::from).collect() };
            let report = esp::run(&suites, &sizes, rounds, round, progress);
            esp::print(&report);
            Out::bench(&report, Some(esp::doc(&report)))
        }
        Command::Ctl { routes, tunnels, batch } => {
            let routes = routes.unwrap_or(if cli.quick { 2000 } else { 100_000 });
            let tunnels = tunnels.unwrap_or(if cli.quick { 200 } else { 10_000 });
            let single = if cli.quick { 20 } else { 100 };
            let report = ctl::run(routes, tunnels, batch as usize, single, progress);
            ctl::print(&report);
            Out::bench(&report, None)
        }
        Command::Pipeline { tunnels, routes } => {
            let tunnels = match (tunnels.is_empty(), cli.quick) {
                (false, _) => tunnels,
                (true, true) => vec![1, 1000],
                (true, false) => vec![1, 1000, 100_000],
            };
            let routes = routes.unwrap_or(if cli.quick { 10_000 } else { 1_000_000 });
            if tunnels.contains(&0) {
                eprintln!("vpngw-bench: --tunnels 0: a gateway needs a tunnel to carry traffic");
                return ExitCode::from(2);
            }
            let report = pipeline::run_bench(&tunnels, routes, rounds, round, progress);
            pipeline::print(&report);
            Out::bench(&report, None)
        }
        Command::Monitoring => {
            let report = monitoring::run_bench(rounds, round, progress);
            monitoring::print(&report);
            Out::bench(&report, None)
        }
        Command::Spd => {
            let report = spd::run(rounds, round, progress);
            spd::print(&report);
            Out::bench(&report, None)
        }
        Command::Wire {
            vpngw,
            rounds,
            window_ms,
            gw_core,
            cgw_core,
            nice,
            generator,
            idle_sleep_us,
            tcp_seconds,
            latency_ms,
            ndr_steps,
        } => {
            let bin = vpngw.unwrap_or_else(|| {
                let me = std::env::current_exe().unwrap_or_default();
                me.with_file_name("vpngw")
            });
            let mut opts = wire::Options::new(cli.quick, bin);
            if let Some(r) = rounds {
                opts.rounds = r as usize;
            }
            if let Some(w) = window_ms {
                opts.window_ms = w;
            }
            if let Some(n) = nice {
                opts.nice = n;
            }
            opts.generator = generator;
            if let Some(us) = idle_sleep_us {
                opts.idle_sleep_us = (us > 0).then_some(us);
            }
            opts.tcp_seconds = tcp_seconds.unwrap_or(opts.tcp_seconds);
            opts.latency_ms = latency_ms.unwrap_or(opts.latency_ms);
            opts.ndr_steps = ndr_steps.map_or(opts.ndr_steps, |n| n as usize);
            match (core(gw_core, opts.gw_core), core(cgw_core, opts.cgw_core)) {
                (Ok(g), Ok(c)) => (opts.gw_core, opts.cgw_core) = (g, c),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("vpngw-bench: {e}");
                    return ExitCode::from(2);
                }
            }
            match wire::run(&opts, progress) {
                Ok(report) => {
                    wire::print(&report);
                    Out::bench(&report, Some(wire::doc(&report)))
                }
                Err(e) => {
                    eprintln!("vpngw-bench: wire: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Command::Fib => {
            let report = fib::run(rounds, round, progress);
            fib::print(&report);
            Out::bench(&report, None)
        }
    };
    if !out.bench && (cli.report.is_some() || cli.compare.is_some()) {
        eprintln!("vpngw-bench: --report and --compare are for the benchmarks, not for generate and sink");
        return ExitCode::from(2);
    }
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&out.value).expect("a report serializes");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("vpngw-bench: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Some(dir) = &cli.report {
        let doc = out.doc.unwrap_or_else(|| report::generic(&out.value));
        let name = out.value["bench"].as_str().unwrap_or("bench").to_string();
        match report::write(dir, &name, &doc) {
            Ok(files) => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                eprintln!("[vpngw-bench] report: {}", names.join(", "));
            }
            Err(e) => {
                eprintln!("vpngw-bench: --report: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(path) = &cli.compare {
        let baseline = match compare::load(path).and_then(|b| compare::check_same_bench(&b, &out.value).map(|_| b)) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("vpngw-bench: --compare: {e}");
                return ExitCode::from(2);
            }
        };
        println!();
        println!("Compared with {} (this run / that one):", path.display());
        compare::print(&compare::compare(&baseline, &out.value), cli.threshold);
    }
    ExitCode::SUCCESS
}

/// What a subcommand produced: its report as JSON, and its write-up.
struct Out {
    value: serde_json::Value,
    doc: Option<Doc>,
    /// A benchmark (not `generate` or `sink`).
    bench: bool,
}

impl Out {
    fn bench(report: &impl serde::Serialize, doc: Option<Doc>) -> Self {
        Out { value: serde_json::to_value(report).expect("a report serializes"), doc, bench: true }
    }

    fn tool(report: &impl serde::Serialize) -> Self {
        Out { value: serde_json::to_value(report).expect("a report serializes"), doc: None, bench: false }
    }
}
