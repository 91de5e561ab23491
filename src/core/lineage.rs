//! The carry relation: which builds a build inherits what it delivers from.
//!
//! Each build gets a *carry*: for each tracked git resource, the newest commit (by first-parent
//! position) it delivers, and how that was learned:
//! - **exact**: an input is a version of a tracked git resource; or an input is the very version
//!   another build put or took (an image digest, a chart commit, a semver), whose carry it inherits;
//! - **bridge**: a configured cross-pipeline rule, e.g. the testflight input's commit message
//!   contains the digest build-rc put, or the cepler `trigger` equals the deployments commit a
//!   bump build pushed;
//! - **inferred** (explicit fallback): the first build of a stage that started after the upstream
//!   stage succeeded and whose plain git input is the commit or a descendant.
//!
//! [`Lineage`] is the relation itself (per build, the builds whose carry it inherits and how);
//! [`compute_carries`] follows it to each build's carry, and retention keeps what it reaches.

use std::collections::{BTreeMap, HashMap};

use crate::core::facts::{BuildFact, BuildId, Facts, Version};
use crate::core::journey::{Bridge, CoreConfig};

/// Per tracked resource, the newest commit (first-parent position) a build delivers, and how
/// that was learned. A vector sorted by resource, of exact size: a build carries one to three
/// resources, where a `BTreeMap`'s every node is a leaf of about 500 bytes (with one per
/// build, 10 MB of a year's first derivation, `docs/benchmarks.md`, session 15).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Carry(Vec<(Box<str>, (usize, Method))>);

impl Carry {
    fn one(resource: &str, position: usize, method: Method) -> Carry {
        Carry(vec![(resource.into(), (position, method))])
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn find(&self, resource: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(r, _)| (**r).cmp(resource))
    }
    pub(crate) fn get(&self, resource: &str) -> Option<&(usize, Method)> {
        self.find(resource).ok().map(|i| &self.0[i].1)
    }
    /// Position and method per resource, in resource order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &(usize, Method)> {
        self.0.iter().map(|(_, v)| v)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Exact,
    Bridge,
    Inferred,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Exact, Method::Bridge, Method::Inferred];
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Bridge => "bridge",
            Method::Inferred => "inferred",
        }
    }
}

/// A version's identity in the index: the first 128 bits of the SHA-256 of its pipeline,
/// resource and version fields, each length-prefixed (so no two field lists hash the same
/// bytes). 16 bytes where a `pipeline/resource,key:value` string took about 100 per build input
/// and output: the index was the largest item of a year's first derivation (43 of its 151 MB,
/// `docs/benchmarks.md`, session 14). Two versions share a key only on a SHA-256 collision.
type Key = [u8; 16];

fn version_key(pipeline: &str, resource: &str, v: &Version) -> Key {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field(pipeline);
    field(resource);
    for (a, b) in v.iter() {
        field(a);
        field(b);
    }
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn merge_carry(into: &mut Carry, from: &Carry, at_least: Method) {
    for (r, (p, m)) in &from.0 {
        let m = (*m).max(at_least);
        match into.find(r) {
            Ok(i) => {
                let e = &mut into.0[i].1;
                if e.0 == *p {
                    e.1 = e.1.min(m);
                } else if e.0 < *p {
                    *e = (*p, m);
                }
            }
            Err(i) => into.0.insert(i, (r.clone(), (*p, m))),
        }
    }
}

/// The carry relation: per build, the builds whose carry it inherits, with the weakest method
/// the inheritance can have (`Exact` for a version another build put or an upstream stage's
/// build took, `Bridge` for a configured bridge). Builds with no sources are absent.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    pub sources: HashMap<BuildId, Vec<(BuildId, Method)>>,
}

