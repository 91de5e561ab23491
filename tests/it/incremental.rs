//! `core::incremental` against a full derivation: over random sequences of lana facts — polls
//! at random moments, facts arriving late, out of order, stale and twice, force-pushes, and
//! retention forgetting old commits and builds, origins read late, job horizons learnt — every
//! incremental result equals `derive`'s (the settled journeys it takes again included), and
//! the journey totals `sinks::metrics::Tally` keeps per segment equal those added up afresh.

use deploy_journey::core::incremental::Incremental;
use deploy_journey::core::journey::*;
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;
use deploy_journey::sinks::metrics::{Tally, Totals, events};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::core_truth::{facts_from_world, lana_core};

#[derive(Debug, Clone)]
enum Step {
    /// The world runs `minutes` on; a poll then learns `share`‰ of what it shows (shuffled,
    /// with stale sightings mixed in); the rest arrives with a later poll.
    Poll { minutes: i64, share: u16 },
    /// Retention forgets commits and finished builds older than `days_back` days before now,
    /// each with a 1 in 2 chance (what is kept is not the core's concern here).
    Forget { days_back: i64 },
    /// A known commit is reported gone from the branch.
    Vanish { nth: usize },
    /// A known commit's origin is read: a direct push (after it may have settled).
    Origin { nth: usize },
    /// A job's history is known only from `hours_back` hours before now (a first read that
    /// stopped there).
    Horizon { stage: usize, hours_back: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (10i64..720, 300u16..=1000).prop_map(|(minutes, share)| Step::Poll { minutes, share }),
        1 => (0i64..3).prop_map(|days_back| Step::Forget { days_back }),
        1 => (0usize..100).prop_map(|nth| Step::Vanish { nth }),
        1 => (0usize..100).prop_map(|nth| Step::Origin { nth }),
        1 => (0usize..8, 1i64..96).prop_map(|(stage, hours_back)| Step::Horizon { stage, hours_back }),
    ]
}

fn observed(w: &World) -> Vec<Fact> {
    let facts = facts_from_world(w);
    let mut all: Vec<Fact> = facts.commits.values().cloned().map(Fact::Commit).collect();
    for b in facts.builds.values() {
        all.push(Fact::Build(b.clone()));
        // What an earlier poll saw: the build pending without resources, or started.
        all.push(Fact::Build(BuildFact {
            status: BuildStatus::Pending,
            start: None,
            end: None,
            inputs: vec![],
            outputs: vec![],
            resources_known: false,
            ..b.clone()
        }));
        if b.status.is_finished() {
            all.push(Fact::Build(BuildFact { status: BuildStatus::Started, end: None, outputs: vec![], ..b.clone() }));
        }
    }
    all
}

