//! The daemon's body: from a configuration file to forwarding on real
//! interfaces, until told to stop. In order: read and check the file; ask
//! the kernel (rtnetlink) for each interface's index, MAC, MTU, addresses
//! and neighbours; build and publish the first snapshot; attach the XDP
//! steering program to each interface; start the workers, each with
//! AF_XDP sockets on its share of every interface's receive queues (queue
//! `q` goes to worker `q mod workers`: an AF_XDP socket takes frames of its
//! own queue only, so every queue needs one), one UMEM per worker so
//! forwarding between its ports is zero-copy, each socket in its
//! interface's socket map. Then the control loop: answer the control
//! socket's requests ([`crate::control`]), ask the kernel to resolve the
//! next hops the workers found unresolved, follow the neighbour table into
//! new snapshots, and write the counters. On stop: the workers finish, the
//! sockets close, the programs detach.
//!
//! The configuration comes from the state file when there is one (the
//! running configuration, written after every accepted change), else from
//! the configuration file.

use crate::api::{Request, Response};
use crate::config::{Config, ConfigError, Link, Role};
use crate::control::Control;
use crate::ike::driver::Driver;
use crate::kernel::{Interface, Netlink};
use crate::metrics;
use crate::report::Report;
use crate::server::{self, Access, Call};
use crate::state;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vpngw_ebpf::Steering;
use vpngw_engine::io::xsk::{Umem, UmemConfig, XskConfig, XskPort, XskSocket};
use vpngw_engine::model::{self, PortId};
use vpngw_engine::snapshot::{Snapshot, SnapshotCell};
use vpngw_engine::worker::{Mailboxes, Worker, WorkerReport, WorkerShared};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The startup configuration: read when there is no state file yet.
    pub config: Option<PathBuf>,
    /// The state file: restored at start if present, rewritten after every
    /// accepted change (none: changes are not kept across restarts).
    pub state: Option<PathBuf>,
    /// The control socket (none: no socket).
    pub socket: Option<PathBuf>,
    /// Who besides root may use the control socket.
    pub access: Access,
    /// One worker per CPU listed, pinned to it; none listed: one worker,
    /// not pinned. Worker `w` serves the queues `q` with `q mod workers ==
    /// w` of every interface.
    pub cores: Vec<usize>,
    /// Let idle workers sleep this long between turns (none: busy-poll).
    pub idle_sleep: Option<Duration>,
    /// Where to write the counters (JSON, replaced atomically every second).
    pub stats_file: Option<PathBuf>,
    /// Where to serve the Prometheus endpoint (none: not served).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Why the daemon could not start or went down.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Config { path: String, source: ConfigError },
    #[error("no configuration: give a configuration file, or a state file that exists")]
    NoConfig,
    #[error("state file {0}")]
    State(String),
    #[error("control socket {path}: {source}")]
    Socket { path: String, source: std::io::Error },
    #[error("the configuration is inconsistent: {0}")]
    Snapshot(String),
    #[error("netlink: {0}")]
    Kernel(std::io::Error),
    #[error("{0}")]
    Steering(#[from] vpngw_ebpf::Error),
    #[error("AF_XDP on {ifname}: {source}")]
    Xsk { ifname: String, source: vpngw_engine::io::xsk::XskError },
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{workers} workers for at most {queues} receive queue(s) per interface: some would have none")]
    Queues { workers: usize, queues: usize },
}

/// Reads and checks the configuration file without touching the kernel
/// (interfaces are given placeholder link data): `vpngw --check`.
pub fn check(path: &Path) -> Result<Config, DaemonError> {
    let file = read(path)?;
    let link = |_: &str| Ok(Link { mac: [2, 0, 0, 0, 0, 1], mtu: 1500, addrs: vec![], neighbours: vec![] });
    let model = file.to_model(link, 0).map_err(|source| config_error(path, source))?;
    Snapshot::build(&model, 0).map_err(|e| DaemonError::Snapshot(e.to_string()))?;
    Ok(file)
}

fn read(path: &Path) -> Result<Config, DaemonError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| DaemonError::Read { path: path.display().to_string(), source })?;
    text.parse().map_err(|source| config_error(path, source))
}

fn config_error(path: &Path, source: ConfigError) -> DaemonError {
    DaemonError::Config { path: path.display().to_string(), source }
}

