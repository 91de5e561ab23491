//! The Prometheus surface of commit journeys, rendered at scrape time from the latest snapshot.
//!
//! Every value is a function of the persisted facts (and the sources' own counters), so a
//! restart neither resets nor double counts a journey counter: the same facts give the same
//! totals. A fresh registry is built per scrape (the Prometheus "const metrics" practice), so
//! label sets that can exist are all present from the first scrape, and nothing stale lingers.
//! No scrape ever calls a CI API.

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::core::classify::ChangeType;
use crate::core::journey::{BuildStatus, CoreConfig, Derived, Method, Outcome, StageBuild, StageState};
use crate::sources::ErrorKind;
use crate::sources::telemetry::SourceSnapshot;

type Labels = Vec<(String, String)>;
type Hist = Family<Labels, HistogramWithExemplars<Labels>, fn() -> HistogramWithExemplars<Labels>>;

/// CI-scale buckets: 30 s … 4 h.
pub const STAGE_BUCKETS: [f64; 14] =
    [30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1500.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 14400.0];
/// Lead time: 5 min … 3 days.
pub const LEAD_BUCKETS: [f64; 14] =
    [300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0, 259200.0];

fn stage_hist() -> HistogramWithExemplars<Labels> {
    HistogramWithExemplars::new(STAGE_BUCKETS.into_iter())
}
fn lead_hist() -> HistogramWithExemplars<Labels> {
    HistogramWithExemplars::new(LEAD_BUCKETS.into_iter())
}

/// Everything a scrape renders.
pub struct MetricsInput<'a> {
    pub derived: &'a Derived,
    pub stage_builds: &'a [StageBuild],
    pub core: &'a CoreConfig,
    pub sources: &'a [(&'static str, SourceSnapshot)],
    /// Wall-clock Unix seconds of the scrape.
    pub now: i64,
    pub poll_interval_secs: u64,
    pub version: &'a str,
    /// What journeys and builds pruned by retention contributed (persisted counters).
    pub baseline: &'a Baseline,
    /// Span export counters; `None` when traces are off (the families are then absent).
    pub spans: Option<crate::sinks::traces::SpanExportCounts>,
    /// Store writes that failed since start.
    pub store_errors: u64,
    /// Requests basic auth refused; `None` without basic auth (the family is then absent).
    pub auth_rejections: Option<crate::webconfig::AuthRejections>,
}

/// Counter values and histogram buckets that pruned facts contributed, keyed by metric name
/// and a canonical `k=v,k=v` label string. Stored as rows of the store's counters table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    pub values: BTreeMap<(String, String), f64>,
}

impl Baseline {
    pub fn from_rows(rows: impl IntoIterator<Item = (String, String, f64)>) -> Baseline {
        let mut b = Baseline::default();
        b.add(rows);
        b
    }
    pub fn add(&mut self, rows: impl IntoIterator<Item = (String, String, f64)>) {
        for (n, l, v) in rows {
            *self.values.entry((n, l)).or_insert(0.0) += v;
        }
    }
}

/// One histogram observation and its exemplar.
type Observation = (f64, Option<Labels>);

