//! cepler's semantics in the simulated world (bodymindarts/cepler: `src/workspace.rs`,
//! `src/database.rs`, `src/concourse/{check,ci_in}.rs`), a child of `engine` so it shares the
//! world's private state.
//!
//! - An environment's *state* is, for each file it deploys, the commit that last changed it.
//!   `latest:` files (`paths`) come from the deployments branch; `propagated:` files come from
//!   a state the upstream environment (`passed:`) has *recorded*.
//! - `check` emits `{trigger, environment}` when the state the environment would deploy differs
//!   from its recorded one. The trigger is the oldest commit with that state, walking back from
//!   the gate: the newest commit that changed one of its `latest:` files or recorded the upstream
//!   state it takes.
//! - With the queue (cepler's default), a propagated environment takes the upstream's recorded
//!   states one by one, oldest first: the first one after the state it took last whose
//!   propagated files differ from its own; otherwise the upstream's current state.
//! - A gates branch maps environment → `HEAD` or a sha; only history up to that commit counts,
//!   and an environment missing from the gates file has nothing to deploy (check errors).
//! - `in` recomputes the state: a version whose trigger no longer matches a new state fails the
//!   get ("Trigger is out of sync"); with nothing new it reproduces the recorded state (a
//!   redeploy), or, asked for another trigger, gives an empty directory (nothing is deployed).
//! - `out` (`cepler record`) commits `.cepler/<env>.state` and pushes; a failed deploy records
//!   nothing, so nothing new reaches the environments after it.

use std::collections::BTreeMap;

use super::*;

/// One recorded (or prepared) state of an environment.
#[derive(Debug, Clone, PartialEq)]
pub struct CeplerState {
    /// The deployments commit cepler names it by (the version's `trigger`).
    pub trigger: Sha,
    /// File → the commit that last changed it.
    pub files: BTreeMap<String, Sha>,
    /// The upstream state's trigger it took its propagated files from.
    pub propagated_head: Option<Sha>,
    /// Tracked commits the state carries (ground truth only).
    pub carries: Carries,
    /// The commit that recorded it (`None` while only prepared).
    pub record_commit: Option<Sha>,
    pub recorded_at: Option<i64>,
}

/// How an operator pins an environment in the gates file.
#[derive(Debug, Clone, PartialEq)]
pub enum GatePin {
    Head,
    /// The trigger of the state `back` recordings before the environment's current one (0: the
    /// current one): what an operator reads off the recorded history to roll back.
    Recorded {
        environment: String,
        back: usize,
    },
    Sha(Sha),
    /// The deployments commit that recorded the environment's current state: "release what
    /// it runs now". Unlike its trigger, that commit is new with every recording, so the gated
    /// environment sees a new version (Concourse ignores a version it already has).
    RecordedAt {
        environment: String,
    },
}

const STATE_DIR: &str = ".cepler/";

fn current_files(db: &BTreeMap<String, Vec<CeplerState>>, env: &str) -> BTreeMap<String, Sha> {
    db.get(env).and_then(|v| v.last()).map(|s| s.files.clone()).unwrap_or_default()
}

impl World {
    /// The environment a cepler resource deploys, when a job gets it (the `-out` resource of a
    /// put only records).
    fn cepler_env_resource(&self, p: usize, r: usize) -> Option<String> {
        let ResKind::Cepler { env, .. } = &self.res[p][r].kind else { return None };
        let read = self.concourse.pipelines[p].jobs.iter().any(|j| j.inputs.iter().any(|i| i.resource == r));
        read.then(|| env.clone())
    }

    /// Files of `branch` up to position `upto` matching `keep` and not `drop`: path → the commit
    /// that last changed it.
    fn files_at(
        &self,
        repo: &str,
        branch: &str,
        upto: usize,
        keep: &GitPathFilter,
        drop: Option<&GitPathFilter>,
    ) -> BTreeMap<String, Sha> {
        let mut out = BTreeMap::new();
        let Some(rp) = self.github.get(repo) else { return out };
        let Some(list) = rp.branches.get(branch) else { return out };
        for sha in list.iter().take(upto + 1) {
            for f in rp.commits[sha].file_names() {
                if f.starts_with(STATE_DIR) || !keep.matches_path(f) {
                    continue;
                }
                if drop.is_some_and(|d| !d.is_unfiltered() && d.matches_path(f)) {
                    continue;
                }
                out.insert(f.to_string(), sha.clone());
            }
        }
        out
    }

