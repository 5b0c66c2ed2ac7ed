//! The product's six scenarios (`../shared/docs/SCENARIOS.md`) over memory
//! ports: real frames into the pipeline, and the exact frames that come out
//! (ESP decrypted by the customer gateway's own SAs), or the drop reason.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use vpngw_engine::model::*;
use vpngw_engine::pipeline::{Out, Pipeline};
use vpngw_engine::snapshot::Snapshot;
use vpngw_engine::wire::ether::{ethertype_for_ip, EthernetFrame, MacAddr};
use vpngw_engine::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use vpngw_engine::wire::ipv6::Ipv6Repr;
use vpngw_engine::{esp, DropReason, InboundSa, OutboundSa, PacketBuf, SaConfig, Suite};
use vpngw_engine::{sa::Direction, wire::ether};

const INSIDE: PortId = 1;
const OUTSIDE: PortId = 2;
const GW: GatewayId = 1;
const GW_ADDR: &str = "192.0.2.1";
const ROUTER: &str = "192.0.2.254";
const GW_INSIDE: &str = "10.1.0.1";
const GW_INSIDE_MAC: MacAddr = [2, 0, 0, 0, 1, 1];
const GW_OUTSIDE_MAC: MacAddr = [2, 0, 0, 0, 2, 1];
const ROUTER_MAC: MacAddr = [2, 0, 0, 0, 2, 0xfe];

const VPC: &str = "10.1.0.5";
const VPC_B: &str = "10.2.0.5";
const IDC1: &str = "172.16.1.9";
const IDC2: &str = "172.16.2.9";
const IDC3: &str = "172.16.3.9";
const INTERNET: &str = "203.0.113.7";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn host_mac(a: &str) -> MacAddr {
    let o = match ip(a) {
        IpAddr::V4(v) => v.octets(),
        IpAddr::V6(v) => v.octets()[12..].try_into().unwrap(),
    };
    [2, 1, o[0], o[1], o[2], o[3]]
}

const VPC6: &str = "fd00:1::5";
const IDC1_6: &str = "fd00:16:1::9";
const IDC2_6: &str = "fd00:16:2::9";

/// The customer gateway's side of a tunnel: it encrypts what its IDC sends
/// and decrypts what the gateway sends it.
struct Peer {
    tunnel: TunnelId,
    addr: IpAddr,
    out: OutboundSa,
    inb: InboundSa,
}

/// Where a packet went.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Out of the inside port, to this MAC, with this IP packet.
    Inside(MacAddr, Vec<u8>),
    /// Into this tunnel; the IP packet the customer gateway decrypted.
    Tunnel(TunnelId, Vec<u8>),
    Dropped(DropReason),
}

struct Lab {
    cfg: Config,
    peers: Vec<Peer>,
    pipeline: Pipeline,
    snap: Arc<Snapshot>,
    generation: u64,
}

impl Lab {
    fn new(attachment: Attachment) -> Self {
        let inside = !matches!(attachment, Attachment::CloudConnect { associated: false });
        let mut cfg = Config::default();
        cfg.ports.push(Port {
            id: OUTSIDE,
            mac: GW_OUTSIDE_MAC,
            mtu: 1500,
            addrs: vec![ip(GW_ADDR)],
            router: Some(ip(ROUTER)),
            neighbours: vec![(ip(ROUTER), ROUTER_MAC)],
        });
        if inside {
            cfg.ports.push(Port {
                id: INSIDE,
                mac: GW_INSIDE_MAC,
                mtu: 1500,
                addrs: vec![ip(GW_INSIDE), ip("fd00:1::1")],
                router: None,
                neighbours: [VPC, VPC_B, VPC6].iter().map(|h| (ip(h), host_mac(h))).collect(),
            });
        }
        cfg.gateways.push(Gateway {
            id: GW,
            name: "gw1".into(),
            attachment,
            outside_port: OUTSIDE,
            outside_addrs: vec![ip(GW_ADDR)],
            inside_port: inside.then_some(INSIDE),
            bandwidth_bps: None,
        });
        let snap = Arc::new(Snapshot::build(&cfg, 0).unwrap());
        Lab { cfg, peers: Vec::new(), pipeline: Pipeline::default(), snap, generation: 0 }
    }

    fn rebuild(&mut self) {
        self.generation += 1;
        self.snap = Arc::new(Snapshot::build(&self.cfg, self.generation).unwrap());
    }

    /// A tunnel to a customer gateway at `peer`, with fresh SAs both ways.
    fn tunnel(&mut self, id: TunnelId, peer: &str) -> &mut Self {
        let (gw, cgw) = (ip(GW_ADDR), ip(peer));
        let key: Vec<u8> = (0..20).map(|i| i as u8 ^ id as u8).collect();
        let (spi_out, spi_in) = (0x1000 + id * 16, 0x1000 + id * 16 + 1);
        let sa = |spi, dir, local, remote| {
            let mut c = SaConfig::new(spi, dir, Suite::AesGcm128, local, remote);
            c.replay_window = 64;
            c
        };
        self.cfg.customer_gateways.push(CustomerGateway { id, name: format!("cgw{id}"), addr: cgw });
        self.cfg.tunnels.push(Tunnel {
            id,
            name: format!("t{id}"),
            gateway: GW,
            customer_gateway: id,
            outbound: Some(Arc::new(Mutex::new(
                OutboundSa::new(sa(spi_out, Direction::Outbound, gw, cgw), &key, 0).unwrap(),
            ))),
            inbound: vec![Arc::new(Mutex::new(
                InboundSa::new(sa(spi_in, Direction::Inbound, gw, cgw), &key, 0).unwrap(),
            ))],
            up: true,
            mss_clamp: None,
            probe: None,
            on_demand: false,
        });
        self.peers.push(Peer {
            tunnel: id,
            addr: cgw,
            out: OutboundSa::new(sa(spi_in, Direction::Outbound, cgw, gw), &key, 0).unwrap(),
            inb: InboundSa::new(sa(spi_out, Direction::Inbound, cgw, gw), &key, 0).unwrap(),
        });
        self.rebuild();
        self
    }

