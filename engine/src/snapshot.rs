//! The immutable view the workers read: ports, gateways with their SPD and
//! route tables, tunnels, and the inbound SAs by SPI. The control thread
//! builds one from a [`Config`] (checking every reference) and publishes
//! it; a worker loads the current one once per burst and never blocks.
//!
//! Route priority and tunnel state are resolved here: for each prefix the
//! FIB holds the best enabled route whose tunnel is up, so a tunnel going
//! down (a new snapshot) moves its traffic to the next route at once, and
//! a prefix with no usable route falls back to a shorter one.

use crate::crypto::Suite;
use crate::fib::{FibError, Ipv4Fib, Ipv6Fib, NO_ROUTE};
use crate::model::{
    Attachment, Config, GatewayId, NextHop, PortId, Probe, Route, SaHandle, SpdAction, TunnelId, MAX_INBOUND_SAS,
};
use crate::policer::{self, Policer};
use crate::sa::{InboundSa, OutboundSa};
use crate::spd::{Selectors, Spd};
use crate::wire::ether::MacAddr;
use arc_swap::{ArcSwap, Guard};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// A port as the pipeline needs it.
#[derive(Debug)]
pub struct PortView {
    pub id: PortId,
    pub mac: MacAddr,
    pub mtu: u16,
    pub addrs: Vec<IpAddr>,
    pub router: Option<IpAddr>,
    pub neighbours: HashMap<IpAddr, MacAddr>,
    /// The gateway this port belongs to, and whether it is its outside.
    pub role: Option<(usize, Side)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Inside,
    Outside,
}

impl PortView {
    /// This port's address of `family`'s family, if it has one.
    pub fn addr_like(&self, family: IpAddr) -> Option<IpAddr> {
        self.addrs.iter().copied().find(|a| a.is_ipv4() == family.is_ipv4())
    }

    /// The MAC to send a packet for `dst` to: the router's, or `dst`'s own.
    pub fn next_hop_mac(&self, dst: IpAddr) -> Option<MacAddr> {
        self.neighbours.get(&self.next_hop(dst)).copied()
    }

    /// The neighbour a packet to `dst` goes to: the router, if the port
    /// has one, else `dst` itself.
    pub fn next_hop(&self, dst: IpAddr) -> IpAddr {
        self.router.unwrap_or(dst)
    }
}

/// Where the route table sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Out of the inside port (the VPC, or the cloud-connect network).
    Inside,
    /// Into the tunnel at this index of [`Snapshot::tunnels`].
    Tunnel(usize),
}

impl Hop {
    fn encode(self) -> u32 {
        match self {
            Hop::Inside => 0,
            Hop::Tunnel(i) => 1 + i as u32,
        }
    }

    fn decode(v: u32) -> Option<Hop> {
        match v {
            NO_ROUTE => None,
            0 => Some(Hop::Inside),
            i => Some(Hop::Tunnel(i as usize - 1)),
        }
    }
}

/// What an SPD rule does, with tunnels as indexes of [`Snapshot::tunnels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Protect(usize),
    Bypass,
    Discard,
}

/// A gateway's route tables: for each prefix, the hop of its best usable
/// route.
#[derive(Debug)]
pub struct RouteTable {
    v4: Ipv4Fib,
    v6: Ipv6Fib,
}

impl RouteTable {
    pub fn lookup(&self, dst: IpAddr) -> Option<Hop> {
        Hop::decode(match dst {
            IpAddr::V4(a) => self.v4.lookup(a),
            IpAddr::V6(a) => self.v6.lookup(a),
        })
    }

