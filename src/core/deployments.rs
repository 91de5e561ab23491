//! Deployments per environment and the DORA figures derived from them: pure, from the facts,
//! the carries and the journeys.
//!
//! A *deployment* is a finished build of an environment stage's jobs. Its *version* is what
//! it carries; the version's newest commit it delivers whole orders versions. Against the
//! version running before it, a deployment is a `forward` (newer), a `rollback` (older: what
//! runs goes back, the commits it takes out are behind again) or a `redeploy` (the same
//! version: not a change). A deployment *fails* (first known reason wins):
//! - `build_failed`: its build did not succeed;
//! - `rolled_back`: it was what ran when a rollback deployment replaced it;
//! - `reverted`: a commit reverting one it delivered was deployed within the failure window;
//! - `hotfixed`: a hotfix commit was deployed within the window while it ran.
//!
//! It recovers at the first later successful forward or rollback deployment, from the one that
//! revealed the failure on, that does not itself fail. A *rework* deployment delivers only
//! hotfixes and reverts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::core::classify::Classification;
use crate::core::facts::{BuildId, BuildStatus, Facts, Sha};
use crate::core::journey::{CoreConfig, FastMap, Journey, StageState};
use crate::core::lineage::Carry;

/// The `dora:` section as the core uses it.
#[derive(Debug, Clone)]
pub struct DoraConfig {
    /// The environment DORA dashboards and alerts are about.
    pub environment: String,
    /// A revert or hotfix deployed within this many seconds after a deployment fails it.
    pub failure_window: i64,
    /// Change fail rate alert threshold (30 d ratio), exposed as a gauge.
    pub change_fail_rate_slo: f64,
    /// Regexes on the commit subject that make a commit a hotfix.
    pub hotfix_patterns: Vec<regex::Regex>,
    /// Labels of a commit's pull request that make it a hotfix (GitHub label names compare
    /// case-insensitively).
    pub hotfix_labels: Vec<String>,
}

pub const DEFAULT_HOTFIX_PATTERN: &str = r"^(hotfix|fix)(\(.+\))?!?:";

impl Default for DoraConfig {
    fn default() -> Self {
        DoraConfig {
            environment: "production".into(),
            failure_window: 86_400,
            change_fail_rate_slo: 0.15,
            hotfix_patterns: vec![regex::Regex::new(DEFAULT_HOTFIX_PATTERN).expect("a valid default")],
            hotfix_labels: vec!["hotfix".into()],
        }
    }
}

impl DoraConfig {
    pub fn is_hotfix(&self, subject: &str) -> bool {
        self.hotfix_patterns.iter().any(|r| r.is_match(subject))
    }

    /// A hotfix by its subject or by a label of the pull request that landed it.
    pub fn is_hotfix_commit(&self, subject: &str, origin: Option<&crate::core::premerge::Origin>) -> bool {
        self.is_hotfix(subject)
            || origin
                .and_then(|o| o.pull())
                .is_some_and(|p| p.labels.iter().any(|l| self.hotfix_labels.iter().any(|h| h.eq_ignore_ascii_case(l))))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeployKind {
    Forward,
    Rollback,
    Redeploy,
}

impl DeployKind {
    pub const ALL: [DeployKind; 3] = [DeployKind::Forward, DeployKind::Rollback, DeployKind::Redeploy];
    pub fn as_str(self) -> &'static str {
        match self {
            DeployKind::Forward => "forward",
            DeployKind::Rollback => "rollback",
            DeployKind::Redeploy => "redeploy",
        }
    }
}

/// Why a deployment failed, in the order a tie is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailReason {
    BuildFailed,
    RolledBack,
    Reverted,
    Hotfixed,
}

impl FailReason {
    pub const ALL: [FailReason; 4] =
        [FailReason::BuildFailed, FailReason::RolledBack, FailReason::Reverted, FailReason::Hotfixed];
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::BuildFailed => "build_failed",
            FailReason::RolledBack => "rolled_back",
            FailReason::Reverted => "reverted",
            FailReason::Hotfixed => "hotfixed",
        }
    }
}

/// A deployment's failure: why, when it became known, and the deployment and commits that
/// showed it (the failed build itself; the rollback and the commits it took out; the revert or
/// hotfix deployment and those commits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Failure {
    pub reason: FailReason,
    pub known_at: i64,
    pub by_build: BuildId,
    pub by_commits: Vec<Sha>,
}

