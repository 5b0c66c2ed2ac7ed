//! The configuration file: what an operator writes (TOML) and what the
//! daemon restores, in one schema. Objects refer to each other by name;
//! `Config::to_model` checks every reference and value and turns the file
//! into the engine's `model::Config`, each error naming the object, the
//! field and the value.
//!
//! ```toml
//! [[interface]]
//! name = "gw-out"          # a Linux interface
//! role = "outside"         # or "inside"
//! router = "192.0.2.254"   # where off-link traffic goes (optional)
//!
//! [[gateway]]
//! name = "gw1"
//! attachment = "vpc"       # or "cloud-connect", "cloud-connect-unassociated"
//! outside = "gw-out"
//! inside = "gw-in"
//! addresses = ["192.0.2.1"]
//!
//! [[customer_gateway]]
//! name = "idc1"
//! address = "198.51.100.1"
//!
//! [[tunnel]]
//! name = "t1"
//! gateway = "gw1"
//! customer_gateway = "idc1"
//! suite = "aes-gcm-128"    # aes-gcm-256, chacha20-poly1305, aes-cbc-128-hmac-sha256, aes-cbc-256-hmac-sha256
//! nat_t = true             # UDP 4500 both ways (or { src_port, dst_port })
//! outbound = { spi = 0x1001, key = "<key and 4-byte salt, hex>" }  # AES-CBC: encryption key and 32-byte HMAC key
//! inbound = [{ spi = 0x2001, key = "..." }]
//!
//! [[spd]]
//! gateway = "gw1"
//! local = "10.1.0.0/16"
//! remote = "172.16.1.0/24"
//! action = "protect:t1"    # or "bypass", "discard"
//!
//! [[route]]
//! gateway = "gw1"
//! prefix = "172.16.0.0/16"
//! via = "tunnel:t1"        # or "inside", "cloud-connect"
//! ```

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use vpngw_engine::lifetime::{Lifetimes, Limit};
use vpngw_engine::model::{self, AddrRange, Attachment, NextHop, PortId, PortRange, SpdAction};
use vpngw_engine::wire::ether::MacAddr;
use vpngw_engine::{Direction, InboundSa, NatT, OutboundSa, SaConfig, Suite};

pub mod ike;
pub use ike::IkeConfig;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "interface")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "gateway")]
    pub gateways: Vec<Gateway>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "customer_gateway")]
    pub customer_gateways: Vec<CustomerGateway>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "tunnel")]
    pub tunnels: Vec<Tunnel>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spd: Vec<SpdRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "route")]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Inside,
    Outside,
}

/// A Linux interface the engine runs on. Its MAC, MTU and addresses come
/// from the kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    pub role: Role,
    /// Where traffic to off-link destinations goes; none: all on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachmentKind {
    Vpc,
    CloudConnect,
    /// A cloud-connect gateway with no network behind it.
    CloudConnectUnassociated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub name: String,
    pub attachment: AttachmentKind,
    /// The outside interface's name.
    pub outside: String,
    /// The inside interface's name (none for an unassociated
    /// cloud-connect gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside: Option<String>,
    /// The gateway's public addresses: tunnel endpoints.
    pub addresses: Vec<IpAddr>,
    /// The bandwidth limit in Mbit/s, each way (the product's tiers run
    /// from 5 to 3,000); absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<u32>,
    /// Alarm when a tunnel's probe loss is above this percentage (default
    /// 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_loss_percent: Option<u8>,
    /// Alarm when the traffic either way is above this percentage of the
    /// bandwidth limit (default 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_utilisation_percent: Option<u8>,
}

/// The alarm thresholds when a gateway sets none.
pub const DEFAULT_ALARM_LOSS_PERCENT: u8 = 10;
pub const DEFAULT_ALARM_UTILISATION_PERCENT: u8 = 90;

