//! The FIB against a plain model (every route scanned for the longest
//! match), on random prefix sets made to overlap and nest, and edge cases.

use super::poptrie::{Poptrie, Route};
use super::*;
use proptest::prelude::*;

/// The value of the longest route containing `addr` (of `width` bits); of
/// duplicates, the later.
fn model(routes: &[(u128, u8, u32)], width: u32, addr: u128) -> u32 {
    let mut best: Option<(u8, u32)> = None;
    for &(prefix, len, value) in routes {
        let contains = len == 0 || (prefix ^ addr) >> (width - u32::from(len)) == 0;
        if contains && best.is_none_or(|(longest, _)| len >= longest) {
            best = Some((len, value));
        }
    }
    best.map_or(NO_ROUTE, |(_, value)| value)
}

/// Addresses worth asking about: each prefix's first and last address and
/// their outside neighbours, plus the random ones given.
fn probes(routes: &[(u128, u8, u32)], width: u32, random: &[u128]) -> Vec<u128> {
    let top = u128::MAX >> (128 - width);
    let mut probes = random.to_vec();
    for &(prefix, len, _) in routes {
        let host = top.checked_shr(u32::from(len)).unwrap_or(0);
        let first = prefix & !host & top;
        let last = first | host;
        probes.extend([first, last, first.wrapping_sub(1) & top, last.wrapping_add(1) & top]);
    }
    probes
}

fn v4(routes: &[(u128, u8, u32)]) -> Vec<(Ipv4Addr, u8, u32)> {
    routes.iter().map(|&(p, len, value)| (Ipv4Addr::from(p as u32), len, value)).collect()
}

fn v6(routes: &[(u128, u8, u32)]) -> Vec<(Ipv6Addr, u8, u32)> {
    routes.iter().map(|&(p, len, value)| (Ipv6Addr::from(p), len, value)).collect()
}

/// Mostly few distinct values (so leaf runs merge), some at the limit.
fn value() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0..4u32, 1 => Just(MAX_VALUE), 1 => 0..=MAX_VALUE]
}

/// IPv4 prefixes crowded into 10.11.0.0/16 and 10.11.12.0/24, so that
/// they overlap and nest, with /0 and /32 often.
fn v4_route() -> impl Strategy<Value = (u128, u8, u32)> {
    let addr = prop_oneof![
        any::<u32>(),
        any::<u16>().prop_map(|x| 0x0a0b_0000 | u32::from(x)),
        any::<u8>().prop_map(|x| 0x0a0b_0c00 | u32::from(x)),
    ];
    let len = prop_oneof![Just(0u8), Just(32), 0..=32u8, 8..=30u8];
    (addr, len, value()).prop_map(|(a, len, value)| (u128::from(a), len, value))
}

/// IPv6 prefixes crowded into 2001:db8::/32 and 2001:db8:1::/48, with /0
/// and /128 often.
fn v6_route() -> impl Strategy<Value = (u128, u8, u32)> {
    let addr = prop_oneof![
        any::<u128>(),
        any::<u128>().prop_map(|x| 0x2001_0db8 << 96 | x >> 32),
        any::<u128>().prop_map(|x| 0x2001_0db8_0001 << 80 | x >> 48),
    ];
    let len = prop_oneof![Just(0u8), Just(128), 0..=128u8, 30..=66u8, 120..=128u8];
    (addr, len, value())
}

/// Routes, with some given twice (the later copy with another value).
fn with_duplicates(route: impl Strategy<Value = (u128, u8, u32)>) -> impl Strategy<Value = Vec<(u128, u8, u32)>> {
    (prop::collection::vec(route, 0..48), prop::collection::vec((any::<prop::sample::Index>(), value()), 0..4))
        .prop_map(|(mut routes, dups)| {
            if !routes.is_empty() {
                for (i, value) in dups {
                    let (prefix, len, _) = routes[i.index(routes.len())];
                    routes.push((prefix, len, value));
                }
            }
            routes
        })
}

