//! What `check-config` prints: the summary of a valid file, and how it differs from the
//! pipelines Concourse runs.

use super::*;
use crate::sources::concourse::drift::PipelineShape;

// ------------------------------------------------------------------ check-config helpers

/// `owner/name` from a git URI (`git@github.com:o/n.git`, `https://github.com/o/n`, `ssh://...`).
pub(super) fn repo_of_uri(uri: &str) -> Option<String> {
    let u = uri.trim().trim_end_matches('/');
    let u = u.strip_suffix(".git").unwrap_or(u);
    let path = if let Some((_, rest)) = u.split_once("://") { rest.split_once('/')?.1 } else { u.split_once(':')?.1 };
    let mut parts = path.rsplit('/');
    let name = parts.next().filter(|s| !s.is_empty())?;
    let owner = parts.next().filter(|s| !s.is_empty())?;
    Some(format!("{owner}/{name}"))
}

/// How the file's `resources` differ from the git resources of `pipeline` as Concourse has them
/// (`pipeline_config_answer`: the answer of `GET /api/v1/teams/:t/pipelines/:p/config`, read by
/// [`PipelineShape`]). One line per difference; empty when they agree. Only resources the file
/// places in `pipeline` are compared. The file wins; this is for `check-config` to show.
pub fn resource_differences(cfg: &Config, pipeline: &str, pipeline_config_answer: &serde_json::Value) -> Vec<String> {
    let shape = PipelineShape::from_answer(pipeline_config_answer);
    let mut out = vec![];
    let Some(list) = &shape.resources else {
        if cfg.resources.iter().any(|r| r.pipeline == pipeline) {
            out.push(format!("pipeline {pipeline}: its config has no resources"));
        }
        return out;
    };
    let want_repo = cfg.repository_slug();
    for r in cfg.resources.iter().filter(|r| r.pipeline == pipeline) {
        let at = format!("resources.{}", r.name);
        let Some(res) = list.iter().find(|x| x.name == r.name) else {
            out.push(format!("{at}: no resource of that name in pipeline {pipeline}"));
            continue;
        };
        let ty = &res.kind;
        if ty != "git" {
            out.push(format!("{at}: is a {ty:?} resource in pipeline {pipeline}, not git"));
            continue;
        }
        if let Some(uri) = &res.uri {
            match repo_of_uri(uri) {
                Some(got) if !got.eq_ignore_ascii_case(&want_repo) => {
                    out.push(format!("{at}: pipeline {pipeline} tracks {got} ({uri}), this file {want_repo}"))
                }
                _ => {}
            }
        }
        let branch = res.branch.as_deref().unwrap_or("(none)");
        if branch != cfg.repository.branch {
            out.push(format!("{at}: pipeline {pipeline} tracks branch {branch}, this file {}", cfg.repository.branch));
        }
        for (field, mine, theirs) in
            [("paths", r.filter.paths(), &res.paths), ("ignore_paths", r.filter.ignore_paths(), &res.ignore_paths)]
        {
            match theirs {
                None => out.push(format!("{at}: {field} in pipeline {pipeline} is not a list of strings")),
                Some(theirs) => {
                    let norm = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
                    if norm(mine) != norm(theirs) {
                        out.push(format!("{at}: {field} differ: this file {mine:?}, pipeline {pipeline} {theirs:?}"));
                    }
                }
            }
        }
        if res.disable_ci_skip != r.disable_ci_skip {
            out.push(format!(
                "{at}: disable_ci_skip differs: this file {}, pipeline {pipeline} {}",
                r.disable_ci_skip, res.disable_ci_skip
            ));
        }
    }
    // Git resources on the tracked branch that trigger a watched job but that the file does not
    // track: commits they emit would be misclassified.
    let known: BTreeSet<&str> =
        cfg.resources.iter().flat_map(|r| std::iter::once(&r.name).chain(&r.aliases)).map(String::as_str).collect();
    let watched: BTreeSet<&str> = cfg
        .stages
        .iter()
        .filter(|s| s.pipeline == pipeline)
        .flat_map(|s| s.jobs.iter().map(|j| j.name.as_str()))
        .collect();
    let mut untracked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for job in shape.jobs.iter().filter(|j| watched.contains(j.name.as_str())) {
        for res in job.triggers.iter().filter(|r| !known.contains(r.as_str())) {
            let Some(src) = list.iter().find(|x| &x.name == res).filter(|x| x.kind == "git") else {
                continue;
            };
            let repo = src.uri.as_deref().and_then(repo_of_uri);
            if repo.is_some_and(|r| r.eq_ignore_ascii_case(&want_repo))
                && src.branch.as_deref() == Some(&cfg.repository.branch)
            {
                untracked.entry(res.clone()).or_default().push(job.name.clone());
            }
        }
    }
    for (res, jobs) in untracked {
        out.push(format!(
            "resources: pipeline {pipeline}'s git resource {res} follows {want_repo} {} and triggers {}, but this file does not track it",
            cfg.repository.branch,
            jobs.join(", ")
        ));
    }
    out
}