/// A tunnel's health check, as the product has it: ICMP echo probes from
/// `local` to `remote` through the tunnel every `interval_ms`; `failures`
/// probes in a row unanswered within `timeout_ms` take the tunnel down
/// (its routes fail over); answered probes for `hold_down_ms` bring it
/// back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub local: IpAddr,
    pub remote: IpAddr,
    /// 1,000 to 5,000.
    #[serde(default = "HealthCheck::default_interval")]
    pub interval_ms: u32,
    /// 3 to 8.
    #[serde(default = "HealthCheck::default_failures")]
    pub failures: u8,
    /// 10 to 5,000.
    #[serde(default = "HealthCheck::default_timeout")]
    pub timeout_ms: u32,
    /// 0 to 600,000.
    #[serde(default = "HealthCheck::default_hold_down")]
    pub hold_down_ms: u32,
}

impl HealthCheck {
    fn default_interval() -> u32 {
        2000
    }
    fn default_failures() -> u8 {
        3
    }
    fn default_timeout() -> u32 {
        1000
    }
    fn default_hold_down() -> u32 {
        10_000
    }

    /// A health check between two addresses with the default timings.
    pub fn new(local: IpAddr, remote: IpAddr) -> Self {
        Self {
            local,
            remote,
            interval_ms: Self::default_interval(),
            failures: Self::default_failures(),
            timeout_ms: Self::default_timeout(),
            hold_down_ms: Self::default_hold_down(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerGateway {
    pub name: String,
    pub address: IpAddr,
}

/// NAT-T: `true` for UDP 4500 both ways, or the ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NatTConfig {
    Enabled(bool),
    Ports { src_port: u16, dst_port: u16 },
}

/// One SA of a tunnel: its SPI and keying material (key || 4-byte salt
/// for the AEADs; encryption key || 32-byte HMAC-SHA-256 key for AES-CBC).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSa {
    pub spi: u32,
    pub key: String,
}

impl fmt::Debug for StaticSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("StaticSa").field("spi", &format_args!("{:#x}", self.spi)).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunnel {
    pub name: String,
    pub gateway: String,
    pub customer_gateway: String,
    /// The ESP suite of static SAs (with `ike` it is negotiated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    #[serde(default = "yes")]
    pub up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_t: Option<NatTConfig>,
    #[serde(default)]
    pub esn: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mss_clamp: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_lifetime: Option<LimitConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_lifetime: Option<LimitConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Static SAs (a lab convenience)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<StaticSa>,
    /// Up to four (a rekey keeps the old ones a while).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<StaticSa>,
    /// ... or SAs negotiated with IKEv2 ([`ike`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike: Option<Box<IkeConfig>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpdRule {
    pub gateway: String,
    /// Lower wins; among equal priorities the earlier rule.
    #[serde(default)]
    pub priority: u32,
    /// Inside addresses: a prefix (`10.1.0.0/16`), a range
    /// (`10.1.0.5-10.1.0.9`), an address, or `any`.
    pub local: String,
    /// Remote (IDC) addresses, written the same way.
    pub remote: String,
    /// `tcp`, `udp`, `icmp`, a number, or absent for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// A port or `first-last`; absent for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ports: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ports: Option<String>,
    /// `protect:<tunnel>`, `bypass` or `discard`.
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub gateway: String,
    pub prefix: String,
    /// `tunnel:<name>`, `inside` or `cloud-connect`.
    pub via: String,
    #[serde(default)]
    pub priority: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// What the kernel says of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub mac: MacAddr,
    pub mtu: u16,
    pub addrs: Vec<IpAddr>,
    pub neighbours: Vec<(IpAddr, MacAddr)>,
}

/// A configuration that cannot run: which object, which field, which
/// value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(String),
    #[error("{object}: {field} = {value}: {why}")]
    Invalid { object: String, field: &'static str, value: String, why: String },
}

/// A health check's values, within the product's ranges.
fn check_health(object: &str, h: &HealthCheck) -> Result<model::Probe, ConfigError> {
    let field = "health_check";
    if h.local.is_ipv4() != h.remote.is_ipv4() || h.local == h.remote {
        return Err(invalid(object, field, h.remote, "remote is not another address of local's family"));
    }
    let ranges = [
        ("interval_ms", h.interval_ms, 1000..=5000, "interval_ms is 1000 to 5000"),
        ("failures", h.failures as u32, 3..=8, "failures is 3 to 8"),
        ("timeout_ms", h.timeout_ms, 10..=5000, "timeout_ms is 10 to 5000"),
        ("hold_down_ms", h.hold_down_ms, 0..=600_000, "hold_down_ms is 0 to 600000"),
    ];
    for (name, v, range, why) in ranges {
        if !range.contains(&v) {
            return Err(invalid(object, field, format!("{name} = {v}"), why));
        }
    }
    Ok(model::Probe { local: h.local, remote: h.remote })
}

fn invalid(
    object: impl fmt::Display,
    field: &'static str,
    value: impl fmt::Display,
    why: impl fmt::Display,
) -> ConfigError {
    ConfigError::Invalid { object: object.to_string(), field, value: value.to_string(), why: why.to_string() }
}

impl FromStr for Config {
    type Err = ConfigError;

    /// Parses TOML text (unknown fields are errors: a typo must not
    /// silently mean a default).
    fn from_str(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }
}

impl Config {
    /// The configuration as TOML text, in the schema it was read in.
    ///
    /// Written by hand from the serde data (the `toml` crate's writer
    /// takes 20 times as long, and the state file is rewritten after every
    /// change): each object an `[[array]]` table of `key = value` lines,
    /// nested values inline. JSON's string escapes are TOML's.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let sections: [(&str, Vec<serde_json::Value>); 6] = [
            ("interface", values(&self.interfaces)),
            ("gateway", values(&self.gateways)),
            ("customer_gateway", values(&self.customer_gateways)),
            ("tunnel", values(&self.tunnels)),
            ("spd", values(&self.spd)),
            ("route", values(&self.routes)),
        ];
        for (name, objects) in sections {
            for o in objects {
                out += &format!("[[{name}]]\n");
                for (k, v) in o.as_object().expect("objects serialize as tables") {
                    if !v.is_null() {
                        out += &format!("{k} = {}\n", inline_toml(v));
                    }
                }
                out.push('\n');
            }
        }
        out
    }

