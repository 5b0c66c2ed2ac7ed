//! TCP, only as far as a gateway touches it: the MSS option of a SYN,
//! clamped on the way into a tunnel so the peers never send segments the
//! tunnel would have to fragment. The checksum is updated incrementally
//! (RFC 1624), so the pseudo-header is not needed.

use super::{be16, checksum};

const FLAG_SYN: u8 = 0x02;
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// Lowers the MSS option of a SYN segment to `max` if it is above it.
/// Returns true if the segment changed. Anything that is not a SYN, has
/// no MSS option, or is malformed is left as it is.
pub fn clamp_mss(segment: &mut [u8], max: u16) -> bool {
    if segment.len() < 20 || segment[13] & FLAG_SYN == 0 {
        return false;
    }
    let header_len = ((segment[12] >> 4) as usize) * 4;
    if header_len < 20 || header_len > segment.len() {
        return false;
    }
    let mut at = 20;
    while at < header_len {
        match segment[at] {
            OPT_END => return false,
            OPT_NOP => at += 1,
            kind => {
                let Some(&len) = segment.get(at + 1) else { return false };
                let len = len as usize;
                if len < 2 || at + len > header_len {
                    return false;
                }
                if kind == OPT_MSS && len == 4 {
                    let old = be16(segment, at + 2);
                    if old <= max {
                        return false;
                    }
                    segment[at + 2..at + 4].copy_from_slice(&max.to_be_bytes());
                    let hc = be16(segment, 16);
                    let sum = !hc as u64 + !old as u64 + max as u64;
                    segment[16..18].copy_from_slice(&checksum::finish(sum).to_be_bytes());
                    return true;
                }
                at += len;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{finish, pseudo_v4, sum};

    /// A SYN with options NOP, NOP, MSS 1460, and a valid checksum.
    fn syn(mss: u16) -> Vec<u8> {
        let mut s = vec![0u8; 28];
        s[0..4].copy_from_slice(&[0x13, 0x88, 0x01, 0xbb]);
        s[12] = 7 << 4;
        s[13] = FLAG_SYN;
        s[20..28].copy_from_slice(&[OPT_NOP, OPT_NOP, OPT_MSS, 4, (mss >> 8) as u8, mss as u8, OPT_NOP, OPT_NOP]);
        fill(&mut s);
        s
    }

    fn fill(s: &mut [u8]) {
        s[16..18].fill(0);
        let c = finish(pseudo_v4([10, 1, 0, 5].into(), [172, 16, 1, 9].into(), 6, s.len() as u16) + sum(s));
        s[16..18].copy_from_slice(&c.to_be_bytes());
    }

    fn valid(s: &[u8]) -> bool {
        finish(pseudo_v4([10, 1, 0, 5].into(), [172, 16, 1, 9].into(), 6, s.len() as u16) + sum(s)) == 0
    }

    #[test]
    fn clamps_only_what_is_above() {
        let mut s = syn(1460);
        assert!(clamp_mss(&mut s, 1360));
        assert_eq!(be16(&s, 24), 1360);
        assert!(valid(&s), "checksum updated");
        let mut small = syn(1200);
        assert!(!clamp_mss(&mut small, 1360));
        assert_eq!(be16(&small, 24), 1200);
    }

    #[test]
    fn leaves_other_segments_alone() {
        let mut ack = syn(1460);
        ack[13] = 0x10;
        fill(&mut ack);
        assert!(!clamp_mss(&mut ack, 1000));
        let mut bad = syn(1460);
        bad[21] = 0; // option length 0
        assert!(!clamp_mss(&mut bad, 1000));
        assert!(!clamp_mss(&mut syn(1460)[..19], 1000));
        let mut short_offset = syn(1460);
        short_offset[12] = 4 << 4;
        assert!(!clamp_mss(&mut short_offset, 1000));
    }
}
