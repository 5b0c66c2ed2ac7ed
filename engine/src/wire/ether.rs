//! Ethernet II frames, with at most one 802.1Q tag.

use super::{be16, Result, WireError};

/// EtherType values the engine knows.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const TYPE: usize = 12;
    pub const TCI: usize = 14;
    pub const TAGGED_TYPE: usize = 16;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet header with one 802.1Q tag.
pub const TAGGED_HEADER_LEN: usize = 18;

/// A MAC address.
pub type MacAddr = [u8; 6];

/// A view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T> {
    buffer: T,
    header_len: usize,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Views `buffer` as an Ethernet frame, checking that the header (and the
    /// 802.1Q tag, if the frame has one) fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated("ethernet"));
        }
        let header_len = if be16(b, field::TYPE) == ethertype::VLAN {
            if b.len() < TAGGED_HEADER_LEN {
                return Err(WireError::Truncated("802.1q"));
            }
            if be16(b, field::TAGGED_TYPE) == ethertype::VLAN {
                return Err(WireError::Malformed("802.1q", "stacked tags are not supported"));
            }
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        };
        Ok(Self { buffer, header_len })
    }

    pub fn dst(&self) -> MacAddr {
        self.buffer.as_ref()[field::DST].try_into().expect("6 bytes")
    }

    pub fn src(&self) -> MacAddr {
        self.buffer.as_ref()[field::SRC].try_into().expect("6 bytes")
    }

    /// The 802.1Q VLAN id, if the frame is tagged.
    pub fn vlan_id(&self) -> Option<u16> {
        (self.header_len == TAGGED_HEADER_LEN).then(|| be16(self.buffer.as_ref(), field::TCI) & 0x0fff)
    }

    /// The EtherType of the payload (after the tag, if any).
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), self.header_len - 2)
    }

    pub fn header_len(&self) -> usize {
        self.header_len
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the EtherType of the payload (after the tag, if any).
    pub fn set_ethertype(&mut self, value: u16) {
        let at = self.header_len - 2;
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }
}

/// Writes an untagged Ethernet header into `buf[..14]`.
pub fn emit_header(buf: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    buf[field::DST].copy_from_slice(&dst);
    buf[field::SRC].copy_from_slice(&src);
    buf[field::TYPE..field::TYPE + 2].copy_from_slice(&ethertype.to_be_bytes());
}

/// The EtherType for an IP packet, from its version nibble.
pub fn ethertype_for_ip(packet: &[u8]) -> Option<u16> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Some(ethertype::IPV4),
        Some(6) => Some(ethertype::IPV6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_frame() {
        let mut f = [0u8; 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[6] = 0xaa;
        let v = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(v.ethertype(), ethertype::IPV4);
        assert_eq!(v.vlan_id(), None);
        assert_eq!(v.header_len(), 14);
        assert_eq!(v.src()[0], 0xaa);
        assert_eq!(v.payload().len(), 6);
    }

    #[test]
    fn tagged_frame() {
        let mut f = [0u8; 18];
        f[12..18].copy_from_slice(&[0x81, 0x00, 0x20, 0x64, 0x86, 0xdd]);
        let mut v = EthernetFrame::new_checked(&mut f[..]).unwrap();
        assert_eq!(v.vlan_id(), Some(100));
        assert_eq!(v.ethertype(), ethertype::IPV6);
        v.set_ethertype(ethertype::IPV4);
        assert_eq!(&f[16..18], &[0x08, 0x00]);
    }

    #[test]
    fn emitted_header_reads_back() {
        let mut f = [0u8; 20];
        emit_header(&mut f, [1; 6], [2; 6], ethertype::IPV6);
        let v = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!((v.dst(), v.src(), v.ethertype(), v.header_len()), ([1; 6], [2; 6], ethertype::IPV6, 14));
    }

    #[test]
    fn short_frames_are_errors() {
        assert!(EthernetFrame::new_checked(&[0u8; 13][..]).is_err());
        let mut f = [0u8; 16];
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(EthernetFrame::new_checked(&f[..]).unwrap_err(), WireError::Truncated("802.1q"));
    }
}