    /// [`Self::lookup`] of each of `dsts` into `hops`, in batches per
    /// family, so the lookups overlap their memory accesses.
    ///
    /// # Panics
    /// If `hops` is not as long as `dsts`.
    pub fn lookup_batch(&self, dsts: &[IpAddr], hops: &mut [Option<Hop>]) {
        assert_eq!(dsts.len(), hops.len(), "one hop per destination");
        const BATCH: usize = 64;
        let (mut v4, mut v6) = ([0u32; BATCH], [0u128; BATCH]);
        let (mut at4, mut at6) = ([0usize; BATCH], [0usize; BATCH]);
        let mut found = [0u32; BATCH];
        let (mut n4, mut n6) = (0, 0);
        for (i, dst) in dsts.iter().enumerate() {
            match dst {
                IpAddr::V4(a) => (v4[n4], at4[n4], n4) = (u32::from(*a), i, n4 + 1),
                IpAddr::V6(a) => (v6[n6], at6[n6], n6) = (u128::from(*a), i, n6 + 1),
            }
            if n4 == BATCH || i + 1 == dsts.len() {
                self.v4.lookup_batch(&v4[..n4], &mut found[..n4]);
                for k in 0..n4 {
                    hops[at4[k]] = Hop::decode(found[k]);
                }
                n4 = 0;
            }
            if n6 == BATCH || i + 1 == dsts.len() {
                self.v6.lookup_batch(&v6[..n6], &mut found[..n6]);
                for k in 0..n6 {
                    hops[at6[k]] = Hop::decode(found[k]);
                }
                n6 = 0;
            }
        }
    }
}

#[derive(Debug)]
pub struct GatewayView {
    pub id: GatewayId,
    pub name: String,
    pub attachment: Attachment,
    pub outside_port: usize,
    pub outside_addrs: Vec<IpAddr>,
    pub inside_port: Option<usize>,
    pub spd: Spd<Verdict>,
    pub routes: RouteTable,
    /// The bandwidth limit's policers, if the gateway has one. Made anew
    /// with each snapshot: a rebuild lets at most one more burst through.
    pub bandwidth: Option<Bandwidth>,
}

/// A gateway's bandwidth limit, one policer per direction: into its
/// tunnels (outbound), and out of them (inbound). Inner packets are
/// counted, as the tunnels' traffic counters count them.
#[derive(Debug)]
pub struct Bandwidth {
    pub outbound: Policer,
    pub inbound: Policer,
}

impl Bandwidth {
    pub fn new(rate_bps: u64) -> Self {
        let burst = policer::default_burst(rate_bps);
        Self { outbound: Policer::new(rate_bps, burst), inbound: Policer::new(rate_bps, burst) }
    }
}

/// Two whole cache lines (a tunnel is read per packet, and prefetched).
#[derive(Debug)]
#[repr(align(64))]
pub struct TunnelView {
    pub id: TunnelId,
    pub name: String,
    pub gateway: usize,
    /// The customer gateway's address: where ESP is sent.
    pub peer: IpAddr,
    /// None until one is negotiated; the tunnel is down meanwhile.
    pub outbound: Option<SaHandle<OutboundSa>>,
    /// Its suite, so a burst can prefetch the SA's keys without reading it.
    pub outbound_suite: Option<Suite>,
    /// The operator has it up, its health check (if any) passes, and it
    /// has an outbound SA (or is negotiated on demand).
    pub up: bool,
    /// The reverse of the SPD rules that protect via this tunnel, which
    /// packets decrypted from it must fit; none for a route-based tunnel.
    pub selectors: Selectors,
    pub mss_clamp: Option<u16>,
    /// The largest inner packet whose encapsulation fits the outside MTU.
    pub max_inner: usize,
    pub probe: Option<Probe>,
}

/// An inbound SA and the tunnel it belongs to.
#[derive(Debug, Clone)]
pub struct InboundRef {
    pub tunnel: usize,
    pub sa: SaHandle<InboundSa>,
    pub suite: Suite,
}

/// One published, immutable view of the configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub ports: Vec<PortView>,
    port_index: HashMap<PortId, usize>,
    pub gateways: Vec<GatewayView>,
    pub tunnels: Vec<TunnelView>,
    tunnel_index: FxHashMap<TunnelId, usize>,
    pub inbound: InboundSas,
}