    fn route(&mut self, prefix: &str, next_hop: NextHop, priority: u32) -> &mut Self {
        let (a, l) = prefix.split_once('/').unwrap();
        let r = Route { gateway: GW, prefix: ip(a), len: l.parse().unwrap(), next_hop, priority, enabled: true };
        self.cfg.routes.push(r);
        self.rebuild();
        self
    }

    fn spd(&mut self, src: &str, dst: &str, action: SpdAction) -> &mut Self {
        let range = |p: &str| {
            let (a, l) = p.split_once('/').unwrap();
            AddrRange::prefix(ip(a), l.parse().unwrap())
        };
        self.cfg.spd.push(SpdRule {
            gateway: GW,
            priority: 100,
            src: range(src),
            dst: range(dst),
            protocol: None,
            src_ports: PortRange::ANY,
            dst_ports: PortRange::ANY,
            action,
        });
        self.rebuild();
        self
    }

    fn set_up(&mut self, tunnel: TunnelId, up: bool) {
        self.cfg.tunnels.iter_mut().find(|t| t.id == tunnel).unwrap().up = up;
        self.rebuild();
    }

    /// Runs `frames` (Ethernet source, destination, IP packet) through the
    /// pipeline as one burst received on `port`; returns the frames sent
    /// (port, bytes) and how many buffers came back as drops.
    fn burst(&mut self, port: PortId, frames: &[(MacAddr, MacAddr, Vec<u8>)]) -> (Vec<(PortId, Vec<u8>)>, usize) {
        let mut burst: Vec<_> = frames
            .iter()
            .map(|(l2_src, l2_dst, ip_packet)| {
                let mut frame = vec![0u8; 128];
                let mut eth = [0u8; 14];
                ether::emit_header(&mut eth, *l2_dst, *l2_src, ethertype_for_ip(ip_packet).unwrap());
                frame.extend_from_slice(&eth);
                frame.extend_from_slice(ip_packet);
                frame.resize(frame.len() + 64, 0);
                let len = frame.len() - 128 - 64;
                PacketBuf::new(frame, 128, len).unwrap()
            })
            .collect();
        let (mut tx, mut recycle) = (Vec::new(), Vec::new());
        let (mut alloc, mut hand_off) = (|| None, |_, h| Err(h));
        let mut out = Out { tx: &mut tx, recycle: &mut recycle, alloc: &mut alloc, hand_off: &mut hand_off };
        self.pipeline.process(&self.snap, port, &mut burst, 0, &mut out);
        assert!(burst.is_empty(), "the burst is drained");
        (tx.into_iter().map(|(port, f)| (port, f.data().to_vec())).collect(), recycle.len())
    }

    /// Runs one frame through the pipeline and reports where it went.
    fn run(&mut self, port: PortId, l2_src: MacAddr, l2_dst: MacAddr, ip_packet: &[u8]) -> Outcome {
        let before = self.pipeline.drops.clone();
        let (mut tx, recycled) = self.burst(port, &[(l2_src, l2_dst, ip_packet.to_vec())]);
        if let Some((port, frame)) = tx.pop() {
            assert!(tx.is_empty() && recycled == 0);
            let eth = EthernetFrame::new_checked(&frame).unwrap();
            let payload = eth.payload().to_vec();
            if port == INSIDE {
                assert_eq!(eth.src(), GW_INSIDE_MAC);
                return Outcome::Inside(eth.dst(), payload);
            }
            assert_eq!((port, eth.src(), eth.dst()), (OUTSIDE, GW_OUTSIDE_MAC, ROUTER_MAC), "via the router");
            let loc = esp::locate(&payload).unwrap();
            let peer = self.peers.iter_mut().find(|p| p.addr == loc.dst).expect("ESP to a customer gateway");
            let mut p = PacketBuf::<Vec<u8>>::with_room(&payload, 0, 0);
            esp::decap(&mut peer.inb, &mut p, &loc, 0, &mut Vec::new()).expect("the customer gateway decrypts it");
            return Outcome::Tunnel(peer.tunnel, p.data().to_vec());
        }
        assert_eq!(recycled, 1);
        let after = &self.pipeline.drops;
        let reason = DropReason::ALL.into_iter().find(|&r| after.get(r) > before.get(r)).expect("a counted drop");
        Outcome::Dropped(reason)
    }

    /// A host on the inside sends a packet.
    fn inside_sends(&mut self, src: &str, dst: &str) -> Outcome {
        self.run(INSIDE, host_mac(src), GW_INSIDE_MAC, &udp_any(src, dst, 64))
    }

    /// A host in the IDC behind tunnel `tunnel` sends a packet.
    fn idc_sends(&mut self, tunnel: TunnelId, src: &str, dst: &str) -> Outcome {
        let esp_packet = self.sealed_by_idc(tunnel, &udp_any(src, dst, 64));
        self.run(OUTSIDE, ROUTER_MAC, GW_OUTSIDE_MAC, &esp_packet)
    }

    /// The ESP packet tunnel `tunnel`'s customer gateway makes of `inner`.
    fn sealed_by_idc(&mut self, tunnel: TunnelId, inner: &[u8]) -> Vec<u8> {
        let peer = self.peers.iter_mut().find(|p| p.tunnel == tunnel).unwrap();
        let mut p = PacketBuf::<Vec<u8>>::with_room(inner, esp::MAX_HEADROOM, esp::MAX_TAILROOM);
        esp::encap(&mut peer.out, &mut p, 0, &mut Vec::new()).unwrap();
        p.data().to_vec()
    }
}

/// A UDP packet from `src` to `dst` with TTL `ttl`.
fn udp(src: &str, dst: &str, ttl: u8) -> Vec<u8> {
    udp_sized(src, dst, ttl, 40, true)
}

