//! IKEv2 messages on the wire (RFC 7296 section 3): the header, the chain
//! of generic payloads, and the payloads a site-to-site exchange uses —
//! SA (proposals, transforms, attributes), KE, IDi/IDr, AUTH, Nonce,
//! Notify, Delete, Vendor ID, TSi/TSr — and the Encrypted (SK) payload,
//! kept as bytes until the keys open it (`parse_chain` reads what is
//! inside). Anything else is kept as an opaque payload with its critical
//! bit, so a responder can answer UNSUPPORTED_CRITICAL_PAYLOAD.
//!
//! Parsing is strict: every length is checked against what contains it
//! and every error says where; nothing panics on any input. Writing is
//! canonical (reserved bits zero, the lengths computed), so a message
//! parsed and written again is byte for byte what a canonical sender sent.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The fixed header's length.
pub const HEADER_LEN: usize = 28;
/// Major version 2, minor 0.
pub const VERSION: u8 = 0x20;

/// Exchange types (RFC 7296 section 3.1).
pub mod exchange {
    pub const IKE_SA_INIT: u8 = 34;
    pub const IKE_AUTH: u8 = 35;
    pub const CREATE_CHILD_SA: u8 = 36;
    pub const INFORMATIONAL: u8 = 37;
}

/// Header flags (RFC 7296 section 3.1).
pub mod flags {
    /// Sent by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// The sender can speak a higher major version.
    pub const VERSION: u8 = 0x10;
    /// A response.
    pub const RESPONSE: u8 = 0x20;
}

/// Payload types (RFC 7296 section 3.2).
pub mod kind {
    pub const NONE: u8 = 0;
    pub const SA: u8 = 33;
    pub const KE: u8 = 34;
    pub const IDI: u8 = 35;
    pub const IDR: u8 = 36;
    pub const AUTH: u8 = 39;
    pub const NONCE: u8 = 40;
    pub const NOTIFY: u8 = 41;
    pub const DELETE: u8 = 42;
    pub const VENDOR_ID: u8 = 43;
    pub const TSI: u8 = 44;
    pub const TSR: u8 = 45;
    pub const SK: u8 = 46;
}

/// Notify message types (RFC 7296 section 3.10.1; RFC 7383).
pub mod notify {
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    pub const INVALID_IKE_SPI: u16 = 4;
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    pub const INVALID_SYNTAX: u16 = 7;
    pub const INVALID_MESSAGE_ID: u16 = 9;
    pub const INVALID_SPI: u16 = 11;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    pub const AUTHENTICATION_FAILED: u16 = 24;
    pub const SINGLE_PAIR_REQUIRED: u16 = 34;
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    pub const INTERNAL_ADDRESS_FAILURE: u16 = 36;
    pub const FAILED_CP_REQUIRED: u16 = 37;
    pub const TS_UNACCEPTABLE: u16 = 38;
    pub const INVALID_SELECTORS: u16 = 39;
    pub const TEMPORARY_FAILURE: u16 = 43;
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    /// Types below this are errors; from it on, status.
    pub const FIRST_STATUS: u16 = 16384;
    pub const INITIAL_CONTACT: u16 = 16384;
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    pub const COOKIE: u16 = 16390;
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    pub const REKEY_SA: u16 = 16393;

