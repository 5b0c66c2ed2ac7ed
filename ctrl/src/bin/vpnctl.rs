//! `vpnctl`: manages a running vpngw over its control socket — gateways,
//! customer gateways, tunnels, SPD rules and routes — and shows its
//! traffic. Every change is checked by the daemon and applied whole or not
//! at all; tables for people, `--json` for scripts.
//!
//! Exit status: 0 done; 1 the daemon refused the request (the reason is
//! printed); 2 bad arguments; 3 the daemon could not be reached.

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vpngw_ctrl::api::{self, CapturePoint, Change, Envelope, Key, Kind, Object, Request, Response, RouteKey, SpdKey};
use vpngw_ctrl::config::ike::{DpdActionConfig, DpdConfig, Negotiation};
use vpngw_ctrl::config::{
    AttachmentKind, Config, CustomerGateway, Gateway, HealthCheck, IkeConfig, LimitConfig, NatTConfig, Route, SpdRule,
    StaticSa, Tunnel,
};
use vpngw_ctrl::events::Event;
use vpngw_ctrl::report::{drops_text, Report, Stats, TunnelStats, TunnelTraffic, WorkerStats};

/// Manage a running vpngw gateway: its gateways, customer gateways,
/// tunnels, SPD rules and routes, and watch its traffic.
///
/// Examples:
///   vpnctl gateway add gw1 --attachment vpc --outside gw-out --inside gw-in --address 192.0.2.1
///   vpnctl customer-gateway add idc1 --address 198.51.100.1
///   vpnctl tunnel add t1 --gateway gw1 --customer-gateway idc1 --psk '<secret>' \
///       --esp-proposal aes128gcm16 --dpd 10:30:restart        # negotiated with IKEv2
///   vpnctl tunnel add t2 --gateway gw1 --customer-gateway idc2 --suite aes-gcm-128 \
///       --outbound 0x1001:<key+salt hex> --inbound 0x2001:<key+salt hex>   # static SAs
///   vpnctl show ike                        # IKE SAs, child SAs, why a negotiation failed
///   vpnctl route add 172.16.1.0/24 --gateway gw1 --via tunnel:t1 --priority 0
///   vpnctl spd add --gateway gw1 --local 10.1.0.0/16 --remote 172.16.2.0/24 --action protect:t2
///   vpnctl tunnel set t1 --down            # routes fail over to the next priority
///   vpnctl tunnel set t1 --health-local 169.254.1.1 --health-remote 169.254.1.2
///   vpnctl gateway set gw1 --bandwidth-mbps 100
///   vpnctl route lookup 172.16.1.9 --gateway gw1
///   vpnctl stats --watch 1
///   vpnctl top
///   vpnctl events --follow
///   vpnctl capture --tunnel t1 --inner --count 100 -w t1.pcap
///   vpnctl export > running.toml
///
/// Exit status: 0 done, 1 refused by the daemon, 2 bad arguments,
/// 3 daemon not reachable.
#[derive(Parser)]
#[command(name = "vpnctl", version, verbatim_doc_comment)]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, default_value = "/run/vpngw/vpngw.sock", env = "VPNGW_SOCKET")]
    socket: PathBuf,
    /// Print the daemon's answer as JSON (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// VPN gateways: a public address, an outside and an inside interface.
    #[command(subcommand)]
    Gateway(GatewayCmd),
    /// Customer gateways: the IPsec devices in the data centres.
    #[command(subcommand, alias = "cgw")]
    CustomerGateway(CustomerGatewayCmd),
    /// Tunnels between a gateway and a customer gateway, with their SAs.
    #[command(subcommand)]
    Tunnel(Box<TunnelCmd>),
    /// SPD rules: traffic selectors that send traffic into a tunnel (or
    /// bypass, or discard it), before the route table.
    #[command(subcommand)]
    Spd(SpdCmd),
    /// Routes: destination prefixes to tunnels, the inside network or the
    /// cloud-connect network, by priority.
    #[command(subcommand)]
    Route(RouteCmd),
    /// Traffic per gateway and per tunnel: packets, bytes, rates, drops.
    Stats {
        /// Refresh every this many seconds until interrupted.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1")]
        watch: Option<u64>,
    },
    /// A live view of gateways and tunnels (rates, state, health, drops)
    /// and the latest events, refreshed until interrupted.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1)]
        interval: u64,
        /// Stop after this many refreshes (default: until Ctrl-C).
        #[arg(long)]
        iterations: Option<u64>,
    },
    /// Tunnel state changes, health transitions, SA lifetimes and alarms.
    Events {
        /// Keep printing new events as they happen, until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// Only events after this number.
        #[arg(long)]
        since: Option<u64>,
    },
    /// Copy packets of a tunnel from the data plane into a pcap file (at
    /// a bounded rate, so forwarding never slows).
    Capture {
        #[arg(long)]
        tunnel: String,
        /// The IP packets inside the tunnel (the default).
        #[arg(long, conflicts_with = "outer")]
        inner: bool,
        /// The ESP packets on the outside.
        #[arg(long)]
        outer: bool,
        /// How many packets.
        #[arg(long, short = 'c', default_value_t = 100)]
        count: u64,
        /// The pcap file to write (raw IP link type).
        #[arg(long = "write", short = 'w')]
        write: PathBuf,
        /// At most this many packets a second are copied (the rest are
        /// counted as missed).
        #[arg(long)]
        pps: Option<u64>,
        /// Give up after this many seconds, writing what was captured.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// The SAs of every tunnel with their counters.
    Sas,
    /// IKE: `show ike` lists the IKE SAs (state, algorithms, identities,
    /// child SAs, next rekey) and why a negotiation last failed.
    #[command(subcommand)]
    Show(ShowCmd),
    /// The workers: frames, drops, burst latency, port counters.
    Workers,
    /// Print the running configuration (the configuration file's schema).
    Export,
    /// Apply a batch of changes from a JSON file (`-` for stdin) as one
    /// step: a list of {"add"|"set"|"delete": {...}} objects, as in the
    /// socket protocol.
    Apply {
        file: PathBuf,
        /// Deleting an object also deletes what refers to it.
        #[arg(long)]
        cascade: bool,
    },
    /// Print shell completions (bash, zsh, fish, ...).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum GatewayCmd {
    Add {
        name: String,
        #[command(flatten)]
        spec: GatewaySpec,
    },
    /// Change a gateway (the options given replace the current values).
    Set {
        name: String,
        #[command(flatten)]
        spec: GatewaySet,
    },
    Delete {
        name: String,
        /// Also delete its tunnels, SPD rules and routes.
        #[arg(long)]
        cascade: bool,
    },
    Show {
        name: String,
    },
    List,
}

