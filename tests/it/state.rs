//! The state file belongs to one `serve` and one world: a second `serve` on it is refused, a
//! state file of another repository or another world (a simulator of another seed on the same
//! address) is refused with a message saying what to do, `--reset-state` starts afresh, and a
//! store that cannot be written is counted and named by `/readyz`. The real binary, against
//! simulators served on real ports, on the simulator's clock (`--sim-clock`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::{Action, CommitSpec, World};
use deploy_journey::sim::topology::Topology;

use crate::support::{KillOnDrop, START, client, free_port};

/// A stepped simulator on `addr` (`127.0.0.1:0` for any port) with one commit on the branch
/// whose message is `message`; returns it, its URL, its server task and the commit's sha.
async fn world_at(addr: &str, message: &str) -> (Arc<Sim>, String, tokio::task::JoinHandle<()>, String) {
    world_after(addr, message, 60).await
}

/// [`world_at`], `secs` simulated seconds after the commit.
async fn world_after(addr: &str, message: &str, secs: i64) -> (Arc<Sim>, String, tokio::task::JoinHandle<()>, String) {
    let world = World::new(Topology::load("lana").unwrap(), START, 1);
    let sim = Sim::new(world, SimClock::new(START, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), addr).await.expect("bind");
    let s = sim.clone();
    let task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s, listener).await;
    });
    let sha = sim.with_world(|w| {
        let (repo, branch) = (w.topology.tracked_repo.clone(), w.topology.tracked_branch.clone());
        let spec = CommitSpec {
            message: message.into(),
            files: vec!["core/src/lib.rs".into()],
            author: crate::support::alice(),
            author_date: None,
        };
        w.schedule_action(START, Action::Commit { repo: repo.clone(), branch: branch.clone(), spec });
        w.advance_to(START);
        w.repo(&repo).and_then(|r| r.head(&branch).cloned()).expect("head")
    });
    sim.clock.step(secs);
    drop(sim.world());
    (sim, url, task, sha)
}

/// `examples/lana.yaml` pointed at `sim_url`, with this state file and port, polling every second.
fn config(dir: &Path, name: &str, sim_url: &str, state: &Path, port: u16, repo: &str) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml"))
        .unwrap()
        .replace("https://api.github.com", sim_url)
        .replace("https://ci.galoy.io", sim_url)
        .replace("/var/lib/deploy-journey/state.db", state.to_str().unwrap())
        .replace("0.0.0.0:9853", &format!("127.0.0.1:{port}"))
        .replace("poll_interval: 30s", "poll_interval: 1s ")
        .replace("github: GaloyMoney/lana-bank", &format!("github: {repo}"));
    assert!(text.contains("poll_interval: 1s") && text.contains(repo), "examples/lana.yaml changed shape");
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(config: &Path, sim_url: &str, extra: &[&str], log: &Path) -> KillOnDrop {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_deploy-journey"))
        .args(["serve", "--sim-clock", sim_url, "--config"])
        .arg(config)
        .args(extra)
        .env("GITHUB_TOKEN", "ghp_state_test")
        .env("CONCOURSE_PASSWORD", "viewer-password")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("spawn deploy-journey serve");
    KillOnDrop(child)
}

