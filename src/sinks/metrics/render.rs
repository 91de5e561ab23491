//! One scrape: compute every series' value into a [`Sheet`], then register a family per
//! catalogue row and encode.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::{CounterWithExemplar, HistogramWithExemplars};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::core::journey::{BuildStatus, Outcome, StageState};

use super::catalogue::{CATALOGUE, Def, Kind, Metric, PREFIX};
use super::events::events;
use super::tally::{BucketTotal, Totals, bucket_of, spread};
use super::{Labels, MetricsInput};

/// Every series' value for one scrape, by catalogue metric and label set.
#[derive(Default)]
struct Sheet {
    counters: BTreeMap<(Metric, Labels), u64>,
    /// The newest exemplar of the counter series that have one.
    counter_exemplars: BTreeMap<(Metric, Labels), Labels>,
    /// Integer and float gauges alike (integer gauges hold whole numbers well below 2^53).
    gauges: BTreeMap<(Metric, Labels), f64>,
    /// Per histogram series, its buckets (the last is +Inf).
    hists: BTreeMap<(Metric, Labels), Vec<BucketTotal>>,
}

impl Sheet {
    fn add(&mut self, m: Metric, values: &[&str], n: u64) {
        *self.counters.entry((m, m.labels(values))).or_default() += n;
    }
    fn gauge(&mut self, m: Metric, values: &[&str]) -> &mut f64 {
        self.gauges.entry((m, m.labels(values))).or_default()
    }
    fn set(&mut self, m: Metric, values: &[&str], v: f64) {
        *self.gauge(m, values) = v;
    }
    fn max(&mut self, m: Metric, values: &[&str], v: f64) {
        let g = self.gauge(m, values);
        *g = g.max(v);
    }
    fn series(&mut self, m: Metric, labels: Labels) -> &mut Vec<BucketTotal> {
        self.hists.entry((m, labels)).or_insert_with(|| BucketTotal::series_of(m))
    }
    /// A label set present at zero.
    fn touch(&mut self, def: &Def, labels: Labels) {
        let key = (def.metric, labels);
        match def.kind {
            Kind::Counter => drop(self.counters.entry(key).or_default()),
            Kind::Gauge | Kind::FloatGauge => drop(self.gauges.entry(key).or_default()),
            Kind::Histogram => drop(self.series(key.0, key.1)),
        }
    }
}

fn compute(m: &MetricsInput<'_>) -> Sheet {
    let mut s = Sheet::default();
    for def in CATALOGUE {
        for labels in def.preset_label_sets(m.core) {
            s.touch(def, labels);
        }
    }
    journey_counters(m, &mut s);
    in_flight(m, &mut s);
    sources(m, &mut s);
    s
}

/// Journey counters and histograms: what the live facts contribute, plus the baseline that
/// pruned facts left behind.
fn journey_counters(m: &MetricsInput<'_>, s: &mut Sheet) {
    let fresh;
    let totals = match m.totals {
        Some(t) => t,
        None => {
            fresh = Totals::of(events(m.derived.journeys.iter().map(|j| &**j), m.stage_builds, m.derived, m.core));
            &fresh
        }
    };
    for (key, c) in &totals.counters {
        *s.counters.entry(key.clone()).or_default() += c.n;
        if let Some((_, ex)) = &c.exemplar {
            s.counter_exemplars.insert(key.clone(), ex.clone());
        }
    }
    for ((metric, labels), buckets) in &totals.hists {
        for (mine, b) in s.series(*metric, labels.clone()).iter_mut().zip(buckets) {
            mine.n += b.n;
            mine.sum += b.sum;
            mine.exemplar.clone_from(&b.exemplar);
        }
    }
    for (metric, labels, n) in m.baseline.counters() {
        *s.counters.entry((metric, labels.clone())).or_default() += n;
    }
    for ((metric, labels, _), (n, sum)) in m.baseline.buckets() {
        // Into the bucket of its mean, which lies within the bucket the row was folded from.
        let n = n.round() as u64;
        if n > 0 {
            let b = &mut s.series(metric, labels.clone())[bucket_of(metric.def().buckets, sum / n as f64)];
            b.n += n;
            b.sum += sum;
        }
    }
    for b in m.stage_builds {
        if let (Some(env), BuildStatus::Succeeded) = (&m.core.stages[b.stage].environment, b.status) {
            s.max(Metric::LastDeploymentTimestamp, &[env], b.end as f64);
        }
    }
    for st in &m.core.stages {
        if let Some(t) = st.stuck_after {
            s.set(Metric::StageStuckThreshold, &[&st.name], t as f64);
        }
    }
}

