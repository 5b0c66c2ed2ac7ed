//! The four AF_XDP rings: single-producer single-consumer queues in memory
//! shared with the kernel. Each side keeps cached copies of both indexes
//! and touches the shared ones only when the cache runs out (reading the
//! other side's) or to publish a batch (writing its own), as the kernel's
//! `xsk_queue.h` describes:
//!
//! ```text
//! producer                           consumer
//! load-acquire consumer (A)          load-acquire producer (C)
//! write entries                      read entries
//! store-release producer (B)         store-release consumer (D)
//! ```
//!
//! Indexes are free-running `u32`s; an entry's slot is `index & (size - 1)`.
//! We produce on the fill and tx rings and consume the rx and completion
//! rings.

use super::sys::Mapping;
use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// One mapped ring: where its producer and consumer indexes, flags and
/// entries live inside the mapping.
#[derive(Debug)]
pub(super) struct RingMap {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<u8>,
    size: u32,
    // Last: the pointers above point into it.
    _map: Mapping,
}

// SAFETY: the pointers point into `_map`, which the ring owns; the kernel
// shares the memory but through atomics and the index protocol only, so the
// ring may move to another thread with its owner.
unsafe impl Send for RingMap {}

/// The mapping length a ring of `size` entries of `entry` bytes needs.
pub(super) fn map_len(off: &libc::xdp_ring_offset, size: u32, entry: usize) -> usize {
    off.desc as usize + size as usize * entry
}

