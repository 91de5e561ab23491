//! Phase 1: the file as read. Serde shapes with `deny_unknown_fields`, secrets taken out of the
//! body, and the decode loop that reports an unknown key and goes on without it.

use super::*;

// ------------------------------------------------------------------ raw file structure

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of settings (repository, concourse, resources, stages, ...)")]
pub(super) struct RawConfig {
    pub(super) repository: Option<RawRepository>,
    pub(super) concourse: Option<RawConcourse>,
    pub(super) listen: Option<String>,
    pub(super) web_config_file: Option<String>,
    pub(super) poll_interval: Option<String>,
    pub(super) state_path: Option<String>,
    pub(super) retention: Option<String>,
    pub(super) keep_in_memory: Option<String>,
    pub(super) lead_time_from: Option<String>,
    pub(super) journey_ends_at: Option<String>,
    pub(super) not_picked_up_after: Option<String>,
    pub(super) resources: Option<Ordered<RawResource>>,
    pub(super) stages: Option<Vec<RawStage>>,
    pub(super) traces: Option<RawTraces>,
    pub(super) server: Option<RawServer>,
    pub(super) dora: Option<RawDora>,
    pub(super) links: Option<RawLinks>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: environment, failure_window, change_fail_rate_slo, hotfix")]
pub(super) struct RawDora {
    pub(super) environment: Option<String>,
    pub(super) failure_window: Option<String>,
    pub(super) change_fail_rate_slo: Option<f64>,
    pub(super) hotfix: Option<RawHotfix>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: message_patterns, pr_labels")]
pub(super) struct RawHotfix {
    pub(super) message_patterns: Option<Vec<String>>,
    pub(super) pr_labels: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: grafana_url, tempo_datasource_uid")]
pub(super) struct RawLinks {
    pub(super) grafana_url: Option<String>,
    pub(super) tempo_datasource_uid: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: header_read_timeout, request_timeout, max_connections")]
pub(super) struct RawServer {
    pub(super) header_read_timeout: Option<String>,
    pub(super) request_timeout: Option<String>,
    pub(super) max_connections: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping: endpoint, protocol, headers_file or headers_env, service_name, resource_attributes, self_instrumentation"
)]
pub(super) struct RawTraces {
    pub(super) endpoint: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) headers_file: Option<String>,
    pub(super) headers_env: Option<String>,
    pub(super) service_name: Option<String>,
    pub(super) resource_attributes: Option<BTreeMap<String, String>>,
    pub(super) self_instrumentation: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping: github, branch, api_url, token_file or token_env, poll_interval, pull_requests, ..."
)]
pub(super) struct RawRepository {
    pub(super) github: Option<String>,
    pub(super) branch: Option<String>,
    pub(super) api_url: Option<String>,
    pub(super) token_file: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) initial_commits: Option<usize>,
    /// The shared secret of a GitHub push webhook (`POST /webhooks/github`).
    pub(super) webhook_secret_file: Option<String>,
    pub(super) webhook_secret_env: Option<String>,
    /// How often the branch is polled (GitHub only; Concourse keeps `poll_interval`).
    pub(super) poll_interval: Option<String>,
    /// Read each commit's pull request (the pre-merge segment); default true.
    pub(super) pull_requests: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: url, team, auth")]
pub(super) struct RawConcourse {
    pub(super) url: Option<String>,
    pub(super) team: Option<String>,
    pub(super) auth: Option<RawAuth>,
    pub(super) timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: token_file/token_env, or username + password_file/password_env")]
pub(super) struct RawAuth {
    pub(super) token_file: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) password_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: paths, ignore_paths, disable_ci_skip, kind, pipeline, aliases")]
pub(super) struct RawResource {
    #[serde(default)]
    pub(super) paths: Vec<String>,
    #[serde(default)]
    pub(super) ignore_paths: Vec<String>,
    #[serde(default)]
    pub(super) disable_ci_skip: bool,
    pub(super) kind: Option<String>,
    pub(super) pipeline: Option<String>,
    #[serde(default)]
    pub(super) aliases: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a stage: a mapping with name, pipeline, jobs, ...")]
pub(super) struct RawStage {
    pub(super) name: Option<String>,
    pub(super) pipeline: Option<String>,
    #[serde(default)]
    pub(super) jobs: Vec<RawJob>,
    pub(super) git: Option<Vec<String>>,
    pub(super) after: Option<Vec<String>>,
    pub(super) inputs: Option<Vec<String>>,
    #[serde(default, with = "serde_norway::with::singleton_map_recursive")]
    pub(super) bridges: Vec<RawBridge>,
    pub(super) fallback: Option<RawFallback>,
    pub(super) environment: Option<String>,
    pub(super) stuck_after: Option<String>,
    pub(super) carries_passive: Option<bool>,
    pub(super) approval: Option<bool>,
}

/// A job: its name, or `{ name, git }`.
#[derive(Debug)]
pub(super) enum RawJob {
    Name(String),
    Full(RawJobFull),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: name, git")]
pub(super) struct RawJobFull {
    pub(super) name: Option<String>,
    pub(super) git: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for RawJob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawJob;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a job name or { name, git }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawJob, E> {
                Ok(RawJob::Name(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawJob, A::Error> {
                RawJobFull::deserialize(de::value::MapAccessDeserializer::new(m)).map(RawJob::Full)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawBridge {
    MessageContains { input: Option<String>, output: Option<String>, key: Option<String> },
    Equals { input: Option<String>, input_key: Option<String>, output: Option<String>, key: Option<String> },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: git_input")]
pub(super) struct RawFallback {
    pub(super) git_input: Option<String>,
}

/// A YAML mapping whose order matters.
#[derive(Debug)]
pub(super) struct Ordered<T>(pub(super) Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered<T>, A::Error> {
                let mut v: Vec<(String, T)> = vec![];
                while let Some(k) = m.next_key::<String>()? {
                    if v.iter().any(|(x, _)| *x == k) {
                        return Err(de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    let val = m.next_value()?;
                    v.push((k, val));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

// ------------------------------------------------------------------ phase 1: decode

/// Keys that would put a secret into the file body, and what to use instead.
pub(super) fn secret_key_hint(parent: &str, key: &str) -> Option<String> {
    let hint = match (parent, key) {
        ("repository", "token") => format!("use token_file or token_env (default {DEFAULT_GITHUB_TOKEN_ENV})"),
        ("concourse" | "concourse.auth", "token") => {
            format!("use concourse.auth.token_file or concourse.auth.token_env (e.g. {DEFAULT_CONCOURSE_TOKEN_ENV})")
        }
        ("concourse" | "concourse.auth", "password") => format!(
            "use concourse.auth.password_file or concourse.auth.password_env (default {DEFAULT_CONCOURSE_PASSWORD_ENV})"
        ),
        // Resource names are the user's; anything else named like a secret is one.
        ("resources", _) => return None,
        (_, "token" | "password" | "secret" | "api_key") => {
            "see repository.token_file/token_env and concourse.auth for where credentials come from".to_string()
        }
        _ => return None,
    };
    Some(format!("secrets are not read from the config file; {hint}"))
}

/// Take keys that would hold a secret out of the document, reporting each (never its value).
pub(super) fn strip_secrets(v: &mut serde_norway::Value, path: &str, problems: &mut Vec<Problem>) {
    use serde_norway::Value;
    match v {
        Value::Mapping(m) => {
            let keys: Vec<Value> = m.keys().cloned().collect();
            for k in keys {
                let Some(name) = k.as_str().map(str::to_string) else { continue };
                let child = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                if let Some(hint) = secret_key_hint(path, &name) {
                    m.remove(&k);
                    problems.push(Problem::new(child, hint));
                } else if let Some(val) = m.get_mut(&k) {
                    strip_secrets(val, &child, problems);
                }
            }
        }
        Value::Sequence(s) => {
            for (i, x) in s.iter_mut().enumerate() {
                strip_secrets(x, &format!("{path}[{i}]"), problems);
            }
        }
        Value::Tagged(t) => strip_secrets(&mut t.value, path, problems),
        _ => {}
    }
}

/// serde_norway's `path: message at line L column C` as a problem.
pub(super) fn yaml_problem(e: &serde_norway::Error, with_location: bool) -> Problem {
    let mut text = e.to_string();
    // Decoding errors end with their location; syntax errors name theirs inside the message.
    let loc = e.location().filter(|l| text.ends_with(&format!(" at line {} column {}", l.line(), l.column())));
    if let Some(l) = &loc {
        text.truncate(text.len() - format!(" at line {} column {}", l.line(), l.column()).len());
    }
    let is_path = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || "_-.[]?/*".contains(c));
    let (path, msg) = match text.split_once(": ") {
        Some((p, m)) if is_path(p) => (p.to_string(), m.to_string()),
        _ => (String::new(), text.clone()),
    };
    let msg = match (&loc, with_location) {
        (Some(l), true) => format!("{msg} (line {}, column {})", l.line(), l.column()),
        _ => msg,
    };
    Problem::new(path, msg)
}

/// Phase 1. Err: the file could not be decoded (syntax, wrong type); Ok carries problems found
/// on the way (secrets in the file body, unknown keys), which the validation of the rest adds
/// to, so one run reports every problem.
pub(super) fn decode(text: &str) -> Result<(RawConfig, Vec<Problem>), Vec<Problem>> {
    let text = yaml_prelude(text).map_err(|e| vec![Problem::new("", e)])?;
    let mut value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| vec![yaml_problem(&e, true)])?;
    if value.is_null() {
        return Ok((RawConfig::default(), vec![]));
    }
    let mut problems = vec![];
    strip_secrets(&mut value, "", &mut problems);
    // While the document is the file as written, errors carry its line numbers.
    let mut as_written = problems.is_empty();
    // An unknown key is reported and taken out, and decoding goes on, so a typo in one section
    // does not hide the problems of the others. Any other decoding error ends it.
    for _ in 0..=MAX_UNKNOWN_KEYS {
        let decoded = if as_written {
            serde_norway::from_str::<RawConfig>(text).map_err(|e| yaml_problem(&e, true))
        } else {
            serde_norway::to_string(&value)
                .map_err(|e| Problem::new("", e.to_string()))
                .and_then(|t| serde_norway::from_str::<RawConfig>(&t).map_err(|e| yaml_problem(&e, false)))
        };
        match decoded {
            Ok(raw) => return Ok((raw, problems)),
            Err(p) => {
                let removed = unknown_field(&p.message).is_some_and(|key| remove_key(&mut value, &p.path, key));
                problems.push(p);
                if !removed {
                    return Err(problems);
                }
                as_written = false;
            }
        }
    }
    problems.push(Problem::new("", format!("more than {MAX_UNKNOWN_KEYS} unknown keys; stopped here")));
    Err(problems)
}

/// Unknown keys reported in one run before giving up on the file.
pub(super) const MAX_UNKNOWN_KEYS: usize = 50;

/// The key of serde's "unknown field `x`, expected …" message.
pub(super) fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split_once('`').map(|(k, _)| k)
}

/// Remove `key` from the mapping at `path` (`a.b[2].c`, as serde paths are written; empty for
/// the top level). False when there is no such mapping or key.
pub(super) fn remove_key(v: &mut serde_norway::Value, path: &str, key: &str) -> bool {
    use serde_norway::Value;
    let mut at = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            let Some(next) = at.as_mapping_mut().and_then(|m| m.get_mut(name)) else { return false };
            at = next;
        }
        for ix in indices.split(']').filter(|x| !x.is_empty()) {
            let Some(i) = ix.strip_prefix('[').and_then(|i| i.parse::<usize>().ok()) else { return false };
            let Some(next) = at.as_sequence_mut().and_then(|s| s.get_mut(i)) else { return false };
            at = next;
        }
        if let Value::Tagged(t) = at {
            at = &mut t.value;
        }
    }
    at.as_mapping_mut().is_some_and(|m| m.remove(key).is_some())
}
