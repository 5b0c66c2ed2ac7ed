//! The data plane's model of the product: gateways, customer gateways,
//! tunnels, SPD rules and routes, as the control plane hands them to
//! [`crate::snapshot::Snapshot::build`]. Plain data: checked when a
//! snapshot is built, never read on the hot path.

use crate::sa::{InboundSa, OutboundSa};
use crate::wire::ether::MacAddr;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub type PortId = u16;
pub type GatewayId = u32;
pub type CustomerGatewayId = u32;
pub type TunnelId = u32;

/// An SA shared by every snapshot that refers to it, so its sequence
/// number, replay window and counters survive rebuilds. The mutex is the
/// safety net for the one-owner rule: its owning worker takes it once per
/// burst, uncontended.
pub type SaHandle<T> = Arc<Mutex<T>>;

/// The most inbound SAs a tunnel holds at once: the current one and the
/// ones a rekey is replacing, so no packet in flight is dropped.
pub const MAX_INBOUND_SAS: usize = 4;

/// An interface the engine sends and receives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub id: PortId,
    pub mac: MacAddr,
    /// IP MTU of the link.
    pub mtu: u16,
    /// The gateway's own addresses on this link (the source of the ICMP
    /// errors it sends there).
    pub addrs: Vec<IpAddr>,
    /// The router everything off-link is sent to; `None`: every
    /// destination is on-link.
    pub router: Option<IpAddr>,
    /// Next-hop MAC addresses (later kept current from the kernel's
    /// neighbour table).
    pub neighbours: Vec<(IpAddr, MacAddr)>,
}

/// What is behind a gateway's inside port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// A VPC.
    Vpc,
    /// A cloud-connect network; `associated: false` means the gateway has
    /// no network behind it (IDCs reach only each other).
    CloudConnect { associated: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub id: GatewayId,
    pub name: String,
    pub attachment: Attachment,
    /// The port ESP arrives on and leaves by.
    pub outside_port: PortId,
    /// The gateway's public addresses (tunnel endpoints).
    pub outside_addrs: Vec<IpAddr>,
    /// The port towards the VPC or cloud-connect network, if attached.
    pub inside_port: Option<PortId>,
    /// The bandwidth limit, bits per second, each way (none: unlimited).
    pub bandwidth_bps: Option<u64>,
}

/// The IPsec device in an IDC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerGateway {
    pub id: CustomerGatewayId,
    pub name: String,
    pub addr: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Tunnel {
    pub id: TunnelId,
    pub name: String,
    pub gateway: GatewayId,
    pub customer_gateway: CustomerGatewayId,
    /// None until one is negotiated (IKE): the tunnel carries nothing.
    pub outbound: Option<SaHandle<OutboundSa>>,
    /// Up to [`MAX_INBOUND_SAS`].
    pub inbound: Vec<SaHandle<InboundSa>>,
    /// Down: no route through it is used, no packet is sent into it.
    pub up: bool,
    /// Negotiated on first traffic (IKE): while it has no outbound SA it
    /// keeps its routes and rules, and a packet into it asks the control
    /// thread to negotiate (the packet is dropped: "tunnel-down").
    pub on_demand: bool,
    /// Clamp the MSS of TCP SYNs entering the tunnel to this value.
    pub mss_clamp: Option<u16>,
    /// The tunnel's health-check addresses, if it has a health check.
    pub probe: Option<Probe>,
}

/// A tunnel's health-check addresses: echo requests addressed to `local`
/// that come out of the tunnel are answered into it, and replies to
/// `local` are the probes' answers (the control thread sends the probes,
/// from `local` to `remote`, and judges them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub local: IpAddr,
    pub remote: IpAddr,
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl AddrRange {
    /// The addresses of `addr/len`.
    pub fn prefix(addr: IpAddr, len: u8) -> Self {
        let (bits, width) = key(addr);
        let host = if len >= width { 0 } else { u128::MAX >> (128 - (width - len) as u32) };
        let net = bits & !host;
        Self { first: from_key(net, addr), last: from_key(net | host, addr) }
    }

    /// Every address of `addr`'s family.
    pub fn any(addr: IpAddr) -> Self {
        Self::prefix(addr, 0)
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.first.is_ipv4() && key(self.first).0 <= key(a).0 && key(a).0 <= key(self.last).0
    }
}

/// An address as a number, and its family's width in bits.
fn key(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(v) => (u32::from(v) as u128, 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

fn from_key(k: u128, family: IpAddr) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4((k as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(k.into()),
    }
}

/// An inclusive range of ports; `0..=65535` is any port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange { first: 0, last: u16::MAX };

    pub fn contains(&self, p: u16) -> bool {
        self.first <= p && p <= self.last
    }
}

/// What an SPD rule does with the traffic it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpdAction {
    /// Encrypt into this tunnel.
    Protect(TunnelId),
    /// Leave it to the route table.
    Bypass,
    /// Drop it.
    Discard,
}

/// A security policy rule: the traffic it matches, in the direction from
/// the gateway's inside to the tunnel (local = `src`, remote = `dst`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdRule {
    pub gateway: GatewayId,
    /// Lower wins; among equal priorities the earlier rule wins.
    pub priority: u32,
    pub src: AddrRange,
    pub dst: AddrRange,
    /// IP protocol, or `None` for any.
    pub protocol: Option<u8>,
    pub src_ports: PortRange,
    pub dst_ports: PortRange,
    pub action: SpdAction,
}

/// Where a route sends its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    Tunnel(TunnelId),
    /// The VPC behind a VPC gateway.
    Inside,
    /// The cloud-connect network behind an associated cloud-connect gateway.
    CloudConnect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub gateway: GatewayId,
    pub prefix: IpAddr,
    pub len: u8,
    pub next_hop: NextHop,
    /// Lower wins among routes to the same prefix.
    pub priority: u32,
    pub enabled: bool,
}

/// Everything a snapshot is built from.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub ports: Vec<Port>,
    pub gateways: Vec<Gateway>,
    pub customer_gateways: Vec<CustomerGateway>,
    pub tunnels: Vec<Tunnel>,
    pub spd: Vec<SpdRule>,
    pub routes: Vec<Route>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_from_prefixes() {
        let r = AddrRange::prefix(ip("172.16.1.77"), 24);
        assert_eq!((r.first, r.last), (ip("172.16.1.0"), ip("172.16.1.255")));
        assert!(r.contains(ip("172.16.1.9")) && !r.contains(ip("172.16.2.9")) && !r.contains(ip("::1")));
        let all = AddrRange::any(ip("10.0.0.0"));
        assert_eq!((all.first, all.last), (ip("0.0.0.0"), ip("255.255.255.255")));
        let h = AddrRange::prefix(ip("2001:db8::5"), 128);
        assert_eq!((h.first, h.last), (ip("2001:db8::5"), ip("2001:db8::5")));
        let v6 = AddrRange::prefix(ip("fd00:16:1::9"), 48);
        assert_eq!(v6.last, ip("fd00:16:1:ffff:ffff:ffff:ffff:ffff"));
        assert!(!all.contains(ip("fd00:16:1::9")), "families never mix");
    }
}