/// One finished deploy build of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Deployment {
    pub environment: String,
    /// Index of the environment's stage.
    pub stage: usize,
    pub build_id: BuildId,
    pub pipeline: Arc<str>,
    pub job: Arc<str>,
    pub name: Arc<str>,
    pub url: Arc<str>,
    pub start: Option<i64>,
    pub end: i64,
    pub succeeded: bool,
    pub kind: DeployKind,
    /// Commits it delivers that the version running before it did not have, oldest first
    /// (for a failed build: what it would have delivered).
    pub commits: Vec<Sha>,
    /// The newest commit its version delivers whole, when its lineage is known.
    pub newest_commit: Option<Sha>,
    pub failed: Option<Failure>,
    /// Delivers only hotfixes and reverts.
    pub rework: bool,
    /// The deployment that restored service after this one failed, and its end.
    pub recovered_by: Option<(BuildId, i64)>,
    /// For the commits this deployment delivered first: their lead time, in seconds.
    pub lead_times: BTreeMap<Sha, i64>,
    /// At a stage with `approval: true`: from the upstream environment's deployment of its
    /// newest commit to this build's start.
    pub gate_wait: Option<i64>,
    /// For a rollback: the deployment whose version it replaced.
    pub previous: Option<BuildId>,
}

impl Deployment {
    /// Changed what runs: a successful forward or rollback.
    pub fn changed(&self) -> bool {
        self.succeeded && self.kind != DeployKind::Redeploy
    }
}

/// An environment as it is now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentNow {
    pub name: String,
    pub stage: usize,
    /// The deployment whose version runs now (the last successful forward or rollback).
    pub running_build: Option<BuildId>,
    pub running_commit: Option<Sha>,
    /// Commit time of the running commit.
    pub running_commit_time: Option<i64>,
    /// When the running deployment ended.
    pub since: Option<i64>,
    /// Commits on the branch (known, not vanished, not incomplete) the running version lacks.
    pub behind: u64,
    /// Commit time of the oldest of them.
    pub oldest_behind: Option<i64>,
    /// Commits that wait at this environment's gate (stage `approval: true`).
    pub awaiting_approval: u64,
    /// Since when the oldest of them has been ready (the upstream deployment's end).
    pub awaiting_since: Option<i64>,
    /// The journeys (indices in `Derived::journeys`, ascending) counted in `behind`, and those
    /// counted in `awaiting_approval` with the time each has been ready since: what a held
    /// journey (`core::held`) keeps of this environment.
    pub lacking: Vec<usize>,
    pub awaiting: Vec<(usize, Option<i64>)>,
    /// Every change of what runs, oldest first: what `backfill` steps `behind` and the running
    /// commit's time from over history.
    pub changes: Vec<RunningChange>,
}

/// A successful forward or rollback deployment, as what runs changed: enough to say, for any
/// later time before the next change, which commits the running version lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunningChange {
    /// The deployment's end.
    pub at: i64,
    /// Commit time of the running version's newest commit.
    pub commit_time: Option<i64>,
    /// What the version carries: per resource, the newest branch position it has. A few
    /// entries, so a year of changes stays small.
    carry: Carry,
}

impl EnvironmentNow {
    fn count_behind(&mut self, commit_time: i64) {
        self.behind += 1;
        self.oldest_behind = Some(self.oldest_behind.map_or(commit_time, |t| t.min(commit_time)));
    }

    fn count_awaiting(&mut self, ready_at: Option<i64>) {
        self.awaiting_approval += 1;
        if let Some(r) = ready_at {
            self.awaiting_since = Some(self.awaiting_since.map_or(r, |t| t.min(r)));
        }
    }
}

impl RunningChange {
    /// Whether the running version lacks the journey at `i` (its index in
    /// `Derived::journeys`), by the rule [`EnvironmentNow::behind`] counts with.
    pub fn lacks(&self, i: usize, class: &Classification) -> bool {
        !(i < low(&self.carry) || delivers(&self.carry, class, i))
    }
}

