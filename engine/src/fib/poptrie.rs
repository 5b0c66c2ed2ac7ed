//! Poptrie (Asai and Ohara, SIGCOMM 2015): a multibit trie of 6-bit strides
//! whose nodes keep two 64-bit maps and find their child or leaf with a
//! population count, under a direct table indexed by the address's top
//! bits; here with optional path compression.
//!
//! Layout, from measurement (`vpngw-bench fib`): lookups are bound by memory
//! latency, so what counts is how many cache lines and pages a lookup
//! touches. Nodes and leaves therefore share one array of words, depth
//! first: a node's leaves follow it, and a node's first child often follows
//! them. The batched lookup walks a group of addresses one node at a time
//! and prefetches two cache lines per node, which brings in its leaves and
//! often the next node too: at 1 M IPv4 prefixes this doubled the
//! throughput of the same walk over separate node and leaf arrays.
//!
//! Path compression (`SKIP`) pays for IPv6, whose prefixes are long and
//! sparse: a /48 alone under its /18 takes one node instead of five (at
//! 100 k prefixes: +35% lookups, half the memory). IPv4 paths are short,
//! and there the three more words per node cost more than they save (at
//! 1 M prefixes: -15%, +20% memory), so IPv4 tables do without.
//!
//! Keys are addresses as integers: `u32` for IPv4 and `u128` for IPv6 at
//! lookup, and for building, both as a `u128` aligned to the top bit (an
//! IPv4 address shifted left by 96), so one build serves both families.

use super::NO_ROUTE;

/// Address bits per trie level: a node has 2^6 = 64 slots, one bit each in
/// a `u64`.
const STRIDE: u32 = 6;

/// The most address bits a node skips: whole levels that fit `skip_bits`.
const MAX_SKIP: u32 = 5 * STRIDE;

/// A direct-table entry with this bit set (and not `NO_ROUTE`) holds the
/// word index of a node; any other entry is the value itself. Hence values
/// stay below it.
pub(super) const NODE: u32 = 1 << 31;

/// Addresses looked up together by [`Poptrie::lookup_batch`]: one bit per
/// lane in a `u64`. More lanes keep more memory loads in flight; 64 measured
/// clearly faster than 32.
const GROUP: usize = 64;

/// A route in build form: its prefix aligned to the top bit, host bits
/// cleared.
#[derive(Debug, Clone, Copy)]
pub(super) struct Route {
    pub key: u128,
    pub len: u8,
    pub value: u32,
}

impl Route {
    pub fn new(key: u128, len: u8, value: u32) -> Self {
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        Self { key: key & mask, len, value }
    }

    fn same_prefix(&self, other: &Route) -> bool {
        (self.key, self.len) == (other.key, other.len)
    }

    fn longer_than(&self, depth: u32) -> bool {
        u32::from(self.len) > depth
    }
}

/// An address as the trie reads it: a direct-table index, then bits.
pub(super) trait Key: Copy {
    /// The top `bits` bits.
    fn direct_index(self, bits: u32) -> usize;

    /// The `n` bits (1..=32) that start `depth` bits from the top (`depth`
    /// is below the address width); past the last bit of the address they
    /// are padded with zeros.
    fn bits(self, depth: u32, n: u32) -> u32;

    /// The 6 bits, one node's slot, that start `depth` bits from the top.
    #[inline(always)]
    fn chunk(self, depth: u32) -> usize {
        self.bits(depth, STRIDE) as usize
    }
}

impl Key for u32 {
    #[inline(always)]
    fn direct_index(self, bits: u32) -> usize {
        (self >> (32 - bits)) as usize
    }

    #[inline(always)]
    fn bits(self, depth: u32, n: u32) -> u32 {
        (self << depth) >> (32 - n)
    }
}

impl Key for u128 {
    #[inline(always)]
    fn direct_index(self, bits: u32) -> usize {
        (self >> (128 - bits)) as usize
    }

