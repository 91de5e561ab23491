//! Held journeys: old journeys whose facts the store keeps while memory does not, because an
//! environment's running version still lacks them (a production deployed monthly lacks a month
//! of commits). What the gauges of now count of each is kept instead ([`Held`]): being behind,
//! waiting at a gate, being in flight somewhere.
//!
//! That stays true until a build of a job at one of its unfinished stages arrives: only such a
//! build can deliver it, open its gate, or start or end what it waits for (its other stages
//! succeeded or do not apply, and attempts stop at a stage's first success). [`wakes`] names
//! those jobs; the app then loads the facts back and derives them again.

use std::collections::BTreeSet;

use crate::core::journey::{CoreConfig, Derived, Journey, Outcome, StageState};

/// What the gauges of now count of a held journey, as the derivation that held it out saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub sha: String,
    pub commit_time: i64,
    /// Where it is in flight ([`Journey::in_flight_at`]), for the in-flight gauges.
    pub in_flight: Option<(usize, StageState, i64)>,
    pub not_picked_up: bool,
    /// Per environment, in the order of `Derived::environments`.
    pub environments: Vec<HeldIn>,
}

/// A held journey against one environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldIn {
    /// The running version lacks it (it counts in `behind`).
    pub lacks: bool,
    /// It waits at the environment's gate, and since when it has been ready there (if known).
    pub awaiting: Option<Option<i64>>,
}

impl Held {
    /// The held record of `derived.journeys[i]`.
    pub fn of(derived: &Derived, i: usize) -> Held {
        let j = &derived.journeys[i];
        let counted = !j.vanished && j.outcome != Outcome::Incomplete;
        let environments = derived
            .environments
            .iter()
            .map(|e| HeldIn {
                lacks: e.lacking.binary_search(&i).is_ok(),
                awaiting: e.awaiting.binary_search_by_key(&i, |(k, _)| *k).ok().map(|k| e.awaiting[k].1),
            })
            .collect();
        Held {
            sha: j.sha.clone(),
            commit_time: j.commit_time,
            in_flight: if counted && !j.ended { j.in_flight_at() } else { None },
            not_picked_up: counted && !j.ended && j.not_picked_up,
            environments,
        }
    }
}

/// Whether a journey may be held: every stage that is not done (succeeded, or not applicable)
/// is an environment's, so that only the rare builds of deploy jobs can change it.
pub fn holdable(j: &Journey, core: &CoreConfig) -> bool {
    j.stages
        .iter()
        .zip(&core.stages)
        .all(|(s, st)| matches!(s.state, StageState::Succeeded | StageState::NotApplicable) || st.environment.is_some())
}

/// The (pipeline, job) pairs whose builds can change a held journey: the expected jobs of its
/// stages that are not done.
pub fn wakes(j: &Journey, core: &CoreConfig) -> BTreeSet<(String, String)> {
    j.stages
        .iter()
        .zip(&core.stages)
        .filter(|(s, _)| !matches!(s.state, StageState::Succeeded | StageState::NotApplicable))
        .flat_map(|(s, st)| s.expected_jobs.iter().map(|job| (st.pipeline.clone(), job.clone())))
        .collect()
}