/// A UDP packet of `len` bytes, DF set or not.
fn udp_sized(src: &str, dst: &str, ttl: u8, len: usize, dont_frag: bool) -> Vec<u8> {
    let mut p = vec![0x5a; len];
    let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else { unreachable!() };
    let payload_len = len - 20;
    Ipv4Repr { src: s, dst: d, protocol: 17, payload_len, ttl, tos: 0, ident: 9, dont_frag }.emit(&mut p);
    p[20..28].copy_from_slice(&[0x13, 0x88, 0x13, 0x89, (payload_len >> 8) as u8, payload_len as u8, 0, 0]);
    p
}

/// A UDP packet from `src` to `dst` (either family) with TTL/hop limit 64.
fn udp_any(src: &str, dst: &str, ttl: u8) -> Vec<u8> {
    match (ip(src), ip(dst)) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0x5a; 40 + 20];
            let (next_header, payload_len, hop_limit, traffic_class, flow_label) = (17, 20, ttl, 0, 0);
            Ipv6Repr { src: s, dst: d, next_header, payload_len, hop_limit, traffic_class, flow_label }.emit(&mut p);
            p[40..48].copy_from_slice(&[0x13, 0x88, 0x13, 0x89, 0, 20, 0, 0]);
            p
        }
        _ => udp(src, dst, ttl),
    }
}

/// What a forwarded `udp_any(src, dst, 64)` must look like: TTL or hop
/// limit one less.
fn forwarded(src: &str, dst: &str) -> Vec<u8> {
    let mut p = udp_any(src, dst, 64);
    if p[0] >> 4 == 4 {
        Ipv4Packet::new_unchecked(&mut p[..]).decrement_ttl();
    } else {
        p[7] -= 1;
    }
    p
}

/// `outcome` shows `src -> dst` forwarded: out of the inside port to
/// `dst`'s MAC (`via` None), or into tunnel `via`, with the TTL one less.
fn assert_reached(outcome: Outcome, src: &str, dst: &str, via: Option<TunnelId>) {
    let want = match via {
        None => Outcome::Inside(host_mac(dst), forwarded(src, dst)),
        Some(t) => Outcome::Tunnel(t, forwarded(src, dst)),
    };
    assert_eq!(outcome, want, "{src} -> {dst}");
}

/// The /24 around a host: "172.16.1.9" -> "172.16.1.0/24".
fn net24(host: &str) -> String {
    format!("{}.0/24", &host[..host.rfind('.').unwrap()])
}

const IDCS: [(TunnelId, &str); 3] = [(1, IDC1), (2, IDC2), (3, IDC3)];

fn gateway_with_idcs(attachment: Attachment) -> Lab {
    let mut lab = Lab::new(attachment);
    for (t, _) in IDCS {
        lab.tunnel(t, &format!("198.51.100.{t}"));
    }
    lab
}

/// IDCs behind route-based tunnels reach each other through the gateway.
fn assert_idcs_reach_each_other(lab: &mut Lab) {
    for (t, h) in IDCS {
        for (u, other) in IDCS.into_iter().filter(|&(u, _)| u != t) {
            assert_reached(lab.idc_sends(t, h, other), h, other, Some(u));
        }
    }
}

/// Scenario 1: One VPC and one IDC; no way to the Internet from either side.
#[test]
fn scenario_1_vpc_and_one_idc() {
    let mut lab = Lab::new(Attachment::Vpc);
    lab.tunnel(1, "198.51.100.1").route("10.1.0.0/16", NextHop::Inside, 0).route(
        "172.16.1.0/24",
        NextHop::Tunnel(1),
        0,
    );
    assert_reached(lab.inside_sends(VPC, IDC1), VPC, IDC1, Some(1));
    assert_reached(lab.idc_sends(1, IDC1, VPC), IDC1, VPC, None);
    assert_eq!(lab.inside_sends(VPC, INTERNET), Outcome::Dropped(DropReason::NoRoute));
    assert_eq!(lab.idc_sends(1, IDC1, INTERNET), Outcome::Dropped(DropReason::NoRoute));
    assert_eq!(lab.pipeline.gateway_drops[&GW].get(DropReason::NoRoute), 2);
}

/// Scenario 2: One VPC and three IDCs, which reach each other through the gateway
/// (route table).
#[test]
fn scenario_2_vpc_and_idcs_that_reach_each_other() {
    let mut lab = gateway_with_idcs(Attachment::Vpc);
    lab.route("10.1.0.0/16", NextHop::Inside, 0);
    for (t, h) in IDCS {
        lab.route(&net24(h), NextHop::Tunnel(t), 0);
    }
    for (t, h) in IDCS {
        assert_reached(lab.inside_sends(VPC, h), VPC, h, Some(t));
        assert_reached(lab.idc_sends(t, h, VPC), h, VPC, None);
    }
    assert_idcs_reach_each_other(&mut lab);
    assert_eq!(lab.idc_sends(2, IDC2, INTERNET), Outcome::Dropped(DropReason::NoRoute));
}

/// Scenario 3: Three IDCs through a cloud-connect gateway with no network behind it.
#[test]
fn scenario_3_idcs_through_an_unassociated_cloud_connect_gateway() {
    let mut lab = gateway_with_idcs(Attachment::CloudConnect { associated: false });
    for (t, h) in IDCS {
        lab.route(&net24(h), NextHop::Tunnel(t), 0);
    }
    assert_idcs_reach_each_other(&mut lab);
    assert_eq!(lab.idc_sends(1, IDC1, VPC), Outcome::Dropped(DropReason::NoRoute));
    assert_eq!(lab.idc_sends(1, IDC1, INTERNET), Outcome::Dropped(DropReason::NoRoute));
    // A route to an inside that does not exist is refused outright.
    let mut cfg = lab.cfg.clone();
    cfg.routes.push(Route {
        gateway: GW,
        prefix: ip("10.1.0.0"),
        len: 16,
        next_hop: NextHop::CloudConnect,
        priority: 0,
        enabled: true,
    });
    let err = Snapshot::build(&cfg, 99).unwrap_err().to_string();
    assert!(err.contains("route 10.1.0.0/16") && err.contains("not attached"), "{err}");
}

