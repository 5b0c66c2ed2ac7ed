//! vpngw's benchmark harness: timing that interleaves the things it
//! compares (so a noisy neighbour hurts both sides of a ratio alike), and
//! reports as a readable table and as JSON.

pub mod compare;
pub mod crypto;
pub mod ctl;
pub mod esp;
pub mod fib;
pub mod monitoring;
pub mod pipeline;
pub mod plot;
pub mod report;
pub mod spd;
pub mod traffic;
pub mod wire;

use std::time::{Duration, Instant};

/// Runs `batch` (which processes `per_batch` packets and returns the time
/// its timed part took) until `budget` has passed; returns packets/second.
pub fn rate(budget: Duration, per_batch: usize, mut batch: impl FnMut() -> Duration) -> f64 {
    let start = Instant::now();
    let (mut timed, mut packets) = (Duration::ZERO, 0u64);
    while start.elapsed() < budget {
        timed += batch();
        packets += per_batch as u64;
    }
    packets as f64 / timed.as_secs_f64()
}

/// xorshift64: deterministic, and enough to scatter prefixes, rules and
/// flows (the benchmarks' inputs are the same in every run).
pub struct XorShift(pub u64);

impl XorShift {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn u128(&mut self) -> u128 {
        u128::from(self.next()) << 64 | u128::from(self.next())
    }
}

/// The median of some rates.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A target from the issue tracker, checked against a measurement.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub what: String,
    pub want: String,
    pub got: String,
    pub met: bool,
}

/// Prints the targets and whether each was met.
pub fn print_targets(targets: &[Target]) {
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| vec![t.what.clone(), t.want.clone(), t.got.clone(), if t.met { "met" } else { "NOT MET" }.into()])
        .collect();
    print_table(&["target", "want", "got", ""], &rows);
}

/// A table of results: printed for the terminal, or written into a report
/// (the same rows either way).
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str], rows: Vec<Vec<String>>) -> Self {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows }
    }

    pub fn headers(&self) -> Vec<&str> {
        self.headers.iter().map(String::as_str).collect()
    }

    pub fn print(&self) {
        print_table(&self.headers(), &self.rows);
    }
}

/// Prints rows as a table whose columns fit their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect();
        println!("{}", s.join("  "));
    };
    line(header.to_vec());
    line(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().iter().map(|s| s.as_str()).collect());
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}
