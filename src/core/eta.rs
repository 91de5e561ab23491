//! When will a commit in flight reach each environment? A prediction from the journeys'
//! own history: per stage, the waits and build durations of the commits that went through it
//! recently, and what each stage is doing now (running, busy with another build, queued).
//!
//! The model, stage by stage in configuration order (a stage is ready when every applicable
//! upstream stage has ended):
//! - ended: its real end;
//! - running: the median of the past durations longer than the time it has already run
//!   (a build that has run 10 minutes is not expected to take the unconditional median), or one
//!   minute from now when it has outrun them all;
//! - busy with a build that does not carry the commit: that build's expected end, then one
//!   duration (Concourse builds the newest version next);
//! - queued: starts now, then one duration;
//! - otherwise (waiting upstream, pending, awaiting approval at a gate): ready, plus the median
//!   wait, plus the median duration.
//!
//! No prediction is made past a failed stage (a person decides whether it is rerun), for a
//! passive commit no build carried yet (it waits for a triggering commit that may never come),
//! nor for a stage with no history. Pure: a function of the derived journeys and `now`.

use std::collections::{BTreeMap, HashMap};

use crate::core::journey::{CoreConfig, Derived, Journey, StageState, WaitsFor};

/// How many of the most recent observations per stage are learnt from.
pub const WINDOW: usize = 50;
/// What is left of a build that has outrun every past duration: "any minute now".
const OVERDUE: i64 = 60;

/// Past waits and durations of one stage, each sorted ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageHistory {
    pub waits: Vec<i64>,
    pub durations: Vec<i64>,
}

impl StageHistory {
    fn median(v: &[i64]) -> Option<i64> {
        (!v.is_empty()).then(|| v[v.len() / 2])
    }
    /// Median duration of the builds that ran longer than `elapsed`.
    fn remaining(&self, elapsed: i64) -> Option<i64> {
        if self.durations.is_empty() {
            return None;
        }
        let longer = &self.durations[self.durations.partition_point(|d| *d <= elapsed)..];
        Some(Self::median(longer).map(|d| d - elapsed).unwrap_or(OVERDUE))
    }
}

/// What the predictions learn from: per configured stage (in order), its recent history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub stages: Vec<StageHistory>,
}

impl History {
    /// The `WINDOW` most recently ended stage runs of each stage that succeeded through the
    /// commit's own builds (a commit carried by a later build would count that build's wait
    /// twice), at or before `now`.
    pub fn learn(derived: &Derived, cfg: &CoreConfig, now: i64) -> History {
        let mut obs: Vec<Vec<(i64, i64, i64)>> = vec![vec![]; cfg.stages.len()];
        for j in &derived.journeys {
            for (i, s) in j.stages.iter().enumerate().take(cfg.stages.len()) {
                if s.state != StageState::Succeeded || !s.attempts.iter().all(|a| a.own) {
                    continue;
                }
                if let (Some(end), Some(wait), Some(dur)) = (s.end, s.wait(), s.duration())
                    && end <= now
                {
                    obs[i].push((end, wait.max(0), dur.max(0)));
                }
            }
        }
        let stages = obs
            .into_iter()
            .map(|mut o| {
                o.sort_unstable();
                let recent = &o[o.len().saturating_sub(WINDOW)..];
                let mut waits: Vec<i64> = recent.iter().map(|x| x.1).collect();
                let mut durations: Vec<i64> = recent.iter().map(|x| x.2).collect();
                waits.sort_unstable();
                durations.sort_unstable();
                StageHistory { waits, durations }
            })
            .collect();
        History { stages }
    }
}

/// Predicted arrival per environment (Unix time) of a journey on its way; environments it has
/// reached, or cannot be predicted for, are absent.
pub fn predict(j: &Journey, cfg: &CoreConfig, history: &History, now: i64) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    // A journey that ended (`journey_ends_at`) still travels on to the environments after it:
    // those are predicted too; the ones it reached are not.
    if j.vanished {
        return out;
    }
    // Predicted (or real) end per stage; `None`: not applicable; unknown stops the walk.
    let mut ends: Vec<Option<i64>> = vec![None; cfg.stages.len()];
    for (i, def) in cfg.stages.iter().enumerate() {
        let Some(s) = j.stages.get(i) else { break };
        let hist = history.stages.get(i).cloned().unwrap_or_default();
        let ready = def.after.iter().filter_map(|u| ends.get(*u).copied().flatten()).max().unwrap_or(j.commit_time);
        let end = match s.state {
            StageState::NotApplicable => continue,
            StageState::Succeeded => match s.end {
                Some(e) => e,
                None => return out,
            },
            StageState::Failed | StageState::Incomplete | StageState::Riding => return out,
            StageState::Running => {
                let start = s.attempts.iter().filter(|a| a.end.is_none()).filter_map(|a| a.start).max().or(s.start);
                let elapsed = start.map(|st| (now - st).max(0)).unwrap_or(0);
                match hist.remaining(elapsed) {
                    Some(r) => now + r,
                    None => return out,
                }
            }
            // At an approval gate, the stage's past waits are the gate's: people's habits.
            StageState::Waiting | StageState::Pending | StageState::AwaitingApproval => {
                let (Some(wait), Some(dur)) =
                    (StageHistory::median(&hist.waits), StageHistory::median(&hist.durations))
                else {
                    return out;
                };
                match &s.waits_for {
                    Some(WaitsFor::TriggeringCommit) => return out,
                    Some(WaitsFor::Queued(_)) => now + dur,
                    Some(WaitsFor::Busy(b)) => {
                        let busy_end = match b.start {
                            Some(st) => now + hist.remaining((now - st).max(0)).unwrap_or(OVERDUE),
                            None => now + dur,
                        };
                        busy_end.max(ready) + dur
                    }
                    _ => ready.max(now) + wait + dur,
                }
            }
        };
        ends[i] = Some(end);
        if let Some(env) = &def.environment
            && !j.deployed_at.contains_key(env)
            && !matches!(s.state, StageState::Succeeded)
        {
            out.entry(env.clone()).or_insert(end.max(now));
        }
    }
    out
}

