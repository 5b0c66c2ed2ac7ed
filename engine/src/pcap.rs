//! Classic pcap capture files (the libpcap format), read and written, for
//! the link types vpngw handles: Ethernet and raw IP. Used by the offline
//! tool `vpngw-pcap`, by tests, and later by live capture.

use std::io::{self, Read, Write};

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const MAGIC_PCAPNG: u32 = 0x0a0d_0d0a;
/// Larger records are taken for corruption rather than allocated.
const MAX_RECORD: u32 = 256 * 1024;

/// Link layers vpngw reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_RAW (101): the record is an IPv4 or IPv6 packet.
    RawIp,
    /// LINKTYPE_IPV4 (228): IPv4 packets only (Scapy writes these).
    Ipv4,
    /// LINKTYPE_IPV6 (229): IPv6 packets only.
    Ipv6,
}

impl LinkType {
    pub fn code(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::RawIp => 101,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
        }
    }

    /// True if records are bare IP packets, without a link header.
    pub fn is_ip(self) -> bool {
        self != LinkType::Ethernet
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(LinkType::Ethernet),
            101 => Some(LinkType::RawIp),
            228 => Some(LinkType::Ipv4),
            229 => Some(LinkType::Ipv6),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a pcap file (magic {0:#010x})")]
    NotPcap(u32),
    #[error("pcapng files are not supported: convert with `editcap -F pcap IN OUT`")]
    Pcapng,
    #[error("link type {0} is not supported (only Ethernet (1) and raw IP (101, 228, 229))")]
    LinkType(u32),
    #[error("record {index}: captured length {len} exceeds the limit")]
    RecordTooLarge { index: u64, len: u32 },
    #[error("file ends inside record {0}")]
    Truncated(u64),
}

/// One captured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ts_sec: u32,
    /// Microseconds or nanoseconds, as the file says.
    pub ts_frac: u32,
    /// Length on the wire; `data` may be shorter if the capture cut it.
    pub orig_len: u32,
    pub data: Vec<u8>,
}

impl Record {
    /// True if the capture holds the whole packet.
    pub fn is_complete(&self) -> bool {
        self.data.len() as u32 == self.orig_len
    }
}

/// Reads records from a pcap stream, either byte order.
pub struct PcapReader<R> {
    inner: R,
    swapped: bool,
    nanos: bool,
    link: LinkType,
    index: u64,
}

impl<R: Read> PcapReader<R> {
    pub fn new(mut inner: R) -> Result<Self, PcapError> {
        let mut h = [0u8; 24];
        inner.read_exact(&mut h)?;
        let magic = u32::from_le_bytes(h[0..4].try_into().expect("4"));
        let (swapped, nanos) = match magic {
            MAGIC_MICROS => (false, false),
            MAGIC_NANOS => (false, true),
            m if m.swap_bytes() == MAGIC_MICROS => (true, false),
            m if m.swap_bytes() == MAGIC_NANOS => (true, true),
            MAGIC_PCAPNG => return Err(PcapError::Pcapng),
            m => return Err(PcapError::NotPcap(m)),
        };
        let word = |b: &[u8]| {
            let v = u32::from_le_bytes(b.try_into().expect("4"));
            if swapped {
                v.swap_bytes()
            } else {
                v
            }
        };
        // The low 16 bits are the link type; the rest are FCS flags.
        let code = word(&h[20..24]) & 0xffff;
        let link = LinkType::from_code(code).ok_or(PcapError::LinkType(code))?;
        Ok(Self { inner, swapped, nanos, link, index: 0 })
    }

    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// True if timestamps are in nanoseconds.
    pub fn nanos(&self) -> bool {
        self.nanos
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let mut h = [0u8; 16];
        match read_full(&mut self.inner, &mut h)? {
            0 => return Ok(None),
            16 => {}
            _ => return Err(PcapError::Truncated(self.index)),
        }
        let word = |i: usize| {
            let v = u32::from_le_bytes(h[i..i + 4].try_into().expect("4"));
            if self.swapped {
                v.swap_bytes()
            } else {
                v
            }
        };
        let (ts_sec, ts_frac, caplen, orig_len) = (word(0), word(4), word(8), word(12));
        if caplen > MAX_RECORD {
            return Err(PcapError::RecordTooLarge { index: self.index, len: caplen });
        }
        let mut data = vec![0u8; caplen as usize];
        if read_full(&mut self.inner, &mut data)? != data.len() {
            return Err(PcapError::Truncated(self.index));
        }
        self.index += 1;
        Ok(Some(Record { ts_sec, ts_frac, orig_len, data }))
    }
}

impl<R: Read> Iterator for PcapReader<R> {
    type Item = Result<Record, PcapError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes a pcap stream (little-endian, as libpcap on x86 does).
pub struct PcapWriter<W: Write> {
    inner: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header. `nanos` selects nanosecond timestamps.
    pub fn new(mut inner: W, link: LinkType, nanos: bool) -> io::Result<Self> {
        let magic = if nanos { MAGIC_NANOS } else { MAGIC_MICROS };
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&magic.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // thiszone
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&MAX_RECORD.to_le_bytes()); // snaplen
        h.extend_from_slice(&link.code().to_le_bytes());
        inner.write_all(&h)?;
        Ok(Self { inner })
    }

    /// Writes one record; `orig_len` is taken to be the data's length.
    pub fn write(&mut self, ts_sec: u32, ts_frac: u32, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("record too large"))?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ts_sec.to_le_bytes());
        h[4..8].copy_from_slice(&ts_frac.to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.inner.write_all(&h)?;
        self.inner.write_all(data)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::RawIp, false).unwrap();
        w.write(1, 2, &[0x45, 0, 0, 20]).unwrap();
        w.write(3, 4, &[]).unwrap();
        let bytes = w.into_inner();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.link_type(), LinkType::RawIp);
        let a = r.next_record().unwrap().unwrap();
        assert_eq!((a.ts_sec, a.ts_frac, a.data.as_slice()), (1, 2, &[0x45, 0, 0, 20][..]));
        assert!(a.is_complete());
        assert_eq!(r.next_record().unwrap().unwrap().data.len(), 0);
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn big_endian_files_are_read() {
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC_NANOS.to_be_bytes());
        f.extend_from_slice(&[0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1]);
        f.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0, 0, 60, 0xaa, 0xbb]);
        let mut r = PcapReader::new(&f[..]).unwrap();
        assert!(r.nanos());
        assert_eq!(r.link_type(), LinkType::Ethernet);
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!((rec.ts_sec, rec.orig_len, rec.data.as_slice()), (9, 60, &[0xaa, 0xbb][..]));
        assert!(!rec.is_complete());
    }

    #[test]
    fn broken_files_are_errors() {
        assert!(matches!(PcapReader::new(&[0u8; 10][..]), Err(PcapError::Io(_))));
        assert!(matches!(PcapReader::new(&[7u8; 24][..]), Err(PcapError::NotPcap(_))));
        let mut ng = MAGIC_PCAPNG.to_le_bytes().to_vec();
        ng.resize(24, 0);
        assert!(matches!(PcapReader::new(&ng[..]), Err(PcapError::Pcapng)));
        let mut w = PcapWriter::new(Vec::new(), LinkType::Ethernet, false).unwrap();
        w.write(0, 0, &[1, 2, 3]).unwrap();
        let mut bytes = w.into_inner();
        bytes.pop();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Truncated(0))));
        let mut v4 = bytes.clone();
        v4[20] = 228;
        assert!(PcapReader::new(&v4[..]).unwrap().link_type().is_ip());
        let mut odd = bytes.clone();
        odd[20] = 113;
        assert!(matches!(PcapReader::new(&odd[..]), Err(PcapError::LinkType(113))));
        let mut huge = bytes;
        huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = PcapReader::new(&huge[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::RecordTooLarge { .. })));
    }
}