    /// Before anything runs, every environment has a recorded state: what the initial commit
    /// holds (the world starts with everything deployed once).
    pub(super) fn seed_cepler(&mut self) {
        for p in 0..self.res.len() {
            for r in 0..self.res[p].len() {
                let Some(env) = self.cepler_env_resource(p, r) else { continue };
                if self.cepler.contains_key(&env) {
                    continue;
                }
                let ResKind::Cepler { repo, branch, filter, propagated, passed, .. } = &self.res[p][r].kind else {
                    continue;
                };
                let Some(root) = self.github.get(repo).and_then(|rp| rp.branches.get(branch)?.first().cloned()) else {
                    continue;
                };
                let mut files = self.files_at(repo, branch, 0, filter, Some(propagated));
                if !propagated.is_unfiltered() {
                    files.extend(self.files_at(repo, branch, 0, propagated, None));
                }
                let state = CeplerState {
                    trigger: root.clone(),
                    files,
                    propagated_head: passed.as_ref().map(|_| root.clone()),
                    carries: vec![],
                    record_commit: Some(root),
                    recorded_at: Some(self.now),
                };
                self.cepler.insert(env, vec![state]);
            }
        }
    }

    /// The state environment resource (p, r) would deploy now, or `None` when cepler's check
    /// finds nothing deployable (no gate for it, upstream never recorded).
    pub fn cepler_target(&self, p: usize, r: usize) -> Option<CeplerState> {
        let ResKind::Cepler { repo, branch, env, filter, passed, propagated, gates_branch, .. } = &self.res[p][r].kind
        else {
            return None;
        };
        let rp = self.github.get(repo)?;
        let list = rp.branches.get(branch)?;
        let gate_pos = match gates_branch {
            None => list.len() - 1,
            Some(gb) => {
                let gate_commit = rp.head(gb)?;
                match self.gates.get(gate_commit)?.get(env)?.as_str() {
                    "HEAD" => list.len() - 1,
                    sha => rp.position(branch, sha)?,
                }
            }
        };
        let pos_of = |s: &Sha| rp.position(branch, s).unwrap_or(0);
        let mut files = self.files_at(repo, branch, gate_pos, filter, Some(propagated));
        let mut trigger_pos = files.values().map(pos_of).max().unwrap_or(0);
        let mut carries: Carries = vec![];
        for s in files.values().collect::<std::collections::BTreeSet<_>>() {
            carries.extend(self.commit_carries.get(&(repo.clone(), s.clone())).cloned().unwrap_or_default());
        }
        let mut propagated_head = None;
        if let Some(up) = passed {
            // The upstream's states as the database at the gate commit holds them.
            let ups: Vec<&CeplerState> = self
                .cepler
                .get(up)?
                .iter()
                .filter(|s| s.record_commit.as_ref().is_some_and(|c| pos_of(c) <= gate_pos))
                .collect();
            let newest = *ups.last()?;
            let mine = self.cepler.get(env).and_then(|v| v.last());
            let prop_of = |s: &CeplerState| -> BTreeMap<String, Sha> {
                s.files
                    .iter()
                    .filter(|(f, _)| propagated.matches_path(f))
                    .map(|(f, c)| (f.clone(), c.clone()))
                    .collect()
            };
            let pick = match mine.and_then(|m| m.propagated_head.as_ref().map(|h| (m, h))) {
                Some((m, h)) if *h != newest.trigger => match ups.iter().position(|s| &s.trigger == h) {
                    // The queue: the oldest later state whose propagated files differ.
                    Some(i) => {
                        let have = prop_of(m);
                        ups[i + 1..].iter().find(|s| prop_of(s) != have).copied().unwrap_or(newest)
                    }
                    None => newest,
                },
                _ => newest,
            };
            files.extend(prop_of(pick));
            trigger_pos = trigger_pos.max(pick.record_commit.as_ref().map(pos_of).unwrap_or(0));
            carries.extend(pick.carries.iter().cloned());
            propagated_head = Some(pick.trigger.clone());
        }
        carries.sort();
        carries.dedup();
        Some(CeplerState {
            trigger: list[trigger_pos].clone(),
            files,
            propagated_head,
            carries,
            record_commit: None,
            recorded_at: None,
        })
    }

