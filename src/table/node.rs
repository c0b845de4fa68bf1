//! Node memory of the page tree: layouts, allocation, and the read paths (single
//! and batched look-ups). This file and `tree.rs` / `dict.rs` (which free nodes) are
//! the only places in `table` with `unsafe`; the invariants are stated here.
//!
//! # Layout (see the module doc of `table` for why)
//!
//! A **leaf** is one allocation, 64-byte aligned: a head of 16 units — `h[0]` is
//! the number of runs `n`, `h[g]` for `g` in `1..16` is the first start of line `g`
//! (or `U::MAX` past the last line) — then `ceil(n / G)` lines of 64 bytes, each
//! holding `G` runs side by side as (start, 4-byte value): `G = 8` for IPv4
//! (8-byte runs), `G = 5` for IPv6 (12-byte runs). A leaf holds up to `16 G` runs
//! (128 IPv4, 80 IPv6). A look-up reads the head (one line for IPv4, two for IPv6)
//! and then exactly one line.
//!
//! An **inner node** has a fixed size: a head line (`h[0]` = number of children,
//! `h[b]` = key of child `16 b`), 256 keys (the first unit of each child), and 256
//! child pointers. A look-up reads the head, then one block of 16 keys and the 16
//! matching child pointers.
//!
//! # Invariants (the safety argument)
//!
//! 1. A node is never written after it became reachable from a published version
//!    (`tree.rs` copies before writing, and only writes nodes in its `fresh` set).
//! 2. A node reachable from a live version is not freed: a node replaced after
//!    version N was published is freed only when every version up to N is dropped
//!    (`tree.rs`, `Bag`), and a fresh node (never published) is freed only by the
//!    writer, which holds `&mut`.
//! 3. A [`TreeRef<'a, U>`] is only made from a live version or from the writer's
//!    tree borrowed for `'a`, so every node it reaches is alive and immutable for
//!    `'a`.

use core::fmt::Debug;
use core::marker::PhantomData;
use core::ptr::NonNull;
use std::alloc::Layout;

/// Keys per block of an inner node and runs per group of a leaf.
pub(crate) const B: usize = 16;
/// Children per inner node at most.
pub(crate) const FANOUT: usize = 256;
/// Below this an inner node is merged with a neighbour.
pub(crate) const INNER_MIN: usize = 64;
/// The stored value of an unassigned run. For IPv4 it is the ETR
/// 255.255.255.255, which the engine refuses as a mapping (`Reason::ReservedEtr`);
/// for IPv6 values are dictionary indices and this one is never handed out.
pub(crate) const GAP: u32 = u32::MAX;

/// A unit as stored: `u32` for IPv4, `u64` for IPv6; and how a leaf's line of runs
/// is laid out for it.
pub(crate) trait Unit: Copy + Ord + Default + Send + Sync + Debug + 'static {
    /// The largest value (padding in heads and lines).
    const MAX: Self;
    /// Runs per 64-byte line: a run is a start and a 4-byte value, side by side.
    const G: usize;
    /// Bytes per run in a line.
    const SLOT: usize;
    /// Runs per leaf at most: 16 lines (the head names 15 line starts).
    const LEAF_MAX: usize = B * Self::G;
    /// Below this a leaf is merged with a neighbour.
    const LEAF_MIN: usize = Self::LEAF_MAX / 4;
    /// From a unit that is known to fit (checked against the MAB first).
    fn from_u64(v: u64) -> Self;
    /// As a `u64`.
    fn get(self) -> u64;
    /// Read a start from a slot.
    fn read(b: &[u8]) -> Self;
    /// Write a start into a slot.
    fn write(self, b: &mut [u8]);
}

impl Unit for u32 {
    const MAX: u32 = u32::MAX;
    const G: usize = 8;
    const SLOT: usize = 8;
    #[inline(always)]
    fn from_u64(v: u64) -> u32 {
        v as u32
    }
    #[inline(always)]
    fn get(self) -> u64 {
        u64::from(self)
    }
    #[inline(always)]
    fn read(b: &[u8]) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[..4]);
        u32::from_ne_bytes(a)
    }
    #[inline(always)]
    fn write(self, b: &mut [u8]) {
        b[..4].copy_from_slice(&self.to_ne_bytes());
    }
}