    /// The engine's model of this configuration, with the kernel's view of
    /// each interface (`link`), at time `now` (SA lifetimes start there).
    /// Port ids are the interfaces' positions, from 1.
    pub fn to_model(
        &self,
        mut link: impl FnMut(&str) -> Result<Link, String>,
        now: u64,
    ) -> Result<model::Config, ConfigError> {
        let mut cfg = model::Config::default();
        let mut ports: HashMap<&str, (PortId, Role)> = HashMap::new();
        for (i, itf) in self.interfaces.iter().enumerate() {
            let object = format!("interface {}", itf.name);
            let id = PortId::try_from(i + 1).map_err(|_| invalid(&object, "name", &itf.name, "too many interfaces"))?;
            if ports.insert(&itf.name, (id, itf.role)).is_some() {
                return Err(invalid(object, "name", &itf.name, "is defined twice"));
            }
            let l = link(&itf.name).map_err(|why| invalid(&object, "name", &itf.name, why))?;
            cfg.ports.push(model::Port {
                id,
                mac: l.mac,
                mtu: l.mtu,
                addrs: l.addrs,
                router: itf.router,
                neighbours: l.neighbours,
            });
        }

        let mut gateways = HashMap::new();
        for (i, g) in self.gateways.iter().enumerate() {
            let object = format!("gateway {}", g.name);
            let id = i as u32 + 1;
            if gateways.insert(g.name.as_str(), id).is_some() {
                return Err(invalid(object, "name", &g.name, "is defined twice"));
            }
            let port = |field, name: &str, role| match ports.get(name) {
                Some(&(id, r)) if r == role => Ok(id),
                Some(_) => Err(invalid(&object, field, name, format!("is not an {} interface", role_name(role)))),
                None => Err(invalid(&object, field, name, "is not an interface")),
            };
            let outside_port = port("outside", &g.outside, Role::Outside)?;
            let inside_port = g.inside.as_deref().map(|n| port("inside", n, Role::Inside)).transpose()?;
            let attachment = match g.attachment {
                AttachmentKind::Vpc => Attachment::Vpc,
                AttachmentKind::CloudConnect => Attachment::CloudConnect { associated: true },
                AttachmentKind::CloudConnectUnassociated => Attachment::CloudConnect { associated: false },
            };
            if inside_port.is_none() != (g.attachment == AttachmentKind::CloudConnectUnassociated) {
                let why =
                    "an inside interface is needed by a vpc or associated cloud-connect gateway, and only by them";
                return Err(invalid(object, "inside", g.inside.as_deref().unwrap_or("(none)"), why));
            }
            if g.addresses.is_empty() {
                return Err(invalid(object, "addresses", "[]", "a gateway needs a public address"));
            }
            if let Some(b) = g.bandwidth_mbps.filter(|b| !(1..=100_000).contains(b)) {
                return Err(invalid(object, "bandwidth_mbps", b, "is 1 to 100000 (Mbit/s)"));
            }
            for (field, v) in [
                ("alarm_loss_percent", g.alarm_loss_percent),
                ("alarm_utilisation_percent", g.alarm_utilisation_percent),
            ] {
                if let Some(v) = v.filter(|v| !(1..=100).contains(v)) {
                    return Err(invalid(object, field, v, "is a percentage, 1 to 100"));
                }
            }
            cfg.gateways.push(model::Gateway {
                id,
                name: g.name.clone(),
                attachment,
                outside_port,
                outside_addrs: g.addresses.clone(),
                inside_port,
                bandwidth_bps: g.bandwidth_mbps.map(|m| m as u64 * 1_000_000),
            });
        }
        let gateway = |object: &str, name: &str| {
            gateways.get(name).copied().ok_or_else(|| invalid(object, "gateway", name, "is not a gateway"))
        };

        let mut cgws = HashMap::new();
        for (i, c) in self.customer_gateways.iter().enumerate() {
            let id = i as u32 + 1;
            if cgws.insert(c.name.as_str(), (id, c.address)).is_some() {
                return Err(invalid(format!("customer gateway {}", c.name), "name", &c.name, "is defined twice"));
            }
            cfg.customer_gateways.push(model::CustomerGateway { id, name: c.name.clone(), addr: c.address });
        }

        let mut tunnels = HashMap::new();
        for (i, t) in self.tunnels.iter().enumerate() {
            let object = format!("tunnel {}", t.name);
            let id = i as u32 + 1;
            if tunnels.insert(t.name.as_str(), id).is_some() {
                return Err(invalid(object, "name", &t.name, "is defined twice"));
            }
            let g = gateway(&object, &t.gateway)?;
            let &(cgw, remote) = cgws.get(t.customer_gateway.as_str()).ok_or_else(|| {
                invalid(&object, "customer_gateway", &t.customer_gateway, "is not a customer gateway")
            })?;
            let local = self.gateways[g as usize - 1]
                .addresses
                .iter()
                .copied()
                .find(|a| a.is_ipv4() == remote.is_ipv4())
                .ok_or_else(|| {
                    invalid(&object, "customer_gateway", remote, "the gateway has no address of its family")
                })?;
            let (outbound, inbound) = match (&t.ike, &t.outbound, &t.suite) {
                (Some(_), None, None) if t.inbound.is_empty() => {
                    // Checked here, made by the control thread's negotiation.
                    ike::settings(t, local, remote, &[])?;
                    (None, Vec::new())
                }
                (Some(_), ..) => {
                    return Err(invalid(
                        &object,
                        "ike",
                        "{..}",
                        "a tunnel has static SAs (suite, outbound, inbound) or ike, not both",
                    ))
                }
                (None, Some(o), Some(suite)) => static_sas(&object, t, suite, o, local, remote, now)?,
                (None, ..) => {
                    return Err(invalid(
                        &object,
                        "outbound",
                        "(none)",
                        "a tunnel has static SAs (suite, outbound, inbound) or ike",
                    ))
                }
            };
            cfg.tunnels.push(model::Tunnel {
                id,
                name: t.name.clone(),
                gateway: g,
                customer_gateway: cgw,
                outbound,
                inbound,
                up: t.up,
                mss_clamp: t.mss_clamp,
                probe: t.health_check.map(|h| check_health(&object, &h)).transpose()?,
                on_demand: t.ike.as_ref().is_some_and(|i| i.negotiation == ike::Negotiation::OnTraffic),
            });
        }
        unique_spis(&cfg.tunnels)?;
        let tunnel = |object: &str, field, name: &str| {
            tunnels.get(name).copied().ok_or_else(|| invalid(object, field, name, "is not a tunnel"))
        };

        for (n, r) in self.spd.iter().enumerate() {
            let object = format!("spd rule {} (gateway {})", n + 1, r.gateway);
            let range = |field, s: &str| parse_range(s).map_err(|why| invalid(&object, field, s, why));
            let ports = |field, s: &Option<String>| match s {
                None => Ok(PortRange::ANY),
                Some(s) => parse_ports(s).map_err(|why| invalid(&object, field, s, why)),
            };
            let (src, dst) = (range("local", &r.local)?, range("remote", &r.remote)?);
            if src.first.is_ipv4() != dst.first.is_ipv4() {
                return Err(invalid(object, "remote", &r.remote, "is not of the local range's address family"));
            }
            let protocol = match &r.protocol {
                None => None,
                Some(p) => Some(parse_protocol(p).map_err(|why| invalid(&object, "protocol", p, why))?),
            };
            let action = match r.action.split_once(':') {
                Some(("protect", t)) => SpdAction::Protect(tunnel(&object, "action", t)?),
                None if r.action == "bypass" => SpdAction::Bypass,
                None if r.action == "discard" => SpdAction::Discard,
                _ => return Err(invalid(object, "action", &r.action, "expected protect:<tunnel>, bypass or discard")),
            };
            cfg.spd.push(model::SpdRule {
                gateway: gateway(&object, &r.gateway)?,
                priority: r.priority,
                src,
                dst,
                protocol,
                src_ports: ports("local_ports", &r.local_ports)?,
                dst_ports: ports("remote_ports", &r.remote_ports)?,
                action,
            });
        }

        ambiguous_mappings(&self.spd, &cfg.spd)?;

        for r in &self.routes {
            let object = format!("route {} (gateway {})", r.prefix, r.gateway);
            let (prefix, len) = parse_prefix(&r.prefix).map_err(|why| invalid(&object, "prefix", &r.prefix, why))?;
            let next_hop = match r.via.split_once(':') {
                Some(("tunnel", t)) => NextHop::Tunnel(tunnel(&object, "via", t)?),
                None if r.via == "inside" => NextHop::Inside,
                None if r.via == "cloud-connect" => NextHop::CloudConnect,
                _ => return Err(invalid(object, "via", &r.via, "expected tunnel:<name>, inside or cloud-connect")),
            };
            cfg.routes.push(model::Route {
                gateway: gateway(&object, &r.gateway)?,
                prefix,
                len,
                next_hop,
                priority: r.priority,
                enabled: r.enabled,
            });
        }
        Ok(cfg)
    }
}