    /// A name for logs.
    pub fn name(kind: u16) -> String {
        let n = match kind {
            UNSUPPORTED_CRITICAL_PAYLOAD => "UNSUPPORTED_CRITICAL_PAYLOAD",
            INVALID_IKE_SPI => "INVALID_IKE_SPI",
            INVALID_MAJOR_VERSION => "INVALID_MAJOR_VERSION",
            INVALID_SYNTAX => "INVALID_SYNTAX",
            INVALID_MESSAGE_ID => "INVALID_MESSAGE_ID",
            INVALID_SPI => "INVALID_SPI",
            NO_PROPOSAL_CHOSEN => "NO_PROPOSAL_CHOSEN",
            INVALID_KE_PAYLOAD => "INVALID_KE_PAYLOAD",
            AUTHENTICATION_FAILED => "AUTHENTICATION_FAILED",
            SINGLE_PAIR_REQUIRED => "SINGLE_PAIR_REQUIRED",
            NO_ADDITIONAL_SAS => "NO_ADDITIONAL_SAS",
            INTERNAL_ADDRESS_FAILURE => "INTERNAL_ADDRESS_FAILURE",
            FAILED_CP_REQUIRED => "FAILED_CP_REQUIRED",
            TS_UNACCEPTABLE => "TS_UNACCEPTABLE",
            INVALID_SELECTORS => "INVALID_SELECTORS",
            TEMPORARY_FAILURE => "TEMPORARY_FAILURE",
            CHILD_SA_NOT_FOUND => "CHILD_SA_NOT_FOUND",
            INITIAL_CONTACT => "INITIAL_CONTACT",
            NAT_DETECTION_SOURCE_IP => "NAT_DETECTION_SOURCE_IP",
            NAT_DETECTION_DESTINATION_IP => "NAT_DETECTION_DESTINATION_IP",
            COOKIE => "COOKIE",
            USE_TRANSPORT_MODE => "USE_TRANSPORT_MODE",
            REKEY_SA => "REKEY_SA",
            k => return format!("notify type {k}"),
        };
        n.to_string()
    }
}

/// Traffic selector types (RFC 7296 section 3.13.1).
pub const TS_IPV4_ADDR_RANGE: u8 = 7;
pub const TS_IPV6_ADDR_RANGE: u8 = 8;

/// The Key Length transform attribute (RFC 7296 section 3.3.5).
pub const ATTR_KEY_LENGTH: u16 = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    /// The payload that comes first.
    pub next: u8,
    pub version: u8,
    pub exchange: u8,
    pub flags: u8,
    pub message_id: u32,
    /// The whole message's length, header included.
    pub length: u32,
}

/// A transform attribute: a 16-bit value (TV) or bytes (TLV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    Tv { kind: u16, value: u16 },
    Tlv { kind: u16, value: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// ENCR 1, PRF 2, INTEG 3, DH 4, ESN 5.
    pub kind: u8,
    pub id: u16,
    pub attributes: Vec<Attribute>,
}

impl Transform {
    pub fn new(kind: u8, id: u16) -> Self {
        Self { kind, id, attributes: Vec::new() }
    }

    pub fn with_key_length(kind: u8, id: u16, bits: u16) -> Self {
        Self { kind, id, attributes: vec![Attribute::Tv { kind: ATTR_KEY_LENGTH, value: bits }] }
    }

    /// The Key Length attribute, if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Tv { kind: ATTR_KEY_LENGTH, value } => Some(*value),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    /// IKE 1, AH 2, ESP 3.
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

/// An IDi or IDr payload: its type (IPv4 1, FQDN 2, RFC 822 3, IPv6 5,
/// DN 9, KEY_ID 11) and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub kind: u8,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub kind: u16,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSelector {
    /// IP protocol, 0 for any.
    pub protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: IpAddr,
    pub end: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke {
        group: u16,
        data: Vec<u8>,
    },
    IdI(Identity),
    IdR(Identity),
    Auth {
        method: u8,
        data: Vec<u8>,
    },
    Nonce(Vec<u8>),
    Notify(Notify),
    Delete {
        protocol: u8,
        spi_size: u8,
        spis: Vec<Vec<u8>>,
    },
    VendorId(Vec<u8>),
    TsI(Vec<TrafficSelector>),
    TsR(Vec<TrafficSelector>),
    /// The Encrypted payload: the type of the first payload inside, and
    /// IV, ciphertext and ICV as they came.
    Sk {
        first: u8,
        data: Vec<u8>,
    },
    /// Any other payload, kept whole.
    Other {
        kind: u8,
        critical: bool,
        data: Vec<u8>,
    },
}

