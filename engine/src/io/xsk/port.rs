//! The engine's [`Port`] over an AF_XDP socket: the data path. Each burst
//! takes back what the kernel finished sending (completion ring to the
//! free list), gives it free frames to receive into (free list to fill
//! ring), and moves frames between the rings and the pipeline under one
//! lock of the UMEM's pool. Frames of the port's own UMEM are sent as they
//! are; a frame of another UMEM is copied into one of ours.

use super::ring::{Consumer, Producer};
use super::socket::{Mode, XskSocket};
use super::sys;
use super::umem::{Frame, FramePlace, Pool, Shared, SocketId};
use crate::buf::PacketBuf;
use crate::io::{Port, FRAME_HEADROOM};
use crate::model::PortId;
use std::os::fd::AsFd;

/// A port's own counters (the kernel's are [`XskSocket::kernel_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx: u64,
    pub tx: u64,
    /// `tx-full`: dropped because the tx ring stayed full.
    pub tx_full: u64,
    /// Frames of another UMEM, copied into this one's to be sent.
    pub tx_copied: u64,
    /// Frames of another UMEM dropped: no free frame to copy into, or too
    /// big for this UMEM's frames.
    pub tx_no_frame: u64,
    /// Empty packets not sent (the kernel refuses them and would not give
    /// the frame back).
    pub tx_empty: u64,
    /// Descriptors the kernel gave that point outside the UMEM (never seen;
    /// counted rather than trusted).
    pub bad_descs: u64,
    pub rx_kicks: u64,
    pub tx_kicks: u64,
    /// Wake-up calls that failed with something other than "try again".
    pub kick_errors: u64,
}

/// A received or to-be-sent packet: frame address plus offset, and length.
#[derive(Debug, Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
}

pub struct XskPort {
    id: PortId,
    socket: XskSocket,
    stats: XskStats,
    /// Reused per burst: descriptors between the rings and the pipeline,
    /// so frames are made and dropped with the pool unlocked.
    scratch: Vec<Desc>,
}

impl XskPort {
    pub fn new(id: PortId, socket: XskSocket) -> Self {
        Self { id, socket, stats: XskStats::default(), scratch: Vec::with_capacity(64) }
    }

    pub fn socket(&self) -> &XskSocket {
        &self.socket
    }

    pub fn stats(&self) -> XskStats {
        self.stats
    }

    /// Takes back every frame the kernel has finished sending, and wakes
    /// it if frames are still waiting on the tx ring; returns how many came
    /// back.
    pub fn complete(&mut self) -> usize {
        let s = &mut self.socket;
        let n = s.umem.shared().with_pool(|pool| drain_completions(&mut s.completion, pool, s.id, &mut self.stats));
        self.flush_tx();
        n
    }

    /// Wakes the kernel until the tx ring is empty, as far as it will go:
    /// in copy mode each `sendto` sends at most 32 frames and answers EAGAIN
    /// while more are left, so every transmit needs kicks; in zero-copy mode
    /// one kick when the ring asks for it (need_wakeup) starts the driver.
    fn flush_tx(&mut self) {
        let s = &mut self.socket;
        let busy = s.busy_poll.as_ref().is_some_and(|b| b.active());
        for _ in 0..s.tx.size() / 32 + 4 {
            if s.tx.level() == 0 || (s.need_wakeup && !busy && !s.tx.needs_wakeup()) {
                return;
            }
            self.stats.tx_kicks += 1;
            match sys::kick_tx(s.fd()) {
                Ok(()) if s.mode == Mode::ZeroCopy => return,
                Ok(()) => {}
                // EAGAIN: more to send; EBUSY: the device dropped one (it is
                // completed anyway); ENOBUFS: no skb. Take completions back
                // (a full completion ring stalls sending) and go on.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)) => {
                    s.umem.shared().with_pool(|pool| drain_completions(&mut s.completion, pool, s.id, &mut self.stats));
                }
                Err(_) => {
                    self.stats.kick_errors += 1;
                    return;
                }
            }
        }
    }

    /// Puts the scratch descriptors (frames of this UMEM, in the pipeline)
    /// on the tx ring; returns how many fit.
    fn enqueue_tx(&mut self, from: usize) -> usize {
        let s = &mut self.socket;
        let scratch = &self.scratch[from..];
        let stats = &mut self.stats;
        s.umem.shared().with_pool(|pool| {
            drain_completions(&mut s.completion, pool, s.id, stats);
            let mut n = 0;
            for d in scratch {
                if !s.tx.push(sys::xdp_desc { addr: d.addr, len: d.len, options: 0 }) {
                    break;
                }
                // A frame we hold is in the pipeline.
                let _ = pool.moved(pool.chunk(d.addr), FramePlace::Pipeline, FramePlace::Tx(s.id));
                n += 1;
            }
            if n > 0 {
                s.tx.submit();
            }
            n
        })
    }

    /// The packet in `p` as a descriptor of this UMEM (copied into a frame
    /// of ours if it is another's), or `None` if it cannot be sent.
    fn own(&mut self, p: PacketBuf<Frame>) -> Option<Desc> {
        let (start, len) = (p.headroom(), p.len());
        if len == 0 {
            self.stats.tx_empty += 1;
            return None;
        }
        let frame = p.into_frame();
        let umem = self.socket.umem.shared();
        if frame.is_of(umem) {
            return Some(Desc { addr: frame.into_addr() + start as u64, len: len as u32 });
        }
        let fits = start + len <= umem.config().frame_size as usize;
        let Some(mut local) = fits.then(|| self.socket.umem.alloc()).flatten() else {
            self.stats.tx_no_frame += 1;
            return None;
        };
        local.as_mut()[start..start + len].copy_from_slice(&frame.as_ref()[start..start + len]);
        self.stats.tx_copied += 1;
        Some(Desc { addr: local.into_addr() + start as u64, len: len as u32 })
    }
}