/// A tunnel's outbound SA and inbound SAs, as the engine's.
type StaticSas = (Option<model::SaHandle<OutboundSa>>, Vec<model::SaHandle<InboundSa>>);

/// A tunnel's static SAs (`suite`, `outbound`, `inbound`) as the engine's.
fn static_sas(
    object: &str,
    t: &Tunnel,
    suite: &str,
    outbound: &StaticSa,
    local: IpAddr,
    remote: IpAddr,
    now: u64,
) -> Result<StaticSas, ConfigError> {
    let suite = Suite::from_str(suite).map_err(|e| invalid(object, "suite", suite, e))?;
    let sa = |field: &'static str, s: &StaticSa, direction| {
        let mut c = SaConfig::new(s.spi, direction, suite, local, remote);
        c.natt = match t.nat_t {
            None | Some(NatTConfig::Enabled(false)) => None,
            Some(NatTConfig::Enabled(true)) => Some(NatT::DEFAULT),
            Some(NatTConfig::Ports { src_port, dst_port }) => Some(NatT { src_port, dst_port }),
        };
        c.esn = t.esn;
        c.replay_window = t.replay_window.unwrap_or(c.replay_window);
        let limit = |field: &'static str, l: Option<LimitConfig>| {
            let l = l.unwrap_or_default();
            // TOML integers are 64-bit signed: the state file must
            // hold what is accepted.
            for v in [l.bytes, l.packets, l.seconds].into_iter().flatten() {
                if v > i64::MAX as u64 {
                    return Err(invalid(object, field, v, "a lifetime is at most 9223372036854775807"));
                }
            }
            Ok(Limit { bytes: l.bytes, packets: l.packets, seconds: l.seconds })
        };
        c.lifetimes = Lifetimes {
            soft: limit("soft_lifetime", t.soft_lifetime)?,
            hard: limit("hard_lifetime", t.hard_lifetime)?,
        };
        let key = crate::hex::decode(&s.key).map_err(|e| invalid(object, field, "(key)", e))?;
        Ok::<_, ConfigError>((c, key))
    };
    let (c, key) = sa("outbound", outbound, Direction::Outbound)?;
    let spi = format!("{:#x}", outbound.spi);
    let outbound = OutboundSa::new(c, &key, now).map_err(|e| invalid(object, "outbound", &spi, e))?;
    if t.inbound.is_empty() || t.inbound.len() > model::MAX_INBOUND_SAS {
        return Err(invalid(object, "inbound", t.inbound.len(), "a tunnel has 1 to 4 inbound SAs"));
    }
    let mut inbound = Vec::new();
    for s in &t.inbound {
        let (c, key) = sa("inbound", s, Direction::Inbound)?;
        let spi = format!("{:#x}", s.spi);
        let sa = InboundSa::new(c, &key, now).map_err(|e| invalid(object, "inbound", &spi, e))?;
        inbound.push(Arc::new(Mutex::new(sa)));
    }
    Ok((Some(Arc::new(Mutex::new(outbound))), inbound))
}