/// Runs the gateway until `stop` is set; returns the last counters.
pub fn run(opts: &Options, stop: Arc<AtomicBool>, log: impl Fn(&str)) -> Result<Report, DaemonError> {
    let restored = match &opts.state {
        Some(path) => state::load(path).map_err(DaemonError::State)?,
        None => None,
    };
    let (file, source) = match (restored, &opts.config) {
        (Some(file), config) => {
            let state = opts.state.as_deref().expect("restored from a state file");
            let ignored = config.as_ref().map_or(String::new(), |c| {
                format!(" ({} not read: the state file wins; remove it to start from the file)", c.display())
            });
            log(&format!("restored the running configuration from {}{ignored}", state.display()));
            (file, state.to_path_buf())
        }
        (None, Some(path)) => (read(path)?, path.clone()),
        (None, None) => return Err(DaemonError::NoConfig),
    };
    // The socket first: a second daemon on the same socket stops here,
    // before it touches any interface.
    let listener = match &opts.socket {
        Some(path) => Some(
            server::bind(path, opts.access)
                .map_err(|source| DaemonError::Socket { path: path.display().to_string(), source })?,
        ),
        None => None,
    };
    let metrics = opts.metrics.map(metrics::bind).transpose().map_err(DaemonError::Io)?;
    let mut nl = Netlink::open().map_err(DaemonError::Kernel)?;
    let mut kernel: Vec<Interface> = Vec::new();
    for itf in &file.interfaces {
        kernel.push(nl.interface(&itf.name).map_err(DaemonError::Kernel)?);
    }
    let link = |nl: &mut Netlink, k: &Interface| -> Result<Link, String> {
        let addrs = nl.addresses(k.index).map_err(|e| e.to_string())?;
        let neighbours = nl.neighbours(k.index).map_err(|e| e.to_string())?;
        Ok(Link { mac: k.mac, mtu: k.mtu, addrs, neighbours })
    };
    let index = |name: &str| kernel.iter().position(|k| k.name == name).expect("every interface was looked up");
    let model = file.to_model(|name| link(&mut nl, &kernel[index(name)]), 0).map_err(|e| config_error(&source, e))?;
    let generation = 1;
    let cell = Arc::new(SnapshotCell::new(
        Snapshot::build(&model, generation).map_err(|e| DaemonError::Snapshot(e.to_string()))?,
    ));

    // Steering: the outside program passes ESP for the gateways' public
    // addresses to AF_XDP; the inside one passes what is not for the host.
    let mut steering = Vec::new();
    for (i, itf) in file.interfaces.iter().enumerate() {
        let role = match itf.role {
            Role::Outside => vpngw_ebpf::Role::Outside,
            Role::Inside => vpngw_ebpf::Role::Inside,
        };
        let mut s = Steering::attach(&itf.name, role)?;
        let port_id = model.ports[i].id;
        let addrs: Vec<IpAddr> = match itf.role {
            Role::Outside => model
                .gateways
                .iter()
                .filter(|g| g.outside_port == port_id)
                .flat_map(|g| g.outside_addrs.iter().copied())
                .collect(),
            Role::Inside => model.ports[i].addrs.clone(),
        };
        for a in addrs {
            s.add_addr(a)?;
        }
        log(&format!("{}: XDP {} program attached in {} mode", itf.name, role, s.mode()));
        steering.push(s);
    }

    // Worker w: a UMEM, and a socket on each of its queues of every
    // interface.
    let cores: Vec<Option<usize>> =
        if opts.cores.is_empty() { vec![None] } else { opts.cores.iter().map(|&c| Some(c)).collect() };
    let queues: Vec<usize> = kernel.iter().map(|k| rx_queues(&k.name)).collect();
    let mailboxes = Mailboxes::new(cores.len(), 1024);
    let (mut handles, mut shared) = (Vec::new(), Vec::new());
    for (w, &core) in cores.iter().enumerate() {
        let umem =
            Umem::new(UmemConfig::default()).map_err(|source| DaemonError::Xsk { ifname: "(umem)".into(), source })?;
        let mut ports = Vec::new();
        for (i, k) in kernel.iter().enumerate() {
            for q in (w..queues[i]).step_by(cores.len()) {
                let socket = XskSocket::bind(&umem, k.index, q as u32, &XskConfig::default())
                    .map_err(|source| DaemonError::Xsk { ifname: k.name.clone(), source })?;
                steering[i].set_socket(q as u32, std::os::fd::AsFd::as_fd(&socket))?;
                log(&format!("{}: AF_XDP socket on queue {q} (worker {w}), {:?} mode", k.name, socket.mode()));
                ports.push(XskPort::new(model.ports[i].id, socket));
            }
        }
        if ports.is_empty() {
            return Err(DaemonError::Queues {
                workers: cores.len(),
                queues: queues.iter().copied().max().unwrap_or(0),
            });
        }
        let worker = Worker::new(w, ports, cell.clone(), &mailboxes).with_idle_sleep(opts.idle_sleep);
        shared.push(worker.shared());
        handles.push(worker.spawn(core, stop.clone()));
        log(&format!("worker {w} on {}", core.map_or("any CPU".to_string(), |c| format!("CPU {c}"))));
    }
    let reports = |shared: &[Arc<WorkerShared>]| -> Vec<WorkerReport> {
        shared.iter().map(|s| s.report.lock().expect("report lock").clone()).collect()
    };
    let (mut control, resumed) = Control::new(file.clone(), model, cell.clone(), generation, opts.state.clone())
        .map_err(|e| DaemonError::State(e.to_string()))?;
    if resumed > 0 {
        log(&format!("{resumed} outbound SA(s) resume their sequence numbers from the last run's marks"));
    }
    control.attach_workers(shared.clone());
    let (calls_tx, calls) = std::sync::mpsc::sync_channel::<Call>(256);
    let metrics = metrics.map(|l| {
        log(&format!("metrics at http://{}/metrics", l.local_addr().map_or("?".into(), |a| a.to_string())));
        metrics::serve(l, calls_tx.clone(), stop.clone())
    });
    let acceptor = listener.map(|l| server::serve(l, calls_tx, opts.access, stop.clone()));
    if let Some(path) = &opts.socket {
        log(&format!("control socket {}", path.display()));
    }
    log("forwarding");

    // The control loop. The next hops known in advance (each port's
    // router, or the customer gateways themselves on a routerless outside
    // port) are resolved now, before the first packet needs them.
    let model = control.model();
    let port_index: HashMap<PortId, usize> = model.ports.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    let mut asked: HashMap<(PortId, IpAddr), Instant> = HashMap::new();
    for (i, port) in model.ports.iter().enumerate() {
        let hops: Vec<IpAddr> = match port.router {
            Some(r) => vec![r],
            None => model
                .gateways
                .iter()
                .filter(|g| g.outside_port == port.id)
                .flat_map(|g| model.tunnels.iter().filter(move |t| t.gateway == g.id))
                .filter_map(|t| model.customer_gateways.iter().find(|c| c.id == t.customer_gateway))
                .map(|c| c.addr)
                .collect(),
        };
        for ip in hops {
            if !port.neighbours.iter().any(|(n, _)| *n == ip) {
                asked.insert((port.id, ip), Instant::now());
                if let Err(e) = nl.resolve(kernel[i].index, ip) {
                    log(&format!("{}: asking the kernel to resolve {ip}: {e}", kernel[i].name));
                }
            }
        }
    }
    let (mut last_neigh, mut last_stats) = (Instant::now(), Instant::now());
    let mut ike = IkePorts::default();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(call) = calls.recv_timeout(Duration::from_millis(20)) {
            answer(&mut control, call, &reports(&shared), &mut steering, &log);
            while let Ok(call) = calls.try_recv() {
                answer(&mut control, call, &reports(&shared), &mut steering, &log);
            }
        }
        while let Some((port, ip)) = shared.iter().find_map(|s| s.unresolved.pop()) {
            let again = asked.get(&(port, ip)).is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if let (true, Some(&i)) = (again, port_index.get(&port)) {
                asked.insert((port, ip), Instant::now());
                if let Err(e) = nl.resolve(kernel[i].index, ip) {
                    log(&format!("{}: asking the kernel to resolve {ip}: {e}", kernel[i].name));
                }
            }
        }
        control.tick(Instant::now());
        ike.turn(&mut control, &log);
        for line in control.take_log() {
            log(&line);
        }
        if last_neigh.elapsed() >= Duration::from_millis(200) {
            last_neigh = Instant::now();
            if refresh_neighbours(&mut nl, &kernel, control.model_mut()) {
                if let Err(e) = control.republish() {
                    log(&format!("neighbour update not applied: {e}"));
                }
            }
        }
        if last_stats.elapsed() >= Duration::from_secs(1) {
            last_stats = Instant::now();
            control.sample(&reports(&shared));
            if let Err(e) = control.mark_sequences() {
                log(&format!("sequence marks not written: {e}"));
            }
            if let Some(path) = &opts.stats_file {
                let report = control.report(&reports(&shared));
                write_atomically(path, &report).map_err(DaemonError::Io)?;
            }
        }
    }
    // The IKE SAs are deleted with their peers, who then know at once.
    control.ike_shutdown(Instant::now());
    ike.turn(&mut control, &log);
    for line in control.take_log() {
        log(&line);
    }
    // Clients still waiting hear that the daemon is going.
    drop(calls);
    if let Some(a) = acceptor {
        let _ = a.join();
    }
    if let Some(m) = metrics {
        let _ = m.join();
    }
    if let Some(path) = &opts.socket {
        let _ = std::fs::remove_file(path);
    }
    for handle in handles {
        drop(handle.join().expect("a worker thread ends cleanly"));
    }
    let report = control.report(&reports(&shared));
    if let Some(path) = &opts.stats_file {
        write_atomically(path, &report).map_err(DaemonError::Io)?;
    }
    for s in steering {
        s.detach()?;
    }
    Ok(report)
}