    #[inline(always)]
    fn bits(self, depth: u32, n: u32) -> u32 {
        ((self << depth) >> (128 - n)) as u32
    }
}

/// One trie node, read from the word array: `children` and `leaf_starts`
/// (two words each), `child_base`, `leaf_base`, and with `SKIP` three more,
/// `skip`, `skip_bits` and `miss`.
struct Node<const SKIP: bool> {
    /// Bit `c` set: slot `c` leads to a child node.
    children: u64,
    /// Bit `c` set: slot `c` holds a leaf and starts a run of equal leaves
    /// (the slots of children do not break a run). Each run is stored once.
    leaf_starts: u64,
    /// Word index of the first child; the children are consecutive.
    child_base: u32,
    /// Word index of the first leaf run; the runs are consecutive.
    leaf_base: u32,
    /// Address bits (whole levels) between the node's parent and the node:
    /// levels where every route below passed through one slot without
    /// ending, where a node would have had one child and nothing else.
    skip: u32,
    /// What those bits must be.
    skip_bits: u32,
    /// The value of an address whose bits differ: the node's inherited one.
    miss: u32,
}

/// Where a node sends an address.
enum Step {
    /// To the child node at this word index.
    Child(u32),
    /// Nowhere further: this is its value.
    Value(u32),
}

impl<const SKIP: bool> Node<SKIP> {
    const WORDS: u32 = if SKIP { 9 } else { 6 };

    #[inline(always)]
    fn read(words: &[u32], at: u32) -> Self {
        let w = &words[at as usize..(at + Self::WORDS) as usize];
        let (skip, skip_bits, miss) = if SKIP { (w[6], w[7], w[8]) } else { (0, 0, NO_ROUTE) };
        Self {
            children: u64::from(w[0]) | u64::from(w[1]) << 32,
            leaf_starts: u64::from(w[2]) | u64::from(w[3]) << 32,
            child_base: w[4],
            leaf_base: w[5],
            skip,
            skip_bits,
            miss,
        }
    }

    fn write(&self, words: &mut [u32]) {
        let (children, leaf_starts) = (self.children, self.leaf_starts);
        let w = [children as u32, (children >> 32) as u32, leaf_starts as u32, (leaf_starts >> 32) as u32];
        words[..4].copy_from_slice(&w);
        words[4..6].copy_from_slice(&[self.child_base, self.leaf_base]);
        if SKIP {
            words[6..9].copy_from_slice(&[self.skip, self.skip_bits, self.miss]);
        }
    }

    /// Where `key` goes from this node, which it reached `depth` bits down;
    /// moves `depth` past the node. The slot's rank among the children, or
    /// among the leaf runs, is the count of set bits at or below it.
    #[inline(always)]
    fn step<K: Key>(&self, words: &[u32], key: K, depth: &mut u32) -> Step {
        if SKIP && self.skip != 0 {
            if key.bits(*depth, self.skip) != self.skip_bits {
                return Step::Value(self.miss);
            }
            *depth += self.skip;
        }
        let c = key.chunk(*depth);
        *depth += STRIDE;
        let at_or_below = |map: u64| (map << (63 - c)).count_ones();
        if self.children >> c & 1 == 1 {
            Step::Child(self.child_base + (at_or_below(self.children) - 1) * Self::WORDS)
        } else {
            Step::Value(words[(self.leaf_base + at_or_below(self.leaf_starts) - 1) as usize])
        }
    }
}

/// The node an entry of the direct table points to, if it does.
#[inline(always)]
fn node_of(entry: u32) -> Option<u32> {
    (NODE..NO_ROUTE).contains(&entry).then(|| entry - NODE)
}

/// How many bits below `depth` the routes of `group` that are longer than
/// `depth` all pass through together without ending, in whole levels, at
/// most [`MAX_SKIP`].
fn shared_levels(group: &[Route], depth: u32) -> u32 {
    let mut skip = 0;
    while skip < MAX_SKIP {
        let d = depth + skip;
        let mut longer = group.iter().filter(|r| r.longer_than(d));
        let Some(first) = longer.next() else { break };
        let passes = |r: &Route| r.longer_than(d + STRIDE) && r.key.chunk(d) == first.key.chunk(d);
        if !passes(first) || !longer.all(passes) {
            break;
        }
        skip += STRIDE;
    }
    skip
}

