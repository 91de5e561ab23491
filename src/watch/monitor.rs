//! The state machine behind `watch`: successive typed views of one journey (`crate::view`, what
//! the exporter's JSON API serves) in, display events and a verdict out. Pure: time is an argument.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::facts::BuildStatus;
use crate::core::journey::{Outcome, StageState};
use crate::view::{AttemptView, JourneyView, StageView, WaitsKind};

use super::fmt_secs;
use super::plan::Plan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The commit is known to the engine for the first time.
    Seen,
    StageStarted {
        stage: String,
        builds: Vec<String>,
    },
    StageSucceeded {
        stage: String,
        wait: Option<i64>,
        duration: Option<i64>,
    },
    /// A build carrying the commit failed (or errored, or was aborted).
    BuildFailed {
        stage: String,
        job: String,
        build: String,
        status: String,
        url: String,
    },
    /// A rerun or a later build of a job that had failed.
    BuildRetried {
        stage: String,
        job: String,
        build: String,
    },
    /// A later commit's build carries this one.
    CarriedBy {
        sha: String,
    },
    NotPickedUp {
        after: i64,
    },
    OverThreshold {
        stage: String,
        elapsed: i64,
        threshold: i64,
    },
    Deployed {
        environment: String,
        lead_time: Option<i64>,
    },
    /// What the commit waits for at its current stage changed (no build yet, the stage is busy
    /// with another build, an upstream stage, or a triggering commit to ride with).
    Waits {
        stage: String,
        what: String,
    },
    /// The predicted arrival in an environment, said when first known and when it moves by
    /// [`ETA_MOVE`] or more; `in_secs` is from the moment it was said.
    Eta {
        environment: String,
        at: i64,
        in_secs: i64,
    },
}

/// How far a prediction must move before it is said again: a prediction recomputed every poll
/// drifts by seconds, which is noise to a person.
pub const ETA_MOVE: i64 = 300;

impl Event {
    pub fn is_warning(&self) -> bool {
        matches!(self, Event::NotPickedUp { .. } | Event::OverThreshold { .. })
    }

    /// One line for a person.
    pub fn line(&self) -> String {
        match self {
            Event::Seen => "seen by the engine".into(),
            Event::StageStarted { stage, builds } => format!("{stage}: started ({})", builds.join(", ")),
            Event::StageSucceeded { stage, wait, duration } => format!(
                "{stage}: succeeded in {} (waited {})",
                duration.map(fmt_secs).unwrap_or_else(|| "?".into()),
                wait.map(fmt_secs).unwrap_or_else(|| "?".into())
            ),
            Event::BuildFailed { stage, job, build, status, url } => {
                format!("{stage}: {job} #{build} {status} ({url})")
            }
            Event::BuildRetried { stage, job, build } => format!("{stage}: {job} #{build} started again"),
            Event::CarriedBy { sha } => {
                format!("carried by a later commit's build ({})", sha.get(..7).unwrap_or(sha))
            }
            Event::NotPickedUp { after } => format!(
                "warning: not picked up after {}: no build has taken it (are its files only in ignored paths?)",
                fmt_secs(*after)
            ),
            Event::OverThreshold { stage, elapsed, threshold } => format!(
                "warning: {stage} has been running for {}, over its {} threshold",
                fmt_secs(*elapsed),
                fmt_secs(*threshold)
            ),
            Event::Waits { stage, what } => format!("{stage}: {what}"),
            Event::Eta { environment, at, in_secs } => format!(
                "expected in {environment} around {} UTC (in {})",
                super::display::clock_time(*at),
                fmt_secs(*in_secs)
            ),
            Event::Deployed { environment, lead_time } => format!(
                "deployed to {environment}; lead time {}",
                lead_time.map(fmt_secs).unwrap_or_else(|| "?".into())
            ),
        }
    }
}

/// Where following stands after a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// The goal stage succeeded (for an environment stage: the commit is deployed there).
    Reached,
    /// A job carrying the commit failed and nothing carrying it runs or succeeded since.
    Failed {
        stage: String,
        job: String,
        build_id: i64,
        build: String,
        url: String,
    },
    /// The goal stage does not apply to this commit.
    NotApplicable {
        stage: String,
    },
    /// The commit is older than the build history the exporter read: where it went is unknown,
    /// and waiting would not tell.
    Incomplete,
}

