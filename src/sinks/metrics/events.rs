//! The journey metrics' increments and observations, typed by the catalogue's [`Metric`].

use crate::core::deployments::{DeployKind, Deployment};
use crate::core::journey::{BuildStatus, CoreConfig, Derived, Journey, Outcome, StageBuild};
use crate::core::premerge::Origin;

use super::Labels;
use super::catalogue::Metric;

/// One journey-metric event and when it happened (Unix seconds): a counter increment
/// (`value: None`) or a histogram observation. Scrapes add them up; `backfill` steps the
/// cumulative series at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: i64,
    pub metric: Metric,
    pub labels: Labels,
    pub value: Option<f64>,
    pub exemplar: Option<Labels>,
    /// Which of two exemplars at the same `at` is the newer: a build's or deployment's id, a
    /// commit's time (in a batch, the newest commit's trace is the one to show).
    pub rank: i64,
}

/// Every counter increment and histogram observation the journeys and stage builds make, with
/// the time each happened: a build's at its end, a commit's at its commit time, a wait at the
/// start of the build that ended it, an outcome and a lead time at the deployment's end.
pub fn events<'a>(
    journeys: impl Iterator<Item = &'a Journey>,
    builds: &[StageBuild],
    derived: &Derived,
    core: &CoreConfig,
) -> Vec<Event> {
    let mut ev = vec![];
    let mut count = |at: i64, metric: Metric, values: &[&str]| {
        ev.push(Event { at, metric, labels: metric.labels(values), value: None, exemplar: None, rank: 0 })
    };
    let stages: Vec<&str> = core.stages.iter().map(|s| s.name.as_str()).collect();
    let mut obs = vec![];
    let observe = |at: i64, metric: Metric, values: &[&str], v: i64, exemplar: Option<Labels>, rank: i64| Event {
        at,
        metric,
        labels: metric.labels(values),
        value: Some(v.max(0) as f64),
        exemplar,
        rank,
    };
    for b in builds {
        let st = stages[b.stage];
        let d = b.end - b.start;
        obs.push(observe(
            b.end,
            Metric::StageDuration,
            &[st, result_label(b.status)],
            d,
            b.head.as_deref().map(exemplar),
            b.build_id,
        ));
        count(b.end, Metric::StageAttempts, &[st]);
        if matches!(b.status, BuildStatus::Failed | BuildStatus::Errored) {
            count(b.end, Metric::StageFailures, &[st]);
        }
        if let Some(m) = derived.build_methods.get(&b.build_id) {
            count(b.end, Metric::Attributions, &[m.as_str()]);
        }
        if derived.gap_builds.contains(&b.build_id) {
            count(b.end, Metric::LineageGaps, &[st]);
        }
    }
    // Deployments: every event belongs to the deploy build it is about, so the builds given
    // (all of them for a scrape, the pruned ones for retention) decide what is counted.
    let ids: std::collections::HashSet<_> = builds.iter().map(|b| b.build_id).collect();
    let mut deploy_ev = vec![];
    for d in derived.deployments.iter().filter(|d| ids.contains(&d.build_id)) {
        let env = d.environment.as_str();
        let ex = Some(deploy_exemplar(d));
        let mut bump = |at: i64, metric: Metric, values: &[&str]| {
            deploy_ev.push(Event {
                at,
                metric,
                labels: metric.labels(values),
                value: None,
                exemplar: ex.clone(),
                rank: d.build_id,
            })
        };
        bump(d.end, Metric::DeploymentAttempts, &[env, if d.succeeded { "success" } else { "failure" }]);
        if d.changed() {
            bump(d.end, Metric::Deployments, &[env]);
        }
        match (d.succeeded, d.kind) {
            (true, DeployKind::Redeploy) => bump(d.end, Metric::Redeployments, &[env]),
            (true, DeployKind::Rollback) => bump(d.end, Metric::Rollbacks, &[env]),
            _ => {}
        }
        if d.rework && d.changed() {
            bump(d.end, Metric::ReworkDeployments, &[env]);
        }
        if let Some(f) = &d.failed {
            bump(f.known_at, Metric::FailedDeployments, &[env, f.reason.as_str()]);
            if let Some((_, at)) = d.recovered_by {
                obs.push(observe(at, Metric::FailedDeploymentRecovery, &[env], at - d.end, ex.clone(), d.build_id));
            }
        }
        if let (Some(w), Some(start)) = (d.gate_wait, d.start) {
            obs.push(observe(start, Metric::GateWait, &[env], w, ex.clone(), d.build_id));
        }
    }
    for j in journeys {
        let ct = j.classification.change_type.as_str();
        count(j.commit_time, Metric::Commits, &[ct]);
        match &j.origin {
            Some(Origin::Direct) => count(j.commit_time, Metric::CommitOrigins, &["direct"]),
            Some(Origin::Pull(p)) => {
                count(p.merged_at, Metric::CommitOrigins, &["pull_request"]);
                let stages = p.stages();
                for _ in 0..stages.reruns {
                    count(p.merged_at, Metric::PreMergeCheckReruns, &[]);
                }
                for (name, d) in stages.named() {
                    if let Some(d) = d {
                        obs.push(observe(
                            p.merged_at,
                            Metric::PreMergeStageDuration,
                            &[name, ct],
                            d,
                            Some(exemplar(&j.sha)),
                            j.commit_time,
                        ));
                    }
                }
            }
            None => {}
        }
        if j.vanished {
            continue;
        }
        // Before the build history read: it never ends, and is counted as what it is.
        if j.outcome == Outcome::Incomplete {
            count(j.commit_time, Metric::CommitOutcomes, &[j.outcome.as_str()]);
        }
        for (i, s) in j.stages.iter().enumerate() {
            if let Some(w) = s.wait() {
                let at = s.start.unwrap_or(j.commit_time);
                obs.push(observe(at, Metric::StageWait, &[stages[i]], w, Some(exemplar(&j.sha)), j.commit_time));
            }
        }
        // Each environment's lead time as the commit reaches it (its first deployment there);
        // the outcome when the journey ends, at its last environment.
        for (env, at) in &j.deployed_at {
            if let Some(lt) = j.lead_time(env) {
                obs.push(observe(*at, Metric::LeadTime, &[env, ct], lt, Some(exemplar(&j.sha)), j.commit_time));
            }
        }
        if j.ended {
            let ended_at = j.deployed_at.values().max().copied().unwrap_or(j.commit_time);
            count(ended_at, Metric::CommitOutcomes, &[j.outcome.as_str()]);
        }
    }
    ev.extend(deploy_ev);
    ev.extend(obs);
    ev
}

