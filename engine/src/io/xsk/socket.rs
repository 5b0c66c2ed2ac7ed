//! An AF_XDP socket bound to one queue of one interface, with its four
//! rings. The first socket of a UMEM registers it (XDP_UMEM_REG) and binds
//! with the mode flags; the others share it (XDP_SHARED_UMEM), each with its
//! own fill and completion rings, and inherit the mode.

use super::port::refill;
use super::ring::{map_len, Consumer, Producer, RingMap};
use super::sys::{self, Mapping};
use super::umem::{BoundSocket, SocketId, Umem};
use super::XskError;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How the kernel moves packets between the interface and the UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The driver DMAs into and out of UMEM frames.
    ZeroCopy,
    /// The kernel copies (veth, and drivers without AF_XDP support).
    Copy,
}

/// Which mode to bind in (a socket sharing a UMEM takes the UMEM's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModePreference {
    /// Zero-copy if the driver can, else copy.
    Auto,
    ZeroCopy,
    Copy,
}

/// Busy polling to ask for: the kernel polls the device from the socket's
/// `recvfrom`/`sendto` instead of waiting for interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// SO_BUSY_POLL: microseconds to busy poll per call.
    pub usecs: u32,
    /// SO_BUSY_POLL_BUDGET: packets per busy poll.
    pub budget: u32,
}

/// The busy polling options the kernel took. One it refused is `false` or
/// `None`, with a note saying why; the socket works without it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusyPollState {
    pub prefer: bool,
    pub usecs: Option<u32>,
    pub budget: Option<u32>,
    pub notes: Vec<String>,
}

impl BusyPollState {
    pub fn active(&self) -> bool {
        self.prefer || self.usecs.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// Ring sizes, each a power of two.
    pub fill_size: u32,
    pub completion_size: u32,
    pub rx_size: u32,
    pub tx_size: u32,
    pub mode: ModePreference,
    /// XDP_USE_NEED_WAKEUP: the kernel says when it needs a wake-up call
    /// (a `sendto` to transmit, a `recvfrom` to receive) instead of needing
    /// one every time.
    pub need_wakeup: bool,
    pub busy_poll: Option<BusyPoll>,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            fill_size: 1024,
            completion_size: 1024,
            rx_size: 1024,
            tx_size: 1024,
            mode: ModePreference::Auto,
            need_wakeup: true,
            busy_poll: None,
        }
    }
}

impl XskConfig {
    fn validate(&self) -> Result<(), XskError> {
        let sizes = [
            ("fill", self.fill_size),
            ("completion", self.completion_size),
            ("rx", self.rx_size),
            ("tx", self.tx_size),
        ];
        for (ring, size) in sizes {
            if !size.is_power_of_two() || size > 1 << 20 {
                return Err(XskError::Config(format!("{ring} ring size {size}: must be a power of two up to 2^20")));
            }
        }
        Ok(())
    }
}

/// Entries waiting on each ring: what the other side has not taken yet
/// (fill, tx: the kernel; rx, completion: us).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingLevels {
    pub fill: u32,
    pub rx: u32,
    pub tx: u32,
    pub completion: u32,
}

/// The kernel's counters for a socket (XDP_STATISTICS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Received but dropped (rx ring full, or the packet did not fit).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// How long a bind keeps retrying while the queue is still held by a
/// socket the kernel has not finished tearing down (EBUSY).
pub const BIND_RETRY: Duration = Duration::from_secs(3);

pub struct XskSocket {
    // The rings come first: they are unmapped before the UMEM handle goes.
    pub(super) fill: Producer<u64>,
    pub(super) completion: Consumer<u64>,
    pub(super) rx: Consumer<sys::xdp_desc>,
    pub(super) tx: Producer<sys::xdp_desc>,
    /// `None` only while dropping.
    fd: Option<OwnedFd>,
    pub(super) umem: Umem,
    pub(super) id: SocketId,
    ifindex: u32,
    queue: u32,
    pub(super) mode: Mode,
    pub(super) need_wakeup: bool,
    pub(super) busy_poll: Option<BusyPollState>,
    bind_attempts: u32,
    notes: Vec<String>,
}

