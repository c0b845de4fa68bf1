//! Node memory: blocks of a few sizes carved from 2 MiB chunks that ask the kernel
//! for transparent huge pages (`MADV_HUGEPAGE`; THP is `madvise`-only on the
//! machines this runs on, TOOLCHAIN.md).
//!
//! Why not the global allocator: every node is a multiple of 64 bytes and 64-byte
//! aligned. glibc's aligned allocation costs a search and a split per block and a
//! header per block, and its heap is not huge-page backed, so a random look-up in a
//! large table pays a TLB miss too. Here a block is a bump or a pop from a per-size
//! free list, with no header, and a look-up's pages are 2 MiB.
//!
//! Blocks of up to [`CLASS_BYTES_MAX`] bytes come from the arena; larger ones (the
//! IPv6 dictionary's chunk array when it grows) from the global allocator. Freed
//! blocks are kept for reuse by the same size; chunks are not returned to the
//! kernel. The arena is process-wide; each size has its own lock, taken once per
//! allocation or free (by the writer, or rarely by a reader dropping the last
//! reference to an old version).

use core::ptr::NonNull;
use std::alloc::{Layout, handle_alloc_error};

use parking_lot::Mutex;

/// Granularity and alignment of blocks.
const LINE: usize = 64;
/// The largest block served by the arena: an IPv6 inner node is 4,224 bytes.
pub(crate) const CLASS_BYTES_MAX: usize = 72 * LINE;
/// Bytes of one chunk: one huge page.
const CHUNK_BYTES: usize = 2 << 20;
const CLASSES: usize = CLASS_BYTES_MAX / LINE;

struct Class {
    free: Vec<NonNull<u8>>,
    bump: usize,
    end: usize,
}

// SAFETY: the pointers are exclusive claims on arena memory, handed out under the
// lock.
unsafe impl Send for Class {}

impl Class {
    const fn new() -> Class {
        Class {
            free: Vec::new(),
            bump: 0,
            end: 0,
        }
    }
}

static ARENA: [Mutex<Class>; CLASSES] = [const { Mutex::new(Class::new()) }; CLASSES];

/// Bytes of chunks mapped so far (all classes).
static MAPPED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Bytes of blocks handed out and not given back.
static IN_USE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Bytes the arena has taken from the system.
pub(crate) fn mapped_bytes() -> usize {
    MAPPED.load(core::sync::atomic::Ordering::Relaxed)
}

/// Bytes of node blocks in use (handed out, not yet given back).
pub(crate) fn in_use_bytes() -> usize {
    IN_USE.load(core::sync::atomic::Ordering::Relaxed)
}

fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().div_ceil(LINE) * LINE;
    (size > 0 && size <= CLASS_BYTES_MAX && layout.align() <= LINE).then(|| size / LINE - 1)
}

#[cfg(unix)]
fn new_chunk() -> usize {
    // Map twice the size and keep the 2 MiB-aligned middle, so the chunk can be one
    // huge page.
    let len = 2 * CHUNK_BYTES;
    // SAFETY: an anonymous private mapping; checked for failure.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        handle_alloc_error(
            Layout::from_size_align(CHUNK_BYTES, LINE).unwrap_or(Layout::new::<u8>()),
        );
    }
    let start = p as usize;
    let aligned = start.next_multiple_of(CHUNK_BYTES);
    // SAFETY: unmapping the unused head and tail of the mapping just made; the
    // aligned middle stays mapped. madvise is advice; its failure is harmless.
    unsafe {
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        let tail = start + len - (aligned + CHUNK_BYTES);
        if tail > 0 {
            libc::munmap((aligned + CHUNK_BYTES) as *mut libc::c_void, tail);
        }
        libc::madvise(
            aligned as *mut libc::c_void,
            CHUNK_BYTES,
            libc::MADV_HUGEPAGE,
        );
    }
    MAPPED.fetch_add(CHUNK_BYTES, core::sync::atomic::Ordering::Relaxed);
    aligned
}

#[cfg(not(unix))]
fn new_chunk() -> usize {
    let layout = Layout::from_size_align(CHUNK_BYTES, LINE).unwrap_or(Layout::new::<u8>());
    // SAFETY: non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    if p.is_null() {
        handle_alloc_error(layout);
    }
    MAPPED.fetch_add(CHUNK_BYTES, core::sync::atomic::Ordering::Relaxed);
    p as usize
}

/// A block for `layout` (64-byte aligned), uninitialised.
pub(crate) fn alloc(layout: Layout) -> NonNull<u8> {
    let Some(c) = class_of(layout) else {
        IN_USE.fetch_add(layout.size(), core::sync::atomic::Ordering::Relaxed);
        // SAFETY: non-zero size (every node layout has one).
        let p = unsafe { std::alloc::alloc(layout) };
        return NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout));
    };
    let size = (c + 1) * LINE;
    IN_USE.fetch_add(size, core::sync::atomic::Ordering::Relaxed);
    let mut class = ARENA[c].lock();
    if let Some(p) = class.free.pop() {
        return p;
    }
    if class.bump + size > class.end {
        let chunk = new_chunk();
        class.bump = chunk;
        class.end = chunk + CHUNK_BYTES;
    }
    let p = class.bump;
    class.bump += size;
    NonNull::new(p as *mut u8).unwrap_or_else(|| handle_alloc_error(layout))
}

/// Give back a block from [`alloc`].
///
/// # Safety
/// `p` came from [`alloc`] with the same `layout` and is not used again.
pub(crate) unsafe fn dealloc(p: NonNull<u8>, layout: Layout) {
    let Some(c) = class_of(layout) else {
        IN_USE.fetch_sub(layout.size(), core::sync::atomic::Ordering::Relaxed);
        // SAFETY: allocated by the global allocator with this layout.
        unsafe { std::alloc::dealloc(p.as_ptr(), layout) };
        return;
    };
    IN_USE.fetch_sub((c + 1) * LINE, core::sync::atomic::Ordering::Relaxed);
    if cfg!(debug_assertions) {
        // Poison: a use after free reads garbage and fails loudly in tests.
        // SAFETY: the block is the caller's to give up, `(c + 1) * LINE` bytes.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 0xdd, (c + 1) * LINE) };
    }
    ARENA[c].lock().free.push(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_reused_and_large_ones_fall_through() {
        let l = Layout::from_size_align(2112, 64).unwrap();
        let a = alloc(l);
        let b = alloc(l);
        assert_eq!(a.as_ptr() as usize % 64, 0);
        assert_ne!(a, b);
        // SAFETY: both came from alloc(l) and are not used again.
        unsafe {
            dealloc(a, l);
            let c = alloc(l);
            assert_eq!(c, a, "a freed block is reused");
            dealloc(c, l);
            dealloc(b, l);
        }
        let big = Layout::from_size_align(1 << 20, 64).unwrap();
        let p = alloc(big);
        // SAFETY: from alloc(big).
        unsafe { dealloc(p, big) };
        assert!(mapped_bytes() >= CHUNK_BYTES);
    }
}
