//! The IPv6 ETR dictionary: each distinct ETR of an IPv6 table is stored once and
//! runs hold its 4-byte index, so an IPv6 run takes 12 bytes (8-byte start, 4-byte
//! index) instead of 24. Far fewer ETRs exist than micronets (an ETR is a site's
//! border router), so the dictionary is small.
//!
//! Readers see an array of 256-entry chunks through [`DictRef`]; the writer keeps the
//! map from ETR to index, reference counts, and a free list. Chunks and the chunk
//! array are copied on write and reclaimed exactly like tree nodes (`tree.rs`): an
//! index freed and reused for another ETR is written into a fresh copy of its chunk,
//! so a published version keeps reading the ETR it was built with.

use std::alloc::Layout;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::node::{Block, GAP, alloc_zeroed_block};
use super::tree::Mem;

/// Entries per chunk.
const CHUNK: usize = 256;

fn chunk_layout() -> Layout {
    Layout::new::<[u128; CHUNK]>()
}

fn top_layout(cap: usize) -> Layout {
    // cap is at most 2^24 (2^32 indices / 256); this cannot fail.
    Layout::array::<*mut u128>(cap).unwrap_or_else(|_| Layout::new::<*mut u128>())
}

/// A fast hasher for ETRs (the keys are not attacker-chosen in a way that matters:
/// a RUAS signs every set, and a collision only slows one table down).
#[derive(Default, Clone, Copy)]
pub(crate) struct EtrHash;

/// The state of [`EtrHash`].
#[derive(Default)]
pub(crate) struct EtrHasher(u64);

impl Hasher for EtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u128(&mut self, n: u128) {
        let x = (n as u64) ^ ((n >> 64) as u64).rotate_left(32);
        let h = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
}

impl BuildHasher for EtrHash {
    type Hasher = EtrHasher;
    fn build_hasher(&self) -> EtrHasher {
        EtrHasher(0)
    }
}

/// The writer's dictionary.
pub(crate) struct Dict {
    index: HashMap<u128, u32, EtrHash>,
    refs: Vec<u32>,
    vals: Vec<u128>,
    free: Vec<u32>,
    top: NonNull<*mut u128>,
    top_cap: usize,
    chunks: usize,
}

// SAFETY: the raw pointers are owned by this dictionary (and, once published, are
// immutable, node.rs invariant 1).
unsafe impl Send for Dict {}
// SAFETY: as above; `&Dict` only reads.
unsafe impl Sync for Dict {}

/// A reader's view of a dictionary, alive for `'a`.
#[derive(Clone, Copy)]
pub(crate) struct DictRef<'a> {
    top: *const *mut u128,
    chunks: usize,
    _alive: PhantomData<&'a u128>,
}

// SAFETY: read-only access to immutable memory kept alive for 'a.
unsafe impl Send for DictRef<'_> {}
// SAFETY: as above.
unsafe impl Sync for DictRef<'_> {}

impl DictRef<'_> {
    /// Start loading the entry at `idx`.
    #[inline]
    pub(crate) fn prefetch(&self, idx: u32) {
        let i = idx as usize;
        if i / CHUNK < self.chunks {
            // SAFETY: a live chunk pointer; the address is inside its chunk.
            unsafe { super::node::prefetch((*self.top.add(i / CHUNK)).add(i % CHUNK)) }
        }
    }

    /// The ETR at `idx` (0 if out of range, which a well-formed tree never asks).
    #[inline]
    pub(crate) fn get(&self, idx: u32) -> u128 {
        let i = idx as usize;
        if i / CHUNK >= self.chunks {
            return 0;
        }
        // SAFETY: `top` has `chunks` live chunk pointers (invariant 3), each chunk
        // CHUNK entries.
        unsafe { *(*self.top.add(i / CHUNK)).add(i % CHUNK) }
    }
}

/// The raw parts of a published dictionary (kept in a version).
#[derive(Clone, Copy)]
pub(crate) struct DictRaw {
    top: *const *mut u128,
    chunks: usize,
}

// SAFETY: as DictRef.
unsafe impl Send for DictRaw {}
// SAFETY: as DictRef.
unsafe impl Sync for DictRaw {}

impl DictRaw {
    /// # Safety
    /// The memory stays alive and unwritten for `'a`.
    pub(crate) unsafe fn view<'a>(self) -> DictRef<'a> {
        DictRef {
            top: self.top,
            chunks: self.chunks,
            _alive: PhantomData,
        }
    }
}

impl Dict {
    pub(crate) fn new(mem: &mut Mem) -> Dict {
        let cap = 4;
        let top = alloc_zeroed_block(top_layout(cap)).cast::<*mut u128>();
        mem.created(top.as_ptr() as usize, top_layout(cap).size());
        Dict {
            index: HashMap::default(),
            refs: Vec::new(),
            vals: Vec::new(),
            free: Vec::new(),
            top,
            top_cap: cap,
            chunks: 0,
        }
    }

