//! The `watch` loop and `report`: a clock, a journey feed, the monitor and the display.
//!
//! Standalone, the feed polls GitHub and Concourse with the exporter's own source clients and
//! derives journeys with the exporter's engine and configuration (in memory, no store). With
//! `--from URL` it reads one journey from a running exporter's JSON API instead, so watchers add
//! no load on Concourse (only a failed build's log is read from it, once).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Source;
use crate::config::Config;
use crate::core::journey::{CoreConfig, Facts, derive};
use crate::http::{JourneyJson, Snapshot};
use crate::sources::ErrorKind;
use crate::sources::concourse::ConcourseSource;
use crate::sources::github::GithubSource;
use crate::sources::telemetry::SourceTelemetry;

use super::display::Display;
use super::monitor::{Monitor, Verdict, verdict};
use super::plan::{PathKind, Plan};
use super::report::Timeline;
use super::target::{self, Target};
use super::{WatchError, exit, fmt_secs};

/// Where "now" comes from: the system's clock, the simulator's (`--sim-clock`, for tests) or a
/// running exporter's (`--from`). A [`crate::clock::Source`] with `watch`'s errors.
pub struct Clock(Source);

impl Clock {
    pub fn new(sim_clock: Option<&str>) -> Result<Clock, WatchError> {
        match sim_clock {
            None => Ok(Clock(Source::System)),
            Some(u) => Ok(Clock(Source::simulator(http_client()?, u))),
        }
    }

    /// The simulator's clock when given, else the exporter's with `--from`, else the system's.
    pub fn for_watch(sim_clock: Option<&str>, from: Option<&str>) -> Result<Clock, WatchError> {
        match (sim_clock, from) {
            (None, Some(base)) => Ok(Clock(Source::exporter(http_client()?, base))),
            _ => Clock::new(sim_clock),
        }
    }

    pub async fn now(&self) -> Result<i64, WatchError> {
        match &self.0 {
            // The exporter's status answer, with its own errors (an exporter too old to have it).
            Source::Exporter { client, url } => Ok(exporter_status(client, url).await?.now),
            s => s.now().await.map_err(|e| WatchError::Clock { url: e.url, why: e.why }),
        }
    }
}

/// `GET {base}/api/v1/status` of a running exporter.
pub async fn exporter_status(client: &reqwest::Client, base: &str) -> Result<crate::http::StatusJson, WatchError> {
    let url = format!("{base}/api/v1/status");
    let err = |why: String| WatchError::Exporter { url: url.clone(), why };
    let r = client.get(&url).send().await.map_err(|e| err(request_error(&e)))?;
    let status = r.status();
    let body = r.text().await.map_err(|e| err(request_error(&e)))?;
    if !status.is_success() {
        return Err(err(format!("HTTP {status}: {} (is it a deploy-journey exporter?)", error_text(&body))));
    }
    serde_json::from_str(&body).map_err(|e| err(format!("not an exporter status: {e}")))
}

/// What failed in a request, cause by cause, each said once: reqwest's own message only names
/// the URL ("error sending request for url (...)"); the reason is in its sources.
pub fn request_error(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = vec![];
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        let text = c.to_string();
        // The URL is already in the message this goes into.
        let text = match text.find(" for url (") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = c.source();
    }
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    format!("{kind}: {}", parts.join(": "))
}

