//! Counters: a drop reason for every way a packet can be refused, and the
//! per-SA traffic counters. Plain integers, owned by one worker (or one
//! SA's owning worker); the control thread sums copies of them.

use std::fmt;

/// Why a packet was dropped. Every drop in the engine has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// Not a well-formed packet of the kind expected (bad lengths, bad
    /// version, bad header checksum, an ESP payload too short to hold IV,
    /// trailer and ICV, a pad length beyond the payload, an inner packet
    /// that is not valid IPv4/IPv6).
    Malformed,
    /// An outer IP fragment: ESP reassembly is not supported.
    Fragment,
    /// Not an IP packet (ARP, say): the kernel's business.
    NotIp,
    /// An IP packet that is not ESP, or UDP that is IKE (non-ESP marker) or
    /// a NAT keepalive: the kernel's business, not the data plane's.
    NotEsp,
    /// No inbound SA has this SPI (for this destination).
    UnknownSpi,
    /// Raw ESP for an SA that expects ESP in UDP, UDP to another port than
    /// the SA's, or UDP for an SA that expects raw ESP.
    EncapMismatch,
    /// The sequence number was seen before or is left of the window.
    Replay,
    /// The ICV did not verify (RFC 4303 section 3.4.4).
    Icv,
    /// The pad bytes after decryption are not 1, 2, 3, ...
    Padding,
    /// The SA is past its hard lifetime or its sequence space is exhausted.
    Expired,
    /// A dummy packet (next header 59, RFC 4303 section 2.6): authentic,
    /// counted, and discarded by design.
    Dummy,
    /// Outer CE on an inner Not-ECT packet (RFC 6040 section 4.2).
    EcnNotEct,
    /// The frame lacked the head- or tailroom for the outer headers.
    NoRoom,
    /// Matched by an SPD rule whose action is DISCARD.
    SpdDiscard,
    /// Decrypted, but outside the tunnel's inbound selectors.
    Selector,
    /// Neither an SPD rule nor a route: the gateway gives no way out.
    NoRoute,
    /// Protected by an SPD rule into a tunnel that is down.
    TunnelDown,
    /// TTL or hop limit would reach 0.
    TtlExpired,
    /// The next hop's MAC address is not known (yet).
    NoNeighbour,
    /// The snapshot sends it out of a port this worker does not serve.
    NoPort,
    /// The worker that owns its tunnel has a full queue.
    HandOffFull,
    /// The encapsulated packet would exceed the maximum IP length.
    TooBig,
    /// Over the gateway's bandwidth limit in its direction (the policer).
    BandwidthLimit,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 23] = [
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::NotIp,
        DropReason::NotEsp,
        DropReason::UnknownSpi,
        DropReason::EncapMismatch,
        DropReason::Replay,
        DropReason::Icv,
        DropReason::Padding,
        DropReason::Expired,
        DropReason::Dummy,
        DropReason::EcnNotEct,
        DropReason::NoRoom,
        DropReason::SpdDiscard,
        DropReason::Selector,
        DropReason::NoRoute,
        DropReason::TunnelDown,
        DropReason::TtlExpired,
        DropReason::NoNeighbour,
        DropReason::NoPort,
        DropReason::HandOffFull,
        DropReason::TooBig,
        DropReason::BandwidthLimit,
    ];

    /// The name operators see in counters and tool output.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::NotIp => "not-ip",
            DropReason::NotEsp => "not-esp",
            DropReason::UnknownSpi => "unknown-spi",
            DropReason::EncapMismatch => "encap-mismatch",
            DropReason::Replay => "replay",
            DropReason::Icv => "icv",
            DropReason::Padding => "padding",
            DropReason::Expired => "expired",
            DropReason::Dummy => "dummy",
            DropReason::EcnNotEct => "ecn-not-ect",
            DropReason::NoRoom => "no-room",
            DropReason::SpdDiscard => "spd-discard",
            DropReason::Selector => "selector",
            DropReason::NoRoute => "no-route",
            DropReason::TunnelDown => "tunnel-down",
            DropReason::TtlExpired => "ttl-expired",
            DropReason::NoNeighbour => "no-neighbour",
            DropReason::NoPort => "no-port",
            DropReason::HandOffFull => "hand-off-full",
            DropReason::TooBig => "too-big",
            DropReason::BandwidthLimit => "bandwidth-limit",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One counter per drop reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl DropCounters {
    #[inline]
    pub fn count(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The reasons with a non-zero count, in counter order.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.into_iter().map(|r| (r, self.get(r))).filter(|&(_, n)| n != 0)
    }

    /// Adds another set of counters (the control thread summing workers).
    pub fn add(&mut self, other: &DropCounters) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// Traffic an SA carried: packets and bytes of inner (plaintext) packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_once_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r}");
        }
        let mut c = DropCounters::default();
        c.count(DropReason::Replay);
        c.count(DropReason::Replay);
        c.count(DropReason::TooBig);
        assert_eq!(c.nonzero().collect::<Vec<_>>(), [(DropReason::Replay, 2), (DropReason::TooBig, 1)]);
        let mut d = c.clone();
        d.add(&c);
        assert_eq!((d.get(DropReason::Replay), d.total()), (4, 6));
    }
}