/// Two tunnels' SAs must not share an SPI where a receiver tells SAs apart
/// by it: inbound, the SPI and our address; outbound, the SPI and the peer.
fn unique_spis(tunnels: &[model::Tunnel]) -> Result<(), ConfigError> {
    let mut inbound: HashMap<(u32, IpAddr), &str> = HashMap::new();
    let mut outbound: HashMap<(u32, IpAddr), &str> = HashMap::new();
    for t in tunnels {
        let object = format!("tunnel {}", t.name);
        if let Some(o) = &t.outbound {
            let o = o.lock().expect("SA lock").cfg.clone();
            if let Some(other) = outbound.insert((o.spi, o.remote), &t.name) {
                let why = format!("tunnel {other} already sends to {} with this SPI", o.remote);
                return Err(invalid(object, "outbound", format!("{:#x}", o.spi), why));
            }
        }
        for sa in &t.inbound {
            let i = sa.lock().expect("SA lock").cfg.clone();
            if let Some(other) = inbound.insert((i.spi, i.local), &t.name) {
                let whose = if other == t.name { "this tunnel".to_string() } else { format!("tunnel {other}") };
                let why = format!("{whose} already receives on {} with this SPI", i.local);
                return Err(invalid(object, "inbound", format!("{:#x}", i.spi), why));
            }
        }
    }
    Ok(())
}

