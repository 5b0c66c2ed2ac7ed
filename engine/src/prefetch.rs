//! Cache prefetch hints: the one place the engine asks the CPU to start
//! loading memory it is about to read (a burst's SAs and tunnels, its
//! flow-cache slots, trie nodes), so the cache misses of many packets
//! overlap instead of following one another.

use std::sync::{Mutex, OnceLock, PoisonError};

/// Starts loading the cache lines of the `bytes` bytes at `p` (at most
/// 32 lines: callers load a few lines at a time; SAs line by line, see
/// `OutboundSa::prefetch`). Any address will do: nothing is read or
/// written.
#[inline(always)]
pub fn bytes(p: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..bytes.min(32 * 64)).step_by(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint that never faults, whatever the
        // address, and changes nothing the program can observe
        // (`wrapping_add` keeps the address arithmetic defined); SSE is part
        // of every x86_64 CPU.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(offset).cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

/// Starts loading `*v` (its first 32 cache lines).
#[inline(always)]
pub fn value<T: ?Sized>(v: &T) {
    bytes((v as *const T).cast::<u8>(), std::mem::size_of_val(v));
}

/// Starts loading `m`'s lock word, and returns the address of the value it
/// guards, to prefetch from without taking the lock (an address only:
/// nothing may be read through it). `data` keeps where a `Mutex<T>` holds
/// its value, measured on the first one seen (the lock taken that once):
/// a type's layout is the same for all its values.
#[inline(always)]
pub fn guarded<T>(m: &Mutex<T>, data: &OnceLock<usize>) -> *const u8 {
    let base = (m as *const Mutex<T>).cast::<u8>();
    bytes(base, 1);
    let offset = *data.get_or_init(|| {
        let g = m.lock().unwrap_or_else(PoisonError::into_inner);
        (&*g as *const T as usize) - base as usize
    });
    base.wrapping_add(offset)
}
