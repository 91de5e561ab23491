//! A file written once, front to back, that leaves the page cache as it found it: `backfill`'s
//! output (gigabytes that `promtool` reads once, later).
//!
//! A plain buffered write leaves every byte in the page cache as a dirty page until the kernel
//! flushes it, so writing N bytes first takes N bytes of fresh memory from the system. Where
//! fresh pages are expensive (a VM whose host hands memory over on first touch, as on the 2-core
//! benchmark machine) that allocation, not the copy, is the cost: 6.8 GB took 10.6–14.8 s
//! plainly and 3.6–5.1 s written behind (`docs/benchmarks.md`, "Backfill"). Elsewhere it spares
//! the memory other programs had cached. So, every [`WINDOW`] bytes, this starts the kernel
//! writing the window just filled (`sync_file_range`), waits for the one before it, and drops
//! that one from the cache (`posix_fadvise(DONTNEED)`): at most two windows are dirty at once
//! and the pages are reused. This is what `dd oflag=nocache` and PostgreSQL's
//! `backend_flush_after` do; it is no promise of durability (there is no `fsync`).
//!
//! Where the calls do not apply (a pipe, a non-Linux system, a file system without them) the
//! first failure turns them off and the bytes are written as by `File`.

use std::fs::File;
use std::io::Write;

/// Bytes between write-behind steps: large enough that the calls cost nothing next to the copy,
/// small enough that the two dirty windows stay a few tens of MB.
pub const WINDOW: u64 = 32 << 20;

#[derive(Debug)]
pub struct WriteBehind {
    file: File,
    /// Bytes written so far (the file's length: it is written front to back from 0).
    written: u64,
    /// The end of the last window handed to the kernel.
    started: u64,
    /// False once a call failed: from then on this is a plain file.
    active: bool,
}

impl WriteBehind {
    /// Creates (or truncates) `path`.
    pub fn create(path: &std::path::Path) -> std::io::Result<WriteBehind> {
        Ok(WriteBehind::new(File::create(path)?))
    }

    /// Over an empty file opened for writing at offset 0.
    pub fn new(file: File) -> WriteBehind {
        WriteBehind { file, written: 0, started: 0, active: cfg!(target_os = "linux") }
    }

    /// Whether the write-behind calls are still in use (false after one failed).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Every full window since the last step: start writing it out, then wait for and drop the
    /// window before it.
    fn step(&mut self) {
        while self.active && self.written - self.started >= WINDOW {
            let (from, to) = (self.started, self.started + WINDOW);
            self.active = start_writeback(&self.file, from, WINDOW).is_ok()
                && (from < WINDOW || drop_written(&self.file, from - WINDOW, WINDOW).is_ok());
            self.started = to;
        }
    }
}

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        self.step();
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor and integers; the file outlives the call.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Waits until the range is on disk, then drops it from the page cache (a dirty page would not
/// be dropped, hence the wait first).
#[cfg(target_os = "linux")]
fn drop_written(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let all = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: as above; posix_fadvise is advice about the descriptor's cached pages.
    let (r, advice) = unsafe {
        (
            libc::sync_file_range(fd, offset as i64, len as i64, all),
            libc::posix_fadvise(fd, offset as i64, len as i64, libc::POSIX_FADV_DONTNEED),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // posix_fadvise returns the error number instead of setting errno.
    if advice != 0 { Err(std::io::Error::from_raw_os_error(advice)) } else { Ok(()) }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(not(target_os = "linux"))]
fn drop_written(_: &File, _: u64, _: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of the file's first `len` bytes that are in the page cache (mincore over a map).
    #[cfg(target_os = "linux")]
    fn cached_pages(path: &std::path::Path, len: usize) -> usize {
        use std::os::fd::AsRawFd;
        let f = File::open(path).unwrap();
        let page = 4096usize;
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared map of an open file, unmapped before returning; mincore
        // writes one byte per page into a vector of that many bytes.
        unsafe {
            let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0);
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
            libc::munmap(p, len);
        }
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    #[test]
    fn writes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut w = WriteBehind::create(&path).unwrap();
        let chunk: Vec<u8> = (0..=250u8).cycle().take(1 << 20).collect();
        let n = (3 * WINDOW as usize) / chunk.len() + 3;
        for _ in 0..n {
            w.write_all(&chunk).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), n * chunk.len());
        assert!(back.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
    }

    /// The point of it: what was written more than two windows ago is no longer cached. In the
    /// checkout, not `/tmp`, which may be a tmpfs: its pages are the only copy and stay.
    #[cfg(target_os = "linux")]
    #[test]
    fn drops_all_but_the_last_two_windows_from_the_page_cache() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        // SAFETY: statfs writes into the zeroed struct it is given; the path is NUL-terminated.
        let on_tmpfs = unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
            libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
        };
        if on_tmpfs {
            eprintln!("the checkout is on a tmpfs, which keeps every page; nothing to check");
            return;
        }
        let path = dir.path().join("out");
        let mut w = WriteBehind::create(&path).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        let total = 4 * WINDOW as usize;
        for _ in 0..total / chunk.len() {
            w.write_all(&chunk).unwrap();
        }
        assert!(w.is_active(), "sync_file_range and posix_fadvise work on a disk file system");
        let first_half = cached_pages(&path, total / 2);
        assert!(first_half < 16, "{first_half} pages of the first two windows still cached");
        // The plain file, for contrast, keeps what it wrote.
        let plain_path = dir.path().join("plain");
        let mut plain = File::create(&plain_path).unwrap();
        plain.write_all(&vec![b'y'; WINDOW as usize]).unwrap();
        assert!(cached_pages(&plain_path, WINDOW as usize) > (WINDOW as usize / 4096) / 2);
    }

    #[test]
    fn a_pipe_is_written_plainly() {
        let (reader, writer) = std::io::pipe().unwrap();
        let file: File = std::os::fd::OwnedFd::from(writer).into();
        let mut w = WriteBehind::new(file);
        let reading = std::thread::spawn(move || {
            let mut r = reader;
            let mut all = vec![];
            std::io::Read::read_to_end(&mut r, &mut all).unwrap();
            all.len()
        });
        let chunk = vec![b'z'; 1 << 20];
        for _ in 0..(WINDOW as usize / chunk.len() + 1) {
            w.write_all(&chunk).unwrap();
        }
        assert!(!w.is_active(), "sync_file_range on a pipe fails, and write-behind turns off");
        drop(w);
        assert_eq!(reading.join().unwrap(), WINDOW as usize + chunk.len());
    }
}
