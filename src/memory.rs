//! How `serve` keeps its resident memory near what it holds. The binary allocates with
//! jemalloc ([`serve_allocator!`](crate::serve_allocator): one arena, freed pages handed back at
//! once), which fragments less than glibc's allocator between poll cycles and returns what a
//! derivation freed without being asked (steady RSS 55 MiB against glibc's 65–77 MiB with a
//! year in the store, `docs/benchmarks.md`). What still uses glibc's allocator is C code
//! (SQLite): glibc keeps freed memory for reuse, one arena per thread that ever allocated (up to
//! 8 per core), and returns it to the system only from the top of each heap, hence the two
//! calls below. A library user keeps their own allocator; these calls only touch glibc's.

/// At start, before threads: at most two malloc arenas (the tokio workers and the blocking pool
/// share them; the exporter is not allocation-bound).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// After a derivation or a prune: give the freed pages of every arena back to the system.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock) and frees nothing in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `serve`'s threads run without jemalloc's thread caches once it has started. A thread keeps
/// up to 200 freed regions of each size class for quick reuse; `serve` allocates in short bursts
/// once a poll, so between them those caches are resident memory doing no work: about 3 MiB of
/// `serve`'s anonymous memory with a year in the store, for 0.8 ms more per poll cycle
/// (`docs/benchmarks.md`, session 14). The start (loading and deriving a year) keeps them: it
/// allocates all the time and would be 200 ms slower. `backfill` keeps them throughout.
///
/// A program opts in with [`lean_after_start`]; `app` says when the start is over
/// ([`started`]); each thread then drops its cache at its next [`lean_thread`]: the poll loop's
/// thread at once, the runtime's workers when they next park, blocking threads when they next
/// run a store operation or a `/metrics` rendering, or are born. A program that never opts in (a library user with
/// another allocator) never touches jemalloc.
pub fn lean_after_start() {
    LEAN.store(LEAN_WANTED, Ordering::Relaxed);
}

/// The start is over (called by `app` after its first settling): threads may drop their caches.
pub fn started() {
    if LEAN.compare_exchange(LEAN_WANTED, LEAN_ON, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        lean_thread();
    }
}

/// Drops the calling thread's jemalloc cache, once, if `serve` has started in lean mode.
pub fn lean_thread() {
    if LEAN.load(Ordering::Relaxed) != LEAN_ON || THREAD_LEAN.get() {
        return;
    }
    THREAD_LEAN.set(true);
    // SAFETY: `thread.tcache.enabled` is a bool, and writing it concerns only the calling thread
    // (its cached regions are flushed back to the arena).
    let _ = unsafe { tikv_jemalloc_ctl::raw::write(b"thread.tcache.enabled\0", false) };
}

use std::sync::atomic::{AtomicU8, Ordering};
const LEAN_WANTED: u8 = 1;
const LEAN_ON: u8 = 2;
static LEAN: AtomicU8 = AtomicU8::new(0);
thread_local! {
    static THREAD_LEAN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[doc(hidden)]
pub use tikv_jemallocator;

/// Makes jemalloc, with the options `serve` runs with, the global allocator of the program that
/// invokes it: the binary (`main.rs`) and the benchmarks that report `serve`'s figures. A macro,
/// since only a program may choose its allocator; the library leaves its users' choice alone.
/// jemalloc reads its options from the `_rjem_malloc_conf` symbol before `main`: one arena
/// (the exporter is not allocation-bound) and freed pages returned to the system at once
/// (`dirty_decay_ms:0,muzzy_decay_ms:0`) instead of after 10 s.
#[macro_export]
macro_rules! serve_allocator {
    () => {
        #[global_allocator]
        static ALLOC: $crate::memory::tikv_jemallocator::Jemalloc = $crate::memory::tikv_jemallocator::Jemalloc;

        #[allow(non_upper_case_globals)]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static malloc_conf: ::std::option::Option<&'static ::std::ffi::c_char> =
            // SAFETY: a pointer to a static NUL-terminated string, read by jemalloc as a C string.
            Some(unsafe { &*c"narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0".as_ptr() });
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcache_enabled() -> bool {
        // SAFETY: `thread.tcache.enabled` is a bool; reading it concerns only this thread.
        unsafe { tikv_jemalloc_ctl::raw::read(b"thread.tcache.enabled\0") }.unwrap()
    }

    #[test]
    fn threads_drop_their_cache_only_once_the_start_is_over() {
        let on_thread = |f: fn()| std::thread::spawn(f).join().unwrap();
        let ask = || std::thread::spawn(|| (lean_thread(), tcache_enabled()).1).join().unwrap();
        assert!(ask(), "a thread has its cache before anything opts in");
        on_thread(lean_after_start);
        assert!(ask(), "during the start, threads keep their caches");
        // `started` drops the calling thread's cache.
        assert!(!std::thread::spawn(|| (started(), tcache_enabled()).1).join().unwrap());
        assert!(!ask(), "after the start, a thread drops its cache at its next lean_thread");
        assert!(std::thread::spawn(tcache_enabled).join().unwrap(), "a thread that never asks keeps its cache");
    }
}