/// Scenario 4: IDCs and the VPCs of a cloud-connect network reach each other.
#[test]
fn scenario_4_idcs_and_cloud_connect_networks() {
    let mut lab = gateway_with_idcs(Attachment::CloudConnect { associated: true });
    lab.route("10.1.0.0/16", NextHop::CloudConnect, 0).route("10.2.0.0/16", NextHop::CloudConnect, 0);
    for (t, h) in IDCS {
        lab.route(&net24(h), NextHop::Tunnel(t), 0);
    }
    for (t, h) in IDCS {
        for vpc in [VPC, VPC_B] {
            assert_reached(lab.inside_sends(vpc, h), vpc, h, Some(t));
            assert_reached(lab.idc_sends(t, h, vpc), h, vpc, None);
        }
    }
    assert_idcs_reach_each_other(&mut lab);
    assert_eq!(lab.inside_sends(VPC_B, INTERNET), Outcome::Dropped(DropReason::NoRoute));
}

/// Scenario 5: Active and standby tunnels to one IDC: traffic follows the best
/// route whose tunnel is up, moves at once, and comes back.
#[test]
fn scenario_5_active_standby_failover() {
    let mut lab = Lab::new(Attachment::Vpc);
    lab.tunnel(1, "198.51.100.1").tunnel(2, "198.51.100.2");
    lab.route("10.1.0.0/16", NextHop::Inside, 0);
    lab.route("172.16.1.0/24", NextHop::Tunnel(2), 20).route("172.16.1.0/24", NextHop::Tunnel(1), 10);
    assert_reached(lab.inside_sends(VPC, IDC1), VPC, IDC1, Some(1));
    lab.set_up(1, false);
    for _ in 0..3 {
        assert_reached(lab.inside_sends(VPC, IDC1), VPC, IDC1, Some(2));
    }
    let sent_into_1 =
        |lab: &Lab| lab.cfg.tunnels[0].outbound.as_ref().unwrap().lock().unwrap().state.lifetime.traffic.packets;
    assert_eq!(sent_into_1(&lab), 1, "nothing was sent into the down tunnel");
    lab.set_up(1, true);
    assert_reached(lab.inside_sends(VPC, IDC1), VPC, IDC1, Some(1));
    assert_eq!(sent_into_1(&lab), 2);
    // Both down: the prefix is withdrawn, and nothing else matches.
    lab.set_up(1, false);
    lab.set_up(2, false);
    assert_eq!(lab.inside_sends(VPC, IDC1), Outcome::Dropped(DropReason::NoRoute));
}

/// Scenario 6: One VPC and three IDCs that must not reach each other (SPD only).
#[test]
fn scenario_6_idcs_isolated_by_spd() {
    let mut lab = gateway_with_idcs(Attachment::Vpc);
    lab.route("10.1.0.0/16", NextHop::Inside, 0);
    for (t, h) in IDCS {
        lab.spd("10.1.0.0/16", &net24(h), SpdAction::Protect(t));
    }
    for (t, h) in IDCS {
        assert_reached(lab.inside_sends(VPC, h), VPC, h, Some(t));
        assert_reached(lab.idc_sends(t, h, VPC), h, VPC, None);
        for (_, other) in IDCS.into_iter().filter(|&(u, _)| u != t) {
            assert_eq!(lab.idc_sends(t, h, other), Outcome::Dropped(DropReason::Selector), "{h} -> {other}");
        }
    }
    assert_eq!(lab.pipeline.drops.get(DropReason::Selector), 6);
}

/// 6, mixed: SPD for IDC1 and IDC2, a route for IDC3; and SPD wins where
/// both match.
#[test]
fn scenario_6_mixed_spd_and_routes() {
    let mut lab = gateway_with_idcs(Attachment::Vpc);
    lab.route("10.1.0.0/16", NextHop::Inside, 0);
    lab.spd("10.1.0.0/16", &net24(IDC1), SpdAction::Protect(1)).spd("10.1.0.0/16", &net24(IDC2), SpdAction::Protect(2));
    lab.route(&net24(IDC3), NextHop::Tunnel(3), 0);
    for (t, h) in IDCS {
        assert_reached(lab.inside_sends(VPC, h), VPC, h, Some(t));
        assert_reached(lab.idc_sends(t, h, VPC), h, VPC, None);
    }
    assert_eq!(
        lab.idc_sends(1, IDC1, IDC3),
        Outcome::Dropped(DropReason::Selector),
        "IDC1 -> IDC3 fails T1's selectors"
    );
    assert_eq!(lab.idc_sends(3, IDC3, IDC1), Outcome::Dropped(DropReason::NoRoute), "no SPD match, no route");
    assert_eq!(lab.idc_sends(2, IDC2, IDC1), Outcome::Dropped(DropReason::Selector));

    // SPD wins: a broad route to T3 does not take IDC1's traffic from T1.
    lab.route("172.16.0.0/16", NextHop::Tunnel(3), 0);
    assert_reached(lab.inside_sends(VPC, IDC1), VPC, IDC1, Some(1));
    assert_reached(lab.inside_sends(VPC, "172.16.9.9"), VPC, "172.16.9.9", Some(3));
}