impl Payload {
    /// Its payload type.
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Sa(_) => kind::SA,
            Payload::Ke { .. } => kind::KE,
            Payload::IdI(_) => kind::IDI,
            Payload::IdR(_) => kind::IDR,
            Payload::Auth { .. } => kind::AUTH,
            Payload::Nonce(_) => kind::NONCE,
            Payload::Notify(_) => kind::NOTIFY,
            Payload::Delete { .. } => kind::DELETE,
            Payload::VendorId(_) => kind::VENDOR_ID,
            Payload::TsI(_) => kind::TSI,
            Payload::TsR(_) => kind::TSR,
            Payload::Sk { .. } => kind::SK,
            Payload::Other { kind, .. } => *kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payloads: Vec<Payload>,
}

/// Why bytes are not an IKEv2 message: what was wrong, and at which byte
/// of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Lengths or contents that cannot be.
    Malformed { at: usize, what: &'static str },
    /// A major version other than 2 (answer INVALID_MAJOR_VERSION).
    Version(u8),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed { at, what } => write!(f, "malformed IKE message at byte {at}: {what}"),
            ParseError::Version(v) => write!(f, "IKE version {}.{} (only 2.x is spoken)", v >> 4, v & 15),
        }
    }
}

impl std::error::Error for ParseError {}

fn bad(at: usize, what: &'static str) -> ParseError {
    ParseError::Malformed { at, what }
}

/// A cursor over a slice that remembers where it is in the message.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of `data` in the message, for errors.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], base: usize) -> Self {
        Self { data, pos: 0, base }
    }

    fn at(&self) -> usize {
        self.base + self.pos
    }

    fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        if self.left() < n {
            return Err(bad(self.at(), what));
        }
        let b = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.bytes(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        let b = self.bytes(8, what)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn rest(&mut self) -> &'a [u8] {
        let b = &self.data[self.pos..];
        self.pos = self.data.len();
        b
    }
}

/// Reads the header of `bytes` (without the payloads).
pub fn parse_header(bytes: &[u8]) -> Result<Header, ParseError> {
    let mut r = Reader::new(bytes, 0);
    let h = Header {
        spi_i: r.u64("header: truncated")?,
        spi_r: r.u64("header: truncated")?,
        next: r.u8("header: truncated")?,
        version: r.u8("header: truncated")?,
        exchange: r.u8("header: truncated")?,
        flags: r.u8("header: truncated")?,
        message_id: r.u32("header: truncated")?,
        length: r.u32("header: truncated")?,
    };
    if h.version >> 4 != 2 {
        return Err(ParseError::Version(h.version));
    }
    if h.length as usize != bytes.len() {
        return Err(bad(24, "header: the length field is not the datagram's length"));
    }
    Ok(h)
}

/// Parses a whole message (the SK payload, if any, stays encrypted).
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    let header = parse_header(bytes)?;
    let payloads = parse_chain(header.next, &bytes[HEADER_LEN..], HEADER_LEN)?;
    Ok(Message { header, payloads })
}

/// Parses a chain of payloads starting with type `first` (a message's
/// body, or what an SK payload decrypts to); `base` is where `bytes`
/// starts in the message, for errors. An SK payload must be the last.
pub fn parse_chain(first: u8, bytes: &[u8], base: usize) -> Result<Vec<Payload>, ParseError> {
    let mut r = Reader::new(bytes, base);
    let mut next = first;
    let mut out = Vec::new();
    while next != kind::NONE {
        let this = next;
        let start = r.at();
        next = r.u8("payload header: truncated")?;
        let critical = r.u8("payload header: truncated")? & 0x80 != 0;
        let len = r.u16("payload header: truncated")? as usize;
        if len < 4 {
            return Err(bad(start + 2, "payload length below 4"));
        }
        let body = r.bytes(len - 4, "payload length beyond the message")?;
        let at = start + 4;
        let payload = match this {
            kind::SK => {
                if r.left() != 0 {
                    return Err(bad(start, "the Encrypted payload is not the last"));
                }
                out.push(Payload::Sk { first: next, data: body.to_vec() });
                return Ok(out);
            }
            _ => parse_payload(this, critical, body, at)?,
        };
        out.push(payload);
    }
    if r.left() != 0 {
        return Err(bad(r.at(), "bytes after the last payload"));
    }
    Ok(out)
}