#[derive(Debug, Default)]
pub struct Monitor {
    seen: bool,
    started: BTreeSet<String>,
    succeeded: BTreeSet<String>,
    /// Build id → status last seen.
    builds: BTreeMap<i64, BuildStatus>,
    failed_jobs: BTreeSet<(String, String)>,
    warned_stages: BTreeSet<String>,
    warned_not_picked_up: bool,
    carried_by: Option<String>,
    deployed: BTreeSet<String>,
    /// The last "waits for" said: (stage, kind, build id, upstream).
    waits: Option<(String, WaitsKind, Option<i64>, Option<String>)>,
    /// The last predicted arrival said, per environment.
    etas: BTreeMap<String, i64>,
}

fn is_failure(status: BuildStatus) -> bool {
    matches!(status, BuildStatus::Failed | BuildStatus::Errored | BuildStatus::Aborted)
}

impl Monitor {
    pub fn new() -> Monitor {
        Monitor::default()
    }

    /// What changed since the previous view.
    pub fn observe(&mut self, plan: &Plan, j: &JourneyView, now: i64) -> Vec<Event> {
        let mut out = vec![];
        if !self.seen {
            self.seen = true;
            out.push(Event::Seen);
        }
        if j.not_picked_up && !self.warned_not_picked_up {
            self.warned_not_picked_up = true;
            out.push(Event::NotPickedUp { after: plan.not_picked_up_after });
        }
        for s in &j.stages {
            if s.state == StageState::NotApplicable {
                continue;
            }
            for a in &s.attempts {
                let before = self.builds.insert(a.build_id, a.status);
                let key = (s.name.clone(), a.job.clone());
                if before.is_none() && self.failed_jobs.contains(&key) {
                    out.push(Event::BuildRetried { stage: s.name.clone(), job: a.job.clone(), build: a.name.clone() });
                }
                if is_failure(a.status) && before != Some(a.status) {
                    self.failed_jobs.insert(key);
                    out.push(Event::BuildFailed {
                        stage: s.name.clone(),
                        job: a.job.clone(),
                        build: a.name.clone(),
                        status: a.status.as_str().to_string(),
                        url: a.url.clone(),
                    });
                }
            }
            if !s.attempts.is_empty() && self.started.insert(s.name.clone()) {
                out.push(Event::StageStarted { stage: s.name.clone(), builds: builds_of(s) });
            }
            if s.state == StageState::Succeeded && self.succeeded.insert(s.name.clone()) {
                out.push(Event::StageSucceeded {
                    stage: s.name.clone(),
                    wait: s.wait_seconds,
                    duration: s.duration_seconds,
                });
            }
            if s.state == StageState::Running
                && let (Some(start), Some(threshold)) = (s.start, plan.threshold(&s.name))
                && now - start > threshold
                && self.warned_stages.insert(s.name.clone())
            {
                out.push(Event::OverThreshold { stage: s.name.clone(), elapsed: now - start, threshold });
            }
        }
        // What it waits for at its current stage, said when that changes (not as time passes).
        let current = j.stages.iter().find(|s| s.state.in_flight());
        if let Some(s) = current
            && let Some(w) = &s.waits_for
        {
            let key = (s.name.clone(), w.kind, w.build.as_ref().map(|b| b.build_id), w.upstream.clone());
            if self.waits.as_ref() != Some(&key) {
                self.waits = Some(key);
                out.push(Event::Waits { stage: s.name.clone(), what: w.text.clone() });
            }
        }
        if let Some(c) = &j.carried_by
            && self.carried_by.as_ref() != Some(c)
        {
            self.carried_by = Some(c.clone());
            out.push(Event::CarriedBy { sha: c.clone() });
        }
        for (env, at) in &j.eta {
            let moved = self.etas.get(env).is_none_or(|said| (said - at).abs() >= ETA_MOVE);
            if moved && !j.deployed_at.contains_key(env) {
                self.etas.insert(env.clone(), *at);
                out.push(Event::Eta { environment: env.clone(), at: *at, in_secs: (at - now).max(0) });
            }
        }
        for env in j.deployed_at.keys() {
            if self.deployed.insert(env.clone()) {
                out.push(Event::Deployed {
                    environment: env.clone(),
                    lead_time: j.lead_time_seconds.get(env).copied(),
                });
            }
        }
        out
    }
}

fn builds_of(s: &StageView) -> Vec<String> {
    s.attempts.iter().map(|a| format!("{} #{}", a.job, a.name)).collect()
}

