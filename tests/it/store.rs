//! The SQLite store on real files: persistence, errors that name the file, crash safety under
//! SIGKILL, equivalence with the core's in-memory merge, and the load time of a year of lana.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use deploy_journey::core::journey::{BuildFact, BuildId, BuildStatus, CommitFact, Fact, Facts, Version, VersionFact};
use deploy_journey::store::{Store, StoreError};
use proptest::prelude::*;

fn sha(n: i64) -> String {
    format!("{n:040x}")
}

fn commit(n: i64) -> CommitFact {
    CommitFact {
        sha: sha(n),
        parent: (n > 0).then(|| sha(n - 1)),
        author: "Alice Doe".into(),
        author_date: 1_772_438_400 + n * 600,
        committer_date: 1_772_438_400 + n * 600 + 30,
        message: format!("feat: change number {n} (#{n})\n\nSigned-off-by: Alice <alice@example.com>"),
        files: vec![format!("core/credit/src/module_{n}.rs"), "lana/app/src/lib.rs".into()],
        first_seen: 1_772_438_400 + n * 600 + 45,
    }
}

fn version(step: &str, key: &str, value: String, message: Option<String>) -> VersionFact {
    VersionFact {
        step: step.into(),
        resource: step.into(),
        version: Version::from_iter([(key.to_string(), value)]),
        message,
    }
}

fn build(id: BuildId, status: BuildStatus, known: bool) -> BuildFact {
    let start = 1_772_438_400 + id * 60;
    BuildFact {
        id,
        pipeline: "lana-bank".into(),
        job: ["build-rc", "test-integration", "test-bats"][(id % 3) as usize].into(),
        name: id.to_string().into(),
        status,
        start: (status != BuildStatus::Pending).then_some(start),
        end: status.is_finished().then_some(start + 900),
        rerun_of: None,
        url: format!("https://ci.example.com/teams/dev/pipelines/lana-bank/jobs/build-rc/builds/{id}").into(),
        inputs: if known { vec![version("repo", "ref", sha(id), Some(format!("feat: {id}")))] } else { vec![] },
        outputs: if known { vec![version("image", "digest", format!("sha256:{id:064x}"), None)] } else { vec![] },
        resources_known: known,
    }
}

fn assert_same(got: &Facts, want: &Facts) {
    assert_eq!(got.commits, want.commits, "commits");
    assert_eq!(got.builds, want.builds, "builds");
    assert_eq!(got.vanished, want.vanished, "vanished");
}

#[test]
fn facts_cursors_and_marks_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journey.sqlite");
    let facts: Vec<Fact> = (0..5)
        .map(|n| Fact::Commit(commit(n)))
        .chain((1..=6).map(|id| Fact::Build(build(id, BuildStatus::Succeeded, true))))
        .chain([Fact::Vanished { sha: sha(4), at: 99 }])
        .collect();
    {
        let mut s = Store::open(&path).unwrap();
        s.apply(&facts).unwrap();
        s.set_kv_many(&[("github.etag", "W/\"abc\""), ("github.head", &sha(4))]).unwrap();
        s.mark("span", &[sha(1), sha(2)], 10).unwrap();
    }
    // Another connection sees WAL mode (it is a property of the file).
    let raw = rusqlite::Connection::open(&path).unwrap();
    let mode: String = raw.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    drop(raw);

    let mut s = Store::open(&path).unwrap();
    let mut want = Facts::default();
    for f in &facts {
        want.apply(f.clone());
    }
    assert_same(&s.load().unwrap(), &want);
    assert_eq!(s.get_kv("github.head").unwrap(), Some(sha(4)));
    assert_eq!(s.mark("span", &[sha(2), sha(3)], 11).unwrap(), vec![sha(3)]);
    let st = s.stats().unwrap();
    assert_eq!((st.commits, st.builds, st.vanished, st.kv, st.marks), (5, 6, 1, 2, 3));
}

#[test]
fn a_damaged_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();

    // Not a database at all.
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(&junk, b"this is not an SQLite file, it only has a name like one".repeat(100)).unwrap();
    let e = Store::open(&junk).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains(&junk.display().to_string()), "{e}");

    // A real store whose pages were overwritten: opening or reading fails, naming the file.
    let path = dir.path().join("damaged.sqlite");
    {
        let mut s = Store::open(&path).unwrap();
        let facts: Vec<Fact> = (1..=400).map(|id| Fact::Build(build(id, BuildStatus::Succeeded, true))).collect();
        s.apply(&facts).unwrap();
    } // closing the last connection checkpoints the WAL into the file
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 16 * 4096, "{}", bytes.len());
    let len = bytes.len();
    bytes[4096..len - 4096].fill(0xa5);
    std::fs::write(&path, &bytes).unwrap();
    let e = match Store::open(&path) {
        Err(e) => e,
        Ok(s) => s.load().err().or_else(|| s.stats().err()).expect("reading a damaged file fails"),
    };
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(matches!(e, StoreError::Corrupt { .. } | StoreError::Damaged { .. }), "{e:?}");

    // A directory that does not exist.
    let missing = dir.path().join("no/such/dir/x.sqlite");
    let e = Store::open(&missing).unwrap_err();
    assert!(e.to_string().contains("no/such/dir/x.sqlite"), "{e}");
}