/// The kernel UDP sockets IKE is served on: ports 500 and 4500 of each
/// gateway address an IKE tunnel uses (the steering program passes IKE to
/// the kernel).
#[derive(Default)]
struct IkePorts {
    drivers: BTreeMap<IpAddr, Driver>,
    /// Addresses whose ports could not be bound (said once).
    failed: BTreeSet<IpAddr>,
}

impl IkePorts {
    /// Serves every IKE endpoint for one turn: datagrams in, timers, datagrams
    /// out; the rest of what the endpoints say goes to the control thread.
    fn turn(&mut self, control: &mut Control, log: &impl Fn(&str)) {
        let now = Instant::now();
        let mut outputs = Vec::new();
        for (local, endpoint) in control.ike_endpoints() {
            let driver = match self.drivers.entry(local) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(v) => match Driver::bind(local) {
                    Ok(d) => {
                        log(&format!("IKE on {local} ports 500 and 4500"));
                        v.insert(d)
                    }
                    Err(e) => {
                        if self.failed.insert(local) {
                            log(&format!("IKE cannot be served: {e}"));
                        }
                        continue;
                    }
                },
            };
            driver.turn(endpoint, now, |slot, o| outputs.push((local, slot, o)));
        }
        for (local, slot, o) in outputs {
            control.ike_output(local, slot, o);
        }
    }
}