/// Whether following can stop, and how.
pub fn verdict(plan: &Plan, j: &JourneyView) -> Verdict {
    let goal = j.stages.iter().find(|s| s.name == plan.goal_name);
    if let Some(env) = &plan.goal_environment {
        if j.deployed_at.contains_key(env) {
            return Verdict::Reached;
        }
    } else if let Some(g) = goal {
        if g.state == StageState::Succeeded {
            return Verdict::Reached;
        }
        if g.state == StageState::NotApplicable {
            return Verdict::NotApplicable { stage: g.name.clone() };
        }
    }
    if j.outcome == Outcome::Incomplete {
        return Verdict::Incomplete;
    }
    for s in &j.stages {
        // Per job: its newest attempt failed, and no attempt of it succeeded or still runs.
        let mut by_job: BTreeMap<&str, Vec<&AttemptView>> = BTreeMap::new();
        for a in &s.attempts {
            by_job.entry(a.job.as_str()).or_default().push(a);
        }
        for (job, atts) in by_job {
            let settled_bad = atts.iter().all(|a| is_failure(a.status));
            if settled_bad && let Some(last) = atts.iter().max_by_key(|a| (a.start.unwrap_or(0), a.build_id)) {
                return Verdict::Failed {
                    stage: s.name.clone(),
                    job: job.to_string(),
                    build_id: last.build_id,
                    build: last.name.clone(),
                    url: last.url.clone(),
                };
            }
        }
    }
    Verdict::Continue
}

