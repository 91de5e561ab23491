//! The journey counters and histograms added up: [`Totals`] of a set of [`Event`]s, and the
//! [`Tally`] that keeps them per segment of history so a poll cycle adds up again only the
//! segments whose journeys or builds changed.
//!
//! A histogram is kept as its buckets (count, sum, newest exemplar), not as its observations:
//! the exposition shows nothing else, and retention's baseline folds into the same form. Every
//! observation is a whole number of seconds, so sums are exact in any order, and the totals of
//! segments added up equal the totals of all events at once. Exemplars are chosen the same way
//! either way: per series (a counter) or bucket (a histogram), the newest event's (by time, then
//! [`Event::rank`], then the exemplar's labels).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::core::journey::{BuildId, CoreConfig, Derived, Journey, StageBuild};

use super::Labels;
use super::catalogue::Metric;
use super::events::{Event, events};

/// When an exemplar's event happened and its rank among events at that time
/// ([`Event::rank`]): the greater is the newer.
pub type Newness = (i64, i64);

/// A counter series: its increments and the newest exemplar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterTotal {
    pub n: u64,
    pub exemplar: Option<(Newness, Labels)>,
}

/// One bucket of a histogram series (not cumulative): its observations' count and sum, and the
/// newest exemplar with its observed value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BucketTotal {
    pub n: u64,
    pub sum: f64,
    pub exemplar: Option<(Newness, Labels, f64)>,
}

/// Journey counters and histograms per (metric, labels).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub counters: BTreeMap<(Metric, Labels), CounterTotal>,
    /// Per series, one entry per bound of the metric's buckets and one for +Inf.
    pub hists: BTreeMap<(Metric, Labels), Vec<BucketTotal>>,
}

/// `new` replaces `old` when it is newer, or as new and greater by its labels.
fn newer<T: Ord>(old: &Option<T>, new: &T) -> bool {
    old.as_ref().is_none_or(|o| new > o)
}

impl BucketTotal {
    /// Empty buckets for a series of `metric`: one per bound and one for +Inf.
    pub fn series_of(metric: Metric) -> Vec<BucketTotal> {
        vec![BucketTotal::default(); metric.def().buckets.len() + 1]
    }

    /// Keep `x` as the exemplar if it is newer (by [`Newness`], then labels; the value aside).
    fn offer(&mut self, x: (Newness, Labels, f64)) {
        if self.exemplar.as_ref().is_none_or(|(at, l, _)| (x.0, &x.1) > (*at, l)) {
            self.exemplar = Some(x);
        }
    }
}

/// The bucket of `v` among `bounds` (the last index is +Inf).
pub fn bucket_of(bounds: &[f64], v: f64) -> usize {
    bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len())
}

impl Totals {
    pub fn of(events: impl IntoIterator<Item = Event>) -> Totals {
        let mut t = Totals::default();
        for e in events {
            t.add(e);
        }
        t
    }

    pub fn add(&mut self, e: Event) {
        match e.value {
            None => {
                let c = self.counters.entry((e.metric, e.labels)).or_default();
                c.n += 1;
                if let Some(x) = e.exemplar {
                    let candidate = ((e.at, e.rank), x);
                    if newer(&c.exemplar, &candidate) {
                        c.exemplar = Some(candidate);
                    }
                }
            }
            Some(v) => {
                let bucket = &mut self.series(e.metric, e.labels)[bucket_of(e.metric.def().buckets, v)];
                bucket.n += 1;
                bucket.sum += v;
                if let Some(x) = e.exemplar {
                    bucket.offer(((e.at, e.rank), x, v));
                }
            }
        }
    }

    /// A histogram series' buckets, empty ones made for a new series.
    pub fn series(&mut self, metric: Metric, labels: Labels) -> &mut Vec<BucketTotal> {
        self.hists.entry((metric, labels)).or_insert_with(|| BucketTotal::series_of(metric))
    }

    /// Add `other` in.
    pub fn merge(&mut self, other: &Totals) {
        for (key, c) in &other.counters {
            let mine = self.counters.entry(key.clone()).or_default();
            mine.n += c.n;
            if let Some(x) = &c.exemplar
                && newer(&mine.exemplar, x)
            {
                mine.exemplar = Some(x.clone());
            }
        }
        for ((metric, labels), buckets) in &other.hists {
            let mine = self.series(*metric, labels.clone());
            for (m, b) in mine.iter_mut().zip(buckets) {
                m.n += b.n;
                m.sum += b.sum;
                if let Some(x) = &b.exemplar {
                    m.offer(x.clone());
                }
            }
        }
    }
}

