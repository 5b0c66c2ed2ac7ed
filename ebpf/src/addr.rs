//! The gateway's addresses as the steering program's hash map keys them
//! (`struct addr_key` in `bpf/steer.c`).

use std::net::IpAddr;

/// The key of `gateway_addrs` for `addr`: `struct addr_key` in
/// `bpf/steer.c` (family 4 or 6, three zero bytes, the address in network
/// order, zero-padded to 16 bytes).
pub fn addr_key(addr: IpAddr) -> [u8; 20] {
    let mut key = [0u8; 20];
    match addr.to_canonical() {
        IpAddr::V4(v4) => {
            key[0] = 4;
            key[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            key[0] = 6;
            key[4..20].copy_from_slice(&v6.octets());
        }
    }
    key
}

/// The address a key stands for (`None` for a key `addr_key` never makes).
pub fn addr_from_key(key: &[u8; 20]) -> Option<IpAddr> {
    let (family, pad, addr) = (key[0], &key[1..4], &key[4..20]);
    if pad != [0, 0, 0] {
        return None;
    }
    match family {
        4 if addr[4..].iter().all(|&b| b == 0) => Some(IpAddr::from(<[u8; 4]>::try_from(&addr[..4]).ok()?)),
        6 => Some(IpAddr::from(<[u8; 16]>::try_from(addr).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv4_key_is_family_then_address_zero_padded() {
        let key = addr_key(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let mut want = [0u8; 20];
        want[0] = 4;
        want[4..8].copy_from_slice(&[192, 0, 2, 1]);
        assert_eq!(key, want);
    }

    #[test]
    fn ipv6_key_is_family_then_address() {
        let addr: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let key = addr_key(IpAddr::V6(addr));
        assert_eq!(key[..4], [6, 0, 0, 0]);
        assert_eq!(key[4..], addr.octets());
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(addr_key(mapped), addr_key("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn keys_round_trip_and_foreign_keys_are_refused() {
        for addr in ["192.0.2.1", "0.0.0.0", "2001:db8::1", "::", "fe80::1"] {
            let addr: IpAddr = addr.parse().unwrap();
            assert_eq!(addr_from_key(&addr_key(addr)), Some(addr));
        }
        let mut key = addr_key("192.0.2.1".parse().unwrap());
        key[9] = 1; // past an IPv4 address
        assert_eq!(addr_from_key(&key), None);
        key = addr_key("2001:db8::1".parse().unwrap());
        key[0] = 5;
        assert_eq!(addr_from_key(&key), None);
        key[0] = 6;
        key[2] = 1; // padding
        assert_eq!(addr_from_key(&key), None);
    }
}
