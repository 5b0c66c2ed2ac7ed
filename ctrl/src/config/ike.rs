//! A tunnel's `ike` section: how vpngw negotiates its SAs with the
//! customer gateway (instead of static SAs), as the product exposes it,
//! and the IKE [`Settings`] it makes, each value checked and each error
//! naming the field.
//!
//! ```toml
//! [[tunnel]]
//! name = "t1"
//! gateway = "gw1"
//! customer_gateway = "idc1"
//! ike = { negotiation = "active", psk = "a long shared secret", esp_proposals = ["aes128gcm16"] }
//! ```
//!
//! Fields: `negotiation` (`active`: vpngw initiates, at start and again
//! after the tunnel goes down; `passive`: it waits for the peer;
//! `on-traffic`: it initiates when a packet is routed into the tunnel,
//! which keeps its routes meanwhile), `psk`,
//! `local_id` and `remote_id` (an IPv4/IPv6 address or an FQDN; by
//! default the two gateways' addresses), `ike_proposals` and
//! `esp_proposals` (strongSwan's syntax, best first), `pfs` (a DH group
//! for child rekeys, added to the ESP proposals that have none),
//! `ike_lifetime` (seconds, 60 to 604,800, default 86,400), `lifetime`
//! (the IPsec SAs', seconds, 180 to 604,800, default 3,600),
//! `lifetime_kilobytes` (the IPsec SAs' volume: rekeyed at 80%, expired at
//! 100%), `dpd` (`{ interval, timeout, action }`: liveness checks after
//! `interval` seconds of silence, the peer dead when none is answered in
//! `timeout`; `clear` takes the tunnel down, `restart` negotiates again).

use super::{invalid, ConfigError, Tunnel};
use crate::ike::message::TrafficSelector;
use crate::ike::proposal::{EspProposal, IkeProposal};
use crate::ike::sa::{identity, Dpd, DpdAction, Settings};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;
use vpngw_engine::model::{AddrRange, PortRange};

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IkeConfig {
    #[serde(default)]
    pub negotiation: Negotiation,
    pub psk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    #[serde(default = "IkeConfig::default_ike_proposals")]
    pub ike_proposals: Vec<String>,
    #[serde(default = "IkeConfig::default_esp_proposals")]
    pub esp_proposals: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pfs: Option<String>,
    #[serde(default = "IkeConfig::default_ike_lifetime")]
    pub ike_lifetime: u32,
    #[serde(default = "IkeConfig::default_lifetime")]
    pub lifetime: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_kilobytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpd: Option<DpdConfig>,
}

impl fmt::Debug for IkeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the PSK.
        f.debug_struct("IkeConfig")
            .field("negotiation", &self.negotiation)
            .field("ike_proposals", &self.ike_proposals)
            .field("esp_proposals", &self.esp_proposals)
            .finish_non_exhaustive()
    }
}