    pub(super) fn check_cepler(&mut self, p: usize, r: usize) {
        let Some(env) = self.cepler_env_resource(p, r) else { return };
        let Some(target) = self.cepler_target(p, r) else { return };
        let current = self.cepler.get(&env).and_then(|v| v.last());
        if current.is_some_and(|c| c.files == target.files) {
            return;
        }
        let version =
            BTreeMap::from([("trigger".to_string(), target.trigger.clone()), ("environment".to_string(), env)]);
        // An already known version keeps its check order (Concourse's upsert): re-emitting an
        // old trigger, as a gate pinned back makes cepler do, triggers nothing by itself.
        self.save_version(p, r, version, vec![], target.carries, false);
    }

    /// cepler's `in` for every cepler input of build `id`; false when the get fails.
    pub(super) fn prepare_cepler(&mut self, id: BuildId, inputs: &[BuildInput]) -> bool {
        let Some(p) = self.concourse.build(id).map(|b| b.pipeline) else { return true };
        for inp in inputs {
            let Some(env) = self.cepler_env_resource(p, inp.resource) else { continue };
            let wanted = self.concourse.version(inp.version).and_then(|v| v.version.get("trigger").cloned());
            let Some(wanted) = wanted else { continue };
            let current = self.cepler.get(&env).and_then(|v| v.last()).cloned();
            let state = match self.cepler_target(p, inp.resource) {
                Some(t) if current.as_ref().is_none_or(|c| c.files != t.files) => {
                    if t.trigger != wanted {
                        return false;
                    }
                    t
                }
                // Nothing new: cepler reproduces the recorded state, if that is the one asked for;
                // otherwise "Reproduced state is out of sync - providing empty dir": the get
                // succeeds with nothing in it, so the build deploys and records nothing.
                _ => match current {
                    Some(c) if c.trigger == wanted => CeplerState { record_commit: None, recorded_at: None, ..c },
                    _ => continue,
                },
            };
            // `in` prints each file that differs from the recorded state as metadata:
            // `{latest|<upstream env>}/<path>` → `[<short sha>] - <subject>` of the commit that
            // last changed it (cepler `DiffElem`, `FileState`'s Display).
            let metadata = self.cepler_diff_metadata(p, inp.resource, &state, current_files(&self.cepler, &env));
            if let Some(v) = self.concourse.version_mut(inp.version)
                && v.metadata.is_empty()
            {
                v.metadata = metadata;
            }
            self.deploys.insert(id, (env, state));
        }
        true
    }

    fn cepler_diff_metadata(
        &self,
        p: usize,
        r: usize,
        state: &CeplerState,
        recorded: BTreeMap<String, Sha>,
    ) -> Vec<(String, String)> {
        let ResKind::Cepler { repo, passed, propagated, .. } = &self.res[p][r].kind else { return vec![] };
        let Some(rp) = self.github.get(repo) else { return vec![] };
        state
            .files
            .iter()
            .filter(|(f, c)| recorded.get(*f) != Some(c))
            .map(|(f, c)| {
                let from = match passed {
                    Some(up) if propagated.matches_path(f) => up.as_str(),
                    _ => "latest",
                };
                let subject = rp.commits.get(c).map(|x| x.subject().to_string()).unwrap_or_default();
                (format!("{{{from}}}/{f}"), format!("[{}] - {subject}", &c[..7.min(c.len())]))
            })
            .collect()
    }

    /// `cepler record` + push after a successful deploy of build `id`.
    pub(super) fn record_cepler(&mut self, id: BuildId) {
        let Some((env, mut state)) = self.deploys.get(&id).cloned() else { return };
        let Some(p) = self.concourse.build(id).map(|b| b.pipeline) else { return };
        let Some((repo, branch)) =
            self.concourse.pipelines[p].resources.iter().enumerate().find_map(|(r, _)| match &self.res[p][r].kind {
                ResKind::Cepler { repo, branch, env: e, .. } if *e == env => Some((repo.clone(), branch.clone())),
                _ => None,
            })
        else {
            return;
        };
        let now = self.now;
        let cepler_bot = Person { name: "Cepler".into(), email: "bot@cepler.io".into(), login: None };
        let msg = format!("ci(cepler): Updated '{env}' state");
        let sha = self.land_commit(&repo, &branch, msg, vec![format!("{STATE_DIR}{env}.state")], cepler_bot, now, now);
        state.record_commit = Some(sha);
        state.recorded_at = Some(now);
        self.cepler.entry(env).or_default().push(state);
    }

