//! The writer's side of the page tree: copy-on-write replacement of a range of
//! runs, bulk building, and reclaiming replaced nodes once no reader can see them.
//!
//! # Copy on write
//! The writer keeps a *working* tree. A node created since the last publish is
//! *fresh* (in [`Mem`]'s fresh set): no reader can reach it, so the writer edits it
//! in place. Any other node may be in a published version and is never written
//! (node.rs invariant 1): changing it means making a fresh copy and *retiring* the
//! original. So between two publishes each touched page and the path to it is copied
//! once, however many sets touch it.
//!
//! # Reclamation
//! Publishing version N+1 hands the nodes retired since version N to N's [`Bag`].
//! Every version holds its own bag, and every bag holds the next one, so bag N is
//! dropped — and frees its nodes — only once every version up to N is gone (node.rs
//! invariant 2). There are no per-node reference counts, and copying an inner node
//! is a plain memory copy. The writer keeps old versions in a graveyard and lets go
//! of them only when no reader holds them, so readers never run the freeing.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use super::node::{
    Block, FANOUT, INNER_MIN, NodePtr, TreeRef, Unit, clone_node, fix_inner, inner_layout,
    inner_mut, inner_new, inner_ref, leaf_new, leaf_ref, leaf_set_val,
};

// ---------------------------------------------------------------------------
// Memory bookkeeping
// ---------------------------------------------------------------------------

/// A cheap hasher for node addresses (64-byte aligned pointers).
#[derive(Default, Clone, Copy)]
pub(crate) struct AddrHash;

/// The hasher state of [`AddrHash`].
#[derive(Default)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = n as u64 >> 6;
    }
}

impl BuildHasher for AddrHash {
    type Hasher = AddrHasher;
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher(0)
    }
}

/// The writer's record of which blocks are fresh and which are retired but maybe
/// still visible.
#[derive(Default)]
pub(crate) struct Mem {
    fresh: HashSet<usize, AddrHash>,
    pending: Vec<Block>,
    /// Bytes of node memory reachable from the working state.
    pub(crate) live_bytes: usize,
}

impl Mem {
    /// Record a block just allocated.
    pub(crate) fn created(&mut self, addr: usize, bytes: usize) {
        self.fresh.insert(addr);
        self.live_bytes += bytes;
    }

    pub(crate) fn is_fresh(&self, addr: usize) -> bool {
        self.fresh.contains(&addr)
    }

    /// The working state no longer uses `block`: free it now if no reader can have
    /// seen it, else keep it for the next publish.
    pub(crate) fn discard(&mut self, block: Block) {
        self.live_bytes = self.live_bytes.saturating_sub(block.bytes());
        if self.fresh.remove(&block.addr()) {
            // SAFETY: fresh blocks were never published (invariant 2), and the
            // working state no longer points at this one.
            unsafe { block.free() }
        } else {
            self.pending.push(block);
        }
    }

    /// At a publish: the blocks retired since the last one; every fresh block
    /// becomes visible.
    pub(crate) fn publish(&mut self) -> Vec<Block> {
        self.fresh.clear();
        core::mem::take(&mut self.pending)
    }
}

/// Blocks to free once every version up to the one holding this bag is gone.
#[derive(Default)]
pub(crate) struct Bag {
    garbage: Mutex<Vec<Block>>,
    next: Mutex<Option<Arc<Bag>>>,
}

impl Bag {
    /// Publishing a new version: this (the previous version's) bag receives the
    /// blocks retired since, and links to the new version's bag.
    pub(crate) fn close(&self, garbage: Vec<Block>, next: Arc<Bag>) {
        self.garbage.lock().extend(garbage);
        *self.next.lock() = Some(next);
    }

    /// The last bag of a table that is going away: everything still reachable.
    pub(crate) fn close_last(&self, garbage: Vec<Block>) {
        self.garbage.lock().extend(garbage);
    }
}

