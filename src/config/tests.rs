use super::summary::repo_of_uri;
use super::*;

const MINIMAL: &str = "
repository: { github: o/r }
concourse: { url: 'http://ci/', team: dev }
resources: { repo: {} }
stages:
  - { name: tests, pipeline: p, jobs: [t] }
  - { name: deploy, pipeline: p, jobs: [d], environment: staging }
";

fn no_env(_: &str) -> Option<String> {
    None
}

fn lana_env(k: &str) -> Option<String> {
    match k {
        "GITHUB_TOKEN" => Some("gh-secret".into()),
        "CONCOURSE_PASSWORD" => Some("ci-secret".into()),
        "CONCOURSE_TOKEN" => Some("ci-token".into()),
        _ => None,
    }
}

fn problems(text: &str) -> Vec<String> {
    problems_env(text, &no_env)
}

fn problems_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    match parse(text, "t.yaml", env) {
        Ok(_) => vec![],
        Err(e) => e.lines(),
    }
}

#[track_caller]
fn check(text: &str, expected: &[&str]) {
    assert_eq!(problems(text), expected, "\n{text}");
}

#[test]
fn minimal_config_gets_the_defaults() {
    let cfg = parse(MINIMAL, "t.yaml", &no_env).unwrap();
    assert_eq!(cfg.repository.branch, "main");
    assert_eq!(cfg.repository.api_url, "https://api.github.com");
    assert!(cfg.repository.token.is_none());
    assert_eq!(cfg.concourse.url, "http://ci");
    assert!(matches!(cfg.concourse.auth, ConcourseAuth::None));
    assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(cfg.poll_interval, Duration::from_secs(30));
    assert_eq!(cfg.retention, Duration::from_secs(90 * 86_400));
    assert_eq!(cfg.not_picked_up_after, Duration::from_secs(300));
    assert_eq!(cfg.lead_time_from, LeadTimeFrom::CommitterDate);
    assert_eq!(cfg.state_path, PathBuf::from(DEFAULT_STATE_PATH));
    let core = cfg.core();
    assert_eq!(core.stages[0].after, Vec::<usize>::new());
    assert_eq!(core.stages[1].after, vec![0]);
    assert_eq!(core.stages[1].jobs[0].git, vec!["repo".to_string()]);
    assert!(core.stages[0].carries_passive);
    assert_eq!(cfg.resources[0].pipeline, "p");
}

#[test]
fn lana_example_builds_the_core_and_source_configs() {
    let cfg = parse(include_str!("../../examples/lana.yaml"), "lana.yaml", &lana_env).unwrap();
    let core = cfg.core();
    let names: Vec<&str> = core.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "tests",
            "edge-images",
            "build-rc",
            "chart-bump",
            "testflight",
            "deployments-bump",
            "staging",
            "qa",
            "production"
        ]
    );
    let after: Vec<Vec<usize>> = core.stages.iter().map(|s| s.after.clone()).collect();
    assert_eq!(after, [vec![], vec![], vec![0, 1], vec![2], vec![3], vec![4], vec![5], vec![6], vec![7]]);
    assert_eq!(core.stages[0].stuck_after, Some(1800));
    assert_eq!(core.stages[4].stuck_after, Some(1200));
    assert_eq!(core.stages[6].stuck_after, Some(1500));
    assert_eq!(core.environments(), ["staging", "qa", "production"]);
    // Production waits for a person; DORA is about it.
    assert_eq!(
        core.stages.iter().map(|s| s.approval).collect::<Vec<_>>(),
        [false, false, false, false, false, false, false, false, true]
    );
    assert_eq!(core.dora.environment, "production");
    assert_eq!(core.journey_ends_at.as_deref(), Some("staging"));
    assert_eq!(core.not_picked_up_after, 300);
    assert_eq!(
        core.stages[4].bridges,
        [Bridge::MessageContains {
            input: "lana-bank-chart".into(),
            output: "latest-image".into(),
            key: "digest".into()
        }]
    );
    assert_eq!(core.stages[6].fallback_git_input.as_deref(), Some("lana-repo"));
    let kinds: Vec<SourceKind> = core.classifier.resources().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [SourceKind::Backend, SourceKind::Frontend, SourceKind::Frontend, SourceKind::Dagster]);

    let gh = cfg.github();
    assert_eq!((gh.owner.as_str(), gh.repo.as_str(), gh.branch.as_str()), ("GaloyMoney", "lana-bank", "main"));
    assert_eq!(gh.token.as_ref().map(|t| t.expose()), Some("gh-secret"));

    let cc = cfg.concourse();
    let ConcourseAuth::Password { username, password } = &cc.auth else { panic!("{:?}", cc.auth) };
    assert_eq!((username.as_str(), password.expose()), ("deploy-journey", "ci-secret"));
    let p: Vec<(&str, usize, &[String])> =
        cc.pipelines.iter().map(|p| (p.name.as_str(), p.jobs.len(), p.message_inputs.as_slice())).collect();
    assert_eq!(
        p,
        [
            ("lana-bank", 8, &[][..]),
            ("private-charts", 2, &["lana-bank-chart".to_string()][..]),
            ("galoy-staging", 1, &[][..]),
            ("galoy-qa", 1, &["lana-bank-qa".to_string()][..]),
            ("galoy-production", 1, &["lana-bank-production".to_string()][..])
        ]
    );
}