/// How the stages in `pipeline` differ from its jobs as Concourse has them: jobs that are not
/// there, and `inputs`, bridge inputs and fallback inputs that are no step of the stage's jobs.
/// (Bridge outputs may be in another pipeline and are not checked here.)
pub fn job_differences(cfg: &Config, pipeline: &str, pipeline_config_answer: &serde_json::Value) -> Vec<String> {
    let shape = PipelineShape::from_answer(pipeline_config_answer);
    let mut out = vec![];
    for (si, st) in cfg.stages.iter().enumerate().filter(|(_, s)| s.pipeline == pipeline) {
        let at = format!("stages[{si}]");
        let (mut gets, mut puts) = (BTreeSet::new(), BTreeSet::new());
        for (ji, j) in st.jobs.iter().enumerate() {
            match shape.jobs.iter().find(|x| x.name == j.name) {
                Some(job) => {
                    gets.extend(job.gets.iter().cloned());
                    puts.extend(job.puts.iter().cloned());
                }
                None => out.push(format!("{at}.jobs[{ji}]: no job {:?} in pipeline {pipeline}", j.name)),
            }
        }
        if gets.is_empty() && puts.is_empty() {
            continue;
        }
        for (ii, i) in st.inputs.iter().flatten().enumerate() {
            if !gets.contains(i) && !puts.contains(i) {
                out.push(format!("{at}.inputs[{ii}]: no step {i:?} in the stage's jobs"));
            }
        }
        for (bi, b) in st.bridges.iter().enumerate() {
            let (kind, input) = match b {
                Bridge::MessageContains { input, .. } => ("message_contains", input),
                Bridge::Equals { input, .. } => ("equals", input),
            };
            if !gets.contains(input) {
                out.push(format!("{at}.bridges[{bi}].{kind}.input: no get step {input:?} in the stage's jobs"));
            }
        }
        if let Some(f) = &st.fallback_git_input
            && !gets.contains(f)
        {
            out.push(format!("{at}.fallback.git_input: no get step {f:?} in the stage's jobs"));
        }
    }
    out
}

fn lead_time_name(l: LeadTimeFrom) -> &'static str {
    match l {
        LeadTimeFrom::CommitterDate => "committer_date",
        LeadTimeFrom::AuthorDate => "author_date",
        LeadTimeFrom::FirstSeen => "first_seen",
        LeadTimeFrom::PrOpened => "pr_opened",
        LeadTimeFrom::FirstCommit => "first_commit",
    }
}

fn kind_name(k: SourceKind) -> &'static str {
    match k {
        SourceKind::Backend => "backend",
        SourceKind::Frontend => "frontend",
        SourceKind::Dagster => "dagster",
    }
}