proptest! {
    #[test]
    fn ipv4_matches_model(routes in with_duplicates(v4_route()), random in prop::collection::vec(any::<u32>(), 64)) {
        let fib = Ipv4Fib::build(&v4(&routes)).unwrap();
        let random: Vec<u128> = random.into_iter().map(u128::from).collect();
        let addrs: Vec<u32> = probes(&routes, 32, &random).into_iter().map(|a| a as u32).collect();
        let mut batch = vec![0; addrs.len()];
        fib.lookup_batch(&addrs, &mut batch);
        for (&addr, &batched) in addrs.iter().zip(&batch) {
            let want = model(&routes, 32, u128::from(addr));
            prop_assert_eq!(fib.lookup(Ipv4Addr::from(addr)), want, "lookup {}", Ipv4Addr::from(addr));
            prop_assert_eq!(batched, want, "lookup_batch {}", Ipv4Addr::from(addr));
        }
    }

    #[test]
    fn ipv6_matches_model(routes in with_duplicates(v6_route()), random in prop::collection::vec(any::<u128>(), 64)) {
        let fib = Ipv6Fib::build(&v6(&routes)).unwrap();
        let addrs = probes(&routes, 128, &random);
        let mut batch = vec![0; addrs.len()];
        fib.lookup_batch(&addrs, &mut batch);
        for (&addr, &batched) in addrs.iter().zip(&batch) {
            let want = model(&routes, 128, addr);
            prop_assert_eq!(fib.lookup(Ipv6Addr::from(addr)), want, "lookup {}", Ipv6Addr::from(addr));
            prop_assert_eq!(batched, want, "lookup_batch {}", Ipv6Addr::from(addr));
        }
    }

    /// The public build picks the direct table's width by size, and path
    /// compression by family; every width, with and without, must give the
    /// same answers.
    #[test]
    fn every_layout_matches_model(
        routes4 in with_duplicates(v4_route()),
        routes6 in with_duplicates(v6_route()),
        bits in prop::sample::select(vec![6u32, 12, 18]),
    ) {
        let routes = |routes: &[(u128, u8, u32)], shift: u32| -> Vec<Route> {
            routes.iter().map(|&(prefix, len, value)| Route::new(prefix << shift, len, value)).collect()
        };
        let (plain4, skip4) = (Poptrie::<false>::build(routes(&routes4, 96), bits).unwrap(), Poptrie::<true>::build(routes(&routes4, 96), bits).unwrap());
        for addr in probes(&routes4, 32, &[]) {
            let want = model(&routes4, 32, addr);
            prop_assert_eq!(plain4.lookup(addr as u32), want, "{}", Ipv4Addr::from(addr as u32));
            prop_assert_eq!(skip4.lookup(addr as u32), want, "{} (path compression)", Ipv4Addr::from(addr as u32));
        }
        let (plain6, skip6) = (Poptrie::<false>::build(routes(&routes6, 0), bits).unwrap(), Poptrie::<true>::build(routes(&routes6, 0), bits).unwrap());
        for addr in probes(&routes6, 128, &[]) {
            let want = model(&routes6, 128, addr);
            prop_assert_eq!(plain6.lookup(addr), want, "{}", Ipv6Addr::from(addr));
            prop_assert_eq!(skip6.lookup(addr), want, "{} (path compression)", Ipv6Addr::from(addr));
        }
    }
}

fn a4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn empty_table_matches_nothing() {
    let (fib4, fib6) = (Ipv4Fib::build(&[]).unwrap(), Ipv6Fib::build(&[]).unwrap());
    assert!(fib4.is_empty() && fib6.is_empty());
    assert_eq!(fib4.lookup(a4("10.0.0.1")), NO_ROUTE);
    assert_eq!(fib6.lookup(a6("2001:db8::1")), NO_ROUTE);
    let mut out = [0; 3];
    fib4.lookup_batch(&[0, 1, u32::MAX], &mut out);
    assert_eq!(out, [NO_ROUTE; 3]);
}

#[test]
fn default_route_alone_matches_everything() {
    let fib4 = Ipv4Fib::build(&[(a4("0.0.0.0"), 0, 7)]).unwrap();
    let fib6 = Ipv6Fib::build(&[(a6("::"), 0, 7)]).unwrap();
    for addr in ["0.0.0.0", "10.1.2.3", "255.255.255.255"] {
        assert_eq!(fib4.lookup(a4(addr)), 7, "{addr}");
    }
    for addr in ["::", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"] {
        assert_eq!(fib6.lookup(a6(addr)), 7, "{addr}");
    }
    assert_eq!(fib4.len(), 1);
}

