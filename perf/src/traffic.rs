//! Our own packet generator and sink, for the `wire` benchmark and for
//! anyone without trafgen, pktgen or TRex: UDP/IPv4 frames sent on an
//! AF_XDP socket (the engine's `io::xsk`) at a set rate, with a set size
//! mix and flow count, each carrying a sequence number and the time it was
//! sent; and a UDP sink that counts them, checks their order and measures
//! one-way latency from the kernel's receive timestamp (both ends read
//! CLOCK_REALTIME on one machine, so one-way latency needs no clock sync).
//!
//! The stamp in the UDP payload (24 bytes, so a 64-byte IP packet holds
//! it): `vpgb`, the flow (u32), the sequence number (u64, one counter over
//! all flows) and the send time in ns since the Unix epoch (u64), all
//! big-endian.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vpngw_engine::io::xsk::{Mode, ModePreference, UmemConfig, XskConfig, XskPort, XskSocket};
use vpngw_engine::io::Port;
use vpngw_engine::wire::checksum::checksum;

pub const MAGIC: [u8; 4] = *b"vpgb";
pub const STAMP_LEN: usize = 24;
/// The smallest IP packet that holds the stamp.
pub const MIN_SIZE: usize = 20 + 8 + STAMP_LEN;
/// The simple IMIX (7:4:1) in IP bytes, its largest size 1400 so that ESP
/// still fits a 1500-byte outside MTU: 346 bytes on average.
pub const IMIX: [(usize, usize); 3] = [(64, 7), (576, 4), (1400, 1)];
/// Source ports of the flows: `FIRST_PORT + flow`.
const FIRST_PORT: u16 = 10_000;

/// The IP packet sizes sent, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeMix {
    Fixed(usize),
    Imix,
}

impl SizeMix {
    /// One cycle of sizes: the generator sends them in this order, again
    /// and again (IMIX interleaved, not in runs).
    pub fn cycle(&self) -> Vec<usize> {
        match self {
            SizeMix::Fixed(n) => vec![*n],
            SizeMix::Imix => {
                let mut left: Vec<(usize, usize)> = IMIX.to_vec();
                let mut out = Vec::new();
                while left.iter().any(|&(_, n)| n > 0) {
                    for (size, n) in left.iter_mut().filter(|(_, n)| *n > 0) {
                        out.push(*size);
                        *n -= 1;
                    }
                }
                out
            }
        }
    }

    /// Mean IP bytes per packet.
    pub fn mean(&self) -> f64 {
        let c = self.cycle();
        c.iter().sum::<usize>() as f64 / c.len() as f64
    }

    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for SizeMix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeMix::Fixed(n) => write!(f, "{n}"),
            SizeMix::Imix => f.write_str("imix"),
        }
    }
}

/// As its label: `"64"`, `"imix"`.
impl Serialize for SizeMix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label())
    }
}

impl std::str::FromStr for SizeMix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(SizeMix::Imix);
        }
        match s.parse::<usize>() {
            Ok(n) if (MIN_SIZE..=1500).contains(&n) => Ok(SizeMix::Fixed(n)),
            _ => Err(format!("{s:?}: an IP packet size from {MIN_SIZE} to 1500 bytes, or imix")),
        }
    }
}

/// Who sends to whom.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    /// Flows, told apart by UDP source port (1 to 50,000).
    pub flows: u32,
}

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME, which the kernel's
/// receive timestamps use too).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Writes one frame (Ethernet, IPv4 with DF, UDP, the stamp, filler) of an
/// IP packet of `size` bytes into `out`; returns the frame's length.
pub fn write_frame(out: &mut [u8], spec: &FlowSpec, size: usize, seq: u64, sent_ns: u64) -> usize {
    let size = size.max(MIN_SIZE);
    let len = 14 + size;
    let f = &mut out[..len];
    f[0..6].copy_from_slice(&spec.dst_mac);
    f[6..12].copy_from_slice(&spec.src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&spec.src.octets());
    ip[16..20].copy_from_slice(&spec.dst.octets());
    let sum = checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let flow = (seq % u64::from(spec.flows.max(1))) as u32;
    let udp = &mut f[34..];
    udp[0..2].copy_from_slice(&(FIRST_PORT + flow as u16).to_be_bytes());
    udp[2..4].copy_from_slice(&spec.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&((size - 20) as u16).to_be_bytes());
    // No UDP checksum (zero: allowed over IPv4), as trafgen sends.
    udp[6..8].fill(0);
    let stamp = &mut udp[8..8 + STAMP_LEN];
    stamp[0..4].copy_from_slice(&MAGIC);
    stamp[4..8].copy_from_slice(&flow.to_be_bytes());
    stamp[8..16].copy_from_slice(&seq.to_be_bytes());
    stamp[16..24].copy_from_slice(&sent_ns.to_be_bytes());
    udp[8 + STAMP_LEN..].fill(0x5a);
    len
}

