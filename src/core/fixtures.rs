//! Facts for the core's unit tests: a commit, and a build of pipeline `p` that took one
//! commit through the `repo` input (or nothing yet: a created build).

use crate::core::facts::{BuildFact, BuildStatus, CommitFact, Fact, Version, VersionFact};

/// Commit `sha` (child of `parent`) made, and first seen, at `at`, changing `file`.
pub(crate) fn commit(sha: String, parent: Option<String>, at: i64, message: &str, file: &str) -> Fact {
    Fact::Commit(CommitFact {
        sha,
        parent,
        author: "dev".into(),
        author_date: at,
        committer_date: at,
        message: message.into(),
        files: vec![file.into()],
        first_seen: at,
    })
}

/// Build `id` of `p`/`job`, taking commit `took` as `repo`'s `ref` (`None`: no inputs known
/// yet); `start`/`end` as the status says.
pub(crate) fn build(
    id: i64,
    job: &str,
    status: BuildStatus,
    start: Option<i64>,
    end: Option<i64>,
    took: Option<String>,
) -> Fact {
    let inputs = took
        .map(|sha| {
            let version = Version::from([("ref", sha.as_str())]);
            vec![VersionFact { step: "repo".into(), resource: "repo".into(), version, message: None }]
        })
        .unwrap_or_default();
    Fact::Build(BuildFact {
        id,
        pipeline: "p".into(),
        job: job.into(),
        name: id.to_string().into(),
        status,
        start,
        end,
        rerun_of: None,
        url: format!("http://ci/builds/{id}").into(),
        resources_known: !inputs.is_empty(),
        inputs,
        outputs: vec![],
    })
}
