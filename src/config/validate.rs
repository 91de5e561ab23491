//! Phase 2: the raw shapes become the typed [`Config`]; every problem is collected with its path.

use super::raw::*;
use super::*;

// ------------------------------------------------------------------ phase 2: validate

pub(super) struct Validator<'a> {
    pub(super) problems: Vec<Problem>,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    /// Unset credential variables go to `missing` instead of `problems`.
    pub(super) lazy_secrets: bool,
    pub(super) missing: Vec<Problem>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Compact duration: `90d`, `30m`, `1h30m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= n {
            out.push_str(&format!("{}{unit}", s / n));
            s %= n;
        }
    }
    out
}

/// A conventional environment variable name; anything else might be a pasted secret, which
/// messages must not repeat.
fn looks_like_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

impl Validator<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    /// A credential variable that is unset or empty: a problem, or with lazy secrets, missing.
    fn missing_secret(&mut self, path: String, message: String) {
        if self.lazy_secrets {
            self.missing.push(Problem::new(path, message));
        } else {
            self.problem(path, message);
        }
    }

    fn required<'s>(&mut self, path: &str, s: &'s Option<String>) -> Option<&'s str> {
        match (s, nonempty(s)) {
            (_, Some(v)) => Some(v),
            (Some(_), None) => {
                self.problem(path, "must not be empty");
                None
            }
            (None, None) => {
                self.problem(path, "is required");
                None
            }
        }
    }

    fn duration(&mut self, path: &str, s: &Option<String>, default: Duration, range: (Duration, Duration)) -> Duration {
        self.opt_duration(path, s, range).unwrap_or(default)
    }

    /// A duration within `range` (inclusive): nothing faster than a second, nothing so long that
    /// Unix-second arithmetic on it could overflow.
    fn opt_duration(&mut self, path: &str, s: &Option<String>, (min, max): (Duration, Duration)) -> Option<Duration> {
        let s = s.as_deref()?;
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d.is_zero() => {
                self.problem(path, "must be greater than 0");
                None
            }
            Ok(d) if d < min => {
                self.problem(path, format!("{} is too short: at least {}", s.trim(), format_duration(min)));
                None
            }
            Ok(d) if d > max => {
                self.problem(path, format!("{} is too long: at most {}", s.trim(), format_duration(max)));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(path, format!("{s:?} is not a duration ({e}); write e.g. 30s, 5m, 90d"));
                None
            }
        }
    }

    fn url(&mut self, path: &str, s: &str) -> String {
        let u = s.trim_end_matches('/').to_string();
        let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            self.problem(path, format!("{s:?} is not an http(s) URL"));
        } else if rest.is_some_and(|r| r.split('/').next().is_some_and(|host| host.contains('@'))) {
            // Credentials in a URL would travel into build links, the JSON API and logs.
            self.problem(path, "must not contain credentials (user:password@); use the auth settings".to_string());
            return String::new();
        }
        u
    }

    /// A secret from a file or an environment variable. `default_env` applies when neither is
    /// given; when it is unset the secret is missing (`required` makes that a problem).
    #[allow(clippy::too_many_arguments)]
    fn secret(
        &mut self,
        at: &str,
        what: &str,
        file: &Option<String>,
        env_name: &Option<String>,
        default_env: &str,
        required: bool,
    ) -> Option<(Secret, SecretSource)> {
        let path = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
        let (file_key, env_key) = (format!("{what}_file"), format!("{what}_env"));
        match (file, env_name) {
            (Some(_), Some(_)) => {
                self.problem(at, format!("give {file_key} or {env_key}, not both"));
                None
            }
            (Some(f), None) => {
                let p = PathBuf::from(f.trim());
                if f.trim().is_empty() {
                    self.problem(path(&file_key), "must not be empty");
                    return None;
                }
                match read_secret_file(&p) {
                    Ok(s) => {
                        let s = s.trim_end_matches(['\n', '\r']);
                        if s.is_empty() {
                            self.missing_secret(path(&file_key), format!("{} is empty", p.display()));
                            None
                        } else {
                            Some((Secret::new(s), SecretSource::File(p)))
                        }
                    }
                    // Not there (yet) or unreadable is a missing credential, like an unset
                    // variable: secrets are often mounted only where the exporter runs.
                    Err(e)
                        if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) =>
                    {
                        self.missing_secret(path(&file_key), format!("cannot read {}: {e}", p.display()));
                        None
                    }
                    Err(e) => {
                        self.problem(path(&file_key), format!("cannot read {}: {e}", p.display()));
                        None
                    }
                }
            }
            (None, Some(name)) => {
                let name = name.trim();
                if !looks_like_env_name(name) {
                    self.problem(
                        path(&env_key),
                        "is not an environment variable name (A-Z, 0-9, _); the value is not shown in case it is the secret itself",
                    );
                    return None;
                }
                match (self.env)(name) {
                    Some(v) if !v.is_empty() => Some((Secret::new(v), SecretSource::Env(name.to_string()))),
                    Some(_) => {
                        self.missing_secret(path(&env_key), format!("environment variable {name} is empty"));
                        None
                    }
                    None => {
                        self.missing_secret(path(&env_key), format!("environment variable {name} is not set"));
                        None
                    }
                }
            }
            (None, None) => match (self.env)(default_env) {
                Some(v) if !v.is_empty() => Some((Secret::new(v), SecretSource::Env(default_env.to_string()))),
                _ => {
                    if required {
                        self.missing_secret(
                            path(&env_key),
                            format!("environment variable {default_env} (the default) is not set; or give {file_key}"),
                        );
                    }
                    None
                }
            },
        }
    }

    pub(super) fn config(&mut self, raw: RawConfig, origin: &str) -> Option<Config> {
        let repository = self.repository(raw.repository);
        let concourse = self.concourse(raw.concourse);
        let listen = match raw.listen.as_deref().map(str::trim) {
            None => DEFAULT_LISTEN.parse().ok(),
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.problem("listen", format!("{s:?} is not an address:port such as {DEFAULT_LISTEN}"));
                    None
                }
            },
        };
        let poll_interval =
            self.duration("poll_interval", &raw.poll_interval, DEFAULT_POLL_INTERVAL, POLL_INTERVAL_RANGE);
        if let Some(gh) = repository.as_ref().and_then(|r| r.poll_interval).filter(|d| *d < poll_interval) {
            self.problem(
                "repository.poll_interval",
                format!(
                    "{} is shorter than poll_interval ({}): the loop polls at most once per poll_interval",
                    format_duration(gh),
                    format_duration(poll_interval)
                ),
            );
        }
        let retention = self.duration("retention", &raw.retention, DEFAULT_RETENTION, RETENTION_RANGE);
        let keep_in_memory =
            self.duration("keep_in_memory", &raw.keep_in_memory, DEFAULT_KEEP_IN_MEMORY, RETENTION_RANGE);
        let not_picked_up_after = self.duration(
            "not_picked_up_after",
            &raw.not_picked_up_after,
            DEFAULT_NOT_PICKED_UP_AFTER,
            THRESHOLD_RANGE,
        );
        let state_path = match &raw.state_path {
            None => Some(PathBuf::from(DEFAULT_STATE_PATH)),
            Some(_) => self.required("state_path", &raw.state_path).map(PathBuf::from),
        };
        let lead_time_from = match raw.lead_time_from.as_deref().map(str::trim) {
            None | Some("committer_date") => Some(LeadTimeFrom::CommitterDate),
            Some("author_date") => Some(LeadTimeFrom::AuthorDate),
            Some("first_seen") => Some(LeadTimeFrom::FirstSeen),
            Some("pr_opened") => Some(LeadTimeFrom::PrOpened),
            Some("first_commit") => Some(LeadTimeFrom::FirstCommit),
            Some(other) => {
                self.problem(
                    "lead_time_from",
                    format!(
                        "{other:?} is not one of committer_date (default), author_date, first_seen, pr_opened, \
                         first_commit"
                    ),
                );
                None
            }
        };
        let stage_pipelines: Vec<String> = raw
            .stages
            .iter()
            .flatten()
            .filter_map(|s| nonempty(&s.pipeline).map(str::to_string))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let first_pipeline = raw.stages.iter().flatten().next().and_then(|s| nonempty(&s.pipeline)).unwrap_or("");
        // Stages refer to every declared resource, valid or not, so one bad filter is one problem.
        let declared: Vec<String> = raw.resources.iter().flat_map(|r| r.0.iter().map(|(n, _)| n.clone())).collect();
        let resources = self.resources(raw.resources, first_pipeline, &stage_pipelines);
        let stages = self.stages(raw.stages, &declared);
        let traces = self.traces(raw.traces.unwrap_or_default());
        let server = self.server(raw.server.unwrap_or_default());
        let dora = self.dora(raw.dora.unwrap_or_default(), &stages);
        let journey_ends_at = raw.journey_ends_at.as_deref().map(str::trim).map(str::to_string);
        if let Some(e) = &journey_ends_at {
            let envs: Vec<&str> = stages.iter().filter_map(|s| s.environment.as_deref()).collect();
            if !envs.contains(&e.as_str()) {
                self.problem(
                    "journey_ends_at",
                    format!("{e:?} is no stage's environment (environments: {})", envs.join(", ")),
                );
            }
        }
        let links = self.links(raw.links.unwrap_or_default());
        Some(Config {
            origin: origin.to_string(),
            repository: repository?,
            concourse: concourse?,
            listen: listen?,
            web_config_file: raw.web_config_file.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(PathBuf::from),
            poll_interval,
            state_path: state_path?,
            retention,
            keep_in_memory,
            lead_time_from: lead_time_from?,
            journey_ends_at,
            not_picked_up_after,
            resources,
            stages,
            traces,
            missing_secrets: vec![],
            server,
            dora,
            links,
        })
    }

    fn dora(&mut self, r: RawDora, stages: &[StageDef]) -> crate::core::deployments::DoraConfig {
        let mut d = crate::core::deployments::DoraConfig::default();
        let envs: Vec<&str> = stages.iter().filter_map(|s| s.environment.as_deref()).collect();
        match r.environment.as_deref().map(str::trim) {
            Some(e) if envs.contains(&e) => d.environment = e.to_string(),
            Some(e) => self.problem(
                "dora.environment",
                format!("{e:?} is no stage's environment (environments: {})", envs.join(", ")),
            ),
            // The default is production; without one, the last environment.
            None if !envs.contains(&d.environment.as_str()) => {
                if let Some(last) = envs.last() {
                    d.environment = last.to_string();
                }
            }
            None => {}
        }
        let window = self.duration(
            "dora.failure_window",
            &r.failure_window,
            Duration::from_secs(d.failure_window as u64),
            THRESHOLD_RANGE,
        );
        d.failure_window = window.as_secs() as i64;
        if let Some(slo) = r.change_fail_rate_slo {
            if (0.0..=1.0).contains(&slo) {
                d.change_fail_rate_slo = slo;
            } else {
                self.problem("dora.change_fail_rate_slo", format!("{slo} is not a ratio between 0 and 1"));
            }
        }
        let h = r.hotfix.unwrap_or_default();
        if let Some(patterns) = h.message_patterns {
            d.hotfix_patterns = vec![];
            for (i, p) in patterns.iter().enumerate() {
                match regex::Regex::new(p) {
                    Ok(re) => d.hotfix_patterns.push(re),
                    Err(e) => self.problem(
                        format!("dora.hotfix.message_patterns[{i}]"),
                        format!("{p:?} is not a regular expression: {}", e.to_string().lines().last().unwrap_or("")),
                    ),
                }
            }
        }
        if let Some(labels) = h.pr_labels {
            for (i, l) in labels.iter().enumerate().filter(|(_, l)| l.trim().is_empty()) {
                let _ = l;
                self.problem(format!("dora.hotfix.pr_labels[{i}]"), "must not be empty");
            }
            d.hotfix_labels = labels;
        }
        d
    }

    /// `links:`: a Grafana URL and its Tempo data source, both or neither.
    fn links(&mut self, r: RawLinks) -> crate::pages::Links {
        let grafana_url = r.grafana_url.as_deref().map(str::trim).filter(|u| !u.is_empty());
        let grafana_url = grafana_url.map(|u| self.url("links.grafana_url", u)).filter(|u| !u.is_empty());
        let uid = r.tempo_datasource_uid.as_deref().map(str::trim).filter(|u| !u.is_empty()).map(str::to_string);
        match (&grafana_url, &uid) {
            (Some(_), None) => {
                self.problem("links.tempo_datasource_uid", "is needed with links.grafana_url".to_string())
            }
            (None, Some(_)) if r.grafana_url.is_none() => {
                self.problem("links.grafana_url", "is needed with links.tempo_datasource_uid".to_string())
            }
            _ => {}
        }
        crate::pages::Links { grafana_url, tempo_datasource_uid: uid }
    }

    fn server(&mut self, r: RawServer) -> crate::server::ServerLimits {
        use crate::server::{MAX_CONNECTIONS_CEILING, ServerLimits};
        let d = ServerLimits::default();
        let max_connections = match r.max_connections {
            None => d.max_connections,
            Some(n) if (1..=MAX_CONNECTIONS_CEILING as u64).contains(&n) => n as usize,
            Some(n) => {
                self.problem(
                    "server.max_connections",
                    format!("{n} is not between 1 and {MAX_CONNECTIONS_CEILING} (default {})", d.max_connections),
                );
                d.max_connections
            }
        };
        ServerLimits {
            header_read_timeout: self.duration(
                "server.header_read_timeout",
                &r.header_read_timeout,
                d.header_read_timeout,
                TIMEOUT_RANGE,
            ),
            request_timeout: self.duration(
                "server.request_timeout",
                &r.request_timeout,
                d.request_timeout,
                TIMEOUT_RANGE,
            ),
            max_connections,
        }
    }

    fn traces(&mut self, t: RawTraces) -> Traces {
        let endpoint = t.endpoint.as_deref().map(|u| self.url("traces.endpoint", u)).filter(|u| !u.is_empty());
        let protocol = t.protocol.map(|p| p.trim().to_string());
        if let Some(p) = &protocol
            && !matches!(p.as_str(), "http/protobuf" | "grpc")
        {
            self.problem("traces.protocol", format!("{p:?} is not one of http/protobuf (default), grpc"));
        }
        // Headers usually carry an API key: a secret, so only from a file or the environment.
        let headers = match (&t.headers_file, &t.headers_env) {
            (None, None) => None,
            (f, e) => self.secret("traces", "headers", f, e, "OTEL_EXPORTER_OTLP_HEADERS", false).map(|(s, _)| s),
        };
        Traces {
            endpoint,
            protocol,
            headers,
            service_name: t.service_name.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
            resource_attributes: t.resource_attributes.unwrap_or_default().into_iter().collect(),
            self_instrumentation: t.self_instrumentation.unwrap_or(false),
        }
    }

    fn repository(&mut self, raw: Option<RawRepository>) -> Option<Repository> {
        let Some(r) = raw else {
            self.problem("repository", "is required (github: owner/name, branch, api_url, token_file or token_env)");
            return None;
        };
        let gh = self.required("repository.github", &r.github);
        let (owner, name) = match gh.map(|g| (g, g.split_once('/'))) {
            Some((_, Some((o, n)))) if !o.is_empty() && !n.is_empty() && !n.contains('/') => {
                (o.to_string(), n.to_string())
            }
            Some((g, _)) => {
                self.problem("repository.github", format!("{g:?} is not owner/name, e.g. GaloyMoney/lana-bank"));
                (String::new(), String::new())
            }
            None => (String::new(), String::new()),
        };
        let branch = match &r.branch {
            None => Some(DEFAULT_BRANCH),
            Some(_) => self.required("repository.branch", &r.branch),
        };
        // The branch goes into API paths and ref comparisons: git's own rules for a name.
        let branch = match branch.map(|b| (b, branch_name_problem(b))) {
            Some((b, Some(why))) => {
                self.problem("repository.branch", format!("{b:?} is not a valid git branch name: it {why}"));
                None
            }
            other => other.map(|(b, _)| b),
        };
        let api_url = match &r.api_url {
            None => DEFAULT_GITHUB_API.to_string(),
            Some(u) => self.url("repository.api_url", u),
        };
        let timeout = self.duration("repository.timeout", &r.timeout, DEFAULT_TIMEOUT, TIMEOUT_RANGE);
        let initial_commits = r.initial_commits.unwrap_or(DEFAULT_INITIAL_COMMITS);
        let poll_interval = self.opt_duration("repository.poll_interval", &r.poll_interval, POLL_INTERVAL_RANGE);
        if initial_commits == 0 {
            self.problem("repository.initial_commits", "must be greater than 0");
        } else if initial_commits > MAX_INITIAL_COMMITS {
            // A poll reads at most 20 pages of 100; more history is what `backfill` is for.
            self.problem(
                "repository.initial_commits",
                format!("{initial_commits} is more than a first poll reads ({MAX_INITIAL_COMMITS}); use backfill for a longer history"),
            );
        }
        let n = self.problems.len();
        let token = self.secret("repository", "token", &r.token_file, &r.token_env, DEFAULT_GITHUB_TOKEN_ENV, false);
        let token_ok = self.problems.len() == n;
        let (token, token_source) = token.map(|(s, src)| (Some(s), Some(src))).unwrap_or((None, None));
        let n = self.problems.len();
        let webhook = match (&r.webhook_secret_file, &r.webhook_secret_env) {
            (None, None) => None,
            (f, e) => self.secret("repository", "webhook_secret", f, e, "GITHUB_WEBHOOK_SECRET", true),
        };
        let webhook_ok = self.problems.len() == n;
        (gh.is_some() && !owner.is_empty() && token_ok && webhook_ok).then_some(())?;
        Some(Repository {
            owner,
            name,
            branch: branch?.to_string(),
            api_url,
            token,
            token_source,
            timeout,
            initial_commits,
            webhook_secret: webhook.map(|(s, _)| s),
            poll_interval,
            pull_requests: r.pull_requests.unwrap_or(true),
        })
    }

    fn concourse(&mut self, raw: Option<RawConcourse>) -> Option<Concourse> {
        let Some(c) = raw else {
            self.problem("concourse", "is required (url, team, auth)");
            return None;
        };
        let url = self.required("concourse.url", &c.url).map(|u| u.to_string());
        let url = url.map(|u| self.url("concourse.url", &u));
        let team = self.required("concourse.team", &c.team).map(str::to_string);
        let timeout = self.duration("concourse.timeout", &c.timeout, DEFAULT_TIMEOUT, TIMEOUT_RANGE);
        let n = self.problems.len();
        let (auth, auth_source) = match c.auth {
            // No auth section: a bearer token from the default variable if it is set, else public
            // pipelines only.
            None => match self.secret("concourse.auth", "token", &None, &None, DEFAULT_CONCOURSE_TOKEN_ENV, false) {
                Some((s, src)) => (ConcourseAuth::Bearer(s), Some(src)),
                None => (ConcourseAuth::None, None),
            },
            Some(a) => {
                let token = a.token_file.is_some() || a.token_env.is_some();
                let password = a.username.is_some() || a.password_file.is_some() || a.password_env.is_some();
                if token == password {
                    self.problem(
                        "concourse.auth",
                        "give either token_file/token_env or username + password_file/password_env",
                    );
                    (ConcourseAuth::None, None)
                } else if token {
                    match self.secret(
                        "concourse.auth",
                        "token",
                        &a.token_file,
                        &a.token_env,
                        DEFAULT_CONCOURSE_TOKEN_ENV,
                        true,
                    ) {
                        Some((s, src)) => (ConcourseAuth::Bearer(s), Some(src)),
                        None => (ConcourseAuth::None, None),
                    }
                } else {
                    let user = match &a.username {
                        None => {
                            self.problem("concourse.auth.username", "is required with password_file/password_env");
                            None
                        }
                        Some(_) => self.required("concourse.auth.username", &a.username).map(str::to_string),
                    };
                    let pw = self.secret(
                        "concourse.auth",
                        "password",
                        &a.password_file,
                        &a.password_env,
                        DEFAULT_CONCOURSE_PASSWORD_ENV,
                        true,
                    );
                    match (user, pw) {
                        (Some(username), Some((password, src))) => {
                            (ConcourseAuth::Password { username, password }, Some(src))
                        }
                        _ => (ConcourseAuth::None, None),
                    }
                }
            }
        };
        (self.problems.len() == n).then_some(())?;
        Some(Concourse { url: url?, team: team?, auth, auth_source, timeout })
    }

    fn resources(
        &mut self,
        raw: Option<Ordered<RawResource>>,
        first_pipeline: &str,
        stage_pipelines: &[String],
    ) -> Vec<Resource> {
        let Some(raw) = raw else {
            self.problem("resources", "is required: the tracked git resources and their path filters");
            return vec![];
        };
        if raw.0.is_empty() {
            self.problem("resources", "must name at least one git resource");
        }
        let mut out = vec![];
        let mut step_names: BTreeMap<String, String> = BTreeMap::new();
        for (name, _) in &raw.0 {
            step_names.insert(name.clone(), name.clone());
        }
        for (name, r) in raw.0 {
            let at = format!("resources.{name}");
            let n = self.problems.len();
            if name.trim().is_empty() {
                self.problem("resources", "a resource name must not be empty");
            }
            // Each entry alone, so a problem names its index.
            for (field, list) in [("paths", &r.paths), ("ignore_paths", &r.ignore_paths)] {
                for (i, p) in list.iter().enumerate() {
                    let one = std::slice::from_ref(p);
                    let res =
                        if field == "paths" { GitPathFilter::new(one, &[]) } else { GitPathFilter::new(&[], one) };
                    if let Err(e) = res {
                        self.problem(format!("{at}.{field}[{i}]"), pathspec_message(&e));
                    }
                }
            }
            let kind = match r.kind.as_deref().map(str::trim) {
                None | Some("backend") => Some(SourceKind::Backend),
                Some("frontend") => Some(SourceKind::Frontend),
                Some("dagster") => Some(SourceKind::Dagster),
                Some(k) => {
                    self.problem(
                        format!("{at}.kind"),
                        format!("{k:?} is not one of backend (default), frontend, dagster"),
                    );
                    None
                }
            };
            let pipeline = match &r.pipeline {
                None => first_pipeline.to_string(),
                Some(_) => match self.required(&format!("{at}.pipeline"), &r.pipeline) {
                    Some(p) if !stage_pipelines.iter().any(|s| s == p) => {
                        self.problem(format!("{at}.pipeline"), format!("no stage is in pipeline {p:?}"));
                        p.to_string()
                    }
                    p => p.unwrap_or_default().to_string(),
                },
            };
            for (i, a) in r.aliases.iter().enumerate() {
                let ap = format!("{at}.aliases[{i}]");
                if a.trim().is_empty() {
                    self.problem(ap, "must not be empty");
                } else if let Some(other) = step_names.get(a) {
                    let what = if other == a {
                        "the name of a resource".to_string()
                    } else {
                        format!("already an alias of {other}")
                    };
                    self.problem(ap, format!("{a:?} is {what}"));
                } else {
                    step_names.insert(a.clone(), name.clone());
                }
            }
            if self.problems.len() != n {
                continue;
            }
            let Ok(filter) = GitPathFilter::new(&r.paths, &r.ignore_paths) else { continue };
            out.push(Resource {
                name,
                filter,
                disable_ci_skip: r.disable_ci_skip,
                kind: kind.unwrap_or(SourceKind::Backend),
                pipeline,
                aliases: r.aliases,
            });
        }
        out
    }

    fn stages(&mut self, raw: Option<Vec<RawStage>>, resources: &[String]) -> Vec<StageDef> {
        let Some(raw) = raw else {
            self.problem("stages", "is required: the stages a commit goes through, in order");
            return vec![];
        };
        if raw.is_empty() {
            self.problem("stages", "must not be empty");
            return vec![];
        }
        let names: Vec<Option<String>> = raw.iter().map(|s| nonempty(&s.name).map(str::to_string)).collect();
        let all_resources = resources.to_vec();
        let mut out = vec![];
        // (pipeline, job) → stage index, to find a job in two stages.
        let mut seen_jobs: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut environments: BTreeMap<String, usize> = BTreeMap::new();
        for (si, s) in raw.into_iter().enumerate() {
            let at = format!("stages[{si}]");
            let name = self.required(&format!("{at}.name"), &s.name).map(str::to_string);
            if let Some(n) = &name
                && let Some(first) = names[..si].iter().position(|x| x.as_deref() == Some(n))
            {
                self.problem(format!("{at}.name"), format!("{n:?} is already the name of stages[{first}]"));
            }
            let pipeline = self.required(&format!("{at}.pipeline"), &s.pipeline).unwrap_or_default().to_string();
            let stage_git = match &s.git {
                None => all_resources.clone(),
                Some(g) => self.resource_list(&format!("{at}.git"), g, resources),
            };
            if s.jobs.is_empty() {
                self.problem(format!("{at}.jobs"), "must not be empty");
            }
            let mut jobs = vec![];
            for (ji, j) in s.jobs.into_iter().enumerate() {
                let jat = format!("{at}.jobs[{ji}]");
                let (jname, git) = match j {
                    RawJob::Name(n) => (nonempty(&Some(n)).map(str::to_string), stage_git.clone()),
                    RawJob::Full(f) => {
                        let git = match &f.git {
                            None => stage_git.clone(),
                            Some(g) => self.resource_list(&format!("{jat}.git"), g, resources),
                        };
                        let n = match &f.name {
                            None => {
                                self.problem(format!("{jat}.name"), "is required");
                                continue;
                            }
                            Some(_) => nonempty(&f.name).map(str::to_string),
                        };
                        (n, git)
                    }
                };
                let Some(jname) = jname else {
                    self.problem(jat, "a job name must not be empty");
                    continue;
                };
                if !pipeline.is_empty() {
                    match seen_jobs.get(&(pipeline.clone(), jname.clone())) {
                        Some(&other) if other == si => {
                            self.problem(jat, format!("job {jname:?} is listed twice"));
                            continue;
                        }
                        Some(&other) => {
                            self.problem(
                                jat,
                                format!("job {jname:?} of pipeline {pipeline:?} is already in stages[{other}]"),
                            );
                            continue;
                        }
                        None => {
                            seen_jobs.insert((pipeline.clone(), jname.clone()), si);
                        }
                    }
                }
                jobs.push(JobDef { name: jname, git });
            }
            let after = match &s.after {
                None => {
                    if si == 0 {
                        vec![]
                    } else {
                        vec![si - 1]
                    }
                }
                Some(list) => {
                    let mut v = vec![];
                    for (ai, a) in list.iter().enumerate() {
                        let aat = format!("{at}.after[{ai}]");
                        match names.iter().position(|n| n.as_deref() == Some(a.as_str())) {
                            Some(i) if i < si => {
                                if !v.contains(&i) {
                                    v.push(i);
                                }
                            }
                            Some(_) => self.problem(aat, format!("stage {a:?} is not an earlier stage")),
                            None => self.problem(aat, format!("unknown stage {a:?}")),
                        }
                    }
                    v
                }
            };
            let inputs = match &s.inputs {
                None => None,
                Some(list) if list.is_empty() => {
                    self.problem(
                        format!("{at}.inputs"),
                        "must not be empty (leave it out to let every input carry commits)",
                    );
                    None
                }
                Some(list) => {
                    for (ii, x) in list.iter().enumerate() {
                        if x.trim().is_empty() {
                            self.problem(format!("{at}.inputs[{ii}]"), "must not be empty");
                        }
                    }
                    Some(list.clone())
                }
            };
            let mut bridges = vec![];
            for (bi, b) in s.bridges.into_iter().enumerate() {
                let bat = format!("{at}.bridges[{bi}]");
                let (kind, input) = match &b {
                    RawBridge::MessageContains { input, .. } => ("message_contains", input),
                    RawBridge::Equals { input, .. } => ("equals", input),
                };
                let bat = format!("{bat}.{kind}");
                let field = |v: &mut Self, k: &str, x: &Option<String>| {
                    v.required(&format!("{bat}.{k}"), x).map(str::to_string)
                };
                let built = match &b {
                    RawBridge::MessageContains { input, output, key } => {
                        match (field(self, "input", input), field(self, "output", output), field(self, "key", key)) {
                            (Some(input), Some(output), Some(key)) => {
                                Some(Bridge::MessageContains { input, output, key })
                            }
                            _ => None,
                        }
                    }
                    RawBridge::Equals { input, input_key, output, key } => match (
                        field(self, "input", input),
                        field(self, "input_key", input_key),
                        field(self, "output", output),
                        field(self, "key", key),
                    ) {
                        (Some(input), Some(input_key), Some(output), Some(key)) => {
                            Some(Bridge::Equals { input, input_key, output, key })
                        }
                        _ => None,
                    },
                };
                if let (Some(list), Some(inp)) = (&inputs, nonempty(input))
                    && !list.iter().any(|x| x == inp)
                {
                    self.problem(
                        format!("{bat}.input"),
                        format!("unknown input step {inp:?}: {at}.inputs lists {}", list.join(", ")),
                    );
                }
                bridges.extend(built);
            }
            let fallback_git_input = match s.fallback {
                None => None,
                Some(f) => self.required(&format!("{at}.fallback.git_input"), &f.git_input).map(str::to_string),
            };
            let environment = match &s.environment {
                None => None,
                Some(_) => {
                    let e = self.required(&format!("{at}.environment"), &s.environment).map(str::to_string);
                    if let Some(e) = &e {
                        if let Some(other) = environments.get(e) {
                            self.problem(format!("{at}.environment"), format!("{e:?} is already stages[{other}]'s"));
                        } else {
                            environments.insert(e.clone(), si);
                        }
                    }
                    e
                }
            };
            if s.approval == Some(true) && environment.is_none() {
                self.problem(
                    format!("{at}.approval"),
                    "only an environment stage has a gate; add environment: <name> or leave approval out",
                );
            }
            let stuck_after = self
                .opt_duration(&format!("{at}.stuck_after"), &s.stuck_after, THRESHOLD_RANGE)
                .map(|d| d.as_secs() as i64);
            out.push(StageDef {
                name: name.unwrap_or_default(),
                pipeline,
                jobs,
                after,
                inputs,
                bridges,
                fallback_git_input,
                environment,
                stuck_after,
                carries_passive: s.carries_passive.unwrap_or(true),
                approval: s.approval.unwrap_or(false),
            });
        }
        if environments.is_empty() {
            self.problem(
                "stages",
                "no stage has an environment; mark the deploy stage with environment: <name> (lana: staging)",
            );
        }
        out
    }

    fn resource_list(&mut self, at: &str, list: &[String], resources: &[String]) -> Vec<String> {
        if list.is_empty() {
            self.problem(at, "must name at least one resource (leave it out for all of them)");
        }
        let mut out = vec![];
        for (i, g) in list.iter().enumerate() {
            if resources.contains(g) {
                push_unique(&mut out, g);
            } else {
                self.problem(
                    format!("{at}[{i}]"),
                    format!("unknown resource {g:?} (resources: {})", resources.join(", ")),
                );
            }
        }
        out
    }
}

fn pathspec_message(e: &PathspecError) -> String {
    match e {
        PathspecError::Empty { .. } => "must not be empty".to_string(),
        PathspecError::ShellSyntax { pattern, ch, .. } => {
            format!("{pattern:?} contains {ch:?}, which git-resource's shell command line would split or interpret")
        }
        PathspecError::Invalid { pattern, reason, .. } => {
            // gix's reasons can be a Debug rendering `Message { message: "...", .. }`: keep the text.
            let reason = reason
                .split_once("message: \"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(m, _)| m)
                .unwrap_or(reason);
            format!("{pattern:?} is not a valid pathspec: {reason}")
        }
    }
}
