//! Incremental derivation: what `serve` runs each poll cycle instead of [`derive`], with the
//! same result (a property test in `tests/it/incremental.rs` compares them over random fact
//! sequences).
//!
//! The history-wide parts of a derivation are the branch order, each commit's classification,
//! the carry relation ([`LineageIndex`]) and each build's carry. Between two cycles almost all of
//! them stay as they were, and what can change them is known:
//!
//! - A build's lineage sources and carry depend on its own inputs and outputs, on older builds
//!   only (build ids grow; a version is put before it is taken), and on the branch positions of
//!   the commits it names. So when the builds change from id `L` on (a new build, a build that
//!   finished and put its outputs, a rerun, a message learned, a build forgotten by retention),
//!   the relation and the carries below `L` stay, and only the builds from `L` on are pushed
//!   again. Which builds changed is seen by a fingerprint of what lineage reads of each build
//!   (pipeline, job, inputs, outputs); status and times are not part of it.
//! - Commits only append to the branch order while nothing vanishes or is forgotten; then every
//!   known commit keeps its position and classification. A build that named a commit unknown
//!   at the time (GitHub answered after Concourse) is remembered, and pushed again once the
//!   commit is known. Any other change of the order (a force-push, retention dropping old
//!   commits, a fork resolved differently) starts the order, classifications and carries afresh.
//! - A different configuration starts everything afresh.
//!
//! The per-commit journeys themselves are then derived from those parts (`derive_with`), except
//! the quiet ones ([`is_quiet`]), which are taken as they were (the same `Arc`): every stage
//! that applies succeeded with finished, lineage-tied attempts (an inferred attempt can gain
//! reruns later), or has no attempt and waits. Such a journey reads only its own commit, origin
//! and attempts, the job histories' horizons, the builds of its jobs and, where a stage is
//! pending, that stage's running builds. It is taken again while its commit time, origin,
//! vanished mark, the horizons and each attempt's build are as they were, no build at or above
//! the lowest changed one is at or below its newest attempt or of a job where it has no attempt,
//! and a pending stage's running builds are unchanged. It does not read `now`: a quiet journey
//! is never "not picked up" (a pending first stage is not quiet).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use std::sync::Arc;

use crate::core::classify::Classification;
use crate::core::facts::HorizonFact;
use crate::core::journey::{
    Attempt, BuildFact, BuildId, CoreConfig, Derived, Facts, History, JobIndex, Journey, Method, RunningBuild, Sha,
    StageNow, StageState, branch_order, derive_with,
};
use crate::core::lineage::{Carry, LineageIndex, carry_of};

/// Derivation state kept from one poll cycle to the next. Give it every cycle's facts (after
/// any change, retention included); its result is [`derive`]'s for the same arguments.
///
/// [`derive`]: crate::core::journey::derive
#[derive(Debug, Default)]
pub struct Incremental {
    /// What the state below was computed for (the configuration's `Debug` form).
    config: String,
    order: Vec<Sha>,
    /// Per position in `order`.
    class: Vec<Classification>,
    lineage: LineageIndex,
    carries: HashMap<BuildId, Carry>,
    /// Builds per job and their carried prefixes, as `derive_with` reads them.
    jobs: JobIndex,
    /// Per build: a fingerprint of what lineage and carries read of it.
    seen: BTreeMap<BuildId, u64>,
    /// Tracked git refs builds named that were no known commit, with the oldest such build.
    unresolved: HashMap<Sha, BuildId>,
    /// The quiet journeys of the last derivation, with their newest attempt's build.
    quiet: HashMap<Sha, (Arc<Journey>, Option<BuildId>)>,
    /// The horizons the quiet journeys were derived with.
    horizons: BTreeMap<(String, String), HorizonFact>,
    /// Per stage, its running builds at the last derivation (what a pending stage waits on).
    running: Vec<Vec<RunningBuild>>,
}

/// Counts of one incremental derivation, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// The order, classifications and carries were started afresh.
    pub reset: bool,
    /// Commits classified.
    pub classified: usize,
    /// Builds whose lineage and carry were computed.
    pub pushed: usize,
    /// Quiet journeys taken from the last derivation as they were.
    pub reused: usize,
}

