//! FIB lookups on one core: vpngw's route tables at a few sizes, on
//! addresses drawn uniformly from the whole space and on addresses inside
//! the table's prefixes, next to a DIR-24-8 (the classic fixed-size IPv4
//! table, as in DPDK's `rte_lpm`) measured in the same rounds on the same
//! addresses.
//!
//! Prefix sets are random but deterministic (xorshift, fixed seed), distinct,
//! with lengths distributed roughly as in Internet routing tables. Lookups go
//! through `lookup_batch` a burst at a time, as the pipeline calls it.

use crate::{median, print_table, print_targets, rate, Target, XorShift};
use serde::Serialize;
use std::collections::HashSet;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};
use vpngw_engine::fib::{Ipv4Fib, Ipv6Fib, MAX_VALUE, NO_ROUTE};

/// Addresses per `lookup_batch` call: one burst.
pub const BURST: usize = 64;
/// Addresses per timed batch (many bursts, so the clock costs little).
const PER_TIMING: usize = 64 * BURST;
/// Addresses per set, cycled through: far more than any cache holds.
const ADDRS: usize = 1 << 20;
pub const IPV4_SIZES: [usize; 3] = [10, 10_000, 1_000_000];
pub const IPV6_SIZES: [usize; 2] = [10, 100_000];
/// Route groups the values are drawn from.
const GROUPS: u64 = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub family: &'static str,
    pub structure: &'static str,
    pub prefixes: usize,
    /// Millions of lookups per second, addresses uniform over the space.
    pub random_mlps: f64,
    /// Millions of lookups per second, addresses inside the prefixes.
    pub in_prefix_mlps: f64,
    pub memory_bytes: usize,
    pub bytes_per_prefix: f64,
    pub build_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub rounds: usize,
    pub round_ms: u64,
    pub burst: usize,
    pub results: Vec<Row>,
    pub targets: Vec<Target>,
}

/// `n` distinct prefixes of a `width`-bit family (as `u128`, host bits
/// clear), each made by `prefix`, with a value from [`GROUPS`].
fn distinct_routes(
    n: usize,
    width: u32,
    rng: &mut XorShift,
    prefix: impl Fn(&mut XorShift) -> (u128, u8),
) -> Vec<(u128, u8, u32)> {
    let mut seen = HashSet::with_capacity(n);
    let mut routes = Vec::with_capacity(n);
    while routes.len() < n {
        let (addr, len) = prefix(rng);
        let host = (u128::MAX >> (128 - width)).checked_shr(u32::from(len)).unwrap_or(0);
        if seen.insert((addr & !host, len)) {
            routes.push((addr & !host, len, rng.below(GROUPS) as u32));
        }
    }
    routes
}

/// IPv4 prefixes: 60% /24, 35% /16-/23, 2% /8-/15, 3% /25-/32.
fn ipv4_routes(n: usize, rng: &mut XorShift) -> Vec<(Ipv4Addr, u8, u32)> {
    let prefix = |rng: &mut XorShift| {
        let len = match rng.below(100) {
            0..60 => 24,
            60..95 => 16 + rng.below(8),
            95..97 => 8 + rng.below(8),
            _ => 25 + rng.below(8),
        };
        (u128::from(rng.next() as u32), len as u8)
    };
    distinct_routes(n, 32, rng, prefix)
        .into_iter()
        .map(|(a, len, value)| (Ipv4Addr::from(a as u32), len, value))
        .collect()
}

/// IPv6 prefixes inside 2000::/3 (global unicast): 60% /48, 38% /32-/64,
/// 2% /128.
fn ipv6_routes(n: usize, rng: &mut XorShift) -> Vec<(Ipv6Addr, u8, u32)> {
    let prefix = |rng: &mut XorShift| {
        let len = match rng.below(100) {
            0..60 => 48,
            60..98 => 32 + rng.below(33),
            _ => 128,
        };
        (1 << 125 | rng.u128() >> 3, len as u8)
    };
    distinct_routes(n, 128, rng, prefix).into_iter().map(|(a, len, value)| (Ipv6Addr::from(a), len, value)).collect()
}

/// An address inside a random one of `prefixes` (prefix, length, width).
fn address_in(prefixes: &[(u128, u8)], width: u32, rng: &mut XorShift) -> u128 {
    let (prefix, len) = prefixes[rng.below(prefixes.len() as u64) as usize];
    let host = (u128::MAX >> (128 - width)).checked_shr(u32::from(len)).unwrap_or(0);
    prefix & !host | rng.u128() & host
}

/// DIR-24-8 (Gupta, Lin and McKeown, 1998): 2^24 entries indexed by the
/// top 24 bits, and a group of 256 for each /24 that holds longer prefixes.
/// One memory access for most lookups; 64 MiB however few the routes.
/// Looked up one address after another: prefetching measured no faster.
struct Dir24_8 {
    tbl24: Vec<u32>,
    tbl8: Vec<u32>,
}