/// The carry relation built build by build in id order, with what the next build needs
/// (versions put and taken, bridge outputs). With `undo` it remembers what each build added, so
/// that [`LineageIndex::truncate`] can forget the builds from an id on and they can be pushed
/// again, changed (`core::incremental`): a build's sources are older builds only, so what the
/// builds below that id got stays right.
#[derive(Debug, Clone, Default)]
pub(crate) struct LineageIndex {
    pub(crate) sources: HashMap<BuildId, Vec<(BuildId, Method)>>,
    /// Version key → builds that put it (outputs) or took it (inputs), in id order.
    produced: HashMap<Key, Vec<BuildId>>,
    taken: HashMap<Key, Vec<BuildId>>,
    /// Output step → version key → the values builds put there, for bridges.
    by_output: HashMap<String, HashMap<String, BridgeValues>>,
    undo: bool,
    /// Per pushed build (with `undo`): the produced keys, taken keys and (step, key) outputs it
    /// added, to take back.
    pushed: BTreeMap<BuildId, Pushed>,
}

/// The values builds put under one output step and version key, in id order, indexed so a
/// bridge looks its match up instead of comparing every value with every message (which made
/// a year's first derivation quadratic): by value (`equals`, and a commit sha a message
/// contains), by a sha's 7-character prefix (cepler's `[abc1234] - subject`), by the first 16
/// digits of a value's first long hex run (an image digest `sha256:…`: a message that contains
/// the value contains those 16 digits), and the other values, which are still scanned.
#[derive(Debug, Clone, Default)]
struct BridgeValues {
    by_value: HashMap<String, Vec<BuildId>>,
    by_short: HashMap<String, Vec<BuildId>>,
    by_hex16: HashMap<String, Vec<(String, BuildId)>>,
    other: Vec<(String, BuildId)>,
    /// Every (value, build) in push order, for taking the newest back.
    all: Vec<(String, BuildId)>,
}

fn is_sha(value: &str) -> bool {
    value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Hex digits a value's run needs to be indexed by (shorter runs are too common in text).
const HEX_KEY: usize = 16;

/// The first `HEX_KEY` digits of the first run of at least that many hex digits in `value`.
fn hex_key(value: &str) -> Option<&str> {
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i - start >= HEX_KEY {
            return Some(&value[start..start + HEX_KEY]);
        }
        i += 1;
    }
    None
}

impl BridgeValues {
    fn push(&mut self, value: &str, id: BuildId) {
        self.by_value.entry(value.to_string()).or_default().push(id);
        if is_sha(value) {
            self.by_short.entry(value[..7].to_string()).or_default().push(id);
        } else if let Some(k) = hex_key(value) {
            self.by_hex16.entry(k.to_string()).or_default().push((value.to_string(), id));
        } else if !value.is_empty() {
            self.other.push((value.to_string(), id));
        }
        self.all.push((value.to_string(), id));
    }

    /// Take back the newest value if `id` put it.
    fn pop(&mut self, id: BuildId) {
        if self.all.last().is_none_or(|(_, b)| *b != id) {
            return;
        }
        let Some((value, _)) = self.all.pop() else { return };
        pop_last(&mut self.by_value, &value, id);
        if is_sha(&value) {
            pop_last(&mut self.by_short, &value[..7], id);
        } else if let Some(k) = hex_key(&value) {
            if let Some(v) = self.by_hex16.get_mut(k)
                && v.last().is_some_and(|(_, b)| *b == id)
            {
                v.pop();
                if v.is_empty() {
                    self.by_hex16.remove(k);
                }
            }
        } else if self.other.last().is_some_and(|(_, b)| *b == id) {
            self.other.pop();
        }
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The builds whose value equals `x`, in id order.
    fn equal_to(&self, x: &str) -> Vec<BuildId> {
        self.by_value.get(x).cloned().unwrap_or_default()
    }

    /// The builds whose non-empty value `message` names ([`message_names`]), in id order.
    fn named_by(&self, message: &str) -> Vec<BuildId> {
        let mut ids: Vec<BuildId> = vec![];
        // A sha the message contains lies inside a run of hex digits at least 40 long.
        let bytes = message.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if !bytes[i].is_ascii_hexdigit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                i += 1;
            }
            for w in start..(i.saturating_sub(39)).max(start) {
                if let Some(v) = self.by_value.get(&message[w..w + 40]) {
                    ids.extend(v);
                }
            }
            for w in start..(i + 1).saturating_sub(HEX_KEY).max(start) {
                for (val, id) in self.by_hex16.get(&message[w..w + HEX_KEY]).into_iter().flatten() {
                    if message.contains(val.as_str()) {
                        ids.push(*id);
                    }
                }
            }
            // `[abc1234]`: exactly seven hex digits between brackets.
            if i - start == 7
                && start > 0
                && bytes[start - 1] == b'['
                && bytes.get(i) == Some(&b']')
                && let Some(v) = self.by_short.get(&message[start..i])
            {
                ids.extend(v);
            }
        }
        ids.extend(self.other.iter().filter(|(v, _)| message.contains(v.as_str())).map(|(_, id)| *id));
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

#[derive(Debug, Clone, Default)]
struct Pushed {
    produced: Vec<Key>,
    taken: Vec<Key>,
    outputs: Vec<(String, String)>,
}

impl LineageIndex {
    /// An empty index that remembers what each build added, for [`LineageIndex::truncate`].
    pub(crate) fn with_undo() -> LineageIndex {
        LineageIndex { undo: true, ..LineageIndex::default() }
    }