#[test]
fn problems_are_collected_with_their_paths() {
    check(
        "
repository: { github: lana-bank, api_url: ftp://x }
concourse: { url: https://ci, team: '', auth: { username: u, token_env: T } }
poll_interval: soon
lead_time_from: merge_date
resources:
  repo: { paths: [ok, 'a b', ''], ignore_paths: ['../x'], kind: web }
stages:
  - { name: tests, pipeline: p, jobs: [t], git: [repo, nope], stuck_after: 0s }
  - { name: tests, pipeline: p, jobs: [] , after: [later, tests] }
  - { name: later, pipeline: p, jobs: [t, { name: u, git: [] }], inputs: [] }
",
        &[
            "repository.github: \"lana-bank\" is not owner/name, e.g. GaloyMoney/lana-bank",
            "repository.api_url: \"ftp://x\" is not an http(s) URL",
            "concourse.team: must not be empty",
            "concourse.auth: give either token_file/token_env or username + password_file/password_env",
            "poll_interval: \"soon\" is not a duration (expected number at 0); write e.g. 30s, 5m, 90d",
            "lead_time_from: \"merge_date\" is not one of committer_date (default), author_date, first_seen, pr_opened, \
             first_commit",
            "resources.repo.paths[1]: \"a b\" contains ' ', which git-resource's shell command line would split or interpret",
            "resources.repo.paths[2]: must not be empty",
            "resources.repo.ignore_paths[0]: \"../x\" is not a valid pathspec: The path leaves the repository",
            "resources.repo.kind: \"web\" is not one of backend (default), frontend, dagster",
            "stages[0].git[1]: unknown resource \"nope\" (resources: repo)",
            "stages[0].stuck_after: must be greater than 0",
            "stages[1].name: \"tests\" is already the name of stages[0]",
            "stages[1].jobs: must not be empty",
            "stages[1].after[0]: stage \"later\" is not an earlier stage",
            "stages[2].jobs[0]: job \"t\" of pipeline \"p\" is already in stages[0]",
            "stages[2].jobs[1].git: must name at least one resource (leave it out for all of them)",
            "stages[2].inputs: must not be empty (leave it out to let every input carry commits)",
            "stages: no stage has an environment; mark the deploy stage with environment: <name> (lana: staging)",
        ],
    );
}

#[test]
fn missing_sections_and_fields() {
    check(
        "",
        &[
            "repository: is required (github: owner/name, branch, api_url, token_file or token_env)",
            "concourse: is required (url, team, auth)",
            "resources: is required: the tracked git resources and their path filters",
            "stages: is required: the stages a commit goes through, in order",
        ],
    );
    check(
        "
repository: {}
concourse: {}
resources: {}
stages: [{}]
",
        &[
            "repository.github: is required",
            "concourse.url: is required",
            "concourse.team: is required",
            "resources: must name at least one git resource",
            "stages[0].name: is required",
            "stages[0].pipeline: is required",
            "stages[0].jobs: must not be empty",
            "stages: no stage has an environment; mark the deploy stage with environment: <name> (lana: staging)",
        ],
    );
}

#[test]
fn bridges_and_after() {
    let stages = "
  - { name: a, pipeline: p, jobs: [x] }
  - name: b
    pipeline: q
    jobs: [y]
    after: [a, nope, a]
    inputs: [chart]
    bridges:
      - message_contains: { input: chrt, output: img, key: digest }
      - equals: { input: chart, output: o }
    fallback: {}
    environment: staging
";
    let text = MINIMAL.split("stages:").next().unwrap().to_string() + "stages:" + stages;
    check(
        &text,
        &[
            "stages[1].after[1]: unknown stage \"nope\"",
            "stages[1].bridges[0].message_contains.input: unknown input step \"chrt\": stages[1].inputs lists chart",
            "stages[1].bridges[1].equals.input_key: is required",
            "stages[1].bridges[1].equals.key: is required",
            "stages[1].fallback.git_input: is required",
        ],
    );
    // An unknown bridge kind is a decode error with its path.
    let bad = text.replace("equals: { input: chart, output: o }", "same: { input: chart }");
    let p = problems(&bad);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("stages[1].bridges[1]: unknown variant `same`, expected `message_contains` or `equals`"),
        "{p:?}"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let text = MINIMAL.replace("team: dev", "team: dev, tean: dev");
    assert_eq!(
        problems(&text),
        ["concourse: unknown field `tean`, expected one of `url`, `team`, `auth`, `timeout` (line 3, column 44)"]
    );
    let text = MINIMAL.replace("jobs: [t]", "jobs: [{ name: t, gti: [repo] }]");
    assert_eq!(
        problems(&text),
        ["stages[0].jobs[0]: unknown field `gti`, expected `name` or `git` (line 6, column 51)"]
    );
    let text = MINIMAL.replace("concourse: { url: 'http://ci/', team: dev }", "concourse: https://ci");
    assert_eq!(
        problems(&text),
        ["concourse: invalid type: string \"https://ci\", expected a mapping: url, team, auth (line 3, column 12)"]
    );
    let text = format!("{MINIMAL}extra: 1\n");
    let p = problems(&text);
    assert!(p[0].starts_with("unknown field `extra`, expected one of `repository`"), "{p:?}");
}

#[test]
fn every_problem_is_reported_at_once_across_sections() {
    // An unknown key in one section, an unknown key deeper in another and a bad value in a
    // third: one run names all three. The first keeps its line; later ones are found after
    // the unknown keys are taken out, where lines no longer hold, so they carry paths only.
    let text = MINIMAL
        .replace("github: o/r", "github: o/r, tokn: x")
        .replace("jobs: [t]", "jobs: [{ name: t, gti: [repo] }]")
        .replace("url: 'http://ci/'", "url: 'ftp://x'");
    assert_eq!(
        problems(&text),
        [
            "repository: unknown field `tokn`, expected one of `github`, `branch`, `api_url`, `token_file`, `token_env`, `timeout`, `initial_commits`, `webhook_secret_file`, `webhook_secret_env`, `poll_interval`, `pull_requests` (line 2, column 28)",
            "stages[0].jobs[0]: unknown field `gti`, expected `name` or `git`",
            "concourse.url: \"ftp://x\" is not an http(s) URL",
        ]
    );
    // A wrong type still ends decoding (what follows would be guesses), after the unknown
    // keys found before it.
    let text = MINIMAL.replace("github: o/r", "github: o/r, tokn: x").replace("jobs: [t]", "jobs: 7");
    let p = problems(&text);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with("repository: unknown field `tokn`") && p[1].starts_with("stages[0].jobs: invalid type"),
        "{p:?}"
    );
}

#[test]
fn syntax_errors_are_one_problem() {
    let p = problems("repository: { github: o/r\nconcourse: [");
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("line"), "{p:?}");
}

