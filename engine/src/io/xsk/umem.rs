//! The UMEM (one mapped area of equal frames the kernel reads and writes
//! packets in) and its frame pool: every frame is in exactly one place at a
//! time (free, given to the kernel to fill, in the pipeline, given to the
//! kernel to send), and the pool knows which, frame by frame, so a frame is
//! never used twice and none is ever lost. A [`Frame`] is the pipeline's
//! handle on one; dropping it gives it back.

use super::sys::{self, Mapping, XDP_PACKET_HEADROOM};
use super::XskError;
use crate::io::{FRAME_HEADROOM, FRAME_TAILROOM};
use std::fmt;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

/// The longest Ethernet frame (without FCS) of a 1500-byte MTU link: every
/// frame must hold one with [`FRAME_TAILROOM`] behind it.
pub const MAX_ETHERNET_FRAME: u32 = 1514;

/// The most frames a UMEM holds (2 GiB of 2048-byte frames).
pub const MAX_FRAMES: u32 = 1 << 20;

/// The shape of a UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UmemConfig {
    /// Bytes per frame (the kernel's chunk): 2048 or 4096.
    pub frame_size: u32,
    /// Frames in the area. Size it for every fill ring full, every tx ring
    /// full and a few bursts in the pipeline.
    pub frames: u32,
    /// Extra room the kernel leaves in front of received packets, on top
    /// of its own `XDP_PACKET_HEADROOM` (256 bytes, which already is the
    /// engine's [`FRAME_HEADROOM`]). 0 unless something needs more.
    pub headroom: u32,
}

impl Default for UmemConfig {
    /// 16 MiB: two ports with the default rings (1024 each) keep 2048
    /// frames on their fill rings and at most 2048 in flight out, which
    /// leaves 4096 for the pipeline and `alloc`.
    fn default() -> Self {
        Self { frame_size: 2048, frames: 8192, headroom: 0 }
    }
}

impl UmemConfig {
    fn validate(&self) -> Result<(), XskError> {
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return Err(XskError::Config(format!("frame size {}: must be 2048 or 4096", self.frame_size)));
        }
        if self.frames == 0 || self.frames > MAX_FRAMES {
            return Err(XskError::Config(format!("{} frames: must be 1 to {MAX_FRAMES}", self.frames)));
        }
        let front = XDP_PACKET_HEADROOM + self.headroom;
        if (front as usize) < FRAME_HEADROOM {
            return Err(XskError::Config(format!(
                "{front} bytes in front of packets, the engine needs {FRAME_HEADROOM}"
            )));
        }
        let need = front + MAX_ETHERNET_FRAME + FRAME_TAILROOM as u32;
        if need > self.frame_size {
            return Err(XskError::Config(format!(
                "headroom {}: {XDP_PACKET_HEADROOM} + headroom + a {MAX_ETHERNET_FRAME}-byte frame + \
                 {FRAME_TAILROOM} of tailroom = {need} bytes, more than a {}-byte frame",
                self.headroom, self.frame_size
            )));
        }
        Ok(())
    }
}

/// Which socket of a UMEM (an index the UMEM hands out at bind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId(pub(super) u32);

/// Where a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePlace {
    /// In the free list.
    Free,
    /// Given to a socket's kernel side to receive into: on its fill ring,
    /// held by the kernel, or received on its rx ring and not yet taken.
    Fill(SocketId),
    /// Handed to the engine (received, or allocated) as a [`Frame`].
    Pipeline,
    /// Given to a socket's kernel side to send: on its tx ring, being
    /// sent, or sent and on its completion ring, not yet taken back.
    Tx(SocketId),
}

/// How many frames are in each place; `total()` is always the UMEM's
/// frame count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameAccounting {
    pub free: u32,
    pub fill: u32,
    pub pipeline: u32,
    pub tx: u32,
}

impl FrameAccounting {
    pub fn total(&self) -> u32 {
        self.free + self.fill + self.pipeline + self.tx
    }

    fn count(&mut self, place: FramePlace) -> &mut u32 {
        match place {
            FramePlace::Free => &mut self.free,
            FramePlace::Fill(_) => &mut self.fill,
            FramePlace::Pipeline => &mut self.pipeline,
            FramePlace::Tx(_) => &mut self.tx,
        }
    }
}

/// A bound socket of this UMEM, as the pool knows it.
#[derive(Debug)]
pub(super) struct BoundSocket {
    pub fd: RawFd,
    pub ifindex: u32,
    pub queue: u32,
}

