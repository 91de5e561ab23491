//! How `serve` keeps its resident memory near what it holds. The binary allocates with jemalloc
//! (`main.rs`: one arena, freed pages handed back at once), which fragments less than glibc's
//! allocator between poll cycles and returns what a derivation freed without being asked
//! (steady RSS 55 MiB against glibc's 65–77 MiB with a year in the store, `docs/benchmarks.md`).
//! What still uses glibc's allocator is C code (SQLite): glibc keeps freed memory for reuse, one
//! arena per thread that ever allocated (up to 8 per core), and returns it to the system only
//! from the top of each heap, hence the two calls below. A library user keeps their own
//! allocator; these calls only touch glibc's.

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