impl Unit for u64 {
    const MAX: u64 = u64::MAX;
    const G: usize = 5;
    const SLOT: usize = 12;
    #[inline(always)]
    fn from_u64(v: u64) -> u64 {
        v
    }
    #[inline(always)]
    fn get(self) -> u64 {
        self
    }
    #[inline(always)]
    fn read(b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        u64::from_ne_bytes(a)
    }
    #[inline(always)]
    fn write(self, b: &mut [u8]) {
        b[..8].copy_from_slice(&self.to_ne_bytes());
    }
}

/// A 64-byte line of a leaf: `U::G` runs, each a start then a 4-byte value
/// (native byte order; this is memory, not a wire format), padded with starts of
/// `U::MAX`.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct Line(pub(crate) [u8; 64]);

impl Line {
    #[inline(always)]
    fn start<U: Unit>(&self, j: usize) -> U {
        U::read(&self.0[j * U::SLOT..])
    }

    #[inline(always)]
    fn val<U: Unit>(&self, j: usize) -> u32 {
        let o = j * U::SLOT + U::SLOT - 4;
        u32::from_ne_bytes([self.0[o], self.0[o + 1], self.0[o + 2], self.0[o + 3]])
    }

    #[inline(always)]
    fn set<U: Unit>(&mut self, j: usize, start: U, val: u32) {
        debug_assert!(U::G * U::SLOT <= 64 && j < U::G);
        start.write(&mut self.0[j * U::SLOT..]);
        self.set_val::<U>(j, val);
    }

    #[inline(always)]
    fn set_val<U: Unit>(&mut self, j: usize, val: u32) {
        let o = j * U::SLOT + U::SLOT - 4;
        self.0[o..o + 4].copy_from_slice(&val.to_ne_bytes());
    }

    /// How many of the line's starts are `<= u`.
    #[inline(always)]
    fn count_le<U: Unit>(&self, u: U) -> usize {
        (0..U::G)
            .map(|j| usize::from(self.start::<U>(j) <= u))
            .sum()
    }
}

/// How many of `keys` are `<= u` (branch-free; vectorises).
#[inline(always)]
fn count_le<U: Unit>(keys: &[U; B], u: U) -> usize {
    keys.iter().map(|&k| usize::from(k <= u)).sum()
}

/// How many of `h[1..16]` are `<= u`.
#[inline(always)]
fn count_le_tail<U: Unit>(h: &[U; B], u: U) -> usize {
    h[1..].iter().map(|&k| usize::from(k <= u)).sum()
}

/// Ask the CPU to start loading the line holding `p`. Never faults.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it does not dereference and never faults.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

// ---------------------------------------------------------------------------
// Layouts
// ---------------------------------------------------------------------------

/// The head line(s) of a leaf or inner node.
#[repr(C, align(64))]
pub(crate) struct Head<U> {
    pub(crate) h: [U; B],
}

/// An inner node.
#[repr(C, align(64))]
pub(crate) struct Inner<U> {
    pub(crate) head: Head<U>,
    pub(crate) keys: [U; FANOUT],
    pub(crate) kids: [*mut u8; FANOUT],
}

const _: () = assert!(size_of::<Head<u32>>() == 64 && size_of::<Head<u64>>() == 128);

/// A pointer to a node; what it points at depends on the level it is found at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodePtr(NonNull<u8>);

// SAFETY: nodes are immutable once reachable by more than the writer (invariant 1),
// and the pointer itself is plain data.
unsafe impl Send for NodePtr {}
// SAFETY: as above.
unsafe impl Sync for NodePtr {}

impl NodePtr {
    pub(crate) fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }

    pub(crate) fn raw(self) -> *mut u8 {
        self.0.as_ptr()
    }
}

/// Bytes and alignment of a leaf of `groups` lines.
pub(crate) fn leaf_layout<U: Unit>(groups: usize) -> Layout {
    let size = size_of::<Head<U>>() + groups * size_of::<Line>();
    // Sizes are bounded by U::LEAF_MAX; this cannot fail.
    Layout::from_size_align(size, 64).unwrap_or_else(|_| Layout::new::<Head<U>>())
}

/// Layout of an inner node.
pub(crate) fn inner_layout<U: Unit>() -> Layout {
    Layout::new::<Inner<U>>()
}

