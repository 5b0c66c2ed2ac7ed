//! Health-check probes as the data plane sees them: the control thread asks
//! a worker to send an ICMP echo request into a tunnel ([`ProbeRequest`]),
//! and a worker that decrypts an echo reply addressed to the tunnel's probe
//! address reports it ([`ProbeEcho`]). Judging them (loss, delay, up or
//! down) is the control thread's business; answering the peer's own probes
//! is the pipeline's (see [`crate::model::Probe`]).

use crate::model::TunnelId;
use crate::wire::echo;
use std::net::IpAddr;
use std::time::Instant;

/// Send one echo request into `tunnel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest {
    pub tunnel: TunnelId,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ident: u16,
    pub seq: u16,
}

/// An echo reply that came out of `tunnel`, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeEcho {
    pub tunnel: TunnelId,
    pub ident: u16,
    pub seq: u16,
    pub at: Instant,
}

/// The data every probe carries (56 bytes in all, as ping's default).
pub const PAYLOAD: &[u8; 56] = b"vpngw health check: echo request into the tunnel.......!";

impl ProbeRequest {
    /// Writes the echo request into the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        echo::emit_request(buf, self.src, self.dst, self.ident, self.seq, PAYLOAD)
    }

    /// The request's length in bytes.
    pub fn wire_len(&self) -> usize {
        echo::len(self.src, PAYLOAD.len())
    }
}