#[derive(Args)]
struct GatewaySpec {
    /// vpc, cloud-connect, or cloud-connect-unassociated (no network behind).
    #[arg(long, value_parser = parse_attachment)]
    attachment: AttachmentKind,
    /// The outside (public) interface.
    #[arg(long)]
    outside: String,
    /// The inside interface (not for cloud-connect-unassociated).
    #[arg(long)]
    inside: Option<String>,
    /// A public address: a tunnel endpoint (repeat for more).
    #[arg(long = "address", required = true)]
    addresses: Vec<IpAddr>,
    #[command(flatten)]
    limits: GatewayLimits,
}

#[derive(Args)]
struct GatewayLimits {
    /// The bandwidth limit, Mbit/s each way (policed in the data plane).
    #[arg(long)]
    bandwidth_mbps: Option<u32>,
    /// Alarm when a tunnel's probe loss exceeds this percentage (default 10).
    #[arg(long)]
    alarm_loss_percent: Option<u8>,
    /// Alarm when traffic exceeds this percentage of the limit (default 90).
    #[arg(long)]
    alarm_utilisation_percent: Option<u8>,
}

impl GatewayLimits {
    fn apply_to(&self, g: &mut Gateway) {
        if let Some(b) = self.bandwidth_mbps {
            g.bandwidth_mbps = Some(b);
        }
        if let Some(p) = self.alarm_loss_percent {
            g.alarm_loss_percent = Some(p);
        }
        if let Some(p) = self.alarm_utilisation_percent {
            g.alarm_utilisation_percent = Some(p);
        }
    }
}

#[derive(Args)]
struct GatewaySet {
    #[arg(long, value_parser = parse_attachment)]
    attachment: Option<AttachmentKind>,
    #[arg(long)]
    outside: Option<String>,
    #[arg(long)]
    inside: Option<String>,
    #[arg(long = "address")]
    addresses: Vec<IpAddr>,
    #[command(flatten)]
    limits: GatewayLimits,
    /// Remove the bandwidth limit.
    #[arg(long, conflicts_with = "bandwidth_mbps")]
    no_bandwidth_limit: bool,
}

#[derive(Subcommand)]
enum CustomerGatewayCmd {
    Add {
        name: String,
        /// Its public address.
        #[arg(long)]
        address: IpAddr,
    },
    Set {
        name: String,
        #[arg(long)]
        address: IpAddr,
    },
    Delete {
        name: String,
        /// Also delete its tunnels (and their SPD rules and routes).
        #[arg(long)]
        cascade: bool,
    },
    Show {
        name: String,
    },
    List,
}

#[derive(Subcommand)]
enum ShowCmd {
    /// The IKE-keyed tunnels and their IKE SAs.
    Ike,
}

#[derive(Subcommand)]
enum TunnelCmd {
    Add {
        name: String,
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        customer_gateway: String,
        /// Static SAs: aes-gcm-128, aes-gcm-256, chacha20-poly1305,
        /// aes-cbc-128-hmac-sha256 or aes-cbc-256-hmac-sha256 (strongSwan's
        /// default ESP proposal). Without --psk.
        #[arg(long, required_unless_present = "psk", conflicts_with = "psk")]
        suite: Option<String>,
        /// The outbound static SA: SPI:KEY (key and 4-byte salt in hex).
        #[arg(long, value_parser = parse_sa, required_unless_present = "psk", conflicts_with = "psk")]
        outbound: Option<StaticSa>,
        /// An inbound static SA: SPI:KEY (repeat, up to 4).
        #[arg(long, value_parser = parse_sa, required_unless_present = "psk", conflicts_with = "psk")]
        inbound: Vec<StaticSa>,
        #[command(flatten)]
        options: TunnelOptions,
        #[command(flatten)]
        ike: IkeOptions,
    },
    /// Change a tunnel (the options given replace the current values).
    Set {
        name: String,
        #[arg(long)]
        suite: Option<String>,
        #[arg(long, value_parser = parse_sa)]
        outbound: Option<StaticSa>,
        /// Replaces all inbound SAs (repeat).
        #[arg(long, value_parser = parse_sa)]
        inbound: Vec<StaticSa>,
        #[command(flatten)]
        options: TunnelOptions,
        #[command(flatten)]
        ike: IkeOptions,
        /// Bring it up (routes through it are used again).
        #[arg(long, conflicts_with = "down")]
        up: bool,
    },
    Delete {
        name: String,
        /// Also delete its SPD rules and routes.
        #[arg(long)]
        cascade: bool,
    },
    Show {
        name: String,
    },
    List {
        #[arg(long)]
        gateway: Option<String>,
    },
}

#[derive(Args)]
struct TunnelOptions {
    /// ESP in UDP, port 4500 both ways.
    #[arg(long)]
    nat_t: bool,
    /// ESP in UDP with these ports (SRC:DST).
    #[arg(long, value_name = "SRC:DST", conflicts_with = "nat_t")]
    nat_t_ports: Option<String>,
    /// 64-bit extended sequence numbers.
    #[arg(long)]
    esn: bool,
    /// Anti-replay window in packets.
    #[arg(long)]
    replay_window: Option<u32>,
    /// Clamp the MSS of TCP SYNs entering the tunnel.
    #[arg(long)]
    mss_clamp: Option<u16>,
    /// Soft SA lifetime: e.g. seconds=3000,bytes=1000000000.
    #[arg(long, value_parser = parse_limit)]
    soft_lifetime: Option<LimitConfig>,
    /// Hard SA lifetime: e.g. seconds=3600,packets=1000000.
    #[arg(long, value_parser = parse_limit)]
    hard_lifetime: Option<LimitConfig>,
    /// Administratively down: no route through it is used.
    #[arg(long)]
    down: bool,
    /// Health check: probes are sent from this address (and answered on it).
    #[arg(long, value_name = "IP")]
    health_local: Option<IpAddr>,
    /// Health check: probes go to this address across the tunnel.
    #[arg(long, value_name = "IP")]
    health_remote: Option<IpAddr>,
    /// Health check: milliseconds between probes (1000-5000, default 2000).
    #[arg(long, value_name = "MS")]
    health_interval_ms: Option<u32>,
    /// Health check: probes lost in a row that take the tunnel down (3-8, default 3).
    #[arg(long, value_name = "N")]
    health_failures: Option<u8>,
    /// Health check: a probe unanswered this long is lost (10-5000, default 1000).
    #[arg(long, value_name = "MS")]
    health_timeout_ms: Option<u32>,
    /// Health check: answered this long before a down tunnel comes back (default 10000).
    #[arg(long, value_name = "MS")]
    health_hold_down_ms: Option<u32>,
    /// Remove the health check.
    #[arg(long, conflicts_with_all = ["health_local", "health_remote"])]
    no_health_check: bool,
}