/// Gauges about now: commits in flight and behind, running builds.
fn in_flight(m: &MetricsInput<'_>, s: &mut Sheet) {
    let stages: Vec<&str> = m.core.stages.iter().map(|s| s.name.as_str()).collect();
    let envs = m.core.environments();
    let mut oldest_age: BTreeMap<(usize, StageState), i64> = BTreeMap::new();
    // Where each commit in flight sits (its first stage neither done nor not applicable).
    let mut in_flight_at: Vec<(usize, StageState, i64)> = vec![];
    // An incomplete journey is not known to be anywhere, nor to be behind.
    for j in m.derived.journeys.iter().filter(|j| !j.vanished && j.outcome != Outcome::Incomplete) {
        if !j.ended {
            if let Some(at) = j.in_flight_at() {
                in_flight_at.push(at);
            }
            if j.not_picked_up {
                *s.gauge(Metric::CommitsNotPickedUp, &[]) += 1.0;
            }
        }
    }
    // And the journeys held in the store (`core::held`), as they were when held out.
    for h in m.derived.held.iter() {
        in_flight_at.extend(h.in_flight);
        if h.not_picked_up {
            *s.gauge(Metric::CommitsNotPickedUp, &[]) += 1.0;
        }
    }
    for (i, state, since) in in_flight_at {
        *s.gauge(Metric::StageInFlight, &[stages[i], state.as_str()]) += 1.0;
        let e = oldest_age.entry((i, state)).or_insert(0);
        *e = (*e).max((m.now - since).max(0));
    }
    // Per environment, against the version running there now: a rollback puts the commits it
    // took out behind again.
    for e in &m.derived.environments {
        let env = [e.name.as_str()];
        s.set(Metric::CommitsBehind, &env, e.behind as f64);
        if let Some(t) = e.oldest_behind {
            s.set(Metric::OldestUndeployedCommitAge, &env, (m.now - t).max(0) as f64);
        }
        s.set(Metric::EnvironmentRunningCommitTimestamp, &env, e.running_commit_time.unwrap_or(0) as f64);
        s.set(Metric::EnvironmentAwaitingApproval, &env, f64::from(u8::from(e.awaiting_approval > 0)));
        let age = e.awaiting_since.map_or(0, |t| (m.now - t).max(0));
        s.set(Metric::EnvironmentAwaitingApprovalAge, &env, age as f64);
    }
    if envs.contains(&m.core.dora.environment) {
        s.set(Metric::ChangeFailRateSlo, &[&m.core.dora.environment], m.core.dora.change_fail_rate_slo);
    }
    for ((i, st), age) in oldest_age {
        s.set(Metric::StageOldestInFlight, &[stages[i], st.as_str()], age as f64);
    }
    // Per stage, from its running builds whatever they carry: "testflight runs over 20
    // minutes" is a fact about the CI, not about how attribution came out.
    for (i, sn) in m.derived.stages.iter().enumerate().filter(|(i, _)| *i < stages.len()) {
        for r in &sn.running {
            *s.gauge(Metric::StageRunningBuilds, &[stages[i], r.status.as_str()]) += 1.0;
        }
        // Measured at the scrape, like the per-commit ages.
        let age = sn.oldest_age(m.now);
        s.set(Metric::StageOldestRunningBuild, &[stages[i]], age as f64);
        if m.core.stages[i].stuck_after.is_some_and(|t| age > t) {
            s.set(Metric::StageStuck, &[stages[i]], 1.0);
        }
    }
}

/// Source health, span export, the store and the build.
fn sources(m: &MetricsInput<'_>, s: &mut Sheet) {
    for (src, snap) in m.sources {
        s.set(Metric::SourceUp, &[src], f64::from(u8::from(snap.up)));
        s.set(Metric::SourceLastSuccessTimestamp, &[src], snap.last_success.unwrap_or(0) as f64);
        s.add(Metric::SourceRequests, &[src, "ok"], snap.requests_ok);
        s.add(Metric::SourceRequests, &[src, "not_modified"], snap.requests_not_modified);
        s.add(Metric::SourceRequests, &[src, "error"], snap.requests_error);
        for k in crate::sources::ErrorKind::ALL {
            s.add(Metric::SourceErrors, &[src, k.as_str()], snap.errors_of(k));
        }
        let took = snap.last_poll_duration.map(|d| d.as_secs_f64()).unwrap_or(0.0);
        s.set(Metric::SourcePollDuration, &[src], took);
        if *src == "github"
            && let Some(r) = snap.rate_limit_remaining
        {
            s.set(Metric::GithubRateLimitRemaining, &[], r as f64);
        }
    }
    if let Some(sp) = m.spans {
        s.add(Metric::SpansExported, &[], sp.exported);
        s.add(Metric::SpanExportErrors, &[], sp.errors);
        s.set(Metric::SpanExportQueue, &[], i64::try_from(sp.queued).unwrap_or(i64::MAX) as f64);
    }
    s.add(Metric::StoreErrors, &[], m.store_errors);
    if let Some(a) = m.auth_rejections {
        s.add(Metric::BasicAuthRejected, &["unauthorized"], a.unauthorized);
        s.add(Metric::BasicAuthRejected, &["rate_limited"], a.rate_limited);
    }
    s.set(Metric::BuildInfo, &[m.version], 1.0);
}

