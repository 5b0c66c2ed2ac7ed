//! On the wire: real packets over veth pairs in the namespace lab
//! (`scripts/lab.sh`), from a traffic generator in the VPC namespace to a
//! sink, through the gateway namespace, in one run:
//!
//! 1. **kernel**: no vpngw; the gateway namespace's own IP forwarding
//!    (`ip_forward=1`), the baseline a user would compare with;
//! 2. **vpngw bypass**: vpngw in the gateway namespace forwarding the flow
//!    unencrypted;
//! 3. **vpngw ESP**: AES-GCM-128 tunnel mode through the lab's two daemons
//!    (`scripts/lab/gw.toml` and `cgw.toml`, built in, unchanged): the VPC
//!    host -> vpngw `gw` (encrypts) -> the internet router (the kernel) ->
//!    vpngw `cgw` (decrypts) -> the IDC host. Also measured: the same with
//!    the ESP packets counted on the internet router and no `cgw` ("esp, gw
//!    only"), which costs the same parties as setup 2 (one daemon, the
//!    generator), so that encryption's own cost can be told from the cost
//!    of a second busy-polling daemon on a two-CPU machine;
//! 4. **strongSwan ESP**: the same tunnel (same prefixes, AES-GCM-128,
//!    negotiated with IKEv2 and a PSK) carried by strongSwan 5.9's charon
//!    with its userspace ESP (kernel-libipsec: ESP in UDP from a TUN
//!    device) in `gw` and `cgw`, driven by `scripts/interop/swan.py`: the
//!    userspace IPsec a user would compare vpngw's with (this machine has
//!    no kernel ESP).
//!
//! For each: the maximum rate (the generator as fast as it can) at 64
//! bytes, IMIX and 1400 bytes; TCP goodput with iperf3 where the flow has
//! two hosts (kernel forward, both ESP setups); the no-drop rate at 1400
//! bytes (the highest rate at which at most 0.1% is lost: a bisection with
//! our generator at set rates, losses counted on the sink's interface);
//! and one-way latency at 10%, 50% and 90% of the setup's own maximum,
//! 64 bytes: our generator writes its send time into each packet, our sink
//! (`vpngw-bench sink`, a UDP socket on an address of the sink's
//! namespace) takes the kernel's receive timestamp (SO_TIMESTAMPNS, taken
//! as the sink's veth hands the packet in), both CLOCK_REALTIME on one
//! machine, into an HDR histogram (p50, p99, p99.9, max), leaving out the
//! generator's first moments (the warm-up).

//! # How vpngw forwards unencrypted: the hairpin
//!
//! The product has no plain way out of a gateway: a route's next hop is a
//! tunnel, `inside` or `cloud-connect`, and the last two are the same thing
//! in the engine (`snapshot::Hop::Inside`: out of the gateway's inside
//! port); a port belongs to one gateway; the outside port only ever sends
//! ESP (and its XDP program gives everything else to the kernel); an SPD
//! `bypass` only hands the packet to the route table. So the only
//! unencrypted forwarding the schema can say is *inside to inside*: a
//! packet from the VPC to an address that a route sends `via = "inside"`
//! goes back out of the port it came in on, forwarded by the engine all
//! the same (AF_XDP receive, FIB lookup, TTL, a new link header for the
//! next hop, AF_XDP transmit). The lab's own `gw.toml` has such a route
//! (`10.1.0.0/16 via inside`), so one daemon configuration carries the
//! bypass flow (to 10.1.0.99) and the ESP flow (to the IDC). The kernel is
//! measured on the same hairpin (`kernel hairpin`: in on gw-in, out on
//! gw-in: the same packets, veth pair and sink), the like-for-like baseline
//! of target (2) >= (1); and, as the issue sketched it, between two ports
//! (`kernel forward`: gw-in to gw-out, the sink beyond the internet
//! router), for reference. Unencrypted forwarding by vpngw between two
//! ports would need an engine change: the smallest is a next hop "outside,
//! plain" (a route `via = "outside"` to the outside port's router), which
//! the product deliberately lacks; a hairpin costs vpngw the same per
//! packet (one AF_XDP receive, one transmit on a veth), so it stands in.
//!
//! # Generator, sink, counters
//!
//! The generator is ours by default (`vpngw-bench generate`: UDP/IPv4 on an
//! AF_XDP socket on `vpc0`, about 600 kpps into a plain veth here, against
//! trafgen's 250; `--generator trafgen` uses netsniff-ng's instead for the
//! full-rate runs), one process pinned to CPU 0, sending one flow of
//! 64-byte, IMIX (64/576/1400 as 7:4:1, interleaved) or 1400-byte IP
//! packets (plus a 14-byte Ethernet header) from 10.1.0.77, an address no
//! host has (a hairpinned packet from the VPC host's own address would be
//! a martian to it). Each full-rate sink is an address its namespace drops
//! silently (forwarding on and a blackhole route: dropped after the route
//! lookup, no ICMP back):
//! 10.1.0.99 on the VPC host (hairpins), 203.0.113.9 beyond the internet
//! router (kernel forward), 172.16.1.99 on the IDC host (ESP), and the
//! customer gateway's address on the internet router for "esp, gw only".
//! The latency sinks listen on 10.1.0.98, 203.0.113.98 and 172.16.1.98.
//! Every next hop is a permanent neighbour entry, so nothing waits for
//! ARP. Counted: *sent*, on the generator's interface `vpc0` (transmitted
//! plus dropped by the veth); *received*, on the sink interface; both read
//! from `/proc/PID/net/dev` of a process in each namespace, microseconds
//! apart, after a warm-up, over a fixed window. Gbit/s are IP bytes
//! received. Where vpngw receives, the veth's per-queue drop counter
//! (`ethtool -S`, `rx_queue_0_drops`: a redirect into the AF_XDP socket
//! that found its ring full or no fill frame) says how many were lost
//! before vpngw saw them: the daemon's own report does not count those.
//!
//! # Cores
//!
//! On veth the receive work runs on the sending CPU: the kernel's whole
//! forwarding path, and vpngw's XDP program with its copy into the AF_XDP
//! ring, run on the generator's CPU; what vpngw transmits is received (and,
//! on the internet router, forwarded) on vpngw's CPU. So the kernel
//! forwards on one CPU (the generator's) while vpngw adds a busy-polling
//! core of its own. (RPS on gw-in, to give the kernel the second CPU as
//! well, was tried: trafgen then sent a few hundred packets a second on
//! this VM, so the baseline stays as Linux is set up by default.) The gw
//! daemon's worker is pinned to the last CPU (`--gw-core`), away from the
//! generator; cgw's to the last but one (`--cgw-core`), which on two CPUs
//! is the generator's: in setup 3 two busy-polling daemons and the
//! generator share two CPUs, and of the three choices tried on an
//! otherwise idle machine (cgw with the generator, with gw, unpinned) this
//! one lost the least (it halves the generator, and gw keeps a CPU of its
//! own; with gw, the two daemons take turns on one CPU and gw's ring
//! overflows while cgw runs; unpinned lies between). Every party runs
//! at one niceness, -10 (`--nice`), ahead of other work on a shared
//! machine: the generator, the daemons, strongSwan's charons (unpinned:
//! their threads are theirs to schedule), iperf3's two ends and the
//! latency sink (pinned to the generator's CPU), so that none is starved
//! by another's busy polling. With fewer than four CPUs the vpngw
//! daemons run with `--idle-sleep-us 50` (`wire --idle-sleep-us`, 0 to
//! busy-poll): their CPUs are shared with the generator, the sink, iperf3
//! and each other, the case the option is for: there a spinning worker
//! takes CPU time that iperf3, the sink and the other daemon need, and
//! napping raised TCP goodput through vpngw ESP and lowered the p99
//! latency through the two daemons. Each measurement records the cores each party used (its CPU
//! time over the window, softirq work included when it ran in that party's
//! context), softirq time, the whole machine, and "other": the machine
//! less our parties (ksoftirqd, and whatever else was running, which is
//! worth checking before believing a vpngw number: the kernel baseline
//! needs one CPU, vpngw both).
//!
//! # Rounds
//!
//! A round measures every setup at every size: the kernel (no daemon),
//! then gw alone (bypass, esp gw only), then gw and cgw (ESP), then the
//! two charons; every other round runs that order and the sizes
//! backwards, so drift and a noisy neighbour hurt all setups alike.
//! Ratios are medians of the per-round ratios of received packet rates.
//! The rate-controlled runs (TCP, no-drop rate, latency) follow, setup by
//! setup, at rates derived from the rounds' medians.
//!
//! Needs root, `ip` (iproute2), `ethtool`, `taskset`, iperf3, strongSwan
//! and python3 (`scripts/deps.sh` installs them), and the vpngw daemon
//! (by default the `vpngw` next to this binary). The lab is built under
//! its own prefix (`vpngw-wire`: a run killed by a signal leaves it to the
//! next run, or to `scripts/lab.sh down vpngw-wire`) and torn down at the
//! end and on failure.

use crate::plot::{Chart, Series};
use crate::report::Doc;
use crate::traffic::{GenReport, Latency, SinkReport, SizeMix};
use crate::{median, print_targets, Table, Target};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// IP packet sizes: 64 bytes, the simple IMIX, 1400 bytes (the largest
/// whose ESP still fits the 1500-byte MTU of the internet link).
pub const SIZES: [SizeMix; 3] = [SizeMix::Fixed(64), SizeMix::Imix, SizeMix::Fixed(1400)];
/// The load points of the latency measurement, as fractions of the
/// setup's measured maximum rate.
pub const LOADS: [f64; 3] = [0.1, 0.5, 0.9];
/// The loss the no-drop rate allows.
pub const NDR_LOSS: f64 = 0.001;