/// The human-readable report `check-config` prints for a valid file. Never shows a secret.
pub fn summary(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let r = &cfg.repository;
    let _ = writeln!(s, "{}: OK", cfg.origin);
    // A credential the file names but the environment lacks (lazy loading) is said as such,
    // not as "anonymous".
    let missing = |at: &str| {
        cfg.missing_secrets.iter().find(|p| p.path.starts_with(at)).map(|p| format!("{}: {}", p.path, p.message))
    };
    let token = match (&r.token_source, missing("repository")) {
        (Some(src), _) => format!("token from {src}"),
        (None, Some(m)) => format!("credentials missing: {m}"),
        (None, None) => "anonymous: no token (GitHub allows 60 requests an hour)".to_string(),
    };
    let _ = writeln!(s, "repository: {}/{} branch {} via {} ({token})", r.owner, r.name, r.branch, r.api_url);
    let c = &cfg.concourse;
    let src = c.auth_source.as_ref().map(|s| s.to_string()).unwrap_or_default();
    let auth = match &c.auth {
        ConcourseAuth::None if let Some(m) = missing("concourse") => format!("credentials missing: {m}"),
        ConcourseAuth::None => "no auth: public pipelines only".to_string(),
        ConcourseAuth::Bearer(_) => format!("bearer token from {src}"),
        ConcourseAuth::Password { username, .. } => format!("password grant as {username}, password from {src}"),
    };
    let _ = writeln!(s, "concourse: {} team {} ({auth})", c.url, c.team);
    let _ = writeln!(
        s,
        "listen {}, poll every {} (GitHub every {}), state {}, retention {} ({} in memory), lead time from {}, not picked up after {}",
        cfg.listen,
        format_duration(cfg.poll_interval),
        format_duration(cfg.github_poll_interval()),
        cfg.state_path.display(),
        format_duration(cfg.retention),
        format_duration(cfg.memory_window()),
        lead_time_name(cfg.lead_time_from),
        format_duration(cfg.not_picked_up_after),
    );
    let _ = writeln!(s, "resources (pipeline, kind, filters):");
    for res in &cfg.resources {
        let mut f = vec![];
        if !res.filter.paths().is_empty() {
            f.push(format!("paths {:?}", res.filter.paths()));
        }
        if !res.filter.ignore_paths().is_empty() {
            f.push(format!("ignore_paths {:?}", res.filter.ignore_paths()));
        }
        if f.is_empty() {
            f.push("every commit".into());
        }
        if res.disable_ci_skip {
            f.push("[ci skip] ignored".into());
        }
        if !res.aliases.is_empty() {
            f.push(format!("also step {}", res.aliases.join(", ")));
        }
        let _ = writeln!(s, "  {} ({}, {}): {}", res.name, res.pipeline, kind_name(res.kind), f.join("; "));
    }
    let _ = writeln!(s, "stages:");
    let all: Vec<String> = cfg.resources.iter().map(|r| r.name.clone()).collect();
    for (i, st) in cfg.stages.iter().enumerate() {
        let jobs: Vec<String> = st
            .jobs
            .iter()
            .map(|j| if j.git == all { j.name.clone() } else { format!("{} [{}]", j.name, j.git.join(", ")) })
            .collect();
        let _ = writeln!(s, "  {}. {} ({}): {}", i + 1, st.name, st.pipeline, jobs.join(", "));
        let after: Vec<&str> = st.after.iter().map(|a| cfg.stages[*a].name.as_str()).collect();
        let _ = writeln!(
            s,
            "     after: {}",
            if after.is_empty() { "- (ready when committed)".into() } else { after.join(", ") }
        );
        let carried = match &st.inputs {
            None => "every input".to_string(),
            Some(l) => l.join(", "),
        };
        let _ = writeln!(s, "     carried by: {carried}");
        for b in &st.bridges {
            let line = match b {
                Bridge::MessageContains { input, output, key } => {
                    format!("the commit message of input {input} contains {key} of output {output}")
                }
                Bridge::Equals { input, input_key, output, key } => {
                    format!("{input_key} of input {input} equals {key} of output {output}")
                }
            };
            let _ = writeln!(s, "     bridge: {line}");
        }
        if let Some(f) = &st.fallback_git_input {
            let _ = writeln!(
                s,
                "     fallback (inferred): first build after the upstream succeeded whose {f} is the commit or a descendant"
            );
        }
        if !st.carries_passive {
            let _ = writeln!(s, "     untracked and [ci skip] commits do not pass through");
        }
        if let Some(t) = st.stuck_after {
            let _ = writeln!(s, "     stuck after: {}", format_duration(Duration::from_secs(t as u64)));
        }
        if let Some(e) = &st.environment {
            let _ = writeln!(s, "     success means: deployed to {e}");
        }
        if st.approval {
            let _ = writeln!(
                s,
                "     gate: a human approval releases it (a ready commit no build took is awaiting_approval)"
            );
        }
    }
    let envs: Vec<String> = cfg
        .stages
        .iter()
        .filter_map(|st| st.environment.as_ref().map(|e| format!("{e} (stage {})", st.name)))
        .collect();
    let _ = writeln!(s, "environments: {}", envs.join(", "));
    let d = &cfg.dora;
    let patterns: Vec<&str> = d.hotfix_patterns.iter().map(|r| r.as_str()).collect();
    let _ = writeln!(
        s,
        "dora: {} (failure window {}, change fail rate SLO {}); hotfix subjects {}",
        d.environment,
        format_duration(Duration::from_secs(d.failure_window as u64)),
        d.change_fail_rate_slo,
        patterns.join(", ")
    );
    s
}
