//! Live heap bytes, for the `turnd_heap_bytes` gauge.
//!
//! Resident memory (RSS) is what the kernel sees; it moves with the system allocator's own
//! caching and fragmentation, so a slow leak hides in it for hours. The binary installs
//! [`Counting`] as its global allocator: it forwards to the system allocator and keeps the sum
//! of the sizes of the blocks alive, which returns exactly to where it was when what was
//! allocated is freed. The relay path allocates nothing, so the one relaxed atomic add per
//! allocation costs nothing per relayed datagram.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

static LIVE: AtomicI64 = AtomicI64::new(0);

/// The system allocator, counting live bytes.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; the counter is only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

/// Bytes in live heap blocks, or `None` when [`Counting`] is not the global allocator (the
/// library used in-process by tests): nothing has been counted then.
pub fn live_bytes() -> Option<u64> {
    let n = LIVE.load(Ordering::Relaxed);
    (n > 0).then_some(n as u64)
}