fn raw_alloc(layout: Layout) -> NonNull<u8> {
    super::arena::alloc(layout)
}

/// A memory block to give back: its pointer and layout.
#[derive(Debug)]
pub(crate) struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a Block is an exclusive claim on memory no one else will touch again.
unsafe impl Send for Block {}
// SAFETY: a Block has no interior mutability; `&Block` only reads its fields.
unsafe impl Sync for Block {}

impl Block {
    pub(crate) fn new(ptr: NonNull<u8>, layout: Layout) -> Block {
        Block { ptr, layout }
    }

    pub(crate) fn of(node: NodePtr, layout: Layout) -> Block {
        Block {
            ptr: node.0,
            layout,
        }
    }

    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    pub(crate) fn bytes(&self) -> usize {
        self.layout.size()
    }

    /// Free it.
    ///
    /// # Safety
    /// No one reads the block any more (invariant 2) and it was allocated with this
    /// layout.
    pub(crate) unsafe fn free(self) {
        // SAFETY: the caller's contract; every block comes from the arena.
        unsafe { super::arena::dealloc(self.ptr, self.layout) }
    }
}

/// Allocate a block for the dictionary (`dict.rs`), zeroed.
pub(crate) fn alloc_zeroed_block(layout: Layout) -> NonNull<u8> {
    let p = raw_alloc(layout);
    // SAFETY: a fresh block of `layout.size()` bytes.
    unsafe { core::ptr::write_bytes(p.as_ptr(), 0, layout.size()) };
    p
}

// ---------------------------------------------------------------------------
// Building nodes (writer only)
// ---------------------------------------------------------------------------

/// A new leaf holding `runs` (1..=`U::LEAF_MAX` of them, ascending starts).
pub(crate) fn leaf_new<U: Unit>(runs: &[(U, u32)]) -> (NodePtr, Layout) {
    let n = runs.len();
    debug_assert!((1..=U::LEAF_MAX).contains(&n));
    let groups = n.div_ceil(U::G);
    let layout = leaf_layout::<U>(groups);
    let p = raw_alloc(layout);
    let mut h = [U::MAX; B];
    h[0] = U::from_u64(n as u64);
    for (g, slot) in h.iter_mut().enumerate().take(groups).skip(1) {
        *slot = runs[g * U::G].0;
    }
    // SAFETY: `p` is a fresh allocation of `layout`, which has room for the head and
    // `groups` lines, each 64-aligned.
    unsafe {
        p.as_ptr().cast::<Head<U>>().write(Head { h });
        let lp = p.as_ptr().add(size_of::<Head<U>>()).cast::<Line>();
        for g in 0..groups {
            let mut line = Line([0; 64]);
            for j in 0..U::G {
                match runs.get(g * U::G + j) {
                    Some(&(s, v)) => line.set::<U>(j, s, v),
                    None => line.set::<U>(j, U::MAX, 0),
                }
            }
            lp.add(g).write(line);
        }
    }
    (NodePtr(p), layout)
}

/// A new inner node over `kids` (1..=256 of them: each child's key and pointer).
pub(crate) fn inner_new<U: Unit>(kids: &[(U, NodePtr)]) -> NodePtr {
    let layout = inner_layout::<U>();
    let p = raw_alloc(layout);
    // SAFETY: a fresh allocation of exactly an Inner<U>; every field is written
    // before the pointer is returned.
    unsafe {
        let inner = p.as_ptr().cast::<Inner<U>>();
        core::ptr::addr_of_mut!((*inner).keys).write([U::MAX; FANOUT]);
        core::ptr::addr_of_mut!((*inner).kids).write([core::ptr::null_mut(); FANOUT]);
        core::ptr::addr_of_mut!((*inner).head).write(Head { h: [U::MAX; B] });
        let r = &mut *inner;
        set_kids(r, kids);
    }
    NodePtr(p)
}

/// Overwrite the children of an inner node the writer owns (fresh).
pub(crate) fn set_kids<U: Unit>(inner: &mut Inner<U>, kids: &[(U, NodePtr)]) {
    debug_assert!((1..=FANOUT).contains(&kids.len()));
    let n = kids.len();
    for (i, &(k, p)) in kids.iter().enumerate() {
        inner.keys[i] = k;
        inner.kids[i] = p.raw();
    }
    for i in n..FANOUT {
        inner.keys[i] = U::MAX;
        inner.kids[i] = core::ptr::null_mut();
    }
    inner.head.h[0] = U::from_u64(n as u64);
    for b in 1..B {
        inner.head.h[b] = if b * B < n { inner.keys[b * B] } else { U::MAX };
    }
}

