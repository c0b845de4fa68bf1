//! Node memory of the page tree: layouts, allocation, and the read paths (single
//! and batched look-ups). This file and `tree.rs` / `dict.rs` (which free nodes) are
//! the only places in `table` with `unsafe`; the invariants are stated here.
//!
//! # Layout (see the module doc of `table` for why)
//!
//! A **leaf** is one allocation, 64-byte aligned: a head line of 16 units — `h[0]`
//! is the number of runs `n` (1..=256), `h[g]` for `g` in `1..16` is the first start
//! of group `g` (or `U::MAX` past the last group) — then `ceil(n / 16)` groups of 16
//! runs, each `starts: [U; 16]` then `vals: [u32; 16]` (128 bytes for IPv4, 192 for
//! IPv6). A look-up reads the head line, then one group (two or three adjacent lines).
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
use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};

/// Keys per block of an inner node and runs per group of a leaf.
pub(crate) const B: usize = 16;
/// Children per inner node at most.
pub(crate) const FANOUT: usize = 256;
/// Runs per leaf at most (16 groups of 16).
pub(crate) const LEAF_MAX: usize = 256;
/// Below this a leaf is merged with a neighbour.
pub(crate) const LEAF_MIN: usize = 64;
/// Below this an inner node is merged with a neighbour.
pub(crate) const INNER_MIN: usize = 64;
/// The stored value of an unassigned run. For IPv4 it is the ETR
/// 255.255.255.255, which the engine refuses as a mapping (`Reason::ReservedEtr`);
/// for IPv6 values are dictionary indices and this one is never handed out.
pub(crate) const GAP: u32 = u32::MAX;

/// A unit as stored: `u32` for IPv4, `u64` for IPv6.
pub(crate) trait Unit: Copy + Ord + Default + Send + Sync + Debug + 'static {
    /// The largest value (padding in heads and groups).
    const MAX: Self;
    /// From a unit that is known to fit (checked against the MAB first).
    fn from_u64(v: u64) -> Self;
    /// As a `u64`.
    fn get(self) -> u64;
}

impl Unit for u32 {
    const MAX: u32 = u32::MAX;
    #[inline(always)]
    fn from_u64(v: u64) -> u32 {
        v as u32
    }
    #[inline(always)]
    fn get(self) -> u64 {
        u64::from(self)
    }
}

impl Unit for u64 {
    const MAX: u64 = u64::MAX;
    #[inline(always)]
    fn from_u64(v: u64) -> u64 {
        v
    }
    #[inline(always)]
    fn get(self) -> u64 {
        self
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

/// A group of 16 runs of a leaf.
#[repr(C, align(64))]
pub(crate) struct Group<U> {
    pub(crate) starts: [U; B],
    pub(crate) vals: [u32; B],
}

/// An inner node.
#[repr(C, align(64))]
pub(crate) struct Inner<U> {
    pub(crate) head: Head<U>,
    pub(crate) keys: [U; FANOUT],
    pub(crate) kids: [*mut u8; FANOUT],
}

const _: () = assert!(size_of::<Head<u32>>() == 64 && size_of::<Head<u64>>() == 128);
const _: () = assert!(size_of::<Group<u32>>() == 128 && size_of::<Group<u64>>() == 192);

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

    fn raw(self) -> *mut u8 {
        self.0.as_ptr()
    }
}

/// Bytes and alignment of a leaf of `groups` groups.
pub(crate) fn leaf_layout<U: Unit>(groups: usize) -> Layout {
    let size = size_of::<Head<U>>() + groups * size_of::<Group<U>>();
    // Sizes are bounded by LEAF_MAX; this cannot fail.
    Layout::from_size_align(size, 64).unwrap_or_else(|_| Layout::new::<Head<U>>())
}

/// Layout of an inner node.
pub(crate) fn inner_layout<U: Unit>() -> Layout {
    Layout::new::<Inner<U>>()
}

fn raw_alloc(layout: Layout) -> NonNull<u8> {
    // SAFETY: every layout here has a non-zero size.
    let p = unsafe { alloc(layout) };
    NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout))
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
        // SAFETY: the caller's contract.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Allocate a block for the dictionary (`dict.rs`), zeroed.
