//! The configuration file: the examples describe the simulated lana topologies exactly, bad files
//! report every problem with its path, secrets never leak, and `check-config`'s comparison with
//! the pipelines Concourse runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use deploy_journey::config::{self, Config, job_differences, resource_differences, summary};
use deploy_journey::core::journey::Bridge;
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::{ResourceSpec, Topology};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the deployment would have in its environment (the simulator's viewer password; it only
/// accepts bearer tokens it issued itself).
fn fake_env(k: &str) -> Option<String> {
    match k {
        "GITHUB_TOKEN" => Some("ghp_fake-github-token".into()),
        "CONCOURSE_PASSWORD" => Some("viewer-password".into()),
        _ => None,
    }
}

fn example(name: &str) -> Config {
    let path = root().join("examples").join(name);
    config::load(&path, &fake_env).unwrap_or_else(|e| panic!("{e}"))
}

const EXAMPLES: [(&str, &str); 2] = [("lana.yaml", "lana"), ("lana-two-repos.yaml", "lana-two-repos")];

/// Every name the example uses exists in the simulated topology it documents, with the same
/// meaning: stage jobs, tracked resources and their filters, `inputs`, bridge steps, fallback
/// inputs. This guards the examples against drift.
#[test]
fn examples_describe_the_simulated_topologies() {
    for (file, topology) in EXAMPLES {
        let cfg = example(file);
        let topo = Topology::builtin(topology).unwrap();
        let mut bad: Vec<String> = vec![];
        for r in &cfg.resources {
            let Some(p) = topo.pipelines.iter().find(|p| p.name == r.pipeline) else {
                bad.push(format!("resource {}: no pipeline {}", r.name, r.pipeline));
                continue;
            };
            match p.resources.get(&r.name) {
                Some(ResourceSpec::Git { repo, branch, paths, ignore_paths, disable_ci_skip, .. }) => {
                    if *repo != topo.tracked_repo || *branch != topo.tracked_branch {
                        bad.push(format!("resource {}: tracks {repo} {branch}", r.name));
                    }
                    if r.filter.paths() != paths.as_slice()
                        || r.filter.ignore_paths() != ignore_paths.as_slice()
                        || r.disable_ci_skip != *disable_ci_skip
                    {
                        bad.push(format!("resource {}: filters differ", r.name));
                    }
                }
                other => bad.push(format!("resource {}: {other:?} is not a git resource", r.name)),
            }
        }
        assert_eq!(format!("{}/{}", cfg.repository.owner, cfg.repository.name), topo.tracked_repo);
        assert_eq!(cfg.repository.branch, topo.tracked_branch);
        assert_eq!(cfg.concourse.team, topo.concourse.team);

        let core = cfg.core();
        let tracked: Vec<&str> = core.classifier.resources().iter().map(|r| r.name.as_str()).collect();
        // Every job's put steps across all stages: what bridge outputs can refer to.
        let mut watched_puts: Vec<(usize, String)> = vec![];
        for (si, st) in core.stages.iter().enumerate() {
            let Some(p) = topo.pipelines.iter().find(|p| p.name == st.pipeline) else {
                bad.push(format!("{file} stage {}: no pipeline {}", st.name, st.pipeline));
                continue;
            };
            for j in &st.jobs {
                match p.jobs.iter().find(|x| x.name == j.name) {
                    Some(spec) => watched_puts.extend(spec.outputs.iter().map(|o| (si, o.put.clone()))),
                    None => bad.push(format!("{file} stage {}: no job {} in {}", st.name, j.name, p.name)),
                }
                for g in &j.git {
                    if !tracked.contains(&g.as_str()) {
                        bad.push(format!("{file} stage {} job {}: git {g} is not tracked", st.name, j.name));
                    }
                }
            }
        }
        for (si, st) in core.stages.iter().enumerate() {
            let Some(p) = topo.pipelines.iter().find(|p| p.name == st.pipeline) else { continue };
            let specs: Vec<_> = p.jobs.iter().filter(|x| st.jobs.iter().any(|j| j.name == x.name)).collect();
            let is_get = |s: &str| specs.iter().any(|j| j.inputs.iter().any(|i| i.get == s));
            let is_put = |s: &str| specs.iter().any(|j| j.outputs.iter().any(|o| o.put == s));
            for i in st.inputs.iter().flatten() {
                if !is_get(i) && !is_put(i) {
                    bad.push(format!("{file} stage {}: input {i} is no step of its jobs", st.name));
                }
            }
            for b in &st.bridges {
                let (input, output) = match b {
                    Bridge::MessageContains { input, output, .. } | Bridge::Equals { input, output, .. } => {
                        (input, output)
                    }
                };
                if !is_get(input) {
                    bad.push(format!("{file} stage {}: bridge input {input} is no get of its jobs", st.name));
                }
                // The build that puts the bridged output must be watched, in an earlier stage.
                if !watched_puts.iter().any(|(ps, put)| put == output && *ps < si) {
                    bad.push(format!("{file} stage {}: bridge output {output} is put by no earlier stage", st.name));
                }
            }
            if let Some(f) = &st.fallback_git_input {
                if !is_get(f) {
                    bad.push(format!("{file} stage {}: fallback input {f} is no get of its jobs", st.name));
                }
                let res = specs
                    .iter()
                    .flat_map(|j| &j.inputs)
                    .find(|i| &i.get == f)
                    .map(|i| i.resource.clone().unwrap_or(i.get.clone()));
                match res.and_then(|r| p.resources.get(&r)) {
                    Some(ResourceSpec::Git { repo, .. }) if *repo == topo.tracked_repo => {}
                    other => bad.push(format!("{file} stage {}: fallback input {f} is {other:?}", st.name)),
                }
            }
        }
        // Watched pipelines are the stages' pipelines, in order, with every stage job.
        let cc = cfg.concourse();
        for wp in &cc.pipelines {
            let stage_jobs: Vec<&str> = core
                .stages
                .iter()
                .filter(|s| s.pipeline == wp.name)
                .flat_map(|s| s.jobs.iter().map(|j| j.name.as_str()))
                .collect();
            assert_eq!(wp.jobs, stage_jobs, "{file} {}", wp.name);
        }
        assert!(bad.is_empty(), "{file}:\n{}", bad.join("\n"));
    }
}

/// The examples build exactly the core configurations that `core_truth` checks against the
/// simulator's ground truth.
#[test]
fn examples_build_the_core_configs_checked_against_ground_truth() {
    for (file, topology) in EXAMPLES {
        let topo = Topology::builtin(topology).unwrap();
        let want = if topology == "lana" {
            crate::core_truth::lana_core(&topo)
        } else {
            crate::core_truth::lana_two_repos_core(&topo)
        };
        let mut got = example(file).core();
        // `inputs` naming every get step of the stage's jobs is the same as no `inputs`.
        for (st, w) in got.stages.iter_mut().zip(&want.stages) {
            let p = topo.pipelines.iter().find(|p| p.name == st.pipeline).unwrap();
            let gets: BTreeSet<&str> = p
                .jobs
                .iter()
                .filter(|j| st.jobs.iter().any(|x| x.name == j.name))
                .flat_map(|j| j.inputs.iter().map(|i| i.get.as_str()))
                .collect();
            if w.inputs.is_none()
                && st.inputs.as_ref().is_some_and(|l| l.iter().map(String::as_str).collect::<BTreeSet<_>>() == gets)
            {
                st.inputs = None;
            }
        }
        // Thresholds are alerting, not attribution: the issue's (tests 30m, testflight 20m,
        // staging 25m) in both examples.
        let stuck: Vec<(&str, i64)> =
            got.stages.iter().filter_map(|s| s.stuck_after.map(|t| (s.name.as_str(), t))).collect();
        let mut want_stuck = vec![("tests", 1800), ("testflight", 1200), ("staging", 1500)];
        if topology == "lana" {
            want_stuck.extend([("qa", 1500), ("production", 1500)]);
        }
        assert_eq!(stuck, want_stuck, "{file}");
        for (g, w) in got.stages.iter_mut().zip(&want.stages) {
            g.stuck_after = w.stuck_after;
        }
        assert_eq!(got.stages.len(), want.stages.len(), "{file}");
        for (g, w) in got.stages.iter().zip(&want.stages) {
            assert_eq!(g, w, "{file}");
        }
        assert_eq!(got.lead_time_from, want.lead_time_from, "{file}");
        assert_eq!(got.not_picked_up_after, want.not_picked_up_after, "{file}");
        assert_eq!(got.step_resources, want.step_resources, "{file}");
        let res = |c: &deploy_journey::core::journey::CoreConfig| {
            c.classifier
                .resources()
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        r.filter.paths().to_vec(),
                        r.filter.ignore_paths().to_vec(),
                        r.disable_ci_skip,
                        r.kind,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(res(&got), res(&want), "{file}");
    }
}

/// Loading the two examples and their sources' settings.
#[test]
fn examples_give_source_settings() {
    let cfg = example("lana.yaml");
    let gh = cfg.github();
    assert_eq!((gh.owner.as_str(), gh.repo.as_str(), gh.branch.as_str()), ("GaloyMoney", "lana-bank", "main"));
    assert_eq!(gh.api_url, "https://api.github.com");
    assert_eq!(gh.token.unwrap().expose(), "ghp_fake-github-token");
    let cc = cfg.concourse();
    assert_eq!((cc.url.as_str(), cc.team.as_str()), ("https://ci.galoy.io", "dev"));
    assert!(matches!(
        &cc.auth,
        deploy_journey::sources::ConcourseAuth::Password { username, password }
            if username == "deploy-journey" && password.expose() == "viewer-password"
    ));
    let names: Vec<&str> = cc.pipelines.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["lana-bank", "private-charts", "galoy-staging", "galoy-qa", "galoy-production"]);
    assert_eq!(cc.pipelines[1].message_inputs, ["lana-bank-chart"]);
    assert_eq!(cc.pipelines[3].message_inputs, ["lana-bank-qa"]);
    assert_eq!(cfg.listen.to_string(), "0.0.0.0:9853");
    assert_eq!(cfg.poll_interval.as_secs(), 30);
    assert_eq!(cfg.retention.as_secs(), 90 * 86_400);
    assert_eq!(cfg.keep_in_memory.as_secs(), 7 * 86_400);
    assert_eq!(cfg.memory_window().as_secs(), 7 * 86_400);
    // The window never outlasts retention, nor ends before a deployment's failure is known.
    let mut c = cfg.clone();
    c.retention = std::time::Duration::from_secs(3 * 86_400);
    assert_eq!(c.memory_window().as_secs(), 3 * 86_400);
    c.retention = std::time::Duration::from_secs(90 * 86_400);
    c.keep_in_memory = std::time::Duration::from_secs(86_400);
    assert_eq!(c.memory_window().as_secs(), 2 * 86_400, "failure window (1d) plus a day");
    assert_eq!(cfg.state_path, Path::new("/var/lib/deploy-journey/state.db"));

    let cfg = example("lana-two-repos.yaml");
    assert!(matches!(
        &cfg.concourse().auth,
        deploy_journey::sources::ConcourseAuth::Password { username, password }
            if username == "deploy-journey" && password.expose() == "viewer-password"
    ));
    let names: Vec<String> = cfg.concourse().pipelines.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["lana-bank", "galoy-staging"]);
    assert!(cfg.concourse().pipelines.iter().all(|p| p.message_inputs.is_empty()));
}