fn parse_payload(this: u8, critical: bool, body: &[u8], at: usize) -> Result<Payload, ParseError> {
    let mut r = Reader::new(body, at);
    let p = match this {
        kind::SA => Payload::Sa(parse_proposals(&mut r)?),
        kind::KE => {
            let group = r.u16("KE: truncated")?;
            r.u16("KE: truncated")?;
            Payload::Ke { group, data: r.rest().to_vec() }
        }
        kind::IDI | kind::IDR => {
            let kind = r.u8("ID: truncated")?;
            r.bytes(3, "ID: truncated")?;
            let id = Identity { kind, data: r.rest().to_vec() };
            if this == kind::IDI {
                Payload::IdI(id)
            } else {
                Payload::IdR(id)
            }
        }
        kind::AUTH => {
            let method = r.u8("AUTH: truncated")?;
            r.bytes(3, "AUTH: truncated")?;
            Payload::Auth { method, data: r.rest().to_vec() }
        }
        kind::NONCE => Payload::Nonce(r.rest().to_vec()),
        kind::NOTIFY => {
            let protocol = r.u8("Notify: truncated")?;
            let spi_size = r.u8("Notify: truncated")? as usize;
            let kind = r.u16("Notify: truncated")?;
            let spi = r.bytes(spi_size, "Notify: SPI size beyond the payload")?.to_vec();
            Payload::Notify(Notify { protocol, spi, kind, data: r.rest().to_vec() })
        }
        kind::DELETE => {
            let protocol = r.u8("Delete: truncated")?;
            let spi_size = r.u8("Delete: truncated")?;
            let n = r.u16("Delete: truncated")? as usize;
            let mut spis = Vec::new();
            for _ in 0..n {
                spis.push(r.bytes(spi_size as usize, "Delete: SPIs beyond the payload")?.to_vec());
            }
            if r.left() != 0 {
                return Err(bad(r.at(), "Delete: bytes after the SPIs"));
            }
            Payload::Delete { protocol, spi_size, spis }
        }
        kind::VENDOR_ID => Payload::VendorId(r.rest().to_vec()),
        kind::TSI | kind::TSR => {
            let n = r.u8("TS: truncated")? as usize;
            r.bytes(3, "TS: truncated")?;
            let mut ts = Vec::new();
            for _ in 0..n {
                ts.push(parse_selector(&mut r)?);
            }
            if r.left() != 0 {
                return Err(bad(r.at(), "TS: bytes after the selectors"));
            }
            if this == kind::TSI {
                Payload::TsI(ts)
            } else {
                Payload::TsR(ts)
            }
        }
        kind => Payload::Other { kind, critical, data: body.to_vec() },
    };
    Ok(p)
}