#[test]
fn literal_secrets_are_rejected_without_echoing_them() {
    let text = MINIMAL
        .replace("github: o/r", "github: o/r, token: ghp_TOPSECRET1")
        .replace("team: dev", "team: dev, auth: { username: u, password: hunter2-TOPSECRET2, password_env: PW }");
    let env = |k: &str| (k == "PW").then(|| "pw".to_string());
    let err = parse(&text, "t.yaml", &env).unwrap_err();
    let shown = format!("{err}\n{err:?}");
    assert!(!shown.contains("TOPSECRET"), "{shown}");
    assert_eq!(
        err.lines(),
        [
            "repository.token: secrets are not read from the config file; use token_file or token_env (default GITHUB_TOKEN)",
            "concourse.auth.password: secrets are not read from the config file; use concourse.auth.password_file or concourse.auth.password_env (default CONCOURSE_PASSWORD)",
        ]
    );
    // Other problems are still found alongside.
    let text = text.replace("jobs: [t]", "jobs: []");
    let p = problems_env(&text, &env);
    assert_eq!(p.len(), 3, "{p:?}");
    assert_eq!(p[2], "stages[0].jobs: must not be empty");
}

#[test]
fn secrets_from_env_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    std::fs::write(&f, "s3cret\n").unwrap();
    let auth = |a: &str| MINIMAL.replace("team: dev", &format!("team: dev, auth: {a}"));
    let with = |a: &str| parse(&auth(a), "t.yaml", &lana_env);

    let cfg = with(&format!("{{ username: u, password_file: '{}' }}", f.display())).unwrap();
    let ConcourseAuth::Password { password, .. } = &cfg.concourse.auth else { panic!() };
    assert_eq!(password.expose(), "s3cret");
    assert_eq!(cfg.concourse.auth_source, Some(SecretSource::File(f.clone())));

    // password_env defaults to CONCOURSE_PASSWORD.
    let cfg = with("{ username: u }").unwrap();
    let ConcourseAuth::Password { password, .. } = &cfg.concourse.auth else { panic!() };
    assert_eq!(password.expose(), "ci-secret");

    let cfg = with("{ token_env: CONCOURSE_TOKEN }").unwrap();
    assert!(matches!(&cfg.concourse.auth, ConcourseAuth::Bearer(t) if t.expose() == "ci-token"));

    // No auth section: the default token variable when set, else public.
    let cfg = parse(MINIMAL, "t.yaml", &lana_env).unwrap();
    assert!(matches!(&cfg.concourse.auth, ConcourseAuth::Bearer(t) if t.expose() == "ci-token"));
    assert_eq!(cfg.repository.token.as_ref().map(|t| t.expose()), Some("gh-secret"));

    let missing = dir.path().join("nope");
    let p = problems_env(&auth(&format!("{{ token_file: '{}' }}", missing.display())), &lana_env);
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with(&format!("concourse.auth.token_file: cannot read {}: ", missing.display())), "{p:?}");
    std::fs::write(&f, "\n").unwrap();
    assert_eq!(
        problems_env(&auth(&format!("{{ token_file: '{}' }}", f.display())), &lana_env),
        [format!("concourse.auth.token_file: {} is empty", f.display())]
    );

    check(&auth("{ token_env: NOPE }"), &["concourse.auth.token_env: environment variable NOPE is not set"]);
    check(
        &auth("{ username: u }"),
        &[
            "concourse.auth.password_env: environment variable CONCOURSE_PASSWORD (the default) is not set; or give password_file",
        ],
    );
    check(
        &auth("{ password_env: PW }"),
        &[
            "concourse.auth.username: is required with password_file/password_env",
            "concourse.auth.password_env: environment variable PW is not set",
        ],
    );
    check(&auth("{}"), &["concourse.auth: give either token_file/token_env or username + password_file/password_env"]);
    check(&auth("{ token_env: A, token_file: b }"), &["concourse.auth: give token_file or token_env, not both"]);
    // A pasted token where a variable name belongs is not repeated.
    let p = problems(&auth("{ token_env: ghp_abcdefTOPSECRET }"));
    assert_eq!(p.len(), 1);
    assert!(!p[0].contains("TOPSECRET") && p[0].starts_with("concourse.auth.token_env: is not an environment"));
    check(
        &MINIMAL.replace("github: o/r", "github: o/r, token_env: GH"),
        &["repository.token_env: environment variable GH is not set"],
    );
}