/// A byte-for-byte copy of a node (an inner node, or a leaf with `layout`), as a
/// new allocation the caller records as fresh.
///
/// # Safety
/// `p` is a live node allocated with `layout`.
pub(crate) unsafe fn clone_node(p: NodePtr, layout: Layout) -> NodePtr {
    let q = raw_alloc(layout);
    // SAFETY: two distinct allocations of `layout.size()` bytes.
    unsafe { core::ptr::copy_nonoverlapping(p.raw(), q.as_ptr(), layout.size()) };
    NodePtr(q)
}

/// Set the value of run `i` of a leaf the writer owns.
///
/// # Safety
/// `p` is a fresh leaf of unit `U` (invariant 1) with more than `i` runs.
pub(crate) unsafe fn leaf_set_val<U: Unit>(p: NodePtr, i: usize, v: u32) {
    // SAFETY: the caller's contract; line `i / G` exists.
    unsafe {
        let lp = p.raw().add(size_of::<Head<U>>()).cast::<Line>();
        (*lp.add(i / U::G)).set_val::<U>(i % U::G, v);
    }
}

/// Rewrite the head of an inner node after its first `n` keys changed, padding the
/// rest.
pub(crate) fn fix_inner<U: Unit>(inner: &mut Inner<U>, n: usize, old_n: usize) {
    for i in n..old_n.max(n) {
        inner.keys[i] = U::MAX;
        inner.kids[i] = core::ptr::null_mut();
    }
    inner.head.h[0] = U::from_u64(n as u64);
    for b in 1..B {
        inner.head.h[b] = if b * B < n { inner.keys[b * B] } else { U::MAX };
    }
}

/// Mutable access to an inner node.
///
/// # Safety
/// `p` is an inner node of unit `U` that only the caller (the writer) can reach:
/// it is in the writer's fresh set (invariant 1).
pub(crate) unsafe fn inner_mut<'a, U: Unit>(p: NodePtr) -> &'a mut Inner<U> {
    // SAFETY: the caller's contract.
    unsafe { &mut *p.raw().cast::<Inner<U>>() }
}

// ---------------------------------------------------------------------------
// Reading nodes
// ---------------------------------------------------------------------------

/// Shared access to an inner node.
///
/// # Safety
/// `p` is a live inner node of unit `U` (invariant 3).
#[inline(always)]
pub(crate) unsafe fn inner_ref<'a, U: Unit>(p: NodePtr) -> &'a Inner<U> {
    // SAFETY: the caller's contract.
    unsafe { &*p.raw().cast::<Inner<U>>() }
}

impl<U: Unit> Inner<U> {
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.head.h[0].get() as usize
    }

    /// The child whose range holds `u` (`u` is at or after this node's first key).
    #[inline(always)]
    pub(crate) fn search(&self, u: U) -> usize {
        let n = self.len();
        let b = count_le_tail(&self.head.h, u).min((n - 1) / B);
        let (blocks, _) = self.keys.as_chunks::<B>();
        let r = count_le(&blocks[b], u).min(n - b * B);
        b * B + r.max(1) - 1
    }

    #[inline(always)]
    pub(crate) fn kid(&self, i: usize) -> NodePtr {
        // Children below `len()` are never null (set_kids).
        NodePtr(NonNull::new(self.kids[i]).unwrap_or(NonNull::dangling()))
    }

    /// Children as (key, pointer) pairs.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (U, NodePtr)> + '_ {
        (0..self.len()).map(|i| (self.keys[i], self.kid(i)))
    }
}

/// Shared access to a leaf.
#[derive(Clone, Copy)]
pub(crate) struct LeafRef<'a, U> {
    head: &'a [U; B],
    lines: &'a [Line],
    n: usize,
}