/// A burst goes through the pipeline stage by stage, all its packets
/// together: each still meets the fate it meets alone, in the same order,
/// with the same counters, on both ports.
#[test]
fn a_burst_decides_each_packet_as_it_would_alone() {
    let lab = || {
        let mut lab = gateway_with_idcs(Attachment::Vpc);
        lab.route("10.1.0.0/16", NextHop::Inside, 0);
        lab.spd("10.1.0.0/16", &net24(IDC1), SpdAction::Protect(1)).spd(
            "10.1.0.0/16",
            &net24(IDC2),
            SpdAction::Protect(2),
        );
        lab.spd("10.1.0.0/16", "172.16.4.0/24", SpdAction::Discard);
        lab.route(&net24(IDC3), NextHop::Tunnel(3), 0);
        lab
    };
    let (mut alone, mut together) = (lab(), lab());
    let from_vpc = |dst: &str, ttl| (host_mac(VPC), GW_INSIDE_MAC, udp(VPC, dst, ttl));
    let mut bad_sum = udp(VPC, IDC1, 64);
    bad_sum[10] ^= 1;
    let inside = vec![
        from_vpc(IDC1, 64),
        from_vpc(IDC3, 64),
        from_vpc(INTERNET, 64),
        (host_mac(VPC), GW_INSIDE_MAC, bad_sum),
        from_vpc(IDC2, 1),
        from_vpc("172.16.4.9", 64),
        from_vpc(IDC2, 64),
        from_vpc(IDC1, 64),
    ];
    let from_idc = |lab: &mut Lab, t, src: &str, dst: &str| {
        (ROUTER_MAC, GW_OUTSIDE_MAC, lab.sealed_by_idc(t, &udp_any(src, dst, 64)))
    };
    let (to_vpc, to_idc3) = (from_idc(&mut alone, 1, IDC1, VPC), from_idc(&mut alone, 1, IDC1, IDC3));
    let mut forged = from_idc(&mut alone, 2, IDC2, VPC);
    let n = forged.2.len();
    forged.2[n - 1] ^= 1;
    let mut unknown_spi = from_idc(&mut alone, 3, IDC3, VPC);
    unknown_spi.2[20] ^= 0x80;
    let outside = vec![
        to_vpc.clone(),
        from_idc(&mut alone, 3, IDC3, IDC1),
        forged,
        to_vpc,
        to_idc3,
        unknown_spi,
        from_idc(&mut alone, 3, IDC3, IDC2),
        from_idc(&mut alone, 2, IDC2, VPC),
    ];
    for (port, frames) in [(INSIDE, inside), (OUTSIDE, outside)] {
        let (mut sent, mut recycled) = (Vec::new(), 0);
        for f in &frames {
            let (tx, r) = alone.burst(port, std::slice::from_ref(f));
            sent.extend(tx);
            recycled += r;
        }
        assert_eq!(together.burst(port, &frames), (sent.clone(), recycled), "port {port}");
        assert!(sent.len() >= 2 && recycled >= 3, "port {port}: a mix of fates ({} sent)", sent.len());
    }
    assert_eq!(together.pipeline.drops, alone.pipeline.drops);
    let drops: Vec<_> = together.pipeline.drops.nonzero().collect();
    for reason in [
        DropReason::NoRoute,
        DropReason::Malformed,
        DropReason::TtlExpired,
        DropReason::SpdDiscard,
        DropReason::Icv,
        DropReason::Replay,
        DropReason::UnknownSpi,
        DropReason::Selector,
    ] {
        assert!(drops.iter().any(|&(r, _)| r == reason), "{reason:?} in {drops:?}");
    }
}

/// TTL: forwarded packets lose one (see `expiring_ttl_gets_time_exceeded`
/// for 1). SPD DISCARD and a protecting tunnel that is down are drops.
#[test]
fn ttl_discard_and_down_tunnels() {
    let mut lab = Lab::new(Attachment::Vpc);
    lab.tunnel(1, "198.51.100.1").route("172.16.1.0/24", NextHop::Tunnel(1), 0);
    let mut two = udp(VPC, IDC1, 2);
    let o = lab.run(INSIDE, host_mac(VPC), GW_INSIDE_MAC, &two.clone());
    Ipv4Packet::new_unchecked(&mut two[..]).decrement_ttl();
    assert_eq!(o, Outcome::Tunnel(1, two));
    lab.spd("10.1.0.0/16", "172.16.1.128/25", SpdAction::Discard);
    assert_eq!(lab.inside_sends(VPC, "172.16.1.200"), Outcome::Dropped(DropReason::SpdDiscard));
    lab.spd("10.1.0.0/16", "172.16.1.0/25", SpdAction::Protect(1));
    lab.set_up(1, false);
    assert_eq!(lab.inside_sends(VPC, IDC1), Outcome::Dropped(DropReason::TunnelDown));
}

/// A tunnel without an outbound SA (IKE has not negotiated one) is down:
/// its routes fail over. One negotiated on demand keeps its routes and
/// rules, and a packet into it asks for it (and is dropped meanwhile).
#[test]
fn tunnels_without_an_sa_and_on_demand_tunnels() {
    let mut lab = Lab::new(Attachment::Vpc);
    lab.tunnel(1, "198.51.100.1").tunnel(2, "198.51.100.2");
    lab.route("172.16.1.0/24", NextHop::Tunnel(1), 0).route("172.16.1.0/24", NextHop::Tunnel(2), 1);
    lab.cfg.tunnels[0].outbound = None;
    lab.rebuild();
    assert!(matches!(lab.inside_sends(VPC, IDC1), Outcome::Tunnel(2, _)), "the standby carries it");
    assert!(lab.pipeline.wanted.is_empty(), "an ordinary tunnel asks for nothing");
    lab.cfg.tunnels[0].on_demand = true;
    lab.rebuild();
    assert_eq!(lab.inside_sends(VPC, IDC1), Outcome::Dropped(DropReason::TunnelDown));
    assert_eq!(lab.inside_sends(VPC, IDC1), Outcome::Dropped(DropReason::TunnelDown));
    assert_eq!(lab.pipeline.wanted, vec![1], "asked for once");
    lab.spd("10.1.0.0/16", "172.16.2.0/24", SpdAction::Protect(1));
    lab.pipeline.wanted.clear();
    assert_eq!(lab.inside_sends(VPC, "172.16.2.9"), Outcome::Dropped(DropReason::TunnelDown));
    assert_eq!(lab.pipeline.wanted, vec![1], "an SPD rule into it asks too");
}

