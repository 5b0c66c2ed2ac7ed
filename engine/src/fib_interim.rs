//! INTERIM longest-prefix match, same API as `fib` (being written): one
//! hash map per prefix length, tried longest first. Correct, not fast; it
//! lets the pipeline run until the measured FIB lands, then goes away.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const NO_ROUTE: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FibError {
    #[error("prefix {0}/{1}: length too long")]
    Length(String, u8),
    #[error("prefix {0}/{1}: value {2:#x} is reserved")]
    Value(String, u8, u32),
}

#[derive(Debug, Default)]
struct Lpm {
    by_len: Vec<(u8, HashMap<u128, u32>)>,
}

impl Lpm {
    fn build(routes: impl Iterator<Item = (u128, u8, u32, String)>, width: u8) -> Result<Self, FibError> {
        let mut maps: HashMap<u8, HashMap<u128, u32>> = HashMap::new();
        for (key, len, value, name) in routes {
            if len > width {
                return Err(FibError::Length(name, len));
            }
            if value == NO_ROUTE {
                return Err(FibError::Value(name, len, value));
            }
            maps.entry(len).or_default().insert(mask(key, len, width), value);
        }
        let mut by_len: Vec<_> = maps.into_iter().collect();
        by_len.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        Ok(Self { by_len })
    }

    fn lookup(&self, key: u128, width: u8) -> u32 {
        self.by_len.iter().find_map(|(len, m)| m.get(&mask(key, *len, width)).copied()).unwrap_or(NO_ROUTE)
    }
}

fn mask(key: u128, len: u8, width: u8) -> u128 {
    if len == 0 {
        0
    } else {
        key & (u128::MAX << (width - len)) & (u128::MAX >> (128 - width as u32))
    }
}

#[derive(Debug)]
pub struct Ipv4Fib(Lpm);

impl Ipv4Fib {
    pub fn build(routes: &[(Ipv4Addr, u8, u32)]) -> Result<Self, FibError> {
        Lpm::build(routes.iter().map(|&(a, l, v)| (u32::from(a) as u128, l, v, a.to_string())), 32).map(Ipv4Fib)
    }

    pub fn lookup(&self, addr: Ipv4Addr) -> u32 {
        self.0.lookup(u32::from(addr) as u128, 32)
    }
}

#[derive(Debug)]
pub struct Ipv6Fib(Lpm);

impl Ipv6Fib {
    pub fn build(routes: &[(Ipv6Addr, u8, u32)]) -> Result<Self, FibError> {
        Lpm::build(routes.iter().map(|&(a, l, v)| (u128::from(a), l, v, a.to_string())), 128).map(Ipv6Fib)
    }

    pub fn lookup(&self, addr: Ipv6Addr) -> u32 {
        self.0.lookup(u128::from(addr), 128)
    }
}
