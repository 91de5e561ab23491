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