#[test]
fn a_json_column_that_does_not_decode_names_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journey.sqlite");
    let mut s = Store::open(&path).unwrap();
    s.apply(&[Fact::Build(build(7, BuildStatus::Succeeded, true)), Fact::Commit(commit(3))]).unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE builds SET inputs_json = '[{\"step\":\"repo\"}]' WHERE id = 7", []).unwrap();
    let e = s.load().unwrap_err();
    assert!(matches!(e, StoreError::Decode { table: "builds", column: "inputs_json", .. }), "{e:?}");
    assert!(e.to_string().contains("table builds, key 7"), "{e}");
    raw.execute("UPDATE builds SET inputs_json = '[]'", []).unwrap();
    raw.execute("UPDATE commits SET files_json = 'not json'", []).unwrap();
    let e = s.load().unwrap_err();
    assert!(e.to_string().contains(&format!("table commits, key {}", sha(3))), "{e}");
}

// ------------------------------------------------------------------ crash safety

const CHILD_ENV: &str = "DEPLOY_JOURNEY_STORE_CRASH_WRITER";
const BATCH: i64 = 10;

/// Batch `j`: commit `j`, builds `j*BATCH..` started, and the builds of batch `j-1` finished.
fn crash_batch(j: i64) -> Vec<Fact> {
    let mut v = vec![Fact::Commit(commit(j))];
    v.extend((0..BATCH).map(|k| Fact::Build(build(j * BATCH + k, BuildStatus::Started, false))));
    if j > 0 {
        v.extend((0..BATCH).map(|k| Fact::Build(build((j - 1) * BATCH + k, BuildStatus::Succeeded, true))));
    }
    v
}

/// Not a test on its own: the writer process of `committed_transactions_survive_sigkill`, which
/// runs this test binary again with [`CHILD_ENV`] set to the database path.
#[test]
fn crash_writer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let mut s = Store::open(Path::new(&path)).unwrap();
    // Resume after the last batch whose cursor was written; a batch written without its cursor
    // is simply applied again (facts are idempotent, marks report nothing new).
    let start = s.get_kv("cursor").unwrap().map_or(0, |c| c.parse::<i64>().unwrap() + 1);
    for j in start..start + 1_000_000 {
        s.apply(&crash_batch(j)).unwrap();
        s.mark("exported", &[sha(j)], j).unwrap();
        s.set_kv("cursor", &j.to_string()).unwrap();
        println!("@@committed {j}");
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn committed_transactions_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.sqlite");
    let mut acknowledged = -1i64;
    for round in 0..3 {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["store::crash_writer_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().unwrap();
        let target = acknowledged + 60 + 37 * round;
        let mut seen = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let Some(at) = line.find("@@committed ") else { continue };
            let n: i64 = line[at + "@@committed ".len()..].trim().parse().unwrap();
            seen = Some(n);
            if n >= target {
                // SIGKILL while the writer is in the middle of its next transactions.
                child.0.kill().unwrap();
                break;
            }
        }
        let status = child.0.wait().unwrap();
        let n = seen.expect("the writer committed something");
        assert!(n >= target, "the writer stopped at {n} before {target}: {status:?}");
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "{status:?}");
        }
        acknowledged = n;

        let s = Store::open(&path).unwrap();
        assert_eq!(s.integrity_check().unwrap(), vec!["ok".to_string()]);
        let facts = s.load().unwrap();
        let max_batch = facts.builds.keys().max().unwrap() / BATCH;
        assert!(max_batch >= acknowledged, "batch {acknowledged} was acknowledged, the file ends at {max_batch}");
        // Every batch is there whole, or not at all: the last one started, all before it finished.
        assert_eq!(facts.builds.len() as i64, (max_batch + 1) * BATCH);
        for (id, b) in &facts.builds {
            let want = if id / BATCH == max_batch { BuildStatus::Started } else { BuildStatus::Succeeded };
            assert_eq!(b.status, want, "build {id} (last batch {max_batch})");
        }
        assert_eq!(facts.commits.len() as i64, max_batch + 1);
        let marks = s.marks("exported").unwrap();
        assert!((0..=acknowledged).all(|j| marks.contains(&sha(j))), "a mark before {acknowledged} is missing");
        let cursor: i64 = s.get_kv("cursor").unwrap().unwrap().parse().unwrap();
        assert!(cursor >= acknowledged, "cursor {cursor} < {acknowledged}");
        eprintln!(
            "round {round}: killed after {acknowledged}; the file holds batches 0..={max_batch}, cursor {cursor}"
        );
    }
}

