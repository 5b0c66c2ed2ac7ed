//! AF_XDP over real veth pairs in network namespaces (root needed, as in
//! CI): receive, transmit, forwarding between two interfaces through one
//! shared UMEM, and after each, every frame back where it belongs.

mod lab;

use super::*;
use crate::buf::PacketBuf;
use crate::io::{Port, FRAME_HEADROOM, FRAME_TAILROOM};
use crate::wire::{checksum, ether, ipv4::Ipv4Repr, udp};
use lab::{ifindex, pass, redirect_to, Lab, PacketSocket};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const UMEM: UmemConfig = UmemConfig { frame_size: 2048, frames: 256, headroom: 0 };

const CONFIG: XskConfig = XskConfig {
    fill_size: 64,
    completion_size: 64,
    rx_size: 64,
    tx_size: 64,
    mode: ModePreference::Auto,
    need_wakeup: true,
    busy_poll: None,
};

/// The UDP port that marks the tests' frames (anything else on the link
/// is not ours).
const TEST_PORT: u16 = 9999;

/// An Ethernet/IPv4/UDP frame of `len` bytes carrying `seq`, with full
/// checksums.
fn udp_frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    ether::emit_header(&mut f, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], ether::ethertype::IPV4);
    let (src, dst) = (Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 1));
    let payload_len = len - 14 - 20 - 8;
    Ipv4Repr {
        src,
        dst,
        protocol: 17,
        payload_len: 8 + payload_len,
        ttl: 64,
        tos: 0,
        ident: seq as u16,
        dont_frag: true,
    }
    .emit(&mut f[14..]);
    let dgram = &mut f[34..];
    udp::emit_header(dgram, 40000, TEST_PORT, payload_len);
    dgram[8..12].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in dgram[12..].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(31).wrapping_add(seq) as u8;
    }
    let sum = checksum::pseudo_v4(src, dst, 17, dgram.len() as u16) + checksum::sum(dgram);
    let c = checksum::finish(sum);
    dgram[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    f
}

/// The sequence number of one of our frames.
fn seq_of(frame: &[u8]) -> Option<u32> {
    let ours = frame.len() >= 46
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 17
        && frame[36..38] == TEST_PORT.to_be_bytes();
    ours.then(|| u32::from_be_bytes(frame[42..46].try_into().unwrap()))
}

/// Frame sizes from the smallest Ethernet frame to a full 1500-MTU one.
fn size(i: u32) -> usize {
    [60, 64, 128, 512, 1000, 1514][i as usize % 6]
}

/// Receives until `want` of our frames came (others are recycled).
fn receive(port: &mut XskPort, want: usize, into: &mut Vec<PacketBuf<Frame>>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut burst = Vec::new();
    let mut got = 0;
    while got < want {
        assert!(Instant::now() < deadline, "received {got} of {want}; kernel: {:?}", port.socket().kernel_stats());
        if port.rx_burst(&mut burst, 32) == 0 {
            std::thread::yield_now();
        }
        for p in burst.drain(..) {
            if seq_of(p.data()).is_some() {
                into.push(p);
                got += 1;
            } else {
                port.recycle(p.into_frame());
            }
        }
    }
}

/// Our frames arriving at `peer`, `n` of them, in order of arrival.
fn peer_receives(peer: &PacketSocket, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while got.len() < n {
        match peer.recv(Duration::from_secs(5)) {
            Some(f) if seq_of(&f).is_some() => got.push(f),
            Some(_) => {}
            None => panic!("peer received {} of {n}", got.len()),
        }
    }
    got
}

/// Takes completions back until nothing is in flight.
fn settle(ports: &mut [&mut XskPort]) {
    let umem = ports[0].socket().umem().clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    while umem.accounting().tx > 0 {
        assert!(Instant::now() < deadline, "frames stuck in tx: {:?}", umem.accounting());
        for p in ports.iter_mut() {
            p.complete();
        }
        std::thread::yield_now();
    }
}

