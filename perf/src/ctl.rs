//! The configuration rate while forwarding: routes and tunnels installed
//! through the daemon's real control path — the unix socket, JSON, the
//! checks, the snapshot build, the state file written and synced — while
//! a worker forwards a steady stream over an existing tunnel (memory
//! ports, in process), and the packets lost while the updates were
//! applied. One client sends batches of `batch` objects per request (each
//! batch one snapshot); a second, smaller phase sends one route per
//! request, as an operator typing vpnctl does.

use crate::{print_table, print_targets, Target};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use vpngw_ctrl::api::{Change, Envelope, Object, Request, Response, VERSION};
use vpngw_ctrl::config::{self, Config, Link};
use vpngw_ctrl::control::Control;
use vpngw_ctrl::server::{self, Access, Call};
use vpngw_engine::io::mem::MemPort;
use vpngw_engine::snapshot::{Snapshot, SnapshotCell};
use vpngw_engine::wire::ether;
use vpngw_engine::wire::ipv4::Ipv4Repr;
use vpngw_engine::worker::Worker;

const OUT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const IN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const NEIGHBOUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub what: String,
    pub objects: usize,
    pub per_request: usize,
    pub seconds: f64,
    pub per_second: f64,
    /// Slowest request, ms.
    pub max_request_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub phases: Vec<Phase>,
    /// Packets offered to the worker while the updates were applied.
    pub sent: u64,
    pub forwarded: u64,
    pub lost: u64,
    pub drops: BTreeMap<String, u64>,
    pub targets: Vec<Target>,
}

/// The starting configuration: a VPC gateway with one tunnel carrying
/// 10.1.0.0/16 <-> 172.16.0.0/24, which the benchmark's traffic uses.
fn base() -> Config {
    let text = r#"
[[interface]]
name = "out"
role = "outside"
router = "192.0.2.254"

[[interface]]
name = "in"
role = "inside"

[[gateway]]
name = "gw1"
attachment = "vpc"
outside = "out"
inside = "in"
addresses = ["192.0.2.1"]

[[customer_gateway]]
name = "idc"
address = "198.51.100.1"

[[tunnel]]
name = "t0"
gateway = "gw1"
customer_gateway = "idc"
suite = "aes-gcm-128"
outbound = { spi = 0x1000, key = "0102030405060708090a0b0c0d0e0f1011121314" }
inbound = [{ spi = 0x2000, key = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4" }]

[[route]]
gateway = "gw1"
prefix = "10.1.0.0/16"
via = "inside"

[[route]]
gateway = "gw1"
prefix = "172.16.0.0/24"
via = "tunnel:t0"
"#;
    text.parse().expect("the bench's configuration parses")
}

fn link(name: &str) -> Result<Link, String> {
    let (mac, addr, neighbour): ([u8; 6], &str, &str) = match name {
        "out" => (OUT_MAC, "192.0.2.1", "192.0.2.254"),
        _ => (IN_MAC, "10.1.0.1", "10.1.0.5"),
    };
    Ok(Link {
        mac,
        mtu: 1500,
        addrs: vec![addr.parse().expect("an address")],
        neighbours: vec![(neighbour.parse().expect("an address"), NEIGHBOUR_MAC)],
    })
}

/// A 100-byte UDP packet from the VPC to the IDC, as the inside port gets it.
fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 14 + 100];
    ether::emit_header(&mut f, NEIGHBOUR_MAC, IN_MAC, ether::ethertype::IPV4);
    Ipv4Repr {
        src: Ipv4Addr::new(10, 1, 0, 5),
        dst: Ipv4Addr::new(172, 16, 0, 9),
        protocol: 17,
        payload_len: 80,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut f[14..]);
    f
}

fn route(i: usize) -> Change {
    // 20.0.0.0/8 onwards, one /32 each, through the traffic's tunnel.
    let a = Ipv4Addr::from(0x1400_0000u32 + i as u32);
    Change::Add(Object::Route(config::Route {
        gateway: "gw1".into(),
        prefix: format!("{a}/32"),
        via: "tunnel:t0".into(),
        priority: 0,
        enabled: true,
    }))
}

fn tunnel(i: usize) -> Change {
    let key = |spi: u32| format!("{spi:08x}0102030405060708090a0b0c0d0e0f10");
    let (out, inb) = (0x10_0000 + i as u32, 0x20_0000 + i as u32);
    Change::Add(Object::Tunnel(config::Tunnel {
        name: format!("t{}", i + 1),
        gateway: "gw1".into(),
        customer_gateway: "idc".into(),
        suite: Some("aes-gcm-128".into()),
        up: true,
        nat_t: None,
        esn: false,
        replay_window: None,
        mss_clamp: None,
        health_check: None,
        soft_lifetime: None,
        hard_lifetime: None,
        outbound: Some(config::StaticSa { spi: out, key: key(out) }),
        inbound: vec![config::StaticSa { spi: inb, key: key(inb) }],
        ike: None,
    }))
}

