//! `serve` stopped mid-scenario (SIGKILL and SIGTERM) and started again ends with the same
//! journeys as an uninterrupted run. The real binary runs against simulators whose clocks run
//! at 300x from the same start, so both runs see the same world.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_journey::http::JourneyJson;
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::workload::Scenario;

use crate::support::client;
use crate::support::free_port;

pub(crate) const SPEED: f64 = 300.0;

pub(crate) struct Exporter {
    child: Option<Child>,
    config: std::path::PathBuf,
    port: u16,
}

impl Exporter {
    pub(crate) fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_deploy-journey"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("GITHUB_TOKEN", "ghp_restart_test")
            .env("CONCOURSE_PASSWORD", "viewer-password")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn deploy-journey serve");
        self.child = Some(child);
    }
    pub(crate) fn signal(&mut self, sig: &str) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}

pub(crate) async fn sim_for(scenario: &Scenario, start: i64) -> (Arc<Sim>, String, tokio::task::JoinHandle<()>) {
    let (world, _) = scenario.build_world(start);
    let sim = Sim::new(world, SimClock::new(start, ClockMode::Running { speed: SPEED }));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s = sim.clone();
    let task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s, listener).await;
    });
    (sim, url, task)
}

pub(crate) fn exporter(dir: &std::path::Path, name: &str, sim_url: &str) -> Exporter {
    let port = free_port();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml")).unwrap();
    let text = text
        .replace("https://api.github.com", sim_url)
        .replace("https://ci.galoy.io", sim_url)
        .replace("/var/lib/deploy-journey/state.db", dir.join(format!("{name}.db")).to_str().unwrap())
        .replace("0.0.0.0:9853", &format!("127.0.0.1:{port}"))
        .replace("poll_interval: 30s", "poll_interval: 1s ");
    assert!(text.contains("poll_interval: 1s"), "examples/lana.yaml changed shape");
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, text).unwrap();
    Exporter { child: None, config, port }
}

/// The journeys, by sha, once every commit of the scenario has ended (or at the deadline).
async fn journeys(e: &Exporter) -> Option<Vec<JourneyJson>> {
    let r = client().get(format!("{}/api/v1/journeys?limit=1000", e.url())).send().await.ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    let mut list: Vec<JourneyJson> = serde_json::from_value(v["journeys"].clone()).ok()?;
    list.sort_by(|a, b| a.sha.cmp(&b.sha));
    // The two simulators listen on different ports; build and commit URLs differ only there.
    for j in &mut list {
        j.commit_url = j.commit_url.split_once("/GaloyMoney/").map(|(_, rest)| rest.to_string()).unwrap_or_default();
        for s in &mut j.stages {
            for a in &mut s.attempts {
                a.url = a.url.split_once("/teams/").map(|(_, rest)| rest.to_string()).unwrap_or_default();
            }
        }
    }
    Some(list)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_serve_ends_with_the_same_journeys() {
    crate::support::init_crypto();
    let sc =
        Scenario::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/three-while-tests-run.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Both worlds start at the same virtual time and run at the same speed.
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (_s1, url1, _t1) = sim_for(&sc, start).await;
    let (_s2, url2, _t2) = sim_for(&sc, start).await;
    let mut calm = exporter(dir.path(), "uninterrupted", &url1);
    let mut rough = exporter(dir.path(), "interrupted", &url2);
    calm.start();
    rough.start();

    // Interrupt while builds run: kill -9, restart, then a clean SIGTERM, restart.
    tokio::time::sleep(Duration::from_secs(6)).await;
    rough.signal("-KILL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    rough.start();
    tokio::time::sleep(Duration::from_secs(7)).await;
    rough.signal("-TERM");
    tokio::time::sleep(Duration::from_secs(2)).await;
    rough.start();

    // The scenario's commits reach staging within about 2.5 virtual hours (30 s here).
    let deadline = Instant::now() + Duration::from_secs(90);
    let (a, b) = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (a, b) = (journeys(&calm).await, journeys(&rough).await);
        if let (Some(a), Some(b)) = (&a, &b) {
            let done = |l: &Vec<JourneyJson>| l.len() >= 5 && l.iter().all(|j| j.ended);
            if done(a) && done(b) {
                break (a.clone(), b.clone());
            }
        }
        assert!(Instant::now() < deadline, "journeys did not all end in time:\ncalm {a:?}\nrough {b:?}");
    };
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        // Predicted arrivals are made at each exporter's own last publish, which need not be
        // the same second: everything else must be equal.
        let (mut x, mut y) = (x.clone(), y.clone());
        x.eta.clear();
        y.eta.clear();
        assert_eq!(x, y, "journey {} differs after restarts", x.short_sha);
    }
    println!("{} journeys equal after a SIGKILL and a SIGTERM restart", a.len());
}