#[test]
fn aliases_become_step_resources() {
    let text = MINIMAL.replace("repo: {}", "repo: { aliases: [lana-main] }, other: { aliases: [repo, lana-main] }");
    check(
        &text,
        &[
            "resources.other.aliases[0]: \"repo\" is the name of a resource",
            "resources.other.aliases[1]: \"lana-main\" is already an alias of repo",
        ],
    );
    let cfg = parse(&MINIMAL.replace("repo: {}", "repo: { aliases: [lana-main] }"), "t", &no_env).unwrap();
    assert_eq!(cfg.core().step_resources.get("lana-main").map(String::as_str), Some("repo"));
}

#[test]
fn errors_display_one_line_per_problem_with_the_file_name() {
    let err = parse("repository: {}\n", "conf/x.yaml", &no_env).unwrap_err();
    let text = err.to_string();
    assert!(text.lines().count() >= 3);
    assert!(text.lines().all(|l| l.starts_with("conf/x.yaml: ")), "{text}");
}

#[test]
fn durations_format_compactly() {
    for (secs, s) in [(90 * 86_400, "90d"), (1800, "30m"), (5400, "1h30m"), (45, "45s"), (86_461, "1d1m1s")] {
        assert_eq!(format_duration(Duration::from_secs(secs)), s);
    }
}