/// Garbage on either port is a counted drop; nothing comes out.
#[test]
fn bad_frames_are_counted_drops() {
    let mut lab = Lab::new(Attachment::Vpc);
    lab.tunnel(1, "198.51.100.1").route("172.16.1.0/24", NextHop::Tunnel(1), 0);
    let mut bad_sum = udp(VPC, IDC1, 64);
    bad_sum[10] ^= 1;
    assert_eq!(lab.run(INSIDE, host_mac(VPC), GW_INSIDE_MAC, &bad_sum), Outcome::Dropped(DropReason::Malformed));
    let mut not_esp = udp(IDC1, GW_ADDR, 64);
    not_esp[9] = 1; // ICMP to the gateway: the kernel's, not the data plane's
    Ipv4Packet::new_unchecked(&mut not_esp[..]).fill_checksum();
    assert_eq!(lab.run(OUTSIDE, ROUTER_MAC, GW_OUTSIDE_MAC, &not_esp), Outcome::Dropped(DropReason::NotEsp));
    let mut forged = {
        let peer = &mut lab.peers[0];
        let mut p = PacketBuf::<Vec<u8>>::with_room(&udp(IDC1, VPC, 64), esp::MAX_HEADROOM, esp::MAX_TAILROOM);
        esp::encap(&mut peer.out, &mut p, 0, &mut Vec::new()).unwrap();
        p.data().to_vec()
    };
    let n = forged.len();
    forged[n - 1] ^= 1;
    assert_eq!(lab.run(OUTSIDE, ROUTER_MAC, GW_OUTSIDE_MAC, &forged), Outcome::Dropped(DropReason::Icv));
}

/// MTU: a packet too big for the tunnel gets "fragmentation needed" with
/// the largest size that fits, back to the sender; no sequence number is
/// spent on it.
#[test]
fn too_big_for_the_tunnel_tells_the_sender() {
    let mut lab = Lab::new(Attachment::Vpc);
    lab.tunnel(1, "198.51.100.1").route("10.1.0.0/16", NextHop::Inside, 0).route(
        "172.16.1.0/24",
        NextHop::Tunnel(1),
        0,
    );
    let max = lab.snap.tunnels[0].max_inner;
    // 1500 = outer IPv4 20 + ESP 8 + IV 8 + (inner + pad + 2) + ICV 16.
    assert_eq!(max, 1446);
    let fits = udp_sized(VPC, IDC1, 64, max, true);
    assert!(matches!(lab.run(INSIDE, host_mac(VPC), GW_INSIDE_MAC, &fits), Outcome::Tunnel(1, _)));
    let big = udp_sized(VPC, IDC1, 64, max + 1, true);
    let Outcome::Inside(mac, reply) = lab.run(INSIDE, host_mac(VPC), GW_INSIDE_MAC, &big) else { panic!("no ICMP") };
    assert_eq!(mac, host_mac(VPC));
    let ip4 = Ipv4Packet::new_checked(&reply[..]).unwrap();
    assert_eq!((ip4.src_addr().to_string(), ip4.dst_addr().to_string()), (GW_INSIDE.to_string(), VPC.to_string()));
    let icmp = ip4.payload();
    assert_eq!((icmp[0], icmp[1], u16::from_be_bytes([icmp[6], icmp[7]]) as usize), (3, 4, max));
    assert_eq!(&icmp[8..28], &big[..20], "the sender's own header is quoted");
    assert_eq!(lab.pipeline.drops.get(DropReason::TooBig), 1);
    assert_eq!(
        lab.cfg.tunnels[0].outbound.as_ref().unwrap().lock().unwrap().state.next_seq,
        2,
        "one packet sent, none wasted"
    );
}

