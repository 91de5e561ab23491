//! What journeys and builds pruned by retention contributed to the journey counters and
//! histograms, with typed keys. This module owns the conversion to and from the store's
//! counters rows, whose text format (`counter:commits`, `hist:lead_time:3:count`, labels
//! `k=v,k=v`) is what existing state files hold and must stay readable.

use std::collections::BTreeMap;

use crate::core::journey::{CoreConfig, Derived, Journey, StageBuild};

use super::Labels;
use super::catalogue::{Kind, Metric};
use super::events::events;
use super::tally::Totals;

/// Which part of a histogram bucket a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Count,
    Sum,
}

/// What a baseline row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// Increments of a counter.
    Counter(Metric),
    /// Bucket `bucket` of a histogram (the i-th bound; the last one is +Inf): its observation
    /// count or their sum, so replaying the bucket mean keeps sums exact.
    Bucket { metric: Metric, bucket: usize, part: Part },
}

impl Key {
    /// The row name: `counter:commits`, `hist:lead_time:3:count`.
    pub fn row_name(&self) -> String {
        match self {
            Key::Counter(m) => format!("counter:{}", m.name()),
            Key::Bucket { metric, bucket, part } => {
                let p = match part {
                    Part::Count => "count",
                    Part::Sum => "sum",
                };
                format!("hist:{}:{bucket}:{p}", metric.name())
            }
        }
    }

    /// A row name back, if it names a counter or a histogram of the catalogue.
    pub fn parse(s: &str) -> Option<Key> {
        if let Some(c) = s.strip_prefix("counter:") {
            let m = Metric::from_name(c).filter(|m| m.def().kind == Kind::Counter)?;
            return Some(Key::Counter(m));
        }
        let mut it = s.strip_prefix("hist:")?.split(':');
        let metric = Metric::from_name(it.next()?).filter(|m| m.def().kind == Kind::Histogram)?;
        let bucket = it.next()?.parse().ok()?;
        let part = match it.next()? {
            "count" => Part::Count,
            "sum" => Part::Sum,
            _ => return None,
        };
        it.next().is_none().then_some(Key::Bucket { metric, bucket, part })
    }
}

/// Counter values and histogram buckets that pruned facts contributed, per key and label set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    pub values: BTreeMap<(Key, Labels), f64>,
}

impl Baseline {
    /// From the store's rows (name, labels, value).
    pub fn from_rows(rows: impl IntoIterator<Item = (String, String, f64)>) -> Baseline {
        let mut b = Baseline::default();
        b.add(rows);
        b
    }

    /// Add the store's rows; a row naming no metric of the catalogue (one a later version
    /// dropped) is left out, as the exposition has no family for it.
    pub fn add(&mut self, rows: impl IntoIterator<Item = (String, String, f64)>) {
        for (n, l, v) in rows {
            match Key::parse(&n) {
                Some(k) => *self.values.entry((k, parse_labels(&l))).or_insert(0.0) += v,
                None => tracing::warn!(row = %n, "state file counter row names no metric; left out"),
            }
        }
    }

    /// Counter increments, per (counter, labels).
    pub fn counters(&self) -> impl Iterator<Item = (Metric, &Labels, u64)> {
        self.values.iter().filter_map(|((k, l), v)| match k {
            Key::Counter(m) => Some((*m, l, v.round() as u64)),
            Key::Bucket { .. } => None,
        })
    }

