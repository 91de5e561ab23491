//! Retention forgets old journeys without moving any counter or histogram: what they counted
//! is folded into a persisted baseline in the same transaction that deletes them.

use std::collections::BTreeMap;

use deploy_journey::core::journey::{CoreConfig, Derived, Facts, Journey, StageBuild, derive, stage_builds};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;
use deploy_journey::sinks::metrics::{Baseline, MetricsInput, render_text};

use crate::core_truth::{facts_from_world, lana_core};
use crate::support::START;

/// Journey counter and histogram samples (gauges excluded: they describe "now").
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|s| l.split([' ', '{']).next().unwrap_or("").ends_with(s))
                && !l.starts_with("deploy_journey_source_")
        })
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap())))
        .collect()
}

/// Twenty simulated lana days (seed 3), as the APIs show them, eight hours after the last.
fn twenty_lana_days() -> (Facts, CoreConfig, i64) {
    lana_days(20)
}

/// `days` simulated lana days (seed 3), as the APIs show them, eight hours after the last.
fn lana_days(days: i64) -> (Facts, CoreConfig, i64) {
    let topo = Topology::builtin("lana").unwrap();
    let mut w = World::new(topo.clone(), START, 3);
    for (at, a) in LanaWorkload::new(3).generate(START, START + days * 86_400) {
        w.schedule_action(at, a);
    }
    let now = START + days * 86_400 + 8 * 3600;
    w.advance_to(now);
    (facts_from_world(&w), lana_core(&topo), now)
}

/// A scrape of `facts` at `now` over `baseline`, with the derivation it renders.
fn render(facts: &Facts, core: &CoreConfig, now: i64, baseline: &Baseline) -> (String, Derived, Vec<StageBuild>) {
    let d = derive(facts, core, now);
    let sb = stage_builds(facts, core, &d);
    let input = MetricsInput {
        totals: None,
        derived: &d,
        stage_builds: &sb,
        core,
        sources: &[],
        now,
        poll_interval_secs: 30,
        version: "test",
        baseline,
        spans: None,
        store_errors: 0,
        auth_rejections: None,
    };
    (render_text(&input), d, sb)
}

/// `retention::plan_settling` with the memory window's edge at day ten and nothing pinned.
fn settle_at_day_ten(
    facts: &Facts,
    derived: &Derived,
    sb: &[StageBuild],
    core: &CoreConfig,
    hold_from: i64,
) -> deploy_journey::retention::Settling {
    deploy_journey::retention::plan_settling(
        facts,
        derived,
        sb,
        core,
        START + 10 * 86_400,
        hold_from,
        &Default::default(),
    )
}

#[test]
fn pruning_old_journeys_keeps_every_counter_and_histogram() {
    let (mut facts, core, now) = twenty_lana_days();
    let render = |facts: &Facts, baseline: &Baseline| render(facts, &core, now, baseline);
    let (before, derived, sb) = render(&facts, &Baseline::default());
    let plan = deploy_journey::retention::plan(&facts, &derived, &sb, &core, START + 10 * 86_400);
    assert!(
        plan.commits.len() > 10 && plan.builds.len() > 50,
        "{} commits, {} builds",
        plan.commits.len(),
        plan.builds.len()
    );
    let n_before = (facts.commits.len(), facts.builds.len());
    deploy_journey::retention::apply(&mut facts, &plan);
    assert!(facts.commits.len() < n_before.0 && facts.builds.len() < n_before.1);

    // Through the store, as the app does it: fold and delete in one transaction, read back.
    let mut store = deploy_journey::store::Store::open_in_memory().unwrap();
    let deltas: Vec<_> = plan
        .rows
        .iter()
        .map(|(n, l, v)| deploy_journey::store::Counter { name: n.clone(), labels: l.clone(), value: *v })
        .collect();
    store.prune_and_fold(i64::MIN, |_| true, &deltas).unwrap();
    let baseline = Baseline::from_rows(store.counters().unwrap().into_iter().map(|c| (c.name, c.labels, c.value)));

    let (after, derived_after, _) = render(&facts, &baseline);
    // Every journey that stays is exactly what it was.
    for j in &derived_after.journeys {
        let was = derived.journeys.iter().find(|x| x.sha == j.sha).expect("kept journeys existed before");
        assert!(was == j, "journey {} changed by pruning:\n was {was:?}\n now {j:?}", j.short());
    }
    let (a, b) = (samples(&before), samples(&after));
    assert!(a.len() > 100, "{}", a.len());
    let mut diffs = vec![];
    for (k, v) in &a {
        let got = b.get(k).copied().unwrap_or(f64::NAN);
        if (got - v).abs() > 1e-6 * v.abs().max(1.0) {
            diffs.push(format!("{k}: {v} -> {got}"));
        }
    }
    assert_eq!(a.len(), b.len(), "same series");
    assert!(diffs.is_empty(), "{} samples moved:\n{}", diffs.len(), diffs.join("\n"));
    println!("pruned {} commits and {} builds; {} samples unchanged", plan.commits.len(), plan.builds.len(), a.len());
}