/// The text after a stage's name in the live display: state, elapsed time while running,
/// and the builds carrying the commit.
pub fn stage_status(s: &StageView, now: i64) -> String {
    let builds = s
        .attempts
        .iter()
        .map(|a| format!("{} #{} {}", a.job, a.name, a.status.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let head = match s.state {
        StageState::Running => format!("running {}", s.start.map(|t| fmt_secs(now - t)).unwrap_or_default()),
        StageState::Pending => {
            let p = format!(
                "pending {}",
                s.ready_at.map(|t| format!("(ready {} ago)", fmt_secs(now - t))).unwrap_or_default()
            );
            match &s.waits_for {
                // The build it waits behind, with how long that has been running.
                Some(w) => match w.build.as_ref().and_then(|b| b.start) {
                    Some(t) => format!("{p}: {} for {}", w.text, fmt_secs(now - t)),
                    None => format!("{p}: {}", w.text),
                },
                None => p,
            }
        }
        StageState::AwaitingApproval => format!(
            "awaiting approval {}",
            s.ready_at.map(|t| format!("(ready {} ago)", fmt_secs(now - t))).unwrap_or_default()
        ),
        StageState::Riding | StageState::Waiting => match &s.waits_for {
            Some(w) => format!("{}: {}", s.state.as_str(), w.text),
            None => s.state.as_str().to_string(),
        },
        StageState::Succeeded => {
            format!("succeeded in {}", s.duration_seconds.map(fmt_secs).unwrap_or_else(|| "?".into()))
        }
        StageState::NotApplicable => "does not apply".into(),
        StageState::Failed | StageState::Incomplete => s.state.as_str().to_string(),
    };
    if builds.is_empty() { head } else { format!("{head}  [{builds}]") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::classify::ChangeType;
    use crate::core::lineage::Method;
    use crate::view::{RunningBuildView, WaitsForView};
    use crate::watch::plan::PathKind;

    /// A state, status or kind by its JSON name (fixtures read like the API).
    fn named<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_json::from_value(serde_json::json!(s)).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn plan() -> Plan {
        Plan {
            path: PathKind::Full,
            resources: vec!["repo".into()],
            goal: 1,
            goal_name: "staging".into(),
            goal_environment: Some("staging".into()),
            triggered: vec!["tests".into()],
            thresholds: vec![("tests".into(), Some(1800)), ("staging".into(), Some(1500))],
            not_picked_up_after: 300,
        }
    }

    fn att(id: i64, job: &str, name: &str, status: &str, start: i64) -> AttemptView {
        AttemptView {
            build_id: id,
            pipeline: "p".into(),
            job: job.into(),
            name: name.into(),
            status: named(status),
            start: Some(start),
            end: None,
            url: format!("http://ci/builds/{id}"),
            rerun_of: None,
            attribution: Method::Exact,
            own: true,
            head: None,
            log_excerpt: None,
        }
    }

    fn stage(name: &str, state: &str, start: Option<i64>, attempts: Vec<AttemptView>) -> StageView {
        StageView {
            name: name.into(),
            state: named(state),
            ready_at: Some(0),
            start,
            end: None,
            wait_seconds: start,
            duration_seconds: None,
            attribution: None,
            expected_jobs: vec![],
            attempts,
            waits_for: None,
        }
    }

    fn journey(stages: Vec<StageView>) -> JourneyView {
        JourneyView {
            sha: "a".repeat(40),
            short_sha: "aaaaaaa".into(),
            subject: "feat".into(),
            author: "alice".into(),
            commit_url: String::new(),
            commit_time: 0,
            change_type: ChangeType::Backend,
            resources: vec!["repo".into()],
            outcome: Outcome::InFlight,
            ended: false,
            failed_stage: None,
            carried_on: false,
            carried_by: None,
            not_picked_up: false,
            vanished: false,
            deployed_at: Default::default(),
            lead_time_seconds: Default::default(),
            trace_id: String::new(),
            stages,
            eta: Default::default(),
            lead_time_start: None,
            origin: None,
            pull_request: None,
        }
    }

    #[test]
    fn a_prediction_is_said_when_it_appears_and_when_it_moves() {
        let p = plan();
        let mut m = Monitor::new();
        let mut j = journey(vec![stage("tests", "pending", None, vec![]), stage("staging", "waiting", None, vec![])]);
        assert_eq!(m.observe(&p, &j, 10), vec![Event::Seen]);
        j.eta.insert("staging".into(), 3_610);
        let ev = m.observe(&p, &j, 10);
        assert_eq!(ev, vec![Event::Eta { environment: "staging".into(), at: 3_610, in_secs: 3_600 }]);
        assert_eq!(ev[0].line(), "expected in staging around 01:00:10 UTC (in 1h 0m 0s)");
        // Drift under five minutes is not said; a move of five minutes is.
        j.eta.insert("staging".into(), 3_610 + 299);
        assert_eq!(m.observe(&p, &j, 70), vec![]);
        j.eta.insert("staging".into(), 3_610 + 300);
        assert_eq!(
            m.observe(&p, &j, 70),
            vec![Event::Eta { environment: "staging".into(), at: 3_910, in_secs: 3_840 }]
        );
    }

    #[test]
    fn a_run_to_staging_emits_each_change_once() {
        let p = plan();
        let mut m = Monitor::new();
        let mut j = journey(vec![stage("tests", "pending", None, vec![]), stage("staging", "waiting", None, vec![])]);
        assert_eq!(m.observe(&p, &j, 10), vec![Event::Seen]);
        assert_eq!(verdict(&p, &j), Verdict::Continue);
        j.stages[0] = stage("tests", "running", Some(60), vec![att(1, "test-bats", "3", "started", 60)]);
        assert_eq!(
            m.observe(&p, &j, 120),
            vec![Event::StageStarted { stage: "tests".into(), builds: vec!["test-bats #3".into()] }]
        );
        // Nothing new: nothing emitted.
        assert_eq!(m.observe(&p, &j, 180), vec![]);
        // Past the 30-minute threshold while running: one warning, once.
        let ev = m.observe(&p, &j, 60 + 1801);
        assert_eq!(ev, vec![Event::OverThreshold { stage: "tests".into(), elapsed: 1801, threshold: 1800 }]);
        assert!(ev[0].is_warning() && ev[0].line().contains("30m 0s threshold"));
        assert_eq!(m.observe(&p, &j, 60 + 2000), vec![]);
        let mut done = stage("tests", "succeeded", Some(60), vec![att(1, "test-bats", "3", "succeeded", 60)]);
        done.duration_seconds = Some(2100);
        j.stages[0] = done;
        j.stages[1] = stage("staging", "succeeded", Some(3000), vec![att(2, "deploy", "9", "succeeded", 3000)]);
        j.deployed_at.insert("staging".into(), 3600);
        j.lead_time_seconds.insert("staging".into(), 3600);
        let ev = m.observe(&p, &j, 3700);
        assert!(matches!(&ev[0], Event::StageSucceeded { stage, duration: Some(2100), .. } if stage == "tests"));
        assert!(ev.contains(&Event::Deployed { environment: "staging".into(), lead_time: Some(3600) }), "{ev:?}");
        assert_eq!(verdict(&p, &j), Verdict::Reached);
    }

    #[test]
    fn a_failed_job_fails_until_a_rerun_runs() {
        let p = plan();
        let mut m = Monitor::new();
        let mut j = journey(vec![stage(
            "tests",
            "running",
            Some(0),
            vec![att(1, "test-integration", "4", "started", 0), att(2, "test-bats", "4", "failed", 0)],
        )]);
        let ev = m.observe(&p, &j, 100);
        assert!(ev.iter().any(|e| matches!(e, Event::BuildFailed { job, .. } if job == "test-bats")), "{ev:?}");
        assert!(
            matches!(verdict(&p, &j), Verdict::Failed { ref job, build_id: 2, .. } if job == "test-bats"),
            "the stage still runs other jobs, but test-bats failed"
        );
        j.stages[0].attempts.push(att(3, "test-bats", "4.1", "started", 200));
        assert_eq!(
            m.observe(&p, &j, 250),
            vec![Event::BuildRetried { stage: "tests".into(), job: "test-bats".into(), build: "4.1".into() }]
        );
        assert_eq!(verdict(&p, &j), Verdict::Continue);
    }

    #[test]
    fn not_picked_up_and_carried_by_are_said_once() {
        let p = plan();
        let mut m = Monitor::new();
        let mut j = journey(vec![stage("tests", "pending", None, vec![])]);
        j.not_picked_up = true;
        j.carried_by = Some("b".repeat(40));
        let ev = m.observe(&p, &j, 400);
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert!(ev[1].line().contains("not picked up after 5m 0s"));
        assert!(ev[2].line().contains("bbbbbbb"));
        assert_eq!(m.observe(&p, &j, 500), vec![]);
    }

    #[test]
    fn a_goal_stage_that_does_not_apply_is_said() {
        let mut p = plan();
        p.goal_environment = None;
        p.goal_name = "tests".into();
        let j = journey(vec![stage("tests", "not_applicable", None, vec![])]);
        assert_eq!(verdict(&p, &j), Verdict::NotApplicable { stage: "tests".into() });
    }

    #[test]
    fn an_incomplete_journey_ends_following_at_once() {
        let p = plan();
        let mut j =
            journey(vec![stage("tests", "incomplete", None, vec![]), stage("staging", "incomplete", None, vec![])]);
        j.outcome = Outcome::Incomplete;
        j.ended = false;
        assert_eq!(verdict(&p, &j), Verdict::Incomplete);
        // Deployed is known even so: reaching the goal wins.
        j.deployed_at.insert("staging".into(), 100);
        assert_eq!(verdict(&p, &j), Verdict::Reached);
    }

    fn waits(kind: &str, text: &str, build: Option<i64>) -> Option<WaitsForView> {
        Some(WaitsForView {
            kind: named(kind),
            text: text.into(),
            build: build.map(|id| RunningBuildView {
                build_id: id,
                pipeline: "p".into(),
                job: "test-bats".into(),
                name: id.to_string(),
                status: BuildStatus::Started,
                start: Some(0),
                url: String::new(),
                rerun_of: None,
                head: Some("b".repeat(40)),
            }),
            upstream: None,
            upstream_state: None,
        })
    }

    /// What the commit waits for is said when it changes (kind or build), not as time passes;
    /// the live line says it too.
    #[test]
    fn what_a_pending_commit_waits_for_is_said_when_it_changes() {
        let p = plan();
        let mut m = Monitor::new();
        let mut j = journey(vec![stage("tests", "pending", None, vec![]), stage("staging", "waiting", None, vec![])]);
        j.stages[0].waits_for = waits("no_build", "no build yet", None);
        assert_eq!(
            m.observe(&p, &j, 10),
            vec![Event::Seen, Event::Waits { stage: "tests".into(), what: "no build yet".into() }]
        );
        assert_eq!(m.observe(&p, &j, 20), vec![]);
        let busy = "the stage is busy with build test-bats #7 (started, carrying bbbbbbb)";
        j.stages[0].waits_for = waits("busy", busy, Some(7));
        let ev = m.observe(&p, &j, 30);
        assert_eq!(ev, vec![Event::Waits { stage: "tests".into(), what: busy.into() }]);
        assert_eq!(ev[0].line(), format!("tests: {busy}"));
        assert!(!ev[0].is_warning());
        assert_eq!(stage_status(&j.stages[0], 90), format!("pending (ready 1m 30s ago): {busy} for 1m 30s"));
        // Another build keeps it busy: said again.
        j.stages[0].waits_for = waits("busy", busy, Some(8));
        assert_eq!(m.observe(&p, &j, 40).len(), 1);
        // A passive commit rides.
        let mut r = stage("tests", "riding", None, vec![]);
        r.waits_for = waits("triggering_commit", "rides with the next triggering commit", None);
        assert_eq!(stage_status(&r, 0), "riding: rides with the next triggering commit");
    }

    #[test]
    fn stage_status_lines() {
        let s = stage("tests", "running", Some(100), vec![att(1, "test-bats", "3", "started", 100)]);
        assert_eq!(stage_status(&s, 100 + 754), "running 12m 34s  [test-bats #3 started]");
        let s = stage("edge-images", "not_applicable", None, vec![]);
        assert_eq!(stage_status(&s, 0), "does not apply");
        let s = stage("build-rc", "pending", None, vec![]);
        assert_eq!(stage_status(&s, 90), "pending (ready 1m 30s ago)");
    }
}