/// Sends `changes` in requests of `per_request`; the phase's timing.
fn install(socket: &Path, what: &str, changes: Vec<Change>, per_request: usize, progress: &dyn Fn(&str)) -> Phase {
    let stream = UnixStream::connect(socket).expect("the bench's control socket");
    let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
    let mut writer = stream;
    let objects = changes.len();
    let (start, mut max) = (Instant::now(), Duration::ZERO);
    let mut last_progress = Instant::now();
    for (n, chunk) in changes.chunks(per_request.max(1)).enumerate() {
        let env = Envelope {
            version: VERSION,
            id: Some(n as u64),
            request: Request::Apply { changes: chunk.to_vec(), cascade: false },
        };
        let t = Instant::now();
        writer.write_all((serde_json::to_string(&env).expect("json") + "\n").as_bytes()).expect("send");
        let mut line = String::new();
        reader.read_line(&mut line).expect("a reply");
        let r: Response = serde_json::from_str(&line).expect("a reply line");
        assert!(r.ok, "{what}: request {n} refused: {:?}", r.error);
        max = max.max(t.elapsed());
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            progress(&format!("{what}: {} of {objects}", (n + 1) * per_request));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Phase {
        what: what.to_string(),
        objects,
        per_request,
        seconds,
        per_second: objects as f64 / seconds,
        max_request_ms: max.as_secs_f64() * 1e3,
    }
}

/// Runs the benchmark: `routes` routes and `tunnels` tunnels in requests
/// of `batch`, then `single` routes one per request.
pub fn run(routes: usize, tunnels: usize, batch: usize, single: usize, progress: impl Fn(&str)) -> Report {
    let dir = std::env::temp_dir().join(format!("vpngw-bench-ctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let (socket, state): (PathBuf, PathBuf) = (dir.join("ctl.sock"), dir.join("state.toml"));

    let file = base();
    let model = file.to_model(link, 0).expect("the bench's configuration is valid");
    let cell = Arc::new(SnapshotCell::new(Snapshot::build(&model, 1).expect("a snapshot")));
    let (mut control, _) = Control::new(file, model, cell.clone(), 1, Some(state)).expect("the state file");
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, calls) = mpsc::sync_channel::<Call>(64);
    let acceptor =
        server::serve(server::bind(&socket, Access::default()).expect("bind"), tx, Access::default(), stop.clone());
    let control_thread = std::thread::spawn({
        let stop = stop.clone();
        move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(call) = calls.recv_timeout(Duration::from_millis(5)) {
                    let id = call.envelope.id;
                    let r = match control.handle(&call.envelope.request, &[]) {
                        Ok(v) => Response::ok(id, v),
                        Err(e) => Response::error(id, e),
                    };
                    let _ = call.reply.send(r);
                }
            }
        }
    });

    // The client installs while this thread forwards.
    let done = Arc::new(AtomicBool::new(false));
    let client = std::thread::spawn({
        let (socket, done) = (socket.clone(), done.clone());
        let progress = move |m: &str| eprintln!("[vpngw-bench] ctl: {m}");
        move || {
            let mut phases = Vec::new();
            phases.push(install(&socket, "routes", (0..routes).map(route).collect(), batch, &progress));
            phases.push(install(&socket, "tunnels", (0..tunnels).map(tunnel).collect(), batch.min(1000), &progress));
            let more: Vec<Change> = (routes..routes + single).map(route).collect();
            phases.push(install(&socket, "routes, one per request", more, 1, &progress));
            done.store(true, Ordering::SeqCst);
            phases
        }
    });

    progress(&format!("installing {routes} routes and {tunnels} tunnels ({batch} per request) while forwarding"));
    let mut worker = Worker::alone(vec![MemPort::new(1), MemPort::new(2)], cell);
    let f = frame();
    let (mut sent, mut forwarded) = (0u64, 0u64);
    while !done.load(Ordering::SeqCst) {
        // Keep a little queued, as a NIC ring would.
        while worker.ports()[1].pending() < 64 {
            worker.ports()[1].inject(&f);
            sent += 1;
        }
        worker.poll(0);
        forwarded += worker.ports()[0].take_sent().len() as u64;
    }
    while worker.ports()[1].pending() > 0 {
        worker.poll(0);
        forwarded += worker.ports()[0].take_sent().len() as u64;
    }
    worker.publish();
    let report = worker.shared().report.lock().expect("report").clone();
    let drops: BTreeMap<String, u64> = report.drops.nonzero().map(|(r, n)| (r.name().to_string(), n)).collect();
    let phases = client.join().expect("the client finishes");
    stop.store(true, Ordering::SeqCst);
    let _ = control_thread.join();
    let _ = acceptor.join();
    let _ = std::fs::remove_dir_all(&dir);

    let lost = sent - forwarded;
    let rate_of = |what: &str| phases.iter().find(|p| p.what == what).map_or(0.0, |p| p.per_second);
    let targets = vec![
        Target {
            what: "packets lost while updates are applied".into(),
            want: "0".into(),
            got: lost.to_string(),
            met: lost == 0,
        },
        Target {
            what: "routes/s through the API, batched (anchor: VPP's ~300,000)".into(),
            want: ">= 300000".into(),
            got: format!("{:.0}", rate_of("routes")),
            met: rate_of("routes") >= 300_000.0,
        },
    ];
    Report { bench: "ctl", phases, sent, forwarded, lost, drops, targets }
}

pub fn print(r: &Report) {
    let rows: Vec<Vec<String>> = r
        .phases
        .iter()
        .map(|p| {
            vec![
                p.what.clone(),
                p.objects.to_string(),
                p.per_request.to_string(),
                format!("{:.2}", p.seconds),
                format!("{:.0}", p.per_second),
                format!("{:.1}", p.max_request_ms),
            ]
        })
        .collect();
    print_table(&["installed", "objects", "per request", "seconds", "objects/s", "slowest request ms"], &rows);
    println!();
    let drops = if r.drops.is_empty() {
        "none".to_string()
    } else {
        r.drops.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    };
    println!("traffic meanwhile: {} sent, {} forwarded, {} lost; drops: {drops}", r.sent, r.forwarded, r.lost);
    println!();
    print_targets(&r.targets);
}