/// Every frame is free or given to the kernel to receive into, none in
/// the pipeline or in flight; the rings agree.
fn assert_all_home(umem: &Umem, ports: &[&XskPort]) {
    let acc = umem.accounting();
    eprintln!("accounting: {acc:?}");
    assert_eq!(acc.total(), umem.config().frames, "{acc:?}");
    assert_eq!((acc.pipeline, acc.tx), (0, 0), "{acc:?}");
    assert_eq!(acc.free + acc.fill, umem.config().frames);
    let mut on_fill_rings = 0;
    for p in ports {
        let levels = p.socket().ring_levels();
        eprintln!("rings of socket {:?}: {levels:?}", p.socket().id());
        assert_eq!((levels.rx, levels.tx, levels.completion), (0, 0, 0));
        on_fill_rings += levels.fill;
    }
    // The kernel may hold a few it took off a fill ring and has not used.
    assert!(on_fill_rings <= acc.fill, "{on_fill_rings} on fill rings, {acc:?}");
    for addr in (0..umem.config().frames as u64).map(|i| i * umem.config().frame_size as u64) {
        assert!(matches!(umem.place(addr), Some(FramePlace::Free | FramePlace::Fill(_))));
    }
}

/// After the sockets are closed every frame is free again.
fn assert_all_free_after_close(umem: &Umem) {
    let acc = umem.accounting();
    assert_eq!(acc, FrameAccounting { free: umem.config().frames, ..Default::default() });
}

#[test]
fn receive_bursts_carry_the_bytes_sent() {
    let lab = Lab::new(1);
    let (a, b) = lab.pairs[0].clone();
    let (peer, _peer_xdp) = lab.in_peer(|| (PacketSocket::open(&b), pass(&b)));
    lab.run(|| {
        let umem = Umem::new(UMEM).unwrap();
        let socket = XskSocket::bind(&umem, ifindex(&a), 0, &CONFIG).unwrap();
        eprintln!("mode {:?}, notes {:?}, bind attempts {}", socket.mode(), socket.notes(), socket.bind_attempts());
        assert_eq!(socket.mode(), Mode::Copy, "veth has no zero-copy AF_XDP");
        assert!(socket.notes()[0].starts_with("zero-copy bind refused"), "{:?}", socket.notes());
        let _xdp = redirect_to(&a, &socket);
        let mut port = XskPort::new(1, socket);

        // More frames than the fill ring holds, so it is refilled.
        let sent: Vec<Vec<u8>> = (0..300).map(|i| udp_frame(i, size(i))).collect();
        let mut got = Vec::new();
        for batch in sent.chunks(30) {
            for f in batch {
                peer.send(f);
            }
            receive(&mut port, batch.len(), &mut got);
            for (p, f) in got.drain(..).zip(batch) {
                assert_eq!(p.data(), &f[..], "frame {:?}", seq_of(f));
                assert_eq!(p.headroom(), FRAME_HEADROOM, "rx address is the frame's + XDP_PACKET_HEADROOM");
                assert!(p.tailroom() >= FRAME_TAILROOM, "{} bytes behind a {}-byte frame", p.tailroom(), p.len());
                port.recycle(p.into_frame());
            }
        }
        assert!(port.stats().rx as usize >= sent.len());
        assert_eq!(port.socket().kernel_stats().unwrap().rx_dropped, 0);
        assert_all_home(&umem, &[&port]);
        drop(port);
        assert_all_free_after_close(&umem);
    });
}