// ------------------------------------------------------------------ equivalence with the core

#[derive(Debug, Clone)]
enum Step {
    Build {
        id: i64,
        status: usize,
        start: Option<i64>,
        end: Option<i64>,
        known: bool,
        msgs: u8,
        ins: usize,
        outs: usize,
        rerun: bool,
    },
    Commit {
        n: i64,
        variant: u8,
        first_seen: i64,
    },
    Vanished {
        n: i64,
        at: i64,
    },
}

const STATUSES: [BuildStatus; 6] = [
    BuildStatus::Pending,
    BuildStatus::Started,
    BuildStatus::Succeeded,
    BuildStatus::Failed,
    BuildStatus::Errored,
    BuildStatus::Aborted,
];

fn step() -> impl Strategy<Value = Step> {
    let time = || proptest::option::of(0i64..3);
    let build = (0i64..6, 0usize..6, time(), time(), any::<bool>(), any::<u8>(), 0usize..4, 0usize..3, any::<bool>())
        .prop_map(|(id, status, start, end, known, msgs, ins, outs, rerun)| Step::Build {
            id,
            status,
            start,
            end,
            known,
            msgs,
            ins,
            outs,
            rerun,
        });
    prop_oneof![
        4 => build,
        2 => (0i64..5, 0u8..3, 0i64..4).prop_map(|(n, variant, first_seen)| Step::Commit { n, variant, first_seen }),
        1 => (0i64..5, 0i64..4).prop_map(|(n, at)| Step::Vanished { n, at }),
    ]
}

/// A fact from a step: sightings of the same build share their versions, except that a sighting
/// may lack some messages, some inputs or outputs, or not know its resources yet.
fn fact(s: &Step) -> Fact {
    match *s {
        Step::Build { id, status, start, end, known, msgs, ins, outs, rerun } => {
            let input = |i: usize| VersionFact {
                step: ["repo", "admin-panel-src", "deployments"][i].into(),
                resource: ["lana-repo", "admin-panel-src", "galoy-deployments"][i].into(),
                version: Version::from_iter([
                    ("ref".to_string(), format!("{id}-{i}")),
                    ("committed \"at\"".to_string(), "ü\n".to_string()),
                ]),
                message: (msgs & (1 << i) == 0).then(|| format!("feat: ✓ {i} \"quoted\"\n\n[ci skip]\\ {id}")),
            };
            let output = |i: usize| VersionFact {
                step: format!("image-{i}"),
                resource: "lana-image".into(),
                version: Version::from_iter([("digest", format!("sha256:{id}{i}"))]),
                message: None,
            };
            Fact::Build(BuildFact {
                id,
                pipeline: "lana-bank".into(),
                job: format!("job-{}", id % 2).into(),
                name: format!("{id}").into(),
                status: STATUSES[status],
                start: start.map(|t| 100 + t),
                end: end.map(|t| 1000 + t),
                rerun_of: rerun.then_some(id - 1),
                url: format!("https://ci/builds/{id}").into(),
                inputs: if known { (0..ins).map(input).collect() } else { vec![] },
                outputs: if known { (0..outs).map(output).collect() } else { vec![] },
                resources_known: known,
            })
        }
        Step::Commit { n, variant, first_seen } => {
            let mut c = commit(n);
            c.first_seen = first_seen;
            c.author = format!("author {variant}");
            c.message = format!("{}\nvariant {variant}", c.message);
            if variant == 2 {
                c.files.clear();
                c.parent = None;
            }
            Fact::Commit(c)
        }
        Step::Vanished { n, at } => Fact::Vanished { sha: sha(n), at },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Any sequence of facts, applied to the store in any split into transactions, loads back as
    /// the core's `Facts` after applying the same sequence; and re-applying changes nothing.
    #[test]
    fn store_merges_like_the_core(
        steps in proptest::collection::vec(step(), 1..50),
        chunks in proptest::collection::vec(1usize..8, 1..8),
    ) {
        let facts: Vec<Fact> = steps.iter().map(fact).collect();
        let mut want = Facts::default();
        for f in &facts {
            want.apply(f.clone());
        }
        let mut store = Store::open_in_memory().unwrap();
        let mut rest = &facts[..];
        for n in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*n).min(rest.len()));
            store.apply(now).unwrap();
            rest = later;
        }
        let got = store.load().unwrap();
        prop_assert_eq!(&got.commits, &want.commits);
        prop_assert_eq!(&got.builds, &want.builds);
        prop_assert_eq!(&got.vanished, &want.vanished);

        // Duplicates, shuffled: the store still follows the core.
        let mut again: Vec<Fact> = facts.iter().rev().cloned().collect();
        again.extend(facts.iter().step_by(2).cloned());
        store.apply(&again).unwrap();
        for f in again {
            want.apply(f);
        }
        let got = store.load().unwrap();
        prop_assert_eq!(&got.commits, &want.commits);
        prop_assert_eq!(&got.builds, &want.builds);
        prop_assert_eq!(&got.vanished, &want.vanished);
    }
}