/// The frame pool and the sockets that share the UMEM; behind the UMEM's
/// mutex (a worker takes it once per burst, uncontended).
#[derive(Debug)]
pub(super) struct Pool {
    frame_size: u32,
    free: Vec<u64>,
    /// Per frame (address / frame size).
    places: Vec<FramePlace>,
    counts: FrameAccounting,
    pub sockets: Vec<Option<BoundSocket>>,
    /// The bind flags of the socket that registered the UMEM (sharing
    /// sockets inherit them): zero-copy, need_wakeup. `None` while no
    /// socket is bound.
    pub inherited: Option<(super::Mode, bool)>,
    /// Every move, for tests that follow a frame.
    #[cfg(test)]
    pub log: Vec<(u64, FramePlace, FramePlace)>,
}

impl Pool {
    fn new(config: &UmemConfig) -> Self {
        let n = config.frames;
        Self {
            frame_size: config.frame_size,
            // Popped from the end: the lowest address goes out first.
            free: (0..n as u64).rev().map(|i| i * config.frame_size as u64).collect(),
            places: vec![FramePlace::Free; n as usize],
            counts: FrameAccounting { free: n, ..Default::default() },
            sockets: Vec::new(),
            inherited: None,
            #[cfg(test)]
            log: Vec::new(),
        }
    }

    /// Moves frame `addr` (a chunk address) from `from` to `to`. A frame
    /// found elsewhere is a double use: a panic in debug builds; in release
    /// nothing moves and the caller gets `false` (it then leaves the frame
    /// alone, so it is still used only once).
    #[must_use]
    pub fn moved(&mut self, addr: u64, from: FramePlace, to: FramePlace) -> bool {
        let slot = &mut self.places[(addr / self.frame_size as u64) as usize];
        if *slot != from {
            if cfg!(debug_assertions) {
                panic!("frame {addr:#x} is not where it should be: in {slot:?}, not {from:?}");
            }
            return false;
        }
        *self.counts.count(from) -= 1;
        *self.counts.count(to) += 1;
        #[cfg(test)]
        self.log.push((addr, from, to));
        *slot = to;
        true
    }

    /// A free frame, now in `to`.
    pub fn take_free(&mut self, to: FramePlace) -> Option<u64> {
        let addr = self.free.pop()?;
        // Only free frames are in the free list.
        let moved = self.moved(addr, FramePlace::Free, to);
        debug_assert!(moved);
        Some(addr)
    }

    /// Frame `addr`, back from `from` into the free list (`false`: it was
    /// not in `from`, see `moved`).
    pub fn put_free(&mut self, addr: u64, from: FramePlace) -> bool {
        let moved = self.moved(addr, from, FramePlace::Free);
        if moved {
            self.free.push(addr);
        }
        moved
    }

    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Whether `addr..addr + len` lies inside one frame.
    pub fn holds(&self, addr: u64, len: u32) -> bool {
        let size = self.frame_size as u64;
        addr < size * self.places.len() as u64 && addr + len as u64 <= self.chunk(addr) + size
    }

    /// The frame containing `addr`.
    pub fn chunk(&self, addr: u64) -> u64 {
        addr & !(self.frame_size as u64 - 1)
    }

    /// A socket joins; its id. Ids are not reused, so frames a zero-copy
    /// socket left behind stay told apart from a newer socket's.
    pub fn register(&mut self, socket: BoundSocket) -> SocketId {
        self.sockets.push(Some(socket));
        SocketId((self.sockets.len() - 1) as u32)
    }

    /// A socket left (its fd is closed). With `reclaim` (copy mode: the
    /// kernel no longer writes into or reads from its frames once the close
    /// returned) what it held is free again.
    pub fn unregister(&mut self, id: SocketId, reclaim: bool) {
        self.sockets[id.0 as usize] = None;
        if reclaim {
            for i in 0..self.places.len() {
                if matches!(self.places[i], FramePlace::Fill(s) | FramePlace::Tx(s) if s == id) {
                    let _ = self.put_free(i as u64 * self.frame_size as u64, self.places[i]);
                }
            }
        }
        if self.sockets.iter().all(Option::is_none) {
            self.inherited = None;
        }
    }
}

/// What a UMEM's handles share: the area and the pool.
pub(super) struct Shared {
    area: Mapping,
    config: UmemConfig,
    pool: Mutex<Pool>,
}

impl Shared {
    pub fn config(&self) -> &UmemConfig {
        &self.config
    }