/// A stamp read back from a UDP payload: (flow, sequence, sent ns).
pub fn read_stamp(payload: &[u8]) -> Option<(u32, u64, u64)> {
    let s = payload.get(..STAMP_LEN)?;
    if s[0..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_be_bytes(s[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_be_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    Some((u32_at(4), u64_at(8), u64_at(16)))
}

/// What a generator run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenReport {
    pub interface: String,
    /// `copy` or `zero-copy`.
    pub mode: String,
    /// Packets per second asked for (0: as fast as it can).
    pub rate_pps: f64,
    pub sizes: String,
    pub flows: u32,
    /// Frames the kernel took from the tx ring (what left).
    pub sent: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub sent_pps: f64,
}

/// Sends for `seconds` on `interface` (queue 0): at `rate_pps`, or as fast
/// as the socket takes frames when it is 0. Frames are only put on the tx
/// ring when it has room, so the sequence numbers that leave have no gaps.
pub fn generate(
    interface: &str,
    spec: &FlowSpec,
    mix: &SizeMix,
    rate_pps: f64,
    seconds: f64,
) -> Result<GenReport, String> {
    let ifindex = ifindex(interface)?;
    let umem = vpngw_engine::io::xsk::Umem::new(UmemConfig { frames: 4096, ..UmemConfig::default() })
        .map_err(|e| format!("UMEM: {e}"))?;
    // A sender: a small fill ring (nothing is received), a large tx ring.
    let config = XskConfig {
        fill_size: 64,
        rx_size: 64,
        tx_size: 2048,
        completion_size: 2048,
        mode: ModePreference::Auto,
        ..XskConfig::default()
    };
    let socket = XskSocket::bind(&umem, ifindex, 0, &config).map_err(|e| format!("AF_XDP on {interface}: {e}"))?;
    let mode = match socket.mode() {
        Mode::ZeroCopy => "zero-copy",
        Mode::Copy => "copy",
    };
    let mut port = XskPort::new(0, socket);
    let sizes = mix.cycle();
    let (mut seq, mut bytes) = (0u64, 0u64);
    let mut burst = Vec::with_capacity(64);
    // Frames sent together at a set rate: as many as are owed every 50 us
    // (1 to 32), so that pacing costs sleeps rather than a spinning CPU.
    let min_burst = ((rate_pps * 50e-6) as u64).clamp(1, 32);
    timer_slack_1us();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        port.complete();
        // Frames owed by now at the set rate (one burst at a time when
        // there is no rate).
        let due =
            if rate_pps > 0.0 { (((now - start).as_secs_f64() * rate_pps) as u64 + 1).saturating_sub(seq) } else { 64 };
        if due < min_burst {
            // Early: sleep until a burst is owed (so that a generator at
            // a set rate leaves its CPU to others in between), spin when
            // that is too close to sleep for.
            let next = start + Duration::from_secs_f64((seq + min_burst) as f64 / rate_pps);
            let wait = next.saturating_duration_since(Instant::now());
            if wait > Duration::from_micros(20) {
                std::thread::sleep(wait - Duration::from_micros(5));
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        let levels = port.socket().ring_levels();
        let room = config.tx_size.saturating_sub(levels.tx) as u64;
        let n = due.min(64).min(room);
        for _ in 0..n {
            let Some(mut p) = port.alloc() else { break };
            let size = sizes[(seq % sizes.len() as u64) as usize];
            p.push_back(14 + size).map_err(|_| "a frame too small for the packet".to_string())?;
            let len = write_frame(p.data_mut(), spec, size, seq, now_ns());
            debug_assert_eq!(len, p.len());
            burst.push(p);
            seq += 1;
            bytes += size as u64;
        }
        port.tx_burst(&mut burst.drain(..));
    }
    let seconds = start.elapsed().as_secs_f64();
    // Let the last frames go.
    let drain_until = Instant::now() + Duration::from_millis(200);
    while port.socket().ring_levels().tx > 0 && Instant::now() < drain_until {
        port.complete();
        std::thread::sleep(Duration::from_micros(100));
    }
    port.complete();
    let stats = port.stats();
    Ok(GenReport {
        interface: interface.into(),
        mode: mode.into(),
        rate_pps,
        sizes: mix.label(),
        flows: spec.flows,
        sent: stats.tx,
        bytes,
        seconds,
        sent_pps: stats.tx as f64 / seconds,
    })
}

/// Sleeps end within a microsecond of when they were asked to (the default
/// slack is 50 us), so that pacing by sleeping keeps the rate even.
fn timer_slack_1us() {
    // SAFETY: PR_SET_TIMERSLACK takes its value by value and touches no
    // memory of ours; it only affects this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
}

fn ifindex(interface: &str) -> Result<u32, String> {
    let path = format!("/sys/class/net/{interface}/ifindex");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("interface {interface}: {e}"))?;
    text.trim().parse().map_err(|_| format!("{path}: not a number"))
}

/// An interface's MAC address, from sysfs.
pub fn mac_of(interface: &str) -> Result<[u8; 6], String> {
    let path = format!("/sys/class/net/{interface}/address");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("interface {interface}: {e}"))?;
    parse_mac(text.trim())
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<u8> = s.split(':').filter_map(|p| u8::from_str_radix(p, 16).ok()).collect();
    <[u8; 6]>::try_from(parts).map_err(|_| format!("{s:?}: a MAC address (aa:bb:cc:dd:ee:ff)"))
}

/// Latency percentiles, nanoseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min_ns: h.min(),
            p50_ns: h.value_at_quantile(0.50),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            mean_ns: h.mean(),
        }
    }
}

