//! Raw cipher speed on one core: the crates the engine uses (AES-GCM,
//! ChaCha20-Poly1305, AES-CBC with HMAC-SHA-256), sealing and opening
//! buffers of each size in place, with no ESP around them. The ceiling the
//! `esp` and `pipeline` benchmarks are held to.

use crate::esp::Raw;
use crate::plot::{Chart, Series};
use crate::report::Doc;
use crate::{median, rate, Table};
use serde::Serialize;
use std::time::{Duration, Instant};
use vpngw_engine::Suite;

/// Buffers per timed batch (kept in L2, as in `esp`).
const BATCH: usize = 256;
pub const SIZES: [usize; 4] = [64, 512, 1400, 9000];

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub suite: &'static str,
    /// Bytes sealed or opened per call.
    pub size: usize,
    /// "seal" or "open".
    pub op: &'static str,
    pub mpps: f64,
    pub gbps: f64,
    /// CPU cycles per byte, at the nominal clock from /proc/cpuinfo
    /// (absent where it does not say).
    pub cycles_per_byte: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub rounds: usize,
    pub round_ms: u64,
    pub cpu: String,
    pub results: Vec<Row>,
}

pub fn run(suites: &[Suite], sizes: &[usize], rounds: usize, round: Duration, progress: impl Fn(&str)) -> Report {
    let (cpu, mhz) = cpu();
    let mut results = Vec::new();
    for &suite in suites {
        let key: Vec<u8> = (0..suite.keymat_len() as u8).collect();
        let raw = Raw::new(suite, &key);
        for &size in sizes {
            progress(&format!("crypto: {suite} {size} B"));
            let mut bufs = vec![vec![0x5au8; size]; BATCH];
            let mut tags = vec![[0u8; 16]; BATCH];
            let nonce = [7u8; 12];
            let seal = |bufs: &mut Vec<Vec<u8>>, tags: &mut Vec<[u8; 16]>| {
                let t = Instant::now();
                for (b, tag) in bufs.iter_mut().zip(tags.iter_mut()) {
                    *tag = raw.seal(&nonce, b);
                }
                t.elapsed()
            };
            let (mut sealed, mut opened) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                sealed.push(rate(round, BATCH, || seal(&mut bufs, &mut tags)));
                opened.push(rate(round, BATCH, || {
                    seal(&mut bufs, &mut tags);
                    let t = Instant::now();
                    for (b, tag) in bufs.iter_mut().zip(&tags) {
                        assert!(raw.open(&nonce, b, tag), "a sealed buffer opens");
                    }
                    t.elapsed()
                }));
            }
            for (op, pps) in [("seal", median(sealed)), ("open", median(opened))] {
                results.push(Row {
                    suite: suite.name(),
                    size,
                    op,
                    mpps: pps / 1e6,
                    gbps: pps * size as f64 * 8.0 / 1e9,
                    cycles_per_byte: mhz.map(|m| m * 1e6 / (pps * size as f64)),
                });
            }
        }
    }
    Report { bench: "crypto", rounds, round_ms: round.as_millis() as u64, cpu, results }
}

/// The CPU's model name and nominal MHz, from /proc/cpuinfo.
fn cpu() -> (String, Option<f64>) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    (model, field("cpu MHz").and_then(|m| m.parse().ok()))
}

fn table(report: &Report) -> Table {
    let rows = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.suite.into(),
                r.size.to_string(),
                r.op.into(),
                format!("{:.2}", r.mpps),
                format!("{:.2}", r.gbps),
                r.cycles_per_byte.map_or("-".into(), |c| format!("{c:.2}")),
            ]
        })
        .collect();
    Table::new(&["suite", "bytes", "op", "Mpps", "Gbit/s", "cycles/byte"], rows)
}

pub fn print(report: &Report) {
    println!(
        "Raw ciphers on one core, in place, no ESP ({}; median of {} rounds of {} ms)",
        report.cpu, report.rounds, report.round_ms
    );
    table(report).print();
}

/// The run written up: the table, and Gbit/s against buffer size.
pub fn doc(report: &Report) -> Doc {
    let mut doc = Doc::new(
        "Raw ciphers on one core",
        format!(
            "The crates the engine uses, in place, no ESP ({}; median of {} rounds of {} ms).",
            report.cpu, report.rounds, report.round_ms
        ),
    );
    doc.table("Results", "", &table(report));
    let series = Suite::ALL
        .iter()
        .flat_map(|s| ["seal", "open"].map(|op| (s.name(), op)))
        .map(|(suite, op)| Series {
            name: format!("{suite} {op}"),
            points: report
                .results
                .iter()
                .filter(|r| r.suite == suite && r.op == op)
                .map(|r| (r.size as f64, r.gbps))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    doc.charts.push((
        "gbps",
        Chart {
            title: "Raw cipher Gbit/s vs buffer size, one core".into(),
            x_label: "bytes".into(),
            y_label: "Gbit/s".into(),
            x_log: true,
            y_log: false,
            series,
        },
    ));
    doc
}
