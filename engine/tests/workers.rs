//! Several workers: each tunnel's SAs have one owning worker; a packet that
//! needs them on another worker is handed over and finished there. Checked
//! by decrypting what every worker sent with the customer gateways' SAs.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use vpngw_engine::io::mem::MemPort;
use vpngw_engine::model::*;
use vpngw_engine::sa::Direction;
use vpngw_engine::snapshot::{Snapshot, SnapshotCell};
use vpngw_engine::wire::ether::{self, EthernetFrame};
use vpngw_engine::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use vpngw_engine::worker::{Mailboxes, Worker};
use vpngw_engine::{esp, DropReason, InboundSa, OutboundSa, PacketBuf, SaConfig, Suite};

const INSIDE: PortId = 1;
const OUTSIDE: PortId = 2;
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const NEXT: [u8; 6] = [2, 0, 0, 0, 0, 2];
const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VPC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);

fn idc(t: u32) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, t as u8 + 1, 9)
}

fn peer(t: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, t as u8 + 1)
}

fn sa(spi: u32, dir: Direction, local: Ipv4Addr, remote: Ipv4Addr) -> SaConfig {
    let mut c = SaConfig::new(spi, dir, Suite::AesGcm128, local.into(), remote.into());
    c.replay_window = 4096;
    c
}

/// A VPC gateway with two route-based tunnels, and the customer gateways'
/// SAs: (to decrypt what the gateway sends, to encrypt what they send).
fn setup() -> (Arc<SnapshotCell>, Vec<(InboundSa, OutboundSa)>) {
    let ip = IpAddr::V4;
    let port = |id, neighbours| Port { id, mac: MAC, mtu: 1500, addrs: vec![], router: None, neighbours };
    let mut cfg = Config {
        ports: vec![port(INSIDE, vec![(ip(VPC), NEXT)]), port(OUTSIDE, vec![(ip(peer(0)), NEXT), (ip(peer(1)), NEXT)])],
        gateways: vec![Gateway {
            id: 1,
            name: "gw".into(),
            attachment: Attachment::Vpc,
            outside_port: OUTSIDE,
            outside_addrs: vec![ip(GW)],
            inside_port: Some(INSIDE),
            bandwidth_bps: None,
        }],
        routes: vec![Route {
            gateway: 1,
            prefix: ip(VPC),
            len: 16,
            next_hop: NextHop::Inside,
            priority: 0,
            enabled: true,
        }],
        ..Config::default()
    };
    let mut peers = Vec::new();
    for t in 0..2u32 {
        let key = [t as u8 + 1; 20];
        let (out_spi, in_spi) = (0x1000 + 2 * t, 0x1001 + 2 * t);
        cfg.customer_gateways.push(CustomerGateway { id: t, name: format!("cgw{t}"), addr: ip(peer(t)) });
        cfg.tunnels.push(Tunnel {
            id: t,
            name: format!("t{t}"),
            gateway: 1,
            customer_gateway: t,
            outbound: Some(Arc::new(Mutex::new(
                OutboundSa::new(sa(out_spi, Direction::Outbound, GW, peer(t)), &key, 0).unwrap(),
            ))),
            inbound: vec![Arc::new(Mutex::new(
                InboundSa::new(sa(in_spi, Direction::Inbound, GW, peer(t)), &key, 0).unwrap(),
            ))],
            up: true,
            mss_clamp: None,
            probe: None,
            on_demand: false,
        });
        let r =
            Route { gateway: 1, prefix: ip(idc(t)), len: 24, next_hop: NextHop::Tunnel(t), priority: 0, enabled: true };
        cfg.routes.push(r);
        peers.push((
            InboundSa::new(sa(out_spi, Direction::Inbound, peer(t), GW), &key, 0).unwrap(),
            OutboundSa::new(sa(in_spi, Direction::Outbound, peer(t), GW), &key, 0).unwrap(),
        ));
    }
    (Arc::new(SnapshotCell::new(Snapshot::build(&cfg, 1).unwrap())), peers)
}

fn frame(src: Ipv4Addr, dst: Ipv4Addr, n: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 28];
    ether::emit_header(&mut f, MAC, NEXT, ether::ethertype::IPV4);
    Ipv4Repr { src, dst, protocol: 17, payload_len: 8, ttl: 64, tos: 0, ident: n, dont_frag: true }.emit(&mut f[14..]);
    f
}

/// The ESP frame a customer gateway sends for packet `n` from its IDC.
fn esp_frame(peer: &mut OutboundSa, src: Ipv4Addr, n: u16) -> Vec<u8> {
    let inner = frame(src, VPC, n);
    let mut p = PacketBuf::<Vec<u8>>::with_room(&inner[14..], esp::MAX_HEADROOM, esp::MAX_TAILROOM);
    esp::encap(peer, &mut p, 0, &mut Vec::new()).unwrap();
    let mut f = inner[..14].to_vec();
    f.extend_from_slice(p.data());
    f
}

fn workers(cell: &Arc<SnapshotCell>, capacity: usize) -> Vec<Worker<MemPort>> {
    let boxes = Mailboxes::new(2, capacity);
    (0..2).map(|i| Worker::new(i, vec![MemPort::new(INSIDE), MemPort::new(OUTSIDE)], cell.clone(), &boxes)).collect()
}

