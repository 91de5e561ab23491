//! `core::pathspec` against the truth: recorded `git rev-list` results for lana-bank's main
//! branch, and a real `git` on randomly generated repositories.

use deploy_journey::core::pathspec::{GitPathFilter, emits_version, has_ci_skip_marker};
use proptest::prelude::*;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

const REPO: &str = "repo";
const ADMIN: &str = "admin-panel-src";
const CUSTOMER: &str = "customer-portal-src";
const DAGSTER: &str = "dagster-src";

/// lana-bank's Concourse git resources (`paths`, `ignore_paths`), as configured there.
fn lana_resources() -> Vec<(&'static str, Vec<String>, Vec<String>)> {
    let app = |name: &str| {
        vec![
            format!("apps/{name}"),
            format!("apps/{name}/*"),
            format!("apps/{name}/**/*"),
            "flake.nix".to_owned(),
            "flake.lock".to_owned(),
            "pnpm-lock.yaml".to_owned(),
        ]
    };
    vec![
        (REPO, vec![], strings(&["ci/*[^mdxk]", "apps/**/*"])),
        (ADMIN, app("admin-panel"), vec![]),
        (CUSTOMER, app("customer-portal"), vec![]),
        (DAGSTER, strings(&["dagster/*"]), vec![]),
    ]
}

fn lana_filters() -> Vec<(&'static str, GitPathFilter)> {
    lana_resources()
        .into_iter()
        .map(|(name, paths, ignore)| {
            let filter = GitPathFilter::new(&paths, &ignore).unwrap_or_else(|e| panic!("lana resource {name}: {e}"));
            (name, filter)
        })
        .collect()
}

#[derive(Deserialize)]
struct RecordedCommit {
    sha: String,
    subject: String,
    ci_skip: bool,
    files: Vec<String>,
    pathspec_match: BTreeMap<String, bool>,
}

#[test]
fn replay_lana_bank_main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lana-bank-main.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let filters = lana_filters();

    let (mut lines, mut pairs, mut agreed) = (0, 0, 0);
    let mut mismatches = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let c: RecordedCommit =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), n + 1));
        lines += 1;

        // The file only records subjects; the rule looks at the whole message, so this also
        // checks that no skip decision hinged on a body.
        if has_ci_skip_marker(&c.subject) != c.ci_skip {
            mismatches.push(format!(
                "{} ci_skip: recorded {} but subject {:?} says {}",
                c.sha, c.ci_skip, c.subject, !c.ci_skip
            ));
        }
        for (name, filter) in &filters {
            pairs += 1;
            let Some(&expected) = c.pathspec_match.get(*name) else {
                mismatches.push(format!("{} {name}: no recorded pathspec_match", c.sha));
                continue;
            };
            let got = filter.matches_commit(&c.files);
            let emits = emits_version(filter, false, &c.subject, &c.files);
            let emits_expected = expected && !c.ci_skip;
            if got == expected && emits == emits_expected {
                agreed += 1;
            } else {
                mismatches.push(format!(
                    "{} {name}: matches_commit {got} (git: {expected}), emits_version {emits} \
                     (expected {emits_expected}); files {:?}",
                    c.sha, c.files
                ));
            }
        }
    }
    eprintln!("replay: {agreed}/{pairs} commit×resource pairs agree over {lines} commits");
    assert_eq!(lines, 2178, "fixture size changed");
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Real git.

/// `git` isolated from the user's and system configuration and from pathspec env switches.
fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).env("GIT_CONFIG_GLOBAL", "/dev/null").env("GIT_CONFIG_NOSYSTEM", "1").env("LC_ALL", "C");
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_LITERAL_PATHSPECS",
        "GIT_GLOB_PATHSPECS",
        "GIT_NOGLOB_PATHSPECS",
        "GIT_ICASE_PATHSPECS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(mut cmd: Command, stdin: Option<&[u8]>) -> String {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input).expect("writing to git");
    }
    let out = child.wait_with_output().expect("waiting for git");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("git output is UTF-8")
}

/// One change in a commit: write new content to `path`, or delete it if it exists.
#[derive(Clone, Debug)]
struct Op {
    path: String,
    delete: bool,
}

/// A throwaway bare repository with a linear `main`; commit `i` has subject `c{i}`.
struct Repo {
    dir: tempfile::TempDir,
    /// Per commit, the paths that differ from its parent (what `matches_commit` gets).
    changed: Vec<Vec<String>>,
}

impl Repo {
    /// Build all commits with a single `git fast-import`, which keeps a proptest case cheap.
    fn build(commits: &[Vec<Op>]) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut init = git(dir.path());
        init.args(["init", "-q", "--bare", "-b", "main"]);
        run(init, None);