    /// Add build `b`, newer than every build pushed so far; `facts` holds the builds pushed.
    pub(crate) fn push(&mut self, b: &BuildFact, facts: &Facts, cfg: &CoreConfig) {
        let stage_idx = cfg.stage_of_job(&b.pipeline, &b.job);
        let stage = stage_idx.map(|i| &cfg.stages[i]);
        let mut from: Vec<(BuildId, Method)> = vec![];
        for inp in &b.inputs {
            if let Some(st) = stage
                && st.inputs.as_ref().is_some_and(|l| !l.contains(&inp.step))
            {
                continue;
            }
            // Tracked git versions are commits, not builds.
            if cfg.resource_of_step(&inp.step).is_some() {
                continue;
            }
            let key = version_key(&b.pipeline, &inp.resource, &inp.version);
            // Whoever put a version defines what it carries; a version one an upstream
            // stage's build took (a `passed:` constraint hands it on) only counts when no
            // watched build put it (e.g. a chart commit merged by a bot).
            match self.produced.get(&key) {
                Some(p) => from.extend(p.iter().map(|id| (*id, Method::Exact))),
                None => from.extend(
                    self.taken
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .filter(|id| {
                            let Some(ub) = facts.builds.get(*id) else { return false };
                            match (stage_idx, cfg.stage_of_job(&ub.pipeline, &ub.job)) {
                                (Some(me), Some(up)) => cfg.stages[me].after.contains(&up),
                                _ => false,
                            }
                        })
                        .map(|id| (*id, Method::Exact)),
                ),
            }
        }
        if let Some(st) = stage {
            for br in &st.bridges {
                match br {
                    Bridge::MessageContains { input, output, key } => {
                        let msg = b.inputs.iter().find(|v| &v.step == input).and_then(|v| v.message.as_deref());
                        let values = self.by_output.get(output.as_str()).and_then(|m| m.get(key.as_str()));
                        if let (Some(m), Some(v)) = (msg, values) {
                            from.extend(v.named_by(m).into_iter().map(|id| (id, Method::Bridge)));
                        }
                    }
                    Bridge::Equals { input, input_key, output, key } => {
                        let val = b.inputs.iter().find(|v| &v.step == input).and_then(|v| v.version.get(input_key));
                        let values = self.by_output.get(output.as_str()).and_then(|m| m.get(key.as_str()));
                        if let (Some(x), Some(v)) = (val, values) {
                            from.extend(v.equal_to(x).into_iter().map(|id| (id, Method::Bridge)));
                        }
                    }
                }
            }
        }
        let mut pushed = Pushed::default();
        for out in &b.outputs {
            let key = version_key(&b.pipeline, &out.resource, &out.version);
            self.produced.entry(key).or_default().push(b.id);
            // Only bridges look output values up, by their (output step, key): the rest is
            // never read, and indexing it was most of the index's strings.
            for (k, v) in out.version.iter().filter(|(k, _)| bridged(cfg, &out.step, k)) {
                self.by_output.entry(out.step.clone()).or_default().entry(k.to_string()).or_default().push(v, b.id);
                if self.undo {
                    pushed.outputs.push((out.step.clone(), k.to_string()));
                }
            }
            if self.undo {
                pushed.produced.push(key);
            }
        }
        for inp in &b.inputs {
            let key = version_key(&b.pipeline, &inp.resource, &inp.version);
            self.taken.entry(key).or_default().push(b.id);
            if self.undo {
                pushed.taken.push(key);
            }
        }
        if !from.is_empty() {
            self.sources.insert(b.id, from);
        }
        if self.undo {
            self.pushed.insert(b.id, pushed);
        }
    }