#[test]
fn uris_name_their_repository() {
    for (uri, want) in [
        ("git@github.com:GaloyMoney/lana-bank.git", Some("GaloyMoney/lana-bank")),
        ("https://github.com/GaloyMoney/lana-bank", Some("GaloyMoney/lana-bank")),
        ("ssh://git@github.com/GaloyMoney/lana-bank.git/", Some("GaloyMoney/lana-bank")),
        ("lana-bank", None),
    ] {
        assert_eq!(repo_of_uri(uri).as_deref(), want, "{uri}");
    }
}

#[test]
fn summary_names_everything_but_secrets() {
    let cfg = parse(include_str!("../../examples/lana.yaml"), "lana.yaml", &lana_env).unwrap();
    let s = summary(&cfg);
    for needle in [
        "GaloyMoney/lana-bank branch main",
        "token from env GITHUB_TOKEN",
        "https://ci.galoy.io team dev (password grant as deploy-journey, password from env CONCOURSE_PASSWORD)",
        "7. staging (galoy-staging): galoy-staging-lana-bank",
        "stuck after: 25m",
        "success means: deployed to staging",
        "lana-bank-chart contains digest of output latest-image",
    ] {
        assert!(s.contains(needle), "{needle:?} not in\n{s}");
    }
    assert!(!s.contains("secret"), "{s}");
}

/// Loaded lazily, unset credential variables are not problems: they are kept for the
/// commands that call an API, and every other problem is still found.
#[test]
fn lazy_secrets_defer_missing_credentials_to_the_commands_that_need_them() {
    let auth = |a: &str| MINIMAL.replace("team: dev", &format!("team: dev, auth: {a}"));
    #[track_caller]
    fn check(text: &str, problems: &[&str], missing: &[&str]) {
        match parse_with(text, "t.yaml", &no_env, true) {
            Ok(cfg) => {
                assert!(problems.is_empty(), "want problems {problems:?}");
                let got: Vec<String> = cfg.missing_secrets.iter().map(|p| p.to_string()).collect();
                assert_eq!(got, missing);
                match cfg.require_credentials() {
                    Ok(()) => assert!(missing.is_empty()),
                    Err(e) => assert_eq!(e.lines(), missing),
                }
            }
            Err(e) => assert_eq!(e.lines(), problems),
        }
    }
    check(
        &MINIMAL.replace("github: o/r", "github: o/r, token_env: GH"),
        &[],
        &["repository.token_env: environment variable GH is not set"],
    );
    check(
        &auth("{ username: u }"),
        &[],
        &[
            "concourse.auth.password_env: environment variable CONCOURSE_PASSWORD (the default) is not set; or give password_file",
        ],
    );
    // Anonymous GitHub and public Concourse need nothing.
    check(MINIMAL, &[], &[]);
    // Real problems are still problems; a missing secret beside them is not listed twice.
    check(
        &auth("{ password_env: PW }"),
        &["concourse.auth.username: is required with password_file/password_env"],
        &[],
    );
    check(&auth("{ token_env: A, token_file: b }"), &["concourse.auth: give token_file or token_env, not both"], &[]);
    // A secret file not there (yet: secrets are often mounted only where it runs) is a
    // missing credential too, so `check-config --offline` passes without it.
    check(
        &auth("{ username: u, password_file: /nonexistent/deploy-journey/pw }")
            .replace("github: o/r", "github: o/r, token_file: /nonexistent/deploy-journey/gh"),
        &[],
        &[
            "repository.token_file: cannot read /nonexistent/deploy-journey/gh: No such file or directory (os error 2)",
            "concourse.auth.password_file: cannot read /nonexistent/deploy-journey/pw: No such file or directory (os error 2)",
        ],
    );
}

