//! The timeline of a journey: each stage's wait and duration, the builds that carried the
//! commit, and the lead time. Text for people, JSON (`--json`) for scripts.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::view::JourneyView;

use super::fmt_secs;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub sha: String,
    pub short_sha: String,
    pub subject: String,
    pub author: String,
    pub change_type: String,
    /// `full pipeline`, `frontend-only`, ...
    pub path: String,
    pub outcome: String,
    pub ended: bool,
    pub failed_stage: Option<String>,
    pub carried_by: Option<String>,
    pub commit_time: i64,
    /// Before the merge, in one line: the pull request's phases, or "pushed directly".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_merge: Option<String>,
    pub stages: Vec<TimelineStage>,
    /// Environment → seconds from commit to the end of the deployment that delivered it.
    pub lead_time_seconds: BTreeMap<String, i64>,
    /// Warnings said while following (empty for `report`).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineStage {
    pub name: String,
    pub state: String,
    pub wait_seconds: Option<i64>,
    pub duration_seconds: Option<i64>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub builds: Vec<TimelineBuild>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineBuild {
    pub job: String,
    pub name: String,
    pub status: String,
    pub url: String,
    /// The build was for this commit, not a later one that carried it.
    pub own: bool,
}

impl Timeline {
    pub fn from_journey(j: &JourneyView, warnings: Vec<String>) -> Timeline {
        let path = super::plan::PathKind::from_change_type(j.change_type).as_str().to_string();
        Timeline {
            sha: j.sha.clone(),
            short_sha: j.short_sha.clone(),
            subject: j.subject.clone(),
            author: j.author.clone(),
            change_type: j.change_type.as_str().to_string(),
            path,
            outcome: j.outcome.as_str().to_string(),
            ended: j.ended,
            failed_stage: j.failed_stage.clone(),
            carried_by: j.carried_by.clone(),
            commit_time: j.commit_time,
            before_merge: before_merge(j),
            stages: j
                .stages
                .iter()
                .map(|s| TimelineStage {
                    name: s.name.clone(),
                    state: s.state.as_str().to_string(),
                    wait_seconds: s.wait_seconds,
                    duration_seconds: s.duration_seconds,
                    start: s.start,
                    end: s.end,
                    builds: s
                        .attempts
                        .iter()
                        .map(|a| TimelineBuild {
                            job: a.job.clone(),
                            name: a.name.clone(),
                            status: a.status.as_str().to_string(),
                            url: a.url.clone(),
                            own: a.own,
                        })
                        .collect(),
                })
                .collect(),
            lead_time_seconds: j.lead_time_seconds.clone(),
            warnings,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A fixed-width table: one row per stage, then the lead time.
    pub fn text(&self) -> String {
        let mut out = format!(
            "Timeline of {} {:?} ({}, {}): {}\n",
            self.short_sha, self.subject, self.change_type, self.path, self.outcome
        );
        if let Some(b) = &self.before_merge {
            out.push_str(&format!("  before the merge: {b}\n"));
        }
        let width = self.stages.iter().map(|s| s.name.len()).max().unwrap_or(5).max(5);
        out.push_str(&format!("  {:<width$}  {:<14}  {:>9}  {:>9}  builds\n", "stage", "state", "wait", "duration"));
        let dash = |v: Option<i64>| v.map(fmt_secs).unwrap_or_else(|| "-".into());
        for s in &self.stages {
            let builds = s
                .builds
                .iter()
                .map(|b| {
                    let by = if b.own { "" } else { ", carried by a later commit" };
                    format!("{} #{} {}{by}", b.job, b.name, b.status)
                })
                .collect::<Vec<_>>()
                .join("; ");
            let row = format!(
                "  {:<width$}  {:<14}  {:>9}  {:>9}  {}",
                s.name,
                s.state,
                dash(s.wait_seconds),
                dash(s.duration_seconds),
                builds
            );
            out.push_str(row.trim_end());
            out.push('\n');
        }
        if self.lead_time_seconds.is_empty() {
            out.push_str("  lead time: not deployed yet\n");
        }
        for (env, l) in &self.lead_time_seconds {
            out.push_str(&format!("  lead time to {env}: {}\n", fmt_secs(*l)));
        }
        if let Some(c) = &self.carried_by {
            out.push_str(&format!("  carried by {}\n", c.get(..7).unwrap_or(c)));
        }
        for w in &self.warnings {
            out.push_str(&format!("  {w}\n"));
        }
        out
    }
}

/// `pull request #12: coding 2h 0m, pickup 30m, ... (1 Actions re-run)`, `pushed directly`,
/// or `None` while GitHub has not been asked.
fn before_merge(j: &JourneyView) -> Option<String> {
    match (&j.origin, &j.pull_request) {
        (Some(crate::view::OriginKind::Direct), _) => Some("pushed directly, no pull request".into()),
        (_, Some(p)) => {
            let phases: Vec<String> =
                p.stages.iter().map(|s| format!("{} {}", s.name, fmt_secs(s.duration_seconds))).collect();
            let reruns = match p.reruns {
                0 => String::new(),
                1 => " (1 Actions re-run)".into(),
                n => format!(" ({n} Actions re-runs)"),
            };
            Some(format!("pull request #{}: {}{reruns}", p.number, phases.join(", ")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::classify::ChangeType;
    use crate::core::facts::BuildStatus;
    use crate::core::journey::{Outcome, StageState};
    use crate::core::lineage::Method;
    use crate::view::{AttemptView, StageView};

    #[test]
    fn text_and_json_carry_the_same_figures() {
        let st = |name: &str, state: StageState, wait, dur| StageView {
            name: name.into(),
            state,
            ready_at: None,
            start: None,
            end: None,
            wait_seconds: wait,
            duration_seconds: dur,
            attribution: None,
            expected_jobs: vec![],
            attempts: vec![],
            waits_for: None,
        };
        let mut tests = st("tests", StageState::Succeeded, Some(30), Some(22 * 60));
        tests.attempts.push(AttemptView {
            build_id: 7,
            pipeline: "lana-bank".into(),
            job: "test-bats".into(),
            name: "12".into(),
            status: BuildStatus::Succeeded,
            start: None,
            end: None,
            url: "http://ci/b/7".into(),
            rerun_of: None,
            attribution: Method::Exact,
            own: false,
            head: None,
            log_excerpt: None,
        });
        let j = JourneyView {
            sha: "0123456789abcdef".repeat(2) + "01234567",
            short_sha: "0123456".into(),
            subject: "feat: x".into(),
            author: "alice".into(),
            commit_url: String::new(),
            commit_time: 100,
            change_type: ChangeType::Frontend,
            resources: vec![],
            outcome: Outcome::Deployed,
            ended: true,
            failed_stage: None,
            carried_on: false,
            carried_by: None,
            not_picked_up: false,
            vanished: false,
            deployed_at: [("staging".to_string(), 7300)].into(),
            lead_time_seconds: [("staging".to_string(), 7200)].into(),
            eta: Default::default(),
            lead_time_start: None,
            origin: None,
            pull_request: None,
            trace_id: String::new(),
            stages: vec![tests, st("staging", StageState::Succeeded, None, Some(3600))],
        };
        let t = Timeline::from_journey(&j, vec!["warning: slow".into()]);
        let text = t.text();
        assert!(text.starts_with("Timeline of 0123456 \"feat: x\" (frontend, frontend-only): deployed\n"), "{text}");
        assert!(
            text.contains(
                "  tests    succeeded             30s     22m 0s  test-bats #12 succeeded, carried by a later commit\n"
            ),
            "{text}"
        );
        assert!(text.contains("  staging  succeeded               -   1h 0m 0s\n"), "{text}");
        assert!(text.contains("lead time to staging: 2h 0m 0s") && text.contains("warning: slow"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&t.json()).unwrap();
        assert_eq!(v["lead_time_seconds"]["staging"], 7200);
        assert_eq!(v["stages"][0]["duration_seconds"], 22 * 60);
        assert_eq!(v["stages"][0]["builds"][0]["own"], false);
        assert_eq!(v["path"], "frontend-only");
        assert!(!text.contains("before the merge"), "not read yet: {text}");

        let phase = |name: &str, d: i64| crate::view::PreMergeStageView {
            name: name.into(),
            start: 0,
            end: d,
            duration_seconds: d,
        };
        let pr = crate::view::PullRequestView {
            number: 12,
            title: "feat: x".into(),
            url: String::new(),
            labels: vec![],
            head_sha: String::new(),
            first_commit_at: None,
            opened_at: 0,
            ready_at: None,
            first_review_at: None,
            approved_at: None,
            merged_at: 900,
            stages: vec![phase("checks", 600), phase("merge", 300)],
            checks: vec![],
            reruns: 1,
        };
        let with_pr =
            JourneyView { origin: Some(crate::view::OriginKind::PullRequest), pull_request: Some(pr), ..j.clone() };
        let text = Timeline::from_journey(&with_pr, vec![]).text();
        assert!(
            text.contains("  before the merge: pull request #12: checks 10m 0s, merge 5m 0s (1 Actions re-run)\n"),
            "{text}"
        );
        let direct = JourneyView { origin: Some(crate::view::OriginKind::Direct), ..j.clone() };
        assert!(Timeline::from_journey(&direct, vec![]).text().contains("before the merge: pushed directly"));
    }
}