/// Makes a histogram with a row's buckets.
#[derive(Debug, Clone)]
struct Buckets(&'static [f64]);

impl MetricConstructor<HistogramWithExemplars<Labels>> for Buckets {
    fn new_metric(&self) -> HistogramWithExemplars<Labels> {
        HistogramWithExemplars::new(self.0.iter().copied())
    }
}

fn register(r: &mut Registry, def: &Def, help: String, metric: impl prometheus_client::registry::Metric) {
    if def.seconds {
        r.register_with_unit(def.name, help, Unit::Seconds, metric);
    } else {
        r.register(def.name, help, metric);
    }
}

/// The registry of one scrape: a family per catalogue row, in catalogue order.
pub(super) fn build(m: &MetricsInput<'_>) -> Registry {
    let sheet = compute(m);
    let mut reg = Registry::default();
    let r = reg.sub_registry_with_prefix(PREFIX);
    for def in CATALOGUE
        .iter()
        .filter(|d| !d.traces_only || m.spans.is_some())
        .filter(|d| !d.basic_auth_only || m.auth_rejections.is_some())
    {
        let of = |map_keys: &mut dyn Iterator<Item = &(Metric, Labels)>| {
            map_keys.filter(|(k, _)| *k == def.metric).map(|(_, l)| l.clone()).collect::<Vec<_>>()
        };
        let help = def.help_text(m.poll_interval_secs);
        let value = |labels: &Labels| sheet.gauges.get(&(def.metric, labels.clone())).copied().unwrap_or(0.0);
        // An unlabelled row is a single metric, not a family.
        match (def.kind, def.dims.is_empty()) {
            (Kind::Counter, true) => {
                let c = Counter::<u64>::default();
                c.inc_by(sheet.counters.get(&(def.metric, vec![])).copied().unwrap_or(0));
                register(r, def, help, c);
            }
            (Kind::Gauge, true) => {
                let g = Gauge::<i64>::default();
                g.set(value(&vec![]) as i64);
                register(r, def, help, g);
            }
            (Kind::Counter, false) if sheet.counter_exemplars.keys().any(|(k, _)| *k == def.metric) => {
                let f: Family<Labels, CounterWithExemplar<Labels>> = Family::default();
                for labels in of(&mut sheet.counters.keys()) {
                    let ex = sheet.counter_exemplars.get(&(def.metric, labels.clone())).cloned();
                    f.get_or_create(&labels).inc_by(sheet.counters[&(def.metric, labels.clone())], ex, None);
                }
                register(r, def, help, f);
            }
            (Kind::Counter, false) => {
                let f: Family<Labels, Counter> = Family::default();
                for labels in of(&mut sheet.counters.keys()) {
                    f.get_or_create(&labels).inc_by(sheet.counters[&(def.metric, labels.clone())]);
                }
                register(r, def, help, f);
            }
            (Kind::Gauge, false) => {
                let f: Family<Labels, Gauge> = Family::default();
                for labels in of(&mut sheet.gauges.keys()) {
                    f.get_or_create(&labels).set(value(&labels) as i64);
                }
                register(r, def, help, f);
            }
            (Kind::FloatGauge, _) => {
                let f: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
                for labels in of(&mut sheet.gauges.keys()) {
                    f.get_or_create(&labels).set(value(&labels));
                }
                register(r, def, help, f);
            }
            (Kind::Histogram, _) => {
                let f: Family<Labels, HistogramWithExemplars<Labels>, Buckets> =
                    Family::new_with_constructor(Buckets(def.buckets));
                for ((_, labels), buckets) in
                    sheet.hists.range((def.metric, vec![])..).take_while(|((k, _), _)| *k == def.metric)
                {
                    // Each bucket's count and sum re-created by whole-second observations
                    // within it, then its exemplar's own observation.
                    let h = f.get_or_create(labels);
                    for b in buckets {
                        let ex = b.exemplar.as_ref();
                        let rest = b.n.saturating_sub(u64::from(ex.is_some()));
                        for v in spread(rest, b.sum - ex.map_or(0.0, |e| e.2)) {
                            h.observe(v, None, None);
                        }
                        if let Some((_, labels, v)) = ex {
                            h.observe(*v, Some(labels.clone()), None);
                        }
                    }
                }
                register(r, def, help, f);
            }
        }
    }
    reg
}