/// What a set of journeys and stage builds adds to the journey counters and histograms.
#[derive(Debug, Default)]
struct Contrib {
    counters: BTreeMap<(&'static str, Labels), u64>,
    /// (histogram, labels) → observations with their exemplar.
    hists: BTreeMap<(&'static str, Labels), Vec<Observation>>,
}

/// One journey-metric event and when it happened (Unix seconds): a counter increment
/// (`value: None`) or a histogram observation. Scrapes add them up; `backfill` steps the
/// cumulative series at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: i64,
    /// The catalogue name without prefix and suffix: `lead_time`, `commits`, ...
    pub metric: &'static str,
    pub labels: Labels,
    pub value: Option<f64>,
    pub exemplar: Option<Labels>,
}

/// Histograms among the journey metrics, with their buckets.
pub const HISTOGRAMS: [(&str, &[f64]); 3] =
    [("stage_duration", &STAGE_BUCKETS), ("stage_wait", &STAGE_BUCKETS), ("lead_time", &LEAD_BUCKETS)];
/// Counters among the journey metrics.
pub const COUNTERS: [&str; 7] =
    ["commits", "commit_outcomes", "stage_attempts", "stage_failures", "deployments", "attributions", "lineage_gaps"];

/// Every counter increment and histogram observation the journeys and stage builds make, with
/// the time each happened: a build's at its end, a commit's at its commit time, a wait at the
/// start of the build that ended it, an outcome and a lead time at the deployment's end.
pub fn events<'a>(
    journeys: impl Iterator<Item = &'a crate::core::journey::Journey>,
    builds: &[StageBuild],
    derived: &Derived,
    core: &CoreConfig,
) -> Vec<Event> {
    let mut ev = vec![];
    let mut count = |at: i64, metric: &'static str, labels: Labels| {
        ev.push(Event { at, metric, labels, value: None, exemplar: None })
    };
    let stages: Vec<&str> = core.stages.iter().map(|s| s.name.as_str()).collect();
    let mut obs = vec![];
    for b in builds {
        let st = stages[b.stage];
        obs.push(Event {
            at: b.end,
            metric: "stage_duration",
            labels: l(&[("stage", st), ("result", result_label(b.status))]),
            value: Some((b.end - b.start).max(0) as f64),
            exemplar: b.head.as_deref().map(exemplar),
        });
        count(b.end, "stage_attempts", l(&[("stage", st)]));
        if matches!(b.status, BuildStatus::Failed | BuildStatus::Errored) {
            count(b.end, "stage_failures", l(&[("stage", st)]));
        }
        if let (Some(env), BuildStatus::Succeeded) = (&core.stages[b.stage].environment, b.status) {
            count(b.end, "deployments", l(&[("environment", env)]));
        }
        if let Some(m) = derived.build_methods.get(&b.build_id) {
            count(b.end, "attributions", l(&[("method", m.as_str())]));
        }
        if derived.gap_builds.contains(&b.build_id) {
            count(b.end, "lineage_gaps", l(&[("stage", st)]));
        }
    }
    for j in journeys {
        count(j.commit_time, "commits", l(&[("change_type", j.classification.change_type.as_str())]));
        if j.vanished {
            continue;
        }
        // Before the build history read: it never ends, and is counted as what it is.
        if j.outcome == Outcome::Incomplete {
            count(j.commit_time, "commit_outcomes", l(&[("outcome", j.outcome.as_str())]));
        }
        for (i, s) in j.stages.iter().enumerate() {
            if let Some(w) = s.wait() {
                obs.push(Event {
                    at: s.start.unwrap_or(j.commit_time),
                    metric: "stage_wait",
                    labels: l(&[("stage", stages[i])]),
                    value: Some(w.max(0) as f64),
                    exemplar: Some(exemplar(&j.sha)),
                });
            }
        }
        if j.ended {
            let ended_at = j.deployed_at.values().min().copied().unwrap_or(j.commit_time);
            count(ended_at, "commit_outcomes", l(&[("outcome", j.outcome.as_str())]));
            for (env, at) in &j.deployed_at {
                if let Some(lt) = j.lead_time(env) {
                    obs.push(Event {
                        at: *at,
                        metric: "lead_time",
                        labels: l(&[("environment", env), ("change_type", j.classification.change_type.as_str())]),
                        value: Some(lt.max(0) as f64),
                        exemplar: Some(exemplar(&j.sha)),
                    });
                }
            }
        }
    }
    ev.extend(obs);
    ev
}

fn contributions<'a>(
    journeys: impl Iterator<Item = &'a crate::core::journey::Journey>,
    builds: &[StageBuild],
    derived: &Derived,
    core: &CoreConfig,
) -> Contrib {
    let mut c = Contrib::default();
    for e in events(journeys, builds, derived, core) {
        match e.value {
            None => *c.counters.entry((e.metric, e.labels)).or_default() += 1,
            Some(v) => c.hists.entry((e.metric, e.labels)).or_default().push((v, e.exemplar)),
        }
    }
    c
}