/// MTU: IPv4 without DF is fragmented before encryption (RFC 791); each
/// fragment travels in its own ESP packet, and the customer gateway's
/// fragments reassemble into the original. Without a free frame, the packet
/// is a counted drop and no frame is lost.
#[test]
fn ipv4_without_df_is_fragmented_before_encryption() {
    let mut lab = Lab::new(Attachment::Vpc);
    lab.tunnel(1, "198.51.100.1").route("172.16.1.0/24", NextHop::Tunnel(1), 0);
    let mut big = udp_sized(VPC, IDC1, 64, 3000, false);
    for (i, b) in big[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut frame = vec![0u8; 256];
    let mut eth = [0u8; 14];
    ether::emit_header(&mut eth, GW_INSIDE_MAC, host_mac(VPC), ether::ethertype::IPV4);
    frame.extend_from_slice(&eth);
    frame.extend_from_slice(&big);
    frame.resize(frame.len() + 64, 0);
    let pkt = PacketBuf::new(frame, 256, 14 + big.len()).unwrap();

    let (mut tx, mut recycle) = (Vec::new(), Vec::new());
    let mut alloc = || Some(PacketBuf::new(vec![0u8; 2048], 256, 0).unwrap());
    let mut hand_off = |_, h| Err(h);
    let mut out = Out { tx: &mut tx, recycle: &mut recycle, alloc: &mut alloc, hand_off: &mut hand_off };
    lab.pipeline.process(&lab.snap, INSIDE, &mut vec![pkt], 0, &mut out);
    assert_eq!((tx.len(), recycle.len()), (3, 0));

    let mut payload = vec![0u8; 3000 - 20];
    let mut seen = 0;
    for (port, f) in tx {
        assert_eq!(port, OUTSIDE);
        let esp_packet = &f.data()[14..];
        assert!(esp_packet.len() <= 1500, "fits the outside MTU");
        let loc = esp::locate(esp_packet).unwrap();
        let mut p = PacketBuf::<Vec<u8>>::with_room(esp_packet, 0, 0);
        esp::decap(&mut lab.peers[0].inb, &mut p, &loc, 0, &mut Vec::new()).unwrap();
        let frag = Ipv4Packet::new_checked(p.data()).unwrap();
        assert!(frag.verify_checksum() && frag.is_fragment());
        assert_eq!((frag.ttl(), frag.ident(), frag.frag_offset() % 8), (63, 9, 0));
        let off = frag.frag_offset();
        assert_eq!(frag.more_frags(), off + frag.payload().len() < payload.len());
        payload[off..off + frag.payload().len()].copy_from_slice(frag.payload());
        seen += frag.payload().len();
    }
    assert_eq!(seen, payload.len());
    assert_eq!(&payload[..], &big[20..], "reassembled, the original payload");

    let mut none = || None;
    let (mut tx, mut recycle) = (Vec::new(), Vec::new());
    let mut hand_off = |_, h| Err(h);
    let mut out = Out { tx: &mut tx, recycle: &mut recycle, alloc: &mut none, hand_off: &mut hand_off };
    let mut frame = vec![0u8; 256];
    frame.extend_from_slice(&eth);
    frame.extend_from_slice(&big);
    let pkt = PacketBuf::new(frame, 256, 14 + big.len()).unwrap();
    lab.pipeline.process(&lab.snap, INSIDE, &mut vec![pkt], 0, &mut out);
    assert_eq!((tx.len(), recycle.len()), (0, 1));
    assert_eq!(lab.pipeline.drops.get(DropReason::NoRoom), 1);
}

/// TTL 1 from the inside: dropped, and "time exceeded" back to the sender.
#[test]
fn expiring_ttl_gets_time_exceeded() {
    let mut lab = Lab::new(Attachment::Vpc);
    lab.tunnel(1, "198.51.100.1").route("10.1.0.0/16", NextHop::Inside, 0).route(
        "172.16.1.0/24",
        NextHop::Tunnel(1),
        0,
    );
    let Outcome::Inside(_, reply) = lab.run(INSIDE, host_mac(VPC), GW_INSIDE_MAC, &udp(VPC, IDC1, 1)) else {
        panic!("no ICMP")
    };
    let ip4 = Ipv4Packet::new_checked(&reply[..]).unwrap();
    assert_eq!((ip4.dst_addr().to_string(), ip4.payload()[0]), (VPC.to_string(), 11));
    assert_eq!(lab.pipeline.drops.get(DropReason::TtlExpired), 1);
}

/// MSS clamping on SYNs entering a tunnel that asks for it.
#[test]
fn mss_is_clamped_into_the_tunnel() {
    let mut lab = Lab::new(Attachment::Vpc);
    lab.tunnel(1, "198.51.100.1").route("172.16.1.0/24", NextHop::Tunnel(1), 0);
    lab.cfg.tunnels[0].mss_clamp = Some(1360);
    lab.rebuild();
    let mut syn = vec![0u8; 44];
    let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(VPC), ip(IDC1)) else { unreachable!() };
    Ipv4Repr { src: s, dst: d, protocol: 6, payload_len: 24, ttl: 64, tos: 0, ident: 1, dont_frag: true }
        .emit(&mut syn);
    syn[32] = 6 << 4; // data offset: 24 bytes
    syn[33] = 0x02; // SYN
    syn[40..44].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    let Outcome::Tunnel(1, out) = lab.run(INSIDE, host_mac(VPC), GW_INSIDE_MAC, &syn) else { panic!("not sent") };
    assert_eq!(u16::from_be_bytes([out[42], out[43]]), 1360);
}

/// IPv6 end to end: a VPC's IPv6 hosts and IDCs' IPv6 networks, over IPv4
/// tunnels, by route and by SPD; hop limits drop by one; IDC-to-IDC transit
/// by route; no route elsewhere.
#[test]
fn ipv6_inside_ipv4_tunnels() {
    let mut lab = Lab::new(Attachment::Vpc);
    lab.tunnel(1, "198.51.100.1").tunnel(2, "198.51.100.2");
    lab.route("fd00:1::/64", NextHop::Inside, 0).route("fd00:16:1::/48", NextHop::Tunnel(1), 0);
    lab.spd("fd00:1::/64", "fd00:16:2::/48", SpdAction::Protect(2));
    assert_reached(lab.inside_sends(VPC6, IDC1_6), VPC6, IDC1_6, Some(1));
    assert_reached(lab.idc_sends(1, IDC1_6, VPC6), IDC1_6, VPC6, None);
    assert_reached(lab.inside_sends(VPC6, IDC2_6), VPC6, IDC2_6, Some(2));
    assert_reached(lab.idc_sends(2, IDC2_6, VPC6), IDC2_6, VPC6, None);
    assert_eq!(lab.idc_sends(2, IDC2_6, IDC1_6), Outcome::Dropped(DropReason::Selector), "SPD tunnel: VPC only");
    assert_eq!(lab.inside_sends(VPC6, "2001:db8:77::1"), Outcome::Dropped(DropReason::NoRoute));
}

/// Health checks, the bandwidth limit and capture, through the pipeline.
mod monitoring {
    use super::*;
    use vpngw_engine::probe::{ProbeRequest, PAYLOAD};
    use vpngw_engine::tap::{Tap, TapPoint};
    use vpngw_engine::wire::echo;

    const ME: &str = "169.254.10.1";
    const PEER: &str = "169.254.10.2";

    fn with_probe() -> Lab {
        let mut lab = Lab::new(Attachment::Vpc);
        lab.tunnel(1, "198.51.100.1").route("172.16.1.0/24", NextHop::Tunnel(1), 0);
        lab.cfg.tunnels[0].probe = Some(Probe { local: ip(ME), remote: ip(PEER) });
        lab.rebuild();
        lab
    }

    fn echo_request(src: &str, dst: &str, seq: u16) -> Vec<u8> {
        let mut buf = vec![0u8; 200];
        let n = echo::emit_request(&mut buf, ip(src), ip(dst), 0x77, seq, PAYLOAD);
        buf.truncate(n);
        buf
    }

    #[test]
    fn the_peers_probes_are_answered_into_the_tunnel_even_when_it_is_down() {
        let mut lab = with_probe();
        for up in [true, false] {
            lab.set_up(1, up);
            let sealed = lab.sealed_by_idc(1, &echo_request(PEER, ME, 5));
            let Outcome::Tunnel(1, reply) = lab.run(OUTSIDE, ROUTER_MAC, GW_OUTSIDE_MAC, &sealed) else {
                panic!("answered into the tunnel (up: {up})")
            };
            let e = echo::parse(&reply).expect("an echo reply");
            assert_eq!((e.request, e.src, e.dst, e.seq), (false, ip(ME), ip(PEER), 5));
        }
        // Without a probe address, an echo to it is ordinary traffic.
        lab.cfg.tunnels[0].probe = None;
        lab.rebuild();
        let sealed = lab.sealed_by_idc(1, &echo_request(PEER, ME, 6));
        assert_eq!(lab.run(OUTSIDE, ROUTER_MAC, GW_OUTSIDE_MAC, &sealed), Outcome::Dropped(DropReason::NoRoute));
    }