#[test]
fn rx_descriptors_point_past_both_headrooms() {
    // A UMEM headroom of FRAME_HEADROOM on top of the kernel's own fits a
    // full frame only in 4096-byte frames; packets then start 512 bytes in.
    let config = UmemConfig { frame_size: 4096, frames: 128, headroom: FRAME_HEADROOM as u32 };
    let lab = Lab::new(1);
    let (a, b) = lab.pairs[0].clone();
    let (peer, _peer_xdp) = lab.in_peer(|| (PacketSocket::open(&b), pass(&b)));
    lab.run(|| {
        let umem = Umem::new(config).unwrap();
        assert_eq!(umem.rx_offset(), 512);
        let socket = XskSocket::bind(&umem, ifindex(&a), 0, &CONFIG).unwrap();
        let _xdp = redirect_to(&a, &socket);
        let mut port = XskPort::new(1, socket);
        let frame = udp_frame(7, 1514);
        peer.send(&frame);
        let mut got = Vec::new();
        receive(&mut port, 1, &mut got);
        let p = got.pop().unwrap();
        assert_eq!((p.headroom(), p.data()), (512, &frame[..]));
        assert_eq!(p.tailroom(), 4096 - 512 - 1514);
        drop(p);
        assert_all_home(&umem, &[&port]);
    });
}

#[test]
fn transmit_bursts_arrive_on_the_peer() {
    let lab = Lab::new(1);
    let (a, b) = lab.pairs[0].clone();
    let (peer, _peer_xdp) = lab.in_peer(|| (PacketSocket::open(&b), pass(&b)));
    lab.run(|| {
        let umem = Umem::new(UMEM).unwrap();
        let config = XskConfig { busy_poll: Some(BusyPoll { usecs: 20, budget: 64 }), ..CONFIG };
        let socket = XskSocket::bind(&umem, ifindex(&a), 0, &config).unwrap();
        eprintln!("busy poll: {:?}", socket.busy_poll());
        let mut port = XskPort::new(1, socket);

        // Bursts of 40: more than one copy-mode kick sends (32).
        let sent: Vec<Vec<u8>> = (0..200).map(|i| udp_frame(i, size(i))).collect();
        for batch in sent.chunks(40) {
            let bufs: Vec<_> = batch
                .iter()
                .map(|f| {
                    let mut p = port.alloc().expect("a free frame");
                    p.push_back(f.len()).unwrap();
                    p.data_mut().copy_from_slice(f);
                    p
                })
                .collect();
            port.tx_burst(&mut bufs.into_iter());
        }
        let got = peer_receives(&peer, sent.len());
        assert_eq!(got, sent, "all arrive, in order, unchanged");
        let stats = port.stats();
        eprintln!("stats {stats:?}");
        assert_eq!((stats.tx, stats.tx_full, stats.tx_copied), (200, 0, 0));
        assert!(stats.tx_kicks >= 200 / 32, "copy mode needs a kick per 32 frames");

        // A frame of another UMEM (another worker's) is copied, and its
        // own frame goes home.
        let other = Umem::new(UmemConfig { frames: 4, ..UMEM }).unwrap();
        let mut p = PacketBuf::new(other.alloc().unwrap(), FRAME_HEADROOM, 0).unwrap();
        let frame = udp_frame(1000, 100);
        p.push_back(frame.len()).unwrap();
        p.data_mut().copy_from_slice(&frame);
        port.tx_burst(&mut std::iter::once(p));
        assert_eq!(peer_receives(&peer, 1), [frame]);
        assert_eq!((port.stats().tx_copied, other.accounting().free), (1, 4));

        // A burst more than twice the tx ring (64): two ring-fulls go (the
        // kicks empty the ring in between), the rest is dropped and
        // counted, and every frame still comes home.
        let before = port.stats();
        let burst: Vec<Vec<u8>> = (2000..2150).map(|i| udp_frame(i, 60)).collect();
        let bufs: Vec<_> = burst
            .iter()
            .map(|f| {
                let mut p = port.alloc().expect("a free frame");
                p.push_back(f.len()).unwrap();
                p.data_mut().copy_from_slice(f);
                p
            })
            .collect();
        port.tx_burst(&mut bufs.into_iter());
        let stats = port.stats();
        assert_eq!((stats.tx - before.tx, stats.tx_full - before.tx_full), (128, 22), "{stats:?}");
        assert_eq!(peer_receives(&peer, 128), burst[..128]);

        settle(&mut [&mut port]);
        assert_all_home(&umem, &[&port]);
        drop(port);
        assert_all_free_after_close(&umem);
    });
}

