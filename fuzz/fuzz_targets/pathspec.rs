//! The pathspec matcher: any `paths`/`ignore_paths` either build a filter or give an error, and
//! any file list and commit message then get an answer, never a panic. A path that matches is
//! one of the commit's files, and a filter with no pathspec matches every file.
#![no_main]

use arbitrary::Arbitrary;
use deploy_journey::core::pathspec::{GitPathFilter, emits_version, has_ci_skip_marker};

#[derive(Arbitrary, Debug)]
struct Input {
    paths: Vec<String>,
    ignore_paths: Vec<String>,
    files: Vec<String>,
    message: String,
    disable_ci_skip: bool,
}

libfuzzer_sys::fuzz_target!(|i: Input| {
    let _ = has_ci_skip_marker(&i.message);
    let Ok(filter) = GitPathFilter::new(&i.paths, &i.ignore_paths) else { return };
    let any = i.files.iter().any(|f| filter.matches_path(f));
    if filter.is_unfiltered() {
        assert!(i.files.iter().all(|f| filter.matches_path(f)), "no pathspec selects every file");
    } else {
        assert_eq!(filter.matches_commit(&i.files), any, "a commit matches when one of its files does");
    }
    let _ = emits_version(&filter, i.disable_ci_skip, &i.message, &i.files);
});
