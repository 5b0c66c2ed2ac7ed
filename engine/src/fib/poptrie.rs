//! Poptrie (Asai and Ohara, SIGCOMM 2015): a multibit trie of 6-bit strides
//! whose nodes keep two 64-bit maps and find their child or leaf with a
//! population count, under a direct table indexed by the address's top bits.
//!
//! Layout, from measurement (`vpngw-bench fib`): lookups are bound by memory
//! latency, so what counts is how many cache lines and pages a lookup
//! touches. Nodes and leaves therefore share one array of words, depth
//! first: a node's leaves follow it, and a node with one child (the usual
//! case on the path to a long IPv6 prefix) is followed by that child. The
//! batched lookup walks a group of addresses one level at a time and
//! prefetches two cache lines per node, which brings in the leaves and often
//! the next level too: at 1 M IPv4 prefixes this doubled the throughput of
//! the same walk over separate node and leaf arrays.
//!
//! Keys are addresses as integers: `u32` for IPv4 and `u128` for IPv6 at
//! lookup, and for building, both as a `u128` aligned to the top bit (an
//! IPv4 address shifted left by 96), so one build serves both families.

use super::NO_ROUTE;

/// Address bits per trie level: a node has 2^6 = 64 slots, one bit each in
/// a `u64`.
const STRIDE: u32 = 6;

/// Words per node: `children` and `leaf_starts` (two words each), then
/// `child_base` and `leaf_base`.
const NODE_WORDS: u32 = 6;

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
}

/// An address as the trie reads it: a direct-table index, then 6-bit chunks.
pub(super) trait Key: Copy {
    /// The top `bits` bits.
    fn direct_index(self, bits: u32) -> usize;
    /// The 6 bits that start `depth` bits from the top (`depth` is below the
    /// address width); past the last bit of the address the chunk is
    /// padded with zeros.
    fn chunk(self, depth: u32) -> usize;
}

impl Key for u32 {
    #[inline(always)]
    fn direct_index(self, bits: u32) -> usize {
        (self >> (32 - bits)) as usize
    }

    #[inline(always)]
    fn chunk(self, depth: u32) -> usize {
        ((self << depth) >> (32 - STRIDE)) as usize
    }
}

impl Key for u128 {
    #[inline(always)]
    fn direct_index(self, bits: u32) -> usize {
        (self >> (128 - bits)) as usize
    }

    #[inline(always)]
    fn chunk(self, depth: u32) -> usize {
        ((self << depth) >> (128 - STRIDE)) as usize
    }
}

/// One trie node, read from the word array.
struct Node {
    /// Bit `c` set: slot `c` leads to a child node.
    children: u64,
    /// Bit `c` set: slot `c` holds a leaf and starts a run of equal leaves
    /// (the slots of children do not break a run). Each run is stored once.
    leaf_starts: u64,
    /// Word index of the first child; the children are consecutive.
    child_base: u32,
    /// Word index of the first leaf run; the runs are consecutive.
    leaf_base: u32,
}

/// Where a node sends one slot.
enum Step {
    /// To the child node at this word index.
    Child(u32),
    /// To the leaf (a value) at this word index.
    Leaf(u32),
}

impl Node {
    #[inline(always)]
    fn read(words: &[u32], at: u32) -> Self {
        let w = &words[at as usize..(at + NODE_WORDS) as usize];
        Self {
            children: u64::from(w[0]) | u64::from(w[1]) << 32,
            leaf_starts: u64::from(w[2]) | u64::from(w[3]) << 32,
            child_base: w[4],
            leaf_base: w[5],
        }
    }

    /// Slot `c`'s child or leaf: its rank among the children, or among the
    /// leaf runs, is the count of set bits at or below `c`.
    #[inline(always)]
    fn step(&self, c: usize) -> Step {
        let at_or_below = |map: u64| (map << (63 - c)).count_ones();
        if self.children >> c & 1 == 1 {
            Step::Child(self.child_base + (at_or_below(self.children) - 1) * NODE_WORDS)
        } else {
            Step::Leaf(self.leaf_base + at_or_below(self.leaf_starts) - 1)
        }
    }
}

/// The node an entry of the direct table points to, if it does.
#[inline(always)]
fn node_of(entry: u32) -> Option<u32> {
    (NODE..NO_ROUTE).contains(&entry).then(|| entry - NODE)
}

/// A built table. Immutable: a change means a new build.
pub(super) struct Poptrie {
    /// Address bits resolved by `direct`, a multiple of [`STRIDE`].
    direct_bits: u32,
    /// Indexed by the top `direct_bits` bits: a value, or a node (see [`NODE`]).
    direct: Vec<u32>,
    /// Nodes ([`NODE_WORDS`] each) and leaf runs (one word each).
    words: Vec<u32>,
    /// Distinct prefixes.
    prefixes: usize,
}