/// Predictions for every journey of `derived` still on its way to an environment (in flight,
/// or ended before the last environment), by sha (journeys with none are absent).
pub fn predict_all(derived: &Derived, cfg: &CoreConfig, now: i64) -> HashMap<String, BTreeMap<String, i64>> {
    let history = History::learn(derived, cfg, now);
    let environments = cfg.environments().len();
    derived
        .journeys
        .iter()
        // An ended journey is predicted only while one of its later environments' stages is in
        // flight (not every old commit that never applied to one, every poll).
        .filter(|j| {
            !j.ended
                || (j.deployed_at.len() < environments
                    && j.stages.iter().zip(&cfg.stages).any(|(s, d)| d.environment.is_some() && s.state.in_flight()))
        })
        .filter_map(|j| {
            let p = predict(j, cfg, &history, now);
            (!p.is_empty()).then(|| (j.sha.clone(), p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::classify::{ChangeType, Classification, Classifier};
    use crate::core::journey::{
        Attempt, BuildStatus, LeadTimeFrom, Method, Outcome, RunningBuild, StageDef, StageJourney,
    };

    fn def(name: &str, after: &[usize], env: Option<&str>) -> StageDef {
        StageDef {
            name: name.into(),
            pipeline: "p".into(),
            jobs: vec![],
            after: after.to_vec(),
            inputs: None,
            bridges: vec![],
            fallback_git_input: None,
            environment: env.map(Into::into),
            stuck_after: None,
            carries_passive: true,
            approval: false,
        }
    }

    fn cfg() -> CoreConfig {
        CoreConfig {
            classifier: Classifier::new(vec![]),
            // tests → rc → staging
            stages: vec![def("tests", &[], None), def("rc", &[0], None), def("deploy", &[1], Some("staging"))],
            lead_time_from: LeadTimeFrom::CommitterDate,
            not_picked_up_after: 300,
            step_resources: Default::default(),
            dora: Default::default(),
            journey_ends_at: None,
        }
    }

    fn attempt(start: i64, end: Option<i64>, own: bool) -> Attempt {
        Attempt {
            build_id: 1,
            pipeline: "p".into(),
            job: "j".into(),
            name: "1".into(),
            status: if end.is_some() { BuildStatus::Succeeded } else { BuildStatus::Started },
            start: Some(start),
            end,
            url: String::new().into(),
            rerun_of: None,
            method: Method::Exact,
            own,
            head: None,
        }
    }

    /// `(state, ready, start, end)` of a stage.
    type Row = (StageState, Option<i64>, Option<i64>, Option<i64>);

    fn journey(t0: i64, stages: &[Row]) -> Journey {
        Journey {
            sha: format!("{t0:040}"),
            subject: "s".into(),
            author: "a".into(),
            commit_time: t0,
            lead_start: t0,
            origin: None,
            classification: Classification { resources: vec![], change_type: ChangeType::Backend },
            stages: stages
                .iter()
                .enumerate()
                .map(|(i, (state, ready, start, end))| StageJourney {
                    name: format!("s{i}"),
                    state: *state,
                    ready_at: *ready,
                    start: *start,
                    end: *end,
                    attempts: start.map(|s| vec![attempt(s, *end, true)]).unwrap_or_default(),
                    expected_jobs: vec![],
                    waits_for: None,
                })
                .collect(),
            outcome: Outcome::InFlight,
            failed_stage: None,
            carried_on: false,
            ended: false,
            ended_in: None,
            deployed_at: Default::default(),
            carried_by: None,
            not_picked_up: false,
            vanished: false,
        }
    }

    use StageState::*;

    /// History: three past commits, each stage waits 60 s then runs; tests 600/900/1200 s,
    /// rc 300 s, deploy 900 s.
    fn history() -> (Derived, i64) {
        let mut journeys = vec![];
        for (k, tests) in [600, 900, 1200].into_iter().enumerate() {
            let t0 = k as i64 * 10_000;
            let (a, b) = (t0 + 60, t0 + 60 + tests);
            let (c, d) = (b + 60, b + 360);
            let (e, f) = (d + 60, d + 960);
            let mut j = journey(
                t0,
                &[
                    (Succeeded, Some(t0), Some(a), Some(b)),
                    (Succeeded, Some(b), Some(c), Some(d)),
                    (Succeeded, Some(d), Some(e), Some(f)),
                ],
            );
            j.ended = true;
            journeys.push(std::sync::Arc::new(j));
        }
        (Derived { journeys, ..Default::default() }, 100_000)
    }

    fn check(j: Journey, now: i64, want: Option<i64>) {
        let (d, _) = history();
        let h = History::learn(&d, &cfg(), now);
        assert_eq!(h.stages[0].durations, [600, 900, 1200]);
        let got = predict(&j, &cfg(), &h, now).get("staging").copied();
        assert_eq!(got, want, "{:?}", j.stages.iter().map(|s| s.state).collect::<Vec<_>>());
    }

    #[test]
    fn predictions_by_state() {
        let t0 = 200_000;
        // Waiting at tests: ready at t0 (now), 60 + 900 median, then rc 60+300, deploy 60+900.
        check(
            journey(t0, &[(Pending, Some(t0), None, None), (Waiting, None, None, None), (Waiting, None, None, None)]),
            t0,
            Some(t0 + 960 + 360 + 960),
        );
        // Tests running for 700 s: the builds longer than 700 are 900 and 1200 → median 1200 → 500 left.
        let now = t0 + 760;
        check(
            journey(
                t0,
                &[(Running, Some(t0), Some(t0 + 60), None), (Waiting, None, None, None), (Waiting, None, None, None)],
            ),
            now,
            Some(now + 500 + 360 + 960),
        );
        // Running longer than every past build: any minute now.
        let now = t0 + 5_000;
        check(
            journey(
                t0,
                &[(Running, Some(t0), Some(t0 + 60), None), (Waiting, None, None, None), (Waiting, None, None, None)],
            ),
            now,
            Some(now + 60 + 360 + 960),
        );
        // Deploy running, started 100 s ago: past deploys all took 900 → 800 left.
        let now = t0 + 3_000;
        check(
            journey(
                t0,
                &[
                    (Succeeded, Some(t0), Some(t0 + 10), Some(t0 + 1_000)),
                    (Succeeded, Some(t0 + 1_000), Some(t0 + 1_100), Some(t0 + 1_400)),
                    (Running, Some(t0 + 1_400), Some(now - 100), None),
                ],
            ),
            now,
            Some(now + 800),
        );
        // Failed: no prediction. Riding: none either.
        check(
            journey(
                t0,
                &[(Failed, Some(t0), Some(t0), Some(t0 + 5)), (Waiting, None, None, None), (Waiting, None, None, None)],
            ),
            t0 + 10,
            None,
        );
        check(
            journey(t0, &[(Riding, Some(t0), None, None), (Waiting, None, None, None), (Waiting, None, None, None)]),
            t0 + 10,
            None,
        );
        // Not applicable tests (frontend-only): rc is ready at commit time.
        check(
            journey(
                t0,
                &[(NotApplicable, None, None, None), (Pending, Some(t0), None, None), (Waiting, None, None, None)],
            ),
            t0,
            Some(t0 + 360 + 960),
        );
    }

    #[test]
    fn busy_and_queued_stages() {
        let t0 = 200_000;
        let busy = RunningBuild {
            build_id: 9,
            pipeline: "p".into(),
            job: "j".into(),
            name: "9".into(),
            status: BuildStatus::Started,
            start: Some(t0 - 300),
            url: String::new().into(),
            rerun_of: None,
            head: None,
        };
        let mut j =
            journey(t0, &[(Pending, Some(t0), None, None), (Waiting, None, None, None), (Waiting, None, None, None)]);
        j.stages[0].waits_for = Some(WaitsFor::Busy(busy.clone()));
        // The busy build ran 300 s: longer ones are 600, 900, 1200 → 900 → 600 left; then 900.
        check(j.clone(), t0, Some(t0 + 600 + 900 + 360 + 960));
        j.stages[0].waits_for =
            Some(WaitsFor::Queued(RunningBuild { status: BuildStatus::Pending, start: None, ..busy }));
        check(j.clone(), t0, Some(t0 + 900 + 360 + 960));
        j.stages[0].waits_for = Some(WaitsFor::TriggeringCommit);
        check(j, t0, None);
    }

    #[test]
    fn learns_only_own_recent_successes() {
        let (mut d, now) = history();
        // Nothing ended after `now` is learnt.
        assert_eq!(History::learn(&d, &cfg(), 10_000).stages[0].durations, [600]);
        // A stage carried by a later commit's build is not learnt from.
        std::sync::Arc::make_mut(&mut d.journeys[0]).stages[0].attempts[0].own = false;
        let h = History::learn(&d, &cfg(), now);
        assert_eq!(h.stages[0].durations, [900, 1200]);
        assert!(History::learn(&Derived::default(), &cfg(), now).stages.iter().all(|s| s.durations.is_empty()));
    }
}
