//! Which commits a Concourse `git` resource emits as versions.
//!
//! concourse/git-resource's `check` lists candidate commits with
//! `git rev-list --first-parent <range> -- <paths> :!<ignore_paths>` and then drops those whose
//! message carries a skip marker. This module answers both questions for a commit described by
//! its message and its changed files (vs. first parent), without running git. It is the one
//! matcher the whole project uses: the Concourse simulator and the exporter's classifier both
//! call it, so they cannot disagree.
//!
//! # Pathspec semantics
//! The pathspecs are plain git pathspecs (no `:(glob)` magic), so: `*` and `?` also match `/`,
//! `**` behaves exactly like `*`, a pathspec that is a directory matches everything under it, a
//! trailing `/` only matches below that directory, and if every pathspec is an exclusion, git
//! implicitly includes everything. Parsing and normalisation (`./`, `a//b`, `..`, short magic
//! like `:!` and `:/`) are done by `gix-pathspec`; wildcard matching is `gix-glob`'s port of git's
//! `wildmatch` without `WM_PATHNAME`, exactly as `gix_pathspec::Search` does it.
//!
//! We do not keep a `gix_pathspec::Search` itself, for three reasons:
//! * it is neither `Send` nor `Sync` with the dependency features this crate builds with
//!   (`gix-attributes` names are `Rc<str>` unless `gix-parallel/parallel` is enabled), so a filter
//!   holding one could not live in the exporter's shared state;
//! * its matcher takes `&mut self` (it caches attribute lookups), which would force a lock or a
//!   clone per call;
//! * in gix-pathspec 0.22.1 its common-prefix shortcut treats the pathspec `.` as the literal
//!   prefix `"."`, so a `Search` of `.` (and of `.` plus exclusions) matches no ordinary path,
//!   while git matches every path. `paths: ["."]` is git-resource's default spelling.
//!
//! Instead [`GitPathFilter`] keeps the compiled `gix-glob` patterns and replays
//! `Search::pattern_matching_relative_path`'s decision procedure (exclusions first, first match
//! wins, literal directory-prefix fallback). Attribute and `icase` magic, the only parts that
//! need the `&mut` state, cannot reach this module (see below). The unit tests check the two
//! against each other on random inputs.
//!
//! # What git-resource's shell does to the patterns
//! `check` joins the patterns with spaces and `eval`s the command line with globbing off
//! (`set -f`). Word splitting, quotes, `$`, `(`, braces etc. would therefore change or break
//! the command, so [`GitPathFilter::new`] rejects patterns containing such characters instead of
//! guessing. One deliberate leniency: an `ignore_paths` entry that already starts with `:!`,
//! `:^` or `:(exclude)` is treated as the plain pattern after that prefix. (The real resource
//! would prepend another `:!`, giving `:!:!x`, which git reads as "exclude the file literally
//! named `!x`"; with `:(exclude)` the shell reports a syntax error.)

use bstr::{BStr, ByteSlice};
use gix_pathspec::attributes::glob;
use gix_pathspec::{MagicSignature, SearchMode};
use std::path::Path;

/// A compiled `paths` / `ignore_paths` pair of a git resource.
#[derive(Clone, Debug)]
pub struct GitPathFilter {
    paths: Vec<String>,
    ignore_paths: Vec<String>,
    /// Exclusions, tried first: any match vetoes the path.
    excludes: Vec<Spec>,
    /// Inclusions; empty means "everything" (git's implicit `.` when all pathspecs exclude).
    includes: Vec<Spec>,
    /// git-resource runs `rev-list` without any `--` pathspec in this case.
    unfiltered: bool,
}

/// One compiled pathspec.
#[derive(Clone, Debug)]
struct Spec {
    /// `None` when the spec covers the whole tree (`.`, or e.g. `a/..`).
    glob: Option<glob::Pattern>,
    /// Wildcard flavour; `None` for `:(literal)`. Only plain globbing is reachable today.
    wildmatch: Option<glob::wildmatch::Mode>,
}