        let mut stream = Vec::new();
        let mut existing = BTreeSet::new();
        let mut changed = Vec::new();
        for (i, ops) in commits.iter().enumerate() {
            let msg = format!("c{i}\n");
            write!(
                stream,
                "commit refs/heads/main\ncommitter t <t@t> {} +0000\ndata {}\n{msg}",
                1_700_000_000 + i,
                msg.len()
            )
            .expect("writing to a Vec");
            let mut touched = BTreeSet::new();
            for op in ops {
                // Only the first op on a path counts, so every touched path really changes.
                if !touched.insert(op.path.clone()) {
                    continue;
                }
                if op.delete && existing.remove(&op.path) {
                    writeln!(stream, "D {}", op.path).expect("writing to a Vec");
                } else {
                    existing.insert(op.path.clone());
                    let content = format!("{i}\n");
                    write!(stream, "M 100644 inline {}\ndata {}\n{content}", op.path, content.len())
                        .expect("writing to a Vec");
                }
            }
            changed.push(touched.into_iter().collect());
        }
        let mut import = git(dir.path());
        import.args(["fast-import", "--quiet", "--done"]);
        stream.extend_from_slice(b"done\n");
        run(import, Some(&stream));
        Repo { dir, changed }
    }

    /// Indices of the commits git-resource's `git rev-list --first-parent` would list.
    fn listed(&self, paths: &[String], ignore: &[String]) -> BTreeSet<usize> {
        let mut cmd = git(self.dir.path());
        cmd.args(["rev-list", "--first-parent", "--format=%s", "main"]);
        // Mirror assets/check: `paths` defaults to `.`; no `--` at all for the default config.
        let default_paths = paths.is_empty() || matches!(paths, [p] if p == ".");
        if !(default_paths && ignore.is_empty()) {
            cmd.arg("--");
            if paths.is_empty() {
                cmd.arg(".");
            }
            cmd.args(paths);
            cmd.args(ignore.iter().map(|p| format!(":!{p}")));
        }
        run(cmd, None)
            .lines()
            .filter(|l| !l.starts_with("commit "))
            .map(|l| {
                l.strip_prefix('c')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected rev-list line {l:?}"))
            })
            .collect()
    }

    /// Indices of the commits `matches_commit` selects.
    fn predicted(&self, filter: &GitPathFilter) -> BTreeSet<usize> {
        (0..self.changed.len()).filter(|&i| filter.matches_commit(&self.changed[i])).collect()
    }
}

/// Fixed cases worth keeping visible, checked against both the expectation and real git.
#[test]
fn lana_regressions_against_git() {
    #[rustfmt::skip]
    let table: &[(&str, [bool; 4])] = &[
        //                                       repo   admin  customer dagster
        ("ci/flake.nix",                        [true,  false, false, false]),
        ("ci/tasks/x.sh",                       [false, false, false, false]),
        ("ci/vendir.yml",                       [false, false, false, false]),
        ("ci/docs/readme.md",                   [true,  false, false, false]),
        ("ci/x.md",                             [true,  false, false, false]),
        ("apps/shared-web/x.ts",                [false, false, false, false]),
        ("apps/admin-panel/app/page.tsx",       [false, true,  false, false]),
        ("apps/customer-portal/i18n.lock",      [false, false, true,  false]),
        ("apps/README.md",                      [true,  false, false, false]),
        ("dagster/a/b.py",                      [true,  false, false, true ]),
        ("dagster/definitions.py",              [true,  false, false, true ]),
        ("flake.nix",                           [true,  true,  true,  false]),
        ("pnpm-lock.yaml",                      [true,  true,  true,  false]),
        ("core/credit/src/lib.rs",              [true,  false, false, false]),
    ];
    let resources = lana_resources();
    let commits: Vec<Vec<Op>> =
        table.iter().map(|(file, _)| vec![Op { path: (*file).to_owned(), delete: false }]).collect();
    let repo = Repo::build(&commits);

    let mut failures = Vec::new();
    for (r, (name, paths, ignore)) in resources.iter().enumerate() {
        let filter = GitPathFilter::new(paths, ignore).expect("lana config compiles");
        let by_git = repo.listed(paths, ignore);
        for (i, (file, expected)) in table.iter().enumerate() {
            let ours = filter.matches_commit(&[file]);
            let gits = by_git.contains(&i);
            if ours != expected[r] || gits != expected[r] {
                failures.push(format!("{file} / {name}: table {}, matches_commit {ours}, git {gits}", expected[r]));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn empty_commit_is_listed_only_without_pathspec() {
    let repo = Repo::build(&[
        vec![Op { path: "a/x.md".into(), delete: false }],
        vec![],
        vec![Op { path: "a/x.md".into(), delete: true }],
    ]);
    let cases: &[(&[&str], &[&str])] = &[(&[], &[]), (&["."], &[]), (&["./"], &[]), (&[], &["b"])];
    for &(paths, ignore) in cases {
        let (paths, ignore) = (strings(paths), strings(ignore));
        let filter = GitPathFilter::new(&paths, &ignore).expect("compiles");
        let listed = repo.listed(&paths, &ignore);
        assert_eq!(repo.predicted(&filter), listed, "paths {paths:?} ignore {ignore:?}");
        assert_eq!(listed.contains(&1), filter.is_unfiltered(), "{paths:?} {ignore:?}");
    }
}

// Names are either directories or files, never both, so generated commits cannot collide.
const DIRS: &[&str] = &["ci", "apps", "admin-panel", "dagster", "docs", "tasks", "a", "ab", "k", "a?"];
const FILES: &[&str] = &["a.md", "x.yml", "flake.nix", "flake.lock", "readme.md", "b.py", "x.sh", "d", "x", "m.k"];

fn arb_dirs(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(DIRS), len).prop_map(|v| v.join("/"))
}

/// A file path 1–4 segments deep.
fn arb_path() -> impl Strategy<Value = String> {
    (arb_dirs(0..=3), prop::sample::select(FILES))
        .prop_map(|(d, f)| if d.is_empty() { f.to_owned() } else { format!("{d}/{f}") })
}

fn arb_glob_tail() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "*", "**", "*/*", "**/*", "*.md", "?", "??", "*[^mdxk]", "*[mdxk]", "[!a]*", "[a-c]*", "a*", "*a*", "x.?ml",
        "[^.]*", "**/*.py", "flake.*", "*/x", "**/x", "*[!d]", "d*", "*/",
    ])
}