/// A `tbl24` entry with this bit (and not `NO_ROUTE`) is a group index.
const GROUP_FLAG: u32 = MAX_VALUE + 1;

impl Dir24_8 {
    fn build(routes: &[(Ipv4Addr, u8, u32)]) -> Self {
        let mut t = Self { tbl24: vec![NO_ROUTE; 1 << 24], tbl8: Vec::new() };
        let mut sorted = routes.to_vec();
        sorted.sort_by_key(|r| r.1); // shorter first: longer ones overwrite
        for (addr, len, value) in sorted {
            let addr = u32::from(addr) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let i = (addr >> 8) as usize;
            if len <= 24 {
                t.tbl24[i..i + (1 << (24 - len))].fill(value);
                continue;
            }
            let group = match t.tbl24[i] {
                e if (GROUP_FLAG..NO_ROUTE).contains(&e) => (e - GROUP_FLAG) as usize,
                e => {
                    let group = t.tbl8.len() / 256;
                    t.tbl8.extend([e; 256]);
                    t.tbl24[i] = GROUP_FLAG | group as u32;
                    group
                }
            };
            let first = group * 256 + (addr & 0xff) as usize;
            t.tbl8[first..first + (1 << (32 - len))].fill(value);
        }
        t
    }

    fn lookup_batch(&self, addrs: &[u32], out: &mut [u32]) {
        for (&addr, out) in addrs.iter().zip(out) {
            *out = match self.tbl24[(addr >> 8) as usize] {
                e if (GROUP_FLAG..NO_ROUTE).contains(&e) => {
                    self.tbl8[(e - GROUP_FLAG) as usize * 256 + (addr & 0xff) as usize]
                }
                e => e,
            };
        }
    }

    fn memory_bytes(&self) -> usize {
        (self.tbl24.capacity() + self.tbl8.capacity()) * std::mem::size_of::<u32>()
    }
}

/// Times `lookup` over `addrs`, [`PER_TIMING`] addresses a batch, a burst a
/// call, continuing where the last batch stopped.
struct Lookups<'a, K> {
    addrs: &'a [K],
    next: usize,
    out: [u32; BURST],
}

impl<'a, K> Lookups<'a, K> {
    fn new(addrs: &'a [K]) -> Self {
        Self { addrs, next: 0, out: [0; BURST] }
    }

    fn rate(&mut self, round: Duration, lookup: impl Fn(&[K], &mut [u32])) -> f64 {
        rate(round, PER_TIMING, || {
            let batch = &self.addrs[self.next..self.next + PER_TIMING];
            self.next = (self.next + PER_TIMING) % self.addrs.len();
            let t = Instant::now();
            for burst in batch.chunks_exact(BURST) {
                lookup(burst, &mut self.out);
            }
            let elapsed = t.elapsed();
            black_box(&self.out);
            elapsed
        })
    }
}

/// A table's `lookup_batch`.
type LookupBatch<'a, K> = Box<dyn Fn(&[K], &mut [u32]) + 'a>;

/// A table under test: its batched lookup and what it cost to build.
struct Table<'a, K> {
    structure: &'static str,
    lookup: LookupBatch<'a, K>,
    memory_bytes: usize,
    build: Duration,
}

/// Measures each table on both address sets, interleaved round by round.
fn measure<K>(
    family: &'static str,
    prefixes: usize,
    tables: &[Table<K>],
    random: &[K],
    in_prefix: &[K],
    rounds: usize,
    round: Duration,
) -> Vec<Row> {
    let mut rates = vec![(Vec::new(), Vec::new()); tables.len()];
    let (mut on_random, mut on_prefixes) = (Lookups::new(random), Lookups::new(in_prefix));
    for _ in 0..rounds {
        for (table, (r, p)) in tables.iter().zip(&mut rates) {
            r.push(on_random.rate(round, &table.lookup));
            p.push(on_prefixes.rate(round, &table.lookup));
        }
    }
    tables
        .iter()
        .zip(rates)
        .map(|(t, (r, p))| Row {
            family,
            structure: t.structure,
            prefixes,
            random_mlps: median(r) / 1e6,
            in_prefix_mlps: median(p) / 1e6,
            memory_bytes: t.memory_bytes,
            bytes_per_prefix: t.memory_bytes as f64 / prefixes as f64,
            build_ms: t.build.as_secs_f64() * 1e3,
        })
        .collect()
}

fn timed<T>(build: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let built = build();
    (built, t.elapsed())
}