/// The inbound SAs by SPI: an open-addressing table of (SPI, index)
/// pairs, eight to a cache line and at most half full, so a burst can
/// prefetch each packet's slot before it looks the SPI up (a `HashMap`
/// gives no address to prefetch). SPI 0 is never an SA's (RFC 4303), so
/// it marks an empty slot.
#[derive(Debug, Default)]
pub struct InboundSas {
    slots: Box<[(u32, u32)]>,
    refs: Vec<InboundRef>,
}

impl InboundSas {
    /// A table for up to `n` SAs.
    fn with_capacity(n: usize) -> Self {
        let slots = vec![(0, 0); (2 * n).next_power_of_two().max(8)].into_boxed_slice();
        Self { slots, refs: Vec::with_capacity(n) }
    }

    fn home(&self, spi: u32) -> usize {
        // Fibonacci hashing: SPIs chosen by people (0x1001, 0x1002, ...)
        // spread as well as random ones.
        ((u64::from(spi).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize) & (self.slots.len() - 1)
    }

    /// Adds `r` under `spi`; false if the SPI is taken (or 0, or full).
    fn insert(&mut self, spi: u32, r: InboundRef) -> bool {
        if spi == 0 || 2 * (self.refs.len() + 1) > self.slots.len() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(spi);
        while self.slots[i].0 != 0 {
            if self.slots[i].0 == spi {
                return false;
            }
            i = (i + 1) & mask;
        }
        self.slots[i] = (spi, self.refs.len() as u32);
        self.refs.push(r);
        true
    }

    pub fn get(&self, spi: u32) -> Option<&InboundRef> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = self.home(spi);
        loop {
            match self.slots[i] {
                (0, _) => return None,
                (s, at) if s == spi => return Some(&self.refs[at as usize]),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Starts loading the slot where `spi` is looked for first.
    #[inline]
    pub fn prefetch(&self, spi: u32) {
        if !self.slots.is_empty() {
            crate::prefetch::value(&self.slots[self.home(spi)]);
        }
    }

    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }
}

/// A configuration that cannot become a snapshot. Each message names the
/// object, the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("{object}: {field} {value:?} {problem}")]
    Invalid { object: String, field: &'static str, value: String, problem: &'static str },
    #[error("gateway {gateway}: {source}")]
    Fib { gateway: String, source: FibError },
}

fn invalid(
    object: impl Into<String>,
    field: &'static str,
    value: impl ToString,
    problem: &'static str,
) -> SnapshotError {
    SnapshotError::Invalid { object: object.into(), field, value: value.to_string(), problem }
}

impl Snapshot {
    /// Checks `cfg` and builds the snapshot of generation `generation`.
    pub fn build(cfg: &Config, generation: u64) -> Result<Snapshot, SnapshotError> {
        let mut port_index = HashMap::new();
        let mut ports = Vec::new();
        for p in &cfg.ports {
            if port_index.insert(p.id, ports.len()).is_some() {
                return Err(invalid(format!("port {}", p.id), "id", p.id, "is used twice"));
            }
            ports.push(PortView {
                id: p.id,
                mac: p.mac,
                mtu: p.mtu,
                addrs: p.addrs.clone(),
                router: p.router,
                neighbours: p.neighbours.iter().copied().collect(),
                role: None,
            });
        }

        let mut gw_index = FxHashMap::default();
        for (i, g) in cfg.gateways.iter().enumerate() {
            let object = format!("gateway {}", g.name);
            if gw_index.insert(g.id, i).is_some() {
                return Err(invalid(object, "id", g.id, "is used twice"));
            }
            if g.outside_addrs.is_empty() {
                return Err(invalid(object, "outside_addrs", "[]", "is empty: a gateway needs a public address"));
            }
            let has_inside = !matches!(g.attachment, Attachment::CloudConnect { associated: false });
            if has_inside != g.inside_port.is_some() {
                let problem =
                    if has_inside { "is missing for this attachment" } else { "is set, but nothing is attached" };
                return Err(invalid(object, "inside_port", format!("{:?}", g.inside_port), problem));
            }
            for (side, port) in [(Side::Outside, Some(g.outside_port)), (Side::Inside, g.inside_port)] {
                let Some(port) = port else { continue };
                let field = if side == Side::Outside { "outside_port" } else { "inside_port" };
                let &p = port_index.get(&port).ok_or_else(|| invalid(&object, field, port, "is not a port"))?;
                if ports[p].role.is_some() {
                    return Err(invalid(&object, field, port, "already belongs to a gateway"));
                }
                ports[p].role = Some((i, side));
            }
        }
        let cgw: HashMap<_, _> = cfg.customer_gateways.iter().map(|c| (c.id, c)).collect();

        let mut tunnel_index = FxHashMap::default();
        let mut tunnels = Vec::new();
        let mut inbound = InboundSas::with_capacity(cfg.tunnels.iter().map(|t| t.inbound.len()).sum());
        for t in &cfg.tunnels {
            let object = format!("tunnel {}", t.name);
            if tunnel_index.insert(t.id, tunnels.len()).is_some() {
                return Err(invalid(object, "id", t.id, "is used twice"));
            }
            let &g =
                gw_index.get(&t.gateway).ok_or_else(|| invalid(&object, "gateway", t.gateway, "is not a gateway"))?;
            let peer = cgw
                .get(&t.customer_gateway)
                .ok_or_else(|| invalid(&object, "customer_gateway", t.customer_gateway, "is not a customer gateway"))?
                .addr;
            let gateway = &cfg.gateways[g];
            let mut outbound_suite = None;
            let max_inner = if let Some(sa) = &t.outbound {
                let sa = sa.lock().expect("SA lock");
                outbound_suite = Some(sa.cfg.suite);
                if sa.cfg.remote != peer {
                    return Err(invalid(
                        &object,
                        "outbound SA remote",
                        sa.cfg.remote,
                        "is not the customer gateway's address",
                    ));
                }
                if !gateway.outside_addrs.contains(&sa.cfg.local) {
                    return Err(invalid(
                        &object,
                        "outbound SA local",
                        sa.cfg.local,
                        "is not an outside address of the gateway",
                    ));
                }
                let mtu = cfg.ports.iter().find(|p| p.id == gateway.outside_port).map_or(0, |p| p.mtu);
                crate::esp::max_inner_len(&sa.cfg, mtu as usize)
            } else {
                // Nothing is sent without an SA: no size to refuse.
                usize::MAX
            };
            if let Some(p) = t.probe.filter(|p| p.local.is_ipv4() != p.remote.is_ipv4() || p.local == p.remote) {
                return Err(invalid(
                    &object,
                    "probe remote",
                    p.remote,
                    "is not another address of the local one's family",
                ));
            }
            if t.inbound.len() > MAX_INBOUND_SAS {
                return Err(invalid(&object, "inbound", t.inbound.len(), "exceeds 4 SAs"));
            }
            for sa in &t.inbound {
                let (spi, suite) = {
                    let sa = sa.lock().expect("SA lock");
                    (sa.cfg.spi, sa.cfg.suite)
                };
                let r = InboundRef { tunnel: tunnels.len(), sa: sa.clone(), suite };
                if !inbound.insert(spi, r) {
                    return Err(invalid(&object, "inbound SA spi", format!("{spi:#x}"), "is already in use"));
                }
            }
            tunnels.push(TunnelView {
                id: t.id,
                name: t.name.clone(),
                gateway: g,
                peer,
                outbound: t.outbound.clone(),
                outbound_suite,
                up: t.up && (t.outbound.is_some() || t.on_demand),
                selectors: Selectors::default(),
                mss_clamp: t.mss_clamp,
                max_inner,
                probe: t.probe,
            });
        }

        let mut spd_rules: Vec<Vec<_>> = vec![Vec::new(); cfg.gateways.len()];
        for (n, r) in cfg.spd.iter().enumerate() {
            let object = format!("spd rule {n}");
            let &g =
                gw_index.get(&r.gateway).ok_or_else(|| invalid(&object, "gateway", r.gateway, "is not a gateway"))?;
            if r.src.first.is_ipv4() != r.dst.first.is_ipv4() {
                return Err(invalid(object, "dst", r.dst.first, "is not of the source's address family"));
            }
            let verdict = match r.action {
                SpdAction::Protect(t) => {
                    let &ti = tunnel_index.get(&t).ok_or_else(|| invalid(&object, "tunnel", t, "is not a tunnel"))?;
                    if tunnels[ti].gateway != g {
                        return Err(invalid(object, "tunnel", t, "belongs to another gateway"));
                    }
                    Verdict::Protect(ti)
                }
                SpdAction::Bypass => Verdict::Bypass,
                SpdAction::Discard => Verdict::Discard,
            };
            spd_rules[g].push((r.clone(), verdict));
        }

        let mut routes: Vec<Vec<&Route>> = vec![Vec::new(); cfg.gateways.len()];
        for r in &cfg.routes {
            // Named only when refused: a million routes, a million strings.
            let object = || format!("route {}/{}", r.prefix, r.len);
            if r.len > if r.prefix.is_ipv4() { 32 } else { 128 } {
                return Err(invalid(object(), "prefix length", r.len, "is too long for the address family"));
            }
            let &g =
                gw_index.get(&r.gateway).ok_or_else(|| invalid(object(), "gateway", r.gateway, "is not a gateway"))?;
            match (r.next_hop, cfg.gateways[g].attachment) {
                (NextHop::Tunnel(t), _) => {
                    let &ti =
                        tunnel_index.get(&t).ok_or_else(|| invalid(object(), "via tunnel", t, "is not a tunnel"))?;
                    if tunnels[ti].gateway != g {
                        return Err(invalid(object(), "via tunnel", t, "belongs to another gateway"));
                    }
                }
                (NextHop::Inside, Attachment::Vpc)
                | (NextHop::CloudConnect, Attachment::CloudConnect { associated: true }) => {}
                (hop, _) => {
                    return Err(invalid(object(), "via", format!("{hop:?}"), "is not attached to this gateway"))
                }
            }
            routes[g].push(r);
        }

        let mut gateways = Vec::new();
        for (g, gw) in cfg.gateways.iter().enumerate() {
            let table = route_table(&routes[g], &tunnel_index, &tunnels)
                .map_err(|source| SnapshotError::Fib { gateway: gw.name.clone(), source })?;
            gateways.push(GatewayView {
                id: gw.id,
                name: gw.name.clone(),
                attachment: gw.attachment,
                outside_port: port_index[&gw.outside_port],
                outside_addrs: gw.outside_addrs.clone(),
                inside_port: gw.inside_port.map(|p| port_index[&p]),
                spd: Spd::new(std::mem::take(&mut spd_rules[g])),
                routes: table,
                bandwidth: match gw.bandwidth_bps {
                    Some(0) => return Err(invalid(format!("gateway {}", gw.name), "bandwidth", 0, "is not a limit")),
                    rate => rate.map(Bandwidth::new),
                },
            });
        }
        for (t, tunnel) in tunnels.iter_mut().enumerate() {
            tunnel.selectors = gateways[tunnel.gateway].spd.selectors(Verdict::Protect(t));
        }
        let tunnel_index = tunnel_index.into_iter().collect();
        Ok(Snapshot { generation, ports, port_index, gateways, tunnels, tunnel_index, inbound })
    }