    /// Runs `f` on the locked pool. `f` must not drop a [`Frame`] (that
    /// locks a pool too).
    ///
    /// While any frame is in the pipeline the UMEM holds one extra strong
    /// count on itself, so the memory a [`Frame`] points to outlives it even
    /// when every `Umem` handle and socket is gone: taken when the pipeline
    /// count leaves zero, given back (after unlocking) when it returns to
    /// zero.
    pub fn with_pool<R>(&self, f: impl FnOnce(&mut Pool) -> R) -> R {
        let mut pool = self.lock();
        let before = pool.counts.pipeline;
        let r = f(&mut pool);
        let after = pool.counts.pipeline;
        if before == 0 && after > 0 {
            // SAFETY: `self` lives inside an `Arc<Shared>` (the only way one
            // is made, `Umem::new`), alive now since we were reached through
            // it or through a frame it counts.
            unsafe { Arc::increment_strong_count(self as *const Shared) };
        }
        drop(pool);
        if before > 0 && after == 0 {
            // SAFETY: gives back the count taken when this pipeline count
            // left zero (transitions alternate under the lock, so each
            // return to zero has exactly one such count to give); `self` is
            // not used after this line, even if this frees it.
            unsafe { Arc::decrement_strong_count(self as *const Shared) };
        }
        r
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock leaves the counts as they were at
        // the last completed move: still usable.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The frame containing `addr`.
    pub fn chunk(&self, addr: u64) -> u64 {
        addr & !(self.config.frame_size as u64 - 1)
    }

    /// The handle on frame `chunk`, which the caller has just moved to the
    /// pipeline.
    pub fn frame(&self, chunk: u64) -> Frame {
        debug_assert_eq!(chunk, self.chunk(chunk));
        debug_assert!(chunk < self.area.len() as u64);
        // SAFETY: `chunk` is a frame of the area (the pool hands out no
        // other), so the pointer stays in the mapping.
        let ptr = unsafe { self.area.ptr().add(chunk as usize) };
        Frame { ptr, addr: chunk, len: self.config.frame_size, umem: NonNull::from(self) }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Umem").field("config", &self.config).field("area", &self.area).finish()
    }
}

/// A UMEM: the frames, their pool, and the sockets that use them. Cloning
/// gives another handle on the same UMEM.
#[derive(Debug, Clone)]
pub struct Umem {
    shared: Arc<Shared>,
}

impl Umem {
    /// Maps the area (anonymous, page aligned, populated). It is registered
    /// with the kernel by the first socket bound with it.
    pub fn new(config: UmemConfig) -> Result<Self, XskError> {
        config.validate()?;
        let len = config.frames as usize * config.frame_size as usize;
        let area = Mapping::anonymous(len).map_err(|e| XskError::sys(format!("mmap UMEM of {len} bytes"), e))?;
        Ok(Self { shared: Arc::new(Shared { area, config, pool: Mutex::new(Pool::new(&config)) }) })
    }

    pub fn config(&self) -> UmemConfig {
        self.shared.config
    }

    /// Where received packets start in their frame: the rx descriptor's
    /// address is the frame's plus this (`XDP_PACKET_HEADROOM` + the
    /// configured headroom; aligned mode).
    pub fn rx_offset(&self) -> usize {
        (XDP_PACKET_HEADROOM + self.shared.config.headroom) as usize
    }

    /// How many frames are where.
    pub fn accounting(&self) -> FrameAccounting {
        self.shared.lock().counts
    }

    /// Where frame `addr` is (`None`: not a frame of this UMEM).
    pub fn place(&self, addr: u64) -> Option<FramePlace> {
        let i = addr / self.shared.config.frame_size as u64;
        self.shared.lock().places.get(i as usize).copied()
    }

    /// A free frame for the pipeline.
    pub fn alloc(&self) -> Option<Frame> {
        let addr = self.shared.with_pool(|pool| pool.take_free(FramePlace::Pipeline))?;
        Some(self.shared.frame(addr))
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The registration the kernel needs (XDP_UMEM_REG).
    pub(super) fn registration(&self) -> sys::xdp_umem_reg {
        let mut reg: sys::xdp_umem_reg = sys::zeroed();
        reg.addr = self.shared.area.ptr().as_ptr() as u64;
        reg.len = self.shared.area.len() as u64;
        reg.chunk_size = self.shared.config.frame_size;
        reg.headroom = self.shared.config.headroom;
        reg
    }
}

/// One UMEM frame in the pipeline: the whole frame as bytes (the packet
/// sits at an offset, with room around it; see [`crate::buf::PacketBuf`]).
/// Owned exactly once; dropping it returns it to its UMEM's free list.
pub struct Frame {
    ptr: NonNull<u8>,
    addr: u64,
    len: u32,
    umem: NonNull<Shared>,
}

// SAFETY: a frame is owned by one handle at a time (the pool hands it out
// once and the kernel does not touch a frame in the pipeline), so its bytes
// may be used from any one thread; its UMEM's pool is behind a mutex.
unsafe impl Send for Frame {}
// SAFETY: `&Frame` only reads the bytes, which nothing else writes.
unsafe impl Sync for Frame {}

impl Frame {
    /// The frame's address in its UMEM (what the rings carry).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    pub(super) fn umem(&self) -> &Shared {
        // SAFETY: the UMEM outlives its frames in the pipeline (the extra
        // strong count in `Shared::with_pool`).
        unsafe { self.umem.as_ref() }
    }

