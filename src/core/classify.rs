//! Which git resources would emit a commit, and the change type that follows.

use crate::core::pathspec::{GitPathFilter, emits_version, has_ci_skip_marker};

/// What a tracked git resource's source code is, for change types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Backend,
    Frontend,
    Dagster,
}

/// A commit's change type, a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeType {
    Backend,
    Frontend,
    Dagster,
    Mixed,
    /// No resource emits it: it reaches an environment only with a later commit's deploy.
    Untracked,
    /// A `[ci skip]`/`[skip ci]` marker kept every resource from emitting it.
    Skipped,
}

impl ChangeType {
    pub const ALL: [ChangeType; 6] = [
        ChangeType::Backend,
        ChangeType::Frontend,
        ChangeType::Dagster,
        ChangeType::Mixed,
        ChangeType::Untracked,
        ChangeType::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Backend => "backend",
            ChangeType::Frontend => "frontend",
            ChangeType::Dagster => "dagster",
            ChangeType::Mixed => "mixed",
            ChangeType::Untracked => "untracked",
            ChangeType::Skipped => "skipped",
        }
    }

    /// Nothing triggers for this commit; it rides along with a later one.
    pub fn is_passive(self) -> bool {
        matches!(self, ChangeType::Untracked | ChangeType::Skipped)
    }
}

/// A git resource on the tracked branch, as configured.
#[derive(Debug, Clone)]
pub struct TrackedResource {
    pub name: String,
    pub filter: GitPathFilter,
    pub disable_ci_skip: bool,
    pub kind: SourceKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Names of the resources that emit the commit, in configuration order.
    pub resources: Vec<String>,
    pub change_type: ChangeType,
}

#[derive(Debug, Clone, Default)]
pub struct Classifier {
    resources: Vec<TrackedResource>,
}

impl Classifier {
    pub fn new(resources: Vec<TrackedResource>) -> Classifier {
        Classifier { resources }
    }

    pub fn resources(&self) -> &[TrackedResource] {
        &self.resources
    }

    pub fn classify<S: AsRef<str>>(&self, message: &str, files: &[S]) -> Classification {
        let emitting: Vec<&TrackedResource> =
            self.resources.iter().filter(|r| emits_version(&r.filter, r.disable_ci_skip, message, files)).collect();
        let change_type = if emitting.is_empty() {
            if has_ci_skip_marker(message) { ChangeType::Skipped } else { ChangeType::Untracked }
        } else {
            let has = |k| emitting.iter().any(|r| r.kind == k);
            match (has(SourceKind::Backend), has(SourceKind::Frontend), has(SourceKind::Dagster)) {
                (_, true, true) | (true, true, false) => ChangeType::Mixed,
                (_, false, true) => ChangeType::Dagster,
                (false, true, false) => ChangeType::Frontend,
                _ => ChangeType::Backend,
            }
        };
        Classification { resources: emitting.iter().map(|r| r.name.clone()).collect(), change_type }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lana() -> Classifier {
        let r = |name: &str, paths: &[&str], ignore: &[&str], kind| TrackedResource {
            name: name.into(),
            filter: GitPathFilter::new(
                &paths.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &ignore.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap(),
            disable_ci_skip: false,
            kind,
        };
        let app = |a: &str| {
            vec![
                format!("apps/{a}"),
                format!("apps/{a}/*"),
                format!("apps/{a}/**/*"),
                "flake.nix".into(),
                "flake.lock".into(),
                "pnpm-lock.yaml".into(),
            ]
        };
        let ap = app("admin-panel");
        let cp = app("customer-portal");
        Classifier::new(vec![
            r("repo", &[], &["ci/*[^mdxk]", "apps/**/*"], SourceKind::Backend),
            r("admin-panel-src", &ap.iter().map(|s| s.as_str()).collect::<Vec<_>>(), &[], SourceKind::Frontend),
            r("customer-portal-src", &cp.iter().map(|s| s.as_str()).collect::<Vec<_>>(), &[], SourceKind::Frontend),
            r("dagster-src", &["dagster/*"], &[], SourceKind::Dagster),
        ])
    }

    fn check(message: &str, files: &[&str], resources: &[&str], ct: ChangeType) {
        let c = lana().classify(message, files);
        assert_eq!(c.resources, resources, "{message} {files:?}");
        assert_eq!(c.change_type, ct, "{message} {files:?}");
    }

    #[test]
    fn lana_change_types() {
        check("feat: x", &["core/x.rs"], &["repo"], ChangeType::Backend);
        check("feat: ui", &["apps/admin-panel/app/page.tsx"], &["admin-panel-src"], ChangeType::Frontend);
        check("feat: both", &["core/x.rs", "apps/admin-panel/a.tsx"], &["repo", "admin-panel-src"], ChangeType::Mixed);
        check("chore: nix", &["flake.lock"], &["repo", "admin-panel-src", "customer-portal-src"], ChangeType::Mixed);
        check("feat: dw", &["dagster/src/a.py"], &["repo", "dagster-src"], ChangeType::Dagster);
        check("ci: task", &["ci/tasks/build.sh"], &[], ChangeType::Untracked);
        check("fix: shared", &["apps/shared-web/x.ts"], &[], ChangeType::Untracked);
        check("ci: release 1.2.0 [ci skip]", &["CHANGELOG.md"], &[], ChangeType::Skipped);
        check("docs: x", &["docs-site/a.md"], &["repo"], ChangeType::Backend);
    }
}