/// What a sink saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SinkReport {
    pub port: u16,
    /// Datagrams with our stamp.
    pub received: u64,
    /// Datagrams without it (counted, not measured).
    pub foreign: u64,
    pub bytes: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Arrived after a later sequence number had.
    pub reordered: u64,
    /// Sequence numbers between the first and the last that never came.
    pub missing: u64,
    /// Datagrams the kernel dropped at this socket (its buffer full): lost
    /// at the sink, not on the way.
    pub socket_drops: u64,
    /// From the stamp's send time to the kernel's receive time.
    pub latency: Latency,
    pub seconds: f64,
}

/// How long the sink sleeps once it has emptied its socket.
const SINK_NAP: Duration = Duration::from_micros(500);

/// Receives on UDP `port` until `seconds` have passed, or until `idle_ms`
/// pass without a datagram once one has arrived. Latency is measured on
/// the packets sent from `warmup_ms` after the first one on (a generator's
/// first moments, its page faults and cold caches, are not the gateway's).
pub fn sink(port: u16, seconds: f64, idle_ms: u64, warmup_ms: u64) -> Result<SinkReport, String> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("UDP port {port}: {e}"))?;
    socket.set_read_timeout(Some(Duration::from_millis(20))).map_err(|e| e.to_string())?;
    recv::prepare(&socket)?;
    timer_slack_1us();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
    let mut r = SinkReport { port, ..SinkReport::default() };
    let mut highest: Option<u64> = None;
    let mut lowest: Option<u64> = None;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let idle = Duration::from_millis(idle_ms);
    let mut last = None::<Instant>;
    let mut measured_from = None::<u64>;
    let mut batch = recv::Batch::new();
    while Instant::now() < end && last.is_none_or(|t: Instant| t.elapsed() < idle) {
        let n = batch.receive(&socket)?;
        if n == 0 {
            continue;
        }
        if n < recv::BATCH {
            // Drained: nap, and let the socket's buffer (16 MiB) fill.
            // Taking the CPU for short turns rather than whole scheduler
            // slices keeps the sink from stalling a busy-polling gateway
            // that shares the CPU (the latency is the kernel's receive
            // time, which the nap does not move).
            std::thread::sleep(SINK_NAP);
        }
        last = Some(Instant::now());
        for (payload, rx_ns) in batch.iter(n) {
            let Some((_, seq, sent_ns)) = read_stamp(payload) else {
                r.foreign += 1;
                continue;
            };
            r.received += 1;
            r.bytes += payload.len() as u64 + 28;
            if highest.is_some_and(|h| seq < h) {
                r.reordered += 1;
            }
            highest = Some(highest.map_or(seq, |h| h.max(seq)));
            lowest = Some(lowest.map_or(seq, |l| l.min(seq)));
            let from = *measured_from.get_or_insert(sent_ns.saturating_add(warmup_ms * 1_000_000));
            if sent_ns >= from && rx_ns >= sent_ns {
                hist.saturating_record(rx_ns - sent_ns);
            }
        }
    }
    r.seconds = start.elapsed().as_secs_f64();
    r.first_seq = lowest;
    r.last_seq = highest;
    if let (Some(l), Some(h)) = (lowest, highest) {
        r.missing = (h - l + 1).saturating_sub(r.received);
    }
    r.socket_drops = batch.socket_drops;
    r.latency = Latency::of(&hist);
    Ok(r)
}

