//! Which path a commit takes through the configured stages, where `watch` stops following it,
//! and the thresholds it warns at. Pure: from the config and the commit's classification.

use crate::core::classify::ChangeType;
use crate::core::journey::CoreConfig;

use super::WatchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Backend (or mixed) change: every stage to the environment.
    Full,
    /// Dagster change: the dagster edge image and the full pipeline.
    Dagster,
    /// Only frontend resources emit it: edge images now, the environment with the next
    /// release candidate.
    FrontendOnly,
    /// No resource emits it: it reaches the environment inside a later commit's deploy.
    Untracked,
    /// A `[ci skip]` marker kept every resource from emitting it.
    CiSkip,
}

impl PathKind {
    pub fn from_change_type(t: ChangeType) -> PathKind {
        match t {
            ChangeType::Backend | ChangeType::Mixed => PathKind::Full,
            ChangeType::Dagster => PathKind::Dagster,
            ChangeType::Frontend => PathKind::FrontendOnly,
            ChangeType::Untracked => PathKind::Untracked,
            ChangeType::Skipped => PathKind::CiSkip,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Full => "full pipeline",
            PathKind::Dagster => "dagster",
            PathKind::FrontendOnly => "frontend-only",
            PathKind::Untracked => "untracked",
            PathKind::CiSkip => "[ci skip]",
        }
    }
}

/// What `watch` follows a commit to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub path: PathKind,
    /// The commit's emitting resources, in config order.
    pub resources: Vec<String>,
    /// Index into the config's stages of the stage to reach.
    pub goal: usize,
    pub goal_name: String,
    /// The goal stage deploys to this environment (reaching it = being deployed there).
    pub goal_environment: Option<String>,
    /// Stages the commit's own resources trigger, in order.
    pub triggered: Vec<String>,
    /// Per stage name: warn when a build carrying the commit runs longer (seconds).
    pub thresholds: Vec<(String, Option<i64>)>,
    pub not_picked_up_after: i64,
}

impl Plan {
    /// `until`: a stage name, or an environment name, to follow to instead of the default
    /// (the first environment; for a frontend-only commit, the last stage its resources trigger).
    pub fn new(
        core: &CoreConfig,
        path: PathKind,
        resources: &[String],
        until: Option<&str>,
    ) -> Result<Plan, WatchError> {
        let stages = &core.stages;
        let env_stage = stages.iter().position(|s| s.environment.is_some());
        // The stages a commit's own resources start: those with no upstream stage whose jobs
        // take one of its resources (later stages follow from them).
        let triggered: Vec<usize> = (0..stages.len())
            .filter(|i| stages[*i].after.is_empty())
            .filter(|i| stages[*i].jobs.iter().any(|j| j.git.iter().any(|g| resources.contains(g))))
            .collect();
        let goal = match until {
            Some(u) => {
                stages.iter().position(|s| s.name == u || s.environment.as_deref() == Some(u)).ok_or_else(|| {
                    WatchError::BadUntil {
                        until: u.to_string(),
                        known: stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>().join(", "),
                    }
                })?
            }
            None => match path {
                PathKind::FrontendOnly => triggered.last().copied().or(env_stage).unwrap_or(stages.len() - 1),
                _ => env_stage.unwrap_or(stages.len() - 1),
            },
        };
        Ok(Plan {
            path,
            resources: resources.to_vec(),
            goal,
            goal_name: stages[goal].name.clone(),
            goal_environment: stages[goal].environment.clone(),
            triggered: triggered.iter().map(|i| stages[*i].name.clone()).collect(),
            thresholds: stages.iter().map(|s| (s.name.clone(), s.stuck_after)).collect(),
            not_picked_up_after: core.not_picked_up_after,
        })
    }

    pub fn threshold(&self, stage: &str) -> Option<i64> {
        self.thresholds.iter().find(|(n, _)| n == stage).and_then(|(_, t)| *t)
    }

