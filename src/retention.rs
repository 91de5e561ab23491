//! Retention: which facts are old enough to forget, and what they contributed to the metrics.
//! Pure: facts, the derived journeys and a cutoff in; a plan out. The app applies the plan in
//! one store transaction (`Store::prune_and_fold`), so counters and histograms never go back.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::held::Held;
use crate::core::journey::{BuildId, BuildStatus, CoreConfig, Derived, Facts, Sha, StageBuild};
use crate::core::lineage::Lineage;
use crate::sinks::metrics;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub commits: BTreeSet<Sha>,
    pub builds: BTreeSet<BuildId>,
    /// Baseline rows (name, labels, value) the pruned facts contributed.
    pub rows: Vec<(String, String, f64)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty() && self.builds.is_empty()
    }
}

/// Forget journeys whose commit and every deployment and attempt lie before `cutoff` (and, for
/// journeys that never ended, whose builds all finished before it), and finished builds before
/// `cutoff` that no kept journey refers to.
pub fn plan(facts: &Facts, derived: &Derived, stage_builds: &[StageBuild], core: &CoreConfig, cutoff: i64) -> Plan {
    plan_pinned(facts, derived, stage_builds, core, cutoff, &BTreeSet::new(), &BTreeSet::new())
}

/// [`plan`], keeping the journeys of `pinned` commits and the `pinned_builds` too (and, as for
/// anything kept, what they reach): journeys whose reading is not complete yet, such as a pull
/// request not read; the deployment whose version runs in an environment.
pub fn plan_pinned(
    facts: &Facts,
    derived: &Derived,
    stage_builds: &[StageBuild],
    core: &CoreConfig,
    cutoff: i64,
    pinned: &BTreeSet<Sha>,
    pinned_builds: &BTreeSet<BuildId>,
) -> Plan {
    let old_commit = |sha: &str| facts.commits.get(sha).is_some_and(|c| c.committer_date < cutoff);
    // The newest commit stays: the GitHub cursor restarts from the known commits, and with none
    // known it would read old history again and count it twice.
    let head = derived.journeys.last().map(|j| j.sha.clone());
    let mut kept_commits: BTreeSet<Sha> = BTreeSet::new();
    for j in &derived.journeys {
        let attempts_done = j
            .stages
            .iter()
            .flat_map(|s| &s.attempts)
            .all(|a| a.status.is_finished() && a.end.is_some_and(|e| e < cutoff));
        let deployed_before = j.deployed_at.values().all(|t| *t < cutoff);
        if Some(&j.sha) == head.as_ref()
            || pinned.contains(&j.sha)
            || !(old_commit(&j.sha) && attempts_done && deployed_before)
        {
            kept_commits.insert(j.sha.clone());
        }
    }
    let mut kept_builds: BTreeSet<BuildId> = BTreeSet::new();
    // The newest build of every job stays (the Concourse cursor is its id), and every build not
    // finished before the cutoff.
    let mut newest: std::collections::BTreeMap<(&str, &str), BuildId> = std::collections::BTreeMap::new();
    for b in facts.builds.values() {
        let e = newest.entry((&*b.pipeline, &*b.job)).or_insert(b.id);
        *e = (*e).max(b.id);
    }
    kept_builds.extend(newest.values());
    kept_builds.extend(pinned_builds.iter().filter(|id| facts.builds.contains_key(*id)));
    kept_builds.extend(
        facts
            .builds
            .values()
            .filter(|b| !b.status.is_finished() || b.end.or(b.start).is_none_or(|t| t >= cutoff))
            .map(|b| b.id),
    );
    // Keeping is contagious, so that pruning never changes what is kept: a kept journey keeps
    // its builds; a kept build keeps the builds its lineage comes from and the commits it
    // delivers (whose journeys then stay too).
    let mut attempt_of: std::collections::HashMap<BuildId, Vec<&Sha>> = std::collections::HashMap::new();
    for j in &derived.journeys {
        for a in j.stages.iter().flat_map(|s| &s.attempts) {
            attempt_of.entry(a.build_id).or_default().push(&j.sha);
        }
    }
    // Kept builds inherit their carry from the builds that put (or, upstream, took) the versions
    // they read, or that a bridge ties them to: an RC may still use a dagster image built weeks
    // ago. The core's own relation says which; keeping what it reaches leaves kept carries as
    // they are.
    let lineage = Lineage::of(facts, core);
    loop {
        let size = (kept_commits.len(), kept_builds.len());
        // A kept build keeps the journeys it is an attempt of (its attribution counts there).
        for id in &kept_builds {
            for sha in attempt_of.get(id).into_iter().flatten() {
                kept_commits.insert((*sha).clone());
            }
        }
        for j in derived.journeys.iter().filter(|j| kept_commits.contains(&j.sha)) {
            kept_builds.extend(j.stages.iter().flat_map(|s| s.attempts.iter().map(|a| a.build_id)));
        }
        lineage.close(&mut kept_builds);
        // A kept failed deployment keeps the deployments up to the one that restored service
        // (its recovery time is read across them), and a kept rollback the deployment it
        // rolled back.
        let kept_deploys: Vec<_> = derived.deployments.iter().filter(|d| kept_builds.contains(&d.build_id)).collect();
        for d in kept_deploys {
            if let Some(f) = &d.failed {
                let until = d.recovered_by.map_or(i64::MAX, |(_, at)| at);
                kept_builds.extend(
                    derived
                        .deployments
                        .iter()
                        .filter(|x| x.stage == d.stage && x.end >= d.end && x.end <= until)
                        .map(|x| x.build_id),
                );
                kept_builds.insert(f.by_build);
            }
            if let Some(p) = d.previous {
                kept_builds.insert(p);
            }
        }
        for id in &kept_builds {
            let Some(b) = facts.builds.get(id) else { continue };
            for v in b.inputs.iter().chain(&b.outputs) {
                if core.resource_of_step(&v.step).is_some()
                    && let Some(r) = v.version.get("ref").filter(|r| facts.commits.contains_key(*r))
                {
                    kept_commits.insert(r.to_string());
                }
            }
        }
        if (kept_commits.len(), kept_builds.len()) == size {
            break;
        }
    }
    let pruned: Vec<&crate::core::journey::Journey> =
        derived.journeys.iter().filter(|j| !kept_commits.contains(&j.sha)).map(|j| &**j).collect();
    let mut commits: BTreeSet<Sha> = pruned.iter().map(|j| j.sha.clone()).collect();
    // Vanished commits are not journeys; they go with their age.
    for sha in facts.vanished.keys() {
        if old_commit(sha) {
            commits.insert(sha.clone());
        }
    }
    let builds: BTreeSet<BuildId> = facts.builds.keys().filter(|id| !kept_builds.contains(id)).copied().collect();
    let pruned_stage_builds: Vec<StageBuild> =
        stage_builds.iter().filter(|b| builds.contains(&b.build_id)).cloned().collect();
    let rows = metrics::fold(&pruned, &pruned_stage_builds, derived, core);
    Plan { commits, builds, rows }
}

