//! Zero-copy views over packet bytes, one file per header, in the smoltcp
//! style: a `new_checked` constructor validates lengths once, so every
//! accessor after it is infallible; setters exist where the engine writes.
//! Malformed input gives a [`WireError`], never a panic.

pub mod checksum;
pub mod echo;
pub mod esp;
pub mod ether;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

/// Why bytes could not be viewed as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the header (or the length it claims) does.
    #[error("{0}: truncated")]
    Truncated(&'static str),
    /// A field holds a value the header cannot have.
    #[error("{0}: {1}")]
    Malformed(&'static str, &'static str),
    /// The header checksum does not verify.
    #[error("{0}: bad checksum")]
    Checksum(&'static str),
}

pub type Result<T> = core::result::Result<T, WireError>;

/// IP protocol numbers (IANA) the engine looks at.
pub mod proto {
    pub const HOPOPT: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const IPV4: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6: u8 = 41;
    pub const IPV6_ROUTE: u8 = 43;
    pub const IPV6_FRAG: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_NONXT: u8 = 59;
    pub const IPV6_OPTS: u8 = 60;
}

/// Reads a big-endian u16 at `at`; callers have checked the bounds.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at `at`; callers have checked the bounds.
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