/// Shared access to a leaf.
///
/// # Safety
/// `p` is a live leaf of unit `U` (invariant 3).
#[inline(always)]
pub(crate) unsafe fn leaf_ref<'a, U: Unit>(p: NodePtr) -> LeafRef<'a, U> {
    // SAFETY: the caller's contract; the head says how many lines follow.
    unsafe {
        let head = &(*p.raw().cast::<Head<U>>()).h;
        let n = head[0].get() as usize;
        let lp = p.raw().add(size_of::<Head<U>>()).cast::<Line>();
        LeafRef {
            head,
            lines: core::slice::from_raw_parts(lp, n.div_ceil(U::G)),
            n,
        }
    }
}

impl<'a, U: Unit> LeafRef<'a, U> {
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// Run `i`: (start, value).
    #[inline(always)]
    pub(crate) fn run(&self, i: usize) -> (U, u32) {
        let l = &self.lines[i / U::G];
        (l.start::<U>(i % U::G), l.val::<U>(i % U::G))
    }

    /// The line holding `u` (`u` at or after the first run).
    #[inline(always)]
    fn line_of(&self, u: U) -> usize {
        count_le_tail(self.head, u).min(self.lines.len() - 1)
    }

    /// The run holding `u`: (index, start, end, value). `u` is at or after the first
    /// run; `hi` is the end of the leaf's range.
    #[inline(always)]
    pub(crate) fn search(&self, u: U, hi: u128) -> (usize, u64, u128, u32) {
        search_line(self, self.line_of(u), u, hi)
    }

    /// The end of run `i` given the leaf's end `hi`.
    pub(crate) fn end_of(&self, i: usize, hi: u128) -> u128 {
        if i + 1 < self.n {
            u128::from(self.run(i + 1).0.get())
        } else {
            hi
        }
    }

    /// The layout this leaf was allocated with.
    pub(crate) fn layout(&self) -> Layout {
        leaf_layout::<U>(self.lines.len())
    }

    /// The address of line `g`, to prefetch.
    #[inline(always)]
    fn line_ptr(&self, g: usize) -> *const Line {
        &self.lines[g]
    }
}

/// Search line `g` of `leaf` for `u` (which the head placed in it).
#[inline(always)]
fn search_line<U: Unit>(
    leaf: &LeafRef<'_, U>,
    g: usize,
    u: U,
    hi: u128,
) -> (usize, u64, u128, u32) {
    let line = &leaf.lines[g];
    let glen = (leaf.n - g * U::G).min(U::G);
    let r = line.count_le::<U>(u).min(glen).max(1);
    let i = r - 1;
    let end = if r < glen {
        u128::from(line.start::<U>(r).get())
    } else if g + 1 < leaf.lines.len() {
        u128::from(leaf.head[g + 1].get())
    } else {
        hi
    };
    (
        g * U::G + i,
        line.start::<U>(i).get(),
        end,
        line.val::<U>(i),
    )
}

// ---------------------------------------------------------------------------
// A readable tree
// ---------------------------------------------------------------------------

/// A tree that is alive and immutable for `'a` (invariant 3): the root, its height
/// (0: the root is a leaf) and the MAB range it covers.
#[derive(Clone, Copy)]
pub(crate) struct TreeRef<'a, U> {
    pub(crate) root: NodePtr,
    pub(crate) height: u8,
    /// First unit of the MAB (the first run's start).
    pub(crate) lo: u64,
    /// One past the MAB's last unit.
    pub(crate) hi: u128,
    _alive: PhantomData<&'a U>,
}

/// One run found by a look-up: `[start, end)` with its stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RawRun {
    pub(crate) start: u64,
    /// Length in units (a run never covers a whole 2^64 space: a MAB is at most
    /// half of it).
    pub(crate) len: u64,
    pub(crate) val: u32,
}

impl RawRun {
    #[inline(always)]
    fn new(start: u64, end: u128, val: u32) -> RawRun {
        RawRun {
            start,
            len: (end - u128::from(start)) as u64,
            val,
        }
    }

    /// One past the last unit.
    pub(crate) fn end(&self) -> u128 {
        u128::from(self.start) + u128::from(self.len)
    }
}

