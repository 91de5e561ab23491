//! The layering ARCHITECTURE.md describes, kept true: which module may use which.
//!
//! Read from the source text (not compiled), so a rule names the file and line that breaks it.
//! Unit-test modules (`#[cfg(test)] mod tests`, at a file's end by convention) are left out:
//! a test may build its input with the configuration parser.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Every `.rs` file under `dir`, relative to `src/`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The file's code without its unit-test module.
fn code(p: &Path) -> String {
    let text = std::fs::read_to_string(p).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// (line, the top-level module) of each `crate::X` in `text`: `use crate::X`, `crate::X::y(…)`.
fn crate_uses(text: &str) -> Vec<(usize, String)> {
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            // `deploy_journey::…`-style or `$crate::` paths are not ours.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let m: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !m.is_empty() {
                out.push((n + 1, m));
            }
        }
    }
    out
}

/// (line, crate) of each use of one of `crates` (Rust names) as a path root in `text`.
fn extern_uses(text: &str, crates: &[&str]) -> Vec<(usize, String)> {
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for c in crates {
            let pat = format!("{c}::");
            let mut rest = line;
            while let Some(i) = rest.find(&pat) {
                let before = rest[..i].chars().last();
                rest = &rest[i + pat.len()..];
                if !before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == ':') {
                    out.push((n + 1, c.to_string()));
                }
            }
        }
    }
    out
}

/// The Rust names of the crate's normal dependencies, from Cargo.toml.
fn dependencies() -> Vec<String> {
    let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let deps = toml.split("\n[dependencies]\n").nth(1).expect("[dependencies]");
    let deps = deps.split("\n[").next().unwrap();
    deps.lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .map(|k| k.replace('-', "_"))
        .collect()
}

/// Breaks of "files under `dir` use no `crate::X` for X outside `allowed`".
fn crate_breaks(dir: &str, allowed: &[&str]) -> Vec<String> {
    let mut out = vec![];
    for f in files(&Path::new(SRC).join(dir)) {
        for (line, m) in crate_uses(&code(&f)) {
            if !allowed.contains(&m.as_str()) {
                out.push(format!("src/{}:{line} uses crate::{m}", f.strip_prefix(SRC).unwrap().display()));
            }
        }
    }
    out
}

#[test]
fn the_core_uses_only_itself_the_standard_library_and_pure_matchers() {
    assert!(crate_breaks("core", &["core"]).is_empty(), "{:#?}", crate_breaks("core", &["core"]));
    // Pure libraries the core is built on (git's pathspec rules, error derives, the hotfix
    // patterns' regexes, a fixed-seed hasher, SHA-256 for the lineage index's version keys);
    // nothing that does I/O, async, clocks, HTTP, SQL or telemetry.
    let pure = ["gix_pathspec", "gix_glob", "bstr", "thiserror", "regex", "foldhash", "sha2"];
    let others: Vec<String> = dependencies().into_iter().filter(|d| !pure.contains(&d.as_str())).collect();
    assert!(others.iter().any(|d| d == "tokio") && others.iter().any(|d| d == "rusqlite"), "{others:?}");
    let names: Vec<&str> = others.iter().map(String::as_str).collect();
    let mut breaks = vec![];
    for f in files(&Path::new(SRC).join("core")) {
        for (line, c) in extern_uses(&code(&f), &names) {
            breaks.push(format!("src/{}:{line} uses {c}", f.strip_prefix(SRC).unwrap().display()));
        }
    }
    assert!(breaks.is_empty(), "the core must stay pure: {breaks:#?}");
}

#[test]
fn sources_know_only_the_core_and_sinks_never_reach_back() {
    let sources = crate_breaks("sources", &["core", "sources", "clock"]);
    assert!(
        sources.is_empty(),
        "sources/ turns API JSON into facts; it may not know sinks, the store, HTTP or the app: {sources:#?}"
    );
    let sinks: Vec<String> =
        crate_breaks("sinks", &["core", "sinks", "sources", "config", "store", "webconfig", "clock", "snapshot"]);
    assert!(
        sinks.is_empty(),
        "sinks/ read journeys and counters; they never call the app, HTTP, watch or the simulator: {sinks:#?}"
    );
}

/// No cycle between the loop and its readers: `app` writes the snapshot, `http` serves it, and
/// neither the snapshot nor the HTTP surface knows the loop.
#[test]
fn the_snapshot_and_http_do_not_know_the_app() {
    let mut breaks = vec![];
    for (file, banned) in [("http.rs", &["app"][..]), ("snapshot.rs", &["app", "http", "server", "watch"][..])] {
        for (line, m) in crate_uses(&code(&Path::new(SRC).join(file))) {
            if banned.contains(&m.as_str()) {
                breaks.push(format!("src/{file}:{line} uses crate::{m}"));
            }
        }
    }
    assert!(breaks.is_empty(), "{breaks:#?}");
}