/// Completion ring to free list.
fn drain_completions(completion: &mut Consumer<u64>, pool: &mut Pool, id: SocketId, stats: &mut XskStats) -> usize {
    let mut n = 0;
    while let Some(addr) = completion.pop() {
        // Anything but a frame this socket was sending is counted, not used.
        let chunk = pool.chunk(addr);
        if !(pool.holds(addr, 1) && pool.put_free(chunk, FramePlace::Tx(id))) {
            stats.bad_descs += 1;
        }
        n += 1;
    }
    if n > 0 {
        completion.release();
    }
    n
}

/// Free list to fill ring, as much as both allow.
pub(super) fn refill(fill: &mut Producer<u64>, pool: &mut Pool, id: SocketId) {
    let room = fill.free(fill.size()).min(pool.free_frames() as u32);
    for _ in 0..room {
        let Some(addr) = pool.take_free(FramePlace::Fill(id)) else { break };
        let pushed = fill.push(addr);
        debug_assert!(pushed, "room was counted");
    }
    if room > 0 {
        fill.submit();
    }
}

impl Port for XskPort {
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats();
        // What the kernel lost before the engine saw it: the rx ring full,
        // no fill frame. (A failed read reports zeros rather than nothing.)
        let k = self.socket.kernel_stats().unwrap_or_default();
        vec![
            ("kernel-rx-dropped", k.rx_dropped),
            ("kernel-rx-ring-full", k.rx_ring_full),
            ("kernel-rx-fill-empty", k.rx_fill_ring_empty_descs),
            ("kernel-rx-invalid", k.rx_invalid_descs),
            ("kernel-tx-invalid", k.tx_invalid_descs),
            ("rx", s.rx),
            ("tx", s.tx),
            ("tx-full", s.tx_full),
            ("tx-copied", s.tx_copied),
            ("tx-no-frame", s.tx_no_frame),
            ("tx-empty", s.tx_empty),
            ("bad-descs", s.bad_descs),
            ("rx-kicks", s.rx_kicks),
            ("tx-kicks", s.tx_kicks),
            ("kick-errors", s.kick_errors),
        ]
    }

    type Buf = Frame;

    fn id(&self) -> PortId {
        self.id
    }

    fn rx_burst(&mut self, out: &mut Vec<PacketBuf<Frame>>, max: usize) -> usize {
        let s = &mut self.socket;
        let umem: &Shared = s.umem.shared();
        let stats = &mut self.stats;
        let scratch = &mut self.scratch;
        scratch.clear();
        let wake = umem.with_pool(|pool| {
            drain_completions(&mut s.completion, pool, s.id, stats);
            let mut taken = 0;
            while scratch.len() < max {
                let Some(d) = s.rx.pop() else { break };
                taken += 1;
                // Only a frame given to this socket to receive into is
                // taken; anything else is counted and left alone.
                let chunk = pool.chunk(d.addr);
                if pool.holds(d.addr, d.len) && pool.moved(chunk, FramePlace::Fill(s.id), FramePlace::Pipeline) {
                    scratch.push(Desc { addr: d.addr, len: d.len });
                } else {
                    stats.bad_descs += 1;
                }
            }
            if taken > 0 {
                s.rx.release();
            }
            refill(&mut s.fill, pool, s.id);
            s.fill.needs_wakeup()
        });
        let n = scratch.len();
        let busy = s.busy_poll.as_ref().is_some_and(|b| b.active());
        if wake || (busy && n == 0) {
            stats.rx_kicks += 1;
            if let Err(e) = sys::kick_rx(s.fd()) {
                if e.raw_os_error() != Some(libc::EAGAIN) {
                    stats.kick_errors += 1;
                }
            }
        }
        for d in scratch.iter() {
            let chunk = umem.chunk(d.addr);
            let frame = umem.frame(chunk);
            out.push(
                PacketBuf::new(frame, (d.addr - chunk) as usize, d.len as usize).expect("checked: inside its frame"),
            );
        }
        stats.rx += n as u64;
        // Frames a transmit could not hand over yet (the kernel was busy).
        if self.socket.tx.level() > 0 {
            self.flush_tx();
        }
        n
    }

    fn tx_burst(&mut self, frames: &mut dyn Iterator<Item = PacketBuf<Frame>>) {
        self.scratch.clear();
        for p in frames {
            if let Some(d) = self.own(p) {
                self.scratch.push(d);
            }
        }
        let mut sent = self.enqueue_tx(0);
        self.flush_tx();
        if sent < self.scratch.len() {
            // The kicks emptied what they could: one more go.
            sent += self.enqueue_tx(sent);
            self.flush_tx();
        }
        let dropped = &self.scratch[sent..];
        if !dropped.is_empty() {
            let umem = self.socket.umem.shared();
            umem.with_pool(|pool| {
                for d in dropped {
                    let _ = pool.put_free(pool.chunk(d.addr), FramePlace::Pipeline);
                }
            });
            self.stats.tx_full += dropped.len() as u64;
        }
        self.stats.tx += sent as u64;
    }

    fn recycle(&mut self, buf: Frame) {
        // Back to its own UMEM's free list, whichever port it came from.
        drop(buf);
    }

    fn alloc(&mut self) -> Option<PacketBuf<Frame>> {
        let frame = self.socket.umem.alloc()?;
        PacketBuf::new(frame, FRAME_HEADROOM, 0).ok()
    }
}

impl XskSocket {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.as_fd()
    }
}

impl std::fmt::Debug for XskPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPort")
            .field("id", &self.id)
            .field("socket", &self.socket)
            .field("stats", &self.stats)
            .finish()
    }
}