/// A socket with its rings set up, not yet bound.
struct Unbound {
    fd: OwnedFd,
    fill: Producer<u64>,
    completion: Consumer<u64>,
    rx: Consumer<sys::xdp_desc>,
    tx: Producer<sys::xdp_desc>,
    busy_poll: Option<BusyPollState>,
}

impl XskSocket {
    /// Binds a socket to queue `queue` of interface `ifindex` (in the
    /// calling thread's network namespace), its frames from `umem`. The
    /// first socket of a UMEM binds in the preferred mode (zero-copy
    /// first under `Auto`); later ones share the UMEM and its mode, and
    /// must each be on a different (interface, queue). EBUSY (the queue's
    /// previous socket still being torn down) is retried for up to
    /// [`BIND_RETRY`].
    pub fn bind(umem: &Umem, ifindex: u32, queue: u32, config: &XskConfig) -> Result<Self, XskError> {
        config.validate()?;
        let start = Instant::now();
        let mut delay = Duration::from_millis(5);
        let mut attempts = 1;
        loop {
            match Self::try_bind(umem, ifindex, queue, config) {
                Err(e) if e.os_error() == Some(libc::EBUSY) && start.elapsed() < BIND_RETRY => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(100));
                    attempts += 1;
                }
                Ok(mut s) => {
                    s.bind_attempts = attempts;
                    return Ok(s);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_bind(umem: &Umem, ifindex: u32, queue: u32, config: &XskConfig) -> Result<Self, XskError> {
        let here = format!("AF_XDP socket on ifindex {ifindex} queue {queue}");
        // The pool stays locked while binding, so the socket shared with
        // cannot close meanwhile.
        umem.shared().with_pool(|pool| {
            if pool.sockets.iter().flatten().any(|s| s.ifindex == ifindex && s.queue == queue) {
                return Err(XskError::Config(format!("{here}: this UMEM already has a socket there")));
            }
            let mut notes = Vec::new();
            let share_with = pool.sockets.iter().flatten().next().map(|s| s.fd);
            let (sock, need_wakeup) = match (share_with, pool.inherited) {
                (Some(fd), Some((_, need_wakeup))) => {
                    let sock = Unbound::open(umem, config, false, &here)?;
                    // Sharing: no mode or wake-up flags (they are the UMEM's
                    // already; passing any is EINVAL).
                    bind_to(&sock.fd, ifindex, queue, libc::XDP_SHARED_UMEM, fd)
                        .map_err(|e| XskError::sys(format!("{here}: bind sharing the UMEM of fd {fd}"), e))?;
                    (sock, need_wakeup)
                }
                _ => {
                    let modes: &[Mode] = match config.mode {
                        ModePreference::Auto => &[Mode::ZeroCopy, Mode::Copy],
                        ModePreference::ZeroCopy => &[Mode::ZeroCopy],
                        ModePreference::Copy => &[Mode::Copy],
                    };
                    let wakeup = if config.need_wakeup { libc::XDP_USE_NEED_WAKEUP } else { 0 };
                    let mut bound = None;
                    for (i, &mode) in modes.iter().enumerate() {
                        // A failed bind may leave the socket's rings torn
                        // down: every attempt starts from a new socket.
                        let sock = Unbound::open(umem, config, true, &here)?;
                        let flag = if mode == Mode::ZeroCopy { libc::XDP_ZEROCOPY } else { libc::XDP_COPY };
                        match bind_to(&sock.fd, ifindex, queue, flag | wakeup, 0) {
                            Ok(()) => {
                                bound = Some(sock);
                                break;
                            }
                            Err(e) if i + 1 < modes.len() && e.raw_os_error() != Some(libc::EBUSY) => {
                                notes.push(format!("zero-copy bind refused ({e}); bound in copy mode"));
                            }
                            Err(e) => return Err(XskError::sys(format!("{here}: bind ({mode:?})"), e)),
                        }
                    }
                    (bound.expect("the last mode returns or binds"), config.need_wakeup)
                }
            };
            let mode = query_mode(sock.fd.as_fd()).map_err(|e| XskError::sys(format!("{here}: XDP_OPTIONS"), e))?;
            if pool.inherited.is_none() {
                pool.inherited = Some((mode, need_wakeup));
            }
            let id = pool.register(BoundSocket { fd: sock.fd.as_raw_fd(), ifindex, queue });
            // Frames to receive into from the start: what arrives before
            // the first burst is not dropped for want of them.
            let mut fill = sock.fill;
            refill(&mut fill, pool, id);
            if let Some(b) = &sock.busy_poll {
                notes.extend(b.notes.iter().cloned());
            }
            Ok(Self {
                fill,
                completion: sock.completion,
                rx: sock.rx,
                tx: sock.tx,
                fd: Some(sock.fd),
                umem: umem.clone(),
                id,
                ifindex,
                queue,
                mode,
                need_wakeup,
                busy_poll: sock.busy_poll,
                bind_attempts: 1,
                notes,
            })
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the kernel says when it needs a wake-up (the UMEM's first
    /// socket's choice, for every socket sharing it).
    pub fn uses_need_wakeup(&self) -> bool {
        self.need_wakeup
    }

    pub fn busy_poll(&self) -> Option<&BusyPollState> {
        self.busy_poll.as_ref()
    }

    /// Binds it took (more than one when the queue was busy).
    pub fn bind_attempts(&self) -> u32 {
        self.bind_attempts
    }

    /// What did not go as asked: zero-copy refused, busy polling options
    /// refused.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn id(&self) -> SocketId {
        self.id
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    pub fn umem(&self) -> &Umem {
        &self.umem
    }

    pub fn ring_levels(&self) -> RingLevels {
        RingLevels {
            fill: self.fill.level(),
            rx: self.rx.level(),
            tx: self.tx.level(),
            completion: self.completion.level(),
        }
    }

    pub fn kernel_stats(&self) -> Result<KernelStats, XskError> {
        let s: sys::xdp_statistics = sys::getsockopt(self.as_fd(), libc::SOL_XDP, libc::XDP_STATISTICS)
            .map_err(|e| XskError::sys("XDP_STATISTICS", e))?;
        Ok(KernelStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("set until drop").as_fd()
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl std::fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSocket")
            .field("ifindex", &self.ifindex)
            .field("queue", &self.queue)
            .field("mode", &self.mode)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for XskSocket {
    fn drop(&mut self) {
        let fd = self.fd.take();
        let (id, reclaim) = (self.id, self.mode == Mode::Copy);
        self.umem.shared().with_pool(|pool| {
            // Closing releases the socket: once close returns the kernel no
            // longer receives into its frames. In zero-copy mode the driver
            // lets go of them later (deferred), so they stay counted as the
            // socket's rather than be reused under a DMA.
            drop(fd);
            pool.unregister(id, reclaim);
        });
    }
}

impl Unbound {
    /// A new socket with its rings (and, for the UMEM's first socket, the
    /// UMEM registered), busy polling asked for.
    fn open(umem: &Umem, config: &XskConfig, register: bool, here: &str) -> Result<Self, XskError> {
        let err = |what: &str| {
            let what = format!("{here}: {what}");
            move |e: io::Error| XskError::sys(what, e)
        };
        let fd = sys::xdp_socket().map_err(err("socket(AF_XDP)"))?;
        let sock = fd.as_fd();
        if register {
            sys::setsockopt(sock, libc::SOL_XDP, libc::XDP_UMEM_REG, &umem.registration())
                .map_err(err("XDP_UMEM_REG"))?;
        }
        for (name, opt, size) in [
            ("XDP_UMEM_FILL_RING", libc::XDP_UMEM_FILL_RING, config.fill_size),
            ("XDP_UMEM_COMPLETION_RING", libc::XDP_UMEM_COMPLETION_RING, config.completion_size),
            ("XDP_RX_RING", libc::XDP_RX_RING, config.rx_size),
            ("XDP_TX_RING", libc::XDP_TX_RING, config.tx_size),
        ] {
            sys::setsockopt(sock, libc::SOL_XDP, opt, &size).map_err(err(name))?;
        }
        let off: sys::xdp_mmap_offsets =
            sys::getsockopt(sock, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS).map_err(err("XDP_MMAP_OFFSETS"))?;
        let map = |off: &libc::xdp_ring_offset, size: u32, entry: usize, pgoff: libc::off_t| {
            Mapping::ring(sock, map_len(off, size, entry), pgoff)
        };
        const DESC: usize = std::mem::size_of::<sys::xdp_desc>();
        let fill = map(&off.fr, config.fill_size, 8, libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t)
            .and_then(|m| RingMap::new::<u64>(m, &off.fr, config.fill_size))
            .map_err(err("mmap fill ring"))?;
        let completion = map(&off.cr, config.completion_size, 8, libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t)
            .and_then(|m| RingMap::new::<u64>(m, &off.cr, config.completion_size))
            .map_err(err("mmap completion ring"))?;
        let rx = map(&off.rx, config.rx_size, DESC, libc::XDP_PGOFF_RX_RING)
            .and_then(|m| RingMap::new::<sys::xdp_desc>(m, &off.rx, config.rx_size))
            .map_err(err("mmap rx ring"))?;
        let tx = map(&off.tx, config.tx_size, DESC, libc::XDP_PGOFF_TX_RING)
            .and_then(|m| RingMap::new::<sys::xdp_desc>(m, &off.tx, config.tx_size))
            .map_err(err("mmap tx ring"))?;
        let busy_poll = config.busy_poll.map(|b| ask_busy_poll(sock, b));
        Ok(Self {
            fill: Producer::new(fill),
            completion: Consumer::new(completion),
            rx: Consumer::new(rx),
            tx: Producer::new(tx),
            fd,
            busy_poll,
        })
    }
}

fn bind_to(fd: &OwnedFd, ifindex: u32, queue: u32, flags: u16, shared_fd: RawFd) -> io::Result<()> {
    let mut addr: sys::sockaddr_xdp = sys::zeroed();
    addr.sxdp_family = libc::AF_XDP as u16;
    addr.sxdp_flags = flags;
    addr.sxdp_ifindex = ifindex;
    addr.sxdp_queue_id = queue;
    addr.sxdp_shared_umem_fd = shared_fd as u32;
    sys::bind(fd.as_fd(), &addr)
}

/// The mode the kernel actually bound in.
fn query_mode(fd: BorrowedFd) -> io::Result<Mode> {
    let opts: libc::xdp_options = sys::getsockopt(fd, libc::SOL_XDP, libc::XDP_OPTIONS)?;
    Ok(if opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0 { Mode::ZeroCopy } else { Mode::Copy })
}

/// Sets what the kernel accepts of the busy polling options and notes the
/// rest.
fn ask_busy_poll(fd: BorrowedFd, b: BusyPoll) -> BusyPollState {
    let mut state = BusyPollState::default();
    let mut set = |name: &str, opt: libc::c_int, value: u32| match sys::setsockopt(
        fd,
        libc::SOL_SOCKET,
        opt,
        &(value.min(i32::MAX as u32) as libc::c_int),
    ) {
        Ok(()) => true,
        Err(e) => {
            state.notes.push(format!("{name} = {value} refused ({e}); going without it"));
            false
        }
    };
    let prefer = set("SO_PREFER_BUSY_POLL", sys::SO_PREFER_BUSY_POLL, 1);
    let usecs = set("SO_BUSY_POLL", sys::SO_BUSY_POLL, b.usecs).then_some(b.usecs);
    let budget = set("SO_BUSY_POLL_BUDGET", sys::SO_BUSY_POLL_BUDGET, b.budget).then_some(b.budget);
    state.prefer = prefer;
    state.usecs = usecs;
    state.budget = budget;
    state
}
