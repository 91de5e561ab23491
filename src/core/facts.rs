//! Facts: commits seen on the branch, builds seen in Concourse, force-pushes and how far back
//! each job's builds are known. They merge monotonically ([`Facts::apply`]: a build's status
//! only moves forward, fields only fill in), so the same facts in any order, applied any number
//! of times, are the same facts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub type Sha = String;
pub type BuildId = i64;

// ------------------------------------------------------------------ facts

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitFact {
    pub sha: Sha,
    /// First parent; `None` for a root.
    pub parent: Option<Sha>,
    pub author: String,
    pub author_date: i64,
    pub committer_date: i64,
    pub message: String,
    pub files: Vec<String>,
    /// When the exporter first saw it (for `lead_time_from: first_seen`).
    pub first_seen: i64,
}

impl CommitFact {
    pub fn subject(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BuildStatus {
    Pending,
    Started,
    Succeeded,
    Failed,
    Errored,
    Aborted,
}

impl BuildStatus {
    pub fn parse(s: &str) -> Option<BuildStatus> {
        Some(match s {
            "pending" => BuildStatus::Pending,
            "started" => BuildStatus::Started,
            "succeeded" => BuildStatus::Succeeded,
            "failed" => BuildStatus::Failed,
            "errored" => BuildStatus::Errored,
            "aborted" => BuildStatus::Aborted,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Pending => "pending",
            BuildStatus::Started => "started",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::Errored => "errored",
            BuildStatus::Aborted => "aborted",
        }
    }
    pub fn is_finished(self) -> bool {
        !matches!(self, BuildStatus::Pending | BuildStatus::Started)
    }
    /// Progress rank: a fact never moves a build backwards.
    fn rank(self) -> u8 {
        match self {
            BuildStatus::Pending => 0,
            BuildStatus::Started => 1,
            _ => 2,
        }
    }
}

/// A resource version as a build used or produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFact {
    /// Get or put step name.
    pub step: String,
    /// The resource behind the step (from the job's `inputs[]`/`outputs[]`); versions are
    /// identified per pipeline and resource.
    pub resource: String,
    pub version: Version,
    /// The git commit message from version metadata, when known (bridges need it).
    pub message: Option<String>,
}

/// A resource version's fields (`ref`, `digest`, `tag`, ...), sorted by name. A boxed slice
/// rather than a `BTreeMap`: a version has one or two fields, and a map's every node is a
/// 544-byte leaf, which at 90 days of lana history was 7 MB of the resident heap.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(Box<[(Box<str>, Box<str>)]>);

impl Version {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(field)).ok().map(|i| &*self.0[i].1)
    }
    /// The fields in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// As a map would: sorted by field name, the last value of a repeated name wins.
impl<K: Into<Box<str>>, V: Into<Box<str>>> FromIterator<(K, V)> for Version {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut v: Vec<(Box<str>, Box<str>)> = iter.into_iter().map(|(k, x)| (k.into(), x.into())).collect();
        // Stable, so among equal names the input order stays and the last one is kept below.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(v.len());
        for (k, x) in v {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = x,
                _ => out.push((k, x)),
            }
        }
        Version(out.into_boxed_slice())
    }
}