fn same(got: &Derived, want: &Derived) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.journeys.len(), want.journeys.len());
    for (a, b) in got.journeys.iter().zip(&want.journeys) {
        prop_assert!(a == b, "journey {} differs:\n got  {:?}\n want {:?}", a.short(), a, b);
    }
    prop_assert_eq!(&got.quality, &want.quality);
    prop_assert_eq!(&got.build_methods, &want.build_methods);
    prop_assert_eq!(&got.gap_builds, &want.gap_builds);
    prop_assert_eq!(&got.stages, &want.stages);
    prop_assert_eq!(&got.deployments, &want.deployments);
    prop_assert_eq!(&got.environments, &want.environments);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn incremental_derivation_equals_a_full_one(
        seed in 0u64..1000,
        steps in proptest::collection::vec(step(), 1..14),
    ) {
        let start = crate::support::START;
        let topo = Topology::builtin("lana").unwrap();
        let cfg = lana_core(&topo);
        // Gates opened and failed deploys rerun on working-day afternoons, so QA and production
        // move: stages pending at a gate, opened, and deployed.
        let habit = deploy_journey::sim::workload::release_habit(&topo, seed, start, start + 7 * 86_400);
        let mut w = World::new(topo, start, seed);
        for (at, a) in LanaWorkload::new(seed).generate(start, start + 7 * 86_400).into_iter().chain(habit) {
            w.schedule_action(at, a);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut facts = Facts::default();
        let mut late: Vec<Fact> = vec![];
        let mut inc = Incremental::default();
        // Segments of 8 build ids and 4 journeys: a week crosses many of their boundaries.
        let mut tally = Tally::with_segments(3, 4);
        for (n, s) in steps.iter().enumerate() {
            match s {
                Step::Poll { minutes, share } => {
                    w.advance_to(w.now + minutes * 60);
                    let mut all = observed(&w);
                    all.append(&mut late);
                    all.shuffle(&mut rng);
                    let now_n = all.len() * *share as usize / 1000;
                    late = all.split_off(now_n);
                    // Some of it twice.
                    let dup = rng.random_range(0..=all.len());
                    all.extend(all[..dup].to_vec());
                    for f in all {
                        facts.apply(f);
                    }
                }
                Step::Forget { days_back } => {
                    let cutoff = w.now - days_back * 86_400;
                    let commits: Vec<Sha> = facts
                        .commits
                        .values()
                        .filter(|c| c.committer_date < cutoff && rng.random_bool(0.5))
                        .map(|c| c.sha.clone())
                        .collect();
                    for sha in commits {
                        facts.commits.remove(&sha);
                        facts.vanished.remove(&sha);
                    }
                    let builds: Vec<BuildId> = facts
                        .builds
                        .values()
                        .filter(|b| b.status.is_finished() && b.end.is_some_and(|e| e < cutoff) && rng.random_bool(0.5))
                        .map(|b| b.id)
                        .collect();
                    for id in builds {
                        facts.builds.remove(&id);
                    }
                }
                Step::Vanish { nth } => {
                    let order = branch_order(&facts);
                    if !order.is_empty() {
                        let sha = order[nth % order.len()].clone();
                        facts.apply(Fact::Vanished { sha, at: w.now });
                    }
                }
                Step::Origin { nth } => {
                    let order = branch_order(&facts);
                    if !order.is_empty() {
                        let sha = order[nth % order.len()].clone();
                        facts.apply(Fact::Origin { sha, origin: deploy_journey::core::premerge::Origin::Direct });
                    }
                }
                Step::Horizon { stage, hours_back } => {
                    let st = &cfg.stages[stage % cfg.stages.len()];
                    let since_time = w.now - hours_back * 3600;
                    let since_id = facts.builds.values().find(|b| b.start.is_some_and(|s| s >= since_time)).map_or(0, |b| b.id);
                    for j in &st.jobs {
                        facts.apply(Fact::Horizon(HorizonFact {
                            pipeline: st.pipeline.clone(),
                            job: j.name.clone(),
                            since_id,
                            since_time,
                        }));
                    }
                }
            }
            let want = derive(&facts, &cfg, w.now);
            let got = inc.derive(&facts, &cfg, w.now);
            same(&got, &want).map_err(|e| TestCaseError::fail(format!("after step {n} ({s:?}): {e}")))?;
            let sb = stage_builds(&facts, &cfg, &got);
            let kept = tally.update(&got, &sb, &cfg);
            let afresh = Totals::of(events(want.journeys.iter().map(|j| &**j), &stage_builds(&facts, &cfg, &want), &want, &cfg));
            prop_assert!(kept == afresh, "after step {} ({:?}): totals differ:\n kept   {:?}\n afresh {:?}", n, s, kept, afresh);
        }
    }
}

/// A lana world in the middle of its third working day (seed 4), and lana's core.
fn busy_lana_day() -> (World, CoreConfig) {
    let start = crate::support::START;
    let topo = Topology::builtin("lana").unwrap();
    let cfg = lana_core(&topo);
    let mut w = World::new(topo, start, 4);
    for (at, a) in LanaWorkload::new(4).generate(start, start + 3 * 86_400) {
        w.schedule_action(at, a);
    }
    w.advance_to(start + 2 * 86_400 + 11 * 3600);
    (w, cfg)
}