/// Who starts the negotiation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Negotiation {
    #[default]
    Active,
    Passive,
    /// vpngw initiates when the first packet is routed into the tunnel.
    OnTraffic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdConfig {
    /// Seconds of silence before a liveness check, 1 to 3,600.
    pub interval: u32,
    /// Seconds a check may go unanswered, at least the interval, at most
    /// 86,400.
    pub timeout: u32,
    #[serde(default)]
    pub action: DpdActionConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DpdActionConfig {
    Clear,
    #[default]
    Restart,
}

impl IkeConfig {
    pub const IKE_LIFETIME: std::ops::RangeInclusive<u32> = 60..=604_800;
    pub const LIFETIME: std::ops::RangeInclusive<u32> = 180..=604_800;

    fn default_ike_proposals() -> Vec<String> {
        ["aes256gcm16-prfsha256-x25519", "aes128gcm16-prfsha256-ecp256", "aes256-sha256-modp2048"]
            .map(String::from)
            .to_vec()
    }
    fn default_esp_proposals() -> Vec<String> {
        ["aes256gcm16", "aes128gcm16", "aes128-sha256"].map(String::from).to_vec()
    }
    fn default_ike_lifetime() -> u32 {
        86_400
    }
    fn default_lifetime() -> u32 {
        3_600
    }

    /// A configuration with the defaults.
    pub fn new(psk: &str) -> IkeConfig {
        IkeConfig {
            negotiation: Negotiation::Active,
            psk: psk.to_string(),
            local_id: None,
            remote_id: None,
            ike_proposals: Self::default_ike_proposals(),
            esp_proposals: Self::default_esp_proposals(),
            pfs: None,
            ike_lifetime: Self::default_ike_lifetime(),
            lifetime: Self::default_lifetime(),
            lifetime_kilobytes: None,
            dpd: None,
        }
    }

    /// Whether vpngw negotiates again once the tunnel is down.
    pub fn restarts(&self) -> bool {
        self.negotiation == Negotiation::Active || self.dpd.is_some_and(|d| d.action == DpdActionConfig::Restart)
    }
}

/// What a tunnel between `local` and `remote` carries, as traffic
/// selectors: its PROTECT rules' ranges (`rules`: local range, remote
/// range, protocol, local ports, remote ports), or everything for a
/// route-based tunnel (no rules).
pub type Mapping = (AddrRange, AddrRange, u8, PortRange, PortRange);

/// The IKE settings of tunnel `t` (which has an `ike` section), between
/// our `local` address and the customer gateway's `remote`.
pub fn settings(t: &Tunnel, local: IpAddr, remote: IpAddr, rules: &[Mapping]) -> Result<Settings, ConfigError> {
    let object = format!("tunnel {}", t.name);
    let ike = t.ike.as_ref().ok_or_else(|| invalid(&object, "ike", "(none)", "the tunnel has static SAs"))?;
    if ike.psk.len() < 8 {
        return Err(invalid(&object, "ike.psk", "(secret)", "a pre-shared key has at least 8 characters"));
    }
    let id = |field: &'static str, given: &Option<String>, default: IpAddr| {
        let text = given.clone().unwrap_or_else(|| default.to_string());
        let ok = text.parse::<IpAddr>().is_ok()
            || (!text.is_empty()
                && text.len() <= 253
                && text.chars().all(|c| c.is_ascii_alphanumeric() || "-.@_".contains(c)));
        if !ok {
            return Err(invalid(&object, field, &text, "an identity is an IP address or a domain name"));
        }
        Ok(identity(&text))
    };
    let local_id = id("ike.local_id", &ike.local_id, local)?;
    let remote_id = id("ike.remote_id", &ike.remote_id, remote)?;
    if ike.ike_proposals.is_empty() || ike.esp_proposals.is_empty() {
        return Err(invalid(&object, "ike", "[]", "ike_proposals and esp_proposals need at least one proposal each"));
    }
    let ike_proposals = ike
        .ike_proposals
        .iter()
        .map(|p| IkeProposal::parse(p).map_err(|e| invalid(&object, "ike.ike_proposals", p, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut esp = Vec::new();
    for p in &ike.esp_proposals {
        let mut e = EspProposal::parse(p).map_err(|e| invalid(&object, "ike.esp_proposals", p, e))?;
        if let (None, Some(group)) = (e.pfs, &ike.pfs) {
            let with = format!("{p}-{group}");
            e = EspProposal::parse(&with).map_err(|e| invalid(&object, "ike.pfs", group, e))?;
        }
        esp.push(e);
    }
    let range = |field: &'static str, v: u32, r: std::ops::RangeInclusive<u32>| {
        if r.contains(&v) {
            Ok(Duration::from_secs(v.into()))
        } else {
            Err(invalid(&object, field, v, format!("is not between {} and {} seconds", r.start(), r.end())))
        }
    };
    let ike_lifetime = range("ike.ike_lifetime", ike.ike_lifetime, IkeConfig::IKE_LIFETIME)?;
    let child_lifetime = range("ike.lifetime", ike.lifetime, IkeConfig::LIFETIME)?;
    if let Some(kb) = ike.lifetime_kilobytes {
        if !(1024..=i64::MAX as u64 / 1024).contains(&kb) {
            return Err(invalid(&object, "ike.lifetime_kilobytes", kb, "is not between 1024 and 2^53 kilobytes"));
        }
    }
    let dpd = match ike.dpd {
        None => None,
        Some(d) => {
            if !(1..=3600).contains(&d.interval) {
                return Err(invalid(&object, "ike.dpd.interval", d.interval, "is not between 1 and 3600 seconds"));
            }
            if d.timeout < d.interval || d.timeout > 86_400 {
                return Err(invalid(
                    &object,
                    "ike.dpd.timeout",
                    d.timeout,
                    "is at least the interval and at most 86400 seconds",
                ));
            }
            let action = match d.action {
                DpdActionConfig::Clear => DpdAction::Clear,
                DpdActionConfig::Restart => DpdAction::Restart,
            };
            Some(Dpd {
                interval: Duration::from_secs(d.interval.into()),
                timeout: Duration::from_secs(d.timeout.into()),
                action,
            })
        }
    };
    let selector = |r: &AddrRange, proto: u8, ports: &PortRange| TrafficSelector {
        protocol: proto,
        start_port: ports.first,
        end_port: ports.last,
        start: r.first,
        end: r.last,
    };
    let (local_ts, remote_ts) = if rules.is_empty() {
        let all = |family: AddrRange| selector(&family, 0, &PortRange::ANY);
        let v4 = AddrRange::prefix("0.0.0.0".parse().expect("an address"), 0);
        let v6 = AddrRange::prefix("::".parse().expect("an address"), 0);
        (vec![all(v4), all(v6)], vec![all(v4), all(v6)])
    } else {
        let mut l: Vec<TrafficSelector> = Vec::new();
        let mut r: Vec<TrafficSelector> = Vec::new();
        for (lr, rr, proto, lp, rp) in rules {
            let (a, b) = (selector(lr, *proto, lp), selector(rr, *proto, rp));
            if !l.contains(&a) {
                l.push(a);
            }
            if !r.contains(&b) {
                r.push(b);
            }
        }
        (l, r)
    };
    Ok(Settings {
        local,
        remote,
        psk: zeroize::Zeroizing::new(ike.psk.as_bytes().to_vec()),
        local_id,
        remote_id,
        ike: ike_proposals,
        esp,
        local_ts,
        remote_ts,
        dpd,
        child_lifetime,
        ike_lifetime,
    })
}