/// Wait for the process to exit (it should refuse to start); its status and log.
fn refused(mut p: KillOnDrop, log: &Path) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(!st.success(), "exited successfully:\n{text}");
            return text;
        }
        assert!(Instant::now() < until, "still running:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = client().get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Poll `url` until `ok(status, body)`; panics with the log at the deadline.
async fn wait_for(url: &str, log: &Path, what: &str, ok: impl Fn(u16, &str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some((st, body)) = get(url).await
            && ok(st, &body)
        {
            return body;
        }
        assert!(Instant::now() < until, "{what}: {url}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A lana world with one commit on a simulator, and what `serve` needs for it: a fresh state
/// path, a free port, the config and the log file.
struct OneCommit {
    dir: tempfile::TempDir,
    state: PathBuf,
    sim: Arc<Sim>,
    url: String,
    _task: tokio::task::JoinHandle<()>,
    port: u16,
    cfg: PathBuf,
    log: PathBuf,
}

async fn one_commit() -> OneCommit {
    crate::support::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let (sim, url, _task, _) = world_at("127.0.0.1:0", "feat: one").await;
    let port = free_port();
    let cfg = config(dir.path(), "lana", &url, &state, port, "GaloyMoney/lana-bank");
    let log = dir.path().join("serve.log");
    OneCommit { dir, state, sim, url, _task, port, cfg, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_one_state_file_is_refused_and_a_killed_one_leaves_no_lock() {
    crate::support::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let (_sim, url, _task, _) = world_at("127.0.0.1:0", "feat: one").await;
    let state = dir.path().join("state.db");
    let (p1, p2) = (free_port(), free_port());
    let c1 = config(dir.path(), "one", &url, &state, p1, "GaloyMoney/lana-bank");
    let c2 = config(dir.path(), "two", &url, &state, p2, "GaloyMoney/lana-bank");
    let (l1, l2) = (dir.path().join("one.log"), dir.path().join("two.log"));
    let mut first = serve(&c1, &url, &[], &l1);
    wait_for(&format!("http://127.0.0.1:{p1}/readyz"), &l1, "first serve ready", |s, _| s == 200).await;

    let log = refused(serve(&c2, &url, &[], &l2), &l2);
    let want = format!("store {}: in use by another deploy-journey process", state.display());
    assert!(log.contains(&want), "{log}");
    assert!(log.contains(&format!("{}.lock", state.display())), "{log}");

    // kill -9 the first: the lock goes with the process, so the second starts.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let _second = serve(&c2, &url, &[], &l2);
    wait_for(&format!("http://127.0.0.1:{p2}/readyz"), &l2, "second serve ready after a kill -9", |s, _| s == 200)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_of_another_repository_or_world_is_refused_until_reset() {
    crate::support::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let (sim, url, task, old_sha) = world_at("127.0.0.1:0", "feat: the first world").await;
    let port = free_port();
    let lana = config(dir.path(), "lana", &url, &state, port, "GaloyMoney/lana-bank");
    let log = dir.path().join("serve.log");
    let api = format!("http://127.0.0.1:{port}/api/v1/journeys/{old_sha}");
    {
        let _p = serve(&lana, &url, &[], &log);
        wait_for(&api, &log, "the first world's commit stored", |s, _| s == 200).await;
    }

    // Another repository on the same Concourse: refused, naming both and the way out.
    let other = config(dir.path(), "other", &url, &state, port, "GaloyMoney/other-bank");
    let text = refused(serve(&other, &url, &[], &log), &log);
    assert!(
        text.contains(&format!(
            "store {} was built for repository \"GaloyMoney/lana-bank\", but the configuration says \"GaloyMoney/other-bank\"",
            state.display()
        )) && text.contains("--reset-state"),
        "{text}"
    );

    // Another world at the same address (a simulator of another history): same repository,
    // URL and team, but the stored head is a commit this GitHub never had.
    let addr = url.trim_start_matches("http://").to_string();
    task.abort();
    let _ = task.await;
    drop(sim);
    let (_sim2, url2, _task2, new_sha) = world_at(&addr, "feat: another world").await;
    assert_eq!(url2, url);
    assert_ne!(new_sha, old_sha);
    let text = refused(serve(&lana, &url, &[], &log), &log);
    assert!(
        text.contains(&format!("store {}: its newest commit {}", state.display(), &old_sha[..12]))
            && text.contains("is unknown to GitHub repository GaloyMoney/lana-bank")
            && text.contains("--reset-state"),
        "{text}"
    );

    // --reset-state: the new world's journeys, and nothing of the old one's.
    let _p = serve(&lana, &url, &["--reset-state"], &log);
    let new_api = format!("http://127.0.0.1:{port}/api/v1/journeys/{new_sha}");
    wait_for(&new_api, &log, "the new world's commit", |s, _| s == 200).await;
    let (st, _) = get(&api).await.unwrap();
    assert_eq!(st, 404, "the old world's journey is still served");
    wait_for(&format!("http://127.0.0.1:{port}/readyz"), &log, "ready after a reset", |s, _| s == 200).await;
}

/// A store that cannot be written (here: another connection holds SQLite's write lock past the
/// busy timeout, as a read-only file or a full disk would fail the write) is a metric and a
/// `/readyz` reason of its own; the next write that succeeds makes `serve` ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_write_failures_are_counted_and_named_by_readyz() {
    let OneCommit { dir: _dir, state, sim, url, _task, port, cfg, log } = one_commit().await;
    let _p = serve(&cfg, &url, &[], &log);
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{base}/readyz"), &log, "ready", |s, _| s == 200).await;
    let metrics = wait_for(&format!("{base}/metrics"), &log, "metrics", |s, _| s == 200).await;
    assert!(metrics.contains("deploy_journey_store_errors_total 0\n"), "{metrics}");

    // Every cycle writes the GitHub cursor; hold SQLite's write lock so those writes fail.
    let conn = rusqlite::Connection::open(&state).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let body = wait_for(&format!("{base}/readyz"), &log, "readyz naming the store", |s, b| {
        s == 503 && b.contains("cannot write the state file")
    })
    .await;
    assert!(body.contains(&state.display().to_string()) && body.contains("locked"), "{body}");
    // Scrapes within one second of serve's (here: the stepped simulator's) clock share a rendering.
    sim.clock.step(1);
    let errors = |m: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix("deploy_journey_store_errors_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no store_errors_total in\n{m}"))
    };
    wait_for(&format!("{base}/metrics"), &log, "store errors counted", |s, m| s == 200 && errors(m) >= 1.0).await;

    conn.execute_batch("ROLLBACK").unwrap();
    wait_for(&format!("{base}/readyz"), &log, "ready once writes succeed", |s, _| s == 200).await;
}

/// The same GitHub history, but a Concourse whose builds stop short of the newest stored one (a
/// Concourse whose database was reset, or another one at the same address): refused, since the
/// build cursor would otherwise skip every new build up to the stored id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_of_another_concourse_at_the_same_address_is_refused() {
    crate::support::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    // An hour after the commit, its tests and more have run.
    let (sim, url, task, sha) = world_after("127.0.0.1:0", "feat: one", 3600).await;
    let newest = sim.with_world(|w| w.concourse.builds.iter().map(|b| b.id).max()).expect("builds ran");
    let port = free_port();
    let lana = config(dir.path(), "lana", &url, &state, port, "GaloyMoney/lana-bank");
    let log = dir.path().join("serve.log");
    {
        let _p = serve(&lana, &url, &[], &log);
        let api = format!("http://127.0.0.1:{port}/api/v1/journeys/{sha}");
        wait_for(&api, &log, "builds stored", |s, body| s == 200 && body.contains("\"attempts\":[{")).await;
    }
    let stored = rusqlite::Connection::open(&state)
        .unwrap()
        .query_row("SELECT max(id) FROM builds", [], |r| r.get::<_, i64>(0))
        .unwrap();
    let addr = url.trim_start_matches("http://").to_string();
    task.abort();
    let _ = task.await;
    drop(sim);
    // The same commit, a minute after it: Concourse has not got that far.
    let (sim2, url2, _task2, sha2) = world_after(&addr, "feat: one", 60).await;
    assert_eq!((url2.as_str(), sha2.as_str()), (url.as_str(), sha.as_str()), "not the same GitHub history");
    let fewer = sim2.with_world(|w| w.concourse.builds.iter().map(|b| b.id).max().unwrap_or(0));
    assert!(fewer < stored && stored <= newest, "{fewer} < {stored} <= {newest}");
    let text = refused(serve(&lana, &url, &[], &log), &log);
    assert!(
        text.contains(&format!("store {}: its newest build {stored} (", state.display()))
            && text.contains(&format!("is not that build on {url}"))
            && text.contains("--reset-state"),
        "{text}"
    );
}

/// A state file that cannot grow (here RLIMIT_FSIZE on the serve process, with SIGXFSZ ignored as
/// a full disk would not signal): writes fail, are counted, `/readyz` names the store, and serve
/// is ready again once the file can grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_cannot_grow_fails_readyz_and_counts_until_it_can() {
    use std::os::unix::process::CommandExt;
    let OneCommit { dir: _dir, state, sim, url, _task, port, cfg, log } = one_commit().await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deploy-journey"));
    cmd.args(["serve", "--sim-clock", &url, "--config"])
        .arg(&cfg)
        .env("GITHUB_TOKEN", "ghp_state_test")
        .env("CONCOURSE_PASSWORD", "viewer-password")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: only async-signal-safe signal(2) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let p = KillOnDrop(cmd.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{base}/readyz"), &log, "ready", |s, _| s == 200).await;

    let set_limit = |bytes: u64| {
        let lim = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: prlimit on our own child, with a valid rlimit.
        let rc = unsafe { libc::prlimit(p.0.id() as libc::pid_t, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    set_limit(4096);
    let body = wait_for(&format!("{base}/readyz"), &log, "readyz naming the store", |s, b| {
        sim.clock.step(1);
        s == 503 && b.contains("not ready: store: ")
    })
    .await;
    assert!(body.contains(&state.display().to_string()), "{body}");
    let errors = |m: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix("deploy_journey_store_errors_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no store_errors_total in\n{m}"))
    };
    wait_for(&format!("{base}/metrics"), &log, "store errors counted", |s, m| s == 200 && errors(m) >= 1.0).await;

    set_limit(libc::RLIM_INFINITY);
    wait_for(&format!("{base}/readyz"), &log, "ready once writes succeed", |s, _| s == 200).await;
}

/// SIGTERM during a poll cycle that waits on a slow upstream (every Concourse answer hangs for a
/// minute): serve exits within seconds, and the state opens cleanly afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_a_slow_poll_cycle() {
    let OneCommit { dir: _dir, state, sim, url, _task, port, cfg, log } = one_commit().await;
    let mut p = serve(&cfg, &url, &[], &log);
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{base}/readyz"), &log, "ready", |s, _| s == 200).await;
    let rule = serde_json::json!({"kind": "timeout", "ms": 60_000, "service": "concourse"});
    sim.faults.add(deploy_journey::sim::faults::FaultRule::parse(rule.to_string().as_bytes()).unwrap());
    // A cycle (every second) is now stuck on Concourse.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(p.0.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            break st;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(t.elapsed() < Duration::from_secs(5), "still running 5 s after SIGTERM:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    println!("exited {status:?} {:?} after SIGTERM", t.elapsed());
    assert!(text.contains("in-flight poll cancelled"), "{text}");
    let s = deploy_journey::store::Store::open(&state).expect("state opens after the cancelled cycle");
    assert!(!s.load().unwrap().commits.is_empty());
}

/// A state file with a damaged page is refused at start, naming the file and `--reset-state`;
/// with `--reset-state` it is replaced by a new one and serve becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_file_is_refused_and_reset_state_replaces_it() {
    use deploy_journey::core::journey::Fact;
    crate::support::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    {
        let mut s = deploy_journey::store::Store::open(&state).unwrap();
        let facts: Vec<Fact> = (0..3000).map(|n| Fact::Vanished { sha: format!("{n:040x}"), at: n }).collect();
        s.apply(&facts).unwrap();
    }
    let mut bytes = std::fs::read(&state).unwrap();
    let len = bytes.len();
    bytes[len / 2..len / 2 + 4096].fill(0x5a);
    std::fs::write(&state, &bytes).unwrap();
    let (_sim, url, _task, _) = world_at("127.0.0.1:0", "feat: one").await;
    let port = free_port();
    let cfg = config(dir.path(), "lana", &url, &state, port, "GaloyMoney/lana-bank");
    let log = dir.path().join("serve.log");
    let text = refused(serve(&cfg, &url, &[], &log), &log);
    assert!(
        text.contains(&state.display().to_string()) && text.contains("damaged") && text.contains("--reset-state"),
        "{text}"
    );

    let _p = serve(&cfg, &url, &["--reset-state"], &log);
    wait_for(&format!("http://127.0.0.1:{port}/readyz"), &log, "ready after --reset-state", |s, _| s == 200).await;
}