/// A tunnel negotiated with IKEv2 (--psk makes one).
#[derive(Args)]
struct IkeOptions {
    /// IKEv2 with this pre-shared key (at least 8 characters) instead of
    /// static SAs.
    #[arg(long, value_name = "SECRET")]
    psk: Option<String>,
    /// active: vpngw initiates (and again after the tunnel goes down);
    /// passive: it waits for the customer gateway; on-traffic: it
    /// initiates when the first packet is routed into the tunnel.
    #[arg(long, value_parser = ["active", "passive", "on-traffic"])]
    negotiation: Option<String>,
    /// Our identity: an IP address or a domain name (default: the
    /// gateway's address).
    #[arg(long, value_name = "ID")]
    local_id: Option<String>,
    /// The customer gateway's identity (default: its address).
    #[arg(long, value_name = "ID")]
    remote_id: Option<String>,
    /// An IKE proposal in strongSwan's syntax, e.g.
    /// aes256gcm16-prfsha256-x25519 (repeat, best first).
    #[arg(long = "ike-proposal", value_name = "PROPOSAL")]
    ike_proposals: Vec<String>,
    /// An ESP proposal in strongSwan's syntax, e.g. aes128gcm16 or
    /// aes128-sha256 (repeat, best first).
    #[arg(long = "esp-proposal", value_name = "PROPOSAL")]
    esp_proposals: Vec<String>,
    /// A DH group for child SA rekeys (PFS): ecp256, ecp384, x25519, modp2048.
    #[arg(long, value_name = "GROUP")]
    pfs: Option<String>,
    /// The IKE SA's lifetime in seconds (60-604800, default 86400).
    #[arg(long, value_name = "SECONDS")]
    ike_lifetime: Option<u32>,
    /// The IPsec SAs' lifetime in seconds (180-604800, default 3600).
    #[arg(long, value_name = "SECONDS")]
    lifetime: Option<u32>,
    /// The IPsec SAs' lifetime in kilobytes (rekeyed at 80%).
    #[arg(long, value_name = "KB")]
    lifetime_kilobytes: Option<u64>,
    /// Liveness checks: INTERVAL:TIMEOUT[:clear|restart] in seconds.
    #[arg(long, value_name = "INTERVAL:TIMEOUT[:ACTION]", value_parser = parse_dpd)]
    dpd: Option<DpdConfig>,
}

impl IkeOptions {
    /// Changes `t`'s IKE settings by the options given (making them, with
    /// the defaults, if --psk is given and it has none).
    fn apply_to(&self, t: &mut Tunnel) -> Result<(), Failure> {
        if let (None, Some(psk)) = (&t.ike, &self.psk) {
            t.ike = Some(Box::new(IkeConfig::new(psk)));
            (t.suite, t.outbound, t.inbound) = (None, None, Vec::new());
        }
        let given = self.psk.is_some()
            || self.negotiation.is_some()
            || self.local_id.is_some()
            || self.remote_id.is_some()
            || !self.ike_proposals.is_empty()
            || !self.esp_proposals.is_empty()
            || self.pfs.is_some()
            || self.ike_lifetime.is_some()
            || self.lifetime.is_some()
            || self.lifetime_kilobytes.is_some()
            || self.dpd.is_some();
        let Some(ike) = &mut t.ike else {
            return if given {
                Err(Failure::Usage(format!("tunnel {} has static SAs: give --psk to negotiate it with IKE", t.name)))
            } else {
                Ok(())
            };
        };
        if let Some(p) = &self.psk {
            ike.psk = p.clone();
        }
        if let Some(n) = &self.negotiation {
            ike.negotiation = match n.as_str() {
                "passive" => Negotiation::Passive,
                "on-traffic" => Negotiation::OnTraffic,
                _ => Negotiation::Active,
            };
        }
        if let Some(i) = &self.local_id {
            ike.local_id = Some(i.clone());
        }
        if let Some(i) = &self.remote_id {
            ike.remote_id = Some(i.clone());
        }
        if !self.ike_proposals.is_empty() {
            ike.ike_proposals = self.ike_proposals.clone();
        }
        if !self.esp_proposals.is_empty() {
            ike.esp_proposals = self.esp_proposals.clone();
        }
        if let Some(g) = &self.pfs {
            ike.pfs = Some(g.clone());
        }
        if let Some(l) = self.ike_lifetime {
            ike.ike_lifetime = l;
        }
        if let Some(l) = self.lifetime {
            ike.lifetime = l;
        }
        if let Some(k) = self.lifetime_kilobytes {
            ike.lifetime_kilobytes = Some(k);
        }
        if let Some(d) = self.dpd {
            ike.dpd = Some(d);
        }
        Ok(())
    }
}

fn parse_dpd(s: &str) -> Result<DpdConfig, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let secs = |p: &str| p.parse::<u32>().map_err(|_| format!("{p:?} is not a number of seconds"));
    let action = match parts.get(2).copied() {
        None | Some("restart") => DpdActionConfig::Restart,
        Some("clear") => DpdActionConfig::Clear,
        Some(a) => return Err(format!("{a:?} is not an action (clear or restart)")),
    };
    match parts[..] {
        [i, t] | [i, t, _] => Ok(DpdConfig { interval: secs(i)?, timeout: secs(t)?, action }),
        _ => Err("expected INTERVAL:TIMEOUT[:clear|restart]".into()),
    }
}

#[derive(Args, Clone)]
struct Selectors {
    #[arg(long)]
    gateway: String,
    /// Inside addresses: a prefix, first-last, an address, or any/any6.
    #[arg(long)]
    local: String,
    /// Remote (data-centre) addresses, written the same way.
    #[arg(long)]
    remote: String,
    /// tcp, udp, icmp, icmpv6 or a number; default any.
    #[arg(long)]
    protocol: Option<String>,
    /// A port or first-last; default any.
    #[arg(long)]
    local_ports: Option<String>,
    #[arg(long)]
    remote_ports: Option<String>,
}

#[derive(Subcommand)]
enum SpdCmd {
    Add {
        #[command(flatten)]
        selectors: Selectors,
        /// protect:<tunnel>, bypass or discard.
        #[arg(long)]
        action: String,
        /// Lower wins.
        #[arg(long, default_value_t = 0)]
        priority: u32,
    },
    /// Change the action or priority of the rule with these selectors.
    Set {
        #[command(flatten)]
        selectors: Selectors,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        priority: Option<u32>,
    },
    Delete {
        #[command(flatten)]
        selectors: Selectors,
    },
    List {
        #[arg(long)]
        gateway: Option<String>,
    },
}

#[derive(Args, Clone)]
struct RouteId {
    /// The destination prefix, e.g. 172.16.1.0/24.
    prefix: String,
    #[arg(long)]
    gateway: String,
    /// tunnel:<name>, inside, or cloud-connect.
    #[arg(long)]
    via: String,
}