fn parse_proposals(r: &mut Reader) -> Result<Vec<Proposal>, ParseError> {
    let mut out = Vec::new();
    loop {
        let start = r.at();
        let more = r.u8("proposal: truncated")?;
        r.u8("proposal: truncated")?;
        let len = r.u16("proposal: truncated")? as usize;
        if len < 8 {
            return Err(bad(start + 2, "proposal length below 8"));
        }
        let body = r.bytes(len - 4, "proposal length beyond the SA payload")?;
        let mut p = Reader::new(body, start + 4);
        let number = p.u8("proposal: truncated")?;
        let protocol = p.u8("proposal: truncated")?;
        let spi_size = p.u8("proposal: truncated")? as usize;
        let n = p.u8("proposal: truncated")?;
        let spi = p.bytes(spi_size, "proposal: SPI beyond the proposal")?.to_vec();
        let mut transforms = Vec::new();
        for i in 0..n {
            let t_start = p.at();
            let t_more = p.u8("transform: truncated")?;
            p.u8("transform: truncated")?;
            let t_len = p.u16("transform: truncated")? as usize;
            if t_len < 8 {
                return Err(bad(t_start + 2, "transform length below 8"));
            }
            let t_body = p.bytes(t_len - 4, "transform length beyond the proposal")?;
            let last = i + 1 == n;
            if t_more != if last { 0 } else { 3 } {
                return Err(bad(t_start, "transform: last/more marker disagrees with the count"));
            }
            let mut t = Reader::new(t_body, t_start + 4);
            let kind = t.u8("transform: truncated")?;
            t.u8("transform: truncated")?;
            let id = t.u16("transform: truncated")?;
            let mut attributes = Vec::new();
            while t.left() > 0 {
                let a = t.u16("attribute: truncated")?;
                let (tv, akind) = (a & 0x8000 != 0, a & 0x7fff);
                let value = t.u16("attribute: truncated")?;
                attributes.push(if tv {
                    Attribute::Tv { kind: akind, value }
                } else {
                    Attribute::Tlv {
                        kind: akind,
                        value: t.bytes(value as usize, "attribute beyond the transform")?.to_vec(),
                    }
                });
            }
            transforms.push(Transform { kind, id, attributes });
        }
        if p.left() != 0 {
            return Err(bad(p.at(), "proposal: bytes after the transforms"));
        }
        out.push(Proposal { number, protocol, spi, transforms });
        match more {
            0 => break,
            2 => continue,
            _ => return Err(bad(start, "proposal: last/more marker neither 0 nor 2")),
        }
    }
    if r.left() != 0 {
        return Err(bad(r.at(), "SA: bytes after the last proposal"));
    }
    Ok(out)
}

fn parse_selector(r: &mut Reader) -> Result<TrafficSelector, ParseError> {
    let start = r.at();
    let kind = r.u8("selector: truncated")?;
    let protocol = r.u8("selector: truncated")?;
    let len = r.u16("selector: truncated")? as usize;
    let (addr_len, want) = match kind {
        TS_IPV4_ADDR_RANGE => (4, 16),
        TS_IPV6_ADDR_RANGE => (16, 40),
        _ => return Err(bad(start, "selector: a type other than an IPv4 or IPv6 range")),
    };
    if len != want {
        return Err(bad(start + 2, "selector: length wrong for its type"));
    }
    let start_port = r.u16("selector: truncated")?;
    let end_port = r.u16("selector: truncated")?;
    let a = r.bytes(addr_len, "selector: truncated")?;
    let b = r.bytes(addr_len, "selector: truncated")?;
    let addr = |x: &[u8]| -> IpAddr {
        if addr_len == 4 {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(x).expect("4 bytes")))
        } else {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(x).expect("16 bytes")))
        }
    };
    Ok(TrafficSelector { protocol, start_port, end_port, start: addr(a), end: addr(b) })
}

impl Message {
    /// The message as bytes, lengths computed.
    pub fn emit(&self) -> Vec<u8> {
        let body = emit_chain(&self.payloads);
        let h = &self.header;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&h.spi_i.to_be_bytes());
        out.extend_from_slice(&h.spi_r.to_be_bytes());
        out.push(self.payloads.first().map_or(kind::NONE, Payload::kind));
        out.extend_from_slice(&[h.version, h.exchange, h.flags]);
        out.extend_from_slice(&h.message_id.to_be_bytes());
        out.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// A chain of payloads as bytes, each with its generic header (the next
/// payload of the last is none; an SK payload's is the type inside).
pub fn emit_chain(payloads: &[Payload]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            Payload::Sk { first, .. } => *first,
            _ => payloads.get(i + 1).map_or(kind::NONE, Payload::kind),
        };
        let critical = matches!(p, Payload::Other { critical: true, .. });
        let body = emit_payload(p);
        out.push(next);
        out.push(if critical { 0x80 } else { 0 });
        out.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
        out.extend_from_slice(&body);
    }
    out
}