#[test]
fn ports_and_frames_can_go_to_worker_threads() {
    fn spawnable<P: Port + Send + 'static>()
    where
        P::Buf: Send,
    {
    }
    spawnable::<XskPort>();
    fn shareable<T: Send + Sync>() {}
    shareable::<Umem>();
    shareable::<Frame>();
}

#[test]
fn shared_umem_forwards_between_interfaces_without_copying() {
    let lab = Lab::new(2);
    let ((a1, b1), (a2, b2)) = (lab.pairs[0].clone(), lab.pairs[1].clone());
    let (from, to, _peer_xdp) =
        lab.in_peer(|| (PacketSocket::open(&b1), PacketSocket::open(&b2), [pass(&b1), pass(&b2)]));
    lab.run(|| {
        let umem = Umem::new(UMEM).unwrap();
        let sa = XskSocket::bind(&umem, ifindex(&a1), 0, &CONFIG).unwrap();
        let sb = XskSocket::bind(&umem, ifindex(&a2), 0, &CONFIG).unwrap();
        eprintln!("modes {:?} / {:?} (shared), notes {:?}", sa.mode(), sb.mode(), sb.notes());
        assert_eq!(sb.mode(), sa.mode(), "a sharing socket takes the UMEM's mode");
        assert!(sb.uses_need_wakeup());
        let same_queue = XskSocket::bind(&umem, ifindex(&a1), 0, &CONFIG).unwrap_err();
        assert!(same_queue.to_string().contains("already has a socket there"), "{same_queue}");
        let _xdp = [redirect_to(&a1, &sa), redirect_to(&a2, &sb)];
        let (ida, idb) = (sa.id(), sb.id());
        let (mut pa, mut pb) = (XskPort::new(1, sa), XskPort::new(2, sb));

        let sent: Vec<Vec<u8>> = (0..200).map(|i| udp_frame(i, size(i))).collect();
        let mut forwarded = Vec::new();
        let mut got = Vec::new();
        for batch in sent.chunks(25) {
            for f in batch {
                from.send(f);
            }
            receive(&mut pa, batch.len(), &mut got);
            forwarded.extend(got.iter().map(|p| p.frame().addr()));
            pb.tx_burst(&mut got.drain(..));
        }
        assert_eq!(peer_receives(&to, sent.len()), sent);
        assert_eq!((pb.stats().tx, pb.stats().tx_copied), (200, 0));
        settle(&mut [&mut pa, &mut pb]);

        // Each frame went from A's receive side to B's transmit side and
        // back to the free list: the same frame, never copied.
        let log = umem.shared().with_pool(|pool| std::mem::take(&mut pool.log));
        for addr in forwarded {
            let moves: Vec<_> = log.iter().filter(|m| m.0 == addr).map(|m| (m.1, m.2)).collect();
            let hop = moves.iter().position(|&m| m == (FramePlace::Fill(ida), FramePlace::Pipeline)).unwrap();
            assert_eq!(
                moves[hop..hop + 3],
                [
                    (FramePlace::Fill(ida), FramePlace::Pipeline),
                    (FramePlace::Pipeline, FramePlace::Tx(idb)),
                    (FramePlace::Tx(idb), FramePlace::Free)
                ],
                "frame {addr:#x}"
            );
        }
        assert_all_home(&umem, &[&pa, &pb]);
        drop((pa, pb));
        assert_all_free_after_close(&umem);
    });
}

#[test]
fn rebinding_a_queue_right_after_a_close_succeeds() {
    let lab = Lab::new(1);
    let a = lab.pairs[0].0.clone();
    lab.run(|| {
        for round in 0..3 {
            let umem = Umem::new(UMEM).unwrap();
            let start = Instant::now();
            let socket = XskSocket::bind(&umem, ifindex(&a), 0, &CONFIG).unwrap();
            eprintln!("round {round}: bound after {} attempt(s), {:?}", socket.bind_attempts(), start.elapsed());
            let _xdp = redirect_to(&a, &socket);
            drop(socket);
            assert_all_free_after_close(&umem);
        }
    });
}