    #[test]
    fn a_probe_goes_into_the_tunnel_and_its_reply_is_reported_not_forwarded() {
        let mut lab = with_probe();
        let req = ProbeRequest { tunnel: 1, src: ip(ME), dst: ip(PEER), ident: 0x77, seq: 9 };
        let (mut tx, mut recycle) = (Vec::new(), Vec::new());
        let mut alloc = || Some(PacketBuf::new(vec![0u8; 2048], 256, 0).unwrap());
        let mut hand_off = |_, h| Err(h);
        let mut out = Out { tx: &mut tx, recycle: &mut recycle, alloc: &mut alloc, hand_off: &mut hand_off };
        assert!(lab.pipeline.send_probe(&lab.snap, &req, 0, &mut out));
        let unknown = ProbeRequest { tunnel: 99, ..req };
        assert!(!lab.pipeline.send_probe(&lab.snap, &unknown, 0, &mut out), "no such tunnel");
        assert_eq!(tx.len(), 1);
        let frame = tx[0].1.data().to_vec();
        let payload = EthernetFrame::new_checked(&frame[..]).unwrap().payload().to_vec();
        let loc = esp::locate(&payload).unwrap();
        let mut p = PacketBuf::<Vec<u8>>::with_room(&payload, 0, 0);
        esp::decap(&mut lab.peers[0].inb, &mut p, &loc, 0, &mut Vec::new()).unwrap();
        let e = echo::parse(p.data()).expect("the probe is an echo request");
        assert_eq!((e.request, e.src, e.dst, e.ident, e.seq), (true, ip(ME), ip(PEER), 0x77, 9));

        // The peer answers; the reply is taken, counted nowhere as a drop.
        let mut reply = p.data().to_vec();
        echo::answer_in_place(&mut reply);
        let sealed = lab.sealed_by_idc(1, &reply);
        let drops = lab.pipeline.drops.total();
        let (sent, recycled) = lab.burst(OUTSIDE, &[(ROUTER_MAC, GW_OUTSIDE_MAC, sealed)]);
        assert!(sent.is_empty() && recycled == 1);
        assert_eq!(lab.pipeline.drops.total(), drops, "not a drop");
        let got: Vec<_> = lab.pipeline.probes.drain(..).map(|e| (e.tunnel, e.ident, e.seq)).collect();
        assert_eq!(got, [(1, 0x77, 9)]);
    }

    #[test]
    fn the_bandwidth_limit_drops_what_is_over_it_each_way_and_counts_it() {
        let mut lab = with_probe();
        lab.route("10.1.0.0/16", NextHop::Inside, 0);
        // 8 Mbit/s: a burst of 16 full-size frames (24,224 bytes), then 1 byte a microsecond.
        lab.cfg.gateways[0].bandwidth_bps = Some(8_000_000);
        lab.rebuild();
        let frames: Vec<_> =
            (0..100).map(|_| (host_mac(VPC), GW_INSIDE_MAC, udp_sized(VPC, IDC1, 64, 1000, true))).collect();
        let (sent, dropped) = lab.burst(INSIDE, &frames);
        assert!((25..=40).contains(&sent.len()), "the burst, and a little for the time it took: {}", sent.len());
        assert_eq!(dropped, 100 - sent.len());
        assert_eq!(lab.pipeline.drops.get(DropReason::BandwidthLimit), dropped as u64);
        // Inbound has its own bucket, full.
        let sealed: Vec<_> = (0..100)
            .map(|_| (ROUTER_MAC, GW_OUTSIDE_MAC, lab.sealed_by_idc(1, &udp_sized(IDC1, VPC, 64, 1000, true))))
            .collect();
        let (sent, _) = lab.burst(OUTSIDE, &sealed);
        assert!((25..=40).contains(&sent.len()), "inbound: {}", sent.len());
        // Unlimited again.
        lab.cfg.gateways[0].bandwidth_bps = None;
        lab.rebuild();
        let (sent, _) = lab.burst(INSIDE, &frames);
        assert_eq!(sent.len(), 100);
    }

    #[test]
    fn a_capture_copies_the_tunnels_packets_inner_or_outer() {
        let mut lab = with_probe();
        lab.route("10.1.0.0/16", NextHop::Inside, 0);
        for point in [TapPoint::Inner, TapPoint::Outer] {
            let tap = Arc::new(Tap::new(1, point, 2, 1000));
            lab.pipeline.tap = Some(tap.clone());
            let out = udp_any(VPC, IDC1, 64);
            let Outcome::Tunnel(1, _) = lab.inside_sends(VPC, IDC1) else { panic!("into the tunnel") };
            assert_eq!(lab.idc_sends(1, IDC1, VPC), Outcome::Inside(host_mac(VPC), forwarded(IDC1, VPC)));
            lab.inside_sends(VPC, IDC1); // the third: not wanted
            let got = tap.take();
            assert_eq!(got.len(), 2, "{point:?}");
            assert_eq!((got[0].outbound, got[1].outbound), (true, false));
            match point {
                TapPoint::Inner => {
                    assert_eq!(got[0].data, forwarded(VPC, IDC1), "the packet as it enters");
                    assert_eq!(got[1].data, udp_any(IDC1, VPC, 64), "the packet as it leaves");
                    assert_ne!(got[0].data, out, "after the TTL");
                }
                TapPoint::Outer => {
                    for c in &got {
                        assert_eq!(
                            esp::locate(&c.data).unwrap().dst,
                            if c.outbound { ip("198.51.100.1") } else { ip(GW_ADDR) }
                        );
                    }
                }
            }
        }
    }
}
