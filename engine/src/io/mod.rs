//! Ports: where a worker's frames come from and go to. A port hands out
//! received frames in bursts, takes bursts to send, and takes back the
//! buffers of frames that were dropped. `mem` keeps frames in memory (tests
//! and the in-process benchmark); `xsk` is AF_XDP, the real thing.

pub mod mem;
pub mod xsk;

use crate::buf::PacketBuf;
use crate::model::PortId;

/// Room every port reserves in front of a frame: outer IPv6, UDP, ESP, IV
/// and a new Ethernet header fit, with margin.
pub const FRAME_HEADROOM: usize = 256;

/// Room every port leaves behind a full-size frame: ESP padding, trailer
/// and ICV.
pub const FRAME_TAILROOM: usize = 64;

pub trait Port {
    /// The frame buffer. Every port of one worker uses the same kind, so a
    /// frame received on one port is sent on another without copying.
    type Buf: AsRef<[u8]> + AsMut<[u8]>;

    fn id(&self) -> PortId;

    /// Appends up to `max` received frames to `out`; returns how many.
    fn rx_burst(&mut self, out: &mut Vec<PacketBuf<Self::Buf>>, max: usize) -> usize;

    /// Sends the frames `frames` drains.
    fn tx_burst(&mut self, frames: &mut dyn Iterator<Item = PacketBuf<Self::Buf>>);

    /// Takes back the buffer of a frame that was dropped.
    fn recycle(&mut self, buf: Self::Buf);

    /// The port's own counters, by name (frames it dropped and why, wake-up
    /// calls, ...), for the control thread's reports.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// An empty frame with [`FRAME_HEADROOM`] in front, for a packet the
    /// pipeline makes (an IPv4 fragment); `None` when none is free.
    fn alloc(&mut self) -> Option<PacketBuf<Self::Buf>>;
}
