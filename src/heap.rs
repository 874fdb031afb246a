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

/// How far resident memory may exceed the live heap (and the last trim's result) before
/// [`Trimmer`] asks the allocator to give cached memory back.
const TRIM_SLACK: u64 = 16 << 20;

/// Gives the kernel back what the system allocator keeps cached after a peak.
///
/// glibc's malloc returns freed memory to the kernel only from the top of each arena; after a
/// burst of allocations (a flood of new allocations, 40 s of cached responses) ends, the freed
/// middle stays resident: the soak test saw 40 MB of RSS over a flat 9 MB live heap. Checked
/// every few seconds off the relay path, [`Trimmer::tick`] calls `malloc_trim(0)` when RSS
/// exceeds the live heap by [`TRIM_SLACK`] more than it did right after the last trim (so
/// memory that fragmentation pins is not trimmed again and again, while a trim during a peak
/// does not stop the one after it).
#[derive(Debug, Default)]
pub struct Trimmer {
    /// How far RSS exceeded the live heap right after the last trim.
    floor: u64,
}

impl Trimmer {
    /// Trims when worthwhile; returns RSS before and after when it did.
    pub fn tick(&mut self) -> Option<(u64, u64)> {
        let live = live_bytes()?;
        let rss = resident_bytes()?;
        if !should_trim(live, rss, self.floor) {
            return None;
        }
        trim();
        let after = resident_bytes().unwrap_or(rss);
        self.floor = after.saturating_sub(live_bytes().unwrap_or(live));
        Some((rss, after))
    }
}

/// Whether RSS exceeds the live heap by more than `floor` (the excess the last trim left)
/// plus the slack.
fn should_trim(live: u64, rss: u64, floor: u64) -> bool {
    rss.saturating_sub(live) > floor.saturating_add(TRIM_SLACK)
}

/// Resident memory of this process, from `/proc/self/statm` (pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

#[cfg(unix)]
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).unwrap_or(4096)
}

#[cfg(not(unix))]
fn page_size() -> u64 {
    4096
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's) return memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn trims_only_well_above_the_live_heap_and_what_the_last_trim_left() {
        // Resident close to live: nothing cached worth giving back.
        assert!(!should_trim(9 * MB, 20 * MB, 0));
        // 31 MB cached over a 9 MB heap: trim.
        assert!(should_trim(9 * MB, 40 * MB, 0));
        // The last trim left 29 MB over the heap (fragmentation): not again until that grows.
        assert!(!should_trim(9 * MB, 40 * MB, 29 * MB));
        assert!(should_trim(9 * MB, 60 * MB, 29 * MB));
        // A trim during a peak (heap 30 MB, RSS 34 MB after it: 4 MB over) does not stop the
        // one after the peak, when the heap is back at 9 MB and RSS stayed at 40.
        assert!(should_trim(9 * MB, 40 * MB, 4 * MB));
    }

    #[test]
    fn resident_memory_is_read() {
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