const PREFIX: &str = "vpngw-wire";
const LAB_SH: &str = include_str!("../../scripts/lab.sh");
const GW_TOML: &str = include_str!("../../scripts/lab/gw.toml");
const CGW_TOML: &str = include_str!("../../scripts/lab/cgw.toml");
const SWAN_PY: &str = include_str!("../../scripts/interop/swan.py");
/// The flows' source: an address on the VPC's segment that no host has,
/// so a hairpinned packet is not a martian (its own source) to the VPC host.
const FLOW_SRC: &str = "10.1.0.77";
/// `/proc/stat` and `/proc/PID/stat` count in USER_HZ, 100 on Linux/x86.
const TICKS_PER_SECOND: f64 = 100.0;

/// What forwards the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setup {
    /// The kernel, gw-in -> gw-in (the hairpin vpngw's bypass takes).
    KernelHairpin,
    /// The kernel, gw-in -> gw-out (two ports).
    KernelForward,
    /// vpngw `gw`, unencrypted, gw-in -> gw-in.
    VpngwBypass,
    /// vpngw `gw` encrypting (AES-GCM-128), the ESP packets' sink on the
    /// internet router: setup 3 without the second daemon.
    VpngwEncrypt,
    /// vpngw `gw` -> internet router -> vpngw `cgw`, AES-GCM-128.
    VpngwEsp,
    /// strongSwan's charon with its userspace ESP (kernel-libipsec) in
    /// `gw` and `cgw`, the same tunnel, AES-GCM-128: the baseline a user
    /// would compare vpngw's ESP with.
    StrongswanEsp,
}

impl Setup {
    pub const ALL: [Setup; 6] = [
        Setup::KernelHairpin,
        Setup::KernelForward,
        Setup::VpngwBypass,
        Setup::VpngwEncrypt,
        Setup::VpngwEsp,
        Setup::StrongswanEsp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Setup::KernelHairpin => "kernel hairpin",
            Setup::KernelForward => "kernel forward",
            Setup::VpngwBypass => "vpngw bypass",
            Setup::VpngwEncrypt => "vpngw esp, gw only",
            Setup::VpngwEsp => "vpngw esp",
            Setup::StrongswanEsp => "strongswan esp",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Setup::KernelHairpin => "vpc0 > gw-in (kernel) gw-in > vpc0",
            Setup::KernelForward => "vpc0 > gw-in (kernel) gw-out > inet0",
            Setup::VpngwBypass => "vpc0 > gw-in (vpngw) gw-in > vpc0",
            Setup::VpngwEncrypt => "vpc0 > gw-in (vpngw, encrypts) gw-out > inet0 (ESP counted)",
            Setup::VpngwEsp => "vpc0 > gw-in (vpngw, encrypts) gw-out > inet > cgw-out (vpngw, decrypts) cgw-in > idc0",
            Setup::StrongswanEsp => {
                "vpc0 > gw-in (charon, libipsec, encrypts) gw-out > inet > cgw-out (charon, decrypts) cgw-in > idc0"
            }
        }
    }

    /// The flow's destination, dropped silently in the sink's namespace.
    fn dst(self) -> &'static str {
        match self {
            Setup::KernelHairpin | Setup::VpngwBypass => "10.1.0.99",
            Setup::KernelForward => "203.0.113.9",
            Setup::VpngwEncrypt | Setup::VpngwEsp | Setup::StrongswanEsp => "172.16.1.99",
        }
    }

    /// Where the latency sink listens (an address of the sink's namespace),
    /// if the setup has one: "esp, gw only" ends in ESP no one decrypts.
    fn latency_dst(self) -> Option<&'static str> {
        match self {
            Setup::KernelHairpin | Setup::VpngwBypass => Some("10.1.0.98"),
            Setup::KernelForward => Some("203.0.113.98"),
            Setup::VpngwEncrypt => None,
            Setup::VpngwEsp | Setup::StrongswanEsp => Some("172.16.1.98"),
        }
    }

    /// The iperf3 server's address through this setup, where TCP is
    /// measured (the flows between two hosts: a hairpin has none).
    fn tcp_server(self) -> Option<(&'static str, &'static str)> {
        match self {
            Setup::KernelForward => Some(("inet", "192.0.2.254")),
            Setup::VpngwEsp | Setup::StrongswanEsp => Some(("idc", "172.16.1.9")),
            _ => None,
        }
    }

    /// The vpngw setup a kernel baseline's latency is compared with, at
    /// the same rate.
    fn latency_partner(self) -> Option<Setup> {
        match self {
            Setup::KernelHairpin => Some(Setup::VpngwBypass),
            Setup::KernelForward => Some(Setup::VpngwEsp),
            _ => None,
        }
    }

    /// Whether the no-drop rate (at most 0.1% lost) is searched for.
    fn ndr(self) -> bool {
        matches!(self, Setup::KernelForward | Setup::VpngwEsp | Setup::StrongswanEsp)
    }

    /// The sink: namespace role and interface.
    fn sink(self) -> (&'static str, &'static str) {
        match self {
            Setup::KernelHairpin | Setup::VpngwBypass => ("vpc", "vpc0"),
            Setup::KernelForward | Setup::VpngwEncrypt => ("inet", "inet0"),
            Setup::VpngwEsp | Setup::StrongswanEsp => ("idc", "idc0"),
        }
    }

    /// The interfaces where a vpngw daemon's XDP program receives the flow.
    fn xdp_ports(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Setup::KernelHairpin | Setup::KernelForward | Setup::StrongswanEsp => &[],
            Setup::VpngwBypass | Setup::VpngwEncrypt => &[("gw", "gw-in")],
            Setup::VpngwEsp => &[("gw", "gw-in"), ("cgw", "cgw-out")],
        }
    }
}

/// How a run is made.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub rounds: usize,
    pub warmup_ms: u64,
    pub window_ms: u64,
    #[serde(skip)]
    pub vpngw: PathBuf,
    /// CPUs the gw and cgw daemons' workers are pinned to (none: unpinned).
    pub gw_core: Option<usize>,
    pub cgw_core: Option<usize>,
    /// The niceness the generator and the daemons run at (below 0: ahead
    /// of other work on the machine).
    pub nice: i32,
    pub generator: GeneratorKind,
    /// The daemons' `--idle-sleep-us` (none: they busy-poll, as on a host
    /// that gives them their cores). By default 50 us on a machine with
    /// fewer than four CPUs, where the daemons share theirs with the
    /// generator, the sink, iperf3 and each other (the case the option is
    /// for); none on a larger one.
    pub idle_sleep_us: Option<u64>,
    /// iperf3's run per setup, seconds.
    pub tcp_seconds: u64,
    /// Each latency measurement's send time, ms.
    pub latency_ms: u64,
    /// Steps of the no-drop-rate search and each step's send time.
    pub ndr_steps: usize,
    pub ndr_trial_ms: u64,
}

/// Which generator sends the flows at full rate (the rate-controlled runs,
/// latency and the no-drop rate, always use our own: they need its stamps
/// and its pacing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorKind {
    /// `vpngw-bench generate` (AF_XDP).
    Own,
    /// trafgen from netsniff-ng (AF_PACKET with a TX_RING).
    Trafgen,
}

impl std::str::FromStr for GeneratorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "own" => Ok(GeneratorKind::Own),
            "trafgen" => Ok(GeneratorKind::Trafgen),
            _ => Err(format!("{s:?}: own or trafgen")),
        }
    }
}

impl Options {
    /// How the vpngw workers wait for traffic, in words.
    fn workers(&self) -> String {
        self.idle_sleep_us.map_or("the workers busy-poll".to_string(), |us| format!("idle workers nap {us} us"))
    }

    /// The full run (about six minutes) or the quick one (about one).
    pub fn new(quick: bool, vpngw: PathBuf) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (rounds, warmup_ms, window_ms) = if quick { (1, 200, 300) } else { (5, 400, 2000) };
        let (tcp_seconds, latency_ms, ndr_steps, ndr_trial_ms) =
            if quick { (1, 300, 2, 300) } else { (5, 2000, 7, 1000) };
        Options {
            rounds,
            warmup_ms,
            window_ms,
            vpngw,
            gw_core: Some(cpus - 1),
            cgw_core: Some(cpus.saturating_sub(2)),
            nice: -10,
            generator: GeneratorKind::Own,
            idle_sleep_us: (cpus < 4).then_some(50),
            tcp_seconds,
            latency_ms,
            ndr_steps,
            ndr_trial_ms,
        }
    }
}

/// One setup at one size in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub round: usize,
    pub sent_pps: f64,
    pub received_pps: f64,
    /// Packets lost at a vpngw XDP port (AF_XDP ring full, or no fill
    /// frame), per second, summed over the setup's vpngw ports.
    pub xdp_drop_pps: f64,
    /// The same by port (`gw-in`, `cgw-out`).
    pub xdp_drop_pps_by_port: BTreeMap<String, f64>,
    pub cores: Cores,
}

/// Cores used over a measurement window: CPU seconds per second.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cores {
    pub generator: f64,
    pub gw: f64,
    pub cgw: f64,
    /// Softirq time on all CPUs (also counted in whichever party it
    /// interrupted).
    pub softirq: f64,
    /// Every CPU's busy time, whatever ran.
    pub machine: f64,
    /// The machine less the generator and the daemons: ksoftirqd, and
    /// whatever else runs on the machine.
    pub other: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub setup: Setup,
    pub path: &'static str,
    /// IP packet size, bytes, or `imix`.
    pub size: SizeMix,
    /// Mean IP bytes per packet.
    pub mean_bytes: f64,
    /// Medians over the rounds.
    pub sent_pps: f64,
    pub received_pps: f64,
    pub gbps: f64,
    /// 100 x (1 - received / sent), over all rounds together.
    pub loss_pct: f64,
    /// Of the sent packets, the percentage lost at vpngw's XDP ports.
    pub xdp_drop_pct: f64,
    pub xdp_drop_pct_by_port: BTreeMap<String, f64>,
    pub cores: Cores,
    pub samples: Vec<Sample>,
}