/// Batched receive with kernel timestamps: recvmmsg(2) and SO_TIMESTAMPNS.
/// With `timer_slack_1us` above, the only `unsafe` of the benchmarks (the
/// libc calls and the control messages they fill).
mod recv {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    pub const BATCH: usize = 64;
    const DATA: usize = 2048;
    /// Room for one `struct timespec` control message.
    const CONTROL: usize = 64;

    /// SO_TIMESTAMPNS on, SO_RXQ_OVFL on (socket drops counted), a large
    /// receive buffer (forced past rmem_max: the sink runs as root).
    pub fn prepare(socket: &UdpSocket) -> Result<(), String> {
        let fd = socket.as_raw_fd();
        for (name, value, what) in [
            (libc::SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS"),
            (libc::SO_RXQ_OVFL, 1, "SO_RXQ_OVFL"),
            (libc::SO_RCVBUFFORCE, 16 << 20, "SO_RCVBUFFORCE"),
        ] {
            let v: libc::c_int = value;
            // SAFETY: fd is an open socket; the option value is a c_int
            // that lives across the call, and its size is passed.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    name,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 && name != libc::SO_RCVBUFFORCE {
                return Err(format!("{what}: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    pub struct Batch {
        data: Vec<[u8; DATA]>,
        control: Vec<[u8; CONTROL]>,
        iov: Vec<libc::iovec>,
        msgs: Vec<libc::mmsghdr>,
        stamps: Vec<u64>,
        /// What the kernel has dropped at this socket so far (its buffer
        /// full), as the latest SO_RXQ_OVFL control message said.
        pub socket_drops: u64,
    }

    impl Batch {
        pub fn new() -> Self {
            Batch {
                data: vec![[0; DATA]; BATCH],
                control: vec![[0; CONTROL]; BATCH],
                // SAFETY: iovec and mmsghdr are plain C structs for which
                // all-zero bytes are a valid value (null pointers, zero
                // lengths); `receive` points them at the buffers first.
                iov: vec![unsafe { std::mem::zeroed() }; BATCH],
                msgs: vec![unsafe { std::mem::zeroed() }; BATCH],
                stamps: vec![0; BATCH],
                socket_drops: 0,
            }
        }

        /// Datagrams waiting (at least one, or none after the socket's
        /// read timeout).
        pub fn receive(&mut self, socket: &UdpSocket) -> Result<usize, String> {
            for i in 0..BATCH {
                self.iov[i] = libc::iovec { iov_base: self.data[i].as_mut_ptr().cast(), iov_len: DATA };
                let hdr = &mut self.msgs[i].msg_hdr;
                hdr.msg_name = std::ptr::null_mut();
                hdr.msg_namelen = 0;
                hdr.msg_iov = &mut self.iov[i];
                hdr.msg_iovlen = 1;
                hdr.msg_control = self.control[i].as_mut_ptr().cast();
                hdr.msg_controllen = CONTROL;
                hdr.msg_flags = 0;
                self.msgs[i].msg_len = 0;
            }
            // SAFETY: every mmsghdr points at an iovec and a control
            // buffer owned by `self`, with their true lengths, and they
            // stay in place for the call; BATCH entries exist.
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.msgs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted => {
                        Ok(0)
                    }
                    _ => Err(format!("recvmmsg: {e}")),
                };
            }
            let n = n as usize;
            for i in 0..n {
                self.stamps[i] = 0;
                let hdr = &self.msgs[i].msg_hdr;
                // SAFETY: the kernel filled msg_control with msg_controllen
                // bytes of well-formed control messages; CMSG_FIRSTHDR and
                // CMSG_NXTHDR stay inside them, and each message's data
                // holds what its level and type say (a timespec, a u32).
                unsafe {
                    let mut c = libc::CMSG_FIRSTHDR(hdr);
                    while !c.is_null() {
                        let data = libc::CMSG_DATA(c);
                        match ((*c).cmsg_level, (*c).cmsg_type) {
                            (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS) => {
                                let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                                self.stamps[i] = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                            }
                            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                                self.socket_drops = u64::from(std::ptr::read_unaligned(data.cast::<u32>()));
                            }
                            _ => {}
                        }
                        c = libc::CMSG_NXTHDR(hdr, c);
                    }
                }
            }
            Ok(n)
        }

        /// The first `n` datagrams: payload and kernel receive time (ns
        /// since the epoch; 0 if the kernel gave none).
        pub fn iter(&self, n: usize) -> impl Iterator<Item = (&[u8], u64)> {
            (0..n).map(|i| (&self.data[i][..self.msgs[i].msg_len as usize], self.stamps[i]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FlowSpec {
        FlowSpec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(10, 1, 0, 5),
            dst: Ipv4Addr::new(172, 16, 1, 98),
            dst_port: 9,
            flows: 4,
        }
    }

    #[test]
    fn a_frame_carries_its_stamp_and_valid_headers() {
        let mut buf = [0u8; 1600];
        for size in [MIN_SIZE, 64, 576, 1400, 1500] {
            let len = write_frame(&mut buf, &spec(), size, 7, 123_456_789);
            assert_eq!(len, 14 + size);
            let ip = &buf[14..14 + size];
            assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, size);
            assert_eq!(checksum(&ip[..20]), 0, "a valid IPv4 header checksum sums to zero");
            assert_eq!(u16::from_be_bytes([ip[20], ip[21]]), FIRST_PORT + 3, "flow 7 % 4");
            assert_eq!(u16::from_be_bytes([ip[24], ip[25]]) as usize, size - 20);
            assert_eq!(read_stamp(&ip[28..]), Some((3, 7, 123_456_789)));
        }
        assert_eq!(read_stamp(b"not a stamp, but long enough to be one"), None);
        assert_eq!(read_stamp(&MAGIC), None, "too short");
    }

    #[test]
    fn imix_is_seven_four_one_interleaved() {
        let c = SizeMix::Imix.cycle();
        assert_eq!(c.len(), 12);
        assert_eq!(c.iter().filter(|&&s| s == 64).count(), 7);
        assert_eq!(c.iter().filter(|&&s| s == 576).count(), 4);
        assert_eq!(c.iter().filter(|&&s| s == 1400).count(), 1);
        assert_eq!(&c[..3], &[64, 576, 1400]);
        assert!((SizeMix::Imix.mean() - 346.0).abs() < 1e-9);
        assert_eq!("imix".parse::<SizeMix>(), Ok(SizeMix::Imix));
        assert_eq!("64".parse::<SizeMix>(), Ok(SizeMix::Fixed(64)));
        assert!("51".parse::<SizeMix>().is_err());
        assert!("1501".parse::<SizeMix>().is_err());
    }

    #[test]
    fn the_sink_counts_order_gaps_and_latency_over_loopback() {
        let port = 40_000 + (std::process::id() % 20_000) as u16;
        let sink = std::thread::spawn(move || sink(port, 5.0, 300, 0));
        std::thread::sleep(Duration::from_millis(100));
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 200];
        // 0..100 but 50 missing, and 10 sent after 20.
        let order: Vec<u64> = (0..100).filter(|&s| s != 50 && s != 10).chain([10]).collect();
        for seq in &order {
            let len = write_frame(&mut buf, &spec(), 64, *seq, now_ns());
            tx.send_to(&buf[42..len], ("127.0.0.1", port)).unwrap();
        }
        tx.send_to(b"someone else's datagram", ("127.0.0.1", port)).unwrap();
        let r = sink.join().unwrap().unwrap();
        assert_eq!(r.received, 99);
        assert_eq!(r.foreign, 1);
        assert_eq!((r.first_seq, r.last_seq), (Some(0), Some(99)));
        assert_eq!(r.missing, 1);
        assert_eq!(r.reordered, 1);
        assert_eq!(r.latency.count, 99, "every datagram had a kernel timestamp");
        assert!(r.latency.min_ns >= 100 && r.latency.max_ns < 1_000_000_000, "{:?}", r.latency);
        assert!(r.latency.p50_ns <= r.latency.p99_ns && r.latency.p99_ns <= r.latency.max_ns);
    }
}
