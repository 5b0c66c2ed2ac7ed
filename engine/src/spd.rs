//! The security policy database of one gateway: which rule, if any, an
//! outbound packet matches (priority order, first match wins), and whether
//! a decrypted packet fits a tunnel's inbound selectors (the reverse of the
//! rules that protect via that tunnel).

#[cfg(doc)]
use crate::model::SpdAction;
use crate::model::{AddrRange, PortRange, SpdRule};
use crate::stats::DropReason;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::{be16, proto};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// What policy looks at in a packet. Ports are 0 for protocols without
/// them, and for non-first fragments (only any-port rules match those).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl FiveTuple {
    /// Reads the five-tuple of a validated IPv4 or IPv6 packet.
    pub fn of(packet: &[u8]) -> Result<Self, DropReason> {
        let (src, dst, protocol, l4) = match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(packet).map_err(|_| DropReason::Malformed)?;
                let l4 = if ip.frag_offset() == 0 { &packet[ip.header_len()..ip.total_len()] } else { &[][..] };
                (ip.src_addr().into(), ip.dst_addr().into(), ip.protocol(), l4)
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(packet).map_err(|_| DropReason::Malformed)?;
                let up = ip.upper_layer().map_err(|_| DropReason::Malformed)?;
                (ip.src_addr().into(), ip.dst_addr().into(), up.protocol, &packet[up.offset..ip.total_len()])
            }
            _ => return Err(DropReason::NotIp),
        };
        let (src_port, dst_port) = match protocol {
            proto::TCP | proto::UDP | SCTP if l4.len() >= 4 => (be16(l4, 0), be16(l4, 2)),
            _ => (0, 0),
        };
        Ok(Self { src, dst, protocol, src_port, dst_port })
    }

    /// The same flow seen from the other end.
    pub fn reversed(&self) -> Self {
        Self { src: self.dst, dst: self.src, protocol: self.protocol, src_port: self.dst_port, dst_port: self.src_port }
    }
}

const SCTP: u8 = 132;

fn matches(rule: &SpdRule, t: &FiveTuple) -> bool {
    rule.src.contains(t.src)
        && rule.dst.contains(t.dst)
        && rule.protocol.is_none_or(|p| p == t.protocol)
        && rule.src_ports.contains(t.src_port)
        && rule.dst_ports.contains(t.dst_port)
}

/// A gateway's rules, each with the action the caller resolved it to
/// (`A`: the model's [`SpdAction`], or the snapshot's action with tunnel
/// indexes instead of ids). The first rule in priority order that matches
/// wins; equal priorities keep their given order.
///
/// Classification is tuple space search (Srinivasan, Suri, Varghese 1999):
/// rules whose address ranges are prefixes are grouped by their (source
/// length, destination length) pair, each group a hash table on the masked
/// addresses, so a lookup costs one probe per distinct pair, not one test
/// per rule. Rules with other ranges are tried one by one. The best rank
/// over all candidates wins, so the priority semantics stay exact.
#[derive(Debug, Clone)]
pub struct Spd<A> {
    /// In priority order: a rule's index is its rank.
    rules: Vec<(SpdRule, A)>,
    /// IPv4, then IPv6.
    families: [Family<A>; 2],
    /// Ranks of the rules whose ranges are not prefixes, ascending.
    others: Vec<u32>,
    /// Ranks of the rules with each action (a tunnel's inbound selectors).
    by_action: HashMap<A, Vec<u32>>,
}

/// One address family's tuples, by their best rank ascending, and a
/// filter per source and per destination prefix length in use: a lookup
/// asks the filters first (one bit each) and probes only the tuples whose
/// source and destination lengths both may match, so the cost follows the
/// prefix lengths a packet can match, not all the pairs the rules use.
#[derive(Debug, Clone)]
struct Family<A> {
    tuples: Vec<Tuple<A>>,
    src: Vec<LengthFilter>,
    dst: Vec<LengthFilter>,
}

/// The masked addresses of one prefix length that rules use, as a Bloom
/// filter (one hash, at least 16 bits per address): "no" is certain, "yes"
/// may be wrong (the tuple probe then decides).
#[derive(Debug, Clone)]
struct LengthFilter {
    mask: u128,
    bits: Box<[u64]>,
}

