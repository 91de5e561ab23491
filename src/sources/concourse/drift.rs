//! A pipeline's configuration as `check-config` compares it with the file: the git resources and
//! the jobs' steps, read from Concourse's `GET /api/v1/teams/:t/pipelines/:p/config` answer. Only
//! this module knows that JSON; the comparison lives with the configuration, in its own terms.

use std::collections::BTreeSet;

use serde_json::Value;

/// What the comparison needs of a pipeline's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineShape {
    /// None when the configuration has no `resources` list.
    pub resources: Option<Vec<PipelineResource>>,
    pub jobs: Vec<PipelineJob>,
}

/// A resource, by name; the `source` fields are those of a git resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineResource {
    pub name: String,
    /// The resource type (`git`, `registry-image`, ...); empty when absent.
    pub kind: String,
    pub uri: Option<String>,
    pub branch: Option<String>,
    /// None when the field is there but not a list of strings; absent is an empty list.
    pub paths: Option<Vec<String>>,
    pub ignore_paths: Option<Vec<String>>,
    pub disable_ci_skip: bool,
}

/// A job, by name, with the resources of its steps anywhere in its plan (`in_parallel`, `do`,
/// `try`, hooks, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineJob {
    pub name: String,
    /// Resources of the `get` steps with `trigger: true` (the step's `resource`, else its name).
    pub triggers: BTreeSet<String>,
    /// Names of the `get` and `put` steps.
    pub gets: BTreeSet<String>,
    pub puts: BTreeSet<String>,
}

impl PipelineShape {
    /// From the answer (`{"config": {...}}`) or the configuration itself. Resources and jobs
    /// without a name are left out: nothing can refer to them.
    pub fn from_answer(answer: &Value) -> PipelineShape {
        let conf = answer.get("config").filter(|c| c.is_object()).unwrap_or(answer);
        let resources = conf.get("resources").and_then(Value::as_array).map(|list| {
            list.iter()
                .filter_map(|r| {
                    let name = r.get("name").and_then(Value::as_str)?.to_string();
                    let src = r.get("source").unwrap_or(&Value::Null);
                    let text = |k: &str| src.get(k).and_then(Value::as_str).map(str::to_string);
                    Some(PipelineResource {
                        name,
                        kind: r.get("type").and_then(Value::as_str).unwrap_or("").to_string(),
                        uri: text("uri"),
                        branch: text("branch"),
                        paths: string_list(src.get("paths")),
                        ignore_paths: string_list(src.get("ignore_paths")),
                        disable_ci_skip: src.get("disable_ci_skip").and_then(Value::as_bool).unwrap_or(false),
                    })
                })
                .collect()
        });
        let jobs = conf
            .get("jobs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|j| {
                let name = j.get("name").and_then(Value::as_str)?.to_string();
                let plan = j.get("plan").unwrap_or(&Value::Null);
                let mut job = PipelineJob { name, ..PipelineJob::default() };
                trigger_resources(plan, &mut job.triggers);
                plan_steps(plan, &mut job.gets, &mut job.puts);
                Some(job)
            })
            .collect();
        PipelineShape { resources, jobs }
    }
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v {
        None | Some(Value::Null) => Some(vec![]),
        Some(Value::Array(a)) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        Some(_) => None,
    }
}

/// Resources of the `get` steps with `trigger: true` in a job plan.
fn trigger_resources(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(g) = m.get("get").and_then(|g| g.as_str())
                && m.get("trigger").and_then(|t| t.as_bool()) == Some(true)
            {
                out.insert(m.get("resource").and_then(|r| r.as_str()).unwrap_or(g).to_string());
            }
            m.values().for_each(|x| trigger_resources(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| trigger_resources(x, out)),
        _ => {}
    }
}

/// Get and put step names anywhere in a job plan.
fn plan_steps(v: &Value, gets: &mut BTreeSet<String>, puts: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(g) = m.get("get").and_then(|g| g.as_str()) {
                gets.insert(g.to_string());
            }
            if let Some(p) = m.get("put").and_then(|p| p.as_str()) {
                puts.insert(p.to_string());
            }
            for x in m.values() {
                plan_steps(x, gets, puts);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| plan_steps(x, gets, puts)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shape_reads_resources_and_steps_anywhere_in_a_plan() {
        let answer = json!({"config": {
            "resources": [
                {"name": "repo", "type": "git", "source": {"uri": "git@github.com:o/r.git", "branch": "main",
                    "paths": ["a/*"], "ignore_paths": "docs", "disable_ci_skip": true}},
                {"type": "git"},
                {"name": "image", "type": "registry-image"},
            ],
            "jobs": [
                {"name": "build", "plan": [
                    {"in_parallel": [{"get": "src", "resource": "repo", "trigger": true}, {"get": "image"}]},
                    {"put": "chart", "on_failure": {"put": "slack"}},
                ]},
                {"plan": [{"get": "nameless"}]},
            ],
        }});
        let shape = PipelineShape::from_answer(&answer);
        let resources = shape.resources.expect("a resources list");
        assert_eq!(resources.len(), 2, "the nameless resource is left out: {resources:?}");
        let repo = &resources[0];
        assert_eq!(
            (repo.kind.as_str(), repo.uri.as_deref(), repo.branch.as_deref()),
            ("git", Some("git@github.com:o/r.git"), Some("main"))
        );
        assert_eq!(
            (repo.paths.clone(), repo.ignore_paths.clone(), repo.disable_ci_skip),
            (Some(vec!["a/*".into()]), None, true)
        );
        assert_eq!((resources[1].paths.clone(), resources[1].disable_ci_skip), (Some(vec![]), false));
        assert_eq!(shape.jobs.len(), 1, "the nameless job is left out");
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(shape.jobs[0].triggers, set(&["repo"]));
        assert_eq!(shape.jobs[0].gets, set(&["image", "src"]));
        assert_eq!(shape.jobs[0].puts, set(&["chart", "slack"]));
        // The configuration itself, without the answer's envelope, and one without resources.
        assert_eq!(PipelineShape::from_answer(&answer["config"]), PipelineShape::from_answer(&answer));
        assert_eq!(PipelineShape::from_answer(&json!({"config": {}})).resources, None);
    }
}