/// Builds per segment: a segment holds the stage builds whose ids share `id >> BUILD_SHIFT`.
const BUILD_SHIFT: u32 = 9;
/// Journeys per segment, by branch position.
const JOURNEYS_PER_SEGMENT: usize = 256;

/// The totals of a segment and what they were computed from.
#[derive(Debug, Default)]
struct BuildSegment {
    /// A hash of everything the segment's events read (see [`Tally::update`]).
    inputs: u64,
    totals: Totals,
}

#[derive(Debug, Default)]
struct JourneySegment {
    journeys: Vec<Arc<Journey>>,
    totals: Totals,
}

/// Journey totals kept from one poll cycle to the next. Give it every cycle's derivation (with
/// the same core configuration); its result equals `Totals::of(events(..))` over everything.
///
/// A build's events read the build, how it was tied to commits (`build_methods`), whether it is
/// a lineage gap, and its deployment; a journey's events read the journey. A segment whose
/// inputs are unchanged keeps its totals: for builds, by a hash of those inputs; for journeys,
/// by identity (a settled journey is the same `Arc` each cycle) or else equality. Segments are
/// then added up: a cycle's cost is the changed segments' events plus one pass over the inputs
/// and one addition per segment, not the events of the whole history.
#[derive(Debug)]
pub struct Tally {
    builds: BTreeMap<BuildId, BuildSegment>,
    journeys: Vec<JourneySegment>,
    build_shift: u32,
    journeys_per_segment: usize,
    /// Segments added up again at the last update, for tests and benchmarks.
    pub recomputed: usize,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::with_segments(BUILD_SHIFT, JOURNEYS_PER_SEGMENT)
    }
}

impl Tally {
    /// Segments of `1 << build_shift` build ids and of `journeys` journeys: small ones let a
    /// test cross many segment boundaries with a few days of history.
    pub fn with_segments(build_shift: u32, journeys: usize) -> Tally {
        Tally {
            builds: BTreeMap::new(),
            journeys: vec![],
            build_shift,
            journeys_per_segment: journeys.max(1),
            recomputed: 0,
        }
    }

    /// Segments held now (builds and journeys).
    pub fn segments(&self) -> usize {
        self.builds.len() + self.journeys.len()
    }

    pub fn update(&mut self, derived: &Derived, builds: &[StageBuild], core: &CoreConfig) -> Totals {
        self.recomputed = 0;
        let deployment: HashMap<BuildId, &crate::core::deployments::Deployment> =
            derived.deployments.iter().map(|d| (d.build_id, d)).collect();

        // Builds, by segment of ids: runs of a list in id order (`stage_builds` gives one).
        let sorted;
        let builds = if builds.is_sorted_by_key(|b| b.build_id) {
            builds
        } else {
            sorted = {
                let mut v = builds.to_vec();
                v.sort_by_key(|b| b.build_id);
                v
            };
            &sorted[..]
        };
        let mut segments: BTreeMap<BuildId, BuildSegment> = BTreeMap::new();
        let mut rest = builds;
        while let Some(first) = rest.first() {
            let seg = first.build_id >> self.build_shift;
            let len = rest.iter().position(|b| b.build_id >> self.build_shift != seg).unwrap_or(rest.len());
            let (these, after) = rest.split_at(len);
            rest = after;
            let mut h = std::hash::BuildHasher::build_hasher(&foldhash::fast::FixedState::with_seed(0));
            for b in these {
                b.hash(&mut h);
                derived.build_methods.get(&b.build_id).hash(&mut h);
                derived.gap_builds.contains(&b.build_id).hash(&mut h);
                deployment.get(&b.build_id).hash(&mut h);
            }
            let inputs = h.finish();
            let kept = self.builds.remove(&seg).filter(|s| s.inputs == inputs);
            let segment = kept.unwrap_or_else(|| {
                self.recomputed += 1;
                BuildSegment { inputs, totals: Totals::of(events(std::iter::empty(), these, derived, core)) }
            });
            segments.insert(seg, segment);
        }
        self.builds = segments;

        // Journeys, by segment of branch positions.
        let chunks = derived.journeys.chunks(self.journeys_per_segment);
        self.journeys.truncate(chunks.len());
        for (i, chunk) in chunks.enumerate() {
            let same = self.journeys.get(i).is_some_and(|s| {
                s.journeys.len() == chunk.len()
                    && s.journeys.iter().zip(chunk).all(|(a, b)| Arc::ptr_eq(a, b) || **a == **b)
            });
            if same {
                // The totals stay; this cycle's journeys are kept, so the next compares by identity.
                self.journeys[i].journeys = chunk.to_vec();
                continue;
            }
            self.recomputed += 1;
            let totals = Totals::of(events(chunk.iter().map(|j| &**j), &[], derived, core));
            let segment = JourneySegment { journeys: chunk.to_vec(), totals };
            if i < self.journeys.len() {
                self.journeys[i] = segment;
            } else {
                self.journeys.push(segment);
            }
        }

        let mut all = Totals::default();
        for s in self.builds.values() {
            all.merge(&s.totals);
        }
        for s in &self.journeys {
            all.merge(&s.totals);
        }
        all
    }
}