/// A ratio of received rates, measured round by round.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub what: String,
    pub size: SizeMix,
    pub median: f64,
    pub per_round: Vec<f64>,
}

/// A daemon's counters, summed over its runs (one or two per round).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonTotals {
    pub runs: usize,
    pub core: Option<usize>,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub drops: BTreeMap<String, u64>,
    /// The ports' own counters (AF_XDP tx-full and the rest), by port id,
    /// where the daemon reports them.
    pub ports: BTreeMap<String, BTreeMap<String, u64>>,
    /// The worst of its runs: 99th percentile and maximum nanoseconds
    /// from a burst's receive to its transmit.
    pub burst_p99_ns: u64,
    pub burst_max_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub options: Options,
    pub cpus: usize,
    pub generator: String,
    /// /proc/loadavg before and after: what else the machine was doing.
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub seconds: f64,
    pub results: Vec<Row>,
    pub ratios: Vec<Ratio>,
    pub tcp: Vec<Goodput>,
    pub ndr: Vec<Ndr>,
    pub latency: Vec<LatencyPoint>,
    pub daemons: BTreeMap<String, DaemonTotals>,
    pub targets: Vec<Target>,
}

/// TCP goodput through a setup: iperf3, one connection from the VPC host.
#[derive(Debug, Clone, Serialize)]
pub struct Goodput {
    pub setup: Setup,
    pub server: &'static str,
    /// What the server received, Mbit/s.
    pub mbps: f64,
    pub retransmits: u64,
}

/// The no-drop rate: the highest rate found at which at most
/// [`NDR_LOSS`] of the packets were lost (a binary search, RFC 2544's
/// throughput with a loss allowance).
#[derive(Debug, Clone, Serialize)]
pub struct Ndr {
    pub setup: Setup,
    pub size: SizeMix,
    pub pps: f64,
    pub gbps: f64,
    pub trials: Vec<Trial>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub rate_pps: f64,
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
}

/// One-way latency through a setup at a fraction of its maximum rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyPoint {
    pub setup: Setup,
    pub size: SizeMix,
    /// Of the setup's measured maximum (received pps at this size).
    pub load: f64,
    pub rate_pps: f64,
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    pub reordered: u64,
    /// Of the lost, those dropped at the sink's own socket (the sink did
    /// not keep up), not on the way.
    pub socket_drops: u64,
    pub latency: Latency,
}

/// Runs the benchmark; an error says what was missing or what failed (the
/// lab is gone by then).
pub fn run(opts: &Options, progress: impl Fn(&str)) -> Result<Report, String> {
    let start = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let generator = match opts.generator {
        GeneratorKind::Own => "vpngw-bench generate (AF_XDP)".to_string(),
        GeneratorKind::Trafgen => trafgen_version()?,
    };
    if !opts.vpngw.is_file() {
        return Err(format!(
            "{}: no vpngw daemon there (cargo build --release -p vpngw-ctrl, or pass --vpngw)",
            opts.vpngw.display()
        ));
    }
    for (program, package) in [("iperf3", "iperf3"), ("/usr/lib/ipsec/charon", "strongswan"), ("python3", "python3")] {
        let found = Path::new(program).is_file()
            || std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
        if !found {
            return Err(format!("{program} is missing (apt-get install -y {package}, or scripts/deps.sh)"));
        }
    }
    let loadavg_before = loadavg();
    progress(&format!("wire: building the lab ({PREFIX})"));
    let lab = WireLab::up()?;
    let mut samples: BTreeMap<(usize, usize), Vec<Sample>> = BTreeMap::new();
    let mut parties = Parties::default();
    for round in 0..opts.rounds {
        let mut sizes: Vec<usize> = (0..SIZES.len()).collect();
        let mut phases = Phase::ALL;
        if round % 2 == 1 {
            sizes.reverse();
            phases.reverse();
        }
        for phase in phases {
            progress(&format!("wire: round {} of {}: {}", round + 1, opts.rounds, phase.what()));
            parties.enter(&lab, opts, phase)?;
            for &setup in phase.setups() {
                for &i in &sizes {
                    let size = SIZES[i];
                    progress(&format!(
                        "wire: round {} of {}, {}, {} B",
                        round + 1,
                        opts.rounds,
                        setup.name(),
                        size.label()
                    ));
                    // trafgen now and then gives up ("Flushing TX_RING
                    // failed") when the veth pushes back: once more then.
                    let s = match measure(&lab, opts, setup, size, round, &mut parties) {
                        Err(e) if e.starts_with("trafgen") => {
                            progress(&format!("wire: {e}; measuring again"));
                            measure(&lab, opts, setup, size, round, &mut parties)?
                        }
                        r => r?,
                    };
                    samples.entry((setup_index(setup), i)).or_default().push(s);
                }
            }
        }
    }

    let mut results = Vec::new();
    for setup in Setup::ALL {
        for (i, size) in SIZES.into_iter().enumerate() {
            let s = samples.remove(&(setup_index(setup), i)).unwrap_or_default();
            results.push(row(setup, size, s));
        }
    }
    // Rate-controlled runs, each setup at rates derived from its maximum.
    let (mut tcp, mut ndr, mut latency) = (Vec::new(), Vec::new(), Vec::new());
    for phase in Phase::ALL {
        parties.enter(&lab, opts, phase)?;
        for &setup in phase.setups() {
            if let Some(server) = setup.tcp_server() {
                progress(&format!("wire: {}: TCP goodput (iperf3, {} s)", setup.name(), opts.tcp_seconds));
                tcp.push(goodput(&lab, opts, setup, server)?);
            }
            let max = |size: SizeMix| {
                results.iter().find(|r| r.setup == setup && r.size == size).map_or(0.0, |r| r.received_pps)
            };
            if setup.ndr() {
                let size = SizeMix::Fixed(1400);
                progress(&format!("wire: {}: no-drop rate, {} B", setup.name(), size.label()));
                ndr.push(no_drop_rate(&lab, opts, setup, size, max(size), &progress)?);
            }
            if let Some(dst) = setup.latency_dst() {
                let size = SizeMix::Fixed(64);
                let own = max(size);
                // Each setup at shares of its own maximum; a kernel baseline
                // also at the rate its vpngw counterpart has at 50%, so that
                // the two are compared at the same load.
                let mut rates: Vec<f64> = LOADS.iter().map(|l| l * own).collect();
                if let Some(partner) = setup.latency_partner() {
                    let r =
                        results.iter().find(|r| r.setup == partner && r.size == size).map_or(0.0, |r| r.received_pps);
                    rates.push(0.5 * r);
                }
                for rate in rates {
                    progress(&format!(
                        "wire: {}: latency at {:.1} kpps ({:.0}% of its maximum), {} B",
                        setup.name(),
                        rate / 1e3,
                        100.0 * rate / own.max(1.0),
                        size.label()
                    ));
                    latency.push(latency_at(&lab, opts, setup, dst, size, rate, own)?);
                }
            }
        }
    }
    let daemons = parties.leave(&lab)?;
    drop(lab);

    let ratios = ratios(&results);
    let targets = targets(&ratios, &tcp, &ndr, &latency);
    Ok(Report {
        bench: "wire",
        options: opts.clone(),
        cpus,
        generator,
        loadavg_before,
        loadavg_after: loadavg(),
        seconds: start.elapsed().as_secs_f64(),
        results,
        ratios,
        tcp,
        ndr,
        latency,
        daemons,
        targets,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Kernel,
    Bypass,
    Esp,
    Strongswan,
}

impl Phase {
    const ALL: [Phase; 4] = [Phase::Kernel, Phase::Bypass, Phase::Esp, Phase::Strongswan];

    fn setups(self) -> &'static [Setup] {
        match self {
            Phase::Kernel => &[Setup::KernelHairpin, Setup::KernelForward],
            Phase::Bypass => &[Setup::VpngwBypass, Setup::VpngwEncrypt],
            Phase::Esp => &[Setup::VpngwEsp],
            Phase::Strongswan => &[Setup::StrongswanEsp],
        }
    }

    fn what(self) -> &'static str {
        match self {
            Phase::Kernel => "the kernel forwarding",
            Phase::Bypass => "vpngw gw alone",
            Phase::Esp => "vpngw gw and cgw",
            Phase::Strongswan => "strongSwan (charon, libipsec) in gw and cgw",
        }
    }
}

/// What forwards in the gateway namespaces now: a phase's parties, and
/// only those (an idle vpngw still busy-polls a core).
#[derive(Default)]
struct Parties {
    gw: Option<Daemon>,
    cgw: Option<Daemon>,
    swan: Option<Swan>,
    daemons: BTreeMap<String, DaemonTotals>,
}

impl Parties {
    fn enter(&mut self, lab: &WireLab, opts: &Options, phase: Phase) -> Result<(), String> {
        let (want_gw, want_cgw, want_swan) = match phase {
            Phase::Kernel => (false, false, false),
            Phase::Bypass => (true, false, false),
            Phase::Esp => (true, true, false),
            Phase::Strongswan => (false, false, true),
        };
        if !want_swan {
            // Its drop stops both charons.
            self.swan = None;
        }
        for (want, slot, name) in [(want_cgw, &mut self.cgw, "cgw"), (want_gw, &mut self.gw, "gw")] {
            if !want {
                if let Some(d) = slot.take() {
                    d.stop(self.daemons.entry(name.into()).or_default())?;
                }
            }
        }
        let forward = |on: bool| if on { "1" } else { "0" };
        lab.sysctl("gw", "net.ipv4.ip_forward", forward(phase == Phase::Kernel || want_swan))?;
        lab.sysctl("cgw", "net.ipv4.ip_forward", forward(want_swan))?;
        for (want, slot, name, config, core) in [
            (want_gw, &mut self.gw, "gw", &lab.gw_config, opts.gw_core),
            (want_cgw, &mut self.cgw, "cgw", &lab.cgw_config, opts.cgw_core),
        ] {
            if want && slot.is_none() {
                *slot = Some(Daemon::start(lab, opts, name, config, core)?);
            }
        }
        if want_swan && self.swan.is_none() {
            self.swan = Some(Swan::start(lab, opts)?);
        }
        self.daemons.entry("gw".into()).or_default().core = opts.gw_core;
        self.daemons.entry("cgw".into()).or_default().core = opts.cgw_core;
        Ok(())
    }