/// Why a `paths` / `ignore_paths` entry was rejected. Every variant names the entry.
#[derive(Debug, thiserror::Error)]
pub enum PathspecError {
    /// An empty string: git rejects it (`''`), and as `:!` it would exclude everything.
    #[error("{field}[{index}] is empty")]
    Empty { field: &'static str, index: usize },
    /// A character git-resource's `eval`-ed shell command would split on or interpret.
    #[error(
        "{field} entry {pattern:?} contains {ch:?}, which git-resource's shell command line would split or interpret"
    )]
    ShellSyntax { field: &'static str, pattern: String, ch: char },
    /// Not a pathspec git accepts relative to the repository root.
    #[error("{field} entry {pattern:?} is not a valid pathspec: {reason}")]
    Invalid { field: &'static str, pattern: String, reason: String },
}

const PATHS: &str = "paths";
const IGNORE_PATHS: &str = "ignore_paths";

impl GitPathFilter {
    /// Compile a resource's `paths` and `ignore_paths` (both may be empty).
    pub fn new(paths: &[String], ignore_paths: &[String]) -> Result<Self, PathspecError> {
        let mut excludes = Vec::new();
        let mut includes = Vec::new();
        for (index, raw) in paths.iter().enumerate() {
            let (spec, excluded) = compile(PATHS, index, raw, raw)?;
            // A `paths` entry may itself be an exclusion (`:!x`); git honours that.
            (if excluded { &mut excludes } else { &mut includes }).push(spec);
        }
        for (index, raw) in ignore_paths.iter().enumerate() {
            let (spec, _) = compile(IGNORE_PATHS, index, raw, strip_exclude_magic(raw))?;
            excludes.push(spec);
        }
        // git-resource's own shortcut: the default `paths` (`["."]`, or none) with no
        // `ignore_paths` means no pathspec at all, which also lists empty commits.
        let unfiltered = ignore_paths.is_empty() && (paths.is_empty() || matches!(paths, [p] if p == "."));
        Ok(Self { paths: paths.to_vec(), ignore_paths: ignore_paths.to_vec(), excludes, includes, unfiltered })
    }

    /// Would `git rev-list -- <paths> :!<ignore_paths>` list a commit that changed exactly `files`?
    ///
    /// `files` are repo-relative, `/`-separated, as `git diff --name-only <parent> <commit>`
    /// prints them (for a root commit: every file it contains). With a pathspec, git never
    /// lists a commit that changed nothing; without one (see [`Self::is_unfiltered`]) it does.
    pub fn matches_commit<S: AsRef<str>>(&self, files: &[S]) -> bool {
        self.unfiltered || files.iter().any(|f| self.matches_path(f.as_ref()))
    }

    /// Does the pathspec select this repo-relative file path?
    ///
    /// This ignores the [`Self::is_unfiltered`] shortcut, which only matters for empty commits:
    /// with no pathspec every path matches anyway.
    pub fn matches_path(&self, path: &str) -> bool {
        let path = path.as_bytes().as_bstr();
        if path.is_empty() || path.starts_with(b"/") {
            // Not a repo-relative file path; git never reports one as changed.
            return false;
        }
        if self.excludes.iter().any(|s| s.matches(path)) {
            return false;
        }
        self.includes.is_empty() || self.includes.iter().any(|s| s.matches(path))
    }

    /// True when git-resource passes no pathspec at all: no `ignore_paths`, and `paths` empty or
    /// exactly `["."]` (its default, which it special-cases).
    pub fn is_unfiltered(&self) -> bool {
        self.unfiltered
    }

    /// The `paths` this filter was built from.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// The `ignore_paths` this filter was built from.
    pub fn ignore_paths(&self) -> &[String] {
        &self.ignore_paths
    }
}

impl Spec {
    /// `Search::pattern_matching_relative_path` for one spec, a file (not a directory), no
    /// attributes, case-sensitive.
    fn matches(&self, path: &BStr) -> bool {
        let Some(pat) = &self.glob else {
            return true;
        };
        let wildcard_hit = pat.first_wildcard_pos.is_some()
            && self.wildmatch.is_some_and(|mode| {
                pat.matches_repo_relative_path(path, None, Some(false), glob::pattern::Case::Sensitive, mode)
            });
        // Like git, a spec that did not match as a glob still matches literally, including as a
        // directory prefix (`apps/admin-panel` matches `apps/admin-panel/x`).
        wildcard_hit || matches_verbatim(pat, path)
    }
}

/// The spec text equals `path`, or is a leading directory of it.
fn matches_verbatim(pat: &glob::Pattern, path: &BStr) -> bool {
    let text = pat.text.as_bstr();
    let must_be_dir = pat.mode.contains(glob::pattern::Mode::MUST_BE_DIR);
    match path.get(text.len()) {
        // Exact match; a trailing-`/` spec never matches a file itself.
        None => !must_be_dir && path == text,
        Some(b'/') => path.starts_with(text),
        Some(_) => false,
    }
}

/// `:!x`, `:^x` and `:(exclude)x` in `ignore_paths` mean `x` (see the module docs).
fn strip_exclude_magic(raw: &str) -> &str {
    [":(exclude)", ":!", ":^"].iter().find_map(|magic| raw.strip_prefix(magic)).unwrap_or(raw)
}

/// Compile `text` (the entry `raw`, possibly with exclude magic stripped) into a spec.
/// Returns whether the spec excludes, which for `ignore_paths` is forced.
fn compile(field: &'static str, index: usize, raw: &str, text: &str) -> Result<(Spec, bool), PathspecError> {
    let invalid = |reason: String| PathspecError::Invalid { field, pattern: raw.to_owned(), reason };
    if text.is_empty() {
        return Err(PathspecError::Empty { field, index });
    }
    check_shell_safe(field, raw)?;

    let mut pattern = gix_pathspec::parse(text.as_bytes(), gix_pathspec::Defaults::default())
        .map_err(|e| invalid(format!("{e:#}")))?;
    if field == IGNORE_PATHS {
        pattern.signature |= MagicSignature::EXCLUDE;
    }
    if pattern.path().starts_with(b"/") {
        // gix would resolve it against a worktree root; git says "outside repository".
        return Err(invalid("absolute paths are outside the repository".into()));
    }
    // Both need state we do not carry; the shell check above already makes them unreachable
    // (long-form magic needs parentheses), this keeps it that way if that check ever changes.
    if !pattern.attributes.is_empty() || pattern.signature.contains(MagicSignature::ICASE) {
        return Err(invalid("attr and icase magic are not supported".into()));
    }
    pattern.normalize(Path::new(""), Path::new("")).map_err(|e| invalid(format!("{e:#}")))?;

    let glob = if pattern.always_matches() {
        None
    } else {
        // Same construction as gix_pathspec::Search: pathspecs are anchored at the root.
        // `None` here means an all-whitespace path, which the shell check has rejected.
        glob::Pattern::from_bytes_without_negation(pattern.path()).map(|mut g| {
            g.mode |= glob::pattern::Mode::ABSOLUTE;
            if pattern.signature.contains(MagicSignature::MUST_BE_DIR) {
                g.mode |= glob::pattern::Mode::MUST_BE_DIR;
            }
            g
        })
    };
    let wildmatch = match pattern.search_mode {
        SearchMode::ShellGlob => Some(glob::wildmatch::Mode::empty()),
        SearchMode::PathAwareGlob => Some(glob::wildmatch::Mode::NO_MATCH_SLASH_LITERAL),
        SearchMode::Literal => None,
    };
    Ok((Spec { glob, wildmatch }, pattern.is_excluded()))
}

/// Reject what git-resource's `echo "-- $paths $ignore_paths" | tr ...` + `eval` (with `set -f`)
/// would not pass to git verbatim.
fn check_shell_safe(field: &'static str, raw: &str) -> Result<(), PathspecError> {
    let special = |(i, ch): &(usize, char)| {
        ch.is_ascii_whitespace()
            || ch.is_control()
            || "'\"\\`$;&|<>(){}".contains(*ch)
            // Only special at the start of a word: comment and tilde expansion.
            || (*i == 0 && (*ch == '#' || *ch == '~'))
    };
    // `:(exclude)` in ignore_paths is stripped before use, so its parentheses are fine.
    let checked = if field == IGNORE_PATHS { raw.strip_prefix(":(exclude)").unwrap_or(raw) } else { raw };
    match checked.char_indices().find(special) {
        Some((_, ch)) => Err(PathspecError::ShellSyntax { field, pattern: raw.to_owned(), ch }),
        None => Ok(()),
    }
}

/// `[ci skip]` / `[skip ci]` per git-resource's rule.
///
/// `check` pipes the candidates through
/// `git rev-list --grep="\[ci\sskip\]" --grep="\[skip\sci\]" --invert-grep` (unless
/// `disable_ci_skip: true`). That is a case-sensitive POSIX basic regex matched against each
/// line of the whole message (subject and body). `\s` is one whitespace character of the C
/// locale the resource image runs in: space, `\t`, `\v`, `\f` or `\r`, never `\n` (matching is
/// per line). So `[ci  skip]`, `[CI SKIP]` and `[ci\u{a0}skip]` are not markers.
pub fn has_ci_skip_marker(message: &str) -> bool {
    let msg = message.as_bytes();
    let marker = |head: &[u8], tail: &[u8]| {
        msg.find_iter(head).any(|at| {
            let rest = &msg[at + head.len()..];
            rest.first().is_some_and(|&b| matches!(b, b' ' | b'\t' | 0x0b | 0x0c | b'\r'))
                && rest[1..].starts_with(tail)
        })
    };
    marker(b"[ci", b"skip]") || marker(b"[skip", b"ci]")
}

/// Would the git resource emit this commit as a version?
pub fn emits_version<S: AsRef<str>>(filter: &GitPathFilter, disable_ci_skip: bool, message: &str, files: &[S]) -> bool {
    filter.matches_commit(files) && (disable_ci_skip || !has_ci_skip_marker(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn filter(paths: &[&str], ignore: &[&str]) -> GitPathFilter {
        GitPathFilter::new(&strings(paths), &strings(ignore)).unwrap_or_else(|e| panic!("{paths:?} / {ignore:?}: {e}"))
    }

    #[track_caller]
    fn check(paths: &[&str], ignore: &[&str], file: &str, expected: bool) {
        let got = filter(paths, ignore).matches_path(file);
        assert_eq!(got, expected, "paths {paths:?} ignore {ignore:?} file {file:?}");
    }

    const REPO_IGNORE: &[&str] = &["ci/*[^mdxk]", "apps/**/*"];
    const ADMIN: &[&str] = &[
        "apps/admin-panel",
        "apps/admin-panel/*",
        "apps/admin-panel/**/*",
        "flake.nix",
        "flake.lock",
        "pnpm-lock.yaml",
    ];

    #[test]
    fn path_table() {
        #[rustfmt::skip]
        let table: &[(&[&str], &[&str], &str, bool)] = &[
            // lana-bank `repo`: only ignore_paths, so everything else is included.
            (&[], REPO_IGNORE, "core/credit/src/lib.rs", true),
            (&[], REPO_IGNORE, "ci/flake.nix", true),          // ends in `x`
            (&[], REPO_IGNORE, "ci/tasks/x.sh", false),        // ends in `h`, `*` crossed `/`
            (&[], REPO_IGNORE, "ci/docs/readme.md", true),     // ends in `d`
            (&[], REPO_IGNORE, "ci/k", true),
            (&[], REPO_IGNORE, "ci/a", false),
            (&[], REPO_IGNORE, "ci", true),                    // `*` needs one char before the class
            (&[], REPO_IGNORE, "apps/shared-web/x.ts", false),
            (&[], REPO_IGNORE, "apps/x", true),                // `apps/**/*` needs a second `/`
            (&[], REPO_IGNORE, "apps", true),
            (&[], REPO_IGNORE, "flake.nix", true),
            // admin-panel-src
            (ADMIN, &[], "apps/admin-panel/app/page.tsx", true),
            (ADMIN, &[], "apps/admin-panel", true),
            (ADMIN, &[], "apps/admin-panel-v2/x", false),
            (ADMIN, &[], "flake.nix", true),
            (ADMIN, &[], "ci/flake.nix", false),
            (ADMIN, &[], "apps/customer-portal/x", false),
            // dagster-src: `*` crosses `/`.
            (&["dagster/*"], &[], "dagster/a/b.py", true),
            (&["dagster/*"], &[], "dagster", false),
            (&["dagster/*"], &[], "dagsterx/a", false),
            // Directory prefixes, `./`, trailing `/`, `..`.
            (&["apps"], &[], "apps/a/b", true),
            (&["apps"], &[], "apps", true),
            (&["apps"], &[], "appsx", false),
            (&["apps/"], &[], "apps/a", true),
            (&["apps/"], &[], "apps", false),                  // a file, not a directory
            (&["./apps"], &[], "apps/a", true),
            (&["./apps/"], &[], "apps/a", true),
            (&["a/../apps"], &[], "apps/a", true),
            (&["a//b"], &[], "a/b", true),
            (&["."], &["x"], "y", true),
            (&["."], &["x"], "x", false),
            (&["./"], &[], "deep/er/file", true),
            (&[":/apps"], &[], "apps/a", true),
            // `?`, classes, `**`.
            (&["a?c"], &[], "a/c", true),                      // `?` matches `/` too
            (&["a?"], &[], "ab/c", false),                     // matching `ab` does not cover `ab/c`
            (&["[ab]*"], &[], "b/x", true),
            (&["[!ab]*"], &[], "b/x", false),
            (&["[^ab]*"], &[], "c/x", true),
            (&["a/**/b"], &[], "a/b", false),                  // no `**/` magic without :(glob)
            (&["a/**/b"], &[], "a/x/y/b", true),
            (&["**.md"], &[], "x/y.md", true),
            (&["*.md"], &[], "x/y.md", true),
            // A glob spec also matches its own text literally, like git.
            (&["a?"], &[], "a?/x", true),
            (&["a?"], &[], "ab/x", false),
            // Exclusions win; exclusion in `paths`; exclusion magic in ignore_paths is stripped.
            (&["apps"], &["apps/x"], "apps/x/y", false),
            (&["apps"], &["apps/x"], "apps/y", true),
            (&["apps", ":!apps/x"], &[], "apps/x", false),
            (&[":!apps/x"], &[], "b", true),
            (&[], &[":!apps/x"], "apps/x", false),
            (&[], &[":^apps/x"], "apps/x", false),
            (&[], &[":(exclude)apps/x"], "apps/x", false),
            (&[], &[":(exclude)apps/x"], "apps/y", true),
            (&[], &["."], "anything", false),
            // Case-sensitive.
            (&["Apps"], &[], "apps/x", false),
            // Not a file.
            (&[], &[], "", false),
        ];
        for &(paths, ignore, file, expected) in table {
            check(paths, ignore, file, expected);
        }
    }

    #[test]
    fn commit_level() {
        let repo = filter(&[], REPO_IGNORE);
        assert!(repo.matches_commit(&["ci/tasks/x.sh", "README.md"]));
        assert!(!repo.matches_commit(&["ci/tasks/x.sh", "apps/a/b"]));
        // git rev-list with a pathspec never lists a commit that changed nothing ...
        assert!(!repo.matches_commit::<&str>(&[]));
        assert!(!filter(&["."], &["x"]).matches_commit::<&str>(&[]));
        assert!(!filter(&["./"], &[]).matches_commit::<&str>(&[]));
        // ... but git-resource passes no pathspec for the default config, and then it does.
        for unfiltered in [filter(&[], &[]), filter(&["."], &[])] {
            assert!(unfiltered.is_unfiltered());
            assert!(unfiltered.matches_commit::<&str>(&[]));
            assert!(unfiltered.matches_commit(&["x"]));
        }
        assert!(!filter(&["./"], &[]).is_unfiltered());
        assert!(!filter(&[".", "."], &[]).is_unfiltered());
        assert!(!repo.is_unfiltered());
    }

    #[test]
    fn rejected_patterns_name_the_entry() {
        #[rustfmt::skip]
        let table: &[(&[&str], &[&str], &str)] = &[
            (&[""], &[], "paths[0] is empty"),
            (&[], &["ok", ""], "ignore_paths[1] is empty"),
            (&[], &[":!"], "ignore_paths[0] is empty"),
            (&["a b"], &[], "\"a b\""),
            (&["$HOME"], &[], "\"$HOME\""),
            (&[":(glob)a/*"], &[], "'('"),
            (&["apps/{a,b}"], &[], "'{'"),
            (&["#x"], &[], "'#'"),
            (&["/abs"], &[], "outside the repository"),
            (&["../x"], &[], "\"../x\" is not a valid pathspec"),
            (&[":-x"], &[], "\":-x\" is not a valid pathspec"),
        ];
        for &(paths, ignore, needle) in table {
            let err = GitPathFilter::new(&strings(paths), &strings(ignore))
                .expect_err(&format!("{paths:?} / {ignore:?} should be rejected"));
            let msg = err.to_string();
            assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
        }
    }

    #[test]
    fn ci_skip_table() {
        #[rustfmt::skip]
        let table: &[(&str, bool)] = &[
            ("chore: release 0.36.0 [ci skip] (#3437)", true),
            ("a [skip ci]", true),
            ("subject\n\nbody line\n[skip ci]\n", true),      // whole message, any line
            ("a [ci\tskip]", true),
            ("a [ci\rskip]", true),
            ("a [ci\x0bskip]", true),
            ("a [ci\x0cskip]", true),
            ("a [ci\nskip]", false),                           // per line
            ("a [ci  skip]", false),                           // exactly one whitespace
            ("a [CI SKIP]", false),                            // case-sensitive
            ("a [Skip CI]", false),
            ("a [ci\u{a0}skip]", false),                       // C locale: ASCII only
            ("a [ci_skip]", false),
            ("a [ci skip", false),
            ("ci: skip dagster tests in concourse (#3283)", false),
            ("[ci [ci skip]", true),                           // a failed candidate does not hide a later one
            ("", false),
        ];
        for &(msg, expected) in table {
            assert_eq!(has_ci_skip_marker(msg), expected, "{msg:?}");
        }
    }

    #[test]
    fn emits_version_combines_both() {
        let dagster = filter(&["dagster/*"], &[]);
        assert!(emits_version(&dagster, false, "feat", &["dagster/a.py"]));
        assert!(!emits_version(&dagster, false, "feat [ci skip]", &["dagster/a.py"]));
        assert!(emits_version(&dagster, true, "feat [ci skip]", &["dagster/a.py"]));
        assert!(!emits_version(&dagster, true, "feat", &["other"]));
    }

    #[test]
    fn filter_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GitPathFilter>();
        assert_send_sync::<PathspecError>();
    }

    // Our replay of gix_pathspec::Search must agree with Search itself.

    fn arb_segment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "ab", "ci", "apps", "x.md", "k", "flake.nix", "a*"])
    }

    fn arb_path() -> impl Strategy<Value = String> {
        prop::collection::vec(arb_segment(), 1..=4).prop_map(|v| v.join("/"))
    }

    fn arb_spec() -> impl Strategy<Value = String> {
        let tail = prop::sample::select(vec![
            "",
            "/",
            "/*",
            "/**",
            "/**/*",
            "*",
            "?",
            "/?",
            "/*[^mdxk]",
            "/[ab]*",
            "/[!a]",
            "*.md",
            "/**/b",
        ]);
        let lead = prop::sample::select(vec!["", "./", ":/", ":!"]);
        (lead, prop::collection::vec(arb_segment(), 0..=2), tail).prop_filter_map(
            "empty or absolute spec",
            |(lead, segs, tail)| {
                let rest = format!("{}{tail}", segs.join("/"));
                (!rest.is_empty() && !rest.starts_with('/')).then(|| format!("{lead}{rest}"))
            },
        )
    }

    fn search_says(paths: &[String], ignore: &[String], path: &str) -> bool {
        let parse = |s: &str| gix_pathspec::parse(s.as_bytes(), Default::default()).ok();
        let specs = paths
            .iter()
            .map(|p| parse(p))
            .chain(ignore.iter().map(|p| {
                parse(strip_exclude_magic(p)).map(|mut p| {
                    p.signature |= MagicSignature::EXCLUDE;
                    p
                })
            }))
            .collect::<Option<Vec<_>>>()
            .expect("generated specs parse");
        let mut search =
            gix_pathspec::Search::from_specs(specs, None, Path::new("")).expect("generated specs normalise");
        search
            .pattern_matching_relative_path(path.into(), Some(false), &mut |_, _, _, _| false)
            .is_some_and(|m| !m.is_excluded())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn agrees_with_gix_pathspec_search(
            paths in prop::collection::vec(arb_spec(), 0..=3),
            ignore in prop::collection::vec(arb_spec(), 0..=3),
            files in prop::collection::vec(arb_path(), 1..=8),
        ) {
            let f = GitPathFilter::new(&paths, &ignore).expect("generated specs compile");
            for file in &files {
                prop_assert_eq!(
                    f.matches_path(file),
                    search_says(&paths, &ignore, file),
                    "paths {:?} ignore {:?} file {:?}", paths, ignore, file
                );
            }
        }
    }
}
