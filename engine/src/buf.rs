//! A packet inside a frame with headroom and tailroom, so ESP can push its
//! outer headers in front and its trailer behind without moving the packet.
//!
//! The frame is any byte buffer: a UMEM chunk on the AF_XDP path, a `Vec`
//! in tests and tools. Only the offsets move; the bytes stay where they are.

/// Not enough headroom or tailroom in the frame for what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame has no room: {0}")]
pub struct NoRoom(pub &'static str);

/// Bytes `start..end` of `frame` are the packet; the rest is room.
#[derive(Debug, Clone)]
pub struct PacketBuf<B> {
    frame: B,
    start: usize,
    end: usize,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> PacketBuf<B> {
    /// The packet is `len` bytes at offset `start` of `frame`.
    pub fn new(frame: B, start: usize, len: usize) -> Result<Self, NoRoom> {
        let end = start.checked_add(len).ok_or(NoRoom("packet beyond frame"))?;
        if end > frame.as_ref().len() {
            return Err(NoRoom("packet beyond frame"));
        }
        Ok(Self { frame, start, end })
    }

    /// A frame of `headroom + packet.len() + tailroom` bytes holding a copy
    /// of `packet`: for tools and tests that start from a slice.
    pub fn with_room(packet: &[u8], headroom: usize, tailroom: usize) -> PacketBuf<Vec<u8>> {
        let mut frame = vec![0u8; headroom + packet.len() + tailroom];
        frame[headroom..headroom + packet.len()].copy_from_slice(packet);
        PacketBuf { frame, start: headroom, end: headroom + packet.len() }
    }

    pub fn data(&self) -> &[u8] {
        &self.frame.as_ref()[self.start..self.end]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.frame.as_mut()[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn headroom(&self) -> usize {
        self.start
    }

    pub fn tailroom(&self) -> usize {
        self.frame.as_ref().len() - self.end
    }

    /// Grows the packet by `n` bytes at the front, into the headroom.
    pub fn push_front(&mut self, n: usize) -> Result<(), NoRoom> {
        if n > self.start {
            return Err(NoRoom("headroom"));
        }
        self.start -= n;
        Ok(())
    }

    /// Grows the packet by `n` bytes at the back, into the tailroom.
    pub fn push_back(&mut self, n: usize) -> Result<(), NoRoom> {
        if n > self.tailroom() {
            return Err(NoRoom("tailroom"));
        }
        self.end += n;
        Ok(())
    }

    /// Narrows the packet to `range` of its current bytes (decapsulation:
    /// the inner packet is what is left). An out-of-range request is refused.
    pub fn narrow(&mut self, range: core::ops::Range<usize>) -> Result<(), NoRoom> {
        if range.start > range.end || range.end > self.len() {
            return Err(NoRoom("narrow beyond packet"));
        }
        self.end = self.start + range.end;
        self.start += range.start;
        Ok(())
    }

    /// The whole frame the packet is in.
    pub fn frame(&self) -> &B {
        &self.frame
    }

    pub fn into_frame(self) -> B {
        self.frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_narrow_move_offsets_only() {
        let mut p = PacketBuf::<Vec<u8>>::with_room(&[1, 2, 3], 4, 2);
        assert_eq!((p.headroom(), p.tailroom(), p.data()), (4, 2, &[1, 2, 3][..]));
        p.push_front(4).unwrap();
        p.push_back(2).unwrap();
        assert_eq!(p.data(), &[0, 0, 0, 0, 1, 2, 3, 0, 0]);
        assert_eq!(p.push_front(1), Err(NoRoom("headroom")));
        assert_eq!(p.push_back(1), Err(NoRoom("tailroom")));
        p.narrow(4..7).unwrap();
        assert_eq!(p.data(), &[1, 2, 3]);
        assert!(p.narrow(2..4).is_err());
        assert!(PacketBuf::new(vec![0u8; 4], 2, 3).is_err());
        assert!(PacketBuf::new(vec![0u8; 4], usize::MAX, 3).is_err());
    }
}