    /// The index of tunnel `id` in [`Self::tunnels`].
    pub fn tunnel(&self, id: TunnelId) -> Option<usize> {
        self.tunnel_index.get(&id).copied()
    }

    /// The index of port `id` in [`Self::ports`].
    pub fn port(&self, id: PortId) -> Option<usize> {
        self.port_index.get(&id).copied()
    }
}

/// For each prefix, the best enabled route whose next hop is usable:
/// lowest priority value first, then the earliest configured.
fn route_table(
    routes: &[&Route],
    tunnel_index: &FxHashMap<TunnelId, usize>,
    tunnels: &[TunnelView],
) -> Result<RouteTable, FibError> {
    // Each prefix's place in `chosen`, which keeps the configured order.
    let mut at: FxHashMap<(IpAddr, u8), usize> = FxHashMap::default();
    at.reserve(routes.len());
    let mut chosen: Vec<((IpAddr, u8), u32, Hop)> = Vec::new();
    for r in routes.iter().filter(|r| r.enabled) {
        let hop = match r.next_hop {
            NextHop::Tunnel(t) => {
                let ti = tunnel_index[&t];
                if !tunnels[ti].up {
                    continue;
                }
                Hop::Tunnel(ti)
            }
            NextHop::Inside | NextHop::CloudConnect => Hop::Inside,
        };
        let key = (crate::model::AddrRange::prefix(r.prefix, r.len).first, r.len);
        match at.entry(key) {
            Entry::Occupied(e) => {
                let c = &mut chosen[*e.get()];
                if r.priority < c.1 {
                    (c.1, c.2) = (r.priority, hop);
                }
            }
            Entry::Vacant(e) => {
                e.insert(chosen.len());
                chosen.push((key, r.priority, hop));
            }
        }
    }
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for ((addr, len), _, hop) in chosen {
        match addr {
            IpAddr::V4(a) => v4.push((a, len, hop.encode())),
            IpAddr::V6(a) => v6.push((a, len, hop.encode())),
        }
    }
    Ok(RouteTable { v4: Ipv4Fib::build(&v4)?, v6: Ipv6Fib::build(&v6)? })
}

/// Where the current snapshot is published (RCU style, with `arc-swap`):
/// the control thread swaps in a new one; a worker's `load` is wait-free
/// and keeps its snapshot alive until the burst is done.
pub struct SnapshotCell(ArcSwap<Snapshot>);

impl SnapshotCell {
    pub fn new(first: Snapshot) -> Self {
        Self(ArcSwap::from_pointee(first))
    }

    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.0.load()
    }