/// `clock.rs` is the one place that reads the wall clock (the simulator keeps its own virtual
/// time); everything else takes a `Clock` or measures elapsed time with `Instant`.
#[test]
fn only_the_clock_reads_the_wall_clock() {
    let mut readers = vec![];
    for f in files(Path::new(SRC)) {
        let rel = f.strip_prefix(SRC).unwrap().to_path_buf();
        if rel.starts_with("sim") || rel == Path::new("clock.rs") {
            continue;
        }
        for (n, line) in code(&f).lines().enumerate() {
            if line.contains("SystemTime::now") && !line.trim_start().starts_with("//") {
                readers.push(format!("src/{}:{}", rel.display(), n + 1));
            }
        }
    }
    assert!(readers.is_empty(), "read the time through crate::clock: {readers:#?}");
}

#[test]
fn only_the_demo_reaches_into_the_simulator() {
    let mut users = BTreeSet::new();
    for f in files(Path::new(SRC)) {
        let rel = f.strip_prefix(SRC).unwrap().to_path_buf();
        if rel.starts_with("sim") || rel == Path::new("main.rs") {
            continue;
        }
        if crate_uses(&code(&f)).iter().any(|(_, m)| m == "sim") {
            users.insert(rel.display().to_string());
        }
    }
    assert_eq!(users, BTreeSet::from(["demo.rs".to_string()]), "the exporter never depends on its test double");
}

/// The checks above can fail: they find what they look for in text that breaks them.
#[test]
fn the_layering_checks_see_a_break() {
    let text = "use crate::core::journey::Facts;\nfn f() { crate::store::Store::open(); }\n// crate::http in a comment\nlet x = deploy_journey::crate_like;\n";
    let uses: Vec<(usize, String)> = crate_uses(text);
    assert_eq!(uses, [(1, "core".to_string()), (2, "store".to_string())]);
    let ext = extern_uses(
        "use tokio::sync::Mutex;\nlet t = my_tokio::x; rusqlite::Connection::open(p);\n",
        &["tokio", "rusqlite"],
    );
    assert_eq!(ext, [(1, "tokio".to_string()), (2, "rusqlite".to_string())]);
    assert!(dependencies().iter().any(|d| d == "gix_pathspec"), "{:?}", dependencies());
}

/// The features a plain `cargo build` gives `regex`. Tests and examples build it with their
/// dev-dependencies' features too (cargo unifies them), so a pattern the library compiles can
/// pass every test and still fail in the released binary: the scrubber's `(?i)` patterns did,
/// with a panic on the first failed build's log. Asked of `cargo tree` without dev edges.
#[test]
fn the_released_binary_has_the_regex_syntax_its_patterns_use() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-e", "normal", "-i", "regex", "--depth", "0", "-f", "{f}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    let features: BTreeSet<String> =
        String::from_utf8_lossy(&out.stdout).trim().split(',').map(|f| f.trim().to_string()).collect();
    // `(?i)` needs unicode-case, `\w`/`\s`/`\b` unicode-perl; a user's hotfix pattern may use
    // any of the regex crate's default syntax, `\p{…}` classes included.
    for need in ["unicode-case", "unicode-perl", "unicode-gencat", "unicode-script"] {
        assert!(features.contains(need), "regex is built without `{need}` outside tests: {features:?}");
    }
}

/// The binary allocates with jemalloc, and the options `memory::serve_allocator!` gives it are
/// in effect: one
/// arena, freed pages handed back at once (the resident memory figures in `docs/benchmarks.md`
/// depend on them). A misspelt `_rjem_malloc_conf` symbol would leave jemalloc's defaults
/// (4 arenas per core, pages kept 10 s) without any error; jemalloc prints its options at exit
/// when its environment asks.
#[test]
fn the_binary_allocates_with_jemalloc_configured_to_return_freed_pages() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deploy-journey"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run deploy-journey --version");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats = String::from_utf8_lossy(&out.stderr);
    for opt in ["opt.narenas: 1\n", "opt.dirty_decay_ms: 0 ", "opt.muzzy_decay_ms: 0 "] {
        assert!(stats.contains(opt), "jemalloc's statistics lack `{}`:\n{stats}", opt.trim());
    }
}