/// A journey an environment lacks is held only this long before retention would forget it, so
/// that retention brings held journeys back (`app`) once a day at most.
pub const HOLD_MARGIN: i64 = 86_400;

/// What settling does: what leaves memory (`out`), and of it what leaves the store too
/// (`settled`); the rest of `out` is held (`core::held`).
#[derive(Debug, Default)]
pub struct Settling {
    pub out: Plan,
    pub settled: Plan,
    pub held: HeldPlan,
}

/// The held part of a [`Settling`]: what memory lets go of and the store keeps.
#[derive(Debug, Default)]
pub struct HeldPlan {
    pub commits: BTreeSet<Sha>,
    pub builds: BTreeSet<BuildId>,
    /// What the gauges of now count of each held journey.
    pub records: Vec<Held>,
    /// The jobs (pipeline, job) whose builds can change a held journey.
    pub wakes: BTreeSet<(String, String)>,
    /// What they counted (counters and histograms): the baseline carries it while they are held.
    pub rows: Vec<(String, String, f64)>,
    /// The earliest committer date of a journey held in its own right (an environment lacks it
    /// or holds it at its gate; at or after `hold_from`): when retention reaches it, the held
    /// journeys come back so it can be forgotten. Older journeys held along with them (what a
    /// held one's derivation needs) are not due: they stay held while a held one needs them,
    /// and bringing everything back for them would do so every cycle.
    pub due: Option<i64>,
}