/// Between two polls of a busy lana day, the incremental derivation computes again only the
/// builds from the lowest changed one on and classifies only the new commits.
#[test]
fn a_poll_recomputes_only_what_changed() {
    let (mut w, cfg) = busy_lana_day();
    let mut inc = Incremental::default();
    let facts = facts_from_world(&w);
    let (_, first) = inc.derive_counted(&facts, &cfg, w.now);
    assert!(first.reset);
    assert_eq!(first.pushed, facts.builds.len());
    assert_eq!(first.classified, facts.commits.len());

    // Nothing new: nothing computed again.
    let (d, idle) = inc.derive_counted(&facts, &cfg, w.now + 30);
    assert_eq!((idle.reset, idle.classified, idle.pushed), (false, 0, 0));
    // The settled journeys (most of two and a half days) are taken as they were.
    assert!(idle.reused > facts.commits.len() / 2, "{} of {} journeys reused", idle.reused, facts.commits.len());
    assert_eq!(d.journeys, derive(&facts, &cfg, w.now + 30).journeys);

    // Half an hour later: only the new commits are classified, and only builds from the lowest
    // one that changed on are pushed again.
    w.advance_to(w.now + 1800);
    let later = facts_from_world(&w);
    let lowest_changed = later
        .builds
        .values()
        .find(|b| facts.builds.get(&b.id).is_none_or(|old| old.inputs != b.inputs || old.outputs != b.outputs))
        .map(|b| b.id);
    let (d, busy) = inc.derive_counted(&later, &cfg, w.now);
    assert!(!busy.reset);
    assert_eq!(busy.classified, later.commits.len() - facts.commits.len());
    let expect = lowest_changed.map(|id| later.builds.range(id..).count()).unwrap_or(0);
    assert_eq!(busy.pushed, expect, "builds pushed again");
    assert!(busy.pushed < later.builds.len() / 4, "{} of {} builds", busy.pushed, later.builds.len());
    assert!(busy.reused > 0 && busy.reused <= idle.reused, "{} reused after {}", busy.reused, idle.reused);
    assert_eq!(d.journeys, derive(&later, &cfg, w.now).journeys);
}

/// Between two polls, the journey totals are added up again only for the segments whose
/// builds or journeys changed, and still equal the totals added up afresh.
#[test]
fn a_poll_adds_up_only_the_segments_that_changed() {
    let (mut w, cfg) = busy_lana_day();
    let (mut inc, mut tally) = (Incremental::default(), Tally::with_segments(3, 4));
    let afresh = |facts: &Facts, d: &Derived| {
        Totals::of(events(d.journeys.iter().map(|j| &**j), &stage_builds(facts, &cfg, d), d, &cfg))
    };
    let mut cycle = |facts: &Facts, now: i64| {
        let d = inc.derive(facts, &cfg, now);
        let totals = tally.update(&d, &stage_builds(facts, &cfg, &d), &cfg);
        assert_eq!(totals, afresh(facts, &d));
        (tally.recomputed, tally.segments())
    };
    let facts = facts_from_world(&w);
    let (first, segments) = cycle(&facts, w.now);
    assert!(segments > 20, "{segments} segments");
    assert_eq!(first, segments, "the first cycle adds up every segment");
    let (idle, _) = cycle(&facts, w.now + 30);
    assert!(idle <= 1, "{idle} of {segments} segments added up again with nothing new");
    w.advance_to(w.now + 1800);
    let later = facts_from_world(&w);
    let (busy, segments) = cycle(&later, w.now);
    assert!(busy > 0 && busy < segments / 4, "{busy} of {segments} segments added up again after half an hour");
    // Stage builds out of id order are grouped all the same.
    let d = derive(&later, &cfg, w.now);
    let mut reversed = stage_builds(&later, &cfg, &d);
    reversed.reverse();
    assert_eq!(Tally::with_segments(3, 4).update(&d, &reversed, &cfg), afresh(&later, &d));
}
