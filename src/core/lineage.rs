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

use crate::core::facts::{BuildId, Facts};
use crate::core::journey::{Bridge, CoreConfig};

/// Per tracked resource, the newest commit (first-parent position) a build delivers, and how
/// that was learned.
pub(crate) type Carry = BTreeMap<String, (usize, Method)>;

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

fn version_key(pipeline: &str, resource: &str, v: &BTreeMap<String, String>) -> String {
    let mut k = format!("{pipeline}/{resource}");
    for (a, b) in v {
        k.push_str(&format!(",{a}:{b}"));
    }
    k
}

fn merge_carry(into: &mut Carry, from: &Carry, at_least: Method) {
    for (r, (p, m)) in from {
        let m = (*m).max(at_least);
        match into.get_mut(r) {
            Some(e) if e.0 > *p => {}
            Some(e) if e.0 == *p => e.1 = e.1.min(m),
            _ => {
                into.insert(r.clone(), (*p, m));
            }
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

impl Lineage {
    /// The relation over all facts, in build-id order: a version is put (or taken) before
    /// another build can take it, and Concourse build ids only grow, so a build's sources are
    /// always older builds.
    pub fn of(facts: &Facts, cfg: &CoreConfig) -> Lineage {
        let mut sources: HashMap<BuildId, Vec<(BuildId, Method)>> = HashMap::new();
        // version key → builds that put it (outputs) or took it (inputs).
        let mut produced: HashMap<String, Vec<BuildId>> = HashMap::new();
        let mut taken: HashMap<String, Vec<BuildId>> = HashMap::new();
        // (output step, key) → [(value, build)] for bridges.
        let mut by_output: HashMap<(&str, &str), Vec<(&str, BuildId)>> = HashMap::new();
        for b in facts.builds.values() {
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
                match produced.get(&key) {
                    Some(p) => from.extend(p.iter().map(|id| (*id, Method::Exact))),
                    None => from.extend(
                        taken
                            .get(&key)
                            .into_iter()
                            .flatten()
                            .filter(|id| {
                                let ub = &facts.builds[*id];
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
                            if let (Some(m), Some(v)) = (msg, by_output.get(&(output.as_str(), key.as_str()))) {
                                from.extend(
                                    v.iter()
                                        .filter(|(val, _)| !val.is_empty() && message_names(m, val))
                                        .map(|(_, id)| (*id, Method::Bridge)),
                                );
                            }
                        }
                        Bridge::Equals { input, input_key, output, key } => {
                            let val = b.inputs.iter().find(|v| &v.step == input).and_then(|v| v.version.get(input_key));
                            if let (Some(x), Some(v)) = (val, by_output.get(&(output.as_str(), key.as_str()))) {
                                from.extend(v.iter().filter(|(val, _)| *val == x).map(|(_, id)| (*id, Method::Bridge)));
                            }
                        }
                    }
                }
            }
            for out in &b.outputs {
                produced.entry(version_key(&b.pipeline, &out.resource, &out.version)).or_default().push(b.id);
                for (k, v) in &out.version {
                    by_output.entry((out.step.as_str(), k.as_str())).or_default().push((v.as_str(), b.id));
                }
            }
            for inp in &b.inputs {
                taken.entry(version_key(&b.pipeline, &inp.resource, &inp.version)).or_default().push(b.id);
            }
            if !from.is_empty() {
                sources.insert(b.id, from);
            }
        }
        Lineage { sources }
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
        let stage = cfg.stage_of_job(&b.pipeline, &b.job).map(|i| &cfg.stages[i]);
        let mut carry = Carry::new();
        for inp in &b.inputs {
            if let Some(st) = stage
                && st.inputs.as_ref().is_some_and(|l| !l.contains(&inp.step))
            {
                continue;
            }
            if let Some(res) = cfg.resource_of_step(&inp.step)
                && let Some(p) = inp.version.get("ref").and_then(|r| pos.get(r.as_str()))
            {
                merge_carry(&mut carry, &Carry::from([(res.to_string(), (*p, Method::Exact))]), Method::Exact);
            }
        }
        // A put onto a tracked git resource (build-rc's tag) is the same version as its input;
        // Concourse drops that input from /builds/:id/resources, so read it from the output.
        for out in &b.outputs {
            if let Some(res) = cfg.resource_of_step(&out.step)
                && stage.is_none_or(|st| st.inputs.as_ref().is_none_or(|l| l.contains(&out.step)))
                && let Some(p) = out.version.get("ref").and_then(|r| pos.get(r.as_str()))
            {
                merge_carry(&mut carry, &Carry::from([(res.to_string(), (*p, Method::Exact))]), Method::Exact);
            }
        }
        for (src, method) in lineage.sources.get(&b.id).into_iter().flatten() {
            if let Some(c) = carries.get(src) {
                let c = c.clone();
                merge_carry(&mut carry, &c, *method);
            }
        }
        carries.insert(b.id, carry);
    }
    carries
}

/// Does `message` name `value`: literally, or a full commit sha as cepler prints it
/// (`[<7 characters>] - <subject>`)?
fn message_names(message: &str, value: &str) -> bool {
    if message.contains(value) {
        return true;
    }
    let is_sha = value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit());
    is_sha && message.contains(&format!("[{}]", &value[..7]))
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
            name: id.to_string(),
            status: BuildStatus::Succeeded,
            start: Some(id * 10),
            end: Some(id * 10 + 5),
            rerun_of: None,
            url: String::new(),
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
}
