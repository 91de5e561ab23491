//! The lana workload's pull requests: every generated commit but the bots' `[ci skip]` pushes
//! is the squash merge of a pull request with a history (commits, draft, reviews, Actions
//! runs). Main stays exactly what it was, and what the exporter reads through GitHub's API
//! equals the model.

use std::collections::HashMap;
use std::sync::Arc;

use deploy_journey::core::premerge::Origin;
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::{Action, World};
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;
use deploy_journey::sources::github::GithubSource;
use deploy_journey::sources::telemetry::SourceTelemetry;

use crate::support::{START, init_crypto};

const DAY: i64 = 86_400;

fn world(days: i64, pulls: bool) -> World {
    let mut w = World::new(Topology::builtin("lana").unwrap(), START, 3);
    for (at, a) in LanaWorkload::new(3).generate(START, START + days * DAY) {
        let a = match a {
            Action::MergedPull { repo, branch, spec, .. } if !pulls => Action::Commit { repo, branch, spec },
            other => other,
        };
        w.schedule_action(at, a);
    }
    w.advance_to(START + days * DAY + 3 * 3600);
    w
}

/// The tracked branch: each commit's sha, parent, message, files, author and times.
fn main_line(w: &World) -> Vec<String> {
    let r = w.repo(&w.topology.tracked_repo).unwrap();
    r.branches[&w.topology.tracked_branch]
        .iter()
        .map(|s| {
            let c = &r.commits[s];
            format!(
                "{s} {:?} {:?} {:?} {} {} {}",
                c.parent,
                c.message,
                c.file_names(),
                c.author.name,
                c.author_date,
                c.committer_date
            )
        })
        .collect()
}

#[test]
fn the_workloads_pull_requests_leave_main_as_it_was() {
    let (with, without) = (world(4, true), world(4, false));
    let line = main_line(&with);
    assert!(line.len() > 20, "{} commits", line.len());
    assert_eq!(line, main_line(&without), "main differs once pull requests are recorded");
    let repo = with.repo(&with.topology.tracked_repo).unwrap();
    // Every generated commit but the bots' `[ci skip]` pushes came from a pull request.
    let generated = LanaWorkload::new(3).commits(START, START + 4 * DAY);
    let wanted = generated.iter().filter(|c| !c.message.contains("[ci skip]")).count();
    let workload_pulls = repo.pulls.iter().filter(|p| p.head_ref.ends_with(&format!("/pr-{}", p.number))).count();
    assert_eq!(workload_pulls, wanted, "of {} generated commits", generated.len());
}

/// Four simulated days through the real GitHub source: every commit's origin equals the model.
#[tokio::test]
async fn the_workloads_pull_requests_read_through_the_api_equal_the_model() {
    init_crypto();
    let w = world(4, true);
    let now = w.now;
    let sim = Sim::new(w, SimClock::new(now, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    let _task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });
    let cfg = crate::journeys::example_config("lana", &url);
    let mut gh = GithubSource::new(cfg.github(), Arc::new(SourceTelemetry::new())).unwrap();
    let shas: Vec<String> = gh
        .poll(now)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|f| match f {
            deploy_journey::core::journey::Fact::Commit(c) if c.committer_date >= START => Some(c.sha),
            _ => None,
        })
        .collect();
    let mut phases: HashMap<&str, Vec<i64>> = HashMap::new();
    let (mut pulls, mut direct, mut drafts, mut reruns) = (0, 0, 0, 0);
    for sha in &shas {
        let origin = gh.origin(sha).await.unwrap();
        let model = sim.with_world(|w| {
            let repo = w.repo(&w.topology.tracked_repo).unwrap();
            repo.pulls.iter().find(|p| p.merge_commit_sha.as_deref() == Some(sha.as_str())).cloned().map(|pr| {
                let branch = &repo.branches[&pr.head_ref];
                let first = repo.commits[&branch[1]].author_date;
                let head = branch.last().unwrap().clone();
                let runs: Vec<_> = deploy_journey::sim::github_api::workflow_runs(repo, now)
                    .into_iter()
                    .filter(|r| r.head_sha == head)
                    .collect();
                (pr, first, head, runs)
            })
        });
        match (origin, model) {
            (Origin::Direct, None) => direct += 1,
            (Origin::Pull(p), Some((pr, first, head, runs))) => {
                assert_eq!((p.number, p.opened_at, Some(p.merged_at)), (pr.number, pr.created_at, pr.merged_at));
                // The topology's release PRs reuse one force-pushed bot branch, which the
                // model keeps only as it is now: their head history is not compared.
                if !pr.head_ref.ends_with(&format!("/pr-{}", pr.number)) {
                    continue;
                }
                pulls += 1;
                assert_eq!((p.first_commit_at, p.ready_at, &p.head_sha), (Some(first), pr.ready_at, &head));
                assert_eq!(p.labels, pr.labels);
                assert_eq!(p.reviews.len(), pr.reviews.len(), "#{}", p.number);
                let start = runs.iter().filter(|r| r.attempt == 1).map(|r| r.created_at).min();
                let end = runs.iter().map(|r| r.completed_at).max();
                assert_eq!(p.checks_span(), start.zip(end), "#{}", p.number);
                assert!(end.is_none_or(|e| e <= p.merged_at), "#{}: checks end after the merge", p.number);
                assert_eq!(p.reruns(), runs.iter().filter(|r| r.attempt > 1).count() as u32);
                drafts += usize::from(p.ready_at.is_some());
                reruns += p.reruns();
                for (name, from, to) in p.stage_times() {
                    assert!(to >= from, "#{}: {name}", p.number);
                    phases.entry(name).or_default().push(to - from);
                }
            }
            (o, m) => panic!("{sha}: read {o:?}, model {:?}", m.map(|m| m.0.number)),
        }
    }
    assert!(pulls > 20 && direct >= 1, "{pulls} pull requests, {direct} direct pushes");
    assert!(drafts >= 1 && reruns >= 1, "{drafts} drafts, {reruns} re-runs");
    let median = |v: &mut Vec<i64>| {
        v.sort();
        v[v.len() / 2]
    };
    let m: HashMap<&str, i64> = phases.iter_mut().map(|(k, v)| (*k, median(v))).collect();
    println!("{pulls} pull requests, {direct} direct pushes, {drafts} drafts, {reruns} re-runs; median phases {m:?}");
    for name in ["coding", "pickup", "checks", "merge"] {
        assert!(m.contains_key(name), "no {name} phase");
    }
    assert!((600..=3 * DAY).contains(&m["coding"]), "coding {}", m["coding"]);
    assert!((600..=3600).contains(&m["checks"]), "checks {}", m["checks"]);
}