#[test]
fn adjacent_prefixes_split_at_their_boundary() {
    let fib = Ipv4Fib::build(&[(a4("10.0.0.0"), 25, 1), (a4("10.0.0.128"), 25, 2), (a4("10.0.1.0"), 24, 3)]).unwrap();
    for (addr, want) in [
        ("9.255.255.255", NO_ROUTE),
        ("10.0.0.0", 1),
        ("10.0.0.127", 1),
        ("10.0.0.128", 2),
        ("10.0.0.255", 2),
        ("10.0.1.0", 3),
        ("10.0.1.255", 3),
        ("10.0.2.0", NO_ROUTE),
    ] {
        assert_eq!(fib.lookup(a4(addr)), want, "{addr}");
    }
}

#[test]
fn host_routes_at_the_longest_length() {
    let fib4 = Ipv4Fib::build(&[(a4("10.0.0.0"), 8, 1), (a4("10.1.2.3"), 32, 2)]).unwrap();
    assert_eq!(fib4.lookup(a4("10.1.2.3")), 2);
    assert_eq!(fib4.lookup(a4("10.1.2.2")), 1);
    assert_eq!(fib4.lookup(a4("10.1.2.4")), 1);
    let fib6 = Ipv6Fib::build(&[(a6("2001:db8::"), 32, 1), (a6("2001:db8::1"), 128, 2)]).unwrap();
    assert_eq!(fib6.lookup(a6("2001:db8::1")), 2);
    assert_eq!(fib6.lookup(a6("2001:db8::")), 1);
    assert_eq!(fib6.lookup(a6("2001:db8::2")), 1);
    assert_eq!(fib6.lookup(a6("2001:db9::1")), NO_ROUTE);
}

#[test]
fn later_duplicate_wins_and_host_bits_are_ignored() {
    let fib = Ipv4Fib::build(&[(a4("10.1.2.3"), 8, 1), (a4("10.0.0.0"), 8, 2)]).unwrap();
    assert_eq!(fib.len(), 1);
    assert_eq!(fib.lookup(a4("10.200.0.1")), 2);
}

#[test]
fn too_long_a_prefix_is_refused_by_name() {
    let err = Ipv4Fib::build(&[(a4("10.0.0.0"), 8, 1), (a4("10.0.0.0"), 33, 2)]).unwrap_err();
    assert_eq!(err, FibError::PrefixLength { addr: a4("10.0.0.0").into(), len: 33, max: 32 });
    assert_eq!(err.to_string(), "route 10.0.0.0/33: prefix length is above 32");
    let err = Ipv6Fib::build(&[(a6("2001:db8::"), 129, 1)]).unwrap_err();
    assert_eq!(err.to_string(), "route 2001:db8::/129: prefix length is above 128");
}

#[test]
fn values_above_the_limit_are_refused_and_the_limit_kept() {
    for value in [NO_ROUTE, MAX_VALUE + 1] {
        let err = Ipv4Fib::build(&[(a4("10.0.0.0"), 8, value)]).unwrap_err();
        assert_eq!(err, FibError::Value { addr: a4("10.0.0.0").into(), len: 8, value });
    }
    assert!(Ipv6Fib::build(&[(a6("2001:db8::"), 32, NO_ROUTE)])
        .unwrap_err()
        .to_string()
        .starts_with("route 2001:db8::/32: value"));
    // MAX_VALUE both in the direct table (/0) and in a trie leaf (/32).
    let fib = Ipv4Fib::build(&[(a4("0.0.0.0"), 0, MAX_VALUE), (a4("10.1.2.3"), 32, MAX_VALUE - 1)]).unwrap();
    assert_eq!(fib.lookup(a4("192.0.2.1")), MAX_VALUE);
    assert_eq!(fib.lookup(a4("10.1.2.3")), MAX_VALUE - 1);
}

#[test]
fn a_small_table_is_small() {
    let routes4: Vec<_> = (0..10u8).map(|i| (Ipv4Addr::new(10, i, 0, 0), 16 + i, u32::from(i))).collect();
    let routes6: Vec<_> =
        (0..10u16).map(|i| (Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 0), 48, u32::from(i))).collect();
    let (fib4, fib6) = (Ipv4Fib::build(&routes4).unwrap(), Ipv6Fib::build(&routes6).unwrap());
    assert!(fib4.memory_bytes() < 2048, "{fib4:?}");
    assert!(fib6.memory_bytes() < 4096, "{fib6:?}");
}

#[test]
#[should_panic(expected = "one output per address")]
fn lookup_batch_wants_one_output_per_address() {
    Ipv4Fib::build(&[]).unwrap().lookup_batch(&[1, 2], &mut [0]);
}