/// Settling with held journeys (`retention::plan_settling`, `core::held`) changes nothing a
/// scrape shows: every sample, the gauges of now included (same `now`), is what the whole
/// history in memory gives, though most journeys left memory (the simulated production gate
/// never opens, so they are held, not settled).
#[test]
fn settling_and_holding_change_no_sample_of_a_scrape() {
    let (mut facts, core, now) = twenty_lana_days();
    let render = |facts: &Facts, baseline: &Baseline| render(facts, &core, now, baseline);
    let every_sample = |text: &str| -> BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("deploy_journey_source_"))
            .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap())))
            .collect()
    };
    let (before, derived, sb) = render(&facts, &Baseline::default());
    let plan = settle_at_day_ten(&facts, &derived, &sb, &core, i64::MIN);
    assert!(plan.held.records.len() > 10, "{} held", plan.held.records.len());
    assert!(
        !plan.held.wakes.is_empty() && plan.held.wakes.iter().all(|(p, _)| p != "lana-bank"),
        "{:?}",
        plan.held.wakes
    );
    let n_before = facts.commits.len();
    deploy_journey::retention::apply(&mut facts, &plan.out);
    facts.held = std::sync::Arc::new(plan.held.records.clone());
    assert!(facts.commits.len() * 3 < n_before * 2, "{} of {n_before} commits stay in memory", facts.commits.len());
    let baseline = Baseline::from_rows(plan.settled.rows.iter().chain(&plan.held.rows).cloned());
    let (after, _, _) = render(&facts, &baseline);
    let (a, b) = (every_sample(&before), every_sample(&after));
    assert!(a.keys().any(|k| k.starts_with("deploy_journey_commits_behind")), "{a:?}");
    let diffs: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k).zip(b.get(*k)).is_none_or(|(x, y)| (x - y).abs() > 1e-6 * x.abs().max(1.0)))
        .map(|k| format!("{k}: {:?} -> {:?}", a.get(k), b.get(k)))
        .collect();
    assert!(diffs.is_empty(), "{} samples moved:\n{}", diffs.len(), diffs.join("\n"));
    println!("{} held, {} settled; {} samples unchanged", plan.held.records.len(), plan.settled.commits.len(), a.len());
}

/// Folding a whole history at once (a first start on an unsettled store) gives the rows the live
/// tally renders: `fold` sums its events a slice at a time, and no slice is lost or doubled.
#[test]
fn folding_every_journey_and_build_at_once_equals_the_live_counts() {
    let (facts, core, now) = lana_days(40);
    let (live, derived, sb) = render(&facts, &core, now, &Baseline::default());
    let journeys: Vec<&Journey> = derived.journeys.iter().map(|j| &**j).collect();
    // More than one slice of each (`fold` sums 256 at a time).
    assert!(journeys.len() > 256 && sb.len() > 256, "{} journeys, {} builds", journeys.len(), sb.len());
    let rows = deploy_journey::sinks::metrics::baseline::fold(&journeys, &sb, &derived, &core);
    let (folded, _, _) = render(&Facts::default(), &core, now, &Baseline::from_rows(rows));
    let (live, folded) = (samples(&live), samples(&folded));
    let differ: Vec<_> = live.iter().filter(|(k, v)| folded.get(*k) != Some(v)).take(5).collect();
    assert!(differ.is_empty(), "samples the fold does not give: {differ:?}");
    assert_eq!(live.len(), folded.len());
}

/// Retention brings held journeys back when it reaches one held in its own right
/// (`HeldPlan::due`), not for the older journeys held along with them (what a held one's
/// derivation needs): those stay held while a held one needs them, so bringing everything back
/// for them did so every poll cycle (`docs/benchmarks.md`, session 15).
#[test]
fn held_journeys_fall_due_when_retention_reaches_one_held_in_its_own_right() {
    let (facts, core, now) = twenty_lana_days();
    let (_, derived, sb) = render(&facts, &core, now, &Baseline::default());
    for hold_days in [4, 6, 8] {
        let hold_from = START + hold_days * 86_400;
        let plan = settle_at_day_ten(&facts, &derived, &sb, &core, hold_from);
        let records = &plan.held.records;
        let due = plan.held.due.expect("the simulated production lacks journeys: some are held");
        assert!(due >= hold_from, "day {hold_days}: due {due} before hold_from {hold_from}");
        assert!(records.iter().any(|r| r.commit_time == due), "day {hold_days}: no held journey is due at {due}");
        // The case the rule is for: journeys older than `hold_from` held along.
        let along = records.iter().filter(|r| r.commit_time < hold_from).count();
        assert!(along > 0, "day {hold_days}: nothing held along ({} held)", records.len());
    }
}
