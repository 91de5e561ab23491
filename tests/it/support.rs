//! Shared test helpers: a simulator served on a real port (zero-to-production's `spawn_app`).

#![allow(dead_code)]

use std::sync::Arc;

use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::{Action, CommitSpec, World};
use deploy_journey::sim::model::Person;
use deploy_journey::sim::topology::Topology;

/// Monday 2026-03-02 08:00:00 UTC.
pub const START: i64 = 1_772_438_400;

pub fn init_crypto() {
    // reqwest is built with `rustls-no-provider`; the binary installs ring in main, tests here.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client() -> reqwest::Client {
    init_crypto();
    reqwest::Client::builder().user_agent("deploy-journey-tests").build().expect("client")
}

pub struct TestSim {
    pub sim: Arc<Sim>,
    pub url: String,
    pub client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A simulator with a stepped clock at [`START`], serving on 127.0.0.1:0.
pub async fn spawn_sim(topology: &str, seed: u64) -> TestSim {
    let topo = Topology::load(topology).expect("topology");
    let world = World::new(topo, START, seed);
    let sim = Sim::new(world, SimClock::new(START, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.expect("bind");
    let s = sim.clone();
    let task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s, listener).await;
    });
    TestSim { sim, url, client: client(), task }
}

pub fn alice() -> Person {
    Person { name: "Alice Doe".into(), email: "alice@example.com".into(), login: Some("alice".into()) }
}

impl TestSim {
    /// Schedule a world action (a rerun, an override, a commit…) at the current virtual time.
    pub fn schedule_now(&self, action: Action) {
        let now = self.sim.now();
        self.sim.with_world(|w| w.schedule_action(now, action));
    }

    /// Advance virtual time by `secs`, processing every event on the way.
    pub fn step(&self, secs: i64) {
        self.sim.clock.step(secs);
        drop(self.sim.world());
    }

    /// Land a commit on the tracked branch now; returns its sha.
    pub fn commit(&self, files: &[&str], message: &str) -> String {
        let now = self.sim.now();
        let (repo, branch) =
            self.sim.with_world(|w| (w.topology.tracked_repo.clone(), w.topology.tracked_branch.clone()));
        self.sim.with_world(|w| {
            w.schedule_action(
                now,
                Action::Commit {
                    repo: repo.clone(),
                    branch: branch.clone(),
                    spec: CommitSpec {
                        message: message.into(),
                        files: files.iter().map(|f| f.to_string()).collect(),
                        author: alice(),
                        author_date: None,
                    },
                },
            );
            w.advance_to(now);
            w.repo(&repo).and_then(|r| r.head(&branch).cloned()).expect("head")
        })
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{}", self.url, path)).send().await.expect("request")
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("json")
    }
}

/// The path of an external tool, or a failure that says how to get it.
pub fn tool(name: &str) -> std::path::PathBuf {
    let found =
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()));
    found.unwrap_or_else(|| {
        panic!("`{name}` is not on PATH: run ./scripts/test, which installs it (Debian package `prometheus`)")
    })
}

/// A free port on 127.0.0.1 (for a server started by a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills a child process (a server the test started) when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's headless Chromium in a profile of its own (dropped with the returned guard), with
/// the flags that keep it off the network it cannot reach here (background updates, sync, QUIC).
fn chromium() -> (std::process::Command, tempfile::TempDir) {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Debian's chromium (scripts/test installs it)");
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    (cmd, profile)
}

/// A page as a person's browser sees it: Chromium loads `url` and prints the DOM it built
/// (after parsing and any script).
pub fn chromium_dom(url: &str) -> String {
    let (mut cmd, _profile) = chromium();
    let out = cmd.args(["--virtual-time-budget=2000", "--dump-dom"]).arg(url).output().expect("run chromium");
    assert!(out.status.success(), "chromium {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `href`s of the links in a DOM, in order.
pub fn hrefs(dom: &str) -> Vec<String> {
    dom.split("href=\"").skip(1).filter_map(|s| s.split('"').next()).map(|s| s.replace("&amp;", "&")).collect()
}

/// A screenshot of `url` as Chromium renders it at `width`×`height`, kept under
/// `target/artefacts/<name>.png` (CI keeps that folder); returns the file's path.
pub fn chromium_screenshot(url: &str, name: &str, width: u32, height: u32) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    let (mut cmd, _profile) = chromium();
    let out = cmd
        .arg("--hide-scrollbars")
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", file.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium screenshot {url}: {}", String::from_utf8_lossy(&out.stderr));
    file
}

/// `serve_with_clock` in process on the simulator's clock, on a free port: its address, the
/// sender that stops it, and its task.
pub async fn serve_on_sim(
    cfg: deploy_journey::config::Config,
    sim: &std::sync::Arc<deploy_journey::sim::Sim>,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), deploy_journey::app::AppError>>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let clock_sim = sim.clone();
    let app = tokio::spawn(deploy_journey::app::serve_with_clock(
        cfg,
        "127.0.0.1:0".parse().unwrap(),
        std::sync::Arc::new(move || clock_sim.now()),
        async move {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    let addr =
        tokio::time::timeout(std::time::Duration::from_secs(30), ready_rx).await.expect("serve listens").unwrap();
    (addr, stop_tx, app)
}