impl Poptrie {
    /// The direct-table width for a table of this many prefixes. Large
    /// tables want a wide one (fewer levels to walk: at 1 M IPv4 prefixes 18
    /// bits measured about 1.5x faster than 12), small ones a narrow one
    /// (18 bits cost 1 MiB however few the routes; 6 bits cost 256 bytes).
    /// Multiples of the stride, so that an IPv4 /24 and an IPv6 /48 end on a
    /// level boundary.
    pub fn direct_bits_for(prefixes: usize) -> u32 {
        match prefixes {
            0..1024 => 6,
            1024..65536 => 12,
            _ => 18,
        }
    }

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
        let mut trie = Self { direct_bits, direct: vec![NO_ROUTE; 1 << direct_bits], words: Vec::new(), prefixes: routes.len() };
        let bits = direct_bits;
        for r in routes.iter().filter(|r| u32::from(r.len) <= bits) {
            let first = r.key.direct_index(bits);
            trie.direct[first..first + (1 << (bits - u32::from(r.len)))].fill(r.value);
        }
        for group in routes.chunk_by(|a, b| a.key.direct_index(bits) == b.key.direct_index(bits)) {
            if group.iter().any(|r| u32::from(r.len) > bits) {
                let slot = trie.words.len();
                trie.words.extend([0; NODE_WORDS as usize]);
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
        let mut values = [inherited; 64];
        let mut children = 0u64;
        for r in group.iter().filter(|r| u32::from(r.len) > depth) {
            let c = r.key.chunk(depth);
            if u32::from(r.len) <= depth + STRIDE {
                values[c..c + (1 << (depth + STRIDE - u32::from(r.len)))].fill(r.value);
            } else {
                children |= 1 << c;
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
        self.words.extend(std::iter::repeat_n(0, (children.count_ones() * NODE_WORDS) as usize));
        self.words[slot..slot + NODE_WORDS as usize].copy_from_slice(&[
            children as u32,
            (children >> 32) as u32,
            leaf_starts as u32,
            (leaf_starts >> 32) as u32,
            child_base,
            leaf_base,
        ]);
        let mut child = child_base as usize;
        for sub in group.chunk_by(|a, b| a.key.chunk(depth) == b.key.chunk(depth)) {
            let c = sub[0].key.chunk(depth);
            if children >> c & 1 == 1 {
                self.fill_node(child, sub, depth + STRIDE, values[c]);
                child += NODE_WORDS as usize;
            }
        }
    }

    pub fn lookup<K: Key>(&self, key: K) -> u32 {
        let entry = self.direct[key.direct_index(self.direct_bits)];
        let Some(mut at) = node_of(entry) else { return entry };
        let mut depth = self.direct_bits;
        loop {
            match Node::read(&self.words, at).step(key.chunk(depth)) {
                Step::Child(child) => at = child,
                Step::Leaf(leaf) => return self.words[leaf as usize],
            }
            depth += STRIDE;
        }
    }

    /// Looks up every key; `out` must be as long as `keys`.
    pub fn lookup_batch<K: Key>(&self, keys: &[K], out: &mut [u32]) {
        assert_eq!(keys.len(), out.len(), "lookup_batch needs one output per address");
        for (keys, out) in keys.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
            self.lookup_group(keys, out);
        }
    }

    /// Walks up to [`GROUP`] keys down the trie together, one level at a
    /// time. Each lane prefetches the node it reads next, so a level costs
    /// the group about one memory latency, not one per lane.
    #[inline(always)]
    fn lookup_group<K: Key>(&self, keys: &[K], out: &mut [u32]) {
        let mut at = [0u32; GROUP];
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
        let mut depth = self.direct_bits;
        while walking != 0 {
            let mut lanes = walking;
            while lanes != 0 {
                let lane = lanes.trailing_zeros() as usize;
                lanes &= lanes - 1;
                match Node::read(&self.words, at[lane]).step(keys[lane].chunk(depth)) {
                    Step::Child(child) => {
                        self.prefetch(child);
                        at[lane] = child;
                    }
                    Step::Leaf(leaf) => {
                        out[lane] = self.words[leaf as usize];
                        walking &= !(1 << lane);
                    }
                }
            }
            depth += STRIDE;
        }
    }

    /// Starts loading the two cache lines from word `at` on: the node there
    /// and what follows it, its leaves and often its first child.
    #[inline(always)]
    fn prefetch(&self, at: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let line = self.words.as_ptr().wrapping_add(at as usize).cast::<i8>();
            // SAFETY: a prefetch is a hint that never faults, whatever the
            // address, and changes nothing the program can observe; SSE is
            // part of every x86_64 CPU.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(line);
                _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(64));
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + (self.direct.capacity() + self.words.capacity()) * std::mem::size_of::<u32>()
    }

    pub fn prefixes(&self) -> usize {
        self.prefixes
    }
}