fn ipv4(n: usize, rng: &mut XorShift, rounds: usize, round: Duration) -> Vec<Row> {
    let routes = ipv4_routes(n, rng);
    let (fib, fib_build) = timed(|| Ipv4Fib::build(&routes).expect("generated routes are valid"));
    let (dir, dir_build) = timed(|| Dir24_8::build(&routes));
    let prefixes: Vec<(u128, u8)> = routes.iter().map(|&(a, len, _)| (u128::from(u32::from(a)), len)).collect();
    let random: Vec<u32> = (0..ADDRS).map(|_| rng.next() as u32).collect();
    let in_prefix: Vec<u32> = (0..ADDRS).map(|_| address_in(&prefixes, 32, rng) as u32).collect();
    let tables = [
        Table {
            structure: "poptrie",
            lookup: Box::new(|a: &[u32], o: &mut [u32]| fib.lookup_batch(a, o)),
            memory_bytes: fib.memory_bytes(),
            build: fib_build,
        },
        Table {
            structure: "dir-24-8 (baseline)",
            lookup: Box::new(|a: &[u32], o: &mut [u32]| dir.lookup_batch(a, o)),
            memory_bytes: dir.memory_bytes(),
            build: dir_build,
        },
    ];
    measure("ipv4", fib.len(), &tables, &random, &in_prefix, rounds, round)
}

fn ipv6(n: usize, rng: &mut XorShift, rounds: usize, round: Duration) -> Vec<Row> {
    let routes = ipv6_routes(n, rng);
    let (fib, fib_build) = timed(|| Ipv6Fib::build(&routes).expect("generated routes are valid"));
    let prefixes: Vec<(u128, u8)> = routes.iter().map(|&(a, len, _)| (u128::from(a), len)).collect();
    let random: Vec<u128> = (0..ADDRS).map(|_| rng.u128()).collect();
    let in_prefix: Vec<u128> = (0..ADDRS).map(|_| address_in(&prefixes, 128, rng)).collect();
    let tables = [Table {
        structure: "poptrie, path-compressed",
        lookup: Box::new(|a: &[u128], o: &mut [u32]| fib.lookup_batch(a, o)),
        memory_bytes: fib.memory_bytes(),
        build: fib_build,
    }];
    measure("ipv6", fib.len(), &tables, &random, &in_prefix, rounds, round)
}

/// Runs the benchmark: every table size, `rounds` rounds of `round` per
/// measurement.
pub fn run(rounds: usize, round: Duration, progress: impl Fn(&str)) -> Report {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut results = Vec::new();
    for n in IPV4_SIZES {
        progress(&format!("fib: ipv4, {n} prefixes"));
        results.extend(ipv4(n, &mut rng, rounds, round));
    }
    for n in IPV6_SIZES {
        progress(&format!("fib: ipv6, {n} prefixes"));
        results.extend(ipv6(n, &mut rng, rounds, round));
    }
    let targets = targets(&results);
    Report { bench: "fib", rounds, round_ms: round.as_millis() as u64, burst: BURST, results, targets }
}

fn targets(rows: &[Row]) -> Vec<Target> {
    let mut t = Vec::new();
    let poptrie = |family| rows.iter().filter(move |r| r.family == family && r.structure.starts_with("poptrie"));
    for (family, want) in [("ipv4", 100.0), ("ipv6", 30.0)] {
        if let Some(r) = poptrie(family).max_by_key(|r| r.prefixes) {
            for (addrs, got) in [("random addresses", r.random_mlps), ("addresses in prefixes", r.in_prefix_mlps)] {
                t.push(Target {
                    what: format!("{family} {} prefixes, {addrs}, one core", r.prefixes),
                    want: format!(">= {want} M lookups/s"),
                    got: format!("{got:.1} M/s"),
                    met: got >= want,
                });
            }
        }
    }
    for family in ["ipv4", "ipv6"] {
        if let Some(r) = poptrie(family).min_by_key(|r| r.prefixes) {
            t.push(Target {
                what: format!("{family} table of {} prefixes, memory", r.prefixes),
                want: "<= 16 KiB".into(),
                got: format!("{} B", r.memory_bytes),
                met: r.memory_bytes <= 16 * 1024,
            });
        }
    }
    t
}

pub fn print(report: &Report) {
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.family.to_string(),
                r.structure.to_string(),
                r.prefixes.to_string(),
                format!("{:.1}", r.random_mlps),
                format!("{:.1}", r.in_prefix_mlps),
                r.memory_bytes.to_string(),
                format!("{:.1}", r.bytes_per_prefix),
                format!("{:.2}", r.build_ms),
            ]
        })
        .collect();
    println!(
        "FIB lookups on one core, lookup_batch in bursts of {} (median of {} rounds of {} ms)",
        report.burst, report.rounds, report.round_ms
    );
    print_table(
        &["family", "structure", "prefixes", "M/s random", "M/s in prefixes", "memory B", "B/prefix", "build ms"],
        &rows,
    );
    println!();
    print_targets(&report.targets);
}
