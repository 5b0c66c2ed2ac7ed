//! The steering program's counters: why each frame went to the engine or to
//! the kernel (one reason per slot of the per-CPU array `counters` in
//! `bpf/steer.c`), summed over CPUs.

use std::fmt;

/// Why a frame went where it went: one counter each. The numbering is
/// `enum reason` in `bpf/steer.c` (a unit test holds the two together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Reason {
    /// Outside: ESP to a gateway address, to the engine.
    Esp,
    /// Outside: ESP in UDP 4500 to a gateway address, to the engine.
    EspInUdp,
    /// Inside: not for the gateway itself, to the engine to be forwarded.
    Forward,
    /// One of the three above found no socket on its queue and was passed
    /// to the kernel instead (counted on top of its reason).
    NoSocket,
    /// Not IPv4 or IPv6 (ARP, say): to the kernel.
    NotIp,
    /// Outside: IKE (UDP 500, or UDP 4500 with the non-ESP marker): to the
    /// kernel, where the IKE daemon's socket is.
    Ike,
    /// Outside: a NAT keepalive (UDP 4500, one byte 0xff, RFC 3948 section
    /// 2.3): to the kernel.
    NatKeepalive,
    /// For the host itself (to a gateway address, and on the outside not
    /// ESP): to the kernel.
    Local,
    /// Outside: not to a gateway address: to the kernel.
    NotOurs,
    /// Inside: neighbour discovery, broadcast, multicast or a link-local
    /// destination: to the kernel.
    Control,
    /// Outside: a UDP fragment (IPv4) or any IPv6 fragment: to the kernel,
    /// which reassembles it.
    Fragment,
    /// A truncated or impossible header: to the kernel, which drops it.
    Malformed,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 12] = [
        Reason::Esp,
        Reason::EspInUdp,
        Reason::Forward,
        Reason::NoSocket,
        Reason::NotIp,
        Reason::Ike,
        Reason::NatKeepalive,
        Reason::Local,
        Reason::NotOurs,
        Reason::Control,
        Reason::Fragment,
        Reason::Malformed,
    ];

    /// The name operators see in counters and tool output.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Esp => "esp",
            Reason::EspInUdp => "esp-in-udp",
            Reason::Forward => "forward",
            Reason::NoSocket => "no-socket",
            Reason::NotIp => "not-ip",
            Reason::Ike => "ike",
            Reason::NatKeepalive => "nat-keepalive",
            Reason::Local => "local",
            Reason::NotOurs => "not-ours",
            Reason::Control => "control",
            Reason::Fragment => "fragment",
            Reason::Malformed => "malformed",
        }
    }

    /// Whether the program sends these frames to the engine.
    pub fn is_redirect(self) -> bool {
        matches!(self, Reason::Esp | Reason::EspInUdp | Reason::Forward)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The program's counters, summed over CPUs: one per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters([u64; Reason::ALL.len()]);

impl Counters {
    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason as usize]
    }

    pub(crate) fn set(&mut self, reason: Reason, count: u64) {
        self.0[reason as usize] = count;
    }

    /// Frames that reached an AF_XDP socket.
    pub fn redirected(&self) -> u64 {
        let wanted: u64 = Reason::ALL.into_iter().filter(|r| r.is_redirect()).map(|r| self.get(r)).sum();
        wanted.saturating_sub(self.get(Reason::NoSocket))
    }

    /// Frames handed to the kernel, including redirects that found no socket.
    pub fn passed(&self) -> u64 {
        let passed: u64 =
            Reason::ALL.into_iter().filter(|&r| !r.is_redirect() && r != Reason::NoSocket).map(|r| self.get(r)).sum();
        passed + self.get(Reason::NoSocket)
    }

    /// The reasons with a non-zero count, in counter order.
    pub fn nonzero(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL.into_iter().map(|r| (r, self.get(r))).filter(|&(_, n)| n != 0)
    }

    /// What was counted after `earlier` was read (counters only grow while
    /// the program is loaded).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut delta = Counters::default();
        for ((d, now), before) in delta.0.iter_mut().zip(self.0).zip(earlier.0) {
            *d = now.saturating_sub(before);
        }
        delta
    }
}

impl fmt::Display for Counters {
    /// `reason=count` for the non-zero reasons, space separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (reason, n)) in self.nonzero().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{reason}={n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C program and `Reason` number the counters the same way: every
    /// `REASON_X = n` in `enum reason` is `Reason::ALL[n]` named `x` (lower
    /// case, `-` for `_`), and `REASON_COUNT` is their number.
    #[test]
    fn reasons_match_the_c_program() {
        let source = include_str!("../bpf/steer.c");
        let mut seen = 0;
        for line in source.lines() {
            let Some(rest) = line.trim().strip_prefix("REASON_") else { continue };
            let Some((name, value)) = rest.split_once('=') else { continue };
            let value: usize = value.split(',').next().unwrap().trim().parse().unwrap();
            let name = name.trim();
            if name == "COUNT" {
                assert_eq!(value, Reason::ALL.len(), "REASON_COUNT");
                continue;
            }
            assert_eq!(Reason::ALL[value].name(), name.to_lowercase().replace('_', "-"), "REASON_{name} = {value}");
            assert_eq!(Reason::ALL[value] as usize, value);
            seen += 1;
        }
        assert_eq!(seen, Reason::ALL.len(), "every reason is in the C enum");
    }

    #[test]
    fn reason_names_are_unique() {
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
    }

    fn counters(pairs: &[(Reason, u64)]) -> Counters {
        let mut c = Counters::default();
        for &(r, n) in pairs {
            c.0[r as usize] = n;
        }
        c
    }

    #[test]
    fn a_redirect_without_socket_counts_as_passed() {
        let c = counters(&[(Reason::Esp, 5), (Reason::Forward, 2), (Reason::NoSocket, 3), (Reason::Ike, 4)]);
        assert_eq!(c.redirected(), 4);
        assert_eq!(c.passed(), 7);
        assert_eq!(c.redirected() + c.passed(), 11, "every frame once");
    }

    #[test]
    fn since_and_display_show_what_changed() {
        let before = counters(&[(Reason::Esp, 5), (Reason::NotIp, 1)]);
        let after = counters(&[(Reason::Esp, 7), (Reason::NotIp, 1), (Reason::NoSocket, 2)]);
        let delta = after.since(&before);
        assert_eq!(delta, counters(&[(Reason::Esp, 2), (Reason::NoSocket, 2)]));
        assert_eq!(delta.to_string(), "esp=2 no-socket=2");
        assert_eq!(Counters::default().to_string(), "");
    }
}