impl RingMap {
    /// The ring of `size` entries of `T` laid out in `map` at the offsets
    /// the kernel reported (XDP_MMAP_OFFSETS).
    pub(super) fn new<T>(map: Mapping, off: &libc::xdp_ring_offset, size: u32) -> io::Result<Self> {
        let bad = |what: &str| io::Error::other(format!("ring layout: {what} (offsets {off:?}, size {size})"));
        if !size.is_power_of_two() {
            return Err(bad("size not a power of two"));
        }
        if map.len() < map_len(off, size, std::mem::size_of::<T>()) {
            return Err(bad("entries beyond the mapping"));
        }
        for o in [off.producer, off.consumer, off.flags] {
            if o as usize + 4 > map.len() || !o.is_multiple_of(4) {
                return Err(bad("index beyond the mapping or misaligned"));
            }
        }
        if !(off.desc as usize).is_multiple_of(std::mem::align_of::<T>()) {
            return Err(bad("entries misaligned"));
        }
        let base = map.ptr();
        // SAFETY: every offset was checked to lie inside the mapping (and be
        // aligned) above, so these are in-bounds, non-null pointers.
        let at = |o: u64| unsafe { base.add(o as usize) };
        Ok(Self {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            entries: at(off.desc),
            size,
            _map: map,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: in bounds and aligned (checked in `new`), alive as long as
        // `self`; the kernel accesses it atomically too.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let flags = unsafe { self.flags.as_ref() };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Entries published and not yet consumed.
    fn level(&self) -> u32 {
        let prod = self.producer().load(Ordering::Acquire);
        prod.wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    /// The entry slot `index` maps to.
    fn slot<T>(&self, index: u32) -> *mut T {
        let i = (index & (self.size - 1)) as usize;
        // SAFETY: `i < size` and the mapping holds `size` entries of `T`
        // from `entries` (checked in `new`).
        unsafe { self.entries.cast::<T>().as_ptr().add(i) }
    }
}

/// Our side of a ring we fill (the fill and tx rings).
#[derive(Debug)]
pub(super) struct Producer<T> {
    ring: RingMap,
    /// Our next index; entries before it and at or after the shared
    /// producer index are written but not yet published.
    cached_prod: u32,
    /// The consumer index last read, plus the ring size: we may write up
    /// to here.
    cached_cons: u32,
    _entry: PhantomData<T>,
}

impl<T: Copy> Producer<T> {
    pub(super) fn new(ring: RingMap) -> Self {
        let cached_prod = ring.producer().load(Ordering::Relaxed);
        let cached_cons = ring.consumer().load(Ordering::Acquire).wrapping_add(ring.size);
        Self { ring, cached_prod, cached_cons, _entry: PhantomData }
    }

    /// Free slots, reading the kernel's consumer index only when the cache
    /// shows fewer than `want`.
    pub(super) fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        // (A): the kernel is done with every entry before its consumer index.
        self.cached_cons = self.ring.consumer().load(Ordering::Acquire).wrapping_add(self.ring.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Writes `entry` into the next free slot (published by `submit`);
    /// false when the ring is full.
    pub(super) fn push(&mut self, entry: T) -> bool {
        if self.free(1) == 0 {
            return false;
        }
        // SAFETY: the slot is in bounds (`slot`) and free: the kernel has
        // consumed it (it is behind `cached_cons`) and will not read it
        // before we publish it, so nothing else accesses it now.
        unsafe { self.ring.slot::<T>(self.cached_prod).write(entry) };
        self.cached_prod = self.cached_prod.wrapping_add(1);
        true
    }

    /// Publishes what `push` wrote (B).
    pub(super) fn submit(&mut self) {
        self.ring.producer().store(self.cached_prod, Ordering::Release);
    }

    pub(super) fn needs_wakeup(&self) -> bool {
        self.ring.needs_wakeup()
    }

    pub(super) fn size(&self) -> u32 {
        self.ring.size
    }

    /// Published entries the kernel has not taken yet.
    pub(super) fn level(&self) -> u32 {
        self.ring.level()
    }
}

/// Our side of a ring the kernel fills (the rx and completion rings).
#[derive(Debug)]
pub(super) struct Consumer<T> {
    ring: RingMap,
    /// The producer index last read: entries before it are ready.
    cached_prod: u32,
    /// Our next index; entries before it and at or after the shared
    /// consumer index are read but not yet released.
    cached_cons: u32,
    _entry: PhantomData<T>,
}

impl<T: Copy> Consumer<T> {
    pub(super) fn new(ring: RingMap) -> Self {
        let cached_cons = ring.consumer().load(Ordering::Relaxed);
        let cached_prod = ring.producer().load(Ordering::Acquire);
        Self { ring, cached_prod, cached_cons, _entry: PhantomData }
    }

    /// The next entry, reading the kernel's producer index only when the
    /// cached ones are used up.
    pub(super) fn pop(&mut self) -> Option<T> {
        if self.cached_cons == self.cached_prod {
            // (C): entries before the producer index are written.
            self.cached_prod = self.ring.producer().load(Ordering::Acquire);
            if self.cached_cons == self.cached_prod {
                return None;
            }
        }
        // SAFETY: the slot is in bounds (`slot`) and published (before the
        // producer index we acquired); the kernel does not rewrite it until
        // we release it, so reading it races with nothing.
        let entry = unsafe { self.ring.slot::<T>(self.cached_cons).read() };
        self.cached_cons = self.cached_cons.wrapping_add(1);
        Some(entry)
    }

    /// Gives the popped slots back to the kernel (D).
    pub(super) fn release(&mut self) {
        self.ring.consumer().store(self.cached_cons, Ordering::Release);
    }

    /// Published entries not yet released by us.
    pub(super) fn level(&self) -> u32 {
        self.ring.level()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring in ordinary memory, the test playing the kernel's side
    /// through the shared indexes.
    fn ring(size: u32) -> RingMap {
        let off = libc::xdp_ring_offset { producer: 0, consumer: 64, flags: 128, desc: 192 };
        let map = Mapping::anonymous(map_len(&off, size, 8)).unwrap();
        RingMap::new::<u64>(map, &off, size).unwrap()
    }

    /// The entry at `index`, read as the kernel would.
    fn kernel_read(ring: &RingMap, index: u32) -> u64 {
        // SAFETY: in bounds (`slot`); the test is the only thread.
        unsafe { ring.slot::<u64>(index).read() }
    }

    #[test]
    fn producer_fills_to_size_and_waits_for_the_consumer_across_wrap() {
        let mut p = Producer::<u64>::new(ring(4));
        // Start near the wrap of the u32 indexes.
        p.ring.producer().store(u32::MAX - 1, Ordering::Relaxed);
        p.ring.consumer().store(u32::MAX - 1, Ordering::Relaxed);
        p = Producer::new(p.ring);
        for i in 0..4 {
            assert!(p.push(i));
        }
        assert!(!p.push(9), "full");
        assert_eq!(p.level(), 0, "nothing published before submit");
        p.submit();
        assert_eq!(p.level(), 4);
        // The "kernel" takes two.
        let cons = p.ring.consumer().load(Ordering::Relaxed);
        assert_eq!(kernel_read(&p.ring, cons), 0);
        p.ring.consumer().store(cons.wrapping_add(2), Ordering::Release);
        assert_eq!(p.free(1), 2);
        assert!(p.push(4) && p.push(5) && !p.push(6));
        p.submit();
        let read: Vec<u64> = (2..6).map(|i| kernel_read(&p.ring, cons.wrapping_add(i))).collect();
        assert_eq!(read, [2, 3, 4, 5]);
    }

    #[test]
    fn consumer_sees_only_published_entries_and_releases_them() {
        let mut c = Consumer::<u64>::new(ring(8));
        assert_eq!(c.pop(), None);
        for i in 0..3u32 {
            // SAFETY: in bounds (`slot`); the test is the only thread.
            unsafe { c.ring.slot::<u64>(i).write(100 + i as u64) };
        }
        assert_eq!(c.pop(), None, "written but not published");
        c.ring.producer().store(3, Ordering::Release);
        assert_eq!((c.pop(), c.pop(), c.pop(), c.pop()), (Some(100), Some(101), Some(102), None));
        assert_eq!(c.level(), 3, "popped but not released");
        c.release();
        assert_eq!(c.level(), 0);
    }

    #[test]
    fn wakeup_flag_is_read_from_the_ring() {
        let p = Producer::<u64>::new(ring(4));
        assert!(!p.needs_wakeup());
        // SAFETY: in bounds and aligned (checked by `RingMap::new`).
        unsafe { p.ring.flags.as_ref() }.store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(p.needs_wakeup());
    }

    #[test]
    fn bad_layouts_are_refused() {
        let off = libc::xdp_ring_offset { producer: 0, consumer: 64, flags: 128, desc: 192 };
        let map = || Mapping::anonymous(4096).unwrap();
        assert!(RingMap::new::<u64>(map(), &off, 6).is_err(), "not a power of two");
        assert!(RingMap::new::<u64>(map(), &off, 1024).is_err(), "beyond the mapping");
        let off = libc::xdp_ring_offset { desc: 196, ..off };
        assert!(RingMap::new::<u64>(map(), &off, 4).is_err(), "misaligned");
    }
}