    /// Forget every build from id `from` on (pushed with `undo`), newest first: each one's
    /// additions are the last of their lists.
    pub(crate) fn truncate(&mut self, from: BuildId) {
        let gone = self.pushed.split_off(&from);
        for (id, p) in gone.into_iter().rev() {
            for k in p.produced.iter().rev() {
                pop_last(&mut self.produced, k, id);
            }
            for k in p.taken.iter().rev() {
                pop_last(&mut self.taken, k, id);
            }
            for (step, k) in p.outputs.iter().rev() {
                if let Some(m) = self.by_output.get_mut(step) {
                    if let Some(v) = m.get_mut(k) {
                        v.pop(id);
                        if v.is_empty() {
                            m.remove(k);
                        }
                    }
                    if m.is_empty() {
                        self.by_output.remove(step);
                    }
                }
            }
            self.sources.remove(&id);
        }
    }
}

/// Does a configured bridge look up `key` of output step `step`?
fn bridged(cfg: &CoreConfig, step: &str, key: &str) -> bool {
    cfg.stages.iter().flat_map(|s| &s.bridges).any(|br| match br {
        Bridge::MessageContains { output, key: k, .. } | Bridge::Equals { output, key: k, .. } => {
            output == step && k == key
        }
    })
}

fn pop_last<K, Q>(map: &mut HashMap<K, Vec<BuildId>>, key: &Q, id: BuildId)
where
    K: std::borrow::Borrow<Q> + Eq + std::hash::Hash,
    Q: Eq + std::hash::Hash + ?Sized,
{
    if let Some(v) = map.get_mut(key)
        && v.last() == Some(&id)
    {
        v.pop();
        if v.is_empty() {
            map.remove(key);
        }
    }
}

impl Lineage {
    /// The relation over all facts, in build-id order: a version is put (or taken) before
    /// another build can take it, and Concourse build ids only grow, so a build's sources are
    /// always older builds.
    pub fn of(facts: &Facts, cfg: &CoreConfig) -> Lineage {
        let mut index = LineageIndex::default();
        for b in facts.builds.values() {
            index.push(b, facts, cfg);
        }
        Lineage { sources: index.sources }
    }

    /// Add to `kept` every build a kept build's carry comes from, transitively: keeping them is
    /// what leaves a kept build's carry unchanged when the rest is forgotten.
    pub fn close(&self, kept: &mut std::collections::BTreeSet<BuildId>) {
        let mut todo: Vec<BuildId> = kept.iter().copied().collect();
        while let Some(id) = todo.pop() {
            for (src, _) in self.sources.get(&id).into_iter().flatten() {
                if kept.insert(*src) {
                    todo.push(*src);
                }
            }
        }
    }
}

/// Each build's carry, in build-id order: its own tracked git inputs (and a put onto a tracked
/// git resource), merged with the carries of its [`Lineage`] sources.
pub(crate) fn compute_carries(
    facts: &Facts,
    cfg: &CoreConfig,
    lineage: &Lineage,
    pos: &HashMap<&str, usize>,
) -> HashMap<BuildId, Carry> {
    let mut carries: HashMap<BuildId, Carry> = HashMap::new();
    for b in facts.builds.values() {
        let carry =
            carry_of(b, cfg, lineage.sources.get(&b.id).map(|v| v.as_slice()).unwrap_or(&[]), &carries, pos, |_| {});
        carries.insert(b.id, carry);
    }
    carries
}

/// Does `message` name `value`: literally, or a full commit sha as cepler prints it
/// (`[<7 characters>] - <subject>`)? The rule [`BridgeValues::named_by`] indexes; the tests
/// hold the two equal.
#[cfg(test)]
fn message_names(message: &str, value: &str) -> bool {
    if message.contains(value) {
        return true;
    }
    let is_sha = value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit());
    is_sha && message.contains(&format!("[{}]", &value[..7]))
}

