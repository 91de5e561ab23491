//! What the real APIs would let the exporter see of a simulated world, as core facts: for tests
//! and benchmarks that exercise the core without going through HTTP. The sources produce the
//! same facts over HTTP (the end-to-end tests check that both paths agree with ground truth).

use crate::core::journey::{BuildFact, BuildStatus, CommitFact, Fact, Facts, VersionFact};
use crate::sim::engine::World;
use crate::sim::model::BuildStatus as SimStatus;

/// What the Concourse and GitHub APIs would show of `w`: commits with files; builds with the
/// inputs `/builds/:id/resources` lists (an input that was also put is dropped) and outputs;
/// version messages only where metadata is visible.
pub fn facts_from_world(w: &World) -> Facts {
    let mut f = Facts::default();
    let repo = w.tracked_repo();
    for sha in &repo.branches[&w.topology.tracked_branch] {
        let c = &repo.commits[sha];
        f.apply(Fact::Commit(CommitFact {
            sha: sha.clone(),
            parent: c.parent.clone(),
            author: c.author.login.clone().unwrap_or(c.author.name.clone()),
            author_date: c.author_date,
            committer_date: c.committer_date,
            message: c.message.clone(),
            files: c.files.iter().map(|f| f.filename.clone()).collect(),
            first_seen: c.committer_date,
        }));
    }
    for b in &w.concourse.builds {
        let p = &w.concourse.pipelines[b.pipeline];
        let vf = |name: &str, vid: i64| {
            let v = w.concourse.version(vid).unwrap();
            let resource = p.resources[v.resource].name.clone();
            let message = if v.metadata_visible {
                // As the source reads it: `message`, else cepler's per-file `{env}/path` lines.
                v.metadata.iter().find(|(k, _)| k == "message").map(|(_, m)| m.clone()).or_else(|| {
                    let files: Vec<&str> =
                        v.metadata.iter().filter(|(k, _)| k.starts_with('{')).map(|(_, m)| m.as_str()).collect();
                    (!files.is_empty()).then(|| files.join("\n"))
                })
            } else {
                None
            };
            VersionFact { step: name.to_string(), resource, version: v.version.clone().into(), message }
        };
        let outputs: Vec<VersionFact> = b.outputs.iter().map(|o| vf(&o.name, o.version)).collect();
        let inputs: Vec<VersionFact> = b
            .inputs
            .iter()
            .filter(|i| !b.outputs.iter().any(|o| o.resource == i.resource && o.version == i.version))
            .map(|i| vf(&i.name, i.version))
            .collect();
        let status = match b.status {
            SimStatus::Pending => BuildStatus::Pending,
            SimStatus::Started => BuildStatus::Started,
            SimStatus::Succeeded => BuildStatus::Succeeded,
            SimStatus::Failed => BuildStatus::Failed,
            SimStatus::Errored => BuildStatus::Errored,
            SimStatus::Aborted => BuildStatus::Aborted,
        };
        f.apply(Fact::Build(BuildFact {
            id: b.id,
            pipeline: p.name.clone().into(),
            job: p.jobs[b.job].name.clone().into(),
            name: b.name.clone().into(),
            status,
            start: b.start_time,
            end: b.end_time,
            rerun_of: b.rerun_of,
            url: format!("http://sim/teams/dev/pipelines/{}/jobs/{}/builds/{}", p.name, p.jobs[b.job].name, b.name)
                .into(),
            inputs,
            outputs,
            resources_known: b.status != SimStatus::Pending,
        }));
    }
    f
}
