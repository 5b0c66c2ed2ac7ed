//! The ESP header and trailer (RFC 4303 section 2).
//!
//! ```text
//! | SPI (4) | Sequence Number (4) | IV (8) | payload ... | padding | pad len | next hdr | ICV (16) |
//!                                          |<------------ encrypted ---------------->|
//! ```

use super::{be32, Result, WireError};

/// SPI and sequence number.
pub const HEADER_LEN: usize = 8;
/// Pad Length and Next Header.
pub const TRAILER_LEN: usize = 2;

/// A view of an ESP packet (from the SPI to the end of the ICV).
#[derive(Debug, Clone)]
pub struct EspPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated("esp"));
        }
        Ok(Self { buffer })
    }

    pub fn spi(&self) -> u32 {
        be32(self.buffer.as_ref(), 0)
    }

    /// The low 32 bits of the sequence number (all of it without ESN).
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    /// IV, encrypted payload, trailer and ICV.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// Writes the ESP header into `buf[..8]`.
pub fn emit_header(buf: &mut [u8], spi: u32, seq_low: u32) {
    buf[0..4].copy_from_slice(&spi.to_be_bytes());
    buf[4..8].copy_from_slice(&seq_low.to_be_bytes());
}

/// Padding that makes `payload_len` plus the trailer a multiple of `align`
/// (RFC 4303 section 2.4): the minimum, as every peer sends.
pub fn pad_len(payload_len: usize, align: usize) -> usize {
    (align - (payload_len + TRAILER_LEN) % align) % align
}

/// Writes the padding 1, 2, 3, ... and the trailer into `buf`, which must be
/// exactly `pad_len + 2` bytes long.
pub fn emit_trailer(buf: &mut [u8], next_header: u8) {
    let pad = buf.len() - TRAILER_LEN;
    for (i, b) in buf[..pad].iter_mut().enumerate() {
        *b = (i + 1) as u8;
    }
    buf[pad] = pad as u8;
    buf[pad + 1] = next_header;
}

/// The trailer of a decrypted ESP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Length of the protected packet before the padding.
    pub payload_len: usize,
    pub next_header: u8,
}

/// Why a decrypted trailer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrailerError {
    #[error("esp trailer: pad length exceeds the payload")]
    Malformed,
    #[error("esp trailer: pad bytes are not 1, 2, 3, ...")]
    Padding,
}

/// Reads the trailer at the end of a decrypted payload and checks that the
/// pad bytes are 1, 2, 3, ... (RFC 4303 section 2.4: the receiver should
/// inspect them).
pub fn parse_trailer(plaintext: &[u8]) -> core::result::Result<Trailer, TrailerError> {
    let n = plaintext.len();
    if n < TRAILER_LEN {
        return Err(TrailerError::Malformed);
    }
    let pad = plaintext[n - 2] as usize;
    let payload_len = (n - TRAILER_LEN).checked_sub(pad).ok_or(TrailerError::Malformed)?;
    let pad_bytes = &plaintext[payload_len..n - TRAILER_LEN];
    if pad_bytes.iter().enumerate().any(|(i, &b)| b != (i + 1) as u8) {
        return Err(TrailerError::Padding);
    }
    Ok(Trailer { payload_len, next_header: plaintext[n - 1] })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4303 section 2.4: payload + padding + 2 is a multiple of 4.
    #[test]
    fn padding_aligns_to_four() {
        for len in 0..64 {
            let pad = pad_len(len, 4);
            assert!(pad < 4);
            assert_eq!((len + pad + TRAILER_LEN) % 4, 0);
        }
        assert_eq!([pad_len(20, 4), pad_len(21, 4), pad_len(22, 4), pad_len(23, 4)], [2, 1, 0, 3]);
    }

    #[test]
    fn trailer_round_trip() {
        let mut p = vec![0xeeu8; 21 + 1 + 2];
        emit_trailer(&mut p[21..], 4);
        assert_eq!(&p[21..], &[1, 1, 4]);
        assert_eq!(parse_trailer(&p), Ok(Trailer { payload_len: 21, next_header: 4 }));
        let mut q = vec![0u8; 23 + 3 + 2];
        emit_trailer(&mut q[23..], 41);
        assert_eq!(&q[23..], &[1, 2, 3, 3, 41]);
        assert_eq!(parse_trailer(&q), Ok(Trailer { payload_len: 23, next_header: 41 }));
    }

    #[test]
    fn bad_trailers_are_refused() {
        assert_eq!(parse_trailer(&[4]), Err(TrailerError::Malformed));
        assert_eq!(parse_trailer(&[0, 0, 3, 4]), Err(TrailerError::Malformed));
        assert_eq!(parse_trailer(&[9, 1, 3, 2, 4]), Err(TrailerError::Padding));
        assert_eq!(parse_trailer(&[9, 0, 0, 2, 4]), Err(TrailerError::Padding));
    }

    #[test]
    fn header_view() {
        let mut b = [0u8; 8];
        emit_header(&mut b, 0x1001, 7);
        let e = EspPacket::new_checked(&b[..]).unwrap();
        assert_eq!((e.spi(), e.seq(), e.payload().len()), (0x1001, 7, 0));
        assert!(EspPacket::new_checked(&b[..7]).is_err());
    }
}