/// A built table; with `SKIP`, nodes may skip levels (path compression).
/// Immutable: a change means a new build.
pub(super) struct Poptrie<const SKIP: bool> {
    /// Address bits resolved by `direct`, a multiple of [`STRIDE`].
    direct_bits: u32,
    /// Indexed by the top `direct_bits` bits: a value, or a node (see [`NODE`]).
    direct: Vec<u32>,
    /// Nodes and leaf runs (one word each).
    words: Vec<u32>,
    /// Distinct prefixes.
    prefixes: usize,
}

/// The direct-table width for a table of this many prefixes. Large tables
/// want a wide one (fewer levels to walk: at 1 M IPv4 prefixes 18 bits
/// measured about 1.5x faster than 12), small ones a narrow one (18 bits
/// cost 1 MiB however few the routes; 6 bits cost 256 bytes). Multiples of
/// the stride, so that an IPv4 /24 and an IPv6 /48 end on a level boundary.
pub(super) fn direct_bits_for(prefixes: usize) -> u32 {
    match prefixes {
        0..1024 => 6,
        1024..65536 => 12,
        _ => 18,
    }
}

impl<const SKIP: bool> Poptrie<SKIP> {
    /// Builds from routes (in any order, masked, length at most the address
    /// width, value at most `NODE - 1`): a later duplicate of a prefix
    /// replaces an earlier one. `None` if the words would not fit the 31-bit
    /// indexes of the direct table.
    pub fn build(mut routes: Vec<Route>, direct_bits: u32) -> Option<Self> {
        // Sorted by (key, len), a prefix comes before every prefix it
        // covers: writing values in this order leaves the longest match.
        // The sort is stable, so of duplicates the last one given is kept.
        routes.sort_by_key(|r| (r.key, r.len));
        routes.dedup_by(|later, kept| {
            let same = later.same_prefix(kept);
            if same {
                kept.value = later.value;
            }
            same
        });
        let mut trie =
            Self { direct_bits, direct: vec![NO_ROUTE; 1 << direct_bits], words: Vec::new(), prefixes: routes.len() };
        let bits = direct_bits;
        for r in routes.iter().filter(|r| !r.longer_than(bits)) {
            let first = r.key.direct_index(bits);
            trie.direct[first..first + (1 << (bits - u32::from(r.len)))].fill(r.value);
        }
        for group in routes.chunk_by(|a, b| a.key.direct_index(bits) == b.key.direct_index(bits)) {
            if group.iter().any(|r| r.longer_than(bits)) {
                let slot = trie.words.len();
                trie.words.extend(std::iter::repeat_n(0, Node::<SKIP>::WORDS as usize));
                let index = group[0].key.direct_index(bits);
                trie.fill_node(slot, group, bits, trie.direct[index]);
                trie.direct[index] = NODE | slot as u32;
            }
        }
        if trie.words.len() >= NODE as usize {
            return None;
        }
        trie.words.shrink_to_fit();
        Some(trie)
    }