/// Issue #17: `approval:` gates an environment stage; `dora:` names the DORA environment, the
/// failure window, the SLO and the hotfix rules, with defaults, and every problem names its path.
#[test]
fn approval_and_the_dora_section() {
    let three = MINIMAL.to_string()
        + "  - { name: qa, pipeline: p, jobs: [q], environment: qa }\n  - { name: prod, pipeline: p, jobs: [r], environment: production, approval: true }\n";
    // Defaults: production, 24 h, 0.15, fix/hotfix subjects, the hotfix label.
    let core = parse(&three, "t.yaml", &no_env).unwrap().core();
    assert_eq!(core.stages.iter().map(|s| s.approval).collect::<Vec<_>>(), [false, false, false, true]);
    assert_eq!((core.dora.environment.as_str(), core.dora.failure_window), ("production", 86_400));
    assert_eq!(core.dora.change_fail_rate_slo, 0.15);
    assert_eq!(core.dora.hotfix_labels, ["hotfix"]);
    let hotfix = |subject: &str| core.dora.is_hotfix(subject);
    assert!(hotfix("fix: x") && hotfix("hotfix(api)!: y") && !hotfix("feat: fix x") && !hotfix("fixup: z"));
    // Without a production environment, the last one.
    assert_eq!(parse(MINIMAL, "t.yaml", &no_env).unwrap().core().dora.environment, "staging");
    // Given.
    let cfg = parse(
        &(three.clone()
            + "dora:\n  environment: qa\n  failure_window: 2h\n  change_fail_rate_slo: 0.2\n  hotfix: { message_patterns: ['^urgent:'], pr_labels: [p0] }\n"),
        "t.yaml",
        &no_env,
    )
    .unwrap();
    let d = cfg.core().dora;
    assert_eq!((d.environment.as_str(), d.failure_window, d.change_fail_rate_slo), ("qa", 7_200, 0.2));
    assert!(d.is_hotfix("urgent: x") && !d.is_hotfix("fix: x"));
    assert_eq!(d.hotfix_labels, ["p0"]);
    check(
        &(three
            + "dora:\n  environment: prod\n  failure_window: 0s\n  change_fail_rate_slo: 1.5\n  hotfix: { message_patterns: ['(unclosed'], pr_labels: [''] }\n  extra: 1\n"),
        &[
            "dora: unknown field `extra`, expected one of `environment`, `failure_window`, `change_fail_rate_slo`, `hotfix` (line 15, column 3)",
            "dora.environment: \"prod\" is no stage's environment (environments: staging, qa, production)",
            "dora.failure_window: must be greater than 0",
            "dora.change_fail_rate_slo: 1.5 is not a ratio between 0 and 1",
            "dora.hotfix.message_patterns[0]: \"(unclosed\" is not a regular expression: error: unclosed group",
            "dora.hotfix.pr_labels[0]: must not be empty",
        ],
    );
    check(
        &MINIMAL.replace("jobs: [t] }", "jobs: [t], approval: true }"),
        &["stages[0].approval: only an environment stage has a gate; add environment: <name> or leave approval out"],
    );
}

#[test]
fn links_need_a_grafana_url_and_a_tempo_uid_together() {
    let with = |l: &str| format!("{MINIMAL}links: {l}\n");
    check(&with("{ grafana_url: 'https://grafana.example.com/', tempo_datasource_uid: tempo }"), &[]);
    let cfg =
        parse(&with("{ grafana_url: 'https://g.example/', tempo_datasource_uid: tempo }"), "t.yaml", &no_env).unwrap();
    let url = cfg.links.trace_url("0123456789abcdef0123456789abcdef").unwrap();
    assert!(url.starts_with("https://g.example/explore?orgId=1&left="), "{url}");
    assert!(url.contains("0123456789abcdef0123456789abcdef") && url.contains("%22uid%22%3A%22tempo%22"), "{url}");
    assert_eq!(parse(MINIMAL, "t.yaml", &no_env).unwrap().links.trace_url("ab"), None);
    check(
        &with("{ grafana_url: 'grafana:3000', tempo_datasource_uid: t }"),
        &["links.grafana_url: \"grafana:3000\" is not an http(s) URL"],
    );
    check(
        &with("{ grafana_url: 'https://g.example' }"),
        &["links.tempo_datasource_uid: is needed with links.grafana_url"],
    );
    check(&with("{ tempo_datasource_uid: t }"), &["links.grafana_url: is needed with links.tempo_datasource_uid"]);
}
