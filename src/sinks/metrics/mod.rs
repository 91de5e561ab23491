//! The Prometheus surface of commit journeys, rendered at scrape time from the latest snapshot.
//!
//! Every value is a function of the persisted facts (and the sources' own counters), so a
//! restart neither resets nor double counts a journey counter: the same facts give the same
//! totals. A fresh registry is built per scrape (the Prometheus "const metrics" practice), so
//! label sets that can exist are all present from the first scrape, and nothing stale lingers.
//! No scrape ever calls a CI API.
//!
//! The catalogue (`catalogue`) is a table: every family's kind, name, unit, HELP, label
//! dimensions and buckets. `events` are the journey counters' increments and observations, `tally` their totals,
//! `baseline` what retention folded away (and its stored rows), `render` one scrape.

pub mod baseline;
pub mod catalogue;
pub mod events;
mod render;
pub mod tally;

use prometheus_client::encoding::text::encode;

use crate::core::journey::{CoreConfig, Derived, StageBuild};
use crate::sources::telemetry::SourceSnapshot;

pub use baseline::{Baseline, fold};
pub use catalogue::{LEAD_BUCKETS, Metric, STAGE_BUCKETS};
pub use events::{Event, events};
pub use tally::{Tally, Totals};

/// A label set, in the catalogue row's dimension order.
pub type Labels = Vec<(String, String)>;

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
    /// The journey counters and histograms of `derived` and `stage_builds` added up already
    /// (`serve` keeps a [`Tally`]); `None`: added up at this scrape.
    pub totals: Option<&'a Totals>,
}

/// Render OpenMetrics text (with exemplars).
pub fn render_openmetrics(m: &MetricsInput<'_>) -> String {
    let reg = render::build(m);
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