    pub(super) fn is_of(&self, umem: &Shared) -> bool {
        std::ptr::eq(self.umem.as_ptr(), umem)
    }

    /// Gives up the handle without returning the frame: the caller has
    /// moved it on (to a tx ring) and accounts for it. Its address.
    pub(super) fn into_addr(self) -> u64 {
        let addr = self.addr;
        std::mem::forget(self);
        addr
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` bytes at `ptr` are this frame, inside the mapped
        // area (alive: see `umem`), and no one else touches them while the
        // frame is in the pipeline.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len as usize) }
    }
}

impl AsMut<[u8]> for Frame {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len as usize) }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        let addr = self.addr;
        let _ = self.umem().with_pool(|pool| pool.put_free(addr, FramePlace::Pipeline));
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:#x}, {} bytes)", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umem(frames: u32) -> Umem {
        Umem::new(UmemConfig { frames, ..UmemConfig::default() }).unwrap()
    }

    #[test]
    fn frames_go_out_once_and_come_back_on_drop() {
        let u = umem(4);
        let frames: Vec<Frame> = (0..4).map(|_| u.alloc().unwrap()).collect();
        assert!(u.alloc().is_none(), "all four are out");
        assert_eq!(frames.iter().map(Frame::addr).collect::<Vec<_>>(), [0, 2048, 4096, 6144]);
        assert_eq!(u.accounting(), FrameAccounting { pipeline: 4, ..Default::default() });
        assert_eq!(u.place(2048), Some(FramePlace::Pipeline));
        drop(frames);
        assert_eq!(u.accounting(), FrameAccounting { free: 4, ..Default::default() });
        assert_eq!(u.place(2048), Some(FramePlace::Free));
        assert_eq!(u.place(4 * 2048), None);
    }

    #[test]
    fn a_frame_is_its_whole_chunk_and_writable() {
        let u = umem(2);
        let mut f = u.alloc().unwrap();
        assert_eq!(f.as_ref().len(), 2048);
        f.as_mut()[2047] = 7;
        let addr = f.addr();
        drop(f);
        let g = u.alloc().unwrap();
        assert_eq!((g.addr(), g.as_ref()[2047]), (addr, 7), "same chunk, bytes stay");
    }

    #[test]
    fn frames_outlive_every_umem_handle() {
        let u = umem(2);
        let mut f = u.alloc().unwrap();
        drop(u);
        f.as_mut()[..4].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(&f.as_ref()[..4], &[1, 2, 3, 4]);
        drop(f); // the last reference: unmaps now
    }

    #[test]
    fn sockets_leaving_free_what_they_held() {
        let u = umem(8);
        let id = u.shared.with_pool(|p| p.register(BoundSocket { fd: -1, ifindex: 1, queue: 0 }));
        u.shared.with_pool(|p| {
            let a = p.take_free(FramePlace::Fill(id)).unwrap();
            let b = p.take_free(FramePlace::Tx(id)).unwrap();
            assert_eq!((p.places[0], p.places[1]), (FramePlace::Fill(id), FramePlace::Tx(id)));
            assert_eq!((a, b), (0, 2048));
        });
        assert_eq!(u.accounting(), FrameAccounting { free: 6, fill: 1, tx: 1, pipeline: 0 });
        u.shared.with_pool(|p| p.unregister(id, true));
        assert_eq!(u.accounting(), FrameAccounting { free: 8, ..Default::default() });
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "is not where it should be")]
    fn double_use_is_caught() {
        let u = umem(2);
        let _ = u.shared.with_pool(|p| p.put_free(0, FramePlace::Pipeline));
    }

    #[test]
    fn configurations_that_cannot_hold_a_full_frame_are_refused() {
        let bad = |c: UmemConfig| Umem::new(c).unwrap_err().to_string();
        assert!(bad(UmemConfig { frame_size: 3000, ..Default::default() }).contains("2048 or 4096"));
        // 256 + 256 + 1514 + 64 > 2048.
        assert!(bad(UmemConfig { headroom: 256, ..Default::default() }).contains("more than a 2048-byte frame"));
        assert!(Umem::new(UmemConfig { frame_size: 4096, frames: 4, headroom: 256 }).is_ok());
        assert!(bad(UmemConfig { frames: 0, ..Default::default() }).contains("frames"));
    }
}
