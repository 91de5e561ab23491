//! Ground truth for deployments, from the simulator's own model of what each cepler deploy
//! build prepared and recorded (never from the exporter's logic): per environment, every
//! finished deploy build with the tracked commits it brought, whether it went forward, back or
//! redeployed the running version, and which later deployment shows it failed (its build
//! failed; it was rolled back; a revert of one of its commits, or a hotfix, was deployed within
//! the failure window) and restored service. `GET /_sim/deployments` serves it in the shape of
//! the exporter's `/api/v1/deployments` (plus `removed`), `GET /_sim/environments` the figures.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::engine::World;
use super::model::{BuildId, BuildStatus, Sha};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildRef {
    pub pipeline: String,
    pub job: String,
    pub id: BuildId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedBy {
    pub reason: &'static str,
    pub by: Culprit,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Culprit {
    pub build: BuildRef,
    pub commits: Vec<Sha>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    pub build: BuildRef,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentTruth {
    /// cepler's environment name.
    pub environment: String,
    pub build: BuildRef,
    pub start: i64,
    pub end: i64,
    /// `success` or `failure`.
    pub result: &'static str,
    /// `forward`, `rollback` or `redeploy`, against what ran before it.
    pub kind: &'static str,
    /// Tracked commits it brought that did not run there before, oldest first.
    pub commits: Vec<Sha>,
    /// The newest tracked commit of the version it deployed.
    pub newest_commit: Option<Sha>,
    /// A rollback's commits that no longer run, oldest first.
    pub removed: Vec<Sha>,
    pub failed: Option<FailedBy>,
    /// Every commit it brought is a revert or a hotfix.
    pub rework: bool,
    pub recovered_by: Option<Recovery>,
    /// Commit → seconds from its commit time to this deployment's end, for commits deployed
    /// there for the first time.
    pub lead_times: BTreeMap<Sha, i64>,
}

/// The DORA figures and the present state of one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvironmentTruth {
    pub environment: String,
    pub upstream: Option<String>,
    pub running: Option<Running>,
    /// Tracked commits the upstream environment (or main, for the first) has and this one not.
    pub behind: Vec<Sha>,
    /// A gated environment whose upstream runs something newer and no deploy build is on it.
    pub awaiting_approval: bool,
    /// Successful deployments that changed what runs (forward and rollbacks).
    pub deployments: usize,
    pub attempts_success: usize,
    pub attempts_failure: usize,
    pub redeployments: usize,
    pub rollbacks: usize,
    pub failed_deployments: BTreeMap<&'static str, usize>,
    /// failed deployments / (deployments + failed attempts).
    pub change_fail_rate: Option<f64>,
    pub rework_deployments: usize,
    pub recovery_seconds: Vec<i64>,
    pub lead_time_seconds: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Running {
    pub build: BuildRef,
    pub newest_commit: Option<Sha>,
    pub since: i64,
}

impl World {
    fn build_ref(&self, id: BuildId) -> BuildRef {
        let b = self.concourse.build(id).expect("deploy build exists");
        let p = &self.concourse.pipelines[b.pipeline];
        BuildRef { pipeline: p.name.clone(), job: p.jobs[b.job].name.clone(), id, name: b.name.clone() }
    }

    /// Tracked commits of the version build `id` deployed (what runs after it succeeds).
    fn deployed_set(&self, id: BuildId) -> BTreeSet<(usize, Sha)> {
        let repo = self.tracked_repo();
        let branch = &self.topology.tracked_branch;
        let Some(list) = repo.branches.get(branch) else { return BTreeSet::new() };
        list.iter()
            .enumerate()
            .skip(1) // the initial commit ran everywhere before the world began
            .filter(|(_, s)| !self.emitting_resources(s).is_empty() && self.build_contains(id, s))
            .map(|(i, s)| (i, s.clone()))
            .collect()
    }

    /// Hotfix commits of the tracked repo: merged pull requests labelled `hotfix`.
    fn hotfixes(&self) -> BTreeSet<Sha> {
        self.tracked_repo()
            .pulls
            .iter()
            .filter(|p| p.labels.iter().any(|l| l == "hotfix"))
            .filter_map(|p| p.merge_commit_sha.clone())
            .collect()
    }

    /// Every environment's deployments, oldest first.
    pub fn deployment_truth(&self, failure_window: i64) -> BTreeMap<String, Vec<DeploymentTruth>> {
        let repo = self.tracked_repo();
        let hotfixes = self.hotfixes();
        let mut by_env: BTreeMap<String, Vec<BuildId>> = BTreeMap::new();
        for (id, (env, _)) in &self.deploys {
            let finished = self.concourse.build(*id).is_some_and(|b| b.status.is_finished() && b.end_time.is_some());
            if finished {
                by_env.entry(env.clone()).or_default().push(*id);
            }
        }
        let mut out = BTreeMap::new();
        for (env, mut ids) in by_env {
            ids.sort_by_key(|id| self.concourse.build(*id).and_then(|b| b.end_time));
            let mut running: BTreeSet<(usize, Sha)> = BTreeSet::new();
            let mut ever: BTreeSet<Sha> = BTreeSet::new();
            let mut rows: Vec<DeploymentTruth> = vec![];
            // Index in `rows` of the deployment whose version runs now.
            let mut running_row: Option<usize> = None;
            for id in ids {
                let b = self.concourse.build(id).expect("exists");
                let ok = b.status == BuildStatus::Succeeded;
                let set = self.deployed_set(id);
                let newest = set.iter().next_back().map(|(i, _)| *i);
                let before = running.iter().next_back().map(|(i, _)| *i);
                let kind = match newest.cmp(&before) {
                    std::cmp::Ordering::Greater => "forward",
                    std::cmp::Ordering::Less => "rollback",
                    std::cmp::Ordering::Equal => "redeploy",
                };
                let commits: Vec<Sha> = set.difference(&running).map(|(_, s)| s.clone()).collect();
                let removed: Vec<Sha> = if kind == "rollback" {
                    running.difference(&set).map(|(_, s)| s.clone()).collect()
                } else {
                    vec![]
                };
                let end = b.end_time.expect("finished");
                let mut lead_times = BTreeMap::new();
                if ok {
                    for s in &commits {
                        if !ever.contains(s)
                            && let Some(c) = repo.commits.get(s)
                        {
                            lead_times.insert(s.clone(), end - c.committer_date);
                        }
                    }
                }
                let row = DeploymentTruth {
                    environment: env.clone(),
                    build: self.build_ref(id),
                    start: b.start_time.unwrap_or(end),
                    end,
                    result: if ok { "success" } else { "failure" },
                    kind,
                    commits: if kind == "rollback" { vec![] } else { commits.clone() },
                    newest_commit: set.iter().next_back().map(|(_, s)| s.clone()),
                    removed,
                    failed: None,
                    rework: ok
                        && !commits.is_empty()
                        && kind != "rollback"
                        && commits.iter().all(|s| hotfixes.contains(s) || self.reverts.contains_key(s)),
                    recovered_by: None,
                    lead_times,
                };
                let me = rows.len();
                rows.push(row);
                if !ok {
                    let by = Culprit { build: self.build_ref(id), commits: rows[me].commits.clone() };
                    rows[me].failed = Some(FailedBy { reason: "build_failed", by });
                    continue;
                }
                // What this deployment reveals about earlier ones (first reason wins).
                let culprit = Culprit { build: self.build_ref(id), commits: vec![] };
                if kind == "rollback"
                    && let Some(r) = running_row
                    && rows[r].failed.is_none()
                {
                    let by = Culprit { commits: rows[me].removed.clone(), ..culprit.clone() };
                    rows[r].failed = Some(FailedBy { reason: "rolled_back", by });
                }
                if kind == "forward" {
                    let reverted: Vec<(Sha, Sha)> =
                        commits.iter().filter_map(|s| self.reverts.get(s).map(|t| (s.clone(), t.clone()))).collect();
                    for d in rows.iter_mut().take(me) {
                        if d.result != "success"
                            || d.failed.is_some()
                            || d.kind == "redeploy"
                            || end - d.end > failure_window
                        {
                            continue;
                        }
                        let fixes: Vec<Sha> =
                            reverted.iter().filter(|(_, t)| d.commits.contains(t)).map(|(r, _)| r.clone()).collect();
                        if !fixes.is_empty() {
                            let by = Culprit { commits: fixes, ..culprit.clone() };
                            d.failed = Some(FailedBy { reason: "reverted", by });
                        }
                    }
                    let hot: Vec<Sha> = commits.iter().filter(|s| hotfixes.contains(*s)).cloned().collect();
                    if !hot.is_empty()
                        && let Some(r) = running_row
                        && rows[r].failed.is_none()
                        && rows[r].kind == "forward"
                        && end - rows[r].end <= failure_window
                    {
                        let by = Culprit { commits: hot, ..culprit.clone() };
                        rows[r].failed = Some(FailedBy { reason: "hotfixed", by });
                    }
                }
                // Service is restored by the first successful deployment after a failed one.
                let here = Recovery { build: self.build_ref(id), at: end };
                for d in rows.iter_mut().take(me) {
                    let by_this = match d.failed.as_ref() {
                        Some(f) if f.reason == "build_failed" => true,
                        Some(f) => f.by.build.id == id,
                        None => false,
                    };
                    if by_this && d.recovered_by.is_none() {
                        d.recovered_by = Some(here.clone());
                    }
                }
                if kind != "redeploy" {
                    running = set;
                    running_row = Some(me);
                }
                ever.extend(commits);
            }
            out.insert(env, rows);
        }
        out
    }

    /// Every cepler environment: what runs, what waits, and its DORA figures.
    pub fn environment_truth(&self, failure_window: i64) -> Vec<EnvironmentTruth> {
        let deployments = self.deployment_truth(failure_window);
        let envs = self.cepler_environments();
        let tracked = self.tracked_repo();
        let main: Vec<Sha> = tracked.branches.get(&self.topology.tracked_branch).cloned().unwrap_or_default();
        let running_set = |env: &str| -> Option<(BTreeSet<Sha>, &DeploymentTruth)> {
            let rows = deployments.get(env)?;
            let last = rows.iter().rev().find(|d| d.result == "success" && d.kind != "redeploy")?;
            let set = self.deployed_set(last.build.id).into_iter().map(|(_, s)| s).collect();
            Some((set, last))
        };
        let mut out = vec![];
        for (env, upstream, gated, p, j) in envs {
            let rows = deployments.get(&env).cloned().unwrap_or_default();
            let mine = running_set(&env);
            let have: BTreeSet<Sha> = mine.as_ref().map(|(s, _)| s.clone()).unwrap_or_default();
            let theirs: BTreeSet<Sha> = match &upstream {
                Some(u) => running_set(u).map(|(s, _)| s).unwrap_or_default(),
                None => main.iter().skip(1).filter(|s| !self.emitting_resources(s).is_empty()).cloned().collect(),
            };
            let behind: Vec<Sha> = main.iter().filter(|s| theirs.contains(*s) && !have.contains(*s)).cloned().collect();
            let busy = self.concourse.pipelines[p].jobs[j].builds.iter().any(|b| {
                self.concourse
                    .build(*b)
                    .is_some_and(|b| matches!(b.status, BuildStatus::Pending | BuildStatus::Started))
            });
            let ok: Vec<&DeploymentTruth> = rows.iter().filter(|d| d.result == "success").collect();
            let mut failed: BTreeMap<&'static str, usize> = BTreeMap::new();
            for d in &rows {
                if let Some(f) = &d.failed {
                    *failed.entry(f.reason).or_default() += 1;
                }
            }
            let deployments_n = ok.iter().filter(|d| d.kind != "redeploy").count();
            let failures = rows.len() - ok.len();
            let denominator = deployments_n + failures;
            out.push(EnvironmentTruth {
                environment: env.clone(),
                upstream: upstream.clone(),
                running: mine.map(|(_, d)| Running {
                    build: d.build.clone(),
                    newest_commit: d.newest_commit.clone(),
                    since: d.end,
                }),
                awaiting_approval: gated && !behind.is_empty() && !busy,
                behind,
                deployments: deployments_n,
                attempts_success: ok.len(),
                attempts_failure: failures,
                redeployments: ok.iter().filter(|d| d.kind == "redeploy").count(),
                rollbacks: ok.iter().filter(|d| d.kind == "rollback").count(),
                change_fail_rate: (denominator > 0).then(|| failed.values().sum::<usize>() as f64 / denominator as f64),
                failed_deployments: failed,
                rework_deployments: ok.iter().filter(|d| d.rework).count(),
                recovery_seconds: rows
                    .iter()
                    .filter_map(|d| {
                        let r = d.recovered_by.as_ref()?;
                        Some(r.at - d.end)
                    })
                    .collect(),
                lead_time_seconds: ok.iter().flat_map(|d| d.lead_times.values().copied()).collect(),
            });
        }
        out
    }
}

/// `24h`, `90m`, `3600` (seconds): the failure window of `?failure_window=`.
pub fn parse_window(s: Option<&str>) -> Result<i64, String> {
    match s {
        None => Ok(86_400),
        Some(s) => match s.parse::<i64>() {
            Ok(n) => Ok(n),
            Err(_) => humantime::parse_duration(s)
                .map(|d| d.as_secs() as i64)
                .map_err(|e| format!("failure_window {s:?}: {e}")),
        },
    }
}