    /// An operator pushes the gates file with `environment` set to `pin`.
    pub(super) fn push_gate(&mut self, repo: &str, branch: &str, environment: &str, pin: &GatePin, by: &str) {
        let value = match pin {
            GatePin::Head => "HEAD".to_string(),
            GatePin::Sha(s) => s.clone(),
            GatePin::Recorded { environment, back } => {
                let Some(states) = self.cepler.get(environment) else { return };
                let Some(s) = states.len().checked_sub(1 + back).and_then(|i| states.get(i)) else { return };
                s.trigger.clone()
            }
            GatePin::RecordedAt { environment } => {
                let Some(c) = self.cepler.get(environment).and_then(|v| v.last()?.record_commit.clone()) else {
                    return;
                };
                c
            }
        };
        let mut gates = self
            .github
            .get(repo)
            .and_then(|rp| rp.head(branch))
            .and_then(|h| self.gates.get(h))
            .cloned()
            .unwrap_or_default();
        gates.insert(environment.to_string(), value.clone());
        let now = self.now;
        let person = Person { name: by.into(), email: format!("{by}@galoy.io"), login: Some(by.into()) };
        let msg = format!("chore: gate {environment} at {value}");
        let sha = self.land_commit(repo, branch, msg, vec!["cepler-gates/lana-bank.yml".into()], person, now, now);
        self.gates.insert(sha, gates);
    }

    /// `fly pin-resource`: to the version whose trigger is the environment's gate (or the newest
    /// version with a `HEAD` gate); `None` unpins.
    pub(super) fn pin_resource(&mut self, p: usize, r: usize, pin: bool) {
        if !pin {
            self.concourse.pipelines[p].resources[r].pinned = None;
            self.dirty.insert(p);
            return;
        }
        let ResKind::Cepler { repo, env, gates_branch, .. } = &self.res[p][r].kind else { return };
        let gate = gates_branch
            .as_ref()
            .and_then(|gb| self.github.get(repo)?.head(gb))
            .and_then(|h| self.gates.get(h))
            .and_then(|g| g.get(env))
            .filter(|v| *v != "HEAD")
            .cloned();
        let versions = &self.concourse.pipelines[p].resources[r].versions;
        let found = match gate {
            Some(sha) => versions
                .iter()
                .rev()
                .copied()
                .find(|v| self.concourse.version(*v).is_some_and(|v| v.version.get("trigger") == Some(&sha))),
            None => versions.last().copied(),
        };
        self.concourse.pipelines[p].resources[r].pinned = found;
        self.dirty.insert(p);
    }

    /// Each environment a job deploys, in topology order: (environment, upstream, gated,
    /// pipeline, the job that gets it).
    pub fn cepler_environments(&self) -> Vec<(String, Option<String>, bool, usize, usize)> {
        let mut out: Vec<(String, Option<String>, bool, usize, usize)> = vec![];
        for (p, pl) in self.concourse.pipelines.iter().enumerate() {
            for (j, job) in pl.jobs.iter().enumerate() {
                for i in &job.inputs {
                    if let ResKind::Cepler { env, passed, gates_branch, .. } = &self.res[p][i.resource].kind
                        && !out.iter().any(|e| &e.0 == env)
                    {
                        out.push((env.clone(), passed.clone(), gates_branch.is_some(), p, j));
                    }
                }
            }
        }
        out
    }

    /// (environment, repo, gates branch) of every gated environment.
    pub(super) fn gated_environments(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = vec![];
        for rs in &self.res {
            for r in rs {
                if let ResKind::Cepler { env, repo, gates_branch: Some(gb), .. } = &r.kind
                    && !out.iter().any(|e| &e.0 == env)
                {
                    out.push((env.clone(), repo.clone(), gb.clone()));
                }
            }
        }
        out
    }

    /// The resource index of `pipeline/resource`.
    pub fn resource_index(&self, pipeline: &str, resource: &str) -> Option<(usize, usize)> {
        let p = self.concourse.pipelines.iter().position(|x| x.name == pipeline)?;
        let r = self.concourse.pipelines[p].resource_by_name(resource)?;
        Some((p, r))
    }
}