/// Refuses PROTECT rules of one gateway into different tunnels whose
/// traffic overlaps (local and remote ranges, protocol and ports): which
/// tunnel such a packet belongs to would be a matter of priority, and the
/// peer's selectors could not agree (the product refuses them as
/// ambiguous). BYPASS and DISCARD rules may overlap anything: priority
/// orders them. `file` and `rules` are the same rules, as written and as
/// parsed.
fn ambiguous_mappings(file: &[SpdRule], rules: &[model::SpdRule]) -> Result<(), ConfigError> {
    let mut protect: Vec<usize> =
        (0..rules.len()).filter(|&i| matches!(rules[i].action, SpdAction::Protect(_))).collect();
    // A sweep over the local ranges in order: only rules whose local range
    // starts before this one's ends can overlap it.
    protect.sort_by_key(|&i| (rules[i].gateway, rules[i].src.first));
    for (n, &i) in protect.iter().enumerate() {
        let a = &rules[i];
        for &j in &protect[n + 1..] {
            let b = &rules[j];
            if b.gateway != a.gateway || b.src.first > a.src.last {
                break;
            }
            let ranges = |x: &AddrRange, y: &AddrRange| x.first <= y.last && y.first <= x.last;
            let ports = |x: &PortRange, y: &PortRange| x.first <= y.last && y.first <= x.last;
            let protocols = a.protocol.is_none() || b.protocol.is_none() || a.protocol == b.protocol;
            if a.action != b.action
                && ranges(&a.dst, &b.dst)
                && protocols
                && ports(&a.src_ports, &b.src_ports)
                && ports(&a.dst_ports, &b.dst_ports)
            {
                let (first, second) = (i.min(j), i.max(j));
                let (f, s) = (&file[first], &file[second]);
                let object = format!("spd rule {} (gateway {})", second + 1, s.gateway);
                let why = format!(
                    "overlaps spd rule {} ({} -> {}, {}) in both local and remote ranges: \
                     the tunnel for that traffic would be ambiguous",
                    first + 1,
                    f.local,
                    f.remote,
                    f.action
                );
                return Err(invalid(object, "remote", &s.remote, why));
            }
        }
    }
    Ok(())
}