impl Incremental {
    /// The journeys of `facts` at `now`, as [`derive`](crate::core::journey::derive) gives them.
    pub fn derive(&mut self, facts: &Facts, cfg: &CoreConfig, now: i64) -> Derived {
        self.derive_counted(facts, cfg, now).0
    }

    /// [`Incremental::derive`], and what it had to compute again.
    pub fn derive_counted(&mut self, facts: &Facts, cfg: &CoreConfig, now: i64) -> (Derived, Work) {
        let mut work = Work::default();
        let config = format!("{cfg:?}");
        let order = branch_order(facts);
        // The lowest build id whose lineage or carry may have changed.
        let mut from = BuildId::MAX;
        if config != self.config || !order.starts_with(&self.order) {
            *self = Incremental { config, lineage: LineageIndex::with_undo(), ..Incremental::default() };
            work.reset = true;
            from = BuildId::MIN;
        }
        let known = self.order.len();
        for sha in &order[known..] {
            let c = &facts.commits[sha];
            self.class.push(cfg.classifier.classify(&c.message, &c.files));
            work.classified += 1;
            if let Some(id) = self.unresolved.get(sha) {
                from = from.min(*id);
            }
        }
        self.order = order;

        // Changed, new and forgotten builds, by a walk of both id-ordered maps side by side.
        let mut seen = self.seen.iter().peekable();
        for (id, b) in &facts.builds {
            while let Some((old, _)) = seen.next_if(|(old, _)| *old < id) {
                from = from.min(*old);
            }
            match seen.next_if(|(old, _)| *old == id) {
                Some((_, fp)) if *fp == fingerprint(b) => {}
                _ => from = from.min(*id),
            }
            if from <= *id {
                break;
            }
        }
        if let Some((old, _)) = seen.next() {
            from = from.min(*old);
        }

        if from != BuildId::MAX {
            self.lineage.truncate(from);
            // `seen` and `carries` hold the same builds: drop those from `from` on by the ordered
            // one, not by a pass over every carry.
            for id in self.seen.split_off(&from).into_keys() {
                self.carries.remove(&id);
            }
            self.unresolved.retain(|_, id| *id < from);
            let pos: HashMap<&str, usize> = self.order.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
            for (id, b) in facts.builds.range(from..) {
                self.lineage.push(b, facts, cfg);
                let sources = self.lineage.sources.get(id).map(|v| v.as_slice()).unwrap_or(&[]);
                let unresolved = &mut self.unresolved;
                let carry = carry_of(b, cfg, sources, &self.carries, &pos, |r| {
                    unresolved.entry(r.to_string()).or_insert(*id);
                });
                self.carries.insert(*id, carry);
                self.seen.insert(*id, fingerprint(b));
                work.pushed += 1;
            }
            self.jobs.truncate(from);
            self.jobs.extend(facts, &self.carries, from);
        }
        // Checked in every test (debug) build: the kept index is the one built afresh.
        debug_assert!(self.jobs == JobIndex::of(facts, &self.carries), "job index kept out of step with the builds");
        if facts.horizons != self.horizons {
            self.quiet.clear();
            self.horizons = facts.horizons.clone();
        }
        // Per job, its newest build: a job with one at or above `from` may have a new build, or
        // a build whose carry changed.
        let mut newest_of_job: HashMap<(&str, &str), BuildId> = HashMap::new();
        if from != BuildId::MAX {
            for (_, b) in facts.builds.range(from..) {
                newest_of_job.insert((&*b.pipeline, &*b.job), b.id);
            }
        }
        let reused = std::cell::Cell::new(0);
        let (quiet, running) = (&self.quiet, &self.running);
        let reuse = |sha: &Sha, now_stages: &[StageNow]| {
            let (j, newest) = quiet.get(sha)?;
            let c = facts.commits.get(sha)?;
            // A stage with no attempt: no build of its jobs may carry the commit now, and what
            // it reads of the running builds is as it was.
            let quiet_stages =
                cfg.stages.iter().zip(&j.stages).zip(now_stages).enumerate().all(|(si, ((st, sj), sn))| {
                    !sj.attempts.is_empty()
                        || sj
                            .expected_jobs
                            .iter()
                            .all(|job| !newest_of_job.contains_key(&(st.pipeline.as_str(), job.as_str())))
                            && match sj.state {
                                StageState::AwaitingApproval => !sn.gate_opened(),
                                StageState::Pending => running.get(si) == Some(&sn.running),
                                _ => true,
                            }
                });
            let same = newest.is_none_or(|n| n < from)
                && quiet_stages
                && crate::core::journey::commit_time_of(c, cfg) == j.commit_time
                && facts.origins.get(sha) == j.origin.as_ref()
                && facts.vanished.contains_key(sha) == j.vanished
                && j.stages
                    .iter()
                    .flat_map(|s| &s.attempts)
                    .all(|a| facts.builds.get(&a.build_id).is_some_and(|b| same_build(a, b)));
            same.then(|| {
                reused.set(reused.get() + 1);
                j.clone()
            })
        };
        let history = History { order: &self.order, class: &self.class, carries: &self.carries, jobs: &self.jobs };
        let derived = derive_with(facts, cfg, now, history, reuse);
        work.reused = reused.get();
        self.running = derived.stages.iter().map(|s| s.running.clone()).collect();
        // Updated in place: a journey taken again is the same `Arc` and stays. Without a reset
        // the branch order only grew, so every commit held is still derived.
        for j in &derived.journeys {
            if !is_quiet(j) {
                self.quiet.remove(&j.sha);
                continue;
            }
            let newest = || j.stages.iter().flat_map(|s| &s.attempts).map(|a| a.build_id).max();
            match self.quiet.get_mut(&j.sha) {
                Some((kept, _)) if Arc::ptr_eq(kept, j) => {}
                Some(entry) => *entry = (j.clone(), newest()),
                None => drop(self.quiet.insert(j.sha.clone(), (j.clone(), newest()))),
            }
        }
        (derived, work)
    }
}