    /// One or two sentences for a person: the path and where watching ends.
    pub fn explain(&self) -> String {
        let res = if self.resources.is_empty() { "no resource".to_string() } else { self.resources.join(", ") };
        let env = self.goal_environment.as_deref();
        let path = match self.path {
            PathKind::Full => format!("full pipeline: {res} trigger {}", self.triggered.join(", ")),
            PathKind::Dagster => format!("dagster: {res} trigger {}", self.triggered.join(", ")),
            PathKind::FrontendOnly => format!(
                "frontend-only: {res} trigger {} (edge images only); it reaches the environment with the next release candidate",
                self.triggered.join(", ")
            ),
            PathKind::Untracked => {
                "untracked: no resource emits it, nothing triggers; it reaches the environment with the next deploy of a later commit".to_string()
            }
            PathKind::CiSkip => {
                "[ci skip]: the marker keeps every resource from emitting it; it reaches the environment with the next deploy of a later commit".to_string()
            }
        };
        match env {
            Some(e) => format!("path: {path}. Following until it is deployed to {e}."),
            None => format!("path: {path}. Following until {} succeeds.", self.goal_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> CoreConfig {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml");
        let env = |k: &str| matches!(k, "CONCOURSE_PASSWORD" | "GITHUB_TOKEN").then(|| "x".to_string());
        crate::config::load(std::path::Path::new(path), &env).unwrap_or_else(|e| panic!("{e}")).core()
    }

    fn plan(files: &[&str], message: &str, until: Option<&str>) -> Result<Plan, WatchError> {
        let c = core();
        let cl = c.classifier.classify(message, files);
        Plan::new(&c, PathKind::from_change_type(cl.change_type), &cl.resources, until)
    }

    #[test]
    fn paths_and_goals_per_change_type() {
        // (files, message, until, path, goal, triggered)
        type Row<'a> = (&'a [&'a str], &'a str, Option<&'a str>, PathKind, &'a str, &'a [&'a str]);
        let table: &[Row] = &[
            (&["core/credit/src/lib.rs"], "feat: x", None, PathKind::Full, "staging", &["tests"]),
            (&["apps/admin-panel/a.tsx"], "feat: ui", None, PathKind::FrontendOnly, "edge-images", &["edge-images"]),
            (
                &["apps/admin-panel/a.tsx"],
                "feat: ui",
                Some("staging"),
                PathKind::FrontendOnly,
                "staging",
                &["edge-images"],
            ),
            (&["dagster/src/a.py"], "feat: d", None, PathKind::Dagster, "staging", &["tests", "edge-images"]),
            (&["ci/tasks/x.sh"], "ci: y", None, PathKind::Untracked, "staging", &[]),
            (&["core/a.rs"], "chore: z [ci skip]", None, PathKind::CiSkip, "staging", &[]),
            (&["core/a.rs"], "feat: x", Some("testflight"), PathKind::Full, "testflight", &["tests"]),
        ];
        for (files, msg, until, path, goal, triggered) in table {
            let p = plan(files, msg, *until).unwrap();
            assert_eq!((p.path, p.goal_name.as_str()), (*path, *goal), "{files:?} {msg}");
            assert_eq!(p.triggered, triggered.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{files:?}");
        }
    }

    #[test]
    fn thresholds_come_from_the_config() {
        let p = plan(&["core/a.rs"], "feat", None).unwrap();
        assert_eq!(p.threshold("tests"), Some(30 * 60));
        assert_eq!(p.threshold("testflight"), Some(20 * 60));
        assert_eq!(p.threshold("staging"), Some(25 * 60));
        assert_eq!(p.threshold("build-rc"), None);
        assert_eq!(p.not_picked_up_after, 5 * 60);
    }

    #[test]
    fn explanations_name_the_path_and_the_end() {
        let p = plan(&["apps/admin-panel/a.tsx"], "feat: ui", None).unwrap();
        let e = p.explain();
        assert!(e.contains("frontend-only: admin-panel-src trigger edge-images"), "{e}");
        assert!(e.contains("next release candidate") && e.contains("until edge-images succeeds"), "{e}");
        let e = plan(&["core/a.rs"], "feat", None).unwrap().explain();
        assert!(e.contains("full pipeline: repo trigger tests") && e.contains("deployed to staging"), "{e}");
    }

    #[test]
    fn unknown_until_names_the_known_stages() {
        let e = plan(&["core/a.rs"], "feat", Some("prod")).unwrap_err().to_string();
        assert!(e.contains("\"prod\"") && e.contains("tests, edge-images, build-rc"), "{e}");
    }
}