impl<'a, U: Unit> TreeRef<'a, U> {
    /// # Safety
    /// `root` and everything below it stay alive and unwritten for `'a`.
    pub(crate) unsafe fn new(root: NodePtr, height: u8, lo: u64, hi: u128) -> TreeRef<'a, U> {
        TreeRef {
            root,
            height,
            lo,
            hi,
            _alive: PhantomData,
        }
    }

    /// The leaf whose range holds `u`, with the end of its range.
    pub(crate) fn find_leaf(&self, u: U) -> (LeafRef<'a, U>, u128) {
        let mut node = self.root;
        let mut hi = self.hi;
        for _ in 0..self.height {
            // SAFETY: levels above 0 are inner nodes of a live tree.
            let inner = unsafe { inner_ref::<U>(node) };
            let i = inner.search(u);
            if i + 1 < inner.len() {
                hi = u128::from(inner.keys[i + 1].get());
            }
            node = inner.kid(i);
        }
        // SAFETY: level 0 is a leaf of a live tree.
        (unsafe { leaf_ref::<U>(node) }, hi)
    }

    /// The run holding unit `u` (`lo <= u < hi`).
    pub(crate) fn find(&self, u: u64) -> RawRun {
        let uu = U::from_u64(u);
        let (leaf, hi) = self.find_leaf(uu);
        let (_, start, end, val) = leaf.search(uu, hi);
        RawRun::new(start, end, val)
    }

    /// Runs from the one holding `from` onwards, in order.
    pub(crate) fn runs_from(&self, from: u64) -> RunIter<'a, U> {
        let uu = U::from_u64(from);
        let (leaf, hi) = self.find_leaf(uu);
        let (i, _, _, _) = leaf.search(uu, hi);
        RunIter {
            tree: *self,
            leaf,
            leaf_hi: hi,
            i,
            done: false,
        }
    }

    /// Look up many units at once (`lo <= u < hi` for each), overlapping their memory
    /// accesses ([`batch`]).
    pub(crate) fn find_batch(&self, units: &[u64], out: &mut [RawRun]) {
        batch::<U>(self, units, out);
    }
}

/// Iterator over runs: (start, end, value).
pub(crate) struct RunIter<'a, U> {
    tree: TreeRef<'a, U>,
    leaf: LeafRef<'a, U>,
    leaf_hi: u128,
    i: usize,
    done: bool,
}

impl<U: Unit> Iterator for RunIter<'_, U> {
    type Item = RawRun;
    fn next(&mut self) -> Option<RawRun> {
        if self.done {
            return None;
        }
        if self.i >= self.leaf.len() {
            if self.leaf_hi >= self.tree.hi {
                self.done = true;
                return None;
            }
            // Descend again for the next leaf: its first unit is this leaf's end.
            let (leaf, hi) = self.tree.find_leaf(U::from_u64(self.leaf_hi as u64));
            self.leaf = leaf;
            self.leaf_hi = hi;
            self.i = 0;
        }
        let (s, v) = self.leaf.run(self.i);
        let end = self.leaf.end_of(self.i, self.leaf_hi);
        self.i += 1;
        Some(RawRun::new(s.get(), end, v))
    }
}

// ---------------------------------------------------------------------------
// Batched look-up
// ---------------------------------------------------------------------------

/// Look-ups descending together. Each pass over the group touches one level of
/// every look-up and prefetches what the next pass reads, so a look-up's line has
/// had 31 other look-ups' work to arrive in (about 300 ns, near DRAM latency) and
/// up to about 64 lines are in flight.
const GROUP: usize = 32;

/// Look up `units` (each inside the tree's range) in `tree`: `out[i]` receives the
/// run holding `units[i]`. The descent is done level by level for groups of
/// [`GROUP`] units with prefetching between passes, so the memory accesses of a
/// group overlap instead of queueing.
pub(crate) fn batch<U: Unit>(tree: &TreeRef<'_, U>, units: &[u64], out: &mut [RawRun]) {
    for (us, os) in units.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
        group::<U>(tree, us, os);
    }
}

/// Bring the leaves holding `units` (and the paths to them) into the cache, whole:
/// what a writer is about to copy. The same grouped descent as [`batch`].
pub(crate) fn warm<U: Unit>(tree: &TreeRef<'_, U>, units: &[u64]) {
    for us in units.chunks(GROUP) {
        group_warm::<U>(tree, us);
    }
}