/// Whole numbers (where `sum` is one) that add up to `sum` exactly: `n` observations that
/// re-create a bucket's count and sum. All lie between the smallest and largest observation
/// that made the sum, so within the bucket; an observation's exemplar value is given apart.
pub fn spread(n: u64, sum: f64) -> impl Iterator<Item = f64> {
    let whole = sum.fract() == 0.0 && sum.abs() < 9.0e15 && n > 0;
    let (q, r) = if whole { ((sum as i64).div_euclid(n as i64), (sum as i64).rem_euclid(n as i64)) } else { (0, 0) };
    let mean = if n > 0 { sum / n as f64 } else { 0.0 };
    (0..n).map(move |k| match whole {
        true if (k as i64) < r => (q + 1) as f64,
        true => q as f64,
        false => mean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: i64, metric: Metric, labels: &[&str], value: Option<f64>, ex: Option<&str>) -> Event {
        Event {
            at,
            metric,
            labels: metric.labels(labels),
            value,
            exemplar: ex.map(|s| vec![("sha".to_string(), s.to_string())]),
            rank: 0,
        }
    }

    #[test]
    fn spread_keeps_count_and_sum_and_stays_between_the_observations() {
        for (obs, n) in [(&[61.0, 62.0, 64.0][..], 3u64), (&[300.0][..], 1), (&[7.0, 7.0, 9.0, 100.0][..], 4)] {
            let sum: f64 = obs.iter().sum();
            let got: Vec<f64> = spread(n, sum).collect();
            assert_eq!(got.len() as u64, n);
            assert_eq!(got.iter().sum::<f64>(), sum);
            let (lo, hi) = obs.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
            assert!(got.iter().all(|v| *v >= lo && *v <= hi), "{got:?} outside [{lo}, {hi}]");
        }
        assert_eq!(spread(0, 0.0).count(), 0);
        // A sum that is not whole (an old baseline row): its mean, n times.
        assert_eq!(spread(2, 3.5).collect::<Vec<_>>(), vec![1.75, 1.75]);
    }

    /// Added up in parts, in any order, the totals are those of all events at once; the
    /// exemplar is the newest event's whichever part it came from.
    #[test]
    fn totals_of_parts_merge_into_the_totals_of_the_whole() {
        let events = vec![
            ev(100, Metric::StageAttempts, &["tests"], None, None),
            ev(300, Metric::Deployments, &["staging"], None, Some("b")),
            ev(200, Metric::Deployments, &["staging"], None, Some("a")),
            ev(300, Metric::Deployments, &["staging"], None, Some("c")),
            ev(50, Metric::StageDuration, &["tests", "succeeded"], Some(61.0), Some("x")),
            ev(70, Metric::StageDuration, &["tests", "succeeded"], Some(64.0), Some("y")),
            ev(60, Metric::StageDuration, &["tests", "succeeded"], Some(4000.0), None),
        ];
        let whole = Totals::of(events.clone());
        let c = &whole.counters[&(Metric::Deployments, Metric::Deployments.labels(&["staging"]))];
        assert_eq!(c.n, 3);
        assert_eq!(c.exemplar.as_ref().unwrap().1[0].1, "c", "newest, the tie going to the greater labels");
        for split in 0..=events.len() {
            let (a, b) = events.split_at(split);
            let mut t = Totals::of(b.to_vec());
            t.merge(&Totals::of(a.to_vec()));
            assert_eq!(t, whole, "split at {split}");
        }
        let h = &whole.hists[&(Metric::StageDuration, Metric::StageDuration.labels(&["tests", "succeeded"]))];
        let with: Vec<_> = h.iter().enumerate().filter(|(_, b)| b.n > 0).map(|(i, b)| (i, b.n, b.sum)).collect();
        let bounds = Metric::StageDuration.def().buckets;
        assert_eq!(with, vec![(bucket_of(bounds, 61.0), 2, 125.0), (bucket_of(bounds, 4000.0), 1, 4000.0)]);
        assert_eq!(h[bucket_of(bounds, 61.0)].exemplar.as_ref().unwrap().2, 64.0);
    }
}