#[derive(Subcommand)]
enum RouteCmd {
    Add {
        #[command(flatten)]
        id: RouteId,
        /// Lower wins among routes to one prefix.
        #[arg(long, default_value_t = 0)]
        priority: u32,
        /// Add it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Change a route's priority, or enable or disable it.
    Set {
        #[command(flatten)]
        id: RouteId,
        #[arg(long)]
        priority: Option<u32>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    Delete {
        #[command(flatten)]
        id: RouteId,
    },
    List {
        #[arg(long)]
        gateway: Option<String>,
    },
    /// What carries traffic to ADDRESS now: the SPD rule (with --from) or
    /// the active route, and the standby candidates.
    Lookup {
        address: IpAddr,
        #[arg(long)]
        gateway: String,
        /// The source address, to check the SPD first.
        #[arg(long)]
        from: Option<IpAddr>,
    },
}

fn parse_attachment(s: &str) -> Result<AttachmentKind, String> {
    serde_json::from_value(json!(s)).map_err(|_| "expected vpc, cloud-connect or cloud-connect-unassociated".into())
}

fn parse_sa(s: &str) -> Result<StaticSa, String> {
    let (spi, key) = s.split_once(':').ok_or("expected SPI:KEY, e.g. 0x1001:0102...")?;
    let spi = match spi.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => spi.parse(),
    }
    .map_err(|_| format!("{spi:?} is not an SPI (a 32-bit number, decimal or 0x hex)"))?;
    vpngw_ctrl::hex::decode(key).map_err(|e| format!("the key: {e}"))?;
    Ok(StaticSa { spi, key: key.to_string() })
}

fn parse_limit(s: &str) -> Result<LimitConfig, String> {
    let mut l = LimitConfig::default();
    for part in s.split(',') {
        let (k, v) = part.split_once('=').ok_or("expected seconds=N,bytes=N,packets=N")?;
        let n: u64 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
        match k {
            "seconds" => l.seconds = Some(n),
            "bytes" => l.bytes = Some(n),
            "packets" => l.packets = Some(n),
            _ => return Err(format!("{k:?}: expected seconds, bytes or packets")),
        }
    }
    Ok(l)
}

/// Why vpnctl stopped.
enum Failure {
    /// The daemon answered no.
    Refused(api::ApiError),
    /// Bad arguments found after parsing.
    Usage(String),
    /// No daemon to talk to.
    Unreachable(String),
}

struct Client {
    socket: PathBuf,
}

impl Client {
    fn call(&self, request: Request) -> Result<Value, Failure> {
        let path = self.socket.display();
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| {
            Failure::Unreachable(match e.kind() {
                std::io::ErrorKind::NotFound => format!("{path}: no such socket; is vpngw running? (--socket)"),
                std::io::ErrorKind::ConnectionRefused => format!("{path}: vpngw is not running (a stale socket)"),
                std::io::ErrorKind::PermissionDenied => {
                    format!("{path}: permission denied; run as root or as a member of the socket's group")
                }
                _ => format!("{path}: {e}"),
            })
        })?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
        let envelope = Envelope { version: api::VERSION, id: Some(1), request };
        let line = serde_json::to_string(&envelope).expect("a request serializes") + "\n";
        stream.write_all(line.as_bytes()).map_err(|e| Failure::Unreachable(format!("{path}: {e}")))?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).map_err(|e| Failure::Unreachable(format!("{path}: {e}")))?;
        if reply.is_empty() {
            return Err(Failure::Unreachable(format!("{path}: the daemon closed the connection")));
        }
        let r: Response = serde_json::from_str(&reply)
            .map_err(|e| Failure::Unreachable(format!("{path}: not a vpngw reply ({e})")))?;
        match (r.ok, r.error) {
            (true, _) => Ok(r.result.unwrap_or(Value::Null)),
            (false, Some(e)) => Err(Failure::Refused(e)),
            (false, None) => Err(Failure::Unreachable(format!("{path}: a refusal without a reason"))),
        }
    }

    fn apply(&self, changes: Vec<Change>, cascade: bool) -> Result<Value, Failure> {
        self.call(Request::Apply { changes, cascade })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, kind: Kind, name: &str) -> Result<T, Failure> {
        let v = self.call(Request::Show { kind, name: name.to_string() })?;
        serde_json::from_value(v).map_err(|e| Failure::Unreachable(format!("an unexpected reply: {e}")))
    }

    fn list<T: serde::de::DeserializeOwned>(&self, kind: Kind, gateway: Option<String>) -> Result<Vec<T>, Failure> {
        let v = self.call(Request::List { kind, gateway })?;
        serde_json::from_value(v).map_err(|e| Failure::Unreachable(format!("an unexpected reply: {e}")))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client { socket: cli.socket.clone() };
    match run(&cli, &client) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(e)) => {
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&json!({ "ok": false, "error": e })).expect("json"));
            }
            eprintln!("vpnctl: refused: {}", e.message);
            ExitCode::from(1)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("vpnctl: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Unreachable(e)) => {
            eprintln!("vpnctl: {e}");
            ExitCode::from(3)
        }
    }
}