impl LengthFilter {
    fn new(mask: u128, values: &[u128]) -> Self {
        let n = (values.len() * 16).next_power_of_two().max(64);
        let mut bits = vec![0u64; n / 64].into_boxed_slice();
        for &v in values {
            let i = Self::bit(v, n);
            bits[i / 64] |= 1 << (i % 64);
        }
        Self { mask, bits }
    }

    #[inline]
    fn bit(v: u128, n: usize) -> usize {
        let h = ((v as u64) ^ (v >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize & (n - 1)
    }

    #[inline]
    fn may_contain(&self, addr: u128) -> bool {
        let i = Self::bit(addr & self.mask, self.bits.len() * 64);
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }
}

/// Bit `i` set: filter `i` may hold the address (filters past 128: yes).
#[inline]
fn may(filters: &[LengthFilter], addr: u128) -> u128 {
    filters.iter().take(128).enumerate().fold(0, |m, (i, f)| m | u128::from(f.may_contain(addr)) << i)
}

#[inline]
fn has(set: u128, i: u8) -> bool {
    i >= 128 || set >> i & 1 == 1
}

/// The rules whose ranges are prefixes of these lengths.
#[derive(Debug, Clone)]
struct Tuple<A> {
    /// Its source and destination lengths' filters in the family.
    src_filter: u8,
    dst_filter: u8,
    /// The masks of the prefix lengths, on addresses as numbers.
    src_mask: u128,
    dst_mask: u128,
    /// The best rank among the tuple's rules: once a better match is
    /// found, the tuple is skipped.
    best: u32,
    buckets: Buckets<A>,
}

/// One tuple's rules by masked (source, destination): open addressing
/// with linear probing, at most half full. Beside the 64-byte buckets, a
/// tag per slot (16 bits of the hash; 0 for empty) answers most probes: a
/// miss, the common case (a packet matches few of the tuples), reads only
/// the tags, 32 slots to a cache line, small enough to stay in cache with
/// 10,000 rules; a hit reads its one bucket. Both lines can be prefetched
/// for a whole burst (a `HashMap` hides where it will look).
#[derive(Debug, Clone)]
struct Buckets<A> {
    tags: Box<[u16]>,
    slots: Box<[Bucket<A>]>,
    /// Each bucket's ranks, ascending, one run per bucket.
    ranks: Vec<u32>,
}

/// The rules of one masked (source, destination) pair. The best of them
/// is kept inline with its action: when that rule has no protocol or port
/// condition it matches every packet that reaches the bucket, and the
/// lookup ends here without reading the rules.
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Bucket<A> {
    src: u128,
    dst: u128,
    /// `ranks[first..first + len]`; `len` 0 marks an empty slot.
    first: u32,
    len: u32,
    best: u32,
    best_action: Option<A>,
    best_is_whole: bool,
}

impl<A: Copy> Buckets<A> {
    /// `entries`: (masked source, masked destination, ranks ascending);
    /// `rules` to read each best rule's action and conditions.
    fn new(entries: Vec<((u128, u128), Vec<u32>)>, rules: &[(SpdRule, A)]) -> Self {
        let size = (entries.len() * 2).next_power_of_two();
        let empty = Bucket { src: 0, dst: 0, first: 0, len: 0, best: 0, best_action: None, best_is_whole: false };
        let mut slots = vec![empty; size].into_boxed_slice();
        let mut tags = vec![0u16; size].into_boxed_slice();
        let mut ranks = Vec::new();
        for ((src, dst), rs) in entries {
            let (mut i, tag) = Self::home(src, dst, size);
            while tags[i] != 0 {
                i = (i + 1) & (size - 1);
            }
            tags[i] = tag;
            let (rule, action) = &rules[rs[0] as usize];
            let whole = rule.protocol.is_none() && rule.src_ports == PortRange::ANY && rule.dst_ports == PortRange::ANY;
            slots[i] = Bucket {
                src,
                dst,
                first: ranks.len() as u32,
                len: rs.len() as u32,
                best: rs[0],
                best_action: Some(*action),
                best_is_whole: whole,
            };
            ranks.extend(rs);
        }
        Self { tags, slots, ranks }
    }

    /// The home slot of a pair, and its tag (never 0).
    #[inline]
    fn home(src: u128, dst: u128, size: usize) -> (usize, u16) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let fold = |x: u128| (x as u64) ^ (x >> 64) as u64;
        let h = (fold(src).wrapping_mul(K) ^ fold(dst)).wrapping_mul(K);
        ((h >> 32) as usize & (size - 1), (h >> 16) as u16 | 1)
    }

    #[inline]
    fn get(&self, src: u128, dst: u128) -> Option<&Bucket<A>> {
        let size = self.slots.len();
        let (mut i, tag) = Self::home(src, dst, size);
        loop {
            match self.tags[i] {
                0 => return None,
                t if t == tag && (self.slots[i].src, self.slots[i].dst) == (src, dst) => return Some(&self.slots[i]),
                _ => i = (i + 1) & (size - 1),
            }
        }
    }

    #[inline]
    fn prefetch(&self, src: u128, dst: u128) {
        let (i, _) = Self::home(src, dst, self.slots.len());
        crate::prefetch::value(&self.tags[i]);
        crate::prefetch::value(&self.slots[i]);
    }
}

/// An address as a number, and its family's width.
fn key(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(v) => (u32::from(v) as u128, 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

fn mask(k: u128, len: u8, width: u8) -> u128 {
    if len == 0 {
        0
    } else {
        k & (u128::MAX << (width - len))
    }
}

/// The prefix length of `r`, if it is exactly a prefix.
fn prefix_len(r: &AddrRange) -> Option<u8> {
    let ((first, width), (last, _)) = (key(r.first), key(r.last));
    let span = last.checked_sub(first)?;
    if span == u128::MAX {
        return Some(0);
    }
    let size = span + 1;
    (size.is_power_of_two() && first & span == 0).then(|| width - size.trailing_zeros() as u8)
}

impl<A: Copy + Eq + Hash> Spd<A> {
    /// Indexes `rules`. The rules' own `action` fields are not read: `A` is.
    pub fn new(mut rules: Vec<(SpdRule, A)>) -> Self {
        rules.sort_by_key(|(r, _)| r.priority);
        // (family, source length, destination length) -> masked pair -> ranks.
        type Pairs = FxHashMap<(u128, u128), Vec<u32>>;
        let mut tuples: Vec<((bool, u8, u8), Pairs)> = Vec::new();
        let mut others = Vec::new();
        let mut by_action: HashMap<A, Vec<u32>> = HashMap::new();
        for (rank, (r, a)) in rules.iter().enumerate() {
            let rank = rank as u32;
            by_action.entry(*a).or_default().push(rank);
            let (Some(src_len), Some(dst_len)) = (prefix_len(&r.src), prefix_len(&r.dst)) else {
                others.push(rank);
                continue;
            };
            let v4 = r.src.first.is_ipv4();
            let i = match tuples.iter().position(|t| t.0 == (v4, src_len, dst_len)) {
                Some(i) => i,
                None => {
                    tuples.push(((v4, src_len, dst_len), Pairs::default()));
                    tuples.len() - 1
                }
            };
            let bucket = (key(r.src.first).0, key(r.dst.first).0);
            tuples[i].1.entry(bucket).or_default().push(rank);
        }
        let mut families: [Family<A>; 2] = std::array::from_fn(|_| Family { tuples: vec![], src: vec![], dst: vec![] });
        // Per family, source then destination: each length's masked
        // addresses, for its filter.
        type Lengths = Vec<(u8, Vec<u128>)>;
        let mut lengths: [[Lengths; 2]; 2] = Default::default();
        let index = |lens: &mut Lengths, len: u8| match lens.iter().position(|l| l.0 == len) {
            Some(i) => i,
            None => {
                lens.push((len, Vec::new()));
                lens.len() - 1
            }
        };
        for ((v4, src_len, dst_len), pairs) in tuples {
            let (width, f) = (if v4 { 32 } else { 128 }, usize::from(!v4));
            let full = if v4 { u32::MAX as u128 } else { u128::MAX };
            let (si, di) = (index(&mut lengths[f][0], src_len), index(&mut lengths[f][1], dst_len));
            for &(src, dst) in pairs.keys() {
                lengths[f][0][si].1.push(src);
                lengths[f][1][di].1.push(dst);
            }
            families[f].tuples.push(Tuple {
                src_filter: si.min(255) as u8,
                dst_filter: di.min(255) as u8,
                src_mask: mask(full, src_len, width),
                dst_mask: mask(full, dst_len, width),
                best: pairs.values().map(|ranks| ranks[0]).min().expect("a tuple has rules"),
                buckets: Buckets::new(pairs.into_iter().collect(), &rules),
            });
        }
        for (f, family) in families.iter_mut().enumerate() {
            let (width, full) = if f == 0 { (32, u32::MAX as u128) } else { (128, u128::MAX) };
            let filters = |lens: &[(u8, Vec<u128>)]| {
                lens.iter().map(|(len, values)| LengthFilter::new(mask(full, *len, width), values)).collect()
            };
            family.src = filters(&lengths[f][0]);
            family.dst = filters(&lengths[f][1]);
            family.tuples.sort_by_key(|t| t.best);
        }
        Self { rules, families, others, by_action }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The action of the first rule, in priority order, that `t` matches.
    pub fn classify(&self, t: &FiveTuple) -> Option<A> {
        // The best (lowest) matching rank so far, and its action if known
        // without reading the rule.
        let mut best: Option<(u32, Option<A>)> = None;
        let below = |best: &Option<(u32, Option<A>)>, rank: u32| best.is_none_or(|(b, _)| rank < b);
        // Scans ascending ranks for the first that matches and beats `best`.
        let scan = |best: &mut Option<(u32, Option<A>)>, ranks: &[u32]| {
            for &rank in ranks {
                if !below(best, rank) {
                    return;
                }
                if matches(&self.rules[rank as usize].0, t) {
                    *best = Some((rank, None));
                    return;
                }
            }
        };
        let (src, dst) = (key(t.src).0, key(t.dst).0);
        let family = &self.families[usize::from(!t.src.is_ipv4())];
        let (src_may, dst_may) = (may(&family.src, src), may(&family.dst, dst));
        for tuple in &family.tuples {
            if !below(&best, tuple.best) {
                break;
            }
            if !has(src_may, tuple.src_filter) || !has(dst_may, tuple.dst_filter) {
                continue;
            }
            let Some(b) = tuple.buckets.get(src & tuple.src_mask, dst & tuple.dst_mask) else {
                continue;
            };
            if !below(&best, b.best) {
                continue;
            }
            if b.best_is_whole {
                // Matches every packet that reaches this bucket.
                best = Some((b.best, b.best_action));
            } else {
                scan(&mut best, &tuple.buckets.ranks[b.first as usize..(b.first + b.len) as usize]);
            }
        }
        scan(&mut best, &self.others);
        best.map(|(rank, action)| action.unwrap_or_else(|| self.rules[rank as usize].1))
    }

    /// Starts loading what [`Self::classify`] of `t` reads first: the home
    /// bucket in each tuple of `t`'s family.
    #[inline]
    pub fn prefetch(&self, t: &FiveTuple) {
        let (src, dst) = (key(t.src).0, key(t.dst).0);
        let family = &self.families[usize::from(!t.src.is_ipv4())];
        let (src_may, dst_may) = (may(&family.src, src), may(&family.dst, dst));
        for tuple in &family.tuples {
            if has(src_may, tuple.src_filter) && has(dst_may, tuple.dst_filter) {
                tuple.buckets.prefetch(src & tuple.src_mask, dst & tuple.dst_mask);
            }
        }
    }

    /// The inbound selectors of the tunnel the rules with action `protect`
    /// protect via: a copy a tunnel can keep at hand.
    pub fn selectors(&self, protect: A) -> Selectors {
        let ranks = self.by_action.get(&protect).map_or(&[][..], Vec::as_slice);
        Selectors(ranks.iter().map(|&r| self.rules[r as usize].0.clone()).collect())
    }

    /// The plain reading of the semantics, for tests: every rule in order.
    #[cfg(test)]
    fn classify_linear(&self, t: &FiveTuple) -> Option<A> {
        self.rules.iter().find(|(r, _)| matches(r, t)).map(|&(_, a)| a)
    }
}

/// A tunnel's inbound selectors: a packet decrypted from it must be
/// the reverse of one of these rules (those that protect via it).
#[derive(Debug, Clone, Default)]
pub struct Selectors(Box<[SpdRule]>);

impl Selectors {
    /// True if `t`, seen from the other end, matches one of the rules.
    pub fn allow(&self, t: &FiveTuple) -> bool {
        let back = t.reversed();
        self.0.iter().any(|r| matches(r, &back))
    }

    /// No rule protects via the tunnel: it is route-based.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Starts loading the rules.
    pub fn prefetch(&self) {
        crate::prefetch::bytes(self.0.as_ptr().cast(), std::mem::size_of_val(&*self.0));
    }
}

/// A worker's memory of recent SPD decisions, so a flow's later packets
/// skip the rule scan: direct-mapped, keyed by the five-tuple and the
/// gateway, and valid only for the snapshot generation that made it (a new
/// snapshot invalidates every entry at once, with no work).
#[derive(Debug)]
pub struct FlowCache<A> {
    slots: Box<[Option<Cached<A>>]>,
}

#[derive(Debug, Clone, Copy)]
struct Cached<A> {
    generation: u64,
    gateway: usize,
    flow: FiveTuple,
    action: Option<A>,
}

impl<A: Copy + Eq + Hash> FlowCache<A> {
    /// A cache of `2^bits` entries.
    pub fn new(bits: u32) -> Self {
        Self { slots: vec![None; 1 << bits].into_boxed_slice() }
    }

    /// Starts loading the slot of flow `t` of gateway `gateway`, for a
    /// [`Self::classify`] soon after.
    #[inline]
    pub fn prefetch(&self, gateway: usize, t: &FiveTuple) {
        crate::prefetch::value(&self.slots[self.slot(gateway, t)]);
    }

    /// What was remembered for flow `t` of gateway `gateway` under
    /// generation `generation`: `None` if nothing, else the SPD's answer.
    #[inline]
    pub fn get(&self, generation: u64, gateway: usize, t: &FiveTuple) -> Option<Option<A>> {
        let c = self.slots[self.slot(gateway, t)].as_ref()?;
        (c.generation == generation && c.gateway == gateway && c.flow == *t).then_some(c.action)
    }

    /// Remembers the SPD's answer `action` for flow `t`.
    #[inline]
    pub fn insert(&mut self, generation: u64, gateway: usize, t: &FiveTuple, action: Option<A>) {
        let i = self.slot(gateway, t);
        self.slots[i] = Some(Cached { generation, gateway, flow: *t, action });
    }

    /// `spd.classify(t)`, remembered for generation `generation` of gateway
    /// `gateway`.
    #[inline]
    pub fn classify(&mut self, generation: u64, gateway: usize, spd: &Spd<A>, t: &FiveTuple) -> Option<A> {
        self.get(generation, gateway, t).unwrap_or_else(|| {
            let action = spd.classify(t);
            self.insert(generation, gateway, t, action);
            action
        })
    }

    fn slot(&self, gateway: usize, t: &FiveTuple) -> usize {
        (hash(gateway, t) as usize) & (self.slots.len() - 1)
    }
}

/// A fast, non-cryptographic hash of a flow (FxHash-style multiply-rotate):
/// the cache is per worker and holds only results the SPD computed, so a
/// colliding flow costs a scan, never a wrong answer.
#[inline]
fn hash(gateway: usize, t: &FiveTuple) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let addr = |a: IpAddr| match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    };
    let words = [
        addr(t.src) as u64,
        (addr(t.src) >> 64) as u64,
        addr(t.dst) as u64,
        (addr(t.dst) >> 64) as u64,
        (t.protocol as u64) << 32 | (t.src_port as u64) << 16 | t.dst_port as u64,
        gateway as u64,
    ];
    words.iter().fold(0u64, |h, &w| (h.rotate_left(5) ^ w).wrapping_mul(K))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PortRange, SpdAction};
    use proptest::prelude::*;

    fn spd(rules: Vec<SpdRule>) -> Spd<SpdAction> {
        Spd::new(rules.into_iter().map(|r| (r.clone(), r.action)).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rule(priority: u32, src: &str, dst: &str, action: SpdAction) -> SpdRule {
        let range = |s: &str| {
            let (a, l) = s.split_once('/').unwrap();
            AddrRange::prefix(ip(a), l.parse().unwrap())
        };
        SpdRule {
            gateway: 1,
            priority,
            src: range(src),
            dst: range(dst),
            protocol: None,
            src_ports: PortRange::ANY,
            dst_ports: PortRange::ANY,
            action,
        }
    }

    fn flow(src: &str, dst: &str, protocol: u8, sport: u16, dport: u16) -> FiveTuple {
        FiveTuple { src: ip(src), dst: ip(dst), protocol, src_port: sport, dst_port: dport }
    }

    #[test]
    fn priority_then_order_decides() {
        let spd = spd(vec![
            rule(20, "10.1.0.0/16", "172.16.0.0/12", SpdAction::Protect(3)),
            rule(10, "10.1.0.0/16", "172.16.1.0/24", SpdAction::Protect(1)),
            rule(10, "10.1.0.0/16", "172.16.1.0/24", SpdAction::Discard),
        ]);
        assert_eq!(spd.classify(&flow("10.1.0.5", "172.16.1.9", 1, 0, 0)), Some(SpdAction::Protect(1)));
        assert_eq!(spd.classify(&flow("10.1.0.5", "172.16.9.9", 1, 0, 0)), Some(SpdAction::Protect(3)));
        assert_eq!(spd.classify(&flow("10.2.0.5", "172.16.1.9", 1, 0, 0)), None);
        assert_eq!(spd.classify(&flow("fd00::1", "172.16.1.9", 1, 0, 0)), None, "families never mix");
    }

    #[test]
    fn protocol_and_ports() {
        let mut r = rule(1, "10.1.0.0/16", "172.16.1.0/24", SpdAction::Protect(1));
        r.protocol = Some(proto::TCP);
        r.dst_ports = PortRange { first: 443, last: 443 };
        let spd = spd(vec![r]);
        assert!(spd.classify(&flow("10.1.0.5", "172.16.1.9", proto::TCP, 5555, 443)).is_some());
        assert!(spd.classify(&flow("10.1.0.5", "172.16.1.9", proto::TCP, 5555, 80)).is_none());
        assert!(spd.classify(&flow("10.1.0.5", "172.16.1.9", proto::UDP, 5555, 443)).is_none());
        // Inbound, the reverse: from the remote's port 443 to anything local.
        assert!(spd.selectors(SpdAction::Protect(1)).allow(&flow("172.16.1.9", "10.1.0.5", proto::TCP, 443, 5555)));
        assert!(!spd.selectors(SpdAction::Protect(1)).allow(&flow("172.16.1.9", "10.1.0.5", proto::TCP, 80, 5555)));
    }

    /// Scenario 6 (SCENARIOS.md): IDC1's tunnel lets IDC1 -> VPC in, not
    /// IDC1 -> IDC3.
    #[test]
    fn inbound_selectors_are_the_rules_reversed() {
        let spd = spd(vec![
            rule(1, "10.1.0.0/16", "172.16.1.0/24", SpdAction::Protect(1)),
            rule(1, "10.1.0.0/16", "172.16.2.0/24", SpdAction::Protect(2)),
        ]);
        assert!(!spd.selectors(SpdAction::Protect(1)).is_empty() && spd.selectors(SpdAction::Protect(3)).is_empty());
        assert!(spd.selectors(SpdAction::Protect(1)).allow(&flow("172.16.1.9", "10.1.0.5", 1, 0, 0)));
        assert!(!spd.selectors(SpdAction::Protect(1)).allow(&flow("172.16.1.9", "172.16.3.5", 1, 0, 0)));
        assert!(
            !spd.selectors(SpdAction::Protect(2)).allow(&flow("172.16.1.9", "10.1.0.5", 1, 0, 0)),
            "not via tunnel 2's rules"
        );
    }

    /// The cache answers exactly as the SPD does, and forgets everything
    /// when the generation changes.
    #[test]
    fn flow_cache_is_exact_and_follows_generations() {
        let old = spd(vec![rule(1, "10.1.0.0/16", "172.16.1.0/24", SpdAction::Protect(1))]);
        let new = spd(vec![rule(1, "10.1.0.0/16", "172.16.1.0/24", SpdAction::Discard)]);
        let mut cache = FlowCache::new(2); // 4 slots: collisions happen
        for round in 0..3 {
            for i in 0..50u16 {
                let f = flow("10.1.0.5", if i % 2 == 0 { "172.16.1.9" } else { "172.16.2.9" }, 17, i, 53);
                assert_eq!(cache.classify(1, 0, &old, &f), old.classify(&f), "round {round} flow {i}");
                assert_eq!(cache.classify(1, 1, &new, &f), new.classify(&f), "another gateway, same flow");
            }
        }
        let f = flow("10.1.0.5", "172.16.1.9", 17, 0, 53);
        assert_eq!(cache.classify(1, 0, &old, &f), Some(SpdAction::Protect(1)));
        assert_eq!(
            cache.classify(2, 0, &new, &f),
            Some(SpdAction::Discard),
            "a new generation is never served old answers"
        );
    }

    #[test]
    fn prefix_shapes() {
        let r = |a: &str, b: &str| AddrRange { first: ip(a), last: ip(b) };
        assert_eq!(prefix_len(&r("10.1.0.0", "10.1.255.255")), Some(16));
        assert_eq!(prefix_len(&r("0.0.0.0", "255.255.255.255")), Some(0));
        assert_eq!(prefix_len(&r("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), Some(0));
        assert_eq!(prefix_len(&r("10.1.0.5", "10.1.0.5")), Some(32));
        assert_eq!(prefix_len(&r("10.1.0.1", "10.1.0.2")), None, "not aligned");
        assert_eq!(prefix_len(&r("10.1.0.0", "10.1.0.2")), None, "not a power of two");
        assert_eq!(prefix_len(&r("10.1.0.9", "10.1.0.2")), None, "empty");
    }

    fn arb_range() -> impl Strategy<Value = AddrRange> {
        // Small address space (10.0.0.0/26) so random flows hit rules often;
        // prefixes and arbitrary ranges both.
        prop_oneof![
            (0u32..64, 26u8..=32).prop_map(|(a, l)| AddrRange::prefix(IpAddr::V4((0x0a00_0000 + a).into()), l)),
            (0u32..64, 0u32..64).prop_map(|(a, b)| AddrRange {
                first: IpAddr::V4((0x0a00_0000 + a.min(b)).into()),
                last: IpAddr::V4((0x0a00_0000 + a.max(b)).into()),
            }),
            Just(AddrRange::any(ip("0.0.0.0"))),
        ]
    }

    fn arb_rule() -> impl Strategy<Value = SpdRule> {
        (arb_range(), arb_range(), 0u32..4, prop::option::of(prop_oneof![Just(6u8), Just(17u8)]), 0u16..4, 0u32..8)
            .prop_map(|(src, dst, priority, protocol, port, t)| SpdRule {
                gateway: 1,
                priority,
                src,
                dst,
                protocol,
                src_ports: PortRange::ANY,
                dst_ports: if port == 0 { PortRange::ANY } else { PortRange { first: port, last: port + 1 } },
                action: if t == 7 { SpdAction::Discard } else { SpdAction::Protect(t) },
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Tuple space search answers exactly as trying every rule in order.
        #[test]
        fn tuple_space_search_is_exact(rules in prop::collection::vec(arb_rule(), 0..40),
                                       flows in prop::collection::vec((0u32..64, 0u32..64, 0u8..3, 0u16..6), 50)) {
            let spd = spd(rules);
            for (s, d, p, port) in flows {
                let t = FiveTuple {
                    src: IpAddr::V4((0x0a00_0000 + s).into()),
                    dst: IpAddr::V4((0x0a00_0000 + d).into()),
                    protocol: [1, 6, 17][p as usize],
                    src_port: 1000,
                    dst_port: port,
                };
                prop_assert_eq!(spd.classify(&t), spd.classify_linear(&t), "{:?}", t);
                for a in 0..8 {
                    let action = SpdAction::Protect(a);
                    let linear = spd.rules.iter().any(|(r, x)| *x == action && matches(r, &t.reversed()));
                    prop_assert_eq!(spd.selectors(action).allow(&t), linear);
                }
            }
        }
    }

    #[test]
    fn five_tuples_from_packets() {
        let mut p = vec![0u8; 28];
        crate::wire::ipv4::Ipv4Repr {
            src: "10.1.0.5".parse().unwrap(),
            dst: "172.16.1.9".parse().unwrap(),
            protocol: proto::UDP,
            payload_len: 8,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: false,
        }
        .emit(&mut p);
        p[20..24].copy_from_slice(&[0x13, 0x88, 0x00, 0x35]);
        assert_eq!(FiveTuple::of(&p), Ok(flow("10.1.0.5", "172.16.1.9", proto::UDP, 5000, 53)));
        assert_eq!(FiveTuple::of(&[0x10; 20]), Err(DropReason::NotIp));
        assert_eq!(FiveTuple::of(&p[..10]), Err(DropReason::Malformed));
    }
}
