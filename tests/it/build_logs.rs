//! A failed build's log excerpt (issue #18): `serve` reads the end of its event stream once,
//! stores it, and shows it in the JSON API and under the failed attempt on the journey page; a
//! restart does not read it again, and a read that fails is tried again later.

use std::time::{Duration, Instant};

use deploy_journey::sim::workload::Scenario;

use crate::restart::{exporter, sim_for};
use crate::support::client;

/// Requests the simulator answered on a build's event stream.
fn event_reads(sim: &deploy_journey::sim::Sim) -> u64 {
    sim.stats.rows().iter().filter(|r| r.route.ends_with("/events") && r.status == 200).map(|r| r.count).sum()
}

/// The failed testflight attempt of the journey whose subject is `subject`, once its excerpt is in.
async fn failed_attempt(base: &str, subject: &str) -> Option<(String, serde_json::Value)> {
    let list: serde_json::Value =
        client().get(format!("{base}/api/v1/journeys")).send().await.ok()?.json().await.ok()?;
    let j = list["journeys"].as_array()?.iter().find(|j| j["subject"] == subject)?;
    let sha = j["sha"].as_str()?.to_string();
    let one: serde_json::Value =
        client().get(format!("{base}/api/v1/journeys/{sha}")).send().await.ok()?.json().await.ok()?;
    let a = one["stages"]
        .as_array()?
        .iter()
        .flat_map(|s| s["attempts"].as_array().cloned().unwrap_or_default())
        .find(|a| a["status"] == "failed" && a.get("log_excerpt").is_some())?;
    Some((sha, a))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_builds_log_excerpt_is_read_once_shown_and_retried_after_a_failure() {
    crate::support::init_crypto();
    let sc =
        Scenario::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/testflight-fails-then-fix.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (sim, url, _task) = sim_for(&sc, start).await;
    // The first read of any event stream fails: it must be counted and tried again.
    let rule =
        serde_json::json!({"kind": "server_error", "service": "concourse", "path_contains": "/events", "count": 1});
    sim.faults.add(deploy_journey::sim::faults::FaultRule::parse(rule.to_string().as_bytes()).unwrap());
    let mut e = exporter(dir.path(), "logs", &url);
    e.start();
    let base = e.url();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (sha, attempt) = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(found) = failed_attempt(&base, "feat: new health endpoint").await {
            break found;
        }
        if Instant::now() >= deadline {
            let list = client().get(format!("{base}/api/v1/journeys")).send().await.unwrap().text().await.unwrap();
            let rows: Vec<_> = sim.stats.rows().into_iter().filter(|r| r.route.ends_with("/events")).collect();
            panic!("no log excerpt for a's failed testflight; event stream reads: {rows:?}\n{list}");
        }
    };
    let text = attempt["log_excerpt"].as_str().unwrap();
    assert!(text.contains("step 'assert deployment healthy' failed"), "{text}");
    assert!(text.ends_with("exited with status 1"), "{text}");
    let metrics = client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let failed_requests: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("deploy_journey_source_requests_total{")
                && l.contains("source=\"concourse\"")
                && l.contains("outcome=\"error\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failed_requests >= 1.0, "the failed read is counted:\n{metrics}");
    // The page shows it under the failed attempt, escaped, in a <pre>.
    let page = client().get(format!("{base}/journeys/{sha}")).send().await.unwrap().text().await.unwrap();
    let build = attempt["build_id"].as_i64().unwrap();
    let pre = format!("<pre class=\"log\" data-build=\"{build}\">");
    assert!(page.contains(&pre), "no excerpt under build {build}");
    assert!(
        page.contains("step &#39;assert deployment healthy&#39; failed")
            || page.contains("step 'assert deployment healthy' failed")
    );

    // Read once: a restart loads it from the store instead of asking Concourse again.
    let reads = event_reads(&sim);
    e.signal("-TERM");
    tokio::time::sleep(Duration::from_secs(1)).await;
    e.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if failed_attempt(&base, "feat: new health endpoint").await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the excerpt is gone after a restart");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(event_reads(&sim), reads, "a restart read a stored excerpt again");
}