/// Which commit a revert commit reverts: `This reverts commit <sha>` in the body (a known
/// commit, full or abbreviated), else `Revert "<subject>"` naming an earlier commit's subject.
pub fn reverted_commit(message: &str, earlier: &[(&str, &str)]) -> Option<usize> {
    if let Some(i) = message.find("This reverts commit ") {
        let rest = &message[i + "This reverts commit ".len()..];
        let sha: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if sha.len() >= 7 {
            let sha = sha.to_ascii_lowercase();
            if let Some(p) = earlier.iter().rposition(|(s, _)| s.starts_with(&sha)) {
                return Some(p);
            }
        }
    }
    let subject = message.lines().next().unwrap_or("");
    let inner = subject.strip_prefix("Revert \"")?;
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    earlier.iter().rposition(|(_, s)| *s == inner)
}

/// Does a build with this carry deliver commit `i` (per its resources; a passive commit rides
/// with any carried descendant; one whose resources it does not carry, with its newest one)?
fn delivers(carry: &Carry, cl: &Classification, i: usize) -> bool {
    let relevant: Vec<usize> = cl.resources.iter().filter_map(|r| carry.get(r).map(|(p, _)| *p)).collect();
    if relevant.is_empty() {
        return carry.values().any(|(p, _)| *p >= i);
    }
    relevant.iter().all(|p| *p >= i)
}

/// The newest commit a carry delivers whole (passive commits only when nothing else is).
fn head(carry: &Carry, class: &[Classification]) -> Option<usize> {
    let max = carry.values().map(|(p, _)| *p).max()?;
    (0..=max.min(class.len().saturating_sub(1)))
        .rev()
        .find(|i| !class[*i].change_type.is_passive() && delivers(carry, &class[*i], *i))
        .or(Some(max))
}

fn low(carry: &Carry) -> usize {
    carry.values().map(|(p, _)| *p).min().unwrap_or(0)
}

/// Everything the computation needs, borrowed from `derive`.
pub(crate) struct Input<'a> {
    pub facts: &'a Facts,
    pub cfg: &'a CoreConfig,
    pub carries: &'a HashMap<BuildId, Carry>,
    pub order: &'a [Sha],
    pub class: &'a [Classification],
    pub journeys: &'a [std::sync::Arc<Journey>],
    pub now: i64,
}

