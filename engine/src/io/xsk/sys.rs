//! The system calls AF_XDP needs, each wrapped once so the rest of the
//! module calls safe functions: socket options, bind, mmap, and the two
//! wake-ups (`sendto` for transmit, `recvfrom` for receive). The if_xdp.h
//! structures and constants come from `libc`; the few it lacks are here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

pub use libc::{sockaddr_xdp, xdp_desc, xdp_mmap_offsets, xdp_statistics, xdp_umem_reg};

/// Room the kernel leaves in front of every received packet (linux/bpf.h):
/// an rx descriptor's address is the chunk's plus this plus the UMEM's own
/// `headroom`.
pub const XDP_PACKET_HEADROOM: u32 = 256;

// Busy polling (asm-generic/socket.h); libc 0.2 does not export these for
// linux-gnu.
pub const SO_BUSY_POLL: libc::c_int = 46;
pub const SO_PREFER_BUSY_POLL: libc::c_int = 69;
pub const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// Plain data the kernel reads or writes as bytes: every bit pattern,
/// all zeroes included, is a valid value.
///
/// # Safety
/// Only for `repr(C)` integer-only types.
pub unsafe trait Pod: Copy {}
// SAFETY: all are repr(C) structs of u32/u64 fields, or plain integers.
unsafe impl Pod for libc::c_int {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for xdp_umem_reg {}
// SAFETY: as above.
unsafe impl Pod for xdp_mmap_offsets {}
// SAFETY: as above.
unsafe impl Pod for xdp_statistics {}
// SAFETY: as above.
unsafe impl Pod for libc::xdp_options {}
// SAFETY: as above.
unsafe impl Pod for sockaddr_xdp {}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// All zeroes: the starting value of the structures handed to the kernel.
pub fn zeroed<T: Pod>() -> T {
    // SAFETY: `T: Pod`, so all zeroes is a valid `T`.
    unsafe { std::mem::zeroed() }
}

/// A new AF_XDP socket.
pub fn xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain system call with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn setsockopt<T: Pod>(fd: BorrowedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` points to `len` readable bytes for the duration of the
    // call; the kernel copies them and keeps no pointer.
    check(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len) })
}

/// Reads an option the kernel fills in completely; a shorter answer (an
/// older kernel's smaller struct) is an error rather than half a value.
pub fn getsockopt<T: Pod>(fd: BorrowedFd, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
    let mut value: T = zeroed();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is `len` writable bytes, `len` is a valid in/out
    // length; `T: Pod` so any bytes the kernel writes form a valid `T`.
    check(unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&mut value as *mut T).cast(), &mut len) })?;
    if len as usize != std::mem::size_of::<T>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("socket option {name}: kernel answered {len} bytes, expected {}", std::mem::size_of::<T>()),
        ));
    }
    Ok(value)
}

pub fn bind(fd: BorrowedFd, addr: &sockaddr_xdp) -> io::Result<()> {
    let len = std::mem::size_of::<sockaddr_xdp>() as libc::socklen_t;
    // SAFETY: `addr` is a complete sockaddr_xdp of `len` bytes; the kernel
    // copies it.
    check(unsafe { libc::bind(fd.as_raw_fd(), (addr as *const sockaddr_xdp).cast(), len) })
}

/// Wakes the kernel to transmit what is on the tx ring (copy mode sends up
/// to 32 frames per call and answers EAGAIN when more are left).
pub fn kick_tx(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: a zero-length send with no buffer and no address: the kernel
    // reads nothing from user memory.
    let ret = unsafe { libc::sendto(fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Wakes the kernel to receive (it has fill ring entries again), and drives
/// busy polling when it is on.
pub fn kick_rx(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: a zero-length receive with no buffer and no address: the
    // kernel writes nothing to user memory.
    let ret = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A memory mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is plain memory; who may touch which bytes is decided
// by the types that own a `Mapping` (rings, the UMEM), not by the thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; `Mapping` itself only hands out its address.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `len` bytes of zeroed, page-aligned anonymous memory, populated now
    /// so the data path takes no page faults.
    pub fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a new private anonymous mapping; it aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Self::from_mmap(ptr, len)
    }

    /// Maps one of an AF_XDP socket's rings (`offset` names which).
    pub fn ring(fd: BorrowedFd, len: usize, offset: libc::off_t) -> io::Result<Self> {
        // SAFETY: a new shared mapping of the socket's ring at the offset
        // the kernel defines for it; the kernel checks `len` against the
        // ring's size.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset,
            )
        };
        Self::from_mmap(ptr, len)
    }

    fn from_mmap(ptr: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned and nothing
        // borrows the memory any more (its owners are being dropped).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