impl From<BTreeMap<String, String>> for Version {
    fn from(m: BTreeMap<String, String>) -> Self {
        m.into_iter().collect()
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Version {
    fn from(pairs: [(&str, &str); N]) -> Self {
        pairs.into_iter().collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildFact {
    pub id: BuildId,
    // Shared, not owned: every journey's attempt at the build, its running entry and its
    // deployment hold these (`Arc` clones, not copies).
    pub pipeline: Arc<str>,
    pub job: Arc<str>,
    pub name: Arc<str>,
    pub status: BuildStatus,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub rerun_of: Option<BuildId>,
    /// Absolute URL of the build page.
    pub url: Arc<str>,
    pub inputs: Vec<VersionFact>,
    pub outputs: Vec<VersionFact>,
    /// Inputs and outputs have been read (`/builds/:id/resources` answered after adoption).
    pub resources_known: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Commit(CommitFact),
    Build(BuildFact),
    /// A known commit is no longer on the branch (force-push).
    Vanished {
        sha: Sha,
        at: i64,
    },
    /// How far back a job's builds are known: the first read of a Concourse with a long history
    /// stops somewhere, and what a commit older than that did at the job is not known.
    Horizon(HorizonFact),
    /// How a commit reached the branch: its pull request, or a direct push (pre-merge segment).
    Origin {
        sha: Sha,
        origin: crate::core::premerge::Origin,
    },
}

/// Every build of `pipeline`/`job` with an id at or above `since_id` is known (or will be read);
/// the older ones were never read. They started at or before `since_time`, so they cannot
/// contain a commit made at or after it: such a commit has all its builds of the job known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HorizonFact {
    pub pipeline: String,
    pub job: String,
    pub since_id: BuildId,
    pub since_time: i64,
}

impl HorizonFact {
    /// Whether what a commit made at `commit_time` did at this job may lie before the horizon.
    pub fn hides(&self, commit_time: i64) -> bool {
        commit_time < self.since_time
    }
}

// ------------------------------------------------------------------ state

/// All facts, merged. Apply facts in any order, any number of times.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub commits: HashMap<Sha, CommitFact>,
    pub builds: BTreeMap<BuildId, BuildFact>,
    pub vanished: HashMap<Sha, i64>,
    /// Per (pipeline, job): how far back its builds are known; no entry: from its first build.
    pub horizons: BTreeMap<(String, String), HorizonFact>,
    /// Per commit: its pull request or a direct push, once read ([`Origin::merge`](crate::core::premerge::Origin::merge)).
    pub origins: HashMap<Sha, crate::core::premerge::Origin>,
    /// Journeys whose facts the store keeps and memory does not (`core::held`): what the gauges
    /// of now count of them.
    pub held: std::sync::Arc<Vec<crate::core::held::Held>>,
}

impl Facts {
    /// A copy in fresh allocations, the builds' shared strings and the held records included (a
    /// plain clone shares them): what stays of a large load, repacked, so the allocator can return its pages.
    pub fn compacted(&self) -> Facts {
        let mut f = self.clone();
        f.held = Arc::new((*self.held).clone());
        let fresh = |s: &Arc<str>| Arc::<str>::from(&**s);
        for b in f.builds.values_mut() {
            (b.pipeline, b.job, b.name, b.url) = (fresh(&b.pipeline), fresh(&b.job), fresh(&b.name), fresh(&b.url));
        }
        f
    }

    /// Merge a fact; returns whether anything changed.
    pub fn apply(&mut self, fact: Fact) -> bool {
        match fact {
            Fact::Commit(c) => {
                if let Some(old) = self.commits.get_mut(&c.sha) {
                    // Keep the earliest sighting; the rest of a commit never changes.
                    if c.first_seen < old.first_seen {
                        old.first_seen = c.first_seen;
                        return true;
                    }
                    return false;
                }
                self.commits.insert(c.sha.clone(), c);
                true
            }
            Fact::Build(b) => match self.builds.get_mut(&b.id) {
                None => {
                    self.builds.insert(b.id, b);
                    true
                }
                Some(old) => {
                    let merged = merge_build(old, b);
                    let changed = merged != *old;
                    *old = merged;
                    changed
                }
            },
            Fact::Vanished { sha, at } => match self.vanished.get_mut(&sha) {
                None => {
                    self.vanished.insert(sha, at);
                    true
                }
                // The earliest sighting of the force-push wins.
                Some(e) if at < *e => {
                    *e = at;
                    true
                }
                Some(_) => false,
            },
            Fact::Origin { sha, origin } => match self.origins.get(&sha) {
                Some(old) if *old == origin => false,
                Some(old) => {
                    let merged = old.clone().merge(origin);
                    let changed = merged != *old;
                    self.origins.insert(sha, merged);
                    changed
                }
                None => {
                    self.origins.insert(sha, origin);
                    true
                }
            },
            // A read that reached further back wins (a backfill lowers the horizon).
            Fact::Horizon(h) => {
                let key = (h.pipeline.clone(), h.job.clone());
                match self.horizons.get_mut(&key) {
                    None => {
                        self.horizons.insert(key, h);
                        true
                    }
                    Some(old) if (h.since_id, h.since_time) < (old.since_id, old.since_time) => {
                        *old = h;
                        true
                    }
                    Some(_) => false,
                }
            }
        }
    }
}

/// Merge two sightings of one build. Commutative and idempotent: the more advanced sighting
/// wins (status, then resources known, then more outputs/inputs), and gaps are filled from the
/// other, so arrival order never matters.
fn merge_build(a: &BuildFact, b: BuildFact) -> BuildFact {
    let key =
        |x: &BuildFact| (x.status.rank(), x.resources_known, x.outputs.len(), x.inputs.len(), x.status, x.end, x.start);
    let (mut m, other) = if key(&b) > key(a) { (b, a.clone()) } else { (a.clone(), b) };
    m.start = m.start.or(other.start);
    if m.status.is_finished() {
        m.end = m.end.or(other.end);
    }
    if m.rerun_of.is_none() {
        m.rerun_of = other.rerun_of;
    }
    // Messages learned by another sighting complete the inputs.
    for i in m.inputs.iter_mut() {
        if i.message.is_none() {
            i.message = other
                .inputs
                .iter()
                .find(|o| o.step == i.step && o.version == i.version)
                .and_then(|o| o.message.clone());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::Version;

    /// A compacted copy holds the same facts, none of its builds' strings shared with the
    /// original (so freeing the original frees them).
    #[test]
    fn a_compacted_copy_is_equal_and_shares_no_build_string() {
        use crate::core::facts::{BuildStatus, Facts};
        let mut f = Facts::default();
        f.apply(crate::core::fixtures::commit("a".repeat(40), None, 100, "feat: a", "src/a.rs"));
        f.apply(crate::core::fixtures::build(
            7,
            "t",
            BuildStatus::Succeeded,
            Some(100),
            Some(200),
            Some("a".repeat(40)),
        ));
        let c = f.compacted();
        assert_eq!(c.commits, f.commits);
        assert_eq!(c.builds, f.builds);
        let (b, cb) = (&f.builds[&7], &c.builds[&7]);
        for (x, y) in [(&b.pipeline, &cb.pipeline), (&b.job, &cb.job), (&b.name, &cb.name), (&b.url, &cb.url)] {
            assert!(!std::sync::Arc::ptr_eq(x, y), "{x} is shared");
        }
    }

    #[test]
    fn a_version_reads_like_the_map_it_was_made_from() {
        /// Pairs as Concourse gave them, the field asked, the value expected, the fields in order.
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<&'a str>, &'a [&'a str]);
        let cases: &[Case] = &[
            (&[("ref", "abc")], "ref", Some("abc"), &["ref"]),
            (&[("tag", "v1"), ("digest", "sha256:ff")], "digest", Some("sha256:ff"), &["digest", "tag"]),
            (&[("tag", "v1"), ("digest", "sha256:ff")], "ref", None, &["digest", "tag"]),
            // A repeated name keeps its last value, as inserting into a map would.
            (&[("ref", "a"), ("n", "1"), ("ref", "b")], "ref", Some("b"), &["n", "ref"]),
            (&[], "ref", None, &[]),
        ];
        for (pairs, field, want, order) in cases {
            let v: Version = pairs.iter().copied().collect();
            assert_eq!(v.get(field), *want, "{pairs:?}.get({field})");
            assert_eq!(v.iter().map(|(k, _)| k).collect::<Vec<_>>(), *order, "{pairs:?}");
            let map: std::collections::BTreeMap<String, String> =
                pairs.iter().map(|(k, x)| (k.to_string(), x.to_string())).collect();
            assert_eq!(Version::from(map), v, "{pairs:?} through a map");
        }
    }
}