fn run(cli: &Cli, c: &Client) -> Result<(), Failure> {
    let done = |v: Value| print_done(cli.json, &v);
    match &cli.command {
        Command::Gateway(cmd) => match cmd {
            GatewayCmd::Add { name, spec } => {
                let mut g = Gateway {
                    name: name.clone(),
                    attachment: spec.attachment,
                    outside: spec.outside.clone(),
                    inside: spec.inside.clone(),
                    addresses: spec.addresses.clone(),
                    bandwidth_mbps: None,
                    alarm_loss_percent: None,
                    alarm_utilisation_percent: None,
                };
                spec.limits.apply_to(&mut g);
                done(c.apply(vec![Change::Add(Object::Gateway(g))], false)?)
            }
            GatewayCmd::Set { name, spec } => {
                let mut g: Gateway = c.get(Kind::Gateway, name)?;
                if let Some(a) = spec.attachment {
                    g.attachment = a;
                }
                if let Some(o) = &spec.outside {
                    g.outside = o.clone();
                }
                if let Some(i) = &spec.inside {
                    g.inside = Some(i.clone());
                }
                if !spec.addresses.is_empty() {
                    g.addresses = spec.addresses.clone();
                }
                spec.limits.apply_to(&mut g);
                if spec.no_bandwidth_limit {
                    g.bandwidth_mbps = None;
                }
                done(c.apply(vec![Change::Set(Object::Gateway(g))], false)?)
            }
            GatewayCmd::Delete { name, cascade } => {
                done(c.apply(vec![Change::Delete(Key::Gateway(name.clone()))], *cascade)?)
            }
            GatewayCmd::Show { name } => {
                show(cli.json, c.call(Request::Show { kind: Kind::Gateway, name: name.clone() })?)
            }
            GatewayCmd::List => {
                let v = c.call(Request::List { kind: Kind::Gateway, gateway: None })?;
                let gws: Vec<Gateway> = from(&v)?;
                table(
                    cli.json,
                    &v,
                    &["gateway", "attachment", "outside", "inside", "addresses"],
                    gws.iter().map(|g| {
                        vec![
                            g.name.clone(),
                            word(&g.attachment),
                            g.outside.clone(),
                            g.inside.clone().unwrap_or("-".into()),
                            join(&g.addresses),
                        ]
                    }),
                )
            }
        },
        Command::CustomerGateway(cmd) => match cmd {
            CustomerGatewayCmd::Add { name, address } => {
                let cg = CustomerGateway { name: name.clone(), address: *address };
                done(c.apply(vec![Change::Add(Object::CustomerGateway(cg))], false)?)
            }
            CustomerGatewayCmd::Set { name, address } => {
                let cg = CustomerGateway { name: name.clone(), address: *address };
                done(c.apply(vec![Change::Set(Object::CustomerGateway(cg))], false)?)
            }
            CustomerGatewayCmd::Delete { name, cascade } => {
                done(c.apply(vec![Change::Delete(Key::CustomerGateway(name.clone()))], *cascade)?)
            }
            CustomerGatewayCmd::Show { name } => {
                show(cli.json, c.call(Request::Show { kind: Kind::CustomerGateway, name: name.clone() })?)
            }
            CustomerGatewayCmd::List => {
                let v = c.call(Request::List { kind: Kind::CustomerGateway, gateway: None })?;
                let cgws: Vec<CustomerGateway> = from(&v)?;
                table(
                    cli.json,
                    &v,
                    &["customer gateway", "address"],
                    cgws.iter().map(|g| vec![g.name.clone(), g.address.to_string()]),
                )
            }
        },
        Command::Tunnel(cmd) => match cmd.as_ref() {
            TunnelCmd::Add { name, gateway, customer_gateway, suite, outbound, inbound, options, ike } => {
                let mut t = Tunnel {
                    name: name.clone(),
                    gateway: gateway.clone(),
                    customer_gateway: customer_gateway.clone(),
                    suite: suite.clone(),
                    up: true,
                    nat_t: None,
                    esn: false,
                    replay_window: None,
                    mss_clamp: None,
                    soft_lifetime: None,
                    hard_lifetime: None,
                    health_check: None,
                    outbound: outbound.clone(),
                    inbound: inbound.clone(),
                    ike: None,
                };
                options.apply_to(&mut t)?;
                ike.apply_to(&mut t)?;
                done(c.apply(vec![Change::Add(Object::Tunnel(t))], false)?)
            }
            TunnelCmd::Set { name, suite, outbound, inbound, options, ike, up } => {
                let mut t: Tunnel = c.get(Kind::Tunnel, name)?;
                if let Some(s) = suite {
                    t.suite = Some(s.clone());
                }
                if let Some(o) = outbound {
                    t.outbound = Some(o.clone());
                }
                if !inbound.is_empty() {
                    t.inbound = inbound.clone();
                }
                if suite.is_some() || outbound.is_some() || !inbound.is_empty() {
                    t.ike = None; // static SAs replace IKE
                }
                options.apply_to(&mut t)?;
                ike.apply_to(&mut t)?;
                if *up {
                    t.up = true;
                }
                done(c.apply(vec![Change::Set(Object::Tunnel(t))], false)?)
            }
            TunnelCmd::Delete { name, cascade } => {
                done(c.apply(vec![Change::Delete(Key::Tunnel(name.clone()))], *cascade)?)
            }
            TunnelCmd::Show { name } => {
                let mut v = c.call(Request::Show { kind: Kind::Tunnel, name: name.clone() })?;
                hide_keys(&mut v);
                show(cli.json, v)
            }
            TunnelCmd::List { gateway } => {
                let mut v = c.call(Request::List { kind: Kind::Tunnel, gateway: gateway.clone() })?;
                let tunnels: Vec<Tunnel> = from(&v)?;
                if let Value::Array(items) = &mut v {
                    items.iter_mut().for_each(hide_keys);
                }
                table(
                    cli.json,
                    &v,
                    &["tunnel", "gateway", "customer gw", "keys", "up", "out spi", "in spis", "nat-t"],
                    tunnels.iter().map(|t| {
                        vec![
                            t.name.clone(),
                            t.gateway.clone(),
                            t.customer_gateway.clone(),
                            match (&t.ike, &t.suite) {
                                (Some(ike), _) => format!("ike ({:?})", ike.negotiation).to_lowercase(),
                                (None, s) => s.clone().unwrap_or_default(),
                            },
                            yes_no(t.up),
                            t.outbound.as_ref().map_or("-".into(), |o| format!("{:#x}", o.spi)),
                            t.inbound.iter().map(|s| format!("{:#x}", s.spi)).collect::<Vec<_>>().join(","),
                            match t.nat_t {
                                None | Some(NatTConfig::Enabled(false)) => "-".into(),
                                Some(NatTConfig::Enabled(true)) => "4500:4500".into(),
                                Some(NatTConfig::Ports { src_port, dst_port }) => format!("{src_port}:{dst_port}"),
                            },
                        ]
                    }),
                )
            }
        },
        Command::Spd(cmd) => match cmd {
            SpdCmd::Add { selectors, action, priority } => {
                let r = selectors.rule(action.clone(), *priority);
                done(c.apply(vec![Change::Add(Object::Spd(r))], false)?)
            }
            SpdCmd::Set { selectors, action, priority } => {
                let key = selectors.key();
                let rules: Vec<SpdRule> = c.list(Kind::Spd, Some(selectors.gateway.clone()))?;
                let mut r = rules
                    .into_iter()
                    .find(|r| SpdKey::of(r) == key)
                    .ok_or_else(|| Failure::Refused(not_found(&key)))?;
                if let Some(a) = action {
                    r.action = a.clone();
                }
                if let Some(p) = priority {
                    r.priority = *p;
                }
                done(c.apply(vec![Change::Set(Object::Spd(r))], false)?)
            }
            SpdCmd::Delete { selectors } => done(c.apply(vec![Change::Delete(Key::Spd(selectors.key()))], false)?),
            SpdCmd::List { gateway } => {
                let v = c.call(Request::List { kind: Kind::Spd, gateway: gateway.clone() })?;
                let rules: Vec<SpdRule> = from(&v)?;
                let any = |s: &Option<String>| s.clone().unwrap_or("any".into());
                table(
                    cli.json,
                    &v,
                    &["gateway", "priority", "local", "remote", "protocol", "local ports", "remote ports", "action"],
                    rules.iter().map(|r| {
                        vec![
                            r.gateway.clone(),
                            r.priority.to_string(),
                            r.local.clone(),
                            r.remote.clone(),
                            any(&r.protocol),
                            any(&r.local_ports),
                            any(&r.remote_ports),
                            r.action.clone(),
                        ]
                    }),
                )
            }
        },
        Command::Route(cmd) => match cmd {
            RouteCmd::Add { id, priority, disabled } => {
                let r = Route {
                    gateway: id.gateway.clone(),
                    prefix: id.prefix.clone(),
                    via: id.via.clone(),
                    priority: *priority,
                    enabled: !disabled,
                };
                done(c.apply(vec![Change::Add(Object::Route(r))], false)?)
            }
            RouteCmd::Set { id, priority, enable, disable } => {
                let key = RouteKey { gateway: id.gateway.clone(), prefix: id.prefix.clone(), via: id.via.clone() };
                let routes: Vec<Route> = c.list(Kind::Route, Some(id.gateway.clone()))?;
                let mut r = routes
                    .into_iter()
                    .find(|r| RouteKey::of(r) == key)
                    .ok_or_else(|| Failure::Refused(not_found(&key)))?;
                if let Some(p) = priority {
                    r.priority = *p;
                }
                if *enable || *disable {
                    r.enabled = *enable;
                }
                done(c.apply(vec![Change::Set(Object::Route(r))], false)?)
            }
            RouteCmd::Delete { id } => {
                let key = RouteKey { gateway: id.gateway.clone(), prefix: id.prefix.clone(), via: id.via.clone() };
                done(c.apply(vec![Change::Delete(Key::Route(key))], false)?)
            }
            RouteCmd::List { gateway } => {
                let v = c.call(Request::List { kind: Kind::Route, gateway: gateway.clone() })?;
                let routes: Vec<Route> = from(&v)?;
                table(
                    cli.json,
                    &v,
                    &["gateway", "prefix", "via", "priority", "enabled"],
                    routes.iter().map(|r| {
                        vec![
                            r.gateway.clone(),
                            r.prefix.clone(),
                            r.via.clone(),
                            r.priority.to_string(),
                            yes_no(r.enabled),
                        ]
                    }),
                )
            }
            RouteCmd::Lookup { address, gateway, from: source } => {
                let v = c.call(Request::Lookup { gateway: gateway.clone(), address: *address, source: *source })?;
                if cli.json {
                    return show(true, v);
                }
                match v["by"].as_str() {
                    Some("spd") => println!("{address}: SPD rule {}", compact(&v["rule"])),
                    Some("route") => println!("{address}: route {}", compact(&v["route"])),
                    _ => println!("{address}: no route (dropped)"),
                }
                for cand in v["candidates"].as_array().into_iter().flatten() {
                    let state = if cand["usable"].as_bool() == Some(true) { "usable" } else { "unusable" };
                    println!("  candidate {} ({state})", compact(&cand["route"]));
                }
                Ok(())
            }
        },
        Command::Stats { watch } => loop {
            let v = c.call(Request::Stats)?;
            if cli.json {
                println!("{}", serde_json::to_string(&v).expect("json"));
            } else {
                let s: Stats = from(&v)?;
                if watch.is_some() {
                    print!("\x1b[H\x1b[2J");
                }
                print_stats(&s);
            }
            let _ = std::io::stdout().flush();
            match watch {
                Some(secs) => std::thread::sleep(Duration::from_secs((*secs).max(1))),
                None => return Ok(()),
            }
        },
        Command::Top { interval, iterations } => top(c, cli.json, *interval, *iterations),
        Command::Events { follow, since } => {
            let mut since = *since;
            loop {
                let v = c.call(Request::Events { since })?;
                let events: Vec<Event> = from(&v["events"])?;
                for e in &events {
                    if cli.json {
                        println!("{}", serde_json::to_string(e).expect("json"));
                    } else {
                        println!("{}", event_line(e));
                    }
                }
                let _ = std::io::stdout().flush();
                since = events.last().map(|e| e.seq).or(since);
                if !follow {
                    return Ok(());
                }
                if events.len() < 1000 {
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        Command::Capture { tunnel, inner: _, outer, count, write, pps, timeout } => {
            let point = if *outer { CapturePoint::Outer } else { CapturePoint::Inner };
            capture(c, cli.json, tunnel, point, *count, write, *pps, *timeout)
        }
        Command::Sas => {
            let v = c.call(Request::Sas)?;
            let tunnels: Vec<TunnelStats> = from(&v)?;
            let mut rows = Vec::new();
            for t in &tunnels {
                let drops = drops_text;
                if let Some(o) = &t.outbound {
                    rows.push(vec![
                        t.name.clone(),
                        "out".into(),
                        format!("{:#x}", o.spi),
                        o.packets.to_string(),
                        o.bytes.to_string(),
                        drops(&o.drops),
                    ]);
                }
                for sa in &t.inbound {
                    rows.push(vec![
                        t.name.clone(),
                        "in".into(),
                        format!("{:#x}", sa.spi),
                        sa.packets.to_string(),
                        sa.bytes.to_string(),
                        drops(&sa.drops),
                    ]);
                }
            }
            table(cli.json, &v, &["tunnel", "dir", "spi", "packets", "bytes", "drops"], rows.into_iter())
        }
        Command::Show(ShowCmd::Ike) => {
            let v = c.call(Request::Ike)?;
            if cli.json {
                return show(true, v);
            }
            print!("{}", ike_text(&v));
            Ok(())
        }
        Command::Workers => {
            let v = c.call(Request::Workers)?;
            let workers: Vec<WorkerStats> = from(&v)?;
            if cli.json {
                return show(true, v);
            }
            print!("{}", Report { workers, ..Default::default() }.table());
            Ok(())
        }
        Command::Export => {
            let v = c.call(Request::Export)?;
            if cli.json {
                let cfg: Config = v["toml"].as_str().unwrap_or_default().parse().map_err(|e| {
                    Failure::Unreachable(format!("the daemon exported an unreadable configuration: {e}"))
                })?;
                return show(true, serde_json::to_value(cfg).expect("json"));
            }
            print!("{}", v["toml"].as_str().unwrap_or_default());
            Ok(())
        }
        Command::Apply { file, cascade } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| Failure::Usage(format!("stdin: {e}")))?
            } else {
                std::fs::read_to_string(file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?
            };
            let changes: Vec<Change> = serde_json::from_str(&text)
                .map_err(|e| Failure::Usage(format!("{}: not a JSON list of changes: {e}", file.display())))?;
            done(c.apply(changes, *cascade)?)
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "vpnctl", &mut std::io::stdout());
            Ok(())
        }
    }
}

