//! The pathspec matcher: any `paths`/`ignore_paths` either build a filter or give an error, and
//! any file list and commit message then get an answer, never a panic. A commit matches when
//! one of its files does, and a filter with no pathspec matches every path git could report.
//!
//! Input (text, so the seed corpus is readable): four sections separated by a line `--`:
//! `paths` (one per line), `ignore_paths`, the commit's files, its message.
#![no_main]

use deploy_journey::core::pathspec::{GitPathFilter, emits_version, has_ci_skip_marker};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, "\n--\n");
    let lines = |s: Option<&str>| -> Vec<String> { s.unwrap_or("").lines().map(str::to_string).collect() };
    let (paths, ignore_paths, files) = (lines(parts.next()), lines(parts.next()), lines(parts.next()));
    let message = parts.next().unwrap_or("");
    let _ = has_ci_skip_marker(message);
    let Ok(filter) = GitPathFilter::new(&paths, &ignore_paths) else { return };
    let any = files.iter().any(|f| filter.matches_path(f));
    if filter.is_unfiltered() {
        // Every path git could report: relative, no empty, `.` or `..` components.
        let real = |f: &&String| f.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        assert!(files.iter().filter(real).all(|f| filter.matches_path(f)), "no pathspec selects every file");
    } else {
        assert_eq!(filter.matches_commit(&files), any, "a commit matches when one of its files does");
    }
    let _ = emits_version(&filter, false, message, &files);
    let _ = emits_version(&filter, true, message, &files);
});