    pub fn publish(&self, next: Snapshot) {
        self.0.store(Arc::new(next));
    }
}

#[cfg(test)]
mod inbound_sas_tests {
    use super::*;
    use crate::sa::{Direction, InboundSa, SaConfig};

    #[test]
    fn finds_every_spi_and_refuses_zero_and_duplicates() {
        let sa = |spi| {
            let cfg = SaConfig::new(
                spi,
                Direction::Inbound,
                Suite::AesGcm128,
                "192.0.2.1".parse().unwrap(),
                "198.51.100.1".parse().unwrap(),
            );
            std::sync::Arc::new(std::sync::Mutex::new(InboundSa::new(cfg, &[7; 20], 0).unwrap()))
        };
        let r = |t| InboundRef { tunnel: t, sa: sa(0x1000 + t as u32), suite: Suite::AesGcm128 };
        // Sequential SPIs, as people configure them, and a few in a row
        // that share a home slot's neighbourhood.
        let spis: Vec<u32> = (0..1000).map(|i| 0x1000 + i).chain([0xffff_ffff, 0x8000_0000, 256]).collect();
        let mut table = InboundSas::with_capacity(spis.len());
        for (t, &spi) in spis.iter().enumerate() {
            assert!(table.insert(spi, r(t)), "{spi:#x}");
        }
        assert!(!table.insert(0x1005, r(0)), "a duplicate is refused");
        assert!(!table.insert(0, r(0)), "SPI 0 is never an SA's");
        assert_eq!(table.len(), spis.len());
        for (t, &spi) in spis.iter().enumerate() {
            table.prefetch(spi);
            assert_eq!(table.get(spi).map(|r| r.tunnel), Some(t), "{spi:#x}");
        }
        for absent in [0, 1, 0x2000, 0x7fff_ffff] {
            table.prefetch(absent);
            assert!(table.get(absent).is_none(), "{absent:#x}");
        }
        let empty = InboundSas::default();
        empty.prefetch(5);
        assert!(empty.get(5).is_none() && empty.is_empty());
    }
}