/// Answers one request from the control socket; after an accepted change,
/// brings the outside interfaces' steered addresses in line with the
/// gateways' public addresses.
fn answer(control: &mut Control, call: Call, workers: &[WorkerReport], steering: &mut [Steering], log: &impl Fn(&str)) {
    let before = control.steered();
    let result = control.handle(&call.envelope.request, workers);
    if let (Ok(_), Request::Apply { .. }) = (&result, &call.envelope.request) {
        let after = control.steered();
        for s in steering.iter_mut().filter(|s| s.role() == vpngw_ebpf::Role::Outside) {
            let (old, new) = (before.get(s.ifname()), after.get(s.ifname()));
            let (old, new) = (old.map_or(&[][..], Vec::as_slice), new.map_or(&[][..], Vec::as_slice));
            for a in old.iter().filter(|a| !new.contains(a)) {
                if let Err(e) = s.remove_addr(*a) {
                    log(&format!("{}: no longer steering {a}: {e}", s.ifname()));
                }
            }
            for a in new.iter().filter(|a| !old.contains(a)) {
                if let Err(e) = s.add_addr(*a) {
                    log(&format!("{}: steering {a}: {e}", s.ifname()));
                }
            }
        }
    }
    let id = call.envelope.id;
    let _ = call.reply.send(match result {
        Ok(v) => Response::ok(id, v),
        Err(e) => Response::error(id, e),
    });
}

/// How many receive queues interface `name` has (sysfs; 1 if unknown).
fn rx_queues(name: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(1)
        .max(1)
}

/// Reads the neighbour tables into `model`; true if anything changed.
fn refresh_neighbours(nl: &mut Netlink, kernel: &[Interface], model: &mut model::Config) -> bool {
    let mut changed = false;
    for (k, port) in kernel.iter().zip(&mut model.ports) {
        if let Ok(n) = nl.neighbours(k.index) {
            if n != port.neighbours {
                port.neighbours = n;
                changed = true;
            }
        }
    }
    changed
}

/// Writes `report` as JSON to `path` through a temporary file and a rename,
/// so a reader never sees half a file.
fn write_atomically(path: &Path, report: &Report) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(report).expect("a report serializes") + "\n")?;
    std::fs::rename(tmp, path)
}
