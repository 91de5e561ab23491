//! `deploy-journey watch` and `report`, the real binary, against simulators whose clocks run
//! accelerated. The binary takes "now" from the simulator (`--sim-clock`), so thresholds are in
//! simulated minutes. Output is checked for what a person needs (path, failures with their log,
//! warnings, the timeline) and against the simulator's own state and ground truth.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::workload::{Scenario, ScenarioRun};

use crate::support::START;

const BIN: &str = env!("CARGO_BIN_EXE_deploy-journey");

struct RunningSim {
    sim: Arc<Sim>,
    url: String,
    run: ScenarioRun,
    dir: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// A scenario in a simulator running at `speed` virtual seconds per real second from START.
async fn running(scenario: &str, speed: f64) -> RunningSim {
    crate::support::init_crypto();
    let sc = Scenario::load(format!("{}/tests/scenarios/{scenario}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (world, run) = sc.build_world(START);
    let sim = Sim::new(world, SimClock::new(START, ClockMode::Running { speed }));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s = sim.clone();
    let task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s, listener).await;
    });
    RunningSim { sim, url, run, dir: tempfile::tempdir().unwrap(), _task: task }
}

impl RunningSim {
    /// The sha of scenario commit `id` (waits until it has landed).
    async fn sha(&self, id: &str) -> String {
        for _ in 0..200 {
            if let Some(s) = self.sim.with_world(|w| self.run.sha_of(w, id)) {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("commit {id} never landed ({:?})", self.run.ids.keys().collect::<Vec<_>>());
    }

    /// examples/lana.yaml pointed at this simulator.
    fn config(&self) -> PathBuf {
        config_for(self.dir.path(), "config", &self.url, "1s")
    }

    async fn client_post(&self, path: &str, body: &str) -> reqwest::StatusCode {
        let c = crate::support::client();
        c.post(format!("{}{path}", self.url)).body(body.to_string()).send().await.unwrap().status()
    }

    fn head(&self) -> String {
        self.sim.with_world(|w| w.tracked_repo().head(&w.topology.tracked_branch).cloned().unwrap())
    }

    /// `deploy-journey <args> --config <cfg> --sim-clock <sim>`, plain (stdout is a pipe).
    async fn cli(&self, args: &[&str]) -> Result {
        let mut cmd = Command::new(BIN);
        cmd.args(args).arg("--config").arg(self.config()).args(["--sim-clock", &self.url]);
        run(cmd).await
    }
}

fn config_for(dir: &Path, name: &str, url: &str, poll: &str) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml")).unwrap();
    let text = text
        .replace("https://api.github.com", url)
        .replace("https://ci.galoy.io", url)
        .replace("/var/lib/deploy-journey/state.db", dir.join("state.db").to_str().unwrap())
        .replace("0.0.0.0:9853", "127.0.0.1:0")
        .replace("poll_interval: 30s", &format!("poll_interval: {poll}"));
    assert!(text.contains(&format!("poll_interval: {poll}")), "examples/lana.yaml changed shape");
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

struct Result {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Result {
    fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

async fn run(mut cmd: Command) -> Result {
    cmd.env("GITHUB_TOKEN", "ghp_watch_test")
        .env("CONCOURSE_PASSWORD", "viewer-password")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    let out: Output = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run deploy-journey");
    Result {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// As a newcomer runs it: no GitHub or Concourse credentials in the environment.
async fn run_without_secrets(mut cmd: Command) -> Result {
    for k in ["GITHUB_TOKEN", "CONCOURSE_PASSWORD", "CONCOURSE_TOKEN"] {
        cmd.env_remove(k);
    }
    cmd.env("RUST_LOG", "warn").stdin(Stdio::null());
    let out: Output = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run deploy-journey");
    Result {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Plain output: lines only, no carriage returns or escape sequences.
fn assert_plain(r: &Result) {
    assert!(!r.stdout.contains('\r') && !r.stdout.contains('\x1b'), "not plain:\n{}", r.all());
}

/// Watch flags every test uses: poll every 200 ms of real time; give up after 6 simulated hours.
const FAST: [&str; 4] = ["--interval", "200ms", "--timeout", "6h"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_commit_to_staging_then_report() {
    let s = running("backend-to-staging.yaml", 600.0).await;
    let sha = s.sha("a").await;
    let r = s.cli(&[&["watch", &sha[..8]][..], &FAST].concat()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_plain(&r);
    for needle in [
        format!("following commit {sha}"),
        "path: full pipeline: repo trigger tests. Following until it is deployed to staging.".into(),
        "tests: succeeded in".into(),
        "testflight: succeeded in".into(),
        "deployed to staging; lead time".into(),
        "Timeline of".into(),
    ] {
        assert!(r.stdout.contains(&needle), "{needle:?} missing:\n{}", r.all());
    }
    assert!(!r.stdout.contains("warning:"), "{}", r.all());

    // The JSON timeline equals the simulator's ground truth.
    let r = s.cli(&["report", &sha, "--json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.all()));
    let truth = s.sim.with_world(|w| deploy_journey::sim::workload::truth(w, &sha));
    let deploy = truth.first_success("galoy-staging/galoy-staging-lana-bank").expect("deployed in the simulator");
    assert_eq!(v["outcome"], "deployed");
    assert_eq!(v["lead_time_seconds"]["staging"], deploy.end.unwrap() - truth.landed_at.unwrap());
    let tf = truth.first_success("private-charts/lana-bank-testflight").unwrap();
    let stage = v["stages"].as_array().unwrap().iter().find(|s| s["name"] == "testflight").unwrap();
    assert_eq!(stage["duration_seconds"], tf.end.unwrap() - tf.start.unwrap());
    assert_eq!(stage["builds"][0]["name"], tf.name.as_str());

    // The text report shows the same figures.
    let r = s.cli(&["report", &sha[..10]]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let lead = deploy_journey::watch::fmt_secs(deploy.end.unwrap() - truth.landed_at.unwrap());
    assert!(r.stdout.contains(&format!("lead time to staging: {lead}\n")), "{}", r.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_only_commit_edge_images_then_until_staging() {
    let s = running("frontend-only.yaml", 600.0).await;
    let sha = s.sha("ui").await;
    let r = s.cli(&[&["watch", &sha][..], &FAST].concat()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("path: frontend-only: admin-panel-src trigger edge-images"), "{}", r.all());
    assert!(r.stdout.contains("Following until edge-images succeeds."), "{}", r.all());
    assert!(r.stdout.contains(&format!("done: {} edge-images succeeded", &sha[..7])), "{}", r.all());
    assert!(!r.stdout.contains("deployed to staging"), "stops at the edge images:\n{}", r.all());

    let r = s.cli(&[&["watch", &sha, "--until", "staging"][..], &FAST].concat()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Following until it is deployed to staging."), "{}", r.all());
    assert!(r.stdout.contains("deployed to staging; lead time"), "{}", r.all());
    // It ships with the release candidate the later backend commit triggered.
    let later = s.sha("later").await;
    let truth = s.sim.with_world(|w| deploy_journey::sim::workload::truth(w, &later));
    let rc = truth.first_success("lana-bank/build-rc").unwrap();
    assert!(r.stdout.contains(&format!("build-rc #{} succeeded", rc.name)), "{}", r.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_test_bats_shows_its_log_and_exits_1_or_keeps_going() {
    let s = running("bats-flaky-rerun.yaml", 600.0).await;
    let sha = s.sha("a").await;
    let r = s.cli(&[&["watch", &sha][..], &FAST].concat()).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert_plain(&r);
    assert!(r.stdout.contains("FAILED at stage tests: job test-bats build #"), "{}", r.all());
    // The last lines of the failed build's log, from the build events stream.
    assert!(r.stdout.contains("  | bats: step 'assert deployment healthy' failed"), "{}", r.all());
    assert!(r.stdout.contains("  | error: bats exited with status 1"), "{}", r.all());
    assert!(r.stdout.contains("test-bats") && r.stdout.contains("failed"), "{}", r.all());

    // --keep-going waits for the rerun (at 45 min) and follows it to staging.
    let r = s.cli(&[&["watch", &sha, "--keep-going"][..], &FAST].concat()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("--keep-going: waiting for a rerun"), "{}", r.all());
    assert!(r.stdout.contains("deployed to staging"), "{}", r.all());
    let rerun = s.sim.with_world(|w| {
        deploy_journey::sim::workload::truth(w, &sha)
            .job("lana-bank/test-bats")
            .and_then(|j| j.builds.iter().find(|b| b.rerun_of.is_some()).map(|b| b.name.clone()))
    });
    let rerun = rerun.expect("the simulator reran test-bats");
    assert!(
        r.stdout.contains(&format!("tests: test-bats #{rerun} started again"))
            || r.stdout.contains(&format!("test-bats #{rerun} succeeded")),
        "{}",
        r.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testflight_over_20_minutes_warns() {
    // Slower, so several polls fall between 20 and 27 simulated minutes of testflight.
    let s = running("testflight-27m.yaml", 300.0).await;
    let sha = s.sha("a").await;
    let r = s.cli(&[&["watch", &sha, "--json"][..], &FAST].concat()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    // With --json, stdout is the timeline only; the live lines go to stderr.
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.all()));
    assert!(
        r.stderr.contains("warning: testflight has been running for") && r.stderr.contains("over its 20m 0s threshold"),
        "{}",
        r.all()
    );
    let warnings: Vec<&str> = v["warnings"].as_array().unwrap().iter().filter_map(|w| w.as_str()).collect();
    assert_eq!(warnings.len(), 1, "one warning, once: {warnings:?}");
    assert!(warnings[0].contains("testflight"));
    let tf = v["stages"].as_array().unwrap().iter().find(|s| s["name"] == "testflight").unwrap();
    assert_eq!(tf["duration_seconds"], 27 * 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapproved_pr_is_not_merged() {
    let s = running("pr-unapproved.yaml", 600.0).await;
    // Let the review (at 1 min) land.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let head = s.head();
    let r = s.cli(&[&["watch", "4242", "--merge"][..], &FAST].concat()).await;
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stdout.contains("PR #4242 \"feat: credit facility terms\" is not approved (carol commented): not merging"),
        "{}",
        r.all()
    );
    let (open, merged) = s.sim.with_world(|w| {
        let pr = w.tracked_repo().pull(4242).unwrap();
        (pr.is_open(), pr.merged())
    });
    assert!(open && !merged, "the PR stays open and unmerged");
    // Nothing landed from it: any new commit on main is not the PR's.
    let subjects: Vec<String> = s.sim.with_world(|w| {
        let repo = w.tracked_repo();
        let branch = &repo.branches[&w.topology.tracked_branch];
        let at = branch.iter().position(|c| *c == head).unwrap();
        branch[at..].iter().map(|c| repo.commits[c].message.clone()).collect()
    });
    assert!(subjects.iter().all(|m| !m.contains("#4242")), "{subjects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_pr_is_merged_then_followed() {
    let s = running("pr-approved.yaml", 600.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r =
        s.cli(&[&["watch", "https://github.com/GaloyMoney/lana-bank/pull/4242", "--merge"][..], &FAST].concat()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let merge = s.sim.with_world(|w| w.tracked_repo().pull(4242).unwrap().merge_commit_sha.clone());
    let merge = merge.expect("merged in the simulator");
    assert!(r.stdout.contains(&format!("approved; squash-merged as {merge}")), "{}", r.all());
    assert!(r.stdout.contains(&format!("following commit {merge}")), "{}", r.all());
    assert!(r.stdout.contains("deployed to staging"), "{}", r.all());
    let subject = s.sim.with_world(|w| w.tracked_repo().commits[&merge].message.clone());
    assert!(subject.contains("(#4242)"), "{subject}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_running_serve() {
    let s = running("backend-to-staging.yaml", 300.0).await;
    let sha = s.sha("a").await;
    // The exporter, in process, on the simulator's clock, polling every real second.
    let cfg_path = config_for(s.dir.path(), "exporter", &s.url, "1s");
    let env = |k: &str| match k {
        "GITHUB_TOKEN" => Some("ghp_watch_test".to_string()),
        "CONCOURSE_PASSWORD" => Some("viewer-password".to_string()),
        _ => None,
    };
    let cfg = deploy_journey::config::load(&cfg_path, &env).unwrap();
    let sim = s.sim.clone();
    let clock: deploy_journey::clock::Clock = Arc::new(move || sim.now());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listen: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let serve = tokio::spawn(deploy_journey::app::serve_with_clock(
        cfg,
        listen,
        clock,
        async move {
            let _ = stop_rx.await;
        },
        Some(tx),
    ));
    let addr = rx.await.unwrap();
    let from = format!("http://{addr}");
    // The watcher's configuration points GitHub and Concourse at a closed port: with --from
    // (and a sha) it needs neither, so it adds no load on them, and no credentials: none are
    // set. Nor is the hidden --sim-clock or --interval: the exporter's /api/v1/status gives
    // its clock (the simulator's) and its poll interval.
    let nowhere = config_for(s.dir.path(), "watcher", "http://127.0.0.1:9", "1s");
    let mut cmd = Command::new(BIN);
    cmd.args(["watch", &sha[..7], "--from", &from, "--timeout", "6h", "--config"]).arg(&nowhere);
    let r = run_without_secrets(cmd).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("path: full pipeline"), "{}", r.all());
    assert!(r.stdout.contains("deployed to staging; lead time"), "{}", r.all());
    assert!(r.stdout.contains(&format!("exporter {from}: simulated clock")), "{}", r.all());
    // Lines are stamped on the exporter's (simulated) clock: following the commit to staging
    // took well over half an hour of it, though only seconds of real time.
    let stamps: Vec<i64> = r
        .stdout
        .lines()
        .filter_map(|l| {
            let t = l.split(' ').next()?;
            let p: Vec<i64> = t.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
            (p.len() == 3).then(|| p[0] * 3600 + p[1] * 60 + p[2])
        })
        .collect();
    let span = stamps.last().unwrap() - stamps.first().unwrap();
    assert!(span >= 30 * 60, "stamps span {span} s:\n{}", r.all());
    // The report through the exporter matches the watch's end, also without credentials.
    let mut cmd = Command::new(BIN);
    cmd.args(["report", &sha, "--from", &from, "--json", "--config"]).arg(&nowhere);
    let rep = run_without_secrets(cmd).await;
    assert_eq!(rep.code, 0, "{}", rep.all());
    let v: serde_json::Value = serde_json::from_str(&rep.stdout).unwrap();
    let lead = deploy_journey::watch::fmt_secs(v["lead_time_seconds"]["staging"].as_i64().unwrap());
    assert!(r.stdout.contains(&format!("lead time to staging: {lead}")), "{lead}\n{}", r.all());
    // The exporter's clock, as it reports it.
    let st: serde_json::Value =
        crate::support::client().get(format!("{from}/api/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["clock"], "simulated", "{st}");
    assert_eq!(st["poll_interval_seconds"], 1.0, "{st}");
    let now = s.sim.now();
    assert!((st["now"].as_i64().unwrap() - now).abs() <= 600, "{st} vs simulator {now}");
    let _ = stop_tx.send(());
    let _ = serve.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_stage_lines_are_redrawn_in_place() {
    let s = running("backend-to-staging.yaml", 600.0).await;
    let sha = s.sha("a").await;
    // util-linux `script` gives the command a pty; its output is what the terminal got.
    let line = format!(
        "{BIN} watch {sha} --config {} --sim-clock {} --interval 200ms --timeout 6h",
        s.config().display(),
        s.url
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &line, "/dev/null"]).env("TERM", "xterm-256color");
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{}", r.all());
    // Cursor up and erase line: the per-stage lines are rewritten, not appended.
    assert!(r.stdout.contains("\x1b[2K") && r.stdout.contains("\x1b[1A"), "no in-place redraw:\n{:?}", r.stdout);
    assert!(r.stdout.contains('\r'));
    // Each stage's line shows the elapsed time while it runs.
    assert!(r.stdout.contains("running ") && r.stdout.contains("galoy-staging-lana-bank #"), "{:?}", r.stdout);
    assert!(r.stdout.contains("Timeline of"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_with_what_is_wrong() {
    let s = running("backend-to-staging.yaml", 60.0).await;
    let r = s.cli(&["watch", "not-a-sha"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("target \"not-a-sha\": expected a commit sha"), "{}", r.all());
    let r = s.cli(&["watch", "--until", "prod"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--until \"prod\": no such stage or environment"), "{}", r.all());
    let r = s.cli(&["watch", "deadbeef", "--merge"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--merge needs a pull request"), "{}", r.all());
    let r = s.cli(&["report", "deadbeefdeadbeef"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("commit deadbeefdeadbeef: not found"), "{}", r.all());
    let r = s.cli(&["watch", "#999"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("pull request #999: not found"), "{}", r.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_skip_commit_is_explained_and_times_out() {
    let s = running("ci-skip.yaml", 600.0).await;
    let sha = s.sha("skip").await;
    // No target: the newest commit on the branch, which is this one. Nothing later deploys it
    // in this scenario, so only the timeout ends the watch.
    let r = s.cli(&["watch", "--interval", "200ms", "--timeout", "40m"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains(&format!("following commit {sha}")), "{}", r.all());
    assert!(r.stdout.contains("path: [ci skip]: the marker keeps every resource from emitting it"), "{}", r.all());
    assert!(r.stdout.contains("timed out after 4"), "40-odd minutes:\n{}", r.all());
    // The timeline so far is still printed.
    assert!(r.stdout.contains("(skipped, [ci skip]): "), "{}", r.all());
    assert!(r.stdout.contains("lead time: not deployed yet"), "{}", r.all());
    assert!(!r.stdout.contains("warning: not picked up"), "a skipped commit is not expected to be picked up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_pipeline_ignores_is_not_picked_up() {
    let s = running("frontend-only.yaml", 600.0).await;
    let sha = s.sha("ui").await;
    // A configuration that disagrees with the pipeline: its `repo` does not ignore apps/, so it
    // expects tests for the admin-panel change, which the pipeline's `repo` never emits.
    let cfg = std::fs::read_to_string(s.config())
        .unwrap()
        .replace(r#"ignore_paths: ["ci/*[^mdxk]", "apps/**/*"]"#, r#"ignore_paths: ["ci/*[^mdxk]"]"#);
    assert!(!cfg.contains("apps/**/*\"]"), "examples/lana.yaml changed shape");
    let path = s.dir.path().join("disagreeing.yaml");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["watch", &sha, "--until", "tests", "--interval", "200ms", "--timeout", "20m", "--config"])
        .arg(&path)
        .args(["--sim-clock", &s.url]);
    let r = run(cmd).await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("path: full pipeline: repo, admin-panel-src trigger tests, edge-images"), "{}", r.all());
    assert!(
        r.stdout.contains(
            "warning: not picked up after 5m 0s: no build has taken it (are its files only in ignored paths?)"
        ),
        "{}",
        r.all()
    );
    assert_eq!(
        r.stdout.matches("warning: not picked up").count(),
        2,
        "said once, and listed in the timeline:\n{}",
        r.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concourse_failures_are_said_and_outlived() {
    let s = running("backend-to-staging.yaml", 600.0).await;
    let sha = s.sha("a").await;
    // Malformed job lists: a pipeline that does not answer is skipped for that poll.
    let rule = r#"{"kind":"malformed","service":"concourse","path_contains":"/jobs","count":4}"#;
    let resp = s.client_post("/_sim/faults", rule).await;
    assert!(resp.is_success(), "{resp}");
    let r = s.cli(&[&["watch", &sha][..], &FAST].concat()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("source problem (following what answered): concourse GET /api/v1/teams/dev/pipelines/"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("deployed to staging"), "{}", r.all());
    // What was polled while Concourse failed is not lost: the lead time is the true one.
    let truth = s.sim.with_world(|w| deploy_journey::sim::workload::truth(w, &sha));
    let deploy = truth.first_success("galoy-staging/galoy-staging-lana-bank").unwrap();
    let lead = deploy_journey::watch::fmt_secs(deploy.end.unwrap() - truth.landed_at.unwrap());
    assert!(r.stdout.contains(&format!("lead time to staging: {lead}\n")), "{lead}\n{}", r.all());
}