/// The environment gauges over history, as events where they change: commits behind and the
/// oldest of them (at every commit and every change of what runs), and the running commit's
/// time (at every change). The same rule the live gauges follow
/// ([`EnvironmentNow`](crate::core::deployments::EnvironmentNow)), applied to the commits
/// there were at each time: the last events equal the live values.
pub fn environment_levels(derived: &Derived) -> Vec<Event> {
    let mut out = vec![];
    // Journeys that count: not vanished, not incomplete; (time, index), oldest first.
    let mut counted: Vec<(i64, usize)> = derived
        .journeys
        .iter()
        .enumerate()
        .filter(|(_, j)| !j.vanished && j.outcome != Outcome::Incomplete)
        .map(|(i, j)| (j.commit_time, i))
        .collect();
    counted.sort();
    for env in &derived.environments {
        let labels = vec![("environment".to_string(), env.name.clone())];
        let mut at = |t: i64, metric: Metric, v: f64| {
            out.push(Event { at: t, metric, labels: labels.clone(), value: Some(v), exemplar: None, rank: 0 })
        };
        for c in &env.changes {
            at(c.at, Metric::EnvironmentRunningCommitTimestamp, c.commit_time.unwrap_or(0) as f64);
        }
        let mut times: Vec<i64> = counted.iter().map(|(t, _)| *t).chain(env.changes.iter().map(|c| c.at)).collect();
        times.sort();
        times.dedup();
        // Per journey, whether the version running then lacks it: worked out once per change.
        let mut lacks = vec![true; derived.journeys.len()];
        let mut current = 0;
        // `counted[..seen]` are the commits there were by `t`; of them, `behind` lack the
        // version, the oldest at `oldest` (counted is oldest first). Counted again from the
        // start only when what runs changes, else carried forward: linear between changes.
        let (mut seen, mut behind, mut oldest) = (0usize, 0usize, None::<i64>);
        for t in times {
            let upto = env.changes.partition_point(|c| c.at <= t);
            let from = if upto != current {
                current = upto;
                let c = &env.changes[upto - 1];
                for (i, j) in derived.journeys.iter().enumerate() {
                    lacks[i] = c.lacks(i, &j.classification);
                }
                (behind, oldest) = (0, None);
                0
            } else {
                seen
            };
            seen = counted.partition_point(|(ct, _)| *ct <= t);
            for (ct, i) in &counted[from..seen] {
                if lacks[*i] {
                    behind += 1;
                    oldest.get_or_insert(*ct);
                }
            }
            at(t, Metric::CommitsBehind, behind as f64);
            at(t, Metric::OldestUndeployedCommitAge, oldest.map_or(-1.0, |o| o as f64));
        }
    }
    out
}

fn exemplar(sha: &str) -> Labels {
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    vec![pair("trace_id", sha.get(..32).unwrap_or(sha)), pair("sha", sha.get(..7).unwrap_or(sha))]
}

/// A deployment's exemplar: its build id, its newest commit and that commit's trace.
fn deploy_exemplar(d: &Deployment) -> Labels {
    let mut l = vec![("build_id".to_string(), d.build_id.to_string())];
    if let Some(sha) = &d.newest_commit {
        l.extend(exemplar(sha));
    }
    l
}

fn result_label(s: BuildStatus) -> &'static str {
    match s {
        BuildStatus::Succeeded => "succeeded",
        BuildStatus::Failed => "failed",
        BuildStatus::Errored => "errored",
        BuildStatus::Aborted => "aborted",
        BuildStatus::Pending | BuildStatus::Started => "running",
    }
}