/// A pathspec as it could appear in `paths` or `ignore_paths`. Half of the literal ones are
/// taken from `used` (paths the commits touch), so exact and prefix matches actually occur.
fn arb_spec(used: Vec<String>) -> impl Strategy<Value = String> {
    let used_file = prop::sample::select(used);
    let parent = |p: String| match p.rsplit_once('/') {
        Some((dir, _)) => dir.to_owned(),
        None => p,
    };
    let body = prop_oneof![
        2 => arb_path(),
        3 => used_file.clone(),
        // A file's path with a trailing `/` must not match the file itself.
        2 => used_file.clone().prop_map(|p| format!("{p}/")),
        2 => (used_file.clone(), any::<bool>()).prop_map(move |(p, slash)| {
            let dir = parent(p);
            if slash { format!("{dir}/") } else { dir }
        }),
        2 => (arb_dirs(1..=3), any::<bool>())
            .prop_map(|(d, slash)| if slash { format!("{d}/") } else { d }),
        5 => (arb_dirs(0..=2), arb_glob_tail())
            .prop_map(|(d, g)| if d.is_empty() { g.to_owned() } else { format!("{d}/{g}") }),
        1 => Just(".".to_owned()),
    ];
    (body, prop::sample::select(vec!["", "", "", "./"])).prop_map(|(b, lead)| format!("{lead}{b}"))
}

/// `paths` entries may themselves be exclusions.
fn arb_path_entry(used: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => arb_spec(used.clone()),
        1 => arb_spec(used).prop_map(|s| format!(":!{s}")),
    ]
}

/// Commits, then `paths` and `ignore_paths` that refer to what the commits touch.
fn arb_case() -> impl Strategy<Value = (Vec<Vec<Op>>, Vec<String>, Vec<String>)> {
    let op = (arb_path(), prop::bool::weighted(0.2)).prop_map(|(path, delete)| Op { path, delete });
    prop::collection::vec(prop::collection::vec(op, 0..=3), 3..=10).prop_flat_map(|commits| {
        let mut used: Vec<String> = commits.iter().flatten().map(|op| op.path.clone()).collect();
        if used.is_empty() {
            used.push("ci/a.md".to_owned()); // `select` needs one; any path will do
        }
        (
            Just(commits),
            prop::collection::vec(arb_path_entry(used.clone()), 0..=3),
            prop::collection::vec(arb_spec(used), 0..=3),
        )
    })
}

fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: proptest_cases(),
        // Do not write regression files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn matches_commit_agrees_with_git_rev_list((commits, paths, ignore) in arb_case()) {
        let filter = GitPathFilter::new(&paths, &ignore).expect("generated specs compile");
        let repo = Repo::build(&commits);
        let by_git = repo.listed(&paths, &ignore);
        let ours = repo.predicted(&filter);
        prop_assert_eq!(
            &ours, &by_git,
            "paths {:?} ignore {:?}\nchanged per commit: {:?}", paths, ignore, repo.changed
        );
    }
}