// ------------------------------------------------------------------ size

/// A year of lana: ~3000 commits, ~20000 builds. Prints how long writing and loading take.
#[test]
fn a_year_of_lana_loads_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("year.sqlite");
    let mut s = Store::open(&path).unwrap();
    let commits: Vec<Fact> = (0..3000)
        .map(|n| {
            let mut c = commit(n);
            c.files = (0..12).map(|f| format!("lana/app/src/some/module_{}/file_{f}.rs", n % 97)).collect();
            c.message = format!("{}\n\n{}", c.message, "A realistic body line of a squash-merged PR.\n".repeat(4));
            Fact::Commit(c)
        })
        .collect();
    let builds: Vec<Fact> = (1..=20_000)
        .map(|id| {
            let mut b = build(id, BuildStatus::Succeeded, true);
            b.inputs = ["repo", "admin-panel-src", "customer-portal-src", "pipeline-tasks"]
                .iter()
                .map(|step| {
                    version(
                        step,
                        "ref",
                        sha(id % 3000),
                        Some(format!("feat: change {id}\n\nSome body text of a commit.")),
                    )
                })
                .collect();
            b.outputs.push(version("edge-image", "digest", format!("sha256:{:064x}", id * 7), None));
            Fact::Build(b)
        })
        .collect();
    let t = Instant::now();
    for chunk in commits.chunks(500).chain(builds.chunks(500)) {
        s.apply(chunk).unwrap();
    }
    let write = t.elapsed();
    drop(s);

    let t = Instant::now();
    let s = Store::open(&path).unwrap();
    // Open includes PRAGMA quick_check over the whole file.
    println!("year of lana: open (with quick_check) {:?}", t.elapsed());
    let t = Instant::now();
    let facts = s.load().unwrap();
    let load = t.elapsed();
    assert_eq!((facts.commits.len(), facts.builds.len()), (3000, 20_000));
    let st = s.stats().unwrap();
    println!(
        "year of lana: 3000 commits + 20000 builds: apply (500 facts per transaction) {write:?}, load {load:?}, \
         file {} KiB + WAL {} KiB",
        st.db_bytes / 1024,
        st.wal_bytes / 1024
    );

    // Marks for every journey and build, as a sink would keep them.
    let mut s = s;
    let keys: Vec<String> = (0..3000).map(sha).collect();
    let t = Instant::now();
    s.mark("span", &keys, 1).unwrap();
    let marks: HashSet<String> = s.marks("span").unwrap();
    println!("3000 marks written and read back in {:?}", t.elapsed());
    assert_eq!(marks.len(), 3000);
}

#[test]
fn a_foreign_sqlite_file_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('keep me');",
        )
        .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::Foreign { tables: 1, .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the foreign file was written to");
    assert!(!dir.path().join("other.sqlite-wal").exists());
}

#[test]
fn a_damaged_index_page_is_found_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut s = Store::open(&path).unwrap();
        let facts: Vec<Fact> = (0..3000).map(|n| Fact::Vanished { sha: sha(n), at: 1_772_438_400 + n }).collect();
        s.apply(&facts).unwrap();
    }
    let (root, page_size): (i64, i64) = {
        let c = rusqlite::Connection::open(&path).unwrap();
        let root = c
            .query_row("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'vanished'", [], |r| {
                r.get(0)
            })
            .unwrap();
        (root, c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap())
    };
    let mut bytes = std::fs::read(&path).unwrap();
    let at = ((root - 1) * page_size) as usize;
    // Keep the page type byte, scramble the cell pointers and cells: one bad index page.
    bytes[at + 8..at + page_size as usize].fill(0x5a);
    std::fs::write(&path, &bytes).unwrap();

    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::Damaged { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains("--reset-state"), "{msg}");
}
