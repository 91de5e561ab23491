//! How `serve` keeps its resident memory near what it holds. glibc's allocator keeps freed
//! memory for reuse, one arena per thread that ever allocated (up to 8 per core), and returns
//! it to the system only from the top of each heap: after a derivation's transient allocations
//! the process stays at its high-water mark. `docs/benchmarks.md` ("Scrapes under load,
//! resident memory") has the measurements.

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
