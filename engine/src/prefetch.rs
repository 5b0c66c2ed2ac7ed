//! Cache prefetch hints: the one place the engine asks the CPU to start
//! loading memory it is about to read (a burst's SAs and tunnels, its
//! flow-cache slots, trie nodes), so the cache misses of many packets
//! overlap instead of following one another.

/// Starts loading the cache lines of the `bytes` bytes at `p` (at most
/// 32 lines: an SA with its expanded keys is 26). Any address will do:
/// nothing is read or written.
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

/// Starts loading `m`'s lock word and, through `hot`, what it names of
/// the value `m` guards, without taking the lock: `hot` gets the value's
/// address (only field addresses may be made from it, never a read).
#[inline(always)]
pub fn locked<T>(m: &std::sync::Mutex<T>, hot: impl FnOnce(*const T)) {
    let base = (m as *const std::sync::Mutex<T>).cast::<u8>();
    bytes(base, 64);
    hot(base.wrapping_add(data_offset::<T>()).cast());
}

/// Where a `Mutex<T>` keeps its value (the same for every `Mutex<T>`).
fn data_offset<T>() -> usize {
    let m = std::sync::Mutex::new(std::mem::MaybeUninit::<T>::uninit());
    let g = m.lock().unwrap_or_else(|e| e.into_inner());
    (&*g as *const std::mem::MaybeUninit<T> as usize) - (&m as *const _ as usize)
}