    /// Writes the node at word `slot` for the routes of `group` (they share
    /// their first `depth` bits; those no longer than `depth` are already
    /// accounted for in `inherited`, the value the node's slots start
    /// with), then its leaf runs and its children after it.
    fn fill_node(&mut self, slot: usize, group: &[Route], depth: u32, inherited: u32) {
        let skip = if SKIP { shared_levels(group, depth) } else { 0 };
        let skip_bits = match group.iter().find(|r| r.longer_than(depth)) {
            Some(r) if skip > 0 => r.key.bits(depth, skip),
            _ => 0,
        };
        let depth = depth + skip;
        let mut values = [inherited; 64];
        let mut children = 0u64;
        for r in group.iter().filter(|r| r.longer_than(depth)) {
            let c = r.key.chunk(depth);
            if r.longer_than(depth + STRIDE) {
                children |= 1 << c;
            } else {
                values[c..c + (1 << (depth + STRIDE - u32::from(r.len)))].fill(r.value);
            }
        }
        let leaf_base = self.words.len() as u32;
        let mut leaf_starts = 0u64;
        let mut run = None;
        for (c, &value) in values.iter().enumerate() {
            if children >> c & 1 == 0 && run != Some(value) {
                leaf_starts |= 1 << c;
                self.words.push(value);
                run = Some(value);
            }
        }
        let child_base = self.words.len() as u32;
        let node = Node::<SKIP> { children, leaf_starts, child_base, leaf_base, skip, skip_bits, miss: inherited };
        self.words.extend(std::iter::repeat_n(0, (children.count_ones() * Node::<SKIP>::WORDS) as usize));
        node.write(&mut self.words[slot..]);
        let mut child = child_base as usize;
        for sub in group.chunk_by(|a, b| a.key.chunk(depth) == b.key.chunk(depth)) {
            let c = sub[0].key.chunk(depth);
            if children >> c & 1 == 1 {
                self.fill_node(child, sub, depth + STRIDE, values[c]);
                child += Node::<SKIP>::WORDS as usize;
            }
        }
    }

    pub fn lookup<K: Key>(&self, key: K) -> u32 {
        let entry = self.direct[key.direct_index(self.direct_bits)];
        let Some(mut at) = node_of(entry) else { return entry };
        let mut depth = self.direct_bits;
        loop {
            match Node::<SKIP>::read(&self.words, at).step(&self.words, key, &mut depth) {
                Step::Child(child) => at = child,
                Step::Value(value) => return value,
            }
        }
    }

    /// Looks up every key; `out` must be as long as `keys`.
    pub fn lookup_batch<K: Key>(&self, keys: &[K], out: &mut [u32]) {
        assert_eq!(keys.len(), out.len(), "lookup_batch needs one output per address");
        for (keys, out) in keys.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
            self.lookup_group(keys, out);
        }
    }

    /// Walks up to [`GROUP`] keys down the trie together, one node each at
    /// a time. Each lane prefetches the node it reads next, so a step costs
    /// the group about one memory latency, not one per lane.
    #[inline(always)]
    fn lookup_group<K: Key>(&self, keys: &[K], out: &mut [u32]) {
        let mut at = [0u32; GROUP];
        let mut depth = [self.direct_bits; GROUP];
        let mut walking = 0u64;
        for (lane, (key, out)) in keys.iter().zip(out.iter_mut()).enumerate() {
            let entry = self.direct[key.direct_index(self.direct_bits)];
            match node_of(entry) {
                Some(node) => {
                    self.prefetch(node);
                    at[lane] = node;
                    walking |= 1 << lane;
                }
                None => *out = entry,
            }
        }
        while walking != 0 {
            let mut lanes = walking;
            while lanes != 0 {
                let lane = lanes.trailing_zeros() as usize;
                lanes &= lanes - 1;
                match Node::<SKIP>::read(&self.words, at[lane]).step(&self.words, keys[lane], &mut depth[lane]) {
                    Step::Child(child) => {
                        self.prefetch(child);
                        at[lane] = child;
                    }
                    Step::Value(value) => {
                        out[lane] = value;
                        walking &= !(1 << lane);
                    }
                }
            }
        }
    }

    /// Starts loading the two cache lines from word `at` on: the node there
    /// and what follows it, its leaves and often its first child.
    #[inline(always)]
    fn prefetch(&self, at: u32) {
        crate::prefetch::bytes(self.words.as_ptr().wrapping_add(at as usize).cast::<u8>(), 128);
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + (self.direct.capacity() + self.words.capacity()) * std::mem::size_of::<u32>()
    }

    pub fn prefixes(&self) -> usize {
        self.prefixes
    }
}