fn http_client() -> Result<reqwest::Client, WatchError> {
    reqwest::Client::builder()
        .user_agent(concat!("deploy-journey-watch/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| WatchError::Exporter { url: String::new(), why: format!("HTTP client: {e}") })
}

/// Journeys of one commit, from the engine or from an exporter.
pub enum Feed {
    Standalone(Box<Standalone>),
    Exporter { client: reqwest::Client, base: String },
}

pub struct Standalone {
    gh: GithubSource,
    cc: ConcourseSource,
    facts: Facts,
    core: CoreConfig,
    meta: Snapshot,
}

impl Feed {
    pub fn new(cfg: &Config, from: Option<&str>) -> Result<Feed, WatchError> {
        match from {
            Some(base) => Ok(Feed::Exporter { client: http_client()?, base: base.trim_end_matches('/').to_string() }),
            None => {
                let telemetry = Arc::new(SourceTelemetry::new());
                Ok(Feed::Standalone(Box::new(Standalone {
                    gh: GithubSource::new(cfg.github(), telemetry.clone())?,
                    cc: ConcourseSource::new(cfg.concourse(), telemetry)?,
                    facts: Facts::default(),
                    core: cfg.core(),
                    meta: Snapshot {
                        environments: cfg.environments(),
                        repository: cfg.repository_slug(),
                        repository_url: cfg.repository_web_url(),
                        ..Default::default()
                    },
                })))
            }
        }
    }

    /// Poll once and return the commit's journey, `None` while the engine has not seen it.
    /// `sha` is a full sha or a prefix.
    pub async fn journey(&mut self, sha: &str, now: i64) -> Result<Option<JourneyJson>, WatchError> {
        match self {
            Feed::Standalone(s) => {
                let (gh, cc) = tokio::join!(s.gh.poll(now), s.cc.poll(now));
                // A source's cursor moves with its answer: keep what one source said even when
                // the other failed, then report the failure.
                let mut failed = None;
                for r in [gh, cc] {
                    match r {
                        Ok(facts) => facts.into_iter().for_each(|f| {
                            s.facts.apply(f);
                        }),
                        Err(e) => failed = failed.or(Some(e)),
                    }
                }
                if let Some(e) = failed {
                    return Err(e.into());
                }
                let derived = derive(&s.facts, &s.core, now);
                let hits: Vec<_> = derived.journeys.iter().filter(|j| j.sha.starts_with(sha)).collect();
                match hits.as_slice() {
                    [] => Ok(None),
                    [j] => {
                        let history = crate::core::eta::History::learn(&derived, &s.core, now);
                        let mut v = JourneyJson::from(j, &s.meta);
                        v.eta = crate::core::eta::predict(j, &s.core, &history, now);
                        Ok(Some(v))
                    }
                    many => Err(WatchError::BadTarget {
                        target: sha.to_string(),
                        why: format!("ambiguous: {} commits start with it", many.len()),
                    }),
                }
            }
            Feed::Exporter { client, base } => {
                let url = format!("{base}/api/v1/journeys/{sha}");
                let err = |why: String| WatchError::Exporter { url: url.clone(), why };
                let r = client.get(&url).send().await.map_err(|e| err(request_error(&e)))?;
                let status = r.status();
                let body = r.text().await.map_err(|e| err(request_error(&e)))?;
                match status.as_u16() {
                    200 => serde_json::from_str(&body).map(Some).map_err(|e| err(format!("not a journey: {e}"))),
                    404 => Ok(None),
                    400 | 409 => Err(WatchError::BadTarget { target: sha.to_string(), why: error_text(&body) }),
                    _ => Err(err(format!("HTTP {status}: {}", error_text(&body)))),
                }
            }
        }
    }

    /// What went wrong in the last poll without failing it (a pipeline that did not answer).
    pub fn problems(&self) -> Vec<String> {
        match self {
            Feed::Standalone(s) => s.cc.last_errors().iter().map(|e| e.to_string()).collect(),
            Feed::Exporter { .. } => vec![],
        }
    }

    /// The newest commit on the tracked branch.
    async fn head(&mut self, branch: &str) -> Result<String, WatchError> {
        match self {
            Feed::Standalone(s) => Ok(s.gh.commit(branch).await?.sha),
            Feed::Exporter { client, base } => {
                let url = format!("{base}/api/v1/journeys?limit=1");
                let err = |why: String| WatchError::Exporter { url: url.clone(), why };
                let r = client.get(&url).send().await.map_err(|e| err(request_error(&e)))?;
                let v: serde_json::Value = r.json().await.map_err(|e| err(request_error(&e)))?;
                v["journeys"][0]["sha"].as_str().map(str::to_string).ok_or_else(|| err(NO_JOURNEYS_YET.into()))
            }
        }
    }

    /// A full sha for a prefix, when GitHub can be asked; the exporter resolves prefixes itself.
    async fn resolve(&mut self, prefix: &str) -> Result<String, WatchError> {
        match self {
            Feed::Standalone(s) => match s.gh.commit(prefix).await {
                Ok(c) => Ok(c.sha),
                Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Client) => {
                    Err(WatchError::UnknownCommit(prefix.to_string()))
                }
                Err(e) => Err(e.into()),
            },
            Feed::Exporter { .. } => Ok(prefix.to_string()),
        }
    }
}

/// An exporter that has not published its first poll yet (just started, as in the demo).
const NO_JOURNEYS_YET: &str = "no journeys yet";

fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

pub struct Options {
    pub target: Option<String>,
    pub merge: bool,
    pub until: Option<String>,
    pub keep_going: bool,
    /// Time between polls; `None`: the exporter's with `from`, else the config's.
    pub interval: Option<Duration>,
    /// Measured on the watch clock (the simulator's with `sim_clock`).
    pub timeout: Option<Duration>,
    pub from: Option<String>,
    pub sim_clock: Option<String>,
    /// Log lines shown for a failed build.
    pub log_lines: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Reached,
    Failed,
    TimedOut,
    NotMerged,
}

impl Ending {
    pub fn code(self) -> u8 {
        match self {
            Ending::Reached => exit::REACHED,
            Ending::Failed => exit::FAILED,
            Ending::TimedOut => exit::TIMED_OUT,
            Ending::NotMerged => exit::NOT_MERGED,
        }
    }
}

pub struct Finish {
    pub ending: Ending,
    /// The journey as last seen (none when it was never seen, or a PR was not merged).
    pub timeline: Option<Timeline>,
}

/// Consecutive failed polls after which `watch` gives up (exit 5).
const MAX_POLL_FAILURES: u32 = 10;

/// Follow the target until it reaches the goal, fails, or the timeout passes.
pub async fn watch(cfg: &Config, o: &Options, d: &mut Display) -> Result<Finish, WatchError> {
    let clock = Clock::for_watch(o.sim_clock.as_deref(), o.from.as_deref())?;
    let t0 = clock.now().await?;
    let interval = poll_interval(cfg, o, d, t0).await?;
    let deadline = o.timeout.map(|t| t0 + t.as_secs() as i64);
    let repository = cfg.repository_slug();
    let target = target::parse(o.target.as_deref(), &repository)?;
    if o.merge && !matches!(target, Target::Pull(_)) {
        return Err(WatchError::BadTarget {
            target: o.target.clone().unwrap_or_default(),
            why: "--merge needs a pull request (a number, #N or its URL)".into(),
        });
    }
    let mut feed = Feed::new(cfg, o.from.as_deref())?;
    let core = cfg.core();
    // Validate --until before anything is merged.
    if let Some(u) = &o.until {
        Plan::new(&core, PathKind::Full, &[], Some(u))?;
    }
    let sha = match target {
        Target::Head => {
            // A just-started exporter publishes after its first poll: wait for it a little.
            let mut tries = 0;
            loop {
                match feed.head(&cfg.repository.branch).await {
                    Err(WatchError::Exporter { why, .. }) if why == NO_JOURNEYS_YET && tries < MAX_POLL_FAILURES => {
                        tries += 1;
                        tokio::time::sleep(interval.max(Duration::from_millis(500))).await;
                    }
                    r => break r?,
                }
            }
        }
        Target::Sha(p) => feed.resolve(&p).await?,
        Target::Pull(n) => match pull_merge_commit(cfg, o, n, &clock, deadline, d).await? {
            Ok(sha) => sha,
            Err(ending) => return Ok(Finish { ending, timeline: None }),
        },
    };
    d.say(clock.now().await?, &format!("following commit {sha} on {repository}@{}", cfg.repository.branch));

    let mut monitor = Monitor::new();
    let mut plan: Option<Plan> = None;
    let mut warnings: Vec<String> = vec![];
    let mut last: Option<JourneyJson> = None;
    let mut failures = 0u32;
    let mut said_waiting = false;
    let mut failed_builds_shown: Vec<i64> = vec![];
    // Partial poll problems already said, so a lasting one is said once.
    let mut problems_said: Vec<String> = vec![];
    loop {
        // Nobody reads any more (`watch … | head`): stop instead of following to the end.
        if let Some(e) = d.take_write_error() {
            return Err(WatchError::Output(e));
        }
        let now = clock.now().await?;
        match feed.journey(&sha, now).await {
            Ok(Some(j)) => {
                failures = 0;
                let problems = feed.problems();
                for p in &problems {
                    if !problems_said.contains(p) {
                        d.say(now, &format!("source problem (following what answered): {p}"));
                    }
                }
                problems_said = problems;
                let p = match &plan {
                    Some(p) => p,
                    None => {
                        let kind = PathKind::from_change_type(j.change_type);
                        d.say(now, &format!("{} {:?} by {}", j.short_sha, j.subject, j.author));
                        let p = Plan::new(&core, kind, &j.resources, o.until.as_deref())?;
                        d.say(now, &p.explain());
                        plan.insert(p)
                    }
                };
                for e in monitor.observe(p, &j, now) {
                    if e.is_warning() {
                        warnings.push(e.line());
                    }
                    d.say(now, &e.line());
                }
                d.update(&j, now);
                match verdict(p, &j) {
                    Verdict::Reached => {
                        let what = match &p.goal_environment {
                            Some(env) => format!("deployed to {env}"),
                            None => format!("{} succeeded", p.goal_name),
                        };
                        d.say(now, &format!("done: {} {what}", j.short_sha));
                        return Ok(Finish {
                            ending: Ending::Reached,
                            timeline: Some(Timeline::from_journey(&j, warnings)),
                        });
                    }
                    Verdict::NotApplicable { stage } => return Err(WatchError::NotApplicable { stage }),
                    Verdict::Incomplete => return Err(WatchError::Incomplete { sha: j.short_sha.clone() }),
                    Verdict::Failed { stage, job, build_id, build, url } => {
                        if !failed_builds_shown.contains(&build_id) {
                            failed_builds_shown.push(build_id);
                            d.say(now, &format!("FAILED at stage {stage}: job {job} build #{build} ({url})"));
                            match log_tail(cfg, &mut feed, build_id, o.log_lines).await {
                                Ok(lines) if !lines.is_empty() => {
                                    d.say(now, &format!("last {} log lines of {job} #{build}:", lines.len()));
                                    for l in lines {
                                        d.say(now, &format!("  | {l}"));
                                    }
                                }
                                Ok(_) => d.say(now, "(the build's log is empty)"),
                                Err(e) => d.say(now, &format!("(log not available: {e})")),
                            }
                            if o.keep_going {
                                d.say(now, "--keep-going: waiting for a rerun or a later commit that carries it");
                            }
                        }
                        if !o.keep_going {
                            return Ok(Finish {
                                ending: Ending::Failed,
                                timeline: Some(Timeline::from_journey(&j, warnings)),
                            });
                        }
                    }
                    Verdict::Continue => {}
                }
                last = Some(j);
            }
            Ok(None) => {
                failures = 0;
                if !said_waiting {
                    said_waiting = true;
                    d.say(now, "waiting for the engine to see the commit");
                }
            }
            Err(e @ (WatchError::BadTarget { .. } | WatchError::BadUntil { .. })) => return Err(e),
            Err(e) => {
                failures += 1;
                d.say(now, &format!("poll failed ({failures}/{MAX_POLL_FAILURES}): {e}"));
                if failures >= MAX_POLL_FAILURES {
                    return Err(e);
                }
            }
        }
        if deadline.is_some_and(|dl| now >= dl) {
            d.say(now, &format!("timed out after {}", fmt_secs(now - t0)));
            return Ok(Finish {
                ending: Ending::TimedOut,
                timeline: last.as_ref().map(|j| Timeline::from_journey(j, warnings.clone())),
            });
        }
        tokio::time::sleep(interval).await;
    }
}

/// `--interval`, else with `--from` the exporter's own poll interval (its clock may be
/// simulated: polling faster than it shows nothing new, slower skips stages), else the config's.
async fn poll_interval(cfg: &Config, o: &Options, d: &mut Display, now: i64) -> Result<Duration, WatchError> {
    if let Some(i) = o.interval {
        return Ok(i);
    }
    let Some(base) = &o.from else { return Ok(cfg.poll_interval) };
    let st = exporter_status(&http_client()?, base.trim_end_matches('/')).await?;
    let every = st.poll_interval_seconds.filter(|s| *s > 0.0).map(Duration::from_secs_f64);
    if st.clock == "simulated" {
        let pace = match (st.speed, every) {
            (Some(x), Some(e)) => format!(" at {x}x real time; polling every {:.1} s", e.as_secs_f64()),
            (Some(x), None) => format!(" at {x}x real time"),
            (None, Some(e)) => format!("; polling every {:.1} s", e.as_secs_f64()),
            (None, None) => String::new(),
        };
        d.say(now, &format!("exporter {base}: simulated clock{pace}"));
    }
    Ok(every.unwrap_or(cfg.poll_interval))
}

/// The merge commit of PR `n`: at once when merged; with `--merge`, after checking the approval
/// and squash-merging it; otherwise after waiting for someone to merge it.
/// `Ok(Err(ending))` ends the watch without a journey (not merged, timed out).
async fn pull_merge_commit(
    cfg: &Config,
    o: &Options,
    n: u64,
    clock: &Clock,
    deadline: Option<i64>,
    d: &mut Display,
) -> Result<Result<String, Ending>, WatchError> {
    let gh = GithubSource::new(cfg.github(), Arc::new(SourceTelemetry::new()))?;
    let interval = o.interval.unwrap_or(cfg.poll_interval);
    let mut said_waiting = false;
    loop {
        let now = clock.now().await?;
        let pr = match gh.pull_request(n).await {
            Ok(p) => p,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Err(WatchError::Pull { number: n, why: "not found in the tracked repository".into() });
            }
            Err(e) => return Err(e.into()),
        };
        if pr.base_ref != cfg.repository.branch {
            return Err(WatchError::Pull {
                number: n,
                why: format!("targets {}, not the tracked branch {}", pr.base_ref, cfg.repository.branch),
            });
        }
        if pr.merged {
            let sha = pr.merge_commit_sha.ok_or_else(|| WatchError::Pull {
                number: n,
                why: "merged, but GitHub gives no merge commit".into(),
            })?;
            d.say(now, &format!("PR #{n} {:?} is merged as {sha}", pr.title));
            return Ok(Ok(sha));
        }
        if pr.state != "open" {
            return Err(WatchError::Pull { number: n, why: "closed without being merged".into() });
        }
        if o.merge {
            if pr.draft {
                d.say(now, &format!("PR #{n} {:?} is a draft: not merging", pr.title));
                return Ok(Err(Ending::NotMerged));
            }
            let reviews = gh.reviews(n).await?;
            if !target::approved(&reviews) {
                let summary = if reviews.is_empty() {
                    "no reviews".to_string()
                } else {
                    reviews
                        .iter()
                        .map(|r| format!("{} {}", r.user.as_deref().unwrap_or("?"), r.state.to_lowercase()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                d.say(now, &format!("PR #{n} {:?} is not approved ({summary}): not merging", pr.title));
                return Ok(Err(Ending::NotMerged));
            }
            return match gh.merge_squash(n, &pr.head_sha).await {
                Ok(sha) => {
                    d.say(now, &format!("PR #{n} {:?} approved; squash-merged as {sha}", pr.title));
                    Ok(Ok(sha))
                }
                Err(e) if e.kind == ErrorKind::Client => {
                    d.say(now, &format!("PR #{n}: GitHub refused the merge: {}", e.detail));
                    Ok(Err(Ending::NotMerged))
                }
                Err(e) => Err(e.into()),
            };
        }
        if !said_waiting {
            said_waiting = true;
            d.say(now, &format!("PR #{n} {:?} is open; waiting for it to be merged (or use --merge)", pr.title));
        }
        if deadline.is_some_and(|dl| now >= dl) {
            d.say(now, "timed out waiting for the merge");
            return Ok(Err(Ending::TimedOut));
        }
        tokio::time::sleep(interval).await;
    }
}

/// The last lines of a failed build, from its event stream. With `--from`, Concourse is asked
/// only for this (with the configuration's credentials).
async fn log_tail(cfg: &Config, feed: &mut Feed, build_id: i64, lines: usize) -> Result<Vec<String>, WatchError> {
    match feed {
        Feed::Standalone(s) => Ok(s.cc.build_log_tail(build_id, lines).await?),
        Feed::Exporter { .. } => {
            let mut cc = ConcourseSource::new(cfg.concourse(), Arc::new(SourceTelemetry::new()))?;
            Ok(cc.build_log_tail(build_id, lines).await?)
        }
    }
}

/// `report`: the timeline of one journey as it stands.
pub async fn report(
    cfg: &Config,
    sha: &str,
    from: Option<&str>,
    sim_clock: Option<&str>,
) -> Result<Timeline, WatchError> {
    let repository = cfg.repository_slug();
    let prefix = match target::parse(Some(sha), &repository)? {
        Target::Sha(p) => p,
        // An all-digit prefix reads as a PR number elsewhere; here it can only be a sha.
        Target::Pull(_) if sha.len() >= 4 && sha.bytes().all(|b| b.is_ascii_digit()) => sha.to_string(),
        _ => {
            return Err(WatchError::BadTarget {
                target: sha.into(),
                why: "report takes a commit sha or prefix".into(),
            });
        }
    };
    let now = Clock::for_watch(sim_clock, from)?.now().await?;
    let mut feed = Feed::new(cfg, from)?;
    let full = feed.resolve(&prefix).await?;
    match feed.journey(&full, now).await? {
        Some(j) => Ok(Timeline::from_journey(&j, vec![])),
        None => Err(WatchError::UnknownCommit(prefix)),
    }
}