    /// Everyone stopped; the vpngw daemons' totals.
    fn leave(mut self, lab: &WireLab) -> Result<BTreeMap<String, DaemonTotals>, String> {
        self.swan = None;
        for (slot, name) in [(self.cgw.take(), "cgw"), (self.gw.take(), "gw")] {
            if let Some(d) = slot {
                d.stop(self.daemons.entry(name.into()).or_default())?;
            }
        }
        for role in ["gw", "cgw"] {
            lab.sysctl(role, "net.ipv4.ip_forward", "0")?;
        }
        Ok(std::mem::take(&mut self.daemons))
    }

    /// Whoever forwards is still there.
    fn check_running(&mut self) -> Result<(), String> {
        for d in [self.gw.as_mut(), self.cgw.as_mut()].into_iter().flatten() {
            d.check_running()?;
        }
        self.swan.as_ref().map_or(Ok(()), |s| s.check_running())
    }

    /// The processes that forward in gw and cgw (for their CPU time).
    fn pids(&self) -> [Option<u32>; 2] {
        match &self.swan {
            Some(s) => [s.pid("gw"), s.pid("cgw")],
            None => [self.gw.as_ref().map(|d| d.pid()), self.cgw.as_ref().map(|d| d.pid())],
        }
    }
}

fn setup_index(s: Setup) -> usize {
    Setup::ALL.iter().position(|&x| x == s).expect("a setup")
}

fn row(setup: Setup, size: SizeMix, samples: Vec<Sample>) -> Row {
    let med = |f: fn(&Sample) -> f64| if samples.is_empty() { 0.0 } else { median(samples.iter().map(f).collect()) };
    let (sent, received) = (med(|s| s.sent_pps), med(|s| s.received_pps));
    let total_sent: f64 = samples.iter().map(|s| s.sent_pps).sum();
    let total_received: f64 = samples.iter().map(|s| s.received_pps).sum();
    let total_xdp: f64 = samples.iter().map(|s| s.xdp_drop_pps).sum();
    let pct = |x: f64| if total_sent > 0.0 { 100.0 * x / total_sent } else { 0.0 };
    let cores = Cores {
        generator: med(|s| s.cores.generator),
        gw: med(|s| s.cores.gw),
        cgw: med(|s| s.cores.cgw),
        softirq: med(|s| s.cores.softirq),
        machine: med(|s| s.cores.machine),
        other: med(|s| s.cores.other),
    };
    Row {
        setup,
        path: setup.path(),
        size,
        mean_bytes: size.mean(),
        sent_pps: sent,
        received_pps: received,
        gbps: received * size.mean() * 8.0 / 1e9,
        loss_pct: pct(total_sent - total_received),
        xdp_drop_pct: pct(total_xdp),
        xdp_drop_pct_by_port: setup
            .xdp_ports()
            .iter()
            .map(|&(_, port)| {
                (port.to_string(), pct(samples.iter().filter_map(|s| s.xdp_drop_pps_by_port.get(port)).sum()))
            })
            .collect(),
        cores,
        samples,
    }
}

fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let find = |setup: Setup, size: SizeMix| rows.iter().find(|r| r.setup == setup && r.size == size);
    let mut out = Vec::new();
    for (what, a, b) in [
        ("vpngw bypass / kernel hairpin", Setup::VpngwBypass, Setup::KernelHairpin),
        ("vpngw bypass / kernel forward", Setup::VpngwBypass, Setup::KernelForward),
        ("vpngw esp / vpngw bypass", Setup::VpngwEsp, Setup::VpngwBypass),
        ("vpngw esp gw only / vpngw bypass", Setup::VpngwEncrypt, Setup::VpngwBypass),
        ("vpngw esp / kernel hairpin", Setup::VpngwEsp, Setup::KernelHairpin),
        ("vpngw esp / strongswan esp", Setup::VpngwEsp, Setup::StrongswanEsp),
    ] {
        for size in SIZES {
            let (Some(a), Some(b)) = (find(a, size), find(b, size)) else { continue };
            let per_round: Vec<f64> = a
                .samples
                .iter()
                .filter_map(|x| {
                    let y = b.samples.iter().find(|y| y.round == x.round)?;
                    (y.received_pps > 0.0).then(|| x.received_pps / y.received_pps)
                })
                .collect();
            let median = if per_round.is_empty() { 0.0 } else { median(per_round.clone()) };
            out.push(Ratio { what: what.into(), size, median, per_round });
        }
    }
    out
}

fn targets(ratios: &[Ratio], tcp: &[Goodput], ndr: &[Ndr], latency: &[LatencyPoint]) -> Vec<Target> {
    let find = |what: &str, size: SizeMix| ratios.iter().find(|r| r.what == what && r.size == size);
    let mut t = Vec::new();
    for size in [SizeMix::Fixed(64), SizeMix::Fixed(1400)] {
        if let Some(r) = find("vpngw bypass / kernel hairpin", size) {
            t.push(Target {
                what: format!("(2) vpngw bypass vs (1) kernel, same flow, {} B, received pps", size.label()),
                want: ">= 1.00".into(),
                got: format!("{:.2}", r.median),
                met: r.median >= 1.0,
            });
        }
    }
    if let Some(r) = find("vpngw esp / vpngw bypass", SizeMix::Fixed(1400)) {
        t.push(Target {
            what: "(3) vpngw ESP AES-GCM-128 vs (2) bypass, 1400 B, received pps".into(),
            want: ">= 0.80".into(),
            got: format!("{:.2}", r.median),
            met: r.median >= 0.8,
        });
    }
    let mbps = |s: Setup| tcp.iter().find(|g| g.setup == s).map(|g| g.mbps);
    if let (Some(v), Some(w)) = (mbps(Setup::VpngwEsp), mbps(Setup::StrongswanEsp)) {
        let ratio = if w > 0.0 { v / w } else { 0.0 };
        t.push(Target {
            what: "vpngw ESP vs strongSwan libipsec, AES-GCM-128, TCP goodput (iperf3)".into(),
            want: ">= 5.00".into(),
            got: format!("{ratio:.2} ({v:.0} / {w:.0} Mbit/s)"),
            met: ratio >= 5.0,
        });
    }
    let pps = |s: Setup| ndr.iter().find(|n| n.setup == s).map(|n| n.pps);
    if let (Some(v), Some(w)) = (pps(Setup::VpngwEsp), pps(Setup::StrongswanEsp)) {
        let ratio = if w > 0.0 { v / w } else { 0.0 };
        t.push(Target {
            what: format!("vpngw ESP vs strongSwan libipsec, 1400 B packets/s at <= {}% loss", NDR_LOSS * 100.0),
            want: ">= 5.00".into(),
            got: format!("{ratio:.2} ({:.1} / {:.1} kpps)", v / 1e3, w / 1e3),
            met: ratio >= 5.0,
        });
    }
    for kernel in [Setup::KernelHairpin, Setup::KernelForward] {
        let Some(partner) = kernel.latency_partner() else { continue };
        let Some(v) = latency.iter().find(|l| l.setup == partner && (l.load - 0.5).abs() < 1e-9) else { continue };
        let Some(k) = latency.iter().find(|l| l.setup == kernel && (l.rate_pps - v.rate_pps).abs() < 1.0) else {
            continue;
        };
        t.push(Target {
            what: format!(
                "p99 one-way latency, 64 B, {} at 50% of its maximum ({:.0} kpps) vs {} at the same rate",
                partner.name(),
                v.rate_pps / 1e3,
                kernel.name()
            ),
            want: "<= kernel".into(),
            got: format!("{:.1} us vs {:.1} us", v.latency.p99_ns as f64 / 1e3, k.latency.p99_ns as f64 / 1e3),
            met: v.latency.p99_ns <= k.latency.p99_ns,
        });
    }
    t
}

/// One measurement: the generator runs for the warm-up and the window; the
/// counters are read at both ends of the window.
fn measure(
    lab: &WireLab,
    opts: &Options,
    setup: Setup,
    size: SizeMix,
    round: usize,
    parties: &mut Parties,
) -> Result<Sample, String> {
    parties.check_running()?;
    let (sink_role, sink_if) = setup.sink();
    let source = lab.sleeper("vpc");
    let sink = lab.sleeper(sink_role);
    // Setup 3 without cgw: the internet router drops the ESP packets
    // (rather than pass them to cgw's kernel, which has no ESP).
    let _blackhole =
        if setup == Setup::VpngwEncrypt { Some(Blackhole::add(lab, "inet", "198.51.100.1/32")?) } else { None };
    let mut generator = Generator::start(lab, opts, setup.dst(), size)?;
    sleep(Duration::from_millis(opts.warmup_ms));
    generator.check_running()?;
    let pids = parties.pids();
    // ethtool takes milliseconds: its counts get their own interval, from
    // the middle of one reading to the middle of the other.
    let (xdp0, xdp0_at) = timed(|| xdp_drops(lab, setup))?;
    let a = Counters::read(source, sink, sink_if, generator.pgid, pids)?;
    sleep(Duration::from_millis(opts.window_ms));
    let b = Counters::read(source, sink, sink_if, generator.pgid, pids)?;
    let (xdp1, xdp1_at) = timed(|| xdp_drops(lab, setup))?;
    generator.check_running()?;
    generator.stop();
    let dt = b.at.duration_since(a.at).as_secs_f64();
    let xdp_by_port: BTreeMap<String, f64> = setup
        .xdp_ports()
        .iter()
        .zip(xdp0.iter().zip(&xdp1))
        .map(|(&(_, port), (x, y))| (port.to_string(), y.saturating_sub(*x) as f64 / (xdp1_at - xdp0_at).max(1e-3)))
        .collect();
    let per_second = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
    let cores = |x: u64, y: u64| y.saturating_sub(x) as f64 / TICKS_PER_SECOND / dt;
    Ok(Sample {
        round,
        sent_pps: per_second(a.sent, b.sent),
        received_pps: per_second(a.received, b.received),
        xdp_drop_pps: xdp_by_port.values().sum(),
        xdp_drop_pps_by_port: xdp_by_port,
        cores: Cores {
            generator: cores(a.generator, b.generator),
            gw: cores(a.daemons[0], b.daemons[0]),
            cgw: cores(a.daemons[1], b.daemons[1]),
            softirq: cores(a.softirq, b.softirq),
            machine: cores(a.busy, b.busy),
            other: (cores(a.busy, b.busy)
                - cores(a.generator, b.generator)
                - cores(a.daemons[0], b.daemons[0])
                - cores(a.daemons[1], b.daemons[1]))
            .max(0.0),
        },
    })
}

