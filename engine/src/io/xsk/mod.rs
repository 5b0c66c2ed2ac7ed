//! AF_XDP ports: the engine's [`Port`](crate::io::Port) over Linux XDP
//! sockets, on the `libc` crate alone (no C library at run time). The ring
//! layer is our own: the pure-Rust alternative, xdpilone, is EUPL-1.2, and
//! the layer is small (the kernel's `Documentation/networking/af_xdp.rst`
//! is its specification).
//!
//! - [`Umem`]: one anonymous, page-aligned mapping of equal frames (2048 or
//!   4096 bytes), registered with the kernel by its first socket, and the
//!   frame pool that knows where every frame is.
//! - [`XskSocket`]: a socket bound to (interface, queue) with its fill,
//!   completion, rx and tx rings. Zero-copy is tried first, copy is the
//!   fallback ([`Mode`] says which the kernel took). Further sockets on other
//!   interfaces share the UMEM (XDP_SHARED_UMEM), so one worker forwards
//!   between its inside and outside ports without copying.
//! - [`XskPort`]: the `Port`: receive and transmit bursts, recycle, alloc.
//!   The buffer is a [`Frame`], a handle on one UMEM frame.
//!
//! # Where a received packet sits
//!
//! The kernel writes a received packet `XDP_PACKET_HEADROOM` (256) bytes
//! plus the UMEM's configured `headroom` into the frame, and the rx
//! descriptor's address already points at the packet (aligned mode:
//! `xp_get_handle` returns `data - umem base`; checked by the tests on
//! kernel 6.18). So with the default `headroom` of 0 every received packet
//! has exactly [`FRAME_HEADROOM`](crate::io::FRAME_HEADROOM) (256) bytes in
//! front, where ESP pushes its outer headers, and a 1514-byte frame in a
//! 2048-byte chunk has 278 bytes behind it for the ESP trailer and ICV
//! ([`FRAME_TAILROOM`](crate::io::FRAME_TAILROOM), 64, is the minimum the
//! configuration accepts). A transmit descriptor may start anywhere in a
//! frame, so the packet leaves from wherever the pipeline left it.
//!
//! # A frame's life
//!
//! ```text
//!            refill                 kernel receives            rx_burst
//!   free ───────────────► fill ─────────────────────► rx ring ───────────► pipeline
//!    ▲                  (socket A)                  (socket A)               │  │
//!    │ recycle / drop of a Frame / tx-full                                   │  │
//!    ├───────────────────────────────────────────────────────────────────────┘  │ tx_burst
//!    │          drain              kernel sends                                 ▼
//!    └──────────── completion ◄────────────────────────────────────────── tx ring
//!                  (socket B)                                            (socket B)
//! ```
//!
//! The pool tags every frame with its place ([`FramePlace`]) and moves the
//! tag under the UMEM's lock at each arrow, asserting (in debug builds)
//! that the frame was where it should be; [`Umem::accounting`] counts the
//! tags, always summing to the frame count. A socket's close gives back
//! what its rings held (in copy mode; in zero-copy mode the driver lets go
//! late, so those frames stay counted as the closed socket's).

mod port;
mod ring;
mod socket;
mod sys;
mod umem;

#[cfg(test)]
mod tests;

pub use port::{XskPort, XskStats};
pub use socket::{
    BusyPoll, BusyPollState, KernelStats, Mode, ModePreference, RingLevels, XskConfig, XskSocket, BIND_RETRY,
};
pub use sys::XDP_PACKET_HEADROOM;
pub use umem::{Frame, FrameAccounting, FramePlace, SocketId, Umem, UmemConfig, MAX_ETHERNET_FRAME, MAX_FRAMES};

use std::io;

/// Setting up an AF_XDP socket or UMEM failed.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("invalid AF_XDP configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl XskError {
    pub(crate) fn sys(what: impl Into<String>, source: io::Error) -> Self {
        Self::Sys { what: what.into(), source }
    }

    /// The errno, if a system call failed.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            Self::Sys { source, .. } => source.raw_os_error(),
            Self::Config(_) => None,
        }
    }
}