fn values<T: Serialize>(objects: &[T]) -> Vec<serde_json::Value> {
    objects.iter().map(|o| serde_json::to_value(o).expect("the schema serializes")).collect()
}

/// A value as TOML, on one line.
fn inline_toml(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "\"\"".into(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        Value::String(s) => {
            // A basic string: quotes, backslashes and every control
            // character (DEL too, which JSON leaves bare) escaped.
            let mut out = String::with_capacity(s.len() + 2);
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(a) => format!("[{}]", a.iter().map(inline_toml).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => {
            let fields: Vec<String> =
                m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| format!("{k} = {}", inline_toml(v))).collect();
            format!("{{ {} }}", fields.join(", "))
        }
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Inside => "inside",
        Role::Outside => "outside",
    }
}

/// `a.b.c.d/len` or `x::/len` (host bits must be zero).
fn parse_prefix(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = s.split_once('/').ok_or("expected address/length")?;
    let addr: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an address"))?;
    let len: u8 = l.parse().map_err(|_| format!("{l:?} is not a prefix length"))?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    if len > width {
        return Err(format!("/{len} is longer than {width} bits"));
    }
    if AddrRange::prefix(addr, len).first != addr {
        return Err(format!("host bits set (the network is {}/{len})", AddrRange::prefix(addr, len).first));
    }
    Ok((addr, len))
}

/// A prefix, `first-last`, one address, or `any` (IPv4 everything).
fn parse_range(s: &str) -> Result<AddrRange, String> {
    if s == "any" {
        return Ok(AddrRange::any("0.0.0.0".parse().expect("an address")));
    }
    if s == "any6" {
        return Ok(AddrRange::any("::".parse().expect("an address")));
    }
    if s.contains('/') {
        let (a, l) = parse_prefix(s)?;
        return Ok(AddrRange::prefix(a, l));
    }
    let addr = |a: &str| a.trim().parse::<IpAddr>().map_err(|_| format!("{a:?} is not an address"));
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (addr(a)?, addr(b)?),
        None => (addr(s)?, addr(s)?),
    };
    if first.is_ipv4() != last.is_ipv4() || first > last {
        return Err("the range's ends are of different families or out of order".into());
    }
    Ok(AddrRange { first, last })
}

fn parse_ports(s: &str) -> Result<PortRange, String> {
    let port = |p: &str| p.trim().parse::<u16>().map_err(|_| format!("{p:?} is not a port"));
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(s)?, port(s)?),
    };
    if first > last {
        return Err("the range is out of order".into());
    }
    Ok(PortRange { first, last })
}

fn parse_protocol(s: &str) -> Result<u8, String> {
    match s {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" => Ok(58),
        _ => s.parse().map_err(|_| "expected tcp, udp, icmp, icmpv6 or a number 0-255".into()),
    }
}

#[cfg(test)]
pub(crate) mod tests;