pub(crate) fn alloc_zeroed_block(layout: Layout) -> NonNull<u8> {
    // SAFETY: non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout))
}

// ---------------------------------------------------------------------------
// Building nodes (writer only)
// ---------------------------------------------------------------------------

/// A new leaf holding `runs` (1..=256 of them, ascending starts).
pub(crate) fn leaf_new<U: Unit>(runs: &[(U, u32)]) -> (NodePtr, Layout) {
    let n = runs.len();
    debug_assert!((1..=LEAF_MAX).contains(&n));
    let groups = n.div_ceil(B);
    let layout = leaf_layout::<U>(groups);
    let p = raw_alloc(layout);
    let mut h = [U::MAX; B];
    h[0] = U::from_u64(n as u64);
    for (g, slot) in h.iter_mut().enumerate().take(groups).skip(1) {
        *slot = runs[g * B].0;
    }
    // SAFETY: `p` is a fresh allocation of `layout`, which has room for the head and
    // `groups` groups, each 64-aligned.
    unsafe {
        p.as_ptr().cast::<Head<U>>().write(Head { h });
        let gp = p.as_ptr().add(size_of::<Head<U>>()).cast::<Group<U>>();
        for g in 0..groups {
            let mut grp = Group {
                starts: [U::MAX; B],
                vals: [0; B],
            };
            for (j, &(s, v)) in runs[g * B..n.min(g * B + B)].iter().enumerate() {
                grp.starts[j] = s;
                grp.vals[j] = v;
            }
            gp.add(g).write(grp);
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
    groups: &'a [Group<U>],
    n: usize,
}

/// Shared access to a leaf.
///
/// # Safety
/// `p` is a live leaf of unit `U` (invariant 3).
#[inline(always)]
pub(crate) unsafe fn leaf_ref<'a, U: Unit>(p: NodePtr) -> LeafRef<'a, U> {
    // SAFETY: the caller's contract; the head says how many groups follow.
    unsafe {
        let head = &(*p.raw().cast::<Head<U>>()).h;
        let n = head[0].get() as usize;
        let gp = p.raw().add(size_of::<Head<U>>()).cast::<Group<U>>();
        LeafRef {
            head,
            groups: core::slice::from_raw_parts(gp, n.div_ceil(B)),
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
        let g = &self.groups[i / B];
        (g.starts[i % B], g.vals[i % B])
    }

    /// The run holding `u`: (index, start, end, value). `u` is at or after the first
    /// run; `hi` is the end of the leaf's range.
    #[inline(always)]
    pub(crate) fn search(&self, u: U, hi: u128) -> (usize, u64, u128, u32) {
        let ng = self.n.div_ceil(B);
        let g = count_le_tail(self.head, u).min(ng - 1);
        search_group(self.head, &self.groups[g], g, ng, self.n, u, hi)
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
        leaf_layout::<U>(self.groups.len())
    }
}

#[inline(always)]
fn search_group<U: Unit>(
    head: &[U; B],
    grp: &Group<U>,
    g: usize,
    ng: usize,
    n: usize,
    u: U,
    hi: u128,
) -> (usize, u64, u128, u32) {
    let glen = (n - g * B).min(B);
    let r = count_le(&grp.starts, u).min(glen).max(1);
    let i = r - 1;
    let end = if r < glen {
        u128::from(grp.starts[r].get())
    } else if g + 1 < ng {
        u128::from(head[g + 1].get())
    } else {
        hi
    };
    (g * B + i, grp.starts[i].get(), end, grp.vals[i])
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
    pub(crate) end: u128,
    pub(crate) val: u32,
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
        RawRun { start, end, val }
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
    /// accesses: each look-up is a small state machine, and `WIDTH` of them take
    /// turns, each step prefetching what its next step reads (asynchronous memory
    /// access chaining).
    pub(crate) fn find_batch(&self, units: &[u64], out: &mut [RawRun]) {
        batch::<U>(
            core::slice::from_ref(self),
            units.len(),
            |i| (0, units[i]),
            out,
        );
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
        Some(RawRun {
            start: s.get(),
            end,
            val: v,
        })
    }
}

// ---------------------------------------------------------------------------
// Batched look-up
// ---------------------------------------------------------------------------

/// Look-ups in flight at once. Each step of one look-up prefetches two or three
/// lines; 16 look-ups keep about 40 lines in flight, near what one core can track.
const WIDTH: usize = 16;

#[derive(Clone, Copy)]
struct Slot {
    node: NodePtr,
    hi: u128,
    /// The input index, or `usize::MAX` for an idle slot.
    idx: usize,
    unit: u64,
    tree: u32,
    /// Inner levels left above the leaf.
    level: u8,
    /// 0: the node's head is (being) loaded; 1: the block or group is.
    phase: u8,
}

/// Run `n` look-ups: input `i` is `get(i) = (tree index, unit)`; `out[i]` receives the
/// run. Every unit lies inside its tree's range.
pub(crate) fn batch<U: Unit>(
    trees: &[TreeRef<'_, U>],
    n: usize,
    get: impl Fn(usize) -> (usize, u64),
    out: &mut [RawRun],
) {
    let idle = Slot {
        node: trees
            .first()
            .map_or(NodePtr(NonNull::dangling()), |t| t.root),
        hi: 0,
        idx: usize::MAX,
        unit: 0,
        tree: 0,
        level: 0,
        phase: 0,
    };
    let mut slots = [idle; WIDTH];
    let mut next = 0usize;
    let mut busy = 0usize;
    let start = |s: &mut Slot, i: usize| {
        let (t, unit) = get(i);
        let tr = &trees[t];
        prefetch(tr.root.raw());
        *s = Slot {
            node: tr.root,
            hi: tr.hi,
            idx: i,
            unit,
            tree: t as u32,
            level: tr.height,
            phase: 0,
        };
    };
    for s in slots.iter_mut() {
        if next < n {
            start(s, next);
            next += 1;
            busy += 1;
        }
    }
    while busy > 0 {
        for s in slots.iter_mut() {
            if s.idx == usize::MAX {
                continue;
            }
            let u = U::from_u64(s.unit);
            if s.level > 0 {
                // SAFETY: above level 0 the node is an inner node of a live tree.
                let inner = unsafe { inner_ref::<U>(s.node) };
                let nk = inner.len();
                if s.phase == 0 {
                    let b = count_le_tail(&inner.head.h, u).min((nk - 1) / B);
                    prefetch(inner.keys[b * B..].as_ptr());
                    prefetch(inner.kids[b * B..].as_ptr());
                    prefetch(inner.kids[b * B + 8..].as_ptr());
                    s.phase = 1;
                } else {
                    let i = inner.search(u);
                    if i + 1 < nk {
                        s.hi = u128::from(inner.keys[i + 1].get());
                    }
                    s.node = inner.kid(i);
                    s.level -= 1;
                    s.phase = 0;
                    let p = s.node.raw();
                    prefetch(p);
                    if size_of::<Head<U>>() > 64 {
                        // SAFETY: the head is this many bytes long.
                        prefetch(unsafe { p.add(64) });
                    }
                }
                continue;
            }
            // SAFETY: level 0 is a leaf of a live tree.
            let leaf = unsafe { leaf_ref::<U>(s.node) };
            let ng = leaf.n.div_ceil(B);
            let g = count_le_tail(leaf.head, u).min(ng - 1);
            if s.phase == 0 {
                let gp = (&leaf.groups[g] as *const Group<U>).cast::<u8>();
                for off in (0..size_of::<Group<U>>()).step_by(64) {
                    // SAFETY: within the group.
                    prefetch(unsafe { gp.add(off) });
                }
                s.phase = 1;
                continue;
            }
            let (_, start_u, end, val) =
                search_group(leaf.head, &leaf.groups[g], g, ng, leaf.n, u, s.hi);
            out[s.idx] = RawRun {
                start: start_u,
                end,
                val,
            };
            let _ = s.tree;
            if next < n {
                start(s, next);
                next += 1;
            } else {
                s.idx = usize::MAX;
                busy -= 1;
            }
        }
    }
}