impl TunnelOptions {
    fn apply_to(&self, t: &mut Tunnel) -> Result<(), Failure> {
        if self.nat_t {
            t.nat_t = Some(NatTConfig::Enabled(true));
        }
        if let Some(p) = &self.nat_t_ports {
            let port = |s: &str| {
                s.parse::<u16>().map_err(|_| Failure::Usage(format!("--nat-t-ports {p}: {s:?} is not a port")))
            };
            let (a, b) =
                p.split_once(':').ok_or_else(|| Failure::Usage(format!("--nat-t-ports {p}: expected SRC:DST")))?;
            t.nat_t = Some(NatTConfig::Ports { src_port: port(a)?, dst_port: port(b)? });
        }
        if self.esn {
            t.esn = true;
        }
        if let Some(w) = self.replay_window {
            t.replay_window = Some(w);
        }
        if let Some(m) = self.mss_clamp {
            t.mss_clamp = Some(m);
        }
        if let Some(l) = self.soft_lifetime {
            t.soft_lifetime = Some(l);
        }
        if let Some(l) = self.hard_lifetime {
            t.hard_lifetime = Some(l);
        }
        if self.down {
            t.up = false;
        }
        if self.no_health_check {
            t.health_check = None;
        }
        let timings = [self.health_interval_ms, self.health_timeout_ms, self.health_hold_down_ms];
        let any = self.health_local.is_some()
            || self.health_remote.is_some()
            || self.health_failures.is_some()
            || timings.iter().any(Option::is_some);
        if !any {
            return Ok(());
        }
        let mut h = match (t.health_check, self.health_local, self.health_remote) {
            (Some(h), _, _) => h,
            (None, Some(l), Some(r)) => HealthCheck::new(l, r),
            (None, _, _) => {
                return Err(Failure::Usage("a new health check needs --health-local and --health-remote".to_string()))
            }
        };
        h.local = self.health_local.unwrap_or(h.local);
        h.remote = self.health_remote.unwrap_or(h.remote);
        h.interval_ms = self.health_interval_ms.unwrap_or(h.interval_ms);
        h.failures = self.health_failures.unwrap_or(h.failures);
        h.timeout_ms = self.health_timeout_ms.unwrap_or(h.timeout_ms);
        h.hold_down_ms = self.health_hold_down_ms.unwrap_or(h.hold_down_ms);
        t.health_check = Some(h);
        Ok(())
    }
}

