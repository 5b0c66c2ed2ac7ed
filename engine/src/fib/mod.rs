//! The FIB: longest-prefix-match route tables, one per address family per
//! gateway. A table maps a destination address to a `u32` chosen by its
//! builder (the pipeline stores a route-group index; the FIB knows nothing
//! of its meaning), or to [`NO_ROUTE`].
//!
//! Tables are immutable: the control thread builds a new one from the full
//! route list and publishes it; workers only read. Both families use one
//! structure, a [Poptrie](poptrie) (with path compression for IPv6), chosen
//! by measurement (`vpngw-bench fib`): at 1 M IPv4 prefixes its batched
//! lookups outrun a DIR-24-8 in a sixth of the memory, and its memory
//! follows the route count (a 10-route table takes about 1 KiB), where a
//! DIR-24-8 takes 64 MiB whatever its size, and there is one table per
//! gateway.

mod poptrie;
#[cfg(test)]
mod tests;

use poptrie::{direct_bits_for, Poptrie, Route, NODE};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a lookup returns when no prefix matches.
pub const NO_ROUTE: u32 = u32::MAX;

/// The largest value a route can carry: 2^31 - 1 (a direct-table entry
/// uses the top bit to point to a node).
pub const MAX_VALUE: u32 = NODE - 1;

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FibError {
    #[error("route {addr}/{len}: prefix length is above {max}")]
    PrefixLength { addr: IpAddr, len: u8, max: u8 },
    #[error("route {addr}/{len}: value {value:#x} is above the largest a FIB holds ({MAX_VALUE:#x})")]
    Value { addr: IpAddr, len: u8, value: u32 },
    #[error("{prefixes} prefixes: the table would pass the 8 GiB a FIB can address")]
    TooLarge { prefixes: usize },
}

/// Checks one route and puts it in build form: its address as a `u128`
/// aligned to the top bit (`key`), so both families build alike.
fn route(addr: IpAddr, key: u128, len: u8, value: u32) -> Result<Route, FibError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(FibError::PrefixLength { addr, len, max });
    }
    if value > MAX_VALUE {
        return Err(FibError::Value { addr, len, value });
    }
    Ok(Route::new(key, len, value))
}

fn build<const SKIP: bool>(routes: Vec<Route>) -> Result<Poptrie<SKIP>, FibError> {
    let prefixes = routes.len();
    Poptrie::build(routes, direct_bits_for(prefixes)).ok_or(FibError::TooLarge { prefixes })
}

/// An IPv4 route table.
pub struct Ipv4Fib {
    trie: Poptrie<false>,
}

impl Ipv4Fib {
    /// Builds a table from `(prefix, length, value)` routes. Host bits
    /// beyond the length are ignored; a later duplicate of a prefix
    /// replaces an earlier one. Lengths are 0..=32, values at most
    /// [`MAX_VALUE`].
    pub fn build(routes: &[(Ipv4Addr, u8, u32)]) -> Result<Self, FibError> {
        let routes = routes
            .iter()
            .map(|&(addr, len, value)| route(addr.into(), u128::from(u32::from(addr)) << 96, len, value))
            .collect::<Result<_, _>>()?;
        Ok(Self { trie: build(routes)? })
    }

    /// The value of the longest prefix containing `addr`, or [`NO_ROUTE`].
    pub fn lookup(&self, addr: Ipv4Addr) -> u32 {
        self.trie.lookup(u32::from(addr))
    }

    /// Looks up many addresses at once (host-order `u32`, as
    /// `u32::from(Ipv4Addr)` gives), much faster per address than
    /// [`Self::lookup`] on a large table: the lookups overlap their memory
    /// accesses.
    ///
    /// # Panics
    /// If `out` is not as long as `addrs`.
    pub fn lookup_batch(&self, addrs: &[u32], out: &mut [u32]) {
        self.trie.lookup_batch(addrs, out);
    }

    /// Heap and inline bytes the table holds.
    pub fn memory_bytes(&self) -> usize {
        self.trie.memory_bytes()
    }

    /// Distinct prefixes.
    pub fn len(&self) -> usize {
        self.trie.prefixes()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An IPv6 route table (path-compressed: IPv6 prefixes are long and sparse).
pub struct Ipv6Fib {
    trie: Poptrie<true>,
}

impl Ipv6Fib {
    /// Builds a table from `(prefix, length, value)` routes. Host bits
    /// beyond the length are ignored; a later duplicate of a prefix
    /// replaces an earlier one. Lengths are 0..=128, values at most
    /// [`MAX_VALUE`].
    pub fn build(routes: &[(Ipv6Addr, u8, u32)]) -> Result<Self, FibError> {
        let routes = routes
            .iter()
            .map(|&(addr, len, value)| route(addr.into(), u128::from(addr), len, value))
            .collect::<Result<_, _>>()?;
        Ok(Self { trie: build(routes)? })
    }

    /// The value of the longest prefix containing `addr`, or [`NO_ROUTE`].
    pub fn lookup(&self, addr: Ipv6Addr) -> u32 {
        self.trie.lookup(u128::from(addr))
    }

    /// Looks up many addresses at once (as `u128::from(Ipv6Addr)` gives),
    /// much faster per address than [`Self::lookup`] on a large table.
    ///
    /// # Panics
    /// If `out` is not as long as `addrs`.
    pub fn lookup_batch(&self, addrs: &[u128], out: &mut [u32]) {
        self.trie.lookup_batch(addrs, out);
    }

    /// Heap and inline bytes the table holds.
    pub fn memory_bytes(&self) -> usize {
        self.trie.memory_bytes()
    }

    /// Distinct prefixes.
    pub fn len(&self) -> usize {
        self.trie.prefixes()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Ipv4Fib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipv4Fib").field("prefixes", &self.len()).field("memory_bytes", &self.memory_bytes()).finish()
    }
}

impl fmt::Debug for Ipv6Fib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipv6Fib").field("prefixes", &self.len()).field("memory_bytes", &self.memory_bytes()).finish()
    }
}