    /// Per histogram series and bucket, (count, sum).
    pub fn buckets(&self) -> BTreeMap<(Metric, &Labels, usize), (f64, f64)> {
        let mut out: BTreeMap<(Metric, &Labels, usize), (f64, f64)> = BTreeMap::new();
        for ((k, l), v) in &self.values {
            if let Key::Bucket { metric, bucket, part } = k {
                let e = out.entry((*metric, l, *bucket)).or_default();
                match part {
                    Part::Count => e.0 += v,
                    Part::Sum => e.1 += v,
                }
            }
        }
        out
    }
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
/// into the baseline: counter increments, and per histogram bucket its count and sum.
pub fn fold(
    journeys: &[&Journey],
    builds: &[StageBuild],
    derived: &Derived,
    core: &CoreConfig,
) -> Vec<(String, String, f64)> {
    // Summed a slice at a time: a year's events at once were the largest allocation of a first
    // start (24 MB). Builds and journeys give disjoint events (a deployment's belong to its build).
    const SLICE: usize = 256;
    let mut t = Totals::default();
    for b in builds.chunks(SLICE) {
        events(std::iter::empty(), b, derived, core).into_iter().for_each(|e| t.add(e));
    }
    for j in journeys.chunks(SLICE) {
        events(j.iter().copied(), &[], derived, core).into_iter().for_each(|e| t.add(e));
    }
    let mut rows = vec![];
    for ((metric, labels), c) in t.counters {
        rows.push((Key::Counter(metric).row_name(), labels_string(&labels), c.n as f64));
    }
    for ((metric, labels), buckets) in t.hists {
        for (bucket, b) in buckets.iter().enumerate().filter(|(_, b)| b.n > 0) {
            let key = |part| Key::Bucket { metric, bucket, part }.row_name();
            rows.push((key(Part::Count), labels_string(&labels), b.n as f64));
            rows.push((key(Part::Sum), labels_string(&labels), b.sum));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row names as state files written by earlier versions hold them.
    #[test]
    fn stored_row_names_parse_to_typed_keys_and_back() {
        let check = |row: &str, expect: Option<Key>| {
            assert_eq!(Key::parse(row), expect, "{row}");
            if let Some(k) = expect {
                assert_eq!(k.row_name(), row);
            }
        };
        let bucket = |metric, bucket, part| Some(Key::Bucket { metric, bucket, part });
        check("counter:commits", Some(Key::Counter(Metric::Commits)));
        check("counter:commit_outcomes", Some(Key::Counter(Metric::CommitOutcomes)));
        check("counter:stage_attempts", Some(Key::Counter(Metric::StageAttempts)));
        check("counter:stage_failures", Some(Key::Counter(Metric::StageFailures)));
        check("counter:deployments", Some(Key::Counter(Metric::Deployments)));
        check("counter:attributions", Some(Key::Counter(Metric::Attributions)));
        check("counter:lineage_gaps", Some(Key::Counter(Metric::LineageGaps)));
        check("hist:lead_time:3:count", bucket(Metric::LeadTime, 3, Part::Count));
        check("hist:stage_duration:14:sum", bucket(Metric::StageDuration, 14, Part::Sum));
        check("hist:stage_wait:0:count", bucket(Metric::StageWait, 0, Part::Count));
        check("counter:nonsense", None);
        check("counter:lead_time", None);
        check("hist:commits:0:count", None);
        check("hist:lead_time:x:count", None);
        check("hist:lead_time:1:mean", None);
        check("hist:lead_time:1:count:extra", None);
        check("gauge:commits", None);
    }

    #[test]
    fn rows_from_a_state_file_add_up_per_series() {
        let rows = [
            ("counter:commits", "change_type=backend", 3.0),
            ("counter:commits", "change_type=backend", 2.0),
            ("hist:lead_time:2:count", "environment=staging,change_type=docs", 2.0),
            ("hist:lead_time:2:sum", "environment=staging,change_type=docs", 1500.0),
            ("counter:gone_metric", "", 9.0),
        ];
        let b = Baseline::from_rows(rows.iter().map(|(n, l, v)| (n.to_string(), l.to_string(), *v)));
        let backend = vec![("change_type".to_string(), "backend".to_string())];
        assert_eq!(b.counters().collect::<Vec<_>>(), vec![(Metric::Commits, &backend, 5)]);
        let staging =
            vec![("environment".to_string(), "staging".to_string()), ("change_type".to_string(), "docs".to_string())];
        assert_eq!(b.buckets().into_iter().collect::<Vec<_>>(), vec![((Metric::LeadTime, &staging, 2), (2.0, 1500.0))]);
    }
}