impl Selectors {
    fn key(&self) -> SpdKey {
        SpdKey {
            gateway: self.gateway.clone(),
            local: self.local.clone(),
            remote: self.remote.clone(),
            protocol: self.protocol.clone(),
            local_ports: self.local_ports.clone(),
            remote_ports: self.remote_ports.clone(),
        }
    }

    fn rule(&self, action: String, priority: u32) -> SpdRule {
        let k = self.key();
        SpdRule {
            gateway: k.gateway,
            priority,
            local: k.local,
            remote: k.remote,
            protocol: k.protocol,
            local_ports: k.local_ports,
            remote_ports: k.remote_ports,
            action,
        }
    }
}

fn not_found(what: &impl std::fmt::Display) -> api::ApiError {
    api::ApiError::new(api::ErrorKind::NotFound, format!("{what} does not exist"))
}

fn from<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, Failure> {
    serde_json::from_value(v.clone()).map_err(|e| Failure::Unreachable(format!("an unexpected reply: {e}")))
}

/// Keys stay in the daemon's answer for `export`, not on the screen.
fn hide_keys(v: &mut Value) {
    if let Some(k) = v.get_mut("ike").and_then(|o| o.get_mut("psk")) {
        *k = json!("(hidden)");
    }
    if let Some(k) = v.get_mut("outbound").and_then(|o| o.get_mut("key")) {
        *k = json!("(hidden)");
    }
    for sa in v.get_mut("inbound").and_then(Value::as_array_mut).into_iter().flatten() {
        sa["key"] = json!("(hidden)");
    }
}

fn print_done(json: bool, v: &Value) -> Result<(), Failure> {
    if json {
        println!("{}", serde_json::to_string_pretty(&json!({ "ok": true, "result": v })).expect("json"));
    } else {
        println!("ok (configuration generation {})", v["generation"]);
    }
    Ok(())
}

fn show(json: bool, v: Value) -> Result<(), Failure> {
    if json {
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else if let Value::Object(m) = &v {
        for (k, val) in m {
            println!("{k:<18} {}", compact(val));
        }
    }
    Ok(())
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn word<T: serde::Serialize>(v: &T) -> String {
    compact(&serde_json::to_value(v).expect("json"))
}

fn join(a: &[IpAddr]) -> String {
    a.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn yes_no(b: bool) -> String {
    (if b { "yes" } else { "no" }).to_string()
}

/// A table with aligned columns (or the JSON, with --json).
fn table(json: bool, v: &Value, head: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Result<(), Failure> {
    if json {
        return show(true, v.clone());
    }
    let rows: Vec<Vec<String>> = rows.collect();
    print!("{}", table_text(head, &rows));
    Ok(())
}

fn table_text(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let s: Vec<String> = cells.iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        s.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    if rows.is_empty() {
        out += "(none)\n";
    }
    for r in rows {
        out += &line(r);
    }
    out
}

fn rate(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.2}G", b / 1e9),
        b if b >= 1e6 => format!("{:.2}M", b / 1e6),
        b if b >= 1e3 => format!("{:.1}k", b / 1e3),
        b => format!("{b:.0}"),
    }
}

/// A tunnel's health as a few words: `up 0% 1.2ms`, or `-` without a check.
fn health_text(t: &TunnelTraffic) -> String {
    match &t.health {
        None => "-".into(),
        Some(h) => {
            format!("{} {:.0}% {}", h.state, h.loss_percent, h.delay_ms.map_or("-".into(), |d| format!("{d:.1}ms")))
        }
    }
}

fn event_line(e: &Event) -> String {
    let secs = e.time_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let what = [e.gateway.as_deref(), e.tunnel.as_deref()].into_iter().flatten().collect::<Vec<_>>().join("/");
    format!("#{:<5} {h:02}:{m:02}:{s:02}.{:03}Z {:<18} {:<12} {}", e.seq, e.time_ms % 1000, e.kind, what, e.detail)
}

/// `vpnctl top`: the stats and the latest events, redrawn in place on a
/// terminal (plain frames one after another when not a terminal).
fn top(c: &Client, json: bool, interval: u64, iterations: Option<u64>) -> Result<(), Failure> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let mut n = 0;
    loop {
        let v = c.call(Request::Stats)?;
        let s: Stats = from(&v)?;
        let ev = c.call(Request::Events { since: None })?;
        let events: Vec<Event> = from(&ev["events"])?;
        if json {
            println!("{}", serde_json::to_string(&json!({ "stats": v, "events": ev["events"] })).expect("json"));
        } else {
            let mut out = String::new();
            if tty {
                out += "\x1b[H\x1b[2J";
            }
            let up: usize = s.gateways.iter().map(|g| g.tunnels_up).sum();
            let all: usize = s.gateways.iter().map(|g| g.tunnels).sum();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            out += &format!(
                "vpngw top - {:02}:{:02}:{:02}Z - {} gateways, {up}/{all} tunnels up - every {interval}s, Ctrl-C to quit\n\n",
                (now / 3600) % 24,
                (now / 60) % 60,
                now % 60,
                s.gateways.len()
            );
            let head = ["", "state", "tx bit/s", "rx bit/s", "tx pkt/s", "rx pkt/s", "util", "health", "drops"];
            let mut rows = Vec::new();
            for g in &s.gateways {
                let t = &g.traffic;
                let util = match (g.tx_utilisation_percent, g.rx_utilisation_percent) {
                    (Some(a), Some(b)) => format!("{:.0}%", a.max(b)),
                    _ => "-".into(),
                };
                rows.push(vec![
                    format!("gateway {}", g.name),
                    format!("{}/{} up", g.tunnels_up, g.tunnels),
                    rate(t.tx_bps),
                    rate(t.rx_bps),
                    rate(t.tx_pps),
                    rate(t.rx_pps),
                    util,
                    "".into(),
                    drops_text(&g.drops),
                ]);
                for tu in s.tunnels.iter().filter(|x| x.gateway == g.name) {
                    let t = &tu.traffic;
                    rows.push(vec![
                        format!("  tunnel {}", tu.name),
                        (if tu.up { "up" } else { "DOWN" }).into(),
                        rate(t.tx_bps),
                        rate(t.rx_bps),
                        rate(t.tx_pps),
                        rate(t.rx_pps),
                        "".into(),
                        health_text(tu),
                        drops_text(&tu.drops),
                    ]);
                }
            }
            out += &table_text(&head, &rows);
            out += "\nlatest events:\n";
            let last: Vec<&Event> = events.iter().rev().take(8).collect();
            if last.is_empty() {
                out += "  (none)\n";
            }
            for e in last.into_iter().rev() {
                out += &format!("  {}\n", event_line(e));
            }
            print!("{out}");
        }
        let _ = std::io::stdout().flush();
        n += 1;
        if iterations.is_some_and(|max| n >= max) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(interval.max(1)));
    }
}