pub fn buckets_of(hist: &str) -> &'static [f64] {
    if hist == "lead_time" { &LEAD_BUCKETS } else { &STAGE_BUCKETS }
}

fn labels_string(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn parse_labels(s: &str) -> Labels {
    s.split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The persisted rows (name, labels, value) that pruning these journeys and builds must fold
/// into the baseline: counter increments, and per histogram bucket its count and sum (bucket
/// `i` is the i-th bound, the last one +Inf), so replaying the bucket mean keeps sums exact.
pub fn fold(
    journeys: &[&crate::core::journey::Journey],
    builds: &[StageBuild],
    derived: &Derived,
    core: &CoreConfig,
) -> Vec<(String, String, f64)> {
    let c = contributions(journeys.iter().copied(), builds, derived, core);
    let mut rows = vec![];
    for ((name, labels), n) in c.counters {
        rows.push((format!("counter:{name}"), labels_string(&labels), n as f64));
    }
    for ((name, labels), obs) in c.hists {
        let bounds = buckets_of(name);
        let mut per: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
        for (v, _) in obs {
            let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
            let e = per.entry(i).or_default();
            e.0 += 1.0;
            e.1 += v;
        }
        for (i, (n, sum)) in per {
            rows.push((format!("hist:{name}:{i}:count"), labels_string(&labels), n));
            rows.push((format!("hist:{name}:{i}:sum"), labels_string(&labels), sum));
        }
    }
    rows
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn exemplar(sha: &str) -> Labels {
    l(&[("trace_id", sha.get(..32).unwrap_or(sha)), ("sha", sha.get(..7).unwrap_or(sha))])
}

fn result_label(s: BuildStatus) -> &'static str {
    match s {
        BuildStatus::Succeeded => "succeeded",
        BuildStatus::Failed => "failed",
        BuildStatus::Errored => "errored",
        BuildStatus::Aborted => "aborted",
        BuildStatus::Pending | BuildStatus::Started => "running",
    }
}

const RESULTS: [&str; 4] = ["succeeded", "failed", "errored", "aborted"];
const IN_FLIGHT_STATES: [StageState; 4] =
    [StageState::Waiting, StageState::Pending, StageState::Riding, StageState::Running];
/// Concourse's running statuses, for the running builds of a stage.
const RUNNING_STATUSES: [BuildStatus; 2] = [BuildStatus::Pending, BuildStatus::Started];

/// Render OpenMetrics text (with exemplars).
pub fn render_openmetrics(m: &MetricsInput<'_>) -> String {
    let reg = build(m);
    let mut out = String::new();
    // Writing to a String cannot fail; an encoding error would be a bug in a metric above.
    if let Err(e) = encode(&mut out, &reg) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}

/// Render the classic Prometheus text format (0.0.4): the OpenMetrics rendering without
/// exemplars, `# UNIT` and `# EOF`, with counter `# TYPE`/`# HELP` lines naming the `_total`
/// series. prometheus-client only writes OpenMetrics, hence this small conversion.
pub fn render_text(m: &MetricsInput<'_>) -> String {
    to_classic(&render_openmetrics(m))
}

pub fn to_classic(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut counters: Vec<String> = vec![];
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.splitn(2, ' ');
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            if kind == "counter" {
                counters.push(name.to_string());
            }
        }
    }
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ").or_else(|| line.strip_prefix("# HELP ")) {
            let name = rest.split(' ').next().unwrap_or("");
            if counters.iter().any(|c| c == name) {
                let prefix = &line[..7];
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Sample lines: drop an exemplar (` # {...} value [ts]`).
        match line.find(" # {") {
            Some(i) if !line.starts_with('#') => out.push_str(&line[..i]),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn build(m: &MetricsInput<'_>) -> Registry {
    let every = m.poll_interval_secs;
    // prometheus-client ends every HELP text with a period itself.
    let note = format!(". Refreshed by polling the CI APIs every {every}s, not at scrape time");
    let mut reg = Registry::default();
    let stages: Vec<&str> = m.core.stages.iter().map(|s| s.name.as_str()).collect();
    let envs: Vec<String> = m.core.environments();

    // --- histograms
    let stage_duration: Hist = Family::new_with_constructor(stage_hist);
    let stage_wait: Hist = Family::new_with_constructor(stage_hist);
    let lead_time: Hist = Family::new_with_constructor(lead_hist);
    for st in &stages {
        for r in RESULTS {
            let _ = stage_duration.get_or_create(&l(&[("stage", st), ("result", r)]));
        }
        let _ = stage_wait.get_or_create(&l(&[("stage", st)]));
    }
    for e in &envs {
        for ct in ChangeType::ALL {
            let _ = lead_time.get_or_create(&l(&[("environment", e), ("change_type", ct.as_str())]));
        }
    }
    // --- counters and gauges
    let commits: Family<Labels, Counter> = Family::default();
    let outcomes: Family<Labels, Counter> = Family::default();
    let attempts: Family<Labels, Counter> = Family::default();
    let failures: Family<Labels, Counter> = Family::default();
    let deployments: Family<Labels, Counter> = Family::default();
    let last_deploy: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
    let in_flight: Family<Labels, Gauge> = Family::default();
    let oldest: Family<Labels, Gauge> = Family::default();
    let stuck: Family<Labels, Gauge> = Family::default();
    let running_builds: Family<Labels, Gauge> = Family::default();
    let oldest_running_build: Family<Labels, Gauge> = Family::default();
    let threshold: Family<Labels, Gauge> = Family::default();
    let not_picked_up: Gauge = Gauge::default();
    let behind: Family<Labels, Gauge> = Family::default();
    let oldest_undeployed: Family<Labels, Gauge> = Family::default();
    let attributions: Family<Labels, Counter> = Family::default();
    let gaps: Family<Labels, Counter> = Family::default();
    for ct in ChangeType::ALL {
        let _ = commits.get_or_create(&l(&[("change_type", ct.as_str())]));
    }
    for o in Outcome::ALL.iter().filter(|o| **o != Outcome::InFlight) {
        let _ = outcomes.get_or_create(&l(&[("outcome", o.as_str())]));
    }
    for (i, st) in stages.iter().enumerate() {
        let _ = attempts.get_or_create(&l(&[("stage", st)]));
        let _ = failures.get_or_create(&l(&[("stage", st)]));
        let _ = gaps.get_or_create(&l(&[("stage", st)]));
        for s in IN_FLIGHT_STATES {
            let _ = in_flight.get_or_create(&l(&[("stage", st), ("state", s.as_str())]));
            let _ = oldest.get_or_create(&l(&[("stage", st), ("state", s.as_str())]));
        }
        let _ = stuck.get_or_create(&l(&[("stage", st)]));
        let _ = oldest_running_build.get_or_create(&l(&[("stage", st)]));
        for b in RUNNING_STATUSES {
            let _ = running_builds.get_or_create(&l(&[("stage", st), ("status", b.as_str())]));
        }
        if let Some(t) = m.core.stages[i].stuck_after {
            threshold.get_or_create(&l(&[("stage", st)])).set(t);
        }
    }
    for e in &envs {
        let _ = deployments.get_or_create(&l(&[("environment", e)]));
        let _ = last_deploy.get_or_create(&l(&[("environment", e)]));
        let _ = behind.get_or_create(&l(&[("environment", e)]));
        let _ = oldest_undeployed.get_or_create(&l(&[("environment", e)]));
    }
    for me in Method::ALL {
        let _ = attributions.get_or_create(&l(&[("method", me.as_str())]));
    }

    // Journey counters and histograms: what the live facts contribute, plus the baseline that
    // pruned facts left behind.
    let contrib = contributions(m.derived.journeys.iter(), m.stage_builds, m.derived, m.core);
    let counter_family = |name: &str| match name {
        "commits" => Some(&commits),
        "commit_outcomes" => Some(&outcomes),
        "stage_attempts" => Some(&attempts),
        "stage_failures" => Some(&failures),
        "deployments" => Some(&deployments),
        "attributions" => Some(&attributions),
        "lineage_gaps" => Some(&gaps),
        _ => None,
    };
    let hist_family = |name: &str| match name {
        "stage_duration" => Some(&stage_duration),
        "stage_wait" => Some(&stage_wait),
        "lead_time" => Some(&lead_time),
        _ => None,
    };
    for ((name, labels), n) in &contrib.counters {
        if let Some(f) = counter_family(name) {
            f.get_or_create(labels).inc_by(*n);
        }
    }
    for ((name, labels), obs) in &contrib.hists {
        if let Some(f) = hist_family(name) {
            let h = f.get_or_create(labels);
            for (v, ex) in obs {
                h.observe(*v, ex.clone(), None);
            }
        }
    }
    let mut hist_rows: BTreeMap<(String, String, usize), (f64, f64)> = BTreeMap::new();
    for ((name, labels), v) in &m.baseline.values {
        if let Some(c) = name.strip_prefix("counter:") {
            if let Some(f) = counter_family(c) {
                f.get_or_create(&parse_labels(labels)).inc_by(v.round() as u64);
            }
        } else if let Some(rest) = name.strip_prefix("hist:") {
            let mut it = rest.split(':');
            if let (Some(h), Some(i), Some(kind)) = (it.next(), it.next().and_then(|i| i.parse().ok()), it.next()) {
                let e = hist_rows.entry((h.to_string(), labels.clone(), i)).or_default();
                if kind == "count" { e.0 += v } else { e.1 += v }
            }
        }
    }
    for ((h, labels, _), (n, sum)) in hist_rows {
        if let Some(f) = hist_family(&h) {
            let hist = f.get_or_create(&parse_labels(&labels));
            // The bucket's mean lies within the bucket, so replaying it n times restores the
            // bucket count and the sum exactly.
            let n = n.round() as u64;
            if n > 0 {
                for _ in 0..n {
                    hist.observe(sum / n as f64, None, None);
                }
            }
        }
    }
    // Gauge: the last deployment among live builds.
    for b in m.stage_builds {
        if let (Some(env), BuildStatus::Succeeded) = (&m.core.stages[b.stage].environment, b.status) {
            let g = last_deploy.get_or_create(&l(&[("environment", env)]));
            if (b.end as f64) > g.get() {
                g.set(b.end as f64);
            }
        }
    }

    // Per commit.
    let mut oldest_age: BTreeMap<(usize, StageState), i64> = BTreeMap::new();
    for j in &m.derived.journeys {
        // An incomplete journey is not known to be anywhere, nor to be behind.
        if j.vanished || j.outcome == Outcome::Incomplete {
            continue;
        }
        if !j.ended {
            // A commit in flight sits at its first stage that is neither done nor not applicable.
            if let Some((i, s)) = j.stages.iter().enumerate().find(|(_, s)| s.state.in_flight()) {
                in_flight.get_or_create(&l(&[("stage", stages[i]), ("state", s.state.as_str())])).inc();
                let since = match s.state {
                    StageState::Running => s.start.unwrap_or(j.commit_time),
                    StageState::Pending | StageState::Riding => s.ready_at.unwrap_or(j.commit_time),
                    _ => j.commit_time,
                };
                let age = (m.now - since).max(0);
                let e = oldest_age.entry((i, s.state)).or_insert(0);
                *e = (*e).max(age);
            }
            if j.not_picked_up {
                not_picked_up.inc();
            }
        }
        for env in &envs {
            if !j.deployed_at.contains_key(env) {
                behind.get_or_create(&l(&[("environment", env)])).inc();
                let g = oldest_undeployed.get_or_create(&l(&[("environment", env)]));
                let age = (m.now - j.commit_time).max(0);
                if age > g.get() {
                    g.set(age);
                }
            }
        }
    }
    for ((i, s), age) in oldest_age {
        oldest.get_or_create(&l(&[("stage", stages[i]), ("state", s.as_str())])).set(age);
    }
    // Per stage, from its running builds whatever they carry: "testflight runs over 20
    // minutes" is a fact about the CI, not about how attribution came out.
    for (i, sn) in m.derived.stages.iter().enumerate().filter(|(i, _)| *i < stages.len()) {
        for r in &sn.running {
            running_builds.get_or_create(&l(&[("stage", stages[i]), ("status", r.status.as_str())])).inc();
        }
        // Measured at the scrape, like the per-commit ages.
        oldest_running_build.get_or_create(&l(&[("stage", stages[i])])).set(sn.oldest_age(m.now));
        if m.core.stages[i].stuck_after.is_some_and(|t| sn.oldest_age(m.now) > t) {
            stuck.get_or_create(&l(&[("stage", stages[i])])).set(1);
        }
    }
    // --- sources
    let up: Family<Labels, Gauge> = Family::default();
    let last_success: Family<Labels, Gauge> = Family::default();
    let requests: Family<Labels, Counter> = Family::default();
    let errors: Family<Labels, Counter> = Family::default();
    let poll_duration: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
    let rate_remaining: Gauge = Gauge::default();
    for (src, s) in m.sources {
        up.get_or_create(&l(&[("source", src)])).set(i64::from(s.up));
        last_success.get_or_create(&l(&[("source", src)])).set(s.last_success.unwrap_or(0));
        requests.get_or_create(&l(&[("source", src), ("outcome", "ok")])).inc_by(s.requests_ok);
        requests.get_or_create(&l(&[("source", src), ("outcome", "not_modified")])).inc_by(s.requests_not_modified);
        requests.get_or_create(&l(&[("source", src), ("outcome", "error")])).inc_by(s.requests_error);
        for k in ErrorKind::ALL {
            errors.get_or_create(&l(&[("source", src), ("kind", k.as_str())])).inc_by(s.errors_of(k));
        }
        poll_duration
            .get_or_create(&l(&[("source", src)]))
            .set(s.last_poll_duration.map(|d| d.as_secs_f64()).unwrap_or(0.0));
        if *src == "github"
            && let Some(r) = s.rate_limit_remaining
        {
            rate_remaining.set(r as i64);
        }
    }
    let build_info: Family<Labels, Gauge> = Family::default();
    build_info.get_or_create(&l(&[("version", m.version)])).set(1);

    let mut dj = reg.sub_registry_with_prefix("deploy_journey");
    let r = &mut dj;
    r.register_with_unit(
        "stage_duration",
        format!("Duration of each finished build of a stage's jobs, start to end{note}"),
        Unit::Seconds,
        stage_duration,
    );
    r.register_with_unit("stage_wait", format!("Time from a commit being ready for a stage (upstream done; commit time for the first) to the start of the build that carried it{note}"), Unit::Seconds, stage_wait);
    r.register_with_unit("lead_time", format!("Commit time to the end of the deployment that delivered it, one observation per commit (batches credited){note}"), Unit::Seconds, lead_time);
    r.register("commits", format!("Commits seen on the tracked branch{note}"), commits);
    r.register("commit_outcomes", format!("Commit journeys ended, by outcome{note}"), outcomes);
    r.register("stage_attempts", format!("Finished builds of each stage's jobs{note}"), attempts);
    r.register("stage_failures", format!("Failed or errored builds of each stage's jobs{note}"), failures);
    r.register("deployments", format!("Successful deployments to each environment{note}"), deployments);
    r.register_with_unit(
        "last_deployment_timestamp",
        format!("End of the last successful deployment, Unix time{note}"),
        Unit::Seconds,
        last_deploy,
    );
    r.register(
        "stage_in_flight",
        format!("Commits in flight at their current stage, by state (riding: a passive commit waiting for a triggering one){note}"),
        in_flight,
    );
    r.register_with_unit(
        "stage_oldest_in_flight",
        format!("Age of the oldest commit at each stage and state (0 when none){note}"),
        Unit::Seconds,
        oldest,
    );
    r.register(
        "stage_running_builds",
        format!("Running builds of each stage's jobs by Concourse status, whatever commits they carry{note}"),
        running_builds,
    );
    r.register_with_unit(
        "stage_oldest_running_build",
        format!("Time since the oldest started build of each stage's jobs started, whatever it carries (0 when none; a pending build has no start){note}"),
        Unit::Seconds,
        oldest_running_build,
    );
    r.register(
        "stage_stuck",
        format!("1 while the oldest started build of a stage has run longer than its stuck_after{note}"),
        stuck,
    );
    r.register_with_unit("stage_stuck_threshold", "The configured stuck_after of each stage", Unit::Seconds, threshold);
    r.register(
        "commits_not_picked_up",
        format!("Commits that should have triggered a pipeline and have no build after not_picked_up_after{note}"),
        not_picked_up,
    );
    r.register("commits_behind", format!("Commits on the branch not yet in the environment{note}"), behind);
    r.register_with_unit(
        "oldest_undeployed_commit_age",
        format!("Age of the oldest commit not yet in the environment{note}"),
        Unit::Seconds,
        oldest_undeployed,
    );
    r.register(
        "attributions",
        format!("Stage builds tied to commits, by method (exact, bridge, inferred){note}"),
        attributions,
    );
    r.register("lineage_gaps", format!("Finished stage builds no commit could be tied to{note}"), gaps);
    r.register("source_up", "1 if the last poll of the source succeeded", up);
    r.register_with_unit(
        "source_last_success_timestamp",
        "Unix time of the last successful poll of the source",
        Unit::Seconds,
        last_success,
    );
    r.register("source_requests", "HTTP requests made to the source, by outcome", requests);
    r.register("source_errors", "Failed requests to the source, by error kind", errors);
    r.register_with_unit(
        "source_poll_duration",
        "Duration of the last poll cycle of the source",
        Unit::Seconds,
        poll_duration,
    );
    r.register(
        "github_rate_limit_remaining",
        "GitHub API requests left in the current rate-limit window",
        rate_remaining,
    );
    if let Some(s) = m.spans {
        let exported = Counter::<u64>::default();
        exported.inc_by(s.exported);
        let errors = Counter::<u64>::default();
        errors.inc_by(s.errors);
        let queued = Gauge::<i64>::default();
        queued.set(i64::try_from(s.queued).unwrap_or(i64::MAX));
        r.register("spans_exported", "Journey spans the OTLP collector acknowledged since start", exported);
        r.register("span_export_errors", "Failed OTLP export requests since start (each is retried)", errors);
        r.register("span_export_queue", "Journey spans waiting for the collector's acknowledgement", queued);
    }
    let store_errors = Counter::<u64>::default();
    store_errors.inc_by(m.store_errors);
    r.register("store_errors", "Writes to the state file that failed since start (each is retried)", store_errors);
    if let Some(a) = m.auth_rejections {
        let rejected: Family<Labels, Counter> = Family::default();
        rejected.get_or_create(&l(&[("reason", "unauthorized")])).inc_by(a.unauthorized);
        rejected.get_or_create(&l(&[("reason", "rate_limited")])).inc_by(a.rate_limited);
        r.register(
            "basic_auth_rejected",
            "Requests refused by basic auth since start: wrong or no credentials (401), too many failures from the client (429)",
            rejected,
        );
    }
    r.register("build_info", "Build information; always 1", build_info);
    reg
}