/// A journey no later cycle changes unless what it read changes: every stage that applies to
/// it succeeded with every attempt finished and tied by lineage (an inferred attempt can gain
/// reruns later), or has no attempt and waits (for an upstream stage, a triggering commit, the
/// gate, or a build of its jobs). Not a first stage that is pending: whether its commit was
/// not picked up depends on `now`.
fn is_quiet(j: &Journey) -> bool {
    let first = j.stages.iter().position(|s| s.state != StageState::NotApplicable);
    !j.vanished
        && j.stages.iter().enumerate().all(|(si, s)| match s.state {
            StageState::NotApplicable => true,
            StageState::Succeeded => s.attempts.iter().all(|a| a.status.is_finished() && a.method != Method::Inferred),
            StageState::Waiting | StageState::Riding | StageState::AwaitingApproval => s.attempts.is_empty(),
            StageState::Pending => s.attempts.is_empty() && Some(si) != first,
            _ => false,
        })
}

/// The attempt is what the build says now.
fn same_build(a: &Attempt, b: &BuildFact) -> bool {
    a.status == b.status
        && a.start == b.start
        && a.end == b.end
        && a.rerun_of == b.rerun_of
        && a.name == b.name
        && a.job == b.job
        && a.pipeline == b.pipeline
        && a.url == b.url
}
/// What lineage and carries read of a build: where it ran, what it took and what it put.
fn fingerprint(b: &BuildFact) -> u64 {
    // Every build is fingerprinted every cycle: a fast hasher (no attacker chooses the input).
    let mut h = std::hash::BuildHasher::build_hasher(&foldhash::fast::FixedState::with_seed(0));
    (&b.pipeline, &b.job).hash(&mut h);
    for (tag, list) in [(0u8, &b.inputs), (1, &b.outputs)] {
        tag.hash(&mut h);
        list.len().hash(&mut h);
        for v in list {
            (&v.step, &v.resource, &v.version, &v.message).hash(&mut h);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures;
    use crate::core::journey::{BuildStatus, Fact, WaitsFor, derive};

    // Tests, then testflight (behind a gate: cepler's `approval`).
    const CONFIG: &str = "
repository: { github: o/r }
concourse: { url: 'http://ci/', team: dev }
resources: { repo: {} }
stages:
  - { name: tests, pipeline: p, jobs: [t] }
  - { name: testflight, pipeline: p, jobs: [tf], environment: staging, approval: GATE }
";

    fn cfg(gate: bool) -> CoreConfig {
        crate::config::parse(&CONFIG.replace("GATE", &gate.to_string()), "t.yaml", &|_| None).unwrap().core()
    }

    fn sha(i: usize) -> String {
        format!("c{i}{}", "0".repeat(39))
    }

    fn commit(i: usize) -> Fact {
        fixtures::commit(sha(i), (i > 0).then(|| sha(i - 1)), 1_000 * (i as i64 + 1), &format!("feat: {i}"), "src/a.rs")
    }

    /// A build of `job`; `c`: the commit it took (`None`: a created build, no inputs yet).
    fn build(id: i64, job: &str, status: BuildStatus, start: Option<i64>, end: Option<i64>, c: Option<usize>) -> Fact {
        fixtures::build(id, job, status, start, end, c.map(sha))
    }

    /// After each step, the incremental result equals a full derivation's; returns the last.
    fn check(gate: bool, steps: Vec<Vec<Fact>>) -> (Derived, Work) {
        let (mut facts, mut inc, cfg) = (Facts::default(), Incremental::default(), cfg(gate));
        let mut last = None;
        for (n, step) in steps.into_iter().enumerate() {
            for f in step {
                facts.apply(f);
            }
            let now = 10_000 + n as i64 * 60;
            let (got, work) = inc.derive_counted(&facts, &cfg, now);
            let want = derive(&facts, &cfg, now);
            assert_eq!(got.journeys, want.journeys, "after step {n}");
            last = Some((got, work));
        }
        last.expect("a step")
    }

    /// A journey pending at a stage whose job is busy waits for that build; when the build
    /// fails (no outputs, so nothing lineage reads changed), the journey is derived again: it
    /// now waits for no build.
    #[test]
    fn a_pending_stage_follows_the_running_builds_it_waits_on() {
        use BuildStatus::*;
        let (d, work) = check(
            false,
            vec![
                vec![
                    commit(0),
                    commit(1),
                    build(1, "t", Succeeded, Some(1_100), Some(1_500), Some(0)),
                    build(2, "t", Succeeded, Some(2_100), Some(2_500), Some(1)),
                    // c0's deploy runs; c1 waits for it.
                    build(3, "tf", Started, Some(2_600), None, Some(0)),
                ],
                vec![],
                vec![build(3, "tf", Failed, Some(2_600), Some(2_900), Some(0))],
            ],
        );
        let c1 = &d.journeys[1];
        assert_eq!(c1.stages[1].attempts.len(), 0);
        assert_eq!(work.pushed, 0, "a failed build puts nothing: lineage unchanged");
        assert!(!matches!(c1.stages[1].waits_for, Some(WaitsFor::Busy(_))), "{:?}", c1.stages[1].waits_for);
    }

    /// A journey waiting at the gate is taken again while the gate stays shut, and derived
    /// again when a created build (not a rerun) shows it was opened. (That build is new to its
    /// job, which alone makes the journey derived again; the gate check guards the same.)
    #[test]
    fn a_journey_at_the_gate_is_derived_again_when_it_opens() {
        use BuildStatus::*;
        let first = vec![commit(0), build(1, "t", Succeeded, Some(1_100), Some(1_500), Some(0))];
        let (d, work) = check(true, vec![first.clone(), vec![]]);
        assert_eq!(d.journeys[0].stages[1].state, StageState::AwaitingApproval);
        assert_eq!(work.reused, 1, "the gate stayed shut: taken as it was");
        let (d, _) = check(true, vec![first, vec![], vec![build(2, "tf", Pending, None, None, None)]]);
        assert_eq!(d.journeys[0].stages[1].state, StageState::Pending);
    }
}
