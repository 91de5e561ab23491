//! `deploy-journey demo`, run as a newcomer would: no config, one command, and the exporter's
//! pages show lead times and stage durations within a minute.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{KillOnDrop, client, init_crypto};

/// Sum of a metric's samples (every label set) in the classic text exposition.
fn sum_of(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_lead_times_and_stage_durations_within_a_minute() {
    init_crypto();
    let state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_deploy-journey"))
        .args(["demo", "--listen", "127.0.0.1:0", "--state"])
        .arg(state.path())
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let stdout = child.stdout.take().unwrap();
    let demo = KillOnDrop(child);
    // The printed URLs are the interface: find /metrics and the JSON API there.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut urls = std::collections::BTreeMap::new();
    while !(urls.contains_key("metrics") && urls.contains_key("journeys API") && urls.contains_key("simulated CI")) {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("demo printed its URLs within a minute");
        if let Some((k, v)) = line.trim().split_once(": ") {
            urls.insert(k.to_string(), v.trim().to_string());
        }
    }
    let http = client();
    let (mut lead, mut durations, mut text) = (0.0, 0.0, String::new());
    while started.elapsed() < Duration::from_secs(60) {
        text = http.get(&urls["metrics"]).send().await.unwrap().text().await.unwrap();
        lead = sum_of(&text, "deploy_journey_lead_time_seconds_count");
        durations = sum_of(&text, "deploy_journey_stage_duration_seconds_count");
        if lead > 0.0 && durations > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(lead > 0.0 && durations > 0.0, "no lead times or stage durations after a minute:\n{text}");
    // A week of lana history holds dozens of deployed commits, and every stage reports in flight.
    assert!(lead >= 10.0, "only {lead} lead-time observations");
    for stage in ["tests", "build-rc", "testflight", "staging"] {
        assert!(
            text.contains(&format!("deploy_journey_stage_in_flight{{stage=\"{stage}\",state=\"running\"}}")),
            "{stage}"
        );
    }
    let journeys: serde_json::Value = http.get(&urls["journeys API"]).send().await.unwrap().json().await.unwrap();
    let listed = journeys["journeys"].as_array().map(|a| a.len()).unwrap_or(0);
    // One lead-time observation per commit and environment: staging's count is deployed commits.
    let staging: f64 = text
        .lines()
        .filter(|l| l.starts_with("deploy_journey_lead_time_seconds_count{") && l.contains("environment=\"staging\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(staging > 0.0 && staging <= lead);
    assert!(listed as f64 >= staging, "the JSON API lists {listed} journeys, fewer than {staging} deployed commits");
    // Commits in flight carry a predicted arrival in staging, after everything known of them;
    // ended journeys carry none.
    let mut predicted = 0;
    for j in journeys["journeys"].as_array().unwrap() {
        let eta = j.get("eta").and_then(|e| e.get("staging")).and_then(|t| t.as_i64());
        if j["ended"].as_bool().unwrap() {
            assert!(eta.is_none(), "an ended journey with a prediction: {j}");
            continue;
        }
        let Some(eta) = eta else { continue };
        predicted += 1;
        let known = j["stages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| [s["start"].as_i64(), s["end"].as_i64()])
            .flatten()
            .max()
            .unwrap_or(0);
        assert!(eta >= known.max(j["commit_time"].as_i64().unwrap()), "a prediction in the past: {j}");
    }
    assert!(predicted > 0, "no commit in flight has a predicted arrival");
    let landing = http.get(&urls["landing page"]).send().await.unwrap();
    assert!(landing.status().is_success());
    // The build links handed out lead to the simulated Concourse's build page.
    let builds: Vec<&str> = journeys["journeys"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|j| j["stages"].as_array().unwrap())
        .flat_map(|s| s["attempts"].as_array().unwrap())
        .filter_map(|a| a["url"].as_str())
        .take(20)
        .collect();
    assert!(!builds.is_empty());
    for url in builds {
        let r = http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let page = r.text().await.unwrap();
        let job = url.split("/jobs/").nth(1).unwrap().split('/').next().unwrap();
        assert!(page.contains(job) && page.contains("status <b>"), "{url}:\n{page}");
    }
    // A commit's page on the simulated GitHub, at github.com's path.
    let sha = journeys["journeys"][0]["sha"].as_str().unwrap();
    let sim = urls["simulated CI"].split(' ').next().unwrap();
    let r = http.get(format!("{sim}/GaloyMoney/lana-bank/commit/{}", &sha[..10])).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let subject = journeys["journeys"][0]["subject"].as_str().unwrap();
    let page = r.text().await.unwrap();
    assert!(page.contains(sha), "{page}");
    assert!(
        page.contains(
            &subject
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;")
        ),
        "{subject}\n{page}"
    );
    // The journey's own commit link leads there too (not to github.com).
    let commit_url = journeys["journeys"][0]["commit_url"].as_str().unwrap();
    assert!(commit_url.starts_with(sim), "{commit_url} is not on the simulator {sim}");
    let r = http.get(commit_url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{commit_url}");
    let r = http.get(format!("{sim}/GaloyMoney/lana-bank/commit/0000000000")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // The landing page in a real browser: Chromium builds the tables a person reads (stages
    // with their running builds, commits in flight with what they wait for), and the build links
    // on it open the simulated Concourse's build page there too.
    let dom = crate::support::chromium_dom(&urls["landing page"]);
    for heading in ["<h2>Stages</h2>", "<h2>In flight</h2>", "<h2>Last deployments</h2>", "<h2>Sources</h2>"] {
        assert!(dom.contains(heading), "{heading} not rendered:\n{dom}");
    }
    for stage in ["tests", "build-rc", "testflight", "staging"] {
        assert!(dom.contains(&format!("<td>{stage}</td>")), "stage {stage} not in the rendered page:\n{dom}");
    }
    let build_links: Vec<String> = crate::support::hrefs(&dom).into_iter().filter(|h| h.contains("/builds/")).collect();
    let first = build_links.first().unwrap_or_else(|| panic!("no build link on the rendered page:\n{dom}"));
    assert!(first.starts_with(sim), "{first} is not on the simulator {sim}");
    let build_page = crate::support::chromium_dom(first);
    let job = first.split("/jobs/").nth(1).unwrap().split('/').next().unwrap();
    assert!(build_page.contains(job) && build_page.contains("status <b>"), "{first} in the browser:\n{build_page}");
    // The demo's environments: production moves too (the release habit), and each row of the
    // table links to the commit page of what runs there, which the browser renders as a
    // waterfall with its stages.
    for env in ["staging", "qa", "production"] {
        let row = dom.split(&format!("<tr id=\"env-{env}\">")).nth(1).unwrap_or_else(|| panic!("no {env} row:\n{dom}"));
        let row = row.split("</tr>").next().unwrap();
        assert!(row.contains("<a href=\"/journeys/"), "{env}: nothing runs there in the demo:\n{row}");
    }
    let commit_page = crate::support::hrefs(&dom)
        .into_iter()
        .find(|h| h.starts_with("/journeys/"))
        .map(|h| format!("{}{h}", urls["landing page"].trim_end_matches('/')))
        .expect("a commit page link");
    let page = crate::support::chromium_dom(&commit_page);
    assert!(
        page.contains("<table id=\"stages\">") && page.contains("data-stage=\"staging\""),
        "{commit_page}:\n{page}"
    );
    // --state keeps the store where asked (each run starts it afresh: the simulator's address changes).
    assert!(state.path().join("state.db").exists());
    drop(demo);
}

/// The same seed gives the same history, whatever the wall-clock time: the simulated clock
/// starts at a moment derived from the seed, a weekday with a commit in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_history_and_starts_busy() {
    let run = |seed: u64| async move {
        let opts = deploy_journey::demo::DemoOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            sim_listen: "127.0.0.1:0".parse().unwrap(),
            speed: 60.0,
            seed,
            history: std::time::Duration::from_secs(2 * 86_400),
            state: None,
        };
        let demo = deploy_journey::demo::start(&opts).await.unwrap();
        let head = demo.sim.with_world(|w| w.tracked_repo().head(&w.topology.tracked_branch).cloned().unwrap());
        let in_flight = demo.sim.with_world(|w| {
            w.concourse.builds.iter().filter(|b| b.status.is_running()).map(|b| b.id).collect::<Vec<_>>()
        });
        ((demo.started_at, demo.history.commits, demo.history.builds, head), in_flight.len())
    };
    let a = run(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let b = run(1).await;
    // (Which builds run a few simulated seconds in may differ: the clock is live.)
    assert_eq!(a.0, b.0, "two runs with seed 1");
    assert!(a.1 > 0, "no build running at the start");
    let c = run(2).await;
    assert_ne!((a.0.0, &a.0.3), (c.0.0, &c.0.3), "seeds 1 and 2 gave the same start");
}