/// Bad files, with every problem line they must produce, exactly.
#[test]
fn bad_configs_report_every_problem_with_its_path() {
    #[rustfmt::skip]
    let table: &[(&str, &[&str])] = &[
        ("several-problems.yaml", &[
            "repository.api_url: \"api.github.com\" is not an http(s) URL",
            "concourse.auth: give either token_file/token_env or username + password_file/password_env",
            "poll_interval: \"30\" is not a duration (time unit needed, for example 30sec or 30ms); write e.g. 30s, 5m, 90d",
            "lead_time_from: \"merged_at\" is not one of committer_date (default), author_date, first_seen, pr_opened, first_commit",
            "resources.admin-panel-src.paths[2]: \"apps/{admin,customer}/*\" contains '{', which git-resource's shell command line would split or interpret",
            "resources.dagster-src.kind: \"python\" is not one of backend (default), frontend, dagster",
            "stages[0].stuck_after: must be greater than 0",
            "stages[1].git[1]: unknown resource \"dagster\" (resources: repo, admin-panel-src, dagster-src)",
            "stages[2].after[0]: stage \"staging\" is not an earlier stage",
            "stages[3].jobs: must not be empty",
        ]),
        ("literal-secrets.yaml", &[
            "repository.token: secrets are not read from the config file; use token_file or token_env (default GITHUB_TOKEN)",
            "concourse.auth.password: secrets are not read from the config file; use concourse.auth.password_file or concourse.auth.password_env (default CONCOURSE_PASSWORD)",
        ]),
        ("unknown-key.yaml", &[
            "stages[0]: unknown field `enviroment`, expected one of `name`, `pipeline`, `jobs`, `git`, `after`, `inputs`, `bridges`, `fallback`, `environment`, `stuck_after`, `carries_passive`, `approval` (line 11, column 5)",
            "stages: no stage has an environment; mark the deploy stage with environment: <name> (lana: staging)",
        ]),
        ("missing-secret-file.yaml", &[
            "repository.token_file: cannot read /nonexistent/deploy-journey/github-token: No such file or directory (os error 2)",
            "concourse.auth.password_env: environment variable UNSET_PASSWORD is not set",
        ]),
        ("bad-references.yaml", &[
            "resources.repo.pipeline: no stage is in pipeline \"lana\"",
            "stages[0].jobs[2]: job \"test-integration\" is listed twice",
            "stages[1].after[0]: unknown stage \"test\"",
            "stages[2].bridges[0].message_contains.input: unknown input step \"lana-bank-chrt\": stages[2].inputs lists lana-bank-chart",
            "stages[3].jobs[1].git[0]: unknown resource \"repos\" (resources: repo)",
            "stages[3].bridges[0].equals.input_key: is required",
            "stages[3].environment: \"testflight\" is already stages[2]'s",
            "stages[3].stuck_after: \"-5m\" is not a duration (expected number at 0); write e.g. 30s, 5m, 90d",
        ]),
        ("syntax-error.yaml", &[
            "did not find expected ',' or '}' at line 3 column 10, while parsing a flow mapping at line 2 column 13",
        ]),
    ];
    let mut failures = vec![];
    for (file, want) in table {
        let path = root().join("tests/data/config").join(file);
        let origin = path.display().to_string();
        match config::load(&path, &fake_env) {
            Ok(_) => failures.push(format!("{file}: loaded")),
            Err(e) => {
                // Display: one line per problem, prefixed with the file name.
                let shown: Vec<String> = e.to_string().lines().map(str::to_string).collect();
                let want: Vec<String> = want.iter().map(|l| format!("{origin}: {l}")).collect();
                if shown != want {
                    failures.push(format!("{file}:\n got  {shown:#?}\n want {want:#?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn literal_secrets_are_never_echoed() {
    let path = root().join("tests/data/config/literal-secrets.yaml");
    let err = config::load(&path, &fake_env).unwrap_err();
    let shown = format!("{err}\n{err:?}");
    assert!(!shown.contains("do-not-echo"), "{shown}");
    // Nor is a secret from the environment or a file in the summary of a valid file.
    let s = summary(&example("lana.yaml"));
    assert!(!s.contains("viewer-password") && !s.contains("ghp_fake"), "{s}");
    assert!(s.contains("password grant as deploy-journey, password from env CONCOURSE_PASSWORD"), "{s}");
}

fn sim_pipeline_configs(topology: &str) -> Vec<(String, serde_json::Value)> {
    let w = World::new(Topology::builtin(topology).unwrap(), crate::support::START, 1);
    w.concourse.pipelines.iter().map(|p| (p.name.clone(), serde_json::json!({ "config": p.config.clone() }))).collect()
}

#[test]
fn examples_agree_with_the_pipelines_concourse_runs() {
    for (file, topology) in EXAMPLES {
        let cfg = example(file);
        for (name, answer) in sim_pipeline_configs(topology) {
            assert_eq!(resource_differences(&cfg, &name, &answer), Vec::<String>::new(), "{file} {name}");
            assert_eq!(job_differences(&cfg, &name, &answer), Vec::<String>::new(), "{file} {name}");
        }
    }
}

#[test]
fn differences_with_the_pipeline_are_described_one_per_line() {
    let text = std::fs::read_to_string(root().join("examples/lana.yaml")).unwrap();
    let changed = text
        .replace(r#"paths: ["dagster/*"]"#, r#"paths: ["dagster/**"]"#)
        .replace("admin-panel-src:\n", "admin-panel:\n")
        .replace("jobs: [test-integration, test-bats, flake-check]", "jobs: [test-integration, test-bats, flake-chek]")
        .replace("git: [admin-panel-src]", "git: [admin-panel]")
        .replace("disable_ci_skip: false", "disable_ci_skip: true")
        .replace("inputs: [repo, latest-image, dagster-edge-image]", "inputs: [repo, latest-image, dagster-image]");
    let cfg = config::parse(&changed, "changed.yaml", &fake_env).unwrap_or_else(|e| panic!("{e}"));
    let answers = sim_pipeline_configs("lana");
    let (name, lana) = &answers[0];
    assert_eq!(name, "lana-bank");
    assert_eq!(
        resource_differences(&cfg, name, lana),
        [
            "resources.admin-panel: no resource of that name in pipeline lana-bank",
            r#"resources.dagster-src: paths differ: this file ["dagster/**"], pipeline lana-bank ["dagster/*"]"#,
            "resources.dagster-src: disable_ci_skip differs: this file true, pipeline lana-bank false",
            "resources: pipeline lana-bank's git resource admin-panel-src follows GaloyMoney/lana-bank main and triggers build-admin-panel-edge-image, but this file does not track it",
        ]
    );
    assert_eq!(
        job_differences(&cfg, name, lana),
        [
            "stages[0].jobs[2]: no job \"flake-chek\" in pipeline lana-bank",
            "stages[3].inputs[2]: no step \"dagster-image\" in the stage's jobs",
        ]
    );
    // Another repository or branch.
    let other = text.replace("branch: main", "branch: develop");
    let cfg = config::parse(&other, "other.yaml", &fake_env).unwrap();
    let d = resource_differences(&cfg, name, lana);
    assert_eq!(d.len(), 4, "{d:#?}");
    assert_eq!(d[0], "resources.repo: pipeline lana-bank tracks branch main, this file develop");
    // The `GET .../config` body or its inner `config` value, both work; a body without
    // resources is reported.
    let cfg = example("lana.yaml");
    assert!(resource_differences(&cfg, name, &lana["config"]).is_empty());
    assert_eq!(
        resource_differences(&cfg, name, &serde_json::json!({"config": {}})),
        ["pipeline lana-bank: its config has no resources"]
    );
}

#[test]
fn summary_lists_the_stages_in_order() {
    let s = summary(&example("lana-two-repos.yaml"));
    let order: Vec<usize> =
        ["1. tests", "2. edge-images", "3. build-rc", "4. testflight", "5. deployments-bump", "6. staging"]
            .iter()
            .map(|n| s.find(n).unwrap_or_else(|| panic!("{n} not in\n{s}")))
            .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{s}");
    for needle in [
        "concourse: https://ci.galoy.io team dev (password grant as deploy-journey, password from env CONCOURSE_PASSWORD)",
        "bridge: trigger of input lana-bank-staging equals ref of output deployments",
        "success means: deployed to staging",
        "environments: staging (stage staging)",
        // No production stage: DORA is about the last environment.
        "dora: staging (failure window 1d, change fail rate SLO 0.15); hotfix subjects ^(hotfix|fix)(\\(.+\\))?!?:",
    ] {
        assert!(s.contains(needle), "{needle:?} not in\n{s}");
    }
}

/// `repository.poll_interval`: GitHub follows the global interval without a webhook, a slow
/// safety poll with one, whatever is written when it is written, never faster than the loop.
#[test]
fn github_poll_interval_follows_the_webhook() {
    let text = std::fs::read_to_string(root().join("examples/lana.yaml")).unwrap();
    let env = |k: &str| match k {
        "GITHUB_WEBHOOK_SECRET" => Some("whsec-fake".to_string()),
        other => fake_env(other),
    };
    let with =
        |extra: &str| text.replacen("  token_env: GITHUB_TOKEN\n", &format!("  token_env: GITHUB_TOKEN\n{extra}"), 1);
    let parse = |t: &str| config::parse(t, "lana.yaml", &env);
    let secs = |t: &str| parse(t).unwrap_or_else(|e| panic!("{e}")).github_poll_interval().as_secs();
    assert_eq!(secs(&text), 30);
    assert_eq!(secs(&with("  webhook_secret_env: GITHUB_WEBHOOK_SECRET\n")), 300);
    assert_eq!(secs(&with("  webhook_secret_env: GITHUB_WEBHOOK_SECRET\n  poll_interval: 15m\n")), 900);
    assert_eq!(secs(&with("  poll_interval: 2m\n")), 120);
    let slow_loop =
        with("  webhook_secret_env: GITHUB_WEBHOOK_SECRET\n").replace("poll_interval: 30s", "poll_interval: 10m");
    assert_eq!(secs(&slow_loop), 600, "never faster than the loop");
    let e = parse(&with("  poll_interval: 10s\n")).expect_err("faster than the loop").to_string();
    assert_eq!(
        e,
        "lana.yaml: repository.poll_interval: 10s is shorter than poll_interval (30s): the loop polls at most once per poll_interval"
    );
}

/// Single edits of `examples/lana.yaml`, each with the one problem line it must produce: the
/// messages the files in `tests/data/config` do not cover (top-level shape, types, addresses,
/// secrets from empty sources, duplicates, the web config key).
#[test]
fn single_mistakes_give_one_problem_naming_the_path() {
    let lana = std::fs::read_to_string(root().join("examples/lana.yaml")).unwrap();
    let env = |k: &str| match k {
        "EMPTY_VAR" => Some(String::new()),
        other => fake_env(other),
    };
    let dir = tempfile::tempdir().unwrap();
    let empty_file = dir.path().join("empty-token");
    std::fs::write(&empty_file, "").unwrap();
    let empty = empty_file.display().to_string();
    let binary_file = dir.path().join("binary-token");
    std::fs::write(&binary_file, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let binary = binary_file.display().to_string();
    #[rustfmt::skip]
    let table: Vec<(String, String)> = vec![
        ("- a\n- b\n".into(), "a mapping of settings".into()),
        (lana.replace("listen: 0.0.0.0:9853", "listen: localhost"), "listen: \"localhost\" is not an address:port such as 0.0.0.0:9853".into()),
        (lana.replace("retention: 90d", "retention: forever"), "retention: \"forever\" is not a duration".into()),
        (lana.replace("poll_interval: 30s", "poll_interval: [30s]"), "poll_interval: invalid type: sequence, expected a string".into()),
        (lana.replace("github: GaloyMoney/lana-bank", "github: lana-bank"), "repository.github: \"lana-bank\" is not owner/name, e.g. GaloyMoney/lana-bank".into()),
        (lana.replace("api_url: https://api.github.com", "api_url: https://me:pw@api.github.com"), "repository.api_url: must not contain credentials (user:password@); use the auth settings".into()),
        (lana.replace("  token_env: GITHUB_TOKEN", "  token_env: GITHUB_TOKEN\n  token_file: /run/secrets/t"), "repository: give token_file or token_env, not both".into()),
        (lana.replace("  token_env: GITHUB_TOKEN", "  token_env: EMPTY_VAR"), "repository.token_env: environment variable EMPTY_VAR is empty".into()),
        (lana.replace("  token_env: GITHUB_TOKEN", &format!("  token_file: {empty}")), format!("repository.token_file: {empty} is empty")),
        // Bounded reads: an endless or binary "secret file" is an error, not a hang or a crash.
        (lana.replace("  token_env: GITHUB_TOKEN", "  token_file: /dev/zero"), "repository.token_file: cannot read /dev/zero: larger than 64 KiB, too large for a secret file, which holds one token or password".into()),
        (lana.replace("  token_env: GITHUB_TOKEN", &format!("  token_file: {binary}")), format!("repository.token_file: cannot read {binary}: not UTF-8 text")),
        (lana.replace("url: https://ci.galoy.io", "url: ci.galoy.io"), "concourse.url: \"ci.galoy.io\" is not an http(s) URL".into()),
        (lana.replace("    username: deploy-journey\n", ""), "concourse.auth.username: is required with password_file/password_env".into()),
        (lana.replace("- name: build-rc", "- name: tests"), "stages[2].name: \"tests\" is already the name of stages[0]".into()),
        (lana.replace("listen: 0.0.0.0:9853", "listen: 0.0.0.0:9853\nlisten: 0.0.0.0:1"), "duplicate".into()),
        (lana.replace("listen: 0.0.0.0:9853", "listen: 0.0.0.0:9853\nweb_config: web.yml"), "unknown field `web_config`".into()),
        // Ranges: nothing faster than a second, no retention that could wrap round or forget
        // journeys while they run.
        (lana.replace("poll_interval: 30s", "poll_interval: 1ms"), "poll_interval: 1ms is too short: at least 1s".into()),
        (lana.replace("poll_interval: 30s", "poll_interval: 400ms"), "poll_interval: 400ms is too short: at least 1s".into()),
        (lana.replace("poll_interval: 30s", "poll_interval: 30d"), "poll_interval: 30d is too long: at most 1d".into()),
        (lana.replace("retention: 90d", "retention: 200000000000000d"), "retention: 200000000000000d is too long: at most 3650d".into()),
        (lana.replace("retention: 90d", "retention: 2h"), "retention: 2h is too short: at least 1d".into()),
        (lana.replace("keep_in_memory: 7d", "keep_in_memory: 1h"), "keep_in_memory: 1h is too short: at least 1d".into()),
        (lana.replace("not_picked_up_after: 5m", "not_picked_up_after: 10ms"), "not_picked_up_after: 10ms is too short: at least 1s".into()),
        (lana.replace("stuck_after: 30m", "stuck_after: 999999999999s"), "stages[0].stuck_after: 999999999999s is too long: at most 30d".into()),
        (lana.replace("  token_env: GITHUB_TOKEN", "  token_env: GITHUB_TOKEN\n  timeout: 1ns"), "repository.timeout: 1ns is too short: at least 1s".into()),
        (lana.replace("  token_env: GITHUB_TOKEN", "  token_env: GITHUB_TOKEN\n  poll_interval: 100y"), "repository.poll_interval: 100y is too long: at most 1d".into()),
        (lana.replace("  token_env: GITHUB_TOKEN", "  token_env: GITHUB_TOKEN\n  initial_commits: 18446744073709551615"), "repository.initial_commits: 18446744073709551615 is more than a first poll reads (2000); use backfill for a longer history".into()),
        // Branch names by git's rules.
        (lana.replace("branch: main", "branch: \"../../etc\""), "repository.branch: \"../../etc\" is not a valid git branch name: it contains '..'".into()),
        (lana.replace("branch: main", "branch: \"-main\""), "repository.branch: \"-main\" is not a valid git branch name: it starts with '-'".into()),
        (lana.replace("branch: main", "branch: \"main.lock\""), "repository.branch: \"main.lock\" is not a valid git branch name: it has a part that ends with '.lock'".into()),
        // The HTTP server's limits.
        (lana.replace("retention: 90d", "retention: 90d\nserver: { max_connections: 0 }"), "server.max_connections: 0 is not between 1 and 65536 (default 512)".into()),
        (lana.replace("retention: 90d", "retention: 90d\nserver: { header_read_timeout: 10ms }"), "server.header_read_timeout: 10ms is too short: at least 1s".into()),
        (lana.replace("retention: 90d", "retention: 90d\nserver: { request_timeout: 2h }"), "server.request_timeout: 2h is too long: at most 1h".into()),
        (lana.replace("retention: 90d", "retention: 90d\nserver: { max_conections: 5 }"), "server: unknown field `max_conections`".into()),
        // Nesting is bounded before the parser spends seconds on it.
        (lana.replace("retention: 90d", &format!("retention: {}{}", "[".repeat(50_000), "]".repeat(50_000))), "nesting deeper than 64 levels at line 45".into()),
    ];
    let mut failures = vec![];
    let started = std::time::Instant::now();
    for (i, (text, want)) in table.iter().enumerate() {
        assert!(i < 1 || *text != lana, "edit {i} changed nothing; examples/lana.yaml changed shape");
        match config::parse(text, "c.yaml", &env) {
            Ok(_) => failures.push(format!("edit {i}: loaded, want {want:?}")),
            Err(e) => {
                let lines = e.lines();
                if lines.len() != 1 || !lines[0].contains(want.as_str()) {
                    failures.push(format!("edit {i}: got {lines:#?}, want one line with {want:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The 50,000-deep nesting is refused by the depth bound before the parser runs (it took 8 s
    // in the parser alone); the figure is printed, not asserted (no timed tests).
    println!("config table of {} edits: {:?}", table.len(), started.elapsed());
    // A UTF-8 byte order mark (Windows editors) is not part of the YAML.
    let cfg = config::parse(&format!("\u{feff}{lana}"), "c.yaml", &env);
    assert!(cfg.is_ok(), "{:?}", cfg.err().map(|e| e.lines()));
    // The bounds hold at their edges.
    let edges = lana.replace("poll_interval: 30s", "poll_interval: 1s").replace("retention: 90d", "retention: 1d");
    let cfg = config::parse(&edges, "c.yaml", &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cfg.poll_interval.as_secs(), cfg.retention.as_secs()), (1, 86_400));
    let cfg = config::parse(&lana.replace("retention: 90d", "retention: 3650d"), "c.yaml", &env).unwrap();
    assert_eq!(cfg.retention.as_secs(), 3650 * 86_400);
    // An empty file: every required section, each named.
    let lines = config::parse("", "c.yaml", &env).unwrap_err().lines();
    let named: Vec<&str> = lines.iter().filter_map(|l| l.split_once(": is required").map(|(p, _)| p)).collect();
    assert_eq!(named, ["repository", "concourse", "resources", "stages"], "{lines:#?}");
    // The web config key is a path, kept as written.
    let text = lana.replace("listen: 0.0.0.0:9853", "listen: 0.0.0.0:9853\nweb_config_file: /etc/dj/web.yml");
    let cfg = config::parse(&text, "c.yaml", &env).unwrap();
    assert_eq!(cfg.web_config_file, Some(PathBuf::from("/etc/dj/web.yml")));
}

/// `repository.branch` is checked by git's own rules: the validator agrees with
/// `git check-ref-format --branch` on every name here.
#[test]
fn branch_names_follow_git_check_ref_format() {
    let git = crate::support::tool("git");
    let names = [
        "main",
        "release/1.2",
        "feature/a-b_c",
        "v1.0",
        "ünïcode",
        "a@b",
        "a.b",
        "x/y/z",
        "",
        "-x",
        "@",
        "HEAD",
        "../../etc",
        "a..b",
        "a/../b",
        ".hidden",
        "a/.b",
        "a.lock",
        "a/b.lock/c",
        "a.lock/b",
        "a/",
        "/a",
        "a//b",
        "a.",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[b",
        "a\\b",
        "a@{1}",
        "a\tb",
        "a\u{7f}b",
        "trailing.",
        "refs/heads/x",
        "x.lock.y",
        "@{-1}x",
        "a/.",
        "a/..",
        "-",
        ".",
        "..",
        "a/b/",
        "lock",
        ".lock",
        "a@",
        "{a}",
        "a}b",
        "a!b",
        "a#b",
        "a'b",
    ];
    let mut differ = vec![];
    for name in names {
        let out = std::process::Command::new(&git)
            .args(["check-ref-format", "--branch", name])
            .current_dir(std::env::temp_dir())
            .output()
            .expect("git check-ref-format");
        let git_ok = out.status.success();
        let ours = config::branch_name_problem(name);
        if git_ok != ours.is_none() {
            differ.push(format!("{name:?}: git {}, ours {ours:?}", if git_ok { "accepts" } else { "refuses" }));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// Files named by the configuration or on the command line are read with a bound: `/dev/zero`
/// is an error naming the file, not gigabytes of memory. `check-config` says "OK" only after
/// the web config validated, and an empty web config is an error.
#[test]
fn every_file_read_is_bounded_and_check_config_says_ok_last() {
    let dir = tempfile::tempdir().unwrap();
    let lana = std::fs::read_to_string(root().join("examples/lana.yaml")).unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, &lana).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_deploy-journey"))
            .args(args)
            .env("GITHUB_TOKEN", "ghp_fake-github-token")
            .env("CONCOURSE_PASSWORD", "viewer-password")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["check-config", "--offline", "--config", "/dev/zero"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("/dev/zero: cannot read: larger than 1024 KiB"), "{err}");

    let web = dir.path().join("web.yml");
    let c = config.to_str().unwrap();
    let w = web.to_str().unwrap();
    for (text, want) in [
        ("", format!("web config {w}: is empty: it configures neither TLS nor basic auth")),
        (
            "tls_server_config:\n  cert_file: /dev/zero\n  key_file: /dev/zero\n",
            format!("web config {w}: tls_server_config.cert_file: cannot read /dev/zero: larger than 1024 KiB"),
        ),
        (
            "tls_server_config:\n  cert_file: a.crt\n",
            format!("web config {w}: tls_server_config.key_file: is required"),
        ),
    ] {
        std::fs::write(&web, text).unwrap();
        let (code, out, err) = run(&["check-config", "--offline", "--config", c, "--web.config.file", w]);
        assert_eq!(code, Some(2), "{text:?}: {out}{err}");
        assert!(err.contains(&want), "{text:?}: {err}");
        assert!(!out.contains("OK"), "{text:?}: said OK before the web config failed:\n{out}");
    }
    let (code, out, err) = run(&["check-config", "--offline", "--config", c, "--web.config.file", "/dev/zero"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("web config /dev/zero: cannot read: larger than 1024 KiB"), "{err}");
    // A good one: OK, then the web config line.
    std::fs::write(&web, "http_server_config:\n  headers:\n    X-Frame-Options: deny\n").unwrap();
    let (code, out, err) = run(&["check-config", "--offline", "--config", c, "--web.config.file", w]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(": OK") && out.contains("TLS off, basic auth off"), "{out}");
}

/// A 100,000-deep file, flow or block, is refused by its depth, naming the file, before the
/// parser reads it all (libyaml's scanner is quadratic in flow depth: 83 s of CPU). The flow
/// cases hide their brackets from a scan of quotes and comments: a `"` inside a plain scalar
/// or a block scalar opens no quoted string for the parser.
#[test]
fn a_100k_deep_file_is_refused_by_its_depth() {
    const N: usize = 100_000;
    let flow = format!("{}{}", "[".repeat(N), "]".repeat(N));
    let cases = [
        ("flow.yaml", format!("retention: {flow}\n")),
        ("flow-after-plain.yaml", format!("branch: x \"y\nretention: {flow}\n")),
        ("flow-after-block-scalar.yaml", format!("note: |\n  \"\nretention: {flow}\n")),
        ("block-seq.yaml", format!("retention:\n{}x\n", "- ".repeat(N))),
        ("block-map.yaml", format!("retention:\n{}x\n", "? ".repeat(N))),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let e = config::load_lazy(&path, &fake_env).err().map(|e| e.to_string()).unwrap_or_default();
        let want = format!("{}: nesting deeper than 64 levels at line ", path.display());
        assert!(e.starts_with(&want), "{name}: got {e:?}, want {want:?}");
        // The web config file is read by the same bound.
        let web = deploy_journey::webconfig::load(&path).err().map(|e| e.to_string()).unwrap_or_default();
        let want = format!("web config {}: nesting deeper than 64 levels at line ", path.display());
        assert!(web.starts_with(&want), "{name}: got {web:?}, want {want:?}");
    }
    // 64 levels (the top mapping and 63 lists) pass the bound; the file fails later, on what it says.
    let edge = format!("retention: {}{}\n", "[".repeat(63), "]".repeat(63));
    let e = config::parse(&edge, "edge.yaml", &fake_env).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(!e.is_empty() && !e.contains("nesting deeper"), "{e}");
}