    pub(crate) fn view(&self) -> DictRef<'_> {
        DictRef {
            top: self.top.as_ptr(),
            chunks: self.chunks,
            _alive: PhantomData,
        }
    }

    pub(crate) fn raw(&self) -> DictRaw {
        DictRaw {
            top: self.top.as_ptr(),
            chunks: self.chunks,
        }
    }

    /// Bytes the writer-side map, counts and values take (approximate).
    pub(crate) fn side_bytes(&self) -> usize {
        self.index.capacity() * 24 + self.refs.capacity() * 4 + self.vals.capacity() * 16
    }

    /// The index of `etr`, adding it if new; counts one more use.
    pub(crate) fn intern(&mut self, mem: &mut Mem, etr: u128) -> u32 {
        if let Some(&i) = self.index.get(&etr) {
            self.refs[i as usize] += 1;
            return i;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = self.vals.len() as u32;
                debug_assert!(i != GAP, "2^32 - 1 distinct ETRs");
                self.vals.push(0);
                self.refs.push(0);
                i
            }
        };
        self.vals[i as usize] = etr;
        self.refs[i as usize] = 1;
        self.index.insert(etr, i);
        self.write(mem, i, etr);
        i
    }

    /// One use of `idx` fewer; an unused index goes back to the free list.
    pub(crate) fn release(&mut self, idx: u32) {
        let i = idx as usize;
        if let Some(r) = self.refs.get_mut(i) {
            *r = r.saturating_sub(1);
            if *r == 0 {
                self.index.remove(&self.vals[i]);
                self.free.push(idx);
            }
        }
    }

    fn make_top_fresh(&mut self, mem: &mut Mem, cap: usize) {
        if cap == self.top_cap && mem.is_fresh(self.top.as_ptr() as usize) {
            return;
        }
        let layout = top_layout(cap);
        let new = alloc_zeroed_block(layout).cast::<*mut u128>();
        // SAFETY: both arrays have at least `chunks` entries; they do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(self.top.as_ptr(), new.as_ptr(), self.chunks);
        }
        mem.created(new.as_ptr() as usize, layout.size());
        mem.discard(Block::new(self.top.cast(), top_layout(self.top_cap)));
        self.top = new;
        self.top_cap = cap;
    }

    fn write(&mut self, mem: &mut Mem, idx: u32, etr: u128) {
        let c = idx as usize / CHUNK;
        if c >= self.chunks {
            let cap = if self.chunks == self.top_cap {
                self.top_cap * 2
            } else {
                self.top_cap
            };
            self.make_top_fresh(mem, cap);
            let chunk = alloc_zeroed_block(chunk_layout()).cast::<u128>();
            mem.created(chunk.as_ptr() as usize, chunk_layout().size());
            // SAFETY: the top array is fresh and has room for index `chunks`.
            unsafe { *self.top.as_ptr().add(self.chunks) = chunk.as_ptr() };
            self.chunks += 1;
        }
        // SAFETY: `c < chunks`, so the entry is a live chunk pointer.
        let mut chunk = unsafe { *self.top.as_ptr().add(c) };
        if !mem.is_fresh(chunk as usize) {
            self.make_top_fresh(mem, self.top_cap);
            let copy = alloc_zeroed_block(chunk_layout()).cast::<u128>();
            // SAFETY: two distinct chunks of CHUNK entries.
            unsafe {
                core::ptr::copy_nonoverlapping(chunk, copy.as_ptr(), CHUNK);
                *self.top.as_ptr().add(c) = copy.as_ptr();
            }
            mem.created(copy.as_ptr() as usize, chunk_layout().size());
            if let Some(old) = NonNull::new(chunk) {
                mem.discard(Block::new(old.cast(), chunk_layout()));
            }
            chunk = copy.as_ptr();
        }
        // SAFETY: the chunk is fresh (no reader sees it) and has CHUNK entries.
        unsafe { *chunk.add(idx as usize % CHUNK) = etr };
    }

    /// One use fewer of the index holding `etr`.
    pub(crate) fn release_etr(&mut self, etr: u128) {
        if let Some(&i) = self.index.get(&etr) {
            self.release(i);
        }
    }

    /// Give up every block (the table is going away).
    pub(crate) fn discard_all(&mut self, mem: &mut Mem) {
        for c in 0..self.chunks {
            // SAFETY: live chunk pointers.
            let p = unsafe { *self.top.as_ptr().add(c) };
            if let Some(p) = NonNull::new(p) {
                mem.discard(Block::new(p.cast(), chunk_layout()));
            }
        }
        mem.discard(Block::new(self.top.cast(), top_layout(self.top_cap)));
        self.chunks = 0;
    }
}