/// What `f` returns, and when (seconds since the process started, the
/// middle of the call).
fn timed<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(T, f64), String> {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let before = epoch.elapsed().as_secs_f64();
    let v = f()?;
    let after = epoch.elapsed().as_secs_f64();
    Ok((v, (before + after) / 2.0))
}

/// The counters a measurement reads, all at one moment (file reads only).
struct Counters {
    at: Instant,
    /// The generator's interface: transmitted and dropped.
    sent: u64,
    received: u64,
    /// CPU ticks.
    generator: u64,
    daemons: [u64; 2],
    softirq: u64,
    busy: u64,
}

impl Counters {
    fn read(source: u32, sink: u32, sink_if: &str, generator: u32, daemons: [Option<u32>; 2]) -> Result<Self, String> {
        let src = net_dev(source, "vpc0")?;
        let dst = net_dev(sink, sink_if)?;
        let at = Instant::now();
        let (busy, softirq) = machine_ticks()?;
        let generator = group_ticks(generator);
        let daemons = daemons.map(|p| p.and_then(process_ticks).unwrap_or(0));
        Ok(Counters {
            at,
            sent: src.tx_packets + src.tx_dropped,
            received: dst.rx_packets,
            generator,
            daemons,
            softirq,
            busy,
        })
    }
}

struct NetDev {
    rx_packets: u64,
    tx_packets: u64,
    tx_dropped: u64,
}

/// An interface's counters in the network namespace of process `pid`.
fn net_dev(pid: u32, ifname: &str) -> Result<NetDev, String> {
    let path = format!("/proc/{pid}/net/dev");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else { continue };
        if name.trim() != ifname {
            continue;
        }
        let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if f.len() < 16 {
            break;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast;
        // tx: bytes packets errs drop ...
        return Ok(NetDev { rx_packets: f[1], tx_packets: f[9], tx_dropped: f[11] });
    }
    Err(format!("{path}: no interface {ifname}"))
}

/// All CPUs' busy and softirq ticks.
fn machine_ticks() -> Result<(u64, u64), String> {
    let text = fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = text.lines().next().unwrap_or_default();
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if f.len() < 8 {
        return Err(format!("/proc/stat: unexpected first line {line:?}"));
    }
    // user nice system idle iowait irq softirq steal
    Ok((f[0] + f[1] + f[2] + f[5] + f[6] + f[7], f[6]))
}

/// (process group, utime + stime) of process `pid`, all its threads.
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state ppid pgrp session tty tpgid flags minflt
    // cminflt majflt cmajflt utime stime.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let pgrp = f.get(2)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((pgrp, ticks))
}

fn process_ticks(pid: u32) -> Option<u64> {
    stat_of(pid).map(|(_, t)| t)
}

/// CPU ticks of every process in process group `pgid` (trafgen forks).
fn group_ticks(pgid: u32) -> u64 {
    let Ok(dir) = fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat_of)
        .filter(|&(g, _)| g == pgid)
        .map(|(_, t)| t)
        .sum()
}