/// One build's carry, from the carries of the older builds it inherits from (`sources`).
/// `unresolved` hears each tracked git ref of the build that is no known commit (yet).
pub(crate) fn carry_of(
    b: &BuildFact,
    cfg: &CoreConfig,
    sources: &[(BuildId, Method)],
    carries: &HashMap<BuildId, Carry>,
    pos: &HashMap<&str, usize>,
    mut unresolved: impl FnMut(&str),
) -> Carry {
    let stage = cfg.stage_of_job(&b.pipeline, &b.job).map(|i| &cfg.stages[i]);
    let mut carry = Carry::default();
    for inp in &b.inputs {
        if let Some(st) = stage
            && st.inputs.as_ref().is_some_and(|l| !l.contains(&inp.step))
        {
            continue;
        }
        if let Some(res) = cfg.resource_of_step(&inp.step)
            && let Some(r) = inp.version.get("ref")
        {
            match pos.get(r) {
                Some(p) => merge_carry(&mut carry, &Carry::one(res, *p, Method::Exact), Method::Exact),
                None => unresolved(r),
            }
        }
    }
    // A put onto a tracked git resource (build-rc's tag) is the same version as its input;
    // Concourse drops that input from /builds/:id/resources, so read it from the output.
    for out in &b.outputs {
        if let Some(res) = cfg.resource_of_step(&out.step)
            && stage.is_none_or(|st| st.inputs.as_ref().is_none_or(|l| l.contains(&out.step)))
            && let Some(r) = out.version.get("ref")
        {
            match pos.get(r) {
                Some(p) => merge_carry(&mut carry, &Carry::one(res, *p, Method::Exact), Method::Exact),
                None => unresolved(r),
            }
        }
    }
    for (src, method) in sources {
        if let Some(c) = carries.get(src) {
            merge_carry(&mut carry, c, *method);
        }
    }
    carry.0.shrink_to_fit();
    carry
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::core::facts::{BuildFact, BuildStatus, VersionFact};

    const CONFIG: &str = "
repository: { github: o/r }
concourse: { url: 'http://ci/', team: dev }
resources: { repo: {} }
stages:
  - { name: rc, pipeline: p, jobs: [rc] }
  - name: tf
    pipeline: q
    jobs: [tf]
    after: [rc]
    bridges: [ { message_contains: { input: chart, output: image, key: digest } } ]
  - { name: bump, pipeline: q, jobs: [bump], inputs: [chart], after: [tf], environment: staging }
";

    fn v(step: &str, kv: &[(&str, &str)], message: Option<&str>) -> VersionFact {
        VersionFact {
            step: step.into(),
            resource: step.into(),
            version: kv.iter().map(|(k, x)| (k.to_string(), x.to_string())).collect(),
            message: message.map(String::from),
        }
    }

    fn build(id: BuildId, pipeline: &str, job: &str, inputs: Vec<VersionFact>, outputs: Vec<VersionFact>) -> BuildFact {
        BuildFact {
            id,
            pipeline: pipeline.into(),
            job: job.into(),
            name: id.to_string().into(),
            status: BuildStatus::Succeeded,
            start: Some(id * 10),
            end: Some(id * 10 + 5),
            rerun_of: None,
            url: String::new().into(),
            inputs,
            outputs,
            resources_known: true,
        }
    }

    /// The relation retention keeps and carries follow: a bridge ties a testflight build to the
    /// RC whose digest its chart message names (not to one put later); a version nobody put
    /// comes from the upstream stage's build that took it; a git input is no build at all.
    #[test]
    fn sources_are_producers_upstream_takers_and_bridges() {
        let cfg = crate::config::parse(CONFIG, "t.yaml", &|_| None).unwrap().core();
        let chart = |r: &str, m: &str| v("chart", &[("ref", r)], Some(m));
        let mut facts = Facts::default();
        for b in [
            build(
                1,
                "p",
                "rc",
                vec![v("repo", &[("ref", "c0")], None)],
                vec![v("image", &[("digest", "sha:a")], None)],
            ),
            build(
                2,
                "p",
                "rc",
                vec![v("repo", &[("ref", "c1")], None)],
                vec![v("image", &[("digest", "sha:b")], None)],
            ),
            build(3, "q", "tf", vec![chart("k1", "bump to sha:a")], vec![]),
            build(4, "q", "bump", vec![chart("k1", "bump to sha:a")], vec![]),
            build(5, "q", "tf", vec![chart("k2", "bump to sha:c")], vec![]),
            build(6, "p", "rc", vec![], vec![v("image", &[("digest", "sha:c")], None)]),
        ] {
            facts.apply(crate::core::facts::Fact::Build(b));
        }
        let l = Lineage::of(&facts, &cfg);
        let got: BTreeMap<BuildId, Vec<(BuildId, Method)>> = l.sources.clone().into_iter().collect();
        let want = BTreeMap::from([(3, vec![(1, Method::Bridge)]), (4, vec![(3, Method::Exact)])]);
        assert_eq!(got, want);
        let mut kept = BTreeSet::from([4]);
        l.close(&mut kept);
        assert_eq!(kept, BTreeSet::from([1, 3, 4]));
    }

    #[test]
    fn a_message_names_a_value_literally_or_a_sha_as_cepler_prints_it() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let check = |message: &str, value: &str, expect: bool| {
            assert_eq!(message_names(message, value), expect, "{message:?} names {value:?}");
        };
        check("bump to sha:a", "sha:a", true);
        check("[0123456] - chore: bump lana-bank-chart to 'x'", sha, true);
        check("0123456 without brackets", sha, false);
        check("[0123456] - a short value is not a sha", "0123456789", false);
        check("[fedcba9] - another commit", sha, false);
    }

    /// The index finds exactly the builds the rule names, in id order: full shas inside longer
    /// hex runs, cepler's `[short]`, free-text values, empty values never, and what a
    /// truncation takes back.
    #[test]
    fn the_bridge_index_names_what_the_rule_names() {
        let sha = |i: u32| format!("{:040x}", 0xabc0_0000_u64 + u64::from(i) * 0x1_0001);
        let values: Vec<String> = (0..6)
            .map(sha)
            .chain(["0.49.0-rc.17", "0.49.0", "", "lana-bank", "DEADBEEF"].map(String::from))
            .chain([format!("sha256:{}{}", sha(7), &sha(8)[..24]), format!("sha256:{}", "f".repeat(64))])
            .collect();
        let messages = [
            format!("bump to {}", sha(1)),
            format!("ci: bump lana-bank image {}{}", sha(2), sha(3)),
            format!("[{}] - feat: x\n[{}] - fix: y", &sha(4)[..7], &sha(5)[..7]),
            format!("[{}x] not a short sha", &sha(4)[..7]),
            "chore: release 0.49.0-rc.17 of lana-bank".to_string(),
            format!("x{}", &sha(0)[..39]),
            "DEADBEEF and deadbeef".to_string(),
            String::new(),
            format!("testflight image sha256:{}{}", sha(7), &sha(8)[..24]),
            format!("digest {}{}", sha(7), &sha(8)[..24]),
            format!("sha256:{}", "f".repeat(70)),
        ];
        let mut idx = BridgeValues::default();
        for (i, v) in values.iter().enumerate() {
            idx.push(v, i as BuildId + 10);
        }
        let check = |idx: &BridgeValues, n: usize| {
            for m in &messages {
                let want: Vec<BuildId> = values[..n]
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| !v.is_empty() && message_names(m, v))
                    .map(|(i, _)| i as BuildId + 10)
                    .collect();
                assert_eq!(idx.named_by(m), want, "{m:?} with {n} values");
            }
            for v in &values {
                let want: Vec<BuildId> =
                    values[..n].iter().enumerate().filter(|(_, x)| *x == v).map(|(i, _)| i as BuildId + 10).collect();
                assert_eq!(idx.equal_to(v), want, "{v:?}");
            }
        };
        check(&idx, values.len());
        assert!(!idx.named_by(&messages[1]).is_empty() && !idx.named_by(&messages[2]).is_empty());
        for n in (0..values.len()).rev() {
            idx.pop(n as BuildId + 10);
            check(&idx, n);
        }
        assert!(idx.is_empty());
    }
}