impl Drop for Bag {
    fn drop(&mut self) {
        for b in self.garbage.get_mut().drain(..) {
            // SAFETY: every version that could reach these blocks is gone
            // (invariant 2: this bag outlives all versions up to its own).
            unsafe { b.free() }
        }
        // Drop the chain iteratively: a reader that held a very old version may be
        // the last owner of a long chain.
        let mut next = self.next.get_mut().take();
        while let Some(arc) = next {
            match Arc::try_unwrap(arc) {
                Ok(mut bag) => {
                    next = bag.next.get_mut().take();
                    drop(bag);
                }
                Err(_) => break,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The tree
// ---------------------------------------------------------------------------

/// The working page tree of one MAB. Runs tile `[lo, hi)`: every unit is in exactly
/// one run, a micronet or a gap (stored value [`super::node::GAP`]).
pub(crate) struct Tree<U> {
    root: NodePtr,
    height: u8,
    lo: u64,
    hi: u128,
    runs: u64,
    _unit: core::marker::PhantomData<U>,
}

fn leaf_block<U: Unit>(p: NodePtr) -> Block {
    // SAFETY: `p` is a live leaf of the working tree.
    let layout = unsafe { leaf_ref::<U>(p) }.layout();
    Block::of(p, layout)
}

fn inner_block<U: Unit>(p: NodePtr) -> Block {
    Block::of(p, inner_layout::<U>())
}

/// Cut `items` into `ceil(len / max)` nearly equal chunks.
fn even_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let k = items.len().div_ceil(max).max(1);
    let (q, r) = (items.len() / k, items.len() % k);
    let mut at = 0;
    (0..k).map(move |i| {
        let n = q + usize::from(i < r);
        let s = &items[at..at + n];
        at += n;
        s
    })
}

impl<U: Unit> Tree<U> {
    /// A tree of the runs in `runs` (ascending, first start `lo`, tiling `[lo, hi)`).
    pub(crate) fn build(
        mem: &mut Mem,
        lo: u64,
        hi: u128,
        runs: impl IntoIterator<Item = (u64, u32)>,
    ) -> Tree<U> {
        let mut leaves: Vec<(U, NodePtr)> = Vec::new();
        let mut buf: Vec<(U, u32)> = Vec::with_capacity(2 * U::LEAF_MAX);
        let mut count = 0u64;
        for (s, v) in runs {
            buf.push((U::from_u64(s), v));
            count += 1;
            if buf.len() == 2 * U::LEAF_MAX {
                Self::push_leaf(mem, &buf[..U::LEAF_MAX], &mut leaves);
                buf.drain(..U::LEAF_MAX);
            }
        }
        debug_assert!(!buf.is_empty(), "runs tile a non-empty MAB");
        for chunk in even_chunks(&buf, U::LEAF_MAX) {
            Self::push_leaf(mem, chunk, &mut leaves);
        }
        let mut level = leaves;
        let mut height = 0u8;
        while level.len() > 1 {
            let mut up = Vec::with_capacity(level.len() / FANOUT + 1);
            Self::push_inners(mem, &level, &mut up);
            level = up;
            height += 1;
        }
        Tree {
            root: level[0].1,
            height,
            lo,
            hi,
            runs: count,
            _unit: core::marker::PhantomData,
        }
    }

    fn push_leaf(mem: &mut Mem, runs: &[(U, u32)], out: &mut Vec<(U, NodePtr)>) {
        let (p, layout) = leaf_new(runs);
        mem.created(p.addr(), layout.size());
        out.push((runs[0].0, p));
    }

    fn push_leaves(mem: &mut Mem, runs: &[(U, u32)], out: &mut Vec<(U, NodePtr)>) {
        if runs.is_empty() {
            return;
        }
        for chunk in even_chunks(runs, U::LEAF_MAX) {
            Self::push_leaf(mem, chunk, out);
        }
    }

    fn push_inners(mem: &mut Mem, kids: &[(U, NodePtr)], out: &mut Vec<(U, NodePtr)>) {
        for chunk in even_chunks(kids, FANOUT) {
            let p = inner_new(chunk);
            mem.created(p.addr(), inner_layout::<U>().size());
            out.push((chunk[0].0, p));
        }
    }

    /// A read view of the working tree, alive while `self` is borrowed.
    pub(crate) fn view(&self) -> TreeRef<'_, U> {
        // SAFETY: the writer's tree is alive and unchanged while borrowed shared.
        unsafe { TreeRef::new(self.root, self.height, self.lo, self.hi) }
    }

    /// Root, height: for building a published version.
    pub(crate) fn raw(&self) -> (NodePtr, u8) {
        (self.root, self.height)
    }

    /// Number of runs (micronets and gaps).
    pub(crate) fn runs(&self) -> u64 {
        self.runs
    }

    /// Replace the runs that start in `[lo, hi)` by `new` (ascending, `new[0].0 ==
    /// lo`), where `lo` and `hi` are run boundaries (`hi` may be the MAB's end).
    pub(crate) fn replace(&mut self, mem: &mut Mem, lo: u64, hi: u128, new: &[(u64, u32)]) {
        debug_assert!(!new.is_empty() && new[0].0 == lo && u128::from(lo) < hi);
        let new: Vec<(U, u32)> = new.iter().map(|&(s, v)| (U::from_u64(s), v)).collect();
        let mut out = Vec::new();
        let mut removed = 0u64;
        self.rep(
            mem,
            self.root,
            self.height,
            lo,
            hi,
            &new,
            &mut out,
            &mut removed,
        );
        self.runs = self.runs + new.len() as u64 - removed;
        debug_assert!(!out.is_empty());
        let mut height = self.height;
        while out.len() > 1 {
            let mut up = Vec::new();
            Self::push_inners(mem, &out, &mut up);
            out = up;
            height += 1;
        }
        let mut root = out[0].1;
        while height > 0 {
            // SAFETY: above level 0 the root is an inner node of the working tree.
            let inner = unsafe { inner_ref::<U>(root) };
            if inner.len() != 1 {
                break;
            }
            let only = inner.kid(0);
            mem.discard(inner_block::<U>(root));
            root = only;
            height -= 1;
        }
        self.root = root;
        self.height = height;
    }

    #[allow(clippy::too_many_arguments)]
    fn rep(
        &mut self,
        mem: &mut Mem,
        node: NodePtr,
        level: u8,
        lo: u64,
        hi: u128,
        new: &[(U, u32)],
        out: &mut Vec<(U, NodePtr)>,
        removed: &mut u64,
    ) {
        if level == 0 {
            // SAFETY: a leaf of the working tree.
            let leaf = unsafe { leaf_ref::<U>(node) };
            let mut content: Vec<(U, u32)> = Vec::with_capacity(leaf.len() + new.len());
            for i in 0..leaf.len() {
                let (s, v) = leaf.run(i);
                let s64 = s.get();
                if s64 < lo || u128::from(s64) >= hi {
                    content.push((s, v));
                } else {
                    *removed += 1;
                    if s64 == lo {
                        content.extend_from_slice(new);
                    }
                }
            }
            mem.discard(leaf_block::<U>(node));
            Self::push_leaves(mem, &content, out);
            return;
        }
        // SAFETY: above level 0, an inner node of the working tree.
        let inner = unsafe { inner_ref::<U>(node) };
        let n = inner.len();
        let (mut a, mut b) = (
            inner.search(U::from_u64(lo)),
            inner.search(U::from_u64((hi - 1) as u64)),
        );
        // The children a..=b are replaced by `mid`.
        let mut mid: Vec<(U, NodePtr)> = Vec::with_capacity(4);
        for i in a..=b {
            let child = inner.kid(i);
            if i == a || i == b {
                self.rep(mem, child, level - 1, lo, hi, new, &mut mid, removed);
            } else {
                *removed += self.discard_subtree(mem, child, level - 1);
            }
        }
        if a == b && mid.len() == 1 && mid[0] == (inner.keys[a], inner.kid(a)) {
            // The child changed in place: nothing to do here.
            out.push((inner.keys[0], node));
            return;
        }
        if mid.iter().any(|k| Self::underfull(k.1, level - 1)) {
            // Take the neighbours in, so a small new node can merge with one.
            if a > 0 {
                a -= 1;
                mid.insert(0, (inner.keys[a], inner.kid(a)));
            }
            if b + 1 < n {
                b += 1;
                mid.push((inner.keys[b], inner.kid(b)));
            }
            let len = mid.len();
            self.rebalance(mem, level - 1, &mut mid, 0, len);
        }
        let count = n - (b - a + 1) + mid.len();
        if count <= FANOUT && count > 0 {
            // Splice in place, into this node if fresh, else into a copy of it.
            let target = if mem.is_fresh(node.addr()) {
                node
            } else {
                // SAFETY: a live inner node, allocated with inner_layout.
                let c = unsafe { clone_node(node, inner_layout::<U>()) };
                mem.created(c.addr(), inner_layout::<U>().size());
                mem.discard(inner_block::<U>(node));
                c
            };
            // SAFETY: `target` is fresh: no reader can reach it (invariant 1).
            let t = unsafe { inner_mut::<U>(target) };
            let tail = b + 1..n;
            let at = a + mid.len();
            t.keys.copy_within(tail.clone(), at);
            t.kids.copy_within(tail, at);
            for (j, &(k, p)) in mid.iter().enumerate() {
                t.keys[a + j] = k;
                t.kids[a + j] = p.raw();
            }
            fix_inner(t, count, n);
            out.push((t.keys[0], target));
            return;
        }
        let mut kids: Vec<(U, NodePtr)> = Vec::with_capacity(count);
        kids.extend(inner.entries().take(a));
        kids.extend_from_slice(&mid);
        kids.extend(inner.entries().skip(b + 1));
        mem.discard(inner_block::<U>(node));
        if !kids.is_empty() {
            Self::push_inners(mem, &kids, out);
        }
    }

    /// Change the values of consecutive runs, keeping every boundary: `runs` are
    /// (start, new value), the starts those of existing runs. The fast path for
    /// set-etr: only the leaf and the path to it are touched, and only copied if not
    /// already fresh. Returns `false` (nothing done) if the runs span two leaves.
    pub(crate) fn set_vals(&mut self, mem: &mut Mem, runs: &[(u64, u32)]) -> bool {
        let Some(&(first, _)) = runs.first() else {
            return true;
        };
        let u = U::from_u64(first);
        // 256^16 leaves is beyond any MAB, so the path fits.
        let mut path = [(self.root, 0usize); 16];
        let height = usize::from(self.height).min(path.len());
        let mut node = self.root;
        for step in path.iter_mut().take(height) {
            // SAFETY: an inner node of the working tree.
            let inner = unsafe { inner_ref::<U>(node) };
            let i = inner.search(u);
            *step = (node, i);
            node = inner.kid(i);
        }
        // SAFETY: a leaf of the working tree.
        let leaf = unsafe { leaf_ref::<U>(node) };
        let (j, start, _, _) = leaf.search(u, self.hi);
        if start != first || j + runs.len() > leaf.len() {
            return false;
        }
        debug_assert!(
            runs.iter()
                .enumerate()
                .all(|(k, r)| leaf.run(j + k).0.get() == r.0)
        );
        let layout = leaf.layout();
        let mut child = node;
        if !mem.is_fresh(node.addr()) {
            // SAFETY: a live leaf allocated with `layout`.
            child = unsafe { clone_node(node, layout) };
            mem.created(child.addr(), layout.size());
            mem.discard(Block::of(node, layout));
        }
        for (k, &(_, v)) in runs.iter().enumerate() {
            // SAFETY: `child` is fresh and has more than j + k runs.
            unsafe { leaf_set_val::<U>(child, j + k, v) };
        }
        let mut changed = child != node;
        for &(p, i) in path[..height].iter().rev() {
            if !changed {
                return true;
            }
            let mut q = p;
            if !mem.is_fresh(p.addr()) {
                // SAFETY: a live inner node.
                q = unsafe { clone_node(p, inner_layout::<U>()) };
                mem.created(q.addr(), inner_layout::<U>().size());
                mem.discard(inner_block::<U>(p));
            }
            // SAFETY: `q` is fresh.
            unsafe { inner_mut::<U>(q) }.kids[i] = child.raw();
            changed = q != p;
            child = q;
        }
        if changed {
            self.root = child;
        }
        true
    }

    /// Merge new nodes in `kids[from..to]` that are too small with a neighbour.
    fn rebalance(
        &mut self,
        mem: &mut Mem,
        level: u8,
        kids: &mut Vec<(U, NodePtr)>,
        mut from: usize,
        mut to: usize,
    ) {
        let mut p = from;
        while p < to.min(kids.len()) {
            if kids.len() < 2 || !Self::underfull(kids[p].1, level) {
                p += 1;
                continue;
            }
            let q = if p + 1 < kids.len() { p + 1 } else { p - 1 };
            let (l, r) = (p.min(q), p.max(q));
            let mut merged = Vec::with_capacity(2);
            self.merge(mem, level, kids[l].1, kids[r].1, &mut merged);
            let m = merged.len();
            kids.splice(l..=r, merged);
            from = from.min(l);
            to = to.max(r + 1) + m - 2;
            p = l;
        }
        let _ = from;
    }

    fn underfull(node: NodePtr, level: u8) -> bool {
        if level == 0 {
            // SAFETY: a leaf of the working tree.
            unsafe { leaf_ref::<U>(node) }.len() < U::LEAF_MIN
        } else {
            // SAFETY: an inner node of the working tree.
            unsafe { inner_ref::<U>(node) }.len() < INNER_MIN
        }
    }

    fn merge(
        &mut self,
        mem: &mut Mem,
        level: u8,
        a: NodePtr,
        b: NodePtr,
        out: &mut Vec<(U, NodePtr)>,
    ) {
        if level == 0 {
            let mut runs = Vec::with_capacity(2 * U::LEAF_MAX);
            for p in [a, b] {
                // SAFETY: leaves of the working tree.
                let leaf = unsafe { leaf_ref::<U>(p) };
                runs.extend((0..leaf.len()).map(|i| leaf.run(i)));
                mem.discard(leaf_block::<U>(p));
            }
            Self::push_leaves(mem, &runs, out);
        } else {
            let mut kids = Vec::with_capacity(2 * FANOUT);
            for p in [a, b] {
                // SAFETY: inner nodes of the working tree.
                kids.extend(unsafe { inner_ref::<U>(p) }.entries());
                mem.discard(inner_block::<U>(p));
            }
            Self::push_inners(mem, &kids, out);
        }
    }

    /// Discard every node of a subtree; returns the number of runs it held.
    fn discard_subtree(&mut self, mem: &mut Mem, node: NodePtr, level: u8) -> u64 {
        if level == 0 {
            // SAFETY: a leaf of the working tree.
            let n = unsafe { leaf_ref::<U>(node) }.len() as u64;
            mem.discard(leaf_block::<U>(node));
            return n;
        }
        // SAFETY: an inner node of the working tree.
        let kids: Vec<NodePtr> = unsafe { inner_ref::<U>(node) }
            .entries()
            .map(|(_, p)| p)
            .collect();
        let mut n = 0;
        for k in kids {
            n += self.discard_subtree(mem, k, level - 1);
        }
        mem.discard(inner_block::<U>(node));
        n
    }

    /// Give up the whole tree: fresh nodes are freed, the others go to `mem`'s
    /// pending list (the caller hands them to the last bag).
    pub(crate) fn discard_all(&mut self, mem: &mut Mem) {
        self.discard_subtree(mem, self.root, self.height);
    }

    /// Check the structure (tests): keys match children, runs ascend and tile,
    /// every node's size is within bounds. Returns the number of runs.
    #[cfg(test)]
    pub(crate) fn check(&self) -> u64 {
        fn walk<U: Unit>(p: NodePtr, level: u8, lo: u128, hi: u128, root: bool) -> u64 {
            if level == 0 {
                // SAFETY: a leaf of the working tree.
                let leaf = unsafe { leaf_ref::<U>(p) };
                assert!((1..=U::LEAF_MAX).contains(&leaf.len()));
                assert!(root || leaf.len() >= 1);
                assert_eq!(u128::from(leaf.run(0).0.get()), lo, "leaf key");
                for i in 1..leaf.len() {
                    assert!(leaf.run(i - 1).0 < leaf.run(i).0, "ascending");
                }
                assert!(u128::from(leaf.run(leaf.len() - 1).0.get()) < hi);
                return leaf.len() as u64;
            }
            // SAFETY: an inner node of the working tree.
            let inner = unsafe { inner_ref::<U>(p) };
            let n = inner.len();
            assert!((1..=FANOUT).contains(&n));
            assert!(root || n >= 1);
            assert_eq!(u128::from(inner.keys[0].get()), lo, "inner key");
            let mut total = 0;
            for i in 0..n {
                let khi = if i + 1 < n {
                    u128::from(inner.keys[i + 1].get())
                } else {
                    hi
                };
                total += walk::<U>(
                    inner.kid(i),
                    level - 1,
                    u128::from(inner.keys[i].get()),
                    khi,
                    false,
                );
            }
            total
        }
        let n = walk::<U>(self.root, self.height, u128::from(self.lo), self.hi, true);
        assert_eq!(n, self.runs, "run count");
        n
    }
}