/// `vpnctl capture`: starts a capture, reads it until done (progress on
/// stderr), writes the pcap file; Ctrl-C or the timeout ends it early with
/// what was taken.
#[allow(clippy::too_many_arguments)]
fn capture(
    c: &Client,
    json: bool,
    tunnel: &str,
    point: CapturePoint,
    count: u64,
    path: &std::path::Path,
    pps: Option<u64>,
    timeout: Option<u64>,
) -> Result<(), Failure> {
    use vpngw_engine::pcap::{LinkType, PcapWriter};
    let file = std::fs::File::create(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    let mut pcap = PcapWriter::new(std::io::BufWriter::new(file), LinkType::RawIp, false)
        .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    let stop = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone());
    let id = c.call(Request::Capture { tunnel: tunnel.to_string(), point, count, pps })?["id"].as_u64().unwrap_or(0);
    let started = std::time::Instant::now();
    let (mut written, mut missed) = (0u64, 0u64);
    let write_err = |e: std::io::Error| Failure::Usage(format!("{}: {e}", path.display()));
    loop {
        let v = c.call(Request::CaptureRead { id })?;
        for p in v["packets"].as_array().into_iter().flatten() {
            let data = vpngw_ctrl::hex::decode(p["data"].as_str().unwrap_or_default())
                .map_err(|e| Failure::Unreachable(format!("an unexpected reply: {e}")))?;
            let micros = p["micros"].as_u64().unwrap_or(0);
            pcap.write((micros / 1_000_000) as u32, (micros % 1_000_000) as u32, &data).map_err(write_err)?;
            written += 1;
        }
        missed = v["missed"].as_u64().unwrap_or(missed);
        eprint!("\rvpnctl: captured {written}/{count} packets ({missed} missed)");
        if v["done"].as_bool() == Some(true) {
            break;
        }
        let late = timeout.is_some_and(|t| started.elapsed() >= Duration::from_secs(t));
        if stop.load(Ordering::Relaxed) || late {
            let _ = c.call(Request::CaptureStop { id });
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!();
    pcap.flush().map_err(write_err)?;
    let result = json!({ "file": path.display().to_string(), "packets": written, "missed": missed });
    if json {
        println!("{}", serde_json::to_string_pretty(&result).expect("json"));
    } else {
        println!("{written} packets written to {}", path.display());
    }
    Ok(())
}

fn print_stats(s: &Stats) {
    let drops = drops_text;
    let head = [
        "", "up", "tx pkts", "tx bytes", "rx pkts", "rx bytes", "tx bit/s", "tx pkt/s", "rx bit/s", "rx pkt/s",
        "health", "drops",
    ];
    let mut rows = Vec::new();
    for g in &s.gateways {
        let t = &g.traffic;
        rows.push(vec![
            format!("gateway {}", g.name),
            format!("{}/{}", g.tunnels_up, g.tunnels),
            t.tx_packets.to_string(),
            t.tx_bytes.to_string(),
            t.rx_packets.to_string(),
            t.rx_bytes.to_string(),
            rate(t.tx_bps),
            rate(t.tx_pps),
            rate(t.rx_bps),
            rate(t.rx_pps),
            match (g.tx_utilisation_percent, g.rx_utilisation_percent) {
                (Some(a), Some(b)) => format!("util tx {a:.0}% rx {b:.0}%"),
                _ => "-".into(),
            },
            drops(&g.drops),
        ]);
        for tu in s.tunnels.iter().filter(|x| x.gateway == g.name) {
            let t = &tu.traffic;
            rows.push(vec![
                format!("  tunnel {}", tu.name),
                yes_no(tu.up),
                t.tx_packets.to_string(),
                t.tx_bytes.to_string(),
                t.rx_packets.to_string(),
                t.rx_bytes.to_string(),
                rate(t.tx_bps),
                rate(t.tx_pps),
                rate(t.rx_bps),
                rate(t.rx_pps),
                health_text(tu),
                drops(&tu.drops),
            ]);
        }
    }
    let _ = table(false, &Value::Null, &head, rows.into_iter());
}

/// `show ike` for people: a block per tunnel.
fn ike_text(v: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let mut out = String::new();
    let tunnels = v["tunnels"].as_array().cloned().unwrap_or_default();
    if tunnels.is_empty() {
        out.push_str("no tunnel is negotiated with IKE\n");
    }
    for t in tunnels {
        out += &format!(
            "tunnel {}: {} ({}), {} -> {}\n",
            text(&t["tunnel"]),
            if t["up"] == json!(true) { "up" } else { "down" },
            text(&t["negotiation"]),
            text(&t["local"]),
            text(&t["remote"])
        );
        for sa in t["ike_sas"].as_array().into_iter().flatten() {
            out += &format!(
                "  IKE SA {} {} ({}), {} {} -> {}, peer {}{}, next rekey in {} s\n",
                text(&sa["spi"]),
                text(&sa["state"]),
                if sa["initiator"] == json!(true) { "initiator" } else { "responder" },
                text(&sa["proposal"]),
                text(&sa["local_id"]),
                text(&sa["remote_id"]),
                text(&sa["remote"]),
                if sa["nat_t"] == json!(true) { ", UDP encapsulated" } else { "" },
                text(&sa["next_rekey_s"]),
            );
            if let Some(c) = sa["child"].as_object() {
                out += &format!(
                    "    child SA {}: in {} out {}, {} === {}\n",
                    text(&c["proposal"]),
                    text(&c["spi_in"]),
                    text(&c["spi_out"]),
                    text(&c["local_ts"]),
                    text(&c["remote_ts"])
                );
            }
        }
        if !t["last_failure"].is_null() {
            out += &format!("  last failure: {}\n", text(&t["last_failure"]));
        }
        if !t["retry_in_s"].is_null() {
            out += &format!("  negotiating again in {} s\n", text(&t["retry_in_s"]));
        }
    }
    out
}