fn group_warm<U: Unit>(tree: &TreeRef<'_, U>, units: &[u64]) {
    let g = units.len().min(GROUP);
    let mut node = [tree.root; GROUP];
    let mut uu = [U::MAX; GROUP];
    for k in 0..g {
        uu[k] = U::from_u64(units[k]);
    }
    descend::<U>(tree.height, g, &uu, &mut node, None);
    // The head and the group a command reads; the copy of the rest streams well
    // (sequential lines), and prefetching whole leaves for a group of sets would
    // ask for more lines than a core can have in flight.
    for k in 0..g {
        // SAFETY: level 0 is a leaf of a live tree.
        let leaf = unsafe { leaf_ref::<U>(node[k]) };
        prefetch(leaf.line_ptr(leaf.line_of(uu[k])));
    }
}

/// The inner levels of a grouped descent: `node[k]` goes from the root to the leaf
/// holding `uu[k]`; `hi[k]` (if given) to the end of that leaf's range.
#[inline(always)]
fn descend<U: Unit>(
    height: u8,
    g: usize,
    uu: &[U; GROUP],
    node: &mut [NodePtr; GROUP],
    mut hi: Option<&mut [u128; GROUP]>,
) {
    let mut blk = [0usize; GROUP];
    // The levels above the last inner level are few nodes and stay cached: one
    // pass descends them all. The last inner level and the leaves do not fit the
    // cache: three passes, one line per look-up each (the key block, the child
    // pointer, the child's head), so a group keeps about GROUP lines in flight.
    if height > 1 {
        for k in 0..g {
            let mut p = node[k];
            for _ in 0..height - 1 {
                // SAFETY: above level 0 every node is an inner node of a live tree.
                let inner = unsafe { inner_ref::<U>(p) };
                let i = inner.search(uu[k]);
                if let Some(hi) = hi.as_deref_mut()
                    && i + 1 < inner.len()
                {
                    hi[k] = u128::from(inner.keys[i + 1].get());
                }
                p = inner.kid(i);
            }
            node[k] = p;
            prefetch(p.raw());
        }
    }
    for _ in height.saturating_sub(1)..height {
        for k in 0..g {
            // SAFETY: above level 0 every node is an inner node of a live tree.
            let inner = unsafe { inner_ref::<U>(node[k]) };
            let b = count_le_tail(&inner.head.h, uu[k]).min((inner.len() - 1) / B);
            blk[k] = b;
            prefetch(inner.keys[b * B..].as_ptr());
        }
        for k in 0..g {
            // SAFETY: as above.
            let inner = unsafe { inner_ref::<U>(node[k]) };
            let n = inner.len();
            let b = blk[k];
            let (blocks, _) = inner.keys.as_chunks::<B>();
            let r = count_le(&blocks[b], uu[k]).min(n - b * B).max(1);
            let i = b * B + r - 1;
            blk[k] = i;
            if let Some(hi) = hi.as_deref_mut()
                && i + 1 < n
            {
                hi[k] = u128::from(inner.keys[i + 1].get());
            }
            prefetch(&inner.kids[i]);
        }
        for k in 0..g {
            // SAFETY: as above.
            let inner = unsafe { inner_ref::<U>(node[k]) };
            let c = inner.kid(blk[k]);
            node[k] = c;
            prefetch(c.raw());
            if size_of::<Head<U>>() > 64 {
                // SAFETY: the head is this many bytes long.
                prefetch(unsafe { c.raw().add(64) });
            }
        }
    }
}

#[inline(always)]
fn group<U: Unit>(tree: &TreeRef<'_, U>, units: &[u64], out: &mut [RawRun]) {
    let g = units.len().min(out.len()).min(GROUP);
    let mut node = [tree.root; GROUP];
    let mut hi = [tree.hi; GROUP];
    let mut blk = [0usize; GROUP];
    let mut uu = [U::MAX; GROUP];
    for k in 0..g {
        uu[k] = U::from_u64(units[k]);
    }
    descend::<U>(tree.height, g, &uu, &mut node, Some(&mut hi));
    for k in 0..g {
        // SAFETY: level 0 is a leaf of a live tree.
        let leaf = unsafe { leaf_ref::<U>(node[k]) };
        let gi = leaf.line_of(uu[k]);
        blk[k] = gi;
        prefetch(leaf.line_ptr(gi));
    }
    for k in 0..g {
        // SAFETY: as above.
        let leaf = unsafe { leaf_ref::<U>(node[k]) };
        let (_, start, end, val) = search_line(&leaf, blk[k], uu[k], hi[k]);
        out[k] = RawRun::new(start, end, val);
    }
}