/// The deployments of every environment (per environment in stage order, each oldest first by
/// end) and every environment now.
pub(crate) fn compute(inp: &Input<'_>) -> (Vec<Deployment>, Vec<EnvironmentNow>) {
    let facts = inp.facts;
    let dora = &inp.cfg.dora;
    let n = inp.order.len();
    let pos: FastMap<&str, usize> = inp.order.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    // Reverts and hotfixes, by branch position.
    let mut reverts: FastMap<usize, usize> = FastMap::default();
    let mut hotfix: HashSet<usize, foldhash::fast::FixedState> = HashSet::default();
    let mut earlier: Vec<(&str, &str)> = Vec::with_capacity(n);
    for (i, sha) in inp.order.iter().enumerate() {
        let c = &facts.commits[sha];
        if let Some(t) = reverted_commit(&c.message, &earlier) {
            reverts.insert(i, t);
        }
        if dora.is_hotfix_commit(c.subject(), facts.origins.get(sha)) {
            hotfix.insert(i);
        }
        earlier.push((sha.as_str(), c.subject()));
    }
    let journey_at: FastMap<&str, &Journey> = inp.journeys.iter().map(|j| (j.sha.as_str(), &**j)).collect();
    // Per (stage, build): the branch positions of the journeys it is an attempt of, ascending.
    let mut attempt_of: FastMap<(usize, BuildId), Vec<usize>> = FastMap::default();
    let deploys: Vec<bool> = inp.cfg.stages.iter().map(|st| st.environment.is_some()).collect();
    for (i, j) in inp.journeys.iter().enumerate() {
        // Only deploy stages are looked up below.
        for (si, s) in j.stages.iter().enumerate().filter(|(si, _)| deploys.get(*si) == Some(&true)) {
            for a in &s.attempts {
                attempt_of.entry((si, a.build_id)).or_default().push(i);
            }
        }
    }

    let mut all = vec![];
    let mut envs = vec![];
    for (si, st) in inp.cfg.stages.iter().enumerate() {
        let Some(env) = &st.environment else { continue };
        let mut builds: Vec<_> = facts
            .builds
            .values()
            .filter(|b| {
                b.status.is_finished() && *b.pipeline == *st.pipeline && st.jobs.iter().any(|j| *j.name == *b.job)
            })
            .filter_map(|b| Some((b.end?, b)))
            .collect();
        builds.sort_by_key(|(end, b)| (*end, b.id));
        let mut deps: Vec<Deployment> = vec![];
        let mut changes: Vec<RunningChange> = vec![];
        // The deployment whose version runs (index in deps), and its carry and head.
        let mut running: Option<(usize, &Carry, usize)> = None;
        // Per deployment: the one that ran before it (for rollbacks and hotfixes).
        let mut before: Vec<Option<usize>> = vec![];
        for (end, b) in builds {
            let carry = inp.carries.get(&b.id).filter(|c| !c.is_empty());
            let h = carry.and_then(|c| head(c, inp.class));
            let kind = match (running, h) {
                (Some((_, _, rh)), Some(h)) if h < rh => DeployKind::Rollback,
                (Some((_, _, rh)), Some(h)) if h == rh => DeployKind::Redeploy,
                _ => DeployKind::Forward,
            };
            // What it delivers for the first time: the commits whose journey has this build
            // among its attempts here (a journey's attempts stop at its first success). This
            // needs no other deployment, so forgetting older ones (retention) changes nothing.
            let commits: Vec<usize> = match h {
                Some(h) => {
                    let last = h
                        .max(carry.map_or(0, |c| c.values().map(|(p, _)| *p).max().unwrap_or(0)))
                        .min(n.saturating_sub(1));
                    let at = attempt_of.get(&(si, b.id)).map(|v| v.as_slice()).unwrap_or(&[]);
                    at.iter().copied().filter(|i| *i <= last).collect()
                }
                None => vec![],
            };
            let succeeded = b.status == BuildStatus::Succeeded;
            let mut lead_times = BTreeMap::new();
            if succeeded {
                for i in &commits {
                    let j = journey_at.get(inp.order[*i].as_str());
                    // Only where this deployment is the commit's first one (its lead time).
                    if let Some(j) = j
                        && j.stages[si].attempts.iter().any(|a| a.build_id == b.id)
                        && let Some(lt) = j.lead_time(env)
                    {
                        lead_times.insert(j.sha.clone(), lt);
                    }
                }
            }
            let gate_wait = match (st.approval, kind, h, b.start) {
                (true, DeployKind::Forward, Some(h), Some(start)) => journey_at
                    .get(inp.order[h].as_str())
                    .and_then(|j| j.stages[si].ready_at)
                    .map(|r| (start - r).max(0)),
                _ => None,
            };
            let rework = !commits.is_empty() && commits.iter().all(|i| hotfix.contains(i) || reverts.contains_key(i));
            before.push(running.map(|(r, _, _)| r));
            let previous = running.filter(|_| kind == DeployKind::Rollback).map(|(r, _, _)| deps[r].build_id);
            deps.push(Deployment {
                environment: env.clone(),
                stage: si,
                build_id: b.id,
                pipeline: b.pipeline.clone(),
                job: b.job.clone(),
                name: b.name.clone(),
                url: b.url.clone(),
                start: b.start,
                end,
                succeeded,
                kind,
                commits: commits.iter().map(|i| inp.order[*i].clone()).collect(),
                newest_commit: h.map(|h| inp.order[h].clone()),
                failed: None,
                rework,
                recovered_by: None,
                lead_times,
                gate_wait,
                previous,
            });
            if let (true, Some(c), Some(h)) = (succeeded && kind != DeployKind::Redeploy, carry, h) {
                running = Some((deps.len() - 1, c, h));
                changes.push(RunningChange {
                    at: end,
                    commit_time: journey_at.get(inp.order[h].as_str()).map(|j| j.commit_time),
                    carry: c.clone(),
                });
            }
        }

        // Failures: every candidate reason, the first known wins.
        let mut cands: Vec<(usize, Failure)> = vec![];
        // Which (successful, changing) deployment first delivered each commit.
        let mut delivered_by: FastMap<&str, usize> = FastMap::default();
        for (k, d) in deps.iter().enumerate() {
            if d.changed() {
                for c in &d.commits {
                    delivered_by.entry(c.as_str()).or_insert(k);
                }
            }
        }
        for (k, d) in deps.iter().enumerate() {
            if !d.succeeded {
                let f = Failure {
                    reason: FailReason::BuildFailed,
                    known_at: d.end,
                    by_build: d.build_id,
                    by_commits: d.commits.clone(),
                };
                cands.push((k, f));
                continue;
            }
            if d.kind == DeployKind::Redeploy {
                continue;
            }
            if let Some(p) = before[k]
                && d.kind == DeployKind::Rollback
            {
                // What the rollback took out.
                let taken: Vec<Sha> = match (inp.carries.get(&deps[p].build_id), inp.carries.get(&d.build_id)) {
                    (Some(pc), Some(dc)) => (low(dc)..=pc.values().map(|(x, _)| *x).max().unwrap_or(0))
                        .filter(|i| *i < n && delivers(pc, &inp.class[*i], *i) && !delivers(dc, &inp.class[*i], *i))
                        .map(|i| inp.order[i].clone())
                        .collect(),
                    _ => vec![],
                };
                let f = Failure {
                    reason: FailReason::RolledBack,
                    known_at: d.end,
                    by_build: d.build_id,
                    by_commits: taken,
                };
                cands.push((p, f));
            }
            // A hotfix fails what ran before it: the deployment that first delivered the parent
            // of its oldest new commit. Read from the journeys, so forgetting older
            // deployments (retention) does not move the failure to another one.
            let fixes: Vec<Sha> =
                d.commits.iter().filter(|c| pos.get(c.as_str()).is_some_and(|i| hotfix.contains(i))).cloned().collect();
            let fixed = d
                .commits
                .first()
                .and_then(|c| facts.commits.get(c))
                .and_then(|c| c.parent.as_deref())
                .and_then(|p| delivered_by.get(p))
                .copied()
                .filter(|p| *p != k && d.end >= deps[*p].end);
            if let Some(p) = fixed.filter(|p| !fixes.is_empty() && d.end - deps[*p].end <= dora.failure_window) {
                let f =
                    Failure { reason: FailReason::Hotfixed, known_at: d.end, by_build: d.build_id, by_commits: fixes };
                cands.push((p, f));
            }
            // Reverts: tied to the deployment that delivered the reverted commit.
            let mut by_target: BTreeMap<usize, Vec<Sha>> = BTreeMap::new();
            for c in &d.commits {
                let Some(t) = pos.get(c.as_str()).and_then(|i| reverts.get(i)) else { continue };
                let Some(target) = delivered_by.get(inp.order[*t].as_str()) else { continue };
                if *target != k && d.end >= deps[*target].end && d.end - deps[*target].end <= dora.failure_window {
                    by_target.entry(*target).or_default().push(c.clone());
                }
            }
            for (target, by_commits) in by_target {
                let f = Failure { reason: FailReason::Reverted, known_at: d.end, by_build: d.build_id, by_commits };
                cands.push((target, f));
            }
        }
        cands.sort_by_key(|(k, f)| (*k, f.known_at, f.reason));
        for (k, f) in cands {
            if deps[k].failed.is_none() {
                deps[k].failed = Some(f);
            }
        }
        // Recovery: from the deployment that revealed the failure (after the failed one), the
        // first successful forward or rollback that does not itself fail.
        for k in 0..deps.len() {
            let Some(f) = &deps[k].failed else { continue };
            let from = if f.by_build == deps[k].build_id {
                k + 1
            } else {
                deps.iter().position(|d| d.build_id == f.by_build).unwrap_or(k + 1).max(k + 1)
            };
            let r = deps[from.min(deps.len())..].iter().find(|d| d.changed() && d.failed.is_none());
            deps[k].recovered_by = r.map(|d| (d.build_id, d.end));
        }

        // Now: the running version, what it lacks, what waits at the gate.
        let deploying = facts.builds.values().any(|b| {
            !b.status.is_finished() && *b.pipeline == *st.pipeline && st.jobs.iter().any(|j| *j.name == *b.job)
        });
        let mut now = EnvironmentNow { name: env.clone(), stage: si, changes, ..EnvironmentNow::default() };
        let run = running.map(|(k, c, h)| (&deps[k], c, h));
        if let Some((d, _, h)) = run {
            now.running_build = Some(d.build_id);
            now.running_commit = Some(inp.order[h].clone());
            now.running_commit_time = journey_at.get(inp.order[h].as_str()).map(|j| j.commit_time);
            now.since = Some(d.end);
        }
        for (i, j) in inp.journeys.iter().enumerate() {
            if j.vanished || j.outcome == crate::core::journey::Outcome::Incomplete {
                continue;
            }
            let has = match run {
                Some((_, c, _)) => i < low(c) || delivers(c, &inp.class[i], i),
                None => false,
            };
            if !has {
                now.lacking.push(i);
                now.count_behind(j.commit_time);
            }
            if let Some(s) = j.stages.get(si).filter(|s| s.state == StageState::AwaitingApproval) {
                now.awaiting.push((i, s.ready_at));
                now.count_awaiting(s.ready_at);
            } else if let (true, false, Some(s), Some((d, _, _))) = (st.approval, has, j.stages.get(si), run)
                && s.state == StageState::Succeeded
                && !deploying
            {
                // Deployed once, then rolled back out: it waits at the gate again (a person
                // must move the gate forward), since the rollback.
                now.awaiting.push((i, Some(d.end)));
                now.count_awaiting(Some(d.end));
            }
        }
        // The held journeys, as they stood when held out (nothing that could change that has
        // come since: it would have brought them back).
        for h in facts.held.iter() {
            let Some(held) = h.environments.get(envs.len()) else { continue };
            if held.lacks {
                now.count_behind(h.commit_time);
            }
            if let Some(since) = held.awaiting {
                now.count_awaiting(since);
            }
        }
        let _ = inp.now;
        all.extend(deps);
        envs.push(now);
    }
    (all, envs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::facts::Fact;
    use crate::core::journey::derive;

    const CONFIG: &str = "
repository: { github: o/r }
concourse: { url: 'http://ci/', team: dev }
resources: { repo: {} }
stages:
  - { name: production, pipeline: p, jobs: [d], environment: production }
";
    const NOW: i64 = 1_000_000;

    fn sha(i: usize) -> String {
        format!("{i:02x}{}", "a".repeat(38))
    }

    /// Commit `i` made at `100 * (i + 1)` with this message.
    fn commit(i: usize, message: &str) -> Fact {
        crate::core::fixtures::commit(sha(i), (i > 0).then(|| sha(i - 1)), 100 * (i as i64 + 1), message, "src/x.rs")
    }

    /// Deploy build `id` of commit `c`, ending at `end` (started 60 s before).
    fn deploy(id: i64, c: usize, ok: bool, end: i64) -> Fact {
        let status = if ok { BuildStatus::Succeeded } else { BuildStatus::Failed };
        crate::core::fixtures::build(id, "d", status, Some(end - 60), Some(end), Some(sha(c)))
    }

    /// One line per deployment: `id kind ok|fail [commits] failed:reason/by recovered:id rework`,
    /// then the environment: `running:c behind:n`.
    fn check(commits: &[&str], deploys: &[(i64, usize, bool, i64)], expect: &[&str]) {
        let core = crate::config::parse(CONFIG, "t.yaml", &|_| None).unwrap().core();
        let mut f = Facts::default();
        for (i, m) in commits.iter().enumerate() {
            f.apply(commit(i, m));
        }
        for (id, c, ok, end) in deploys {
            f.apply(deploy(*id, *c, *ok, *end));
        }
        let d = derive(&f, &core, NOW);
        let idx = |s: &str| (0..commits.len()).find(|i| sha(*i) == s).unwrap();
        let mut got: Vec<String> = d
            .deployments
            .iter()
            .map(|x| {
                let cs: Vec<String> = x.commits.iter().map(|c| format!("c{}", idx(c))).collect();
                let failed = x.failed.as_ref().map_or("-".into(), |f| format!("{}/{}", f.reason.as_str(), f.by_build));
                let rec = x.recovered_by.map_or("-".into(), |(b, _)| b.to_string());
                format!(
                    "{} {} {} [{}] failed:{failed} recovered:{rec}{}",
                    x.build_id,
                    x.kind.as_str(),
                    if x.succeeded { "ok" } else { "fail" },
                    cs.join(","),
                    if x.rework { " rework" } else { "" }
                )
            })
            .collect();
        let e = &d.environments[0];
        got.push(format!(
            "running:{} behind:{}",
            e.running_commit.as_deref().map_or("-".into(), |c| format!("c{}", idx(c))),
            e.behind
        ));
        assert_eq!(got, expect);
    }

    const H: i64 = 3_600;

    #[test]
    fn a_failed_deploy_and_its_retry() {
        check(
            &["feat: a", "feat: b"],
            &[(1, 0, true, 1_000), (2, 1, false, 2_000), (3, 1, true, 3_000)],
            &[
                "1 forward ok [c0] failed:- recovered:-",
                "2 forward fail [c1] failed:build_failed/2 recovered:3",
                "3 forward ok [c1] failed:- recovered:-",
                "running:c1 behind:0",
            ],
        );
        // The retry fails too: both recover at the first success.
        check(
            &["feat: a", "feat: b"],
            &[(1, 0, true, 1_000), (2, 1, false, 2_000), (3, 1, false, 2_500), (4, 1, true, 3_000)],
            &[
                "1 forward ok [c0] failed:- recovered:-",
                "2 forward fail [c1] failed:build_failed/2 recovered:4",
                "3 forward fail [c1] failed:build_failed/3 recovered:4",
                "4 forward ok [c1] failed:- recovered:-",
                "running:c1 behind:0",
            ],
        );
    }

    /// Deploying an older version: what runs goes back, the commits taken out are behind again,
    /// and the deployment that ran is failed (rolled back), recovered by the rollback.
    #[test]
    fn a_rollback_and_a_redeploy() {
        check(
            &["feat: a", "feat: b", "feat: c"],
            &[(1, 0, true, 1_000), (2, 2, true, 2_000), (3, 0, true, 3_000)],
            &[
                "1 forward ok [c0] failed:- recovered:-",
                "2 forward ok [c1,c2] failed:rolled_back/3 recovered:3",
                "3 rollback ok [] failed:- recovered:-",
                "running:c0 behind:2",
            ],
        );
        // The same version again changes nothing.
        check(
            &["feat: a", "feat: b"],
            &[(1, 0, true, 1_000), (2, 0, true, 2_000), (3, 1, true, 3_000)],
            &[
                "1 forward ok [c0] failed:- recovered:-",
                "2 redeploy ok [] failed:- recovered:-",
                "3 forward ok [c1] failed:- recovered:-",
                "running:c1 behind:0",
            ],
        );
    }

    /// A revert fails the deployment that delivered the reverted commit when it ships within
    /// the window (24 h by default); it is rework either way.
    #[test]
    fn a_revert_within_and_after_the_window() {
        let revert = format!("Revert \"feat: a\"\n\nThis reverts commit {}.", sha(1));
        let commits = ["feat: base", "feat: a", revert.as_str()];
        check(
            &commits,
            &[(1, 0, true, 1_000), (2, 1, true, 2_000), (3, 2, true, 2_000 + 20 * H)],
            &[
                "1 forward ok [c0] failed:- recovered:-",
                "2 forward ok [c1] failed:reverted/3 recovered:3",
                "3 forward ok [c2] failed:- recovered:- rework",
                "running:c2 behind:0",
            ],
        );
        check(
            &commits,
            &[(1, 0, true, 1_000), (2, 1, true, 2_000), (3, 2, true, 2_000 + 25 * H)],
            &[
                "1 forward ok [c0] failed:- recovered:-",
                "2 forward ok [c1] failed:- recovered:-",
                "3 forward ok [c2] failed:- recovered:- rework",
                "running:c2 behind:0",
            ],
        );
    }

    /// A commit whose pull request carries a hotfix label (any case) is a hotfix whatever its
    /// subject; without the label, or from a direct push, `feat:` is not.
    #[test]
    fn a_hotfix_by_pr_label() {
        use crate::core::premerge::{Origin, PullFact};
        let core = crate::config::parse(CONFIG, "t.yaml", &|_| None).unwrap().core();
        let pull = |labels: &[&str]| {
            Origin::Pull(std::sync::Arc::new(PullFact {
                number: 7,
                title: "feat: rounding".into(),
                url: String::new(),
                labels: labels.iter().map(|l| l.to_string()).collect(),
                head_sha: "h".into(),
                first_commit_at: None,
                opened_at: 50,
                ready_at: None,
                reviews: vec![],
                checks: vec![],
                merged_at: 200,
                detailed: true,
            }))
        };
        for (origin, hotfixed) in [
            (Some(pull(&["HotFix", "backend"])), true),
            (Some(pull(&["backend"])), false),
            (Some(Origin::Direct), false),
            (None, false),
        ] {
            let mut f = Facts::default();
            f.apply(commit(0, "feat: a"));
            f.apply(commit(1, "feat: rounding (#7)"));
            if let Some(o) = origin.clone() {
                f.apply(Fact::Origin { sha: sha(1), origin: o });
            }
            f.apply(deploy(1, 0, true, 1_000));
            f.apply(deploy(2, 1, true, 2_000));
            let d = derive(&f, &core, NOW);
            let first = &d.deployments[0];
            assert_eq!(first.failed.as_ref().map(|x| x.reason.as_str()), hotfixed.then_some("hotfixed"), "{origin:?}");
            assert_eq!(d.deployments[1].rework, hotfixed, "{origin:?}");
        }
    }

    /// A hotfix deployed within the window fails the deployment it replaced; a deployment of a
    /// hotfix with other work is not rework. The first known reason wins.
    #[test]
    fn a_hotfix_and_rework() {
        check(
            &["feat: a", "fix(api): null check", "hotfix: again"],
            &[(1, 0, true, 1_000), (2, 1, true, 1_000 + H), (3, 2, true, 1_000 + 30 * H)],
            &[
                "1 forward ok [c0] failed:hotfixed/2 recovered:2",
                "2 forward ok [c1] failed:- recovered:- rework",
                "3 forward ok [c2] failed:- recovered:- rework",
                "running:c2 behind:0",
            ],
        );
        check(
            &["feat: a", "feat: b", "fix: c"],
            &[(1, 0, true, 1_000), (2, 2, true, 2_000)],
            &[
                "1 forward ok [c0] failed:hotfixed/2 recovered:2",
                "2 forward ok [c1,c2] failed:- recovered:-",
                "running:c2 behind:0",
            ],
        );
        // Rolled back first, reverted later: rolled_back wins. The deployment after the
        // rollback brings c1 back with its revert: c1 is not new (its first deployment stays
        // in its history), the revert is, so it is rework. Then: the recovering deployment that
        // is itself hotfixed does not restore service, the hotfix does.
        let revert = format!("Revert \"feat: b\"\n\nThis reverts commit {}.", sha(1));
        check(
            &["feat: a", "feat: b", revert.as_str()],
            &[(1, 0, true, 1_000), (2, 1, true, 2_000), (3, 0, true, 3_000), (4, 2, true, 4_000)],
            &[
                "1 forward ok [c0] failed:- recovered:-",
                "2 forward ok [c1] failed:rolled_back/3 recovered:3",
                "3 rollback ok [] failed:- recovered:-",
                "4 forward ok [c2] failed:- recovered:- rework",
                "running:c2 behind:0",
            ],
        );
        check(
            &["feat: a", "feat: b", "fix: c"],
            &[(1, 0, true, 1_000), (2, 1, false, 2_000), (3, 1, true, 3_000), (4, 2, true, 3_500)],
            &[
                "1 forward ok [c0] failed:- recovered:-",
                "2 forward fail [c1] failed:build_failed/2 recovered:4",
                "3 forward ok [c1] failed:hotfixed/4 recovered:4",
                "4 forward ok [c2] failed:- recovered:- rework",
                "running:c2 behind:0",
            ],
        );
    }

    #[test]
    fn which_commit_a_revert_reverts() {
        let earlier = [("0123456789abcdef", "feat: a"), ("fedcba9876543210", "feat: b")];
        let check = |msg: &str, want: Option<usize>| assert_eq!(reverted_commit(msg, &earlier), want, "{msg}");
        check("Revert \"feat: a\"\n\nThis reverts commit fedcba9876543210.", Some(1));
        check("Revert \"feat: a\"", Some(0));
        check("Revert \"feat: a\" (#12)", None);
        check("revert: feat a\n\nThis reverts commit 0123456.", Some(0));
        check("This reverts commit 0123.", None);
        check("feat: c", None);
    }
}