/// Packets each of the setup's vpngw XDP ports could not hand to its
/// AF_XDP socket so far (the veth's per-queue drop counters, which count
/// failed redirects; `xdp_drops` are the program's own XDP_DROPs).
fn xdp_drops(lab: &WireLab, setup: Setup) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for &(role, ifname) in setup.xdp_ports() {
        let text = lab.exec(role, &["ethtool", "-S", ifname])?;
        let n = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rx_queue_")?.split_once("_drops:"))
            .filter(|(queue, _)| queue.parse::<u32>().is_ok())
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum();
        out.push(n);
    }
    Ok(out)
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn trafgen_version() -> Result<String, String> {
    let out = Command::new("trafgen").arg("--version").output().map_err(|e| {
        format!("trafgen: {e} (install netsniff-ng: apt-get install -y netsniff-ng, or scripts/deps.sh)")
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("trafgen").trim().to_string())
}

/// The namespace lab under this benchmark's prefix, with the sinks and
/// static neighbours the flows need; torn down on drop.
struct WireLab {
    dir: PathBuf,
    gw_config: PathBuf,
    cgw_config: PathBuf,
    /// A process in each namespace whose counters are read (by role).
    sleepers: Vec<(&'static str, Child)>,
    macs: BTreeMap<&'static str, String>,
}

impl WireLab {
    fn up() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("{PREFIX}-{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut lab = WireLab {
            gw_config: dir.join("gw.toml"),
            cgw_config: dir.join("cgw.toml"),
            dir,
            sleepers: Vec::new(),
            macs: BTreeMap::new(),
        };
        script("up")?;
        lab.prepare()?;
        Ok(lab)
    }

    fn prepare(&mut self) -> Result<(), String> {
        for (path, text) in [(&self.gw_config, GW_TOML), (&self.cgw_config, CGW_TOML)] {
            fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        for (role, ifname) in [("vpc", "vpc0"), ("gw", "gw-in"), ("gw", "gw-out"), ("inet", "inet0"), ("inet", "inet1")]
            .into_iter()
            .chain([("cgw", "cgw-out"), ("cgw", "cgw-in"), ("idc", "idc0")])
        {
            let out = self.exec(role, &["cat", &format!("/sys/class/net/{ifname}/address")])?;
            self.macs.insert(ifname, out.trim().to_string());
        }
        let mac = |i: &str| self.macs[i].clone();
        // Every next hop a permanent neighbour: nothing waits for ARP.
        let neighbours = [
            ("gw", "gw-in", "10.1.0.99", mac("vpc0")),
            ("gw", "gw-out", "192.0.2.254", mac("inet0")),
            ("inet", "inet0", "192.0.2.1", mac("gw-out")),
            ("inet", "inet1", "198.51.100.1", mac("cgw-out")),
            ("cgw", "cgw-out", "198.51.100.254", mac("inet1")),
            ("cgw", "cgw-in", "172.16.1.99", mac("idc0")),
            // The latency sinks' addresses.
            ("gw", "gw-in", "10.1.0.98", mac("vpc0")),
            ("cgw", "cgw-in", "172.16.1.98", mac("idc0")),
        ];
        for (role, dev, ip, lladdr) in neighbours {
            self.ip(role, &["neigh", "replace", ip, "lladdr", &lladdr, "dev", dev, "nud", "permanent"])?;
        }
        // The sinks: forwarding on and a blackhole route, so the packets
        // are dropped right after the route lookup, with no ICMP back.
        for (role, prefix) in [("vpc", "10.1.0.99/32"), ("inet", "203.0.113.0/24"), ("idc", "172.16.1.99/32")] {
            self.sysctl(role, "net.ipv4.ip_forward", "1")?;
            self.ip(role, &["route", "add", "blackhole", prefix])?;
        }
        // The latency sinks: addresses of the sink namespaces.
        for (role, addr) in [("vpc", "10.1.0.98/32"), ("inet", "203.0.113.98/32"), ("idc", "172.16.1.98/32")] {
            self.ip(role, &["addr", "add", addr, "dev", "lo"])?;
        }
        // TCP through the kernel's forwarding ends on the internet router,
        // which then needs the way back to the VPC.
        self.ip("inet", &["route", "add", "10.1.0.0/16", "via", "192.0.2.1"])?;
        // The kernel baseline hairpins on gw-in: no redirects for that.
        self.sysctl("gw", "net.ipv4.conf.all.send_redirects", "0")?;
        self.sysctl("gw", "net.ipv4.conf.gw-in.send_redirects", "0")?;
        for role in ["vpc", "inet", "idc"] {
            let child = Command::new("ip")
                .args(["netns", "exec", &ns(role), "sleep", "86400"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("ip netns exec {} sleep: {e}", ns(role)))?;
            self.sleepers.push((role, child));
        }
        // `ip netns exec` has switched namespaces once its net/dev shows
        // the namespace's interface.
        for (role, child) in &self.sleepers {
            let ifname = match *role {
                "vpc" => "vpc0",
                "inet" => "inet0",
                _ => "idc0",
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while net_dev(child.id(), ifname).is_err() {
                if Instant::now() > deadline {
                    return Err(format!("a helper process did not enter {}", ns(role)));
                }
                sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// The pid of the helper process in `role`'s namespace.
    fn sleeper(&self, role: &str) -> u32 {
        self.sleepers.iter().find(|(r, _)| *r == role).map(|(_, c)| c.id()).expect("a helper in every sink namespace")
    }

    fn exec(&self, role: &str, command: &[&str]) -> Result<String, String> {
        let mut args = vec!["netns", "exec"];
        let name = ns(role);
        args.push(&name);
        args.extend_from_slice(command);
        run_cmd("ip", &args)
    }

    fn ip(&self, role: &str, args: &[&str]) -> Result<String, String> {
        let name = ns(role);
        let mut all = vec!["-n", name.as_str()];
        all.extend_from_slice(args);
        run_cmd("ip", &all)
    }

    fn sysctl(&self, role: &str, key: &str, value: &str) -> Result<(), String> {
        self.exec(role, &["sysctl", "-qw", &format!("{key}={value}")]).map(|_| ())
    }
}

impl Drop for WireLab {
    fn drop(&mut self) {
        for (_, c) in &mut self.sleepers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = script("down");
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A blackhole route, removed on drop.
struct Blackhole<'a> {
    lab: &'a WireLab,
    role: &'static str,
    prefix: &'static str,
}

impl<'a> Blackhole<'a> {
    fn add(lab: &'a WireLab, role: &'static str, prefix: &'static str) -> Result<Self, String> {
        lab.ip(role, &["route", "add", "blackhole", prefix])?;
        Ok(Blackhole { lab, role, prefix })
    }
}

impl Drop for Blackhole<'_> {
    fn drop(&mut self) {
        let _ = self.lab.ip(self.role, &["route", "del", "blackhole", self.prefix]);
    }
}

fn ns(role: &str) -> String {
    format!("{PREFIX}-{role}")
}

/// `scripts/lab.sh` (built in) with `what` and this benchmark's prefix.
fn script(what: &str) -> Result<(), String> {
    run_cmd("bash", &["-c", LAB_SH, "lab.sh", what, PREFIX])
        .map(|_| ())
        .map_err(|e| format!("{e} (the lab needs root, iproute2 and ethtool)"))
}

fn run_cmd(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        let shown: Vec<&str> = args.iter().copied().filter(|a| a.len() < 200).collect();
        return Err(format!("{program} {}: {}", shown.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends a signal with kill(1): to a process, or to a process group.
fn signal(target: &str, sig: &str) {
    let _ = Command::new("kill").args(["-s", sig, "--", target]).stderr(Stdio::null()).status();
}

/// The generator in the VPC namespace, in a process group of its own
/// (trafgen forks a worker, which a signal to the parent alone does not
/// stop), pinned to CPU 0 (trafgen pins itself there).
struct Generator {
    child: Child,
    pgid: u32,
    what: String,
    log: PathBuf,
    /// Our own generator's JSON report, once it has finished.
    report: Option<PathBuf>,
}

impl Generator {
    /// As fast as it can, until stopped: the maximum-rate measurements.
    fn start(lab: &WireLab, opts: &Options, dst: &str, size: SizeMix) -> Result<Self, String> {
        match opts.generator {
            GeneratorKind::Own => Self::own(lab, opts, dst, size, 0.0, 86_400.0),
            GeneratorKind::Trafgen => Self::trafgen(lab, opts, dst, size),
        }
    }

    /// Ours, at `rate_pps` for `seconds`; [`Generator::finish`] waits for it.
    fn own(
        lab: &WireLab,
        opts: &Options,
        dst: &str,
        size: SizeMix,
        rate_pps: f64,
        seconds: f64,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        let report = lab.dir.join("generate.json");
        let _ = fs::remove_file(&report);
        let log = lab.dir.join("generate.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns("vpc"), "nice", "-n", &opts.nice.to_string(), "taskset", "-c", "0"]);
        cmd.arg(exe).arg("--json").arg(&report).arg("generate");
        cmd.args(["--dev", "vpc0", "--dst-mac", &lab.macs["gw-in"], "--src", FLOW_SRC, "--dst", dst]);
        cmd.args(["--size", &size.label(), "--rate", &rate_pps.to_string(), "--seconds", &seconds.to_string()]);
        let what = format!("vpngw-bench generate to {dst}, {} B, {rate_pps:.0} pps", size.label());
        Self::spawn(cmd, what, log, Some(report))
    }

    fn trafgen(lab: &WireLab, opts: &Options, dst: &str, size: SizeMix) -> Result<Self, String> {
        let config = lab.dir.join(format!("trafgen-{}.cfg", size.label()));
        let log = lab.dir.join("trafgen.log");
        // One packet per size of the mix's cycle: trafgen sends them in turn.
        let text: String = size
            .cycle()
            .into_iter()
            .map(|bytes| {
                format!(
                    "{{ eth(da={}, sa={}), ipv4(saddr={FLOW_SRC}, daddr={dst}, ttl=64, df), udp(sp=9, dp=9), fill(0x5a, {}) }}\n",
                    lab.macs["gw-in"],
                    lab.macs["vpc0"],
                    bytes - 28
                )
            })
            .collect();
        fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns("vpc"), "nice", "-n", &opts.nice.to_string()])
            .args(["trafgen", "--dev", "vpc0", "--conf"])
            .arg(&config)
            // One process (trafgen pins it to CPU 0), a count it never
            // reaches (--num 0 misbehaves on SIGINT), no sysctl or IRQ
            // tuning, no statistics.
            .args(["--cpus", "1", "--num", "4000000000", "--no-sock-mem", "--notouch-irq", "--no-cpu-stats"]);
        Self::spawn(cmd, format!("trafgen ({})", config.display()), log, None)
    }

    fn spawn(mut cmd: Command, what: String, log: PathBuf, report: Option<PathBuf>) -> Result<Self, String> {
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?)
            .spawn()
            .map_err(|e| format!("{what}: {e}"))?;
        let pgid = child.id();
        Ok(Generator { child, pgid, what, log, report })
    }

    fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => {
                let err = fs::read_to_string(&self.log).unwrap_or_default();
                Err(format!("{} stopped early: {}", self.what, err.trim()))
            }
        }
    }

    /// Waits for a generator started for a set time; its report.
    fn finish(mut self, within: Duration) -> Result<GenReport, String> {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not finish in time", self.what));
            }
            sleep(Duration::from_millis(10));
        };
        let err = fs::read_to_string(&self.log).unwrap_or_default();
        if !status.success() {
            return Err(format!("{} failed ({status}): {}", self.what, err.trim()));
        }
        let path = self.report.as_ref().ok_or("trafgen has no report")?;
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn stop(&mut self) {
        let group = format!("-{}", self.pgid);
        signal(&group, "INT");
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
        signal(&group, "KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// strongSwan's charon with kernel-libipsec in `gw` and `cgw` (driven by
/// `scripts/interop/swan.py`, built in), the lab's tunnel negotiated:
/// AES-GCM-128 ESP (in UDP: libipsec always encapsulates) between the
/// VPC's and the IDC's prefixes, as the vpngw daemons have it.
struct Swan {
    dirs: [(&'static str, PathBuf); 2],
    script: PathBuf,
    /// charon runs at the niceness of the other parties.
    nice: i32,
}

impl Swan {
    fn start(lab: &WireLab, opts: &Options) -> Result<Self, String> {
        let script = lab.dir.join("swan.py");
        fs::write(&script, SWAN_PY).map_err(|e| format!("{}: {e}", script.display()))?;
        let swan = Swan {
            dirs: [("gw", lab.dir.join("swan-gw")), ("cgw", lab.dir.join("swan-cgw"))],
            script,
            nice: opts.nice,
        };
        for ((role, dir), (local, remote, local_ts, remote_ts)) in swan.dirs.iter().zip([
            ("192.0.2.1", "198.51.100.1", "10.1.0.0/16", "172.16.1.0/24"),
            ("198.51.100.1", "192.0.2.1", "172.16.1.0/24", "10.1.0.0/16"),
        ]) {
            let d = dir.to_str().ok_or("a temporary directory with a non-UTF-8 name")?;
            swan.py(&["start", "--ns", &ns(role), "--dir", d, "--forward"])?;
            swan.py(&[
                "load",
                "--dir",
                d,
                "--name",
                "wire",
                "--local",
                local,
                "--remote",
                remote,
                "--psk",
                "vpngw wire benchmark",
                "--local-ts",
                local_ts,
                "--remote-ts",
                remote_ts,
                "--esp-proposals",
                "aes128gcm16",
                "--ike-proposals",
                "aes128gcm16-prfsha256-x25519",
            ])?;
        }
        let gw = swan.dirs[0].1.to_str().unwrap_or_default().to_string();
        swan.py(&["initiate", "--dir", &gw, "--name", "wire", "--timeout", "15"])
            .map_err(|e| format!("strongSwan did not negotiate the tunnel: {e}"))?;
        Ok(swan)
    }

    fn py(&self, args: &[&str]) -> Result<String, String> {
        let nice = self.nice.to_string();
        let mut all = vec!["-n", &nice, "python3", self.script.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        run_cmd("nice", &all)
    }

    fn pid(&self, role: &str) -> Option<u32> {
        let (_, dir) = self.dirs.iter().find(|(r, _)| *r == role)?;
        fs::read_to_string(dir.join("charon.pid")).ok()?.trim().parse().ok()
    }

    fn check_running(&self) -> Result<(), String> {
        for (role, _) in &self.dirs {
            let alive = self.pid(role).is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                return Err(format!("strongSwan's charon in {role} is gone"));
            }
        }
        Ok(())
    }
}

impl Drop for Swan {
    fn drop(&mut self) {
        for (_, dir) in &self.dirs {
            let _ = self.py(&["stop", "--dir", dir.to_str().unwrap_or_default()]);
        }
    }
}

/// TCP goodput through `setup`: an iperf3 server in `server`'s namespace,
/// the client on the VPC host, one connection.
fn goodput(
    lab: &WireLab,
    opts: &Options,
    setup: Setup,
    server: (&'static str, &'static str),
) -> Result<Goodput, String> {
    let (role, addr) = server;
    // Both ends at the parties' niceness: against busy-polling daemons at
    // nice -10, iperf3 at 0 would get a tenth of a CPU.
    let nice = opts.nice.to_string();
    let mut srv = Command::new("ip")
        .args(["netns", "exec", &ns(role), "nice", "-n", &nice, "iperf3", "-s", "-1", "-p", "5201"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3 server: {e}"))?;
    sleep(Duration::from_millis(300));
    let t = opts.tcp_seconds.to_string();
    let out = lab.exec("vpc", &["nice", "-n", &nice, "iperf3", "-c", addr, "-p", "5201", "-t", &t, "-J"]);
    let _ = srv.kill();
    let _ = srv.wait();
    let out = out.map_err(|e| format!("{}: iperf3: {e}", setup.name()))?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("{}: iperf3's output is not JSON: {e}", setup.name()))?;
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().ok_or_else(|| {
        format!("{}: iperf3 reported no goodput: {}", setup.name(), v["error"].as_str().unwrap_or("no error given"))
    })?;
    Ok(Goodput {
        setup,
        server: addr,
        mbps: bps / 1e6,
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

/// The highest rate with at most [`NDR_LOSS`] lost, by bisection between
/// 0 and 1.2 x the measured maximum; losses counted on the sink's
/// interface against what the generator says it sent.
fn no_drop_rate(
    lab: &WireLab,
    opts: &Options,
    setup: Setup,
    size: SizeMix,
    max_pps: f64,
    progress: &impl Fn(&str),
) -> Result<Ndr, String> {
    let (sink_role, sink_if) = setup.sink();
    let sink = lab.sleeper(sink_role);
    let (mut good, mut bad) = (0.0, (max_pps * 1.2).max(1000.0));
    let mut trials = Vec::new();
    let seconds = opts.ndr_trial_ms as f64 / 1e3;
    for step in 0..opts.ndr_steps {
        // The first try is the measured maximum itself.
        let rate = if step == 0 { max_pps.max(1000.0) } else { (good + bad) / 2.0 };
        let before = net_dev(sink, sink_if)?.rx_packets;
        let sent = Generator::own(lab, opts, setup.dst(), size, rate, seconds)?
            .finish(Duration::from_secs_f64(seconds + 10.0))?
            .sent;
        sleep(Duration::from_millis(100));
        let received = net_dev(sink, sink_if)?.rx_packets.saturating_sub(before).min(sent);
        let loss = if sent > 0 { 1.0 - received as f64 / sent as f64 } else { 1.0 };
        progress(&format!("wire: {}: {:.1} kpps: {:.3}% lost", setup.name(), rate / 1e3, loss * 100.0));
        trials.push(Trial { rate_pps: rate, sent, received, loss_pct: loss * 100.0 });
        if loss <= NDR_LOSS {
            good = rate;
        } else {
            bad = rate;
        }
    }
    Ok(Ndr { setup, size, pps: good, gbps: good * size.mean() * 8.0 / 1e9, trials })
}

/// One-way latency through `setup` at `load` x `max_pps`: our generator,
/// and our sink listening on `dst` in the sink's namespace.
fn latency_at(
    lab: &WireLab,
    opts: &Options,
    setup: Setup,
    dst: &str,
    size: SizeMix,
    rate: f64,
    max_pps: f64,
) -> Result<LatencyPoint, String> {
    let (sink_role, _) = setup.sink();
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let report = lab.dir.join("sink.json");
    let _ = fs::remove_file(&report);
    let seconds = opts.latency_ms as f64 / 1e3;
    // The sink on the generator's CPU, which the generator leaves between
    // its bursts (on the other, it would take turns with gw's worker), and
    // at the parties' niceness: at 0 against a busy-polling daemon at -10
    // it is scheduled in long, late turns, and cgw's latency doubles
    // (measured: p50 750 us against 40 us at 110 kpps through vpngw ESP).
    let nice = opts.nice.to_string();
    let sink = Command::new("ip")
        .args(["netns", "exec", &ns(sink_role), "nice", "-n", &nice, "taskset", "-c", "0"])
        .arg(&exe)
        .arg("--json")
        .arg(&report)
        .args(["sink", "--port", "9", "--idle-ms", "300", "--seconds", &(seconds + 10.0).to_string()])
        .args(["--warmup-ms", &opts.warmup_ms.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("vpngw-bench sink: {e}"))?;
    sleep(Duration::from_millis(200));
    let rate = rate.max(100.0);
    let sent = Generator::own(lab, opts, dst, size, rate, seconds + opts.warmup_ms as f64 / 1e3)
        .and_then(|g| g.finish(Duration::from_secs_f64(seconds + 10.0)));
    let out = sink.wait_with_output().map_err(|e| format!("vpngw-bench sink: {e}"))?;
    let sent = sent?.sent;
    if !out.status.success() {
        return Err(format!("vpngw-bench sink: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = fs::read_to_string(&report).map_err(|e| format!("{}: {e}", report.display()))?;
    let r: SinkReport = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", report.display()))?;
    Ok(LatencyPoint {
        setup,
        size,
        load: rate / max_pps.max(1.0),
        rate_pps: rate,
        sent,
        received: r.received,
        loss_pct: if sent > 0 { 100.0 * (1.0 - r.received as f64 / sent as f64) } else { 0.0 },
        reordered: r.reordered,
        socket_drops: r.socket_drops,
        latency: r.latency,
    })
}

/// A vpngw daemon in a lab namespace; its counters (JSON on stdout) are
/// read when it stops.
struct Daemon {
    child: Option<Child>,
    name: &'static str,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    fn start(
        lab: &WireLab,
        opts: &Options,
        name: &'static str,
        config: &Path,
        core: Option<usize>,
    ) -> Result<Self, String> {
        let bin = opts.vpngw.as_path();
        let (stdout, stderr) = (lab.dir.join(format!("{name}.json")), lab.dir.join(format!("{name}.log")));
        let file = |p: &Path| fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns(name), "nice", "-n", &opts.nice.to_string()]);
        cmd.arg(bin).arg("--config").arg(config).arg("--json").arg("--no-state");
        cmd.arg("--socket").arg(lab.dir.join(format!("{name}.sock")));
        if let Some(us) = opts.idle_sleep_us {
            cmd.args(["--idle-sleep-us", &us.to_string()]);
        }
        if let Some(c) = core {
            cmd.args([pin_flag(bin)?, &c.to_string()]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file(&stdout)?)
            .stderr(file(&stderr)?)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut d = Daemon { child: Some(child), name, stdout, stderr };
        // Ready when it says it forwards.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            d.check_running()?;
            if fs::read_to_string(&d.stderr).unwrap_or_default().contains("forwarding") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("vpngw {name} did not start forwarding within 10 s: {}", d.log()));
            }
            sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default().trim().to_string()
    }

    fn check_running(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            _ => Err(format!("vpngw {} exited: {}", self.name, self.log())),
        }
    }

    /// SIGTERM, then its exit report added to `totals`.
    fn stop(mut self, totals: &mut DaemonTotals) -> Result<(), String> {
        let mut child = self.child.take().expect("running");
        signal(&child.id().to_string(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
        let status = match child.try_wait() {
            Ok(Some(s)) => s,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("vpngw {} did not stop within 5 s of SIGTERM", self.name));
            }
        };
        let text = fs::read_to_string(&self.stdout).unwrap_or_default();
        if !status.success() {
            return Err(format!("vpngw {} exited with {status}: {}", self.name, self.log()));
        }
        let report: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("vpngw {}: its exit report is not JSON ({e})", self.name))?;
        totals.runs += 1;
        for w in report["workers"].as_array().into_iter().flatten() {
            totals.rx_frames += w["rx_frames"].as_u64().unwrap_or(0);
            totals.tx_frames += w["tx_frames"].as_u64().unwrap_or(0);
            totals.burst_p99_ns = totals.burst_p99_ns.max(w["latency_p99_ns"].as_u64().unwrap_or(0));
            totals.burst_max_ns = totals.burst_max_ns.max(w["latency_max_ns"].as_u64().unwrap_or(0));
            for (reason, n) in w["drops"].as_object().into_iter().flatten() {
                *totals.drops.entry(reason.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
            for (port, counters) in w["ports"].as_object().into_iter().flatten() {
                let sums = totals.ports.entry(port.clone()).or_default();
                for (name, n) in counters.as_object().into_iter().flatten() {
                    *sums.entry(name.clone()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
        }
        Ok(())
    }
}

/// The daemon's option that pins its (one) worker: `--cores LIST` where
/// the daemon has several workers, `--core N` where it has one.
fn pin_flag(bin: &Path) -> Result<&'static str, String> {
    let out = Command::new(bin).arg("--help").output().map_err(|e| format!("{}: {e}", bin.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    if help.contains("--cores") {
        Ok("--cores")
    } else if help.contains("--core ") || help.contains("--core <") {
        Ok("--core")
    } else {
        Err(format!("{}: no --core or --cores option to pin the worker with", bin.display()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn kpps(x: f64) -> String {
    format!("{:.1}", x / 1e3)
}

pub fn print(report: &Report) {
    let o = &report.options;
    println!(
        "On the wire: {} -> sink, in the namespace lab over veth; median of {} round(s) of {} ms each (after {} ms warm-up), the setups interleaved",
        report.generator,
        o.rounds,
        o.window_ms,
        o.warmup_ms
    );
    for setup in Setup::ALL {
        println!("  {:<20} {}", setup.name(), setup.path());
    }
    maximum_table(report).print();
    let pin = |c: Option<usize>| c.map_or("unpinned".to_string(), |c| format!("pinned to CPU {c}"));
    println!(
        "{} CPUs. Generator: one process pinned to CPU 0; vpngw gw's worker {}; cgw's {}; {}; strongSwan's charons unpinned.",
        report.cpus,
        pin(o.gw_core),
        pin(o.cgw_core),
        o.workers()
    );
    println!(
        "Cores: CPU time / wall time per party; veth receive work (the kernel's forwarding, vpngw's XDP copy into \
         its AF_XDP ring) runs on the sending CPU and counts for whatever it interrupted; machine: all CPUs busy; \
         other: the machine less the generator and the daemons (ksoftirqd, and anything else running: load \
         average before {}, after {}). The generator, the daemons, charon, iperf3 and the sink run at nice {}.",
        report.loadavg_before, report.loadavg_after, o.nice
    );
    let busy = report.results.iter().map(|r| r.cores.other).fold(0.0, f64::max);
    if busy > 0.25 {
        println!(
            "NOTE: up to {busy:.2} cores went to other work during the measurements: the setups that need both CPUs \
             (vpngw) lose more to it than the kernel, which forwards on the generator's CPU."
        );
    }
    println!(
        "Gbit/s: IP bytes received. xdp drop %: of the packets sent, those lost at a vpngw port's XDP redirect \
         (its AF_XDP ring full, or no fill frame) before vpngw saw them."
    );
    for r in report.results.iter().filter(|r| r.xdp_drop_pct_by_port.len() > 1) {
        let ports: Vec<String> = r.xdp_drop_pct_by_port.iter().map(|(p, x)| format!("{p} {x:.1}%")).collect();
        println!("{} {} B: xdp drops by port: {}", r.setup.name(), r.size, ports.join(", "));
    }
    for (name, d) in &report.daemons {
        let mut drops: Vec<String> = d.drops.iter().filter(|(_, &n)| n > 0).map(|(r, n)| format!("{r} {n}")).collect();
        // The ports' losses (not the traffic and wake-up counts).
        for (port, counters) in &d.ports {
            for (name, n) in counters {
                let loss = ["full", "no-frame", "bad", "error"].iter().any(|w| name.contains(w));
                if loss && *n > 0 {
                    drops.push(format!("port {port} {name} {n}"));
                }
            }
        }
        println!(
            "vpngw {name}: {} run(s), rx {} tx {} frames, engine drops: {}; burst receive-to-transmit p99 {} us, max {} us",
            d.runs,
            d.rx_frames,
            d.tx_frames,
            if drops.is_empty() { "none".into() } else { drops.join(", ") },
            d.burst_p99_ns / 1000,
            d.burst_max_ns / 1000
        );
    }
    println!();
    ratios_table(report).print();
    println!();
    print_rate_controlled(report);
    println!();
    print_targets(&report.targets);
}

fn maximum_table(report: &Report) -> Table {
    // A party's cores where it is in the setup.
    let party = |s: Setup, present: bool, x: f64| {
        if present && s != Setup::KernelHairpin && s != Setup::KernelForward {
            format!("{x:.2}")
        } else {
            "-".into()
        }
    };
    let rows = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.setup.name().to_string(),
                r.size.to_string(),
                kpps(r.sent_pps),
                kpps(r.received_pps),
                format!("{:.2}", r.gbps),
                format!("{:.1}", r.loss_pct.max(0.0)),
                if r.setup.xdp_ports().is_empty() { "-".into() } else { format!("{:.1}", r.xdp_drop_pct) },
                format!("{:.2}", r.cores.generator),
                party(r.setup, true, r.cores.gw),
                party(r.setup, matches!(r.setup, Setup::VpngwEsp | Setup::StrongswanEsp), r.cores.cgw),
                format!("{:.2}", r.cores.softirq),
                format!("{:.2}", r.cores.other),
                format!("{:.2}", r.cores.machine),
            ]
        })
        .collect();
    Table::new(
        &[
            "setup",
            "bytes",
            "sent kpps",
            "recv kpps",
            "Gbit/s",
            "loss %",
            "xdp drop %",
            "cores: gen",
            "gw",
            "cgw",
            "softirq",
            "other",
            "machine",
        ],
        rows,
    )
}

fn ratios_table(report: &Report) -> Table {
    let rows = report
        .ratios
        .iter()
        .map(|r| {
            let rounds: Vec<String> = r.per_round.iter().map(|x| format!("{x:.2}")).collect();
            vec![r.what.clone(), r.size.to_string(), format!("{:.2}", r.median), rounds.join(" ")]
        })
        .collect();
    Table::new(&["ratio of received pps, same round", "bytes", "median", "per round"], rows)
}

fn tcp_table(report: &Report) -> Table {
    let rows = report
        .tcp
        .iter()
        .map(|g| vec![g.setup.name().into(), g.server.into(), format!("{:.0}", g.mbps), g.retransmits.to_string()])
        .collect();
    Table::new(&["setup", "server", "Mbit/s", "retransmits"], rows)
}

fn ndr_table(report: &Report) -> Table {
    let rows = report
        .ndr
        .iter()
        .map(|n| {
            let trials: Vec<String> =
                n.trials.iter().map(|t| format!("{:.0}k:{:.2}%", t.rate_pps / 1e3, t.loss_pct)).collect();
            vec![n.setup.name().into(), n.size.label(), kpps(n.pps), format!("{:.2}", n.gbps), trials.join(" ")]
        })
        .collect();
    Table::new(&["setup", "bytes", "kpps", "Gbit/s", "trials (rate: loss)"], rows)
}

fn latency_table(report: &Report) -> Table {
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    let rows = report
        .latency
        .iter()
        .map(|l| {
            vec![
                l.setup.name().into(),
                l.size.label(),
                format!("{:.0}%", l.load * 100.0),
                kpps(l.rate_pps),
                format!("{:.2}", l.loss_pct.max(0.0)),
                l.socket_drops.to_string(),
                us(l.latency.p50_ns),
                us(l.latency.p99_ns),
                us(l.latency.p999_ns),
                us(l.latency.max_ns),
            ]
        })
        .collect();
    Table::new(&["setup", "bytes", "load", "kpps", "loss %", "sink drops", "p50", "p99", "p99.9", "max"], rows)
}

/// The TCP, no-drop-rate and latency tables.
fn print_rate_controlled(report: &Report) {
    println!("TCP goodput, iperf3, one connection from the VPC host, {} s:", report.options.tcp_seconds);
    tcp_table(report).print();
    println!();
    println!(
        "No-drop rate: the highest rate with at most {}% lost (bisection, {} steps of {} ms; our generator):",
        NDR_LOSS * 100.0,
        report.options.ndr_steps,
        report.options.ndr_trial_ms
    );
    ndr_table(report).print();
    println!();
    println!(
        "One-way latency, us, from the generator's send time in each packet to the sink's kernel receive time, \
         at a share of the setup's own maximum rate ({} ms each after {} ms of warm-up):",
        report.options.latency_ms, report.options.warmup_ms
    );
    latency_table(report).print();
}

/// The run written up: tables and charts of throughput against packet
/// size and of latency against load.
pub fn doc(report: &Report) -> Doc {
    let o = &report.options;
    let mut doc = Doc::new(
        "vpngw on the wire",
        format!(
            "The namespace lab over veth on {} CPUs; generator: {}; vpngw: {}. Maximum rates are medians of {} \
             round(s) of {} ms, the setups interleaved; then TCP goodput (iperf3), the no-drop rate ({}% loss allowed) and \
             one-way latency at {} of each setup's maximum. Load average before {}, after {}; {:.0} s in all.",
            report.cpus,
            report.generator,
            o.workers(),
            o.rounds,
            o.window_ms,
            NDR_LOSS * 100.0,
            LOADS.map(|l| format!("{:.0}%", l * 100.0)).join(", "),
            report.loadavg_before,
            report.loadavg_after,
            report.seconds
        ),
    );
    let setups = Setup::ALL.iter().map(|s| vec![s.name().into(), s.path().into()]).collect();
    doc.table("Setups", "", &Table::new(&["setup", "path"], setups));
    doc.table(
        "Maximum rate",
        "The generator sends as fast as it can; received is counted on the sink's interface. xdp drop %: lost \
         at a vpngw port's receive ring. Cores: CPU seconds per second of each party (gw and cgw: vpngw or \
         charon), softirq, other work, and the whole machine.",
        &maximum_table(report),
    );
    doc.table("Ratios", "Of received packets/s, round by round; the median.", &ratios_table(report));
    doc.table("TCP goodput", "iperf3, one connection from the VPC host.", &tcp_table(report));
    doc.table("No-drop rate", "Bisection; each trial's rate and loss.", &ndr_table(report));
    doc.table(
        "One-way latency (us), 64 B",
        "From the send time the generator writes into each packet to the sink's kernel receive timestamp.",
        &latency_table(report),
    );
    let by_setup = |f: &dyn Fn(&Row) -> f64| -> Vec<Series> {
        Setup::ALL
            .iter()
            .map(|&s| Series {
                name: s.name().into(),
                points: report.results.iter().filter(|r| r.setup == s).map(|r| (r.mean_bytes, f(r))).collect(),
            })
            .collect()
    };
    doc.charts.push((
        "pps",
        Chart {
            title: "Received packets/s vs packet size (IMIX at its mean, 346 B)".into(),
            x_label: "IP packet bytes".into(),
            y_label: "kpps".into(),
            x_log: true,
            y_log: false,
            series: by_setup(&|r| r.received_pps / 1e3),
        },
    ));
    doc.charts.push((
        "gbps",
        Chart {
            title: "Received Gbit/s vs packet size".into(),
            x_label: "IP packet bytes".into(),
            y_label: "Gbit/s".into(),
            x_log: true,
            y_log: false,
            series: by_setup(&|r| r.gbps),
        },
    ));
    for (short, title, pick) in [
        ("latency-p50", "p50 one-way latency vs load, 64 B", (|l: &Latency| l.p50_ns) as fn(&Latency) -> u64),
        ("latency-p99", "p99 one-way latency vs load, 64 B", |l: &Latency| l.p99_ns),
    ] {
        let series = Setup::ALL
            .iter()
            .filter(|s| s.latency_dst().is_some())
            .map(|&s| Series {
                name: s.name().into(),
                points: {
                    let mut p: Vec<(f64, f64)> = report
                        .latency
                        .iter()
                        .filter(|l| l.setup == s)
                        .map(|l| (l.load * 100.0, pick(&l.latency) as f64 / 1e3))
                        .collect();
                    p.sort_by(|a, b| a.0.total_cmp(&b.0));
                    p
                },
            })
            .collect();
        doc.charts.push((
            short,
            Chart {
                title: title.into(),
                x_label: "load, % of the setup's maximum rate".into(),
                y_label: "us".into(),
                x_log: false,
                y_log: true,
                series,
            },
        ));
    }
    doc.targets = report.targets.clone();
    doc
}