/// Decrypts frames a worker sent towards the customer gateways; returns
/// (tunnel, sequence number, inner IP ident) for each.
fn received(peers: &mut [(InboundSa, OutboundSa)], frames: Vec<Vec<u8>>) -> Vec<(u32, u64, u16)> {
    frames
        .into_iter()
        .map(|f| {
            let ip = EthernetFrame::new_checked(&f[..]).unwrap().payload().to_vec();
            let loc = esp::locate(&ip).unwrap();
            let t = (loc.dst == IpAddr::V4(peer(1))) as u32;
            let mut p = PacketBuf::<Vec<u8>>::with_room(&ip, 0, 0);
            let seq = esp::decap(&mut peers[t as usize].0, &mut p, &loc, 0, &mut Vec::new()).unwrap();
            (t, seq, Ipv4Packet::new_checked(p.data()).unwrap().ident())
        })
        .collect()
}

#[test]
fn each_tunnel_is_served_by_its_owner() {
    let (cell, mut peers) = setup();
    let mut w = workers(&cell, 1024);
    assert_eq!((w[0].pipeline.owner(0), w[0].pipeline.owner(1)), (0, 1));
    // Everything arrives at worker 0: outbound for both tunnels, and ESP
    // from tunnel 1's customer gateway.
    for n in 0..40u16 {
        w[0].ports()[0].inject(&frame(VPC, idc(n as u32 % 2), n));
    }
    for n in 0..10u16 {
        let f = esp_frame(&mut peers[1].1, idc(1), 100 + n);
        w[0].ports()[1].inject(&f);
    }
    while w[0].poll(0) + w[1].poll(0) > 0 {}

    let from0 = received(&mut peers, w[0].ports()[1].take_sent());
    let from1 = received(&mut peers, w[1].ports()[1].take_sent());
    assert!(from0.iter().all(|r| r.0 == 0) && from1.iter().all(|r| r.0 == 1), "only the owner sends into a tunnel");
    assert_eq!(from0.iter().map(|r| r.1).collect::<Vec<_>>(), (1..=20).collect::<Vec<u64>>());
    assert_eq!(from1.iter().map(|r| r.1).collect::<Vec<_>>(), (1..=20).collect::<Vec<u64>>());
    assert_eq!(from1.iter().map(|r| r.2).collect::<Vec<_>>(), (0..40).filter(|n| n % 2 == 1).collect::<Vec<u16>>());
    // Tunnel 1's ESP was decrypted by worker 1 and left by its inside port.
    assert!(w[0].ports()[0].take_sent().is_empty());
    let inside1 = w[1].ports()[0].take_sent();
    let idents: Vec<u16> = inside1.iter().map(|f| Ipv4Packet::new_checked(&f[14..]).unwrap().ident()).collect();
    assert_eq!(idents, (100..110).collect::<Vec<u16>>());
    assert_eq!(w[0].pipeline.drops.total() + w[1].pipeline.drops.total(), 0);
}

#[test]
fn a_full_hand_off_queue_is_a_counted_drop() {
    let (cell, _) = setup();
    let mut w = workers(&cell, 4);
    for n in 0..10u16 {
        w[0].ports()[0].inject(&frame(VPC, idc(1), n));
    }
    w[0].poll(0);
    assert_eq!(w[0].pipeline.drops.get(DropReason::HandOffFull), 6);
    w[1].poll(0);
    assert_eq!(w[1].ports()[1].take_sent().len(), 4);
}

/// Two workers on two threads, traffic for both tunnels arriving at both:
/// every packet comes out once, encrypted by its tunnel's owner.
#[test]
fn two_threads_lose_nothing() {
    let (cell, mut peers) = setup();
    let mut w = workers(&cell, 4096);
    const N: u16 = 2000;
    for (i, worker) in w.iter_mut().enumerate() {
        for n in 0..N {
            worker.ports()[0].inject(&frame(VPC, idc(n as u32 % 2), i as u16 * N + n));
        }
    }
    let done = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = w
        .into_iter()
        .map(|mut worker| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut declared = false;
                loop {
                    if worker.poll(0) == 0 && worker.ports()[0].pending() == 0 {
                        if !declared {
                            declared = true;
                            done.fetch_add(1, SeqCst);
                        }
                        // The other worker pushed its last hand-offs before
                        // it declared: one more drain after seeing both
                        // declared finds them.
                        if done.load(SeqCst) == 2 {
                            while worker.poll(0) > 0 {}
                            return worker;
                        }
                    }
                }
            })
        })
        .collect();
    let mut w: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut all = Vec::new();
    for (i, worker) in w.iter_mut().enumerate() {
        let got = received(&mut peers, worker.ports()[1].take_sent());
        assert!(got.iter().all(|r| r.0 as usize == i), "worker {i} sent only into the tunnel it owns");
        assert_eq!(worker.pipeline.drops.total(), 0);
        all.extend(got.into_iter().map(|r| r.2));
    }
    all.sort_unstable();
    assert_eq!(all, (0..2 * N).collect::<Vec<u16>>(), "every packet once");
}

/// Workers on their own threads: stopped, they finish every packet already
/// handed between them; nothing is left in a queue.
#[test]
fn spawned_workers_stop_without_leaving_packets_behind() {
    let (cell, mut peers) = setup();
    let mut w = workers(&cell, 4096);
    for n in 0..2000u16 {
        w[0].ports()[0].inject(&frame(VPC, idc(1), n)); // all for worker 1's tunnel
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> =
        w.into_iter().enumerate().map(|(i, worker)| worker.spawn(Some(i % 2), stop.clone())).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, SeqCst);
    let mut w: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(w[0].ports()[0].pending(), 0, "worker 0 took every frame in");
    let got = received(&mut peers, w[1].ports()[1].take_sent());
    assert_eq!(got.len(), 2000, "worker 1 sent every packet it was handed");
    assert!(w[0].ports()[1].take_sent().is_empty());
    assert_eq!(w[0].pipeline.drops.total() + w[1].pipeline.drops.total(), 0);
}