fn emit_payload(p: &Payload) -> Vec<u8> {
    let mut b = Vec::new();
    match p {
        Payload::Sa(proposals) => {
            for (i, pr) in proposals.iter().enumerate() {
                let mut body = vec![pr.number, pr.protocol, pr.spi.len() as u8, pr.transforms.len() as u8];
                body.extend_from_slice(&pr.spi);
                for (j, t) in pr.transforms.iter().enumerate() {
                    let mut tb = vec![t.kind, 0];
                    tb.extend_from_slice(&t.id.to_be_bytes());
                    for a in &t.attributes {
                        match a {
                            Attribute::Tv { kind, value } => {
                                tb.extend_from_slice(&(0x8000 | kind).to_be_bytes());
                                tb.extend_from_slice(&value.to_be_bytes());
                            }
                            Attribute::Tlv { kind, value } => {
                                tb.extend_from_slice(&(kind & 0x7fff).to_be_bytes());
                                tb.extend_from_slice(&(value.len() as u16).to_be_bytes());
                                tb.extend_from_slice(value);
                            }
                        }
                    }
                    body.push(if j + 1 == pr.transforms.len() { 0 } else { 3 });
                    body.push(0);
                    body.extend_from_slice(&((tb.len() + 4) as u16).to_be_bytes());
                    body.extend_from_slice(&tb);
                }
                b.push(if i + 1 == proposals.len() { 0 } else { 2 });
                b.push(0);
                b.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
                b.extend_from_slice(&body);
            }
        }
        Payload::Ke { group, data } => {
            b.extend_from_slice(&group.to_be_bytes());
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(data);
        }
        Payload::IdI(id) | Payload::IdR(id) => {
            b.extend_from_slice(&[id.kind, 0, 0, 0]);
            b.extend_from_slice(&id.data);
        }
        Payload::Auth { method, data } => {
            b.extend_from_slice(&[*method, 0, 0, 0]);
            b.extend_from_slice(data);
        }
        Payload::Nonce(data) | Payload::VendorId(data) => b.extend_from_slice(data),
        Payload::Notify(n) => {
            b.extend_from_slice(&[n.protocol, n.spi.len() as u8]);
            b.extend_from_slice(&n.kind.to_be_bytes());
            b.extend_from_slice(&n.spi);
            b.extend_from_slice(&n.data);
        }
        Payload::Delete { protocol, spi_size, spis } => {
            b.extend_from_slice(&[*protocol, *spi_size]);
            b.extend_from_slice(&(spis.len() as u16).to_be_bytes());
            for s in spis {
                b.extend_from_slice(s);
            }
        }
        Payload::TsI(ts) | Payload::TsR(ts) => {
            b.extend_from_slice(&[ts.len() as u8, 0, 0, 0]);
            for t in ts {
                let v4 = t.start.is_ipv4();
                b.push(if v4 { TS_IPV4_ADDR_RANGE } else { TS_IPV6_ADDR_RANGE });
                b.push(t.protocol);
                b.extend_from_slice(&(if v4 { 16u16 } else { 40 }).to_be_bytes());
                b.extend_from_slice(&t.start_port.to_be_bytes());
                b.extend_from_slice(&t.end_port.to_be_bytes());
                for a in [t.start, t.end] {
                    match a {
                        IpAddr::V4(a) => b.extend_from_slice(&a.octets()),
                        IpAddr::V6(a) => b.extend_from_slice(&a.octets()),
                    }
                }
            }
        }
        Payload::Sk { data, .. } | Payload::Other { data, .. } => b.extend_from_slice(data),
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() -> Message {
        Message {
            header: Header {
                spi_i: 0x0102030405060708,
                spi_r: 0,
                next: kind::SA,
                version: VERSION,
                exchange: exchange::IKE_SA_INIT,
                flags: flags::INITIATOR,
                message_id: 0,
                length: 0,
            },
            payloads: vec![
                Payload::Sa(vec![Proposal {
                    number: 1,
                    protocol: 1,
                    spi: vec![],
                    transforms: vec![
                        Transform::with_key_length(1, 20, 256),
                        Transform::new(2, 5),
                        Transform::new(4, 31),
                    ],
                }]),
                Payload::Ke { group: 31, data: vec![7; 32] },
                Payload::Nonce(vec![9; 32]),
                Payload::Notify(Notify { protocol: 0, spi: vec![], kind: 16388, data: vec![1; 20] }),
            ],
        }
    }

    #[test]
    fn a_message_round_trips() {
        let m = init();
        let bytes = m.emit();
        let back = parse(&bytes).unwrap();
        assert_eq!(back.payloads, m.payloads);
        assert_eq!((back.header.length as usize, back.header.next), (bytes.len(), kind::SA));
        assert_eq!(back.emit(), bytes);
        assert_eq!(back.payloads[0], m.payloads[0]);
        let Payload::Sa(p) = &back.payloads[0] else { panic!() };
        assert_eq!(p[0].transforms[0].key_length(), Some(256));
    }

    #[test]
    fn selectors_deletes_and_encrypted_payloads_round_trip() {
        let ts = |a: &str, b: &str| TrafficSelector {
            protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        };
        let inner = vec![
            Payload::IdI(Identity { kind: 2, data: b"gw.example".to_vec() }),
            Payload::Auth { method: 2, data: vec![3; 32] },
            Payload::TsI(vec![ts("10.1.0.0", "10.1.255.255"), ts("fd00::", "fd00::ffff")]),
            Payload::TsR(vec![ts("172.16.1.0", "172.16.1.255")]),
            Payload::Delete { protocol: 3, spi_size: 4, spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]] },
            Payload::Other { kind: 47, critical: false, data: vec![1, 2] },
        ];
        let body = emit_chain(&inner);
        assert_eq!(parse_chain(kind::IDI, &body, 0).unwrap(), inner);
        let mut m = init();
        m.header.exchange = exchange::IKE_AUTH;
        m.payloads = vec![Payload::Sk { first: kind::IDI, data: vec![0xee; 80] }];
        assert_eq!(parse(&m.emit()).unwrap().payloads, m.payloads);
    }

    #[test]
    fn every_truncation_and_every_single_byte_change_is_an_error_or_parses_without_panic() {
        let bytes = init().emit();
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..bytes.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Ok(m) = parse(&b) {
                    let again = m.emit();
                    assert_eq!(parse(&again).unwrap(), parse(&again).unwrap());
                }
            }
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        let mut b = init().emit();
        b[17] = 0x30;
        assert_eq!(parse(&b).unwrap_err(), ParseError::Version(0x30));
        assert_eq!(parse(&b).unwrap_err().to_string(), "IKE version 3.0 (only 2.x is spoken)");
        let mut b = init().emit();
        b.push(0);
        assert_eq!(parse(&b).unwrap_err(), bad(24, "header: the length field is not the datagram's length"));
        let mut m = init();
        m.payloads.insert(0, Payload::Sk { first: kind::NONE, data: vec![] });
        let e = parse(&m.emit()).unwrap_err();
        assert_eq!(e, bad(28, "the Encrypted payload is not the last"));
        let crit = Message { payloads: vec![Payload::Other { kind: 99, critical: true, data: vec![1] }], ..init() };
        assert_eq!(parse(&crit.emit()).unwrap().payloads, crit.payloads, "kept, critical bit and all");
    }
}
