//! In-memory ports: frames are injected as bytes and collected as bytes.
//! Each received frame gets the head- and tailroom a real UMEM frame has,
//! so encapsulation never copies here either.

use super::Port;
use crate::buf::PacketBuf;
use crate::model::PortId;
use std::collections::VecDeque;

use super::FRAME_HEADROOM as HEADROOM;

/// Room behind a frame: padding, trailer and ICV.
pub const TAILROOM: usize = super::FRAME_TAILROOM;
/// The size of a frame made for the pipeline (a UMEM chunk's).
pub const FRAME_SIZE: usize = 2048;

#[derive(Debug, Default)]
pub struct MemPort {
    id: PortId,
    rx: VecDeque<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    /// Buffers of dropped frames, reused for received ones.
    free: Vec<Vec<u8>>,
}

impl MemPort {
    pub fn new(id: PortId) -> Self {
        Self { id, ..Self::default() }
    }

    /// Queues a frame to be received.
    pub fn inject(&mut self, frame: &[u8]) {
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(frame);
        buf.resize(HEADROOM + frame.len() + TAILROOM, 0);
        self.rx.push_back(buf);
    }

    /// The frames sent so far, oldest first; the port forgets them.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent)
    }

    /// Frames waiting to be received.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }
}

impl Port for MemPort {
    type Buf = Vec<u8>;

    fn id(&self) -> PortId {
        self.id
    }

    fn rx_burst(&mut self, out: &mut Vec<PacketBuf<Vec<u8>>>, max: usize) -> usize {
        let n = max.min(self.rx.len());
        for buf in self.rx.drain(..n) {
            let len = buf.len() - HEADROOM - TAILROOM;
            out.push(PacketBuf::new(buf, HEADROOM, len).expect("the frame was built with its room"));
        }
        n
    }

    fn tx_burst(&mut self, frames: &mut dyn Iterator<Item = PacketBuf<Vec<u8>>>) {
        self.sent.extend(frames.map(|f| f.data().to_vec()));
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        self.free.push(buf);
    }

    fn alloc(&mut self) -> Option<PacketBuf<Vec<u8>>> {
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.resize(FRAME_SIZE, 0);
        Some(PacketBuf::new(buf, HEADROOM, 0).expect("headroom within the frame"))
    }
}