/// Settling at `cutoff`: journeys older than it leave memory, except the `pinned` ones and what
/// the gauges of now read (each environment's running deployment and last successful one).
/// Those an environment lacks or holds at its gate (and committed at or after `hold_from`) are
/// held: the store keeps their facts. One whose unfinished stages are not all deploy stages
/// stays in memory instead, since any build of its other jobs could change it.
pub fn plan_settling(
    facts: &Facts,
    derived: &Derived,
    stage_builds: &[StageBuild],
    core: &CoreConfig,
    cutoff: i64,
    hold_from: i64,
    pinned: &BTreeSet<Sha>,
) -> Settling {
    let mut kept_builds: BTreeSet<BuildId> = derived.environments.iter().filter_map(|e| e.running_build).collect();
    let mut last_success: BTreeMap<usize, (i64, BuildId)> = BTreeMap::new();
    for b in stage_builds.iter().filter(|b| b.status == BuildStatus::Succeeded) {
        if core.stages[b.stage].environment.is_some() {
            let e = last_success.entry(b.stage).or_insert((b.end, b.build_id));
            *e = (*e).max((b.end, b.build_id));
        }
    }
    kept_builds.extend(last_success.into_values().map(|(_, id)| id));
    let mut in_store = pinned.clone();
    let mut in_memory = pinned.clone();
    for e in &derived.environments {
        for i in e.lacking.iter().chain(e.awaiting.iter().map(|(i, _)| i)) {
            let j = &derived.journeys[*i];
            if facts.commits.get(&j.sha).is_none_or(|c| c.committer_date < hold_from) {
                continue;
            }
            in_store.insert(j.sha.clone());
            if !crate::core::held::holdable(j, core) {
                in_memory.insert(j.sha.clone());
            }
        }
    }
    let plan = |keep: &BTreeSet<Sha>| plan_pinned(facts, derived, stage_builds, core, cutoff, keep, &kept_builds);
    let out = plan(&in_memory);
    // Keeping more keeps a superset, so what settles is part of what leaves memory.
    let settled = if in_store == in_memory { out.clone() } else { plan(&in_store) };
    let commits: BTreeSet<Sha> = out.commits.difference(&settled.commits).cloned().collect();
    let builds: BTreeSet<BuildId> = out.builds.difference(&settled.builds).copied().collect();
    let mut held = HeldPlan::default();
    let mut journeys = vec![];
    for (i, j) in derived.journeys.iter().enumerate().filter(|(_, j)| commits.contains(&j.sha)) {
        held.records.push(Held::of(derived, i));
        held.wakes.extend(crate::core::held::wakes(j, core));
        journeys.push(&**j);
    }
    let held_builds: Vec<StageBuild> = stage_builds.iter().filter(|b| builds.contains(&b.build_id)).cloned().collect();
    held.rows = metrics::fold(&journeys, &held_builds, derived, core);
    held.due = (in_store.iter())
        .filter(|sha| commits.contains(*sha) && !pinned.contains(*sha))
        .filter_map(|sha| facts.commits.get(sha))
        .map(|c| c.committer_date)
        .min();
    held.commits = commits;
    held.builds = builds;
    Settling { out, settled, held }
}

/// Remove a plan's facts from memory (the store removes them in its own transaction).
pub fn apply(facts: &mut Facts, plan: &Plan) {
    for sha in &plan.commits {
        facts.commits.remove(sha);
        facts.vanished.remove(sha);
        facts.origins.remove(sha);
    }
    for id in &plan.builds {
        facts.builds.remove(id);
    }
}
