//! GitHub: the commits of the tracked branch, as [`CommitFact`]s, and the pull-request calls
//! `watch` needs.
//!
//! # What a poll does and costs
//! 1. `GET /repos/{o}/{r}/commits?sha={branch}&per_page=100` with `If-None-Match`. A 304 ends
//!    the poll: no facts, and GitHub does not charge it against the quota.
//! 2. On 200, walk newest → oldest until a known sha, following `Link: rel="next"` only while
//!    no known sha has been met (with nothing known: stop after `initial_commits`).
//! 3. Each new commit: one `GET .../commits/{sha}` for its files (plus one per further page of
//!    300 files). Fetched commits are kept until the poll succeeds, so a failed poll does not
//!    fetch them again.
//! 4. When the previous head is not on the walk, `GET .../compare/{old}...{new}`; `diverged` or
//!    `behind` means a force-push: the known commits after the merge base become
//!    [`Fact::Vanished`].
//!
//! So an idle poll is one conditional request (free), and N new commits cost 1 + N requests.
//! The cursor (head, ETag, known shas) only moves when every new commit became a fact.
//!
//! # Errors
//! Connect, timeout, 5xx and undecodable bodies are tried three times with exponential
//! backoff and jitter; 401/403 (`Auth`), 404, other 4xx are not. A rate limit (403 with
//! `x-ratelimit-remaining: 0` or a rate-limit message, or 429) is `RateLimited` with
//! `retry_after` from `Retry-After` or `x-ratelimit-reset`; until then every call fails at once
//! without a request.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Redirects followed before a request fails as a redirect loop (reqwest's default).
const MAX_REDIRECTS: usize = 10;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, IF_NONE_MATCH};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::client::{
    ERROR_BODY_LIMIT, LIST_BODY_LIMIT, backoff, base_url, body_excerpt, common_headers, config_error,
    describe_transport, kind_of_status, link_target, next_delay, read_body, read_body_prefix, same_origin, scrub,
    url_with,
};
use super::telemetry::{RequestOutcome, SourceTelemetry};
use super::{ErrorKind, GithubConfig, SourceError};
use crate::core::journey::{CommitFact, Fact};
use crate::core::premerge::{ChecksJobFact, ChecksRunFact, JobConclusion, JobState, Origin, PullFact, ReviewFact};

const SOURCE: &str = "github";
const API_VERSION: &str = "2022-11-28";
const PER_PAGE: &str = "100";
/// With known commits, walking further than this without meeting one is treated like a
/// force-push (a compare decides); it bounds a poll after a long outage to ~10 list pages.
const MAX_WALK: usize = 1000;
/// Known shas kept for the walk and force-push detection (older ones drop off; a year of lana).
const KNOWN_CAP: usize = 20_000;
/// Pages of one list or one commit's files followed at most.
const MAX_PAGES: usize = 20;
/// List pages a backfill walk follows at most (100 commits each).
const BACKFILL_MAX_PAGES: usize = 2_000;
/// Commits whose pull request is read per poll at most (newest first), so a first start with a
/// long history spreads the reads over many polls.
pub const ORIGINS_PER_POLL: usize = 10;
/// Requests one merged pull request's reading costs besides the jobs of its final head's
/// Actions runs, which cost one each: `5 + runs` in all ([`origin_requests`], see
/// [`GithubSource::origin`]).
pub const ORIGIN_REQUESTS: u64 = 5;
/// Actions runs per final head the budget assumes until a reading has said (lana-bank's two
/// `pull_request` workflows).
const ASSUMED_RUNS: u64 = 2;

/// Requests a merged pull request's reading costs when its final head has `runs` Actions runs
/// (and every list fits in one page): [`ORIGIN_REQUESTS`] + `runs`.
pub fn origin_requests(runs: usize) -> u64 {
    ORIGIN_REQUESTS + runs as u64
}
/// Wait when GitHub rate-limits without saying for how long.
const DEFAULT_RATE_WAIT: Duration = Duration::from_secs(60);

/// A pull request, as `watch` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullInfo {
    pub number: u64,
    pub title: String,
    /// `open` or `closed`.
    pub state: String,
    pub draft: bool,
    pub merged: bool,
    /// `clean`, `blocked`, `draft`, ... (only computed for open PRs).
    pub mergeable_state: Option<String>,
    pub merge_commit_sha: Option<String>,
    pub head_ref: String,
    pub head_sha: String,
    pub base_ref: String,
    pub labels: Vec<String>,
    pub author: Option<String>,
    pub html_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewInfo {
    pub user: Option<String>,
    /// `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`, ...
    pub state: String,
    pub submitted_at: Option<i64>,
    pub commit_id: Option<String>,
}

pub struct GithubSource {
    cfg: GithubConfig,
    api: Url,
    client: reqwest::Client,
    telemetry: Arc<SourceTelemetry>,
    head: Option<String>,
    etag: Option<String>,
    /// Known shas in branch order, oldest first, and the same as a set.
    known: Vec<String>,
    known_set: HashSet<String>,
    /// Commits fetched by a poll that has not completed yet.
    fetched: HashMap<String, CommitFact>,
    /// No request before this instant (rate limited).
    blocked_until: Mutex<Option<Instant>>,
    retry_base: Duration,
    /// Backfill: with nothing known, read every commit since this Unix time (GitHub's `since`
    /// filter, no `initial_commits` bound) instead of the newest `initial_commits`.
    history_since: Option<i64>,
    tally: Arc<super::HistoryTally>,
    /// The quota as the last answer stated it: (`x-ratelimit-remaining`, `x-ratelimit-limit`).
    quota: Mutex<Option<(u64, u64)>>,
    /// Actions runs of the final head of the last [`ORIGINS_PER_POLL`] pull requests read, for
    /// [`GithubSource::origin_budget`].
    runs_read: Mutex<VecDeque<u64>>,
}

impl std::fmt::Debug for GithubSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubSource")
            .field("repo", &format_args!("{}/{}", self.cfg.owner, self.cfg.repo))
            .field("branch", &self.cfg.branch)
            .field("head", &self.head)
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

// ------------------------------------------------------------------ wire shapes (private)

#[derive(Debug, Deserialize)]
struct ListedCommit {
    #[serde(deserialize_with = "hex_sha")]
    sha: String,
    commit: GitCommit,
    /// The GitHub account of the author, `null` when the email maps to none.
    #[serde(default)]
    author: Option<Account>,
    #[serde(default)]
    parents: Vec<ShaRef>,
}

#[derive(Debug, Deserialize)]
struct GitCommit {
    #[serde(default)]
    message: String,
    #[serde(default)]
    author: Option<GitPerson>,
    #[serde(default)]
    committer: Option<GitPerson>,
}

#[derive(Debug, Deserialize)]
struct GitPerson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    date: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Account {
    #[serde(default)]
    login: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ShaRef {
    #[serde(deserialize_with = "hex_sha")]
    sha: String,
}

#[derive(Debug, Deserialize)]
struct CommitDetail {
    #[serde(flatten)]
    commit: ListedCommit,
    #[serde(default)]
    files: Option<Vec<FileEntry>>,
}

#[derive(Debug, Deserialize)]
struct FileEntry {
    filename: String,
    /// Set on renames: the old path also counts as touched (git pathspecs see both).
    #[serde(default)]
    previous_filename: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Comparison {
    status: String,
    #[serde(default)]
    merge_base_commit: Option<ShaRef>,
}

/// A pull request (`pulls/{n}`, and as `commits/{sha}/pulls` and `pulls` list it).
#[derive(Debug, Deserialize)]
struct Pull {
    number: u64,
    #[serde(default)]
    title: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    draft: Option<bool>,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    merged_at: Option<String>,
    #[serde(default)]
    mergeable_state: Option<String>,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    head: PullSide,
    base: PullSide,
    #[serde(default)]
    labels: Vec<Label>,
    #[serde(default)]
    user: Option<Account>,
    #[serde(default)]
    html_url: String,
}

#[derive(Debug, Deserialize)]
struct PullCommit {
    commit: GitCommit,
}

#[derive(Debug, Deserialize)]
struct IssueEvent {
    #[serde(default)]
    event: String,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RunList {
    #[serde(default)]
    workflow_runs: Vec<WorkflowRun>,
}

#[derive(Debug, Deserialize)]
struct WorkflowRun {
    id: i64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    run_attempt: Option<u32>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    run_started_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    html_url: String,
}

/// "List jobs for a workflow run" (`actions/runs/{run_id}/jobs`).
#[derive(Debug, Deserialize)]
struct JobList {
    #[serde(default)]
    jobs: Vec<Job>,
}

/// A `job` of GitHub's OpenAPI description (the fields read).
#[derive(Debug, Deserialize)]
struct Job {
    id: i64,
    #[serde(default)]
    run_id: Option<i64>,
    #[serde(default)]
    run_attempt: Option<u32>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    completed_at: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PullSide {
    #[serde(rename = "ref", default)]
    git_ref: String,
    #[serde(default)]
    #[serde(deserialize_with = "hex_sha")]
    sha: String,
}

#[derive(Debug, Deserialize)]
struct Label {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct Review {
    #[serde(default)]
    user: Option<Account>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    submitted_at: Option<String>,
    #[serde(default)]
    commit_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MergeResult {
    #[serde(deserialize_with = "hex_sha")]
    sha: String,
}

/// A successful answer: 2xx with its decoded body, or 304.
enum Answer<T> {
    Fresh { body: T, headers: HeaderMap },
    NotModified,
}

fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

impl GithubSource {
    pub fn new(cfg: GithubConfig, telemetry: Arc<SourceTelemetry>) -> Result<Self, SourceError> {
        let config_err = |detail: String| config_error(SOURCE, detail);
        let api = base_url(SOURCE, "api_url", &cfg.api_url)?;
        let mut headers = common_headers();
        headers.insert(ACCEPT, HeaderValue::from_static("application/vnd.github+json"));
        headers.insert("x-github-api-version", HeaderValue::from_static(API_VERSION));
        if let Some(t) = &cfg.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                .map_err(|_| config_err("the token is not a valid header value".into()))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            // Redirects (a renamed repository answers 301) are followed; reqwest drops the
            // Authorization header when one leaves the origin. Reqwest's default limit (10), but
            // the error names the last status and Location instead of only "too many redirects".
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    let mut to = attempt.url().clone();
                    let _ = to.set_username("");
                    let _ = to.set_password(None);
                    to.set_query(None);
                    let why = format!(
                        "redirect loop: HTTP {} to {to} after {MAX_REDIRECTS} redirects",
                        attempt.status().as_u16()
                    );
                    attempt.error(why)
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| config_err(describe_transport(e).1))?;
        Ok(GithubSource {
            cfg,
            api,
            client,
            telemetry,
            head: None,
            etag: None,
            known: vec![],
            known_set: HashSet::new(),
            fetched: HashMap::new(),
            blocked_until: Mutex::new(None),
            retry_base: Duration::from_millis(250),
            history_since: None,
            tally: Arc::default(),
            quota: Mutex::new(None),
            runs_read: Mutex::new(VecDeque::new()),
        })
    }

    /// The first retry waits about this long, the next twice as long (tests shorten it).
    pub fn set_retry_base_delay(&mut self, d: Duration) {
        self.retry_base = d;
    }

    /// Backfill mode: a first poll (nothing known) reads the branch back to `since` (Unix
    /// seconds, by committer date), every page of it, instead of the newest `initial_commits`.
    /// Backfill: the commits whose files are known to be needed and those read so far.
    pub fn history_tally(&self) -> Arc<super::HistoryTally> {
        self.tally.clone()
    }

    pub fn set_history_since(&mut self, since: Option<i64>) {
        self.history_since = since;
    }

    /// Resume from the store: the branch head and its ETag, and the known shas in branch order
    /// (oldest first), as they were when the cursor was last saved.
    pub fn restore(&mut self, head: Option<String>, etag: Option<String>, known: impl IntoIterator<Item = String>) {
        self.known.clear();
        self.known_set.clear();
        for sha in known {
            if self.known_set.insert(sha.clone()) {
                self.known.push(sha);
            }
        }
        self.trim_known();
        // An ETag is only meaningful together with the head it was served with.
        self.etag = if head.is_some() { etag } else { None };
        self.head = head;
        self.fetched.clear();
    }

    /// `(head, etag)` for the store.
    pub fn cursor(&self) -> (Option<String>, Option<String>) {
        (self.head.clone(), self.etag.clone())
    }

    /// Known shas in branch order, oldest first (to save with the cursor).
    pub fn known(&self) -> &[String] {
        &self.known
    }

    /// One poll of the branch; `now` (wall-clock Unix seconds) becomes `first_seen`.
    pub async fn poll(&mut self, now: i64) -> Result<Vec<Fact>, SourceError> {
        let started = Instant::now();
        let result = self.poll_inner(now).await;
        self.telemetry.record_poll(SOURCE, result.is_ok(), now, started.elapsed());
        result
    }

    async fn poll_inner(&mut self, now: i64) -> Result<Vec<Fact>, SourceError> {
        let what = format!("GET /repos/{}/{}/commits", self.cfg.owner, self.cfg.repo);
        let mut url = url_with(&self.api, &["repos", &self.cfg.owner, &self.cfg.repo, "commits"]);
        url.query_pairs_mut().append_pair("sha", &self.cfg.branch).append_pair("per_page", PER_PAGE);
        // A backfill's first walk: GitHub filters by date, so the walk ends where history does.
        let since = self.history_since.filter(|_| self.known.is_empty());
        if let Some(t) = since.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            && let Ok(s) = t.format(&time::format_description::well_known::Rfc3339)
        {
            url.query_pairs_mut().append_pair("since", &s);
        }

        let etag = self.head.as_ref().and(self.etag.clone());
        let (first, headers) = match self.get_json::<Vec<ListedCommit>>(url, &what, etag.as_deref()).await? {
            Answer::NotModified => return Ok(vec![]),
            Answer::Fresh { body, headers } => (body, headers),
        };
        let new_etag = headers.get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
        let Some(new_head) = first.first().map(|c| c.sha.clone()) else {
            // An empty branch: nothing to follow yet.
            self.etag = new_etag;
            return Ok(vec![]);
        };
        if self.head.as_deref() == Some(new_head.as_str()) {
            self.etag = new_etag;
            return Ok(vec![]);
        }

        // Walk newest → oldest until a known sha (or the bound).
        let limit = if since.is_some() {
            usize::MAX
        } else if self.known.is_empty() {
            self.cfg.initial_commits
        } else {
            MAX_WALK.max(self.cfg.initial_commits)
        };
        let max_pages = if since.is_some() { BACKFILL_MAX_PAGES } else { MAX_PAGES };
        let mut new: Vec<ListedCommit> = vec![];
        let mut hit: Option<String> = None;
        let mut page = first;
        let mut page_headers = headers;
        let mut pages = 1;
        'walk: loop {
            for c in page {
                if self.known_set.contains(&c.sha) {
                    hit = Some(c.sha);
                    break 'walk;
                }
                if new.len() >= limit {
                    break 'walk;
                }
                new.push(c);
            }
            let Some(next) = link_target(&page_headers, "next") else { break };
            if pages >= max_pages {
                break;
            }
            let next = self.follow(&next, &["repos", &self.cfg.owner, &self.cfg.repo, "commits"])?;
            match self.get_json::<Vec<ListedCommit>>(next, &what, None).await? {
                Answer::Fresh { body, headers } => {
                    page = body;
                    page_headers = headers;
                }
                Answer::NotModified => break,
            }
            pages += 1;
        }

        // Force-push: the old head is not where the walk stopped.
        let mut facts = vec![];
        let mut keep_known = self.known.len();
        if let Some(old) = self.head.clone().filter(|old| hit.as_deref() != Some(old.as_str()))
            && let Some(base) = self.rewritten_from(&old, &new_head, hit.as_deref()).await?
        {
            keep_known = base.and_then(|b| self.known.iter().position(|s| *s == b)).map(|p| p + 1).unwrap_or(0);
            facts.extend(self.known[keep_known..].iter().map(|sha| Fact::Vanished { sha: sha.clone(), at: now }));
        }

        // Oldest first, with files; any failure leaves the cursor where it was.
        new.reverse();
        let mut commits = Vec::with_capacity(new.len());
        // One at a time, as GitHub asks of a client ("make requests for a single user or client
        // ID serially"), also in a backfill.
        self.tally.add_total(new.iter().filter(|c| !self.fetched.contains_key(&c.sha)).count() as u64);
        for c in &new {
            let fact = match self.fetched.get(&c.sha) {
                Some(f) => f.clone(),
                None => {
                    let f = self.fetch_commit(&c.sha, now).await?;
                    self.tally.add_done(1);
                    self.fetched.insert(c.sha.clone(), f.clone());
                    f
                }
            };
            commits.push(fact);
        }

        for sha in self.known.drain(keep_known..) {
            self.known_set.remove(&sha);
        }
        for c in &commits {
            if self.known_set.insert(c.sha.clone()) {
                self.known.push(c.sha.clone());
            }
        }
        self.trim_known();
        self.fetched.clear();
        self.head = Some(new_head);
        // The ETag of a `since`-filtered list belongs to that query, not to the plain one.
        self.etag = if since.is_some() { None } else { new_etag };
        facts.extend(commits.into_iter().map(Fact::Commit));
        Ok(facts)
    }

    /// Whether the branch was rewritten so that `old` is no longer on it; then `Some(merge
    /// base)` (`Some(None)`: none known, every known commit vanished).
    async fn rewritten_from(
        &self,
        old: &str,
        new: &str,
        hit: Option<&str>,
    ) -> Result<Option<Option<String>>, SourceError> {
        let what = format!("GET /repos/{}/{}/compare", self.cfg.owner, self.cfg.repo);
        let url =
            url_with(&self.api, &["repos", &self.cfg.owner, &self.cfg.repo, "compare", &format!("{old}...{new}")]);
        match self.get_json::<Comparison>(url, &what, None).await {
            Ok(Answer::Fresh { body, .. }) => match body.status.as_str() {
                "diverged" | "behind" => Ok(Some(body.merge_base_commit.map(|c| c.sha).or(hit.map(str::to_string)))),
                _ => Ok(None),
            },
            Ok(Answer::NotModified) => Ok(None),
            // The old head is gone from the repository altogether: it was rewritten away.
            Err(e) if e.kind == ErrorKind::NotFound => Ok(Some(hit.map(str::to_string))),
            Err(e) => Err(e),
        }
    }

    /// `GET .../commits/{ref}` with every page of its files.
    async fn fetch_commit(&self, git_ref: &str, now: i64) -> Result<CommitFact, SourceError> {
        let what = format!("GET /repos/{}/{}/commits/{{sha}}", self.cfg.owner, self.cfg.repo);
        let url = url_with(&self.api, &["repos", &self.cfg.owner, &self.cfg.repo, "commits", git_ref]);
        let Answer::Fresh { body, headers } = self.get_json::<CommitDetail>(url, &what, None).await? else {
            return Err(self.err(ErrorKind::Client, &what, "unexpected 304 without a conditional request".into()));
        };
        let mut files = vec![];
        push_files(&mut files, body.files.unwrap_or_default());
        let mut next = link_target(&headers, "next");
        let mut pages = 1;
        let sha = body.commit.sha.clone();
        while let Some(link) = next.take() {
            if pages >= MAX_PAGES {
                break;
            }
            let url = self.follow(&link, &["repos", &self.cfg.owner, &self.cfg.repo, "commits", &sha])?;
            if let Answer::Fresh { body, headers } = self.get_json::<CommitDetail>(url, &what, None).await? {
                push_files(&mut files, body.files.unwrap_or_default());
                next = link_target(&headers, "next");
            }
            pages += 1;
        }
        self.commit_fact(body.commit, files, now, &what)
    }

    fn commit_fact(
        &self,
        c: ListedCommit,
        files: Vec<String>,
        now: i64,
        what: &str,
    ) -> Result<CommitFact, SourceError> {
        let date = |p: &Option<GitPerson>, which: &str| {
            let raw = p.as_ref().and_then(|p| p.date.as_deref());
            raw.and_then(parse_time).ok_or_else(|| {
                self.err(ErrorKind::Decode, what, format!("commit {}: {which} date {raw:?} is not ISO-8601", c.sha))
            })
        };
        let author_date = date(&c.commit.author, "author")?;
        let committer_date = date(&c.commit.committer, "committer")?;
        let author = c
            .author
            .as_ref()
            .and_then(|a| a.login.clone())
            .or_else(|| c.commit.author.as_ref().and_then(|a| a.name.clone()))
            .unwrap_or_default();
        Ok(CommitFact {
            parent: c.parents.first().map(|p| p.sha.clone()),
            sha: c.sha,
            author,
            author_date,
            committer_date,
            message: c.commit.message,
            files,
            first_seen: now,
        })
    }

    /// One commit by sha or unambiguous prefix (for `watch`); `first_seen` is now.
    pub async fn commit(&self, sha_or_prefix: &str) -> Result<CommitFact, SourceError> {
        self.fetch_commit(sha_or_prefix, crate::clock::unix_now()).await
    }

    pub async fn pull_request(&self, number: u64) -> Result<PullInfo, SourceError> {
        let what = format!("GET /repos/{}/{}/pulls/{{number}}", self.cfg.owner, self.cfg.repo);
        let url = url_with(&self.api, &["repos", &self.cfg.owner, &self.cfg.repo, "pulls", &number.to_string()]);
        let Answer::Fresh { body: p, .. } = self.get_json::<Pull>(url, &what, None).await? else {
            return Err(self.err(ErrorKind::Client, &what, "unexpected 304".into()));
        };
        Ok(PullInfo {
            number: p.number,
            title: p.title,
            state: p.state,
            draft: p.draft.unwrap_or(false),
            merged: p.merged.unwrap_or(p.merged_at.is_some()),
            mergeable_state: p.mergeable_state,
            merge_commit_sha: p.merge_commit_sha,
            head_ref: p.head.git_ref,
            head_sha: p.head.sha,
            base_ref: p.base.git_ref,
            labels: p.labels.into_iter().map(|l| l.name).collect(),
            author: p.user.and_then(|u| u.login),
            html_url: p.html_url,
        })
    }

    pub async fn reviews(&self, number: u64) -> Result<Vec<ReviewInfo>, SourceError> {
        let what = format!("GET /repos/{}/{}/pulls/{{number}}/reviews", self.cfg.owner, self.cfg.repo);
        let n = number.to_string();
        let segments = ["repos", &self.cfg.owner, &self.cfg.repo, "pulls", &n, "reviews"];
        let mut url = url_with(&self.api, &segments);
        url.query_pairs_mut().append_pair("per_page", PER_PAGE);
        let mut out = vec![];
        for _ in 0..MAX_PAGES {
            let Answer::Fresh { body, headers } = self.get_json::<Vec<Review>>(url, &what, None).await? else { break };
            out.extend(body.into_iter().map(|r| ReviewInfo {
                user: r.user.and_then(|u| u.login),
                state: r.state,
                submitted_at: r.submitted_at.as_deref().and_then(parse_time),
                commit_id: r.commit_id,
            }));
            match link_target(&headers, "next") {
                Some(next) => url = self.follow(&next, &segments)?,
                None => break,
            }
        }
        Ok(out)
    }

    /// How many commits' origins ([`GithubSource::origin`]) may be read now: at most
    /// [`ORIGINS_PER_POLL`], and only from the quota above a fifth of it, kept for following
    /// the branch (an unauthenticated client has 60 requests an hour). Each is counted at
    /// [`origin_requests`] of the most Actions runs a final head had among the last pull
    /// requests read ([`ASSUMED_RUNS`] before any).
    pub fn origin_budget(&self) -> usize {
        let runs = self.runs_read.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().max();
        let per_pull = ORIGIN_REQUESTS + runs.unwrap_or(ASSUMED_RUNS);
        match *self.quota.lock().unwrap_or_else(|e| e.into_inner()) {
            None => ORIGINS_PER_POLL,
            Some((remaining, limit)) => {
                let spare = remaining.saturating_sub(limit / 5) / per_pull;
                (spare as usize).min(ORIGINS_PER_POLL)
            }
        }
    }

    /// How commit `sha` reached the branch (the pre-merge segment): its pull request with the
    /// moments the core needs, or [`Origin::Direct`]. Requests, serial as GitHub asks:
    /// `commits/{sha}/pulls` (a direct push stops here: 1 request), then `pulls/{n}/reviews`,
    /// `pulls/{n}/commits?per_page=1` (the first commit), `issues/{n}/events` (ready for
    /// review), `actions/runs?head_sha=` of the PR's final head, and for each of those runs
    /// `actions/runs/{run_id}/jobs`: `5 + runs` requests ([`origin_requests`]), plus one per
    /// further page of reviews, events, runs or jobs (rare).
    pub async fn origin(&self, sha: &str) -> Result<Origin, SourceError> {
        let (o, r) = (self.cfg.owner.as_str(), self.cfg.repo.as_str());
        let what = format!("GET /repos/{o}/{r}/commits/{{sha}}/pulls");
        let segments = ["repos", o, r, "commits", sha, "pulls"];
        let pulls: Vec<Pull> = self.get_pages(&segments, &[], &what).await?;
        // The PR that merged this commit: the one whose merge commit it is (squash, merge
        // commit, last of a rebase), else one merged into the branch that contains it (the
        // earlier commits of a rebase merge). Open PRs that merely contain it do not count.
        let merged = |p: &&Pull| p.merged_at.is_some() && p.base.git_ref == self.cfg.branch;
        let Some(p) = pulls
            .iter()
            .filter(merged)
            .find(|p| p.merge_commit_sha.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(sha)))
            .or_else(|| pulls.iter().filter(merged).min_by_key(|p| p.number))
        else {
            return Ok(Origin::Direct);
        };
        let time = |s: &Option<String>, field: &str| -> Result<i64, SourceError> {
            s.as_deref().and_then(parse_time).ok_or_else(|| {
                self.err(ErrorKind::Decode, &what, format!("pull request #{}: no valid {field}", p.number))
            })
        };
        let opened_at = time(&p.created_at, "created_at")?;
        let merged_at = time(&p.merged_at, "merged_at")?;
        let n = p.number.to_string();

        let reviews = self.reviews(p.number).await?;
        let reviews = reviews
            .iter()
            // Pending reviews have no submission time; dismissed ones were given all the same.
            .filter_map(|r| r.submitted_at.map(|t| ReviewFact { submitted_at: t, approved: r.state == "APPROVED" }))
            .filter(|r| r.submitted_at <= merged_at)
            .collect();

        let what_commits = format!("GET /repos/{o}/{r}/pulls/{{number}}/commits");
        let mut url = url_with(&self.api, &["repos", o, r, "pulls", &n, "commits"]);
        url.query_pairs_mut().append_pair("per_page", "1");
        let first_commit_at = match self.get_json::<Vec<PullCommit>>(url, &what_commits, None).await? {
            Answer::Fresh { body, .. } => {
                body.first().and_then(|c| c.commit.author.as_ref()).and_then(|a| a.date.as_deref()).and_then(parse_time)
            }
            Answer::NotModified => None,
        };

        let what_events = format!("GET /repos/{o}/{r}/issues/{{number}}/events");
        let events: Vec<IssueEvent> =
            self.get_pages(&["repos", o, r, "issues", &n, "events"], &[], &what_events).await?;
        // Marked ready for review (the last time, if it went back to draft in between).
        let ready_at = events
            .iter()
            .filter(|e| e.event == "ready_for_review")
            .filter_map(|e| e.created_at.as_deref().and_then(parse_time))
            .filter(|t| *t <= merged_at)
            .max();

        let what_runs = format!("GET /repos/{o}/{r}/actions/runs");
        let head = p.head.sha.clone();
        let mut checks = vec![];
        let run_segments = ["repos", o, r, "actions", "runs"];
        let mut url = url_with(&self.api, &run_segments);
        url.query_pairs_mut().append_pair("head_sha", &head).append_pair("per_page", PER_PAGE);
        let mut runs = vec![];
        for _ in 0..MAX_PAGES {
            let Answer::Fresh { body, headers } = self.get_json::<RunList>(url, &what_runs, None).await? else { break };
            runs.extend(body.workflow_runs);
            match link_target(&headers, "next") {
                Some(next) => url = self.follow(&next, &run_segments)?,
                None => break,
            }
        }
        self.note_runs(runs.len());
        for run in runs {
            let attempt = run.run_attempt.unwrap_or(1).max(1);
            // One request per run, whatever its state: what the budget counts.
            let jobs = self.run_jobs(run.id, attempt).await?;
            // From the run's creation, which a re-run keeps (`run_started_at` is the latest
            // attempt's start): queued time counts, the author waits for it too.
            let first = run.created_at.as_deref().and_then(parse_time);
            let started = run.run_started_at.as_deref().and_then(parse_time);
            let Some(started_at) = first.or(started) else { continue };
            let completed = run.status.as_deref() == Some("completed");
            checks.push(ChecksRunFact {
                run_id: run.id,
                name: run.name.unwrap_or_default(),
                url: run.html_url,
                attempt,
                started_at,
                completed_at: if completed { run.updated_at.as_deref().and_then(parse_time) } else { None },
                success: completed && run.conclusion.as_deref() == Some("success"),
                jobs,
            });
        }
        checks.sort();
        Ok(Origin::Pull(std::sync::Arc::new(PullFact {
            number: p.number,
            title: p.title.clone(),
            url: p.html_url.clone(),
            labels: p.labels.iter().map(|l| l.name.clone()).collect(),
            head_sha: head,
            first_commit_at,
            opened_at,
            ready_at,
            reviews,
            checks,
            merged_at,
            detailed: true,
        })))
    }

    /// Remember how many Actions runs a final head had, for [`GithubSource::origin_budget`].
    fn note_runs(&self, runs: usize) {
        let mut seen = self.runs_read.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() == ORIGINS_PER_POLL {
            seen.pop_front();
        }
        seen.push_back(runs as u64);
    }

    /// The jobs of workflow run `run_id`'s latest attempt: `GET actions/runs/{run_id}/jobs
    /// ?filter=latest&per_page=100`, one request (one more per further page). `filter=latest`
    /// (GitHub's default, asked for explicitly) because the run as listed is its latest attempt
    /// and those jobs are the ones that decided it: earlier attempts are counted by the run's
    /// `run_attempt`, and `filter=all` would list every re-run's jobs again beside them.
    /// `attempt` is the run's `run_attempt` as listed, taken for a job that does not say its own.
    /// A run that answers 404 (deleted since it was listed) has no jobs.
    async fn run_jobs(&self, run_id: i64, attempt: u32) -> Result<Vec<ChecksJobFact>, SourceError> {
        let (o, r) = (self.cfg.owner.as_str(), self.cfg.repo.as_str());
        let id = run_id.to_string();
        let what = format!("GET /repos/{o}/{r}/actions/runs/{id}/jobs");
        let segments = ["repos", o, r, "actions", "runs", &id, "jobs"];
        let mut url = url_with(&self.api, &segments);
        url.query_pairs_mut().append_pair("filter", "latest").append_pair("per_page", PER_PAGE);
        let mut out = vec![];
        for page in 0..MAX_PAGES {
            let answer = match self.get_json::<JobList>(url, &what, None).await {
                // The run was listed a moment ago: a 404 now means it was deleted in between
                // (GitHub lets admins delete runs). It has no jobs to show; the pull request's
                // other readings stand rather than the whole origin failing and being retried.
                Err(e) if e.kind == ErrorKind::NotFound && page == 0 => {
                    tracing::debug!(run_id, error = %e, "github: a listed Actions run is gone; no jobs for it");
                    break;
                }
                a => a?,
            };
            let Answer::Fresh { body, headers } = answer else { break };
            for job in body.jobs {
                out.push(self.job_fact(job, run_id, attempt, &what)?);
            }
            match link_target(&headers, "next") {
                Some(next) => url = self.follow(&next, &segments)?,
                None => break,
            }
        }
        out.sort_by(|a, b| (a.started_at, &a.name, a.job_id).cmp(&(b.started_at, &b.name, b.job_id)));
        Ok(out)
    }

    /// One job of run `run_id` as the core keeps it. A job of another run, a completed one
    /// without a conclusion, or a time that is not ISO-8601 is a decoding error naming the run,
    /// the job and the field.
    fn job_fact(&self, job: Job, run_id: i64, attempt: u32, what: &str) -> Result<ChecksJobFact, SourceError> {
        let bad = |detail: String| self.err(ErrorKind::Decode, what, format!("run {run_id}, job {}: {detail}", job.id));
        if let Some(other) = job.run_id.filter(|r| *r != run_id) {
            return Err(bad(format!("belongs to run {other}")));
        }
        let time = |raw: &Option<String>, field: &str| match raw.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => parse_time(t).map(Some).ok_or_else(|| bad(format!("{field} {t:?} is not ISO-8601"))),
        };
        let started_at = time(&job.started_at, "started_at")?;
        let completed_at = time(&job.completed_at, "completed_at")?;
        let state = match job.status.as_deref() {
            Some("completed") => {
                let Some(c) = job.conclusion.as_deref().filter(|c| !c.is_empty()) else {
                    return Err(bad("completed without a conclusion".into()));
                };
                JobState::Completed(JobConclusion::parse(c))
            }
            Some("in_progress") => JobState::InProgress,
            // queued, waiting, requested, pending: not started yet.
            _ => JobState::Queued,
        };
        let completed_at = if matches!(state, JobState::Completed(_)) { completed_at } else { None };
        Ok(ChecksJobFact {
            job_id: job.id,
            name: job.name,
            url: job.html_url.unwrap_or_default(),
            attempt: job.run_attempt.unwrap_or(attempt).max(1),
            state,
            started_at,
            completed_at,
        })
    }

    /// `backfill`: the pull requests merged into the branch since `since`, by merge commit, from
    /// `GET /repos/{o}/{r}/pulls?state=closed&base={branch}&sort=updated&direction=desc` (100 a
    /// request, newest update first, until a page holds only pull requests last updated before
    /// `since`: a merge after it updated them). These readings have labels, opening and merge,
    /// not the phases (`detailed: false`); a year of lana is about 25 requests instead of 10 000.
    pub async fn merged_pulls_since(&self, since: i64) -> Result<Vec<(String, Origin)>, SourceError> {
        let (o, r) = (self.cfg.owner.as_str(), self.cfg.repo.as_str());
        let what = format!("GET /repos/{o}/{r}/pulls");
        let segments = ["repos", o, r, "pulls"];
        let mut url = url_with(&self.api, &segments);
        url.query_pairs_mut()
            .append_pair("state", "closed")
            .append_pair("base", &self.cfg.branch)
            .append_pair("sort", "updated")
            .append_pair("direction", "desc")
            .append_pair("per_page", PER_PAGE);
        let mut out = vec![];
        for _ in 0..BACKFILL_MAX_PAGES {
            let Answer::Fresh { body, headers } = self.get_json::<Vec<Pull>>(url, &what, None).await? else {
                break;
            };
            let mut recent = false;
            for p in body {
                let updated = p.updated_at.as_deref().and_then(parse_time);
                recent |= updated.is_none_or(|u| u >= since);
                let (Some(sha), Some(merged_at), Some(opened_at)) = (
                    p.merge_commit_sha.clone(),
                    p.merged_at.as_deref().and_then(parse_time),
                    p.created_at.as_deref().and_then(parse_time),
                ) else {
                    continue;
                };
                if merged_at < since {
                    continue;
                }
                out.push((
                    sha,
                    Origin::Pull(std::sync::Arc::new(PullFact {
                        number: p.number,
                        title: p.title,
                        url: p.html_url,
                        labels: p.labels.into_iter().map(|l| l.name).collect(),
                        head_sha: p.head.sha,
                        first_commit_at: None,
                        opened_at,
                        ready_at: None,
                        reviews: vec![],
                        checks: vec![],
                        merged_at,
                        detailed: false,
                    })),
                ));
            }
            match link_target(&headers, "next") {
                Some(next) if recent => url = self.follow(&next, &segments)?,
                _ => break,
            }
        }
        Ok(out)
    }

    /// Every page of a list (`per_page=100`, `Link: rel="next"`, at most `MAX_PAGES`).
    async fn get_pages<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<Vec<T>, SourceError> {
        let mut url = url_with(&self.api, segments);
        url.query_pairs_mut().extend_pairs(query).append_pair("per_page", PER_PAGE);
        let mut out = vec![];
        for _ in 0..MAX_PAGES {
            let Answer::Fresh { body, headers } = self.get_json::<Vec<T>>(url, what, None).await? else { break };
            out.extend(body);
            match link_target(&headers, "next") {
                Some(next) => url = self.follow(&next, segments)?,
                None => break,
            }
        }
        Ok(out)
    }

    /// Squash-merge PR `number` if its head is still `head_sha`; returns the merge commit sha.
    /// Tried once: a write is not repeated on a transient error (the caller looks first).
    pub async fn merge_squash(&self, number: u64, head_sha: &str) -> Result<String, SourceError> {
        let what = format!("PUT /repos/{}/{}/pulls/{{number}}/merge", self.cfg.owner, self.cfg.repo);
        let url =
            url_with(&self.api, &["repos", &self.cfg.owner, &self.cfg.repo, "pulls", &number.to_string(), "merge"]);
        let body = serde_json::json!({"merge_method": "squash", "sha": head_sha});
        self.check_blocked(&what)?;
        let req = self.client.request(Method::PUT, url).json(&body);
        match self.send_once::<MergeResult>(req, &what).await? {
            Answer::Fresh { body, .. } => Ok(body.sha),
            Answer::NotModified => Err(self.err(ErrorKind::Client, &what, "unexpected 304".into())),
        }
    }

    // -------------------------------------------------------------- HTTP

    fn err(&self, kind: ErrorKind, what: &str, detail: String) -> SourceError {
        let secrets: Vec<&str> = self.cfg.token.iter().map(|t| t.expose()).collect();
        SourceError {
            source_name: SOURCE,
            kind,
            what: what.to_string(),
            detail: scrub(detail, &secrets),
            retry_after: None,
        }
    }

    /// A pagination link: verbatim when it points at the configured API origin, else only its
    /// query on our own path (the token never goes to another host).
    fn follow(&self, link: &str, segments: &[&str]) -> Result<Url, SourceError> {
        let parsed = self
            .api
            .join(link)
            .map_err(|e| self.err(ErrorKind::Decode, "follow Link", format!("pagination link is not a URL: {e}")))?;
        if same_origin(&parsed, &self.api) {
            return Ok(parsed);
        }
        let mut own = url_with(&self.api, segments);
        own.set_query(parsed.query());
        Ok(own)
    }

    fn check_blocked(&self, what: &str) -> Result<(), SourceError> {
        let until = *self.blocked_until.lock().unwrap_or_else(|e| e.into_inner());
        match until {
            Some(t) if Instant::now() < t => {
                let mut e = self.err(ErrorKind::RateLimited, what, "rate limited; not asking before the reset".into());
                e.retry_after = Some(t - Instant::now());
                Err(e)
            }
            _ => Ok(()),
        }
    }

    fn block_for(&self, d: Duration) {
        // A server may send any number; waiting over an hour is never what it means.
        let d = d.min(Duration::from_secs(3600));
        let Some(until) = Instant::now().checked_add(d) else { return };
        let mut g = self.blocked_until.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none_or(|t| t < until) {
            *g = Some(until);
        }
    }

    /// GET with retries for transient failures (the body is decoded inside, so a garbled body
    /// is retried too).
    async fn get_json<T: DeserializeOwned>(
        &self,
        url: Url,
        what: &str,
        etag: Option<&str>,
    ) -> Result<Answer<T>, SourceError> {
        let mut delays = backoff(self.retry_base);
        loop {
            self.check_blocked(what)?;
            let mut req = self.client.get(url.clone());
            if let Some(e) = etag {
                req = req.header(IF_NONE_MATCH, e);
            }
            match self.send_once::<T>(req, what).await {
                Ok(a) => return Ok(a),
                Err(e) => match next_delay(&e, &mut delays) {
                    Some(d) => {
                        tracing::debug!(error = %e, delay_ms = d.as_millis() as u64, "github: retrying");
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(e),
                },
            }
        }
    }

    /// One request: send, classify, decode, count.
    async fn send_once<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Answer<T>, SourceError> {
        let result = self.exchange::<T>(req, what).await;
        let outcome = match &result {
            Ok(Answer::Fresh { .. }) => RequestOutcome::Ok,
            Ok(Answer::NotModified) => RequestOutcome::NotModified,
            Err(e) => RequestOutcome::Error(e.kind),
        };
        self.telemetry.record_request(SOURCE, outcome);
        result
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Answer<T>, SourceError> {
        let mut resp = req.send().await.map_err(|e| {
            let (kind, detail) = describe_transport(e);
            self.err(kind, what, detail)
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let remaining = header_num(&headers, "x-ratelimit-remaining");
        let reset = header_num(&headers, "x-ratelimit-reset").map(|r| r as i64);
        if let Some(r) = remaining {
            self.telemetry.set_rate_limit(SOURCE, r, reset);
            let limit = header_num(&headers, "x-ratelimit-limit").unwrap_or(r);
            *self.quota.lock().unwrap_or_else(|e| e.into_inner()) = Some((r, limit));
        }
        if status == 304 {
            return Ok(Answer::NotModified);
        }
        if !(200..300).contains(&status) {
            let body = read_body_prefix(&mut resp, ERROR_BODY_LIMIT).await;
            let excerpt = body_excerpt(&body, &self.cfg.token.iter().map(|t| t.expose()).collect::<Vec<_>>());
            let limited = status == 429
                || (status == 403 && (remaining == Some(0) || excerpt.to_ascii_lowercase().contains("rate limit")));
            let kind = if limited { ErrorKind::RateLimited } else { kind_of_status(status) };
            let mut e = self.err(kind, what, format!("HTTP {status}: {excerpt}"));
            // Every answer carries the quota's reset time; only a rate limit means "wait for it".
            e.retry_after = header_num(&headers, "retry-after").map(Duration::from_secs);
            if kind == ErrorKind::RateLimited {
                let wait = e.retry_after.or_else(|| until_reset(&headers)).unwrap_or(DEFAULT_RATE_WAIT);
                e.retry_after = Some(wait);
                self.block_for(wait);
            }
            return Err(e);
        }
        let body = read_body(&mut resp, LIST_BODY_LIMIT).await.map_err(|e| {
            let (kind, detail) = e.describe();
            self.err(kind, what, detail)
        })?;
        // A spent quota: wait for the reset rather than collect a 403.
        if remaining == Some(0)
            && let Some(wait) = until_reset(&headers)
        {
            self.block_for(wait);
        }
        let body = serde_json::from_slice::<T>(&body).map_err(|e| {
            self.err(
                ErrorKind::Decode,
                what,
                format!(
                    "{e} (body: {})",
                    body_excerpt(&body, &self.cfg.token.iter().map(|t| t.expose()).collect::<Vec<_>>())
                ),
            )
        })?;
        Ok(Answer::Fresh { body, headers })
    }

    fn trim_known(&mut self) {
        if self.known.len() > KNOWN_CAP {
            let drop = self.known.len() - KNOWN_CAP;
            for sha in self.known.drain(..drop) {
                self.known_set.remove(&sha);
            }
        }
    }
}

fn push_files(out: &mut Vec<String>, files: Vec<FileEntry>) {
    for f in files {
        if let Some(prev) = f.previous_filename.filter(|p| *p != f.filename) {
            out.push(prev);
        }
        out.push(f.filename);
    }
}

fn header_num(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The time until `x-ratelimit-reset` (a wall-clock epoch).
fn until_reset(headers: &HeaderMap) -> Option<Duration> {
    let reset = header_num(headers, "x-ratelimit-reset")? as i64;
    Some(Duration::from_secs((reset - crate::clock::unix_now()).max(1) as u64))
}

/// A commit sha as GitHub sends it: 40 (SHA-1) or 64 (SHA-256) hex digits. Anything else is a
/// malformed answer (a `Decode` error), never a fact: shas are sliced and become trace ids.
fn hex_sha<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    if (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(serde::de::Error::custom(format!("{:?} is not a commit sha", s.chars().take(64).collect::<String>())))
    }
}

/// Entry point for fuzzing (`fuzz/fuzz_targets/github_json.rs`): `body` read as every answer this
/// client decodes, through the helpers the poll uses on them (shas, dates, renamed files, error
/// excerpts), and its first line as a `Link` header. Returns how many answer shapes accepted it.
/// Whatever the bytes, it must not panic.
#[doc(hidden)]
pub fn decode_answers(body: &[u8]) -> usize {
    let mut accepted = 0;
    let commit = |c: ListedCommit| {
        let dates = [&c.commit.author, &c.commit.committer]
            .map(|p| p.as_ref().and_then(|p| p.date.as_deref()).and_then(parse_time));
        let author = c.author.and_then(|a| a.login).or_else(|| c.commit.author.and_then(|a| a.name));
        (c.sha, c.parents.into_iter().next().map(|p| p.sha), c.commit.message, author, dates)
    };
    if let Ok(list) = serde_json::from_slice::<Vec<ListedCommit>>(body) {
        accepted += 1;
        list.into_iter().for_each(|c| drop(commit(c)));
    }
    if let Ok(d) = serde_json::from_slice::<CommitDetail>(body) {
        accepted += 1;
        let mut files = vec![];
        push_files(&mut files, d.files.unwrap_or_default());
        drop(commit(d.commit));
    }
    if let Ok(c) = serde_json::from_slice::<Comparison>(body) {
        accepted += 1;
        let _ = (c.status, c.merge_base_commit.map(|m| m.sha));
    }
    if let Ok(p) = serde_json::from_slice::<Pull>(body) {
        accepted += 1;
        let _ = p.merged_at.as_deref().and_then(parse_time);
        let _ = (p.head.git_ref, p.base.sha, p.labels.into_iter().map(|l| l.name).collect::<Vec<_>>());
    }
    if let Ok(reviews) = serde_json::from_slice::<Vec<Review>>(body) {
        accepted += 1;
        for r in reviews {
            let _ =
                (r.user.and_then(|u| u.login), r.state, r.submitted_at.as_deref().and_then(parse_time), r.commit_id);
        }
    }
    if let Ok(runs) = serde_json::from_slice::<RunList>(body) {
        accepted += 1;
        for r in runs.workflow_runs {
            let _ = (r.id, r.name, r.run_attempt, r.status, r.conclusion, r.html_url);
            let _ = [r.created_at, r.run_started_at, r.updated_at].map(|t| t.as_deref().and_then(parse_time));
        }
    }
    if let Ok(list) = serde_json::from_slice::<JobList>(body) {
        accepted += 1;
        for j in list.jobs {
            let _ = (j.id, j.run_id, j.run_attempt, j.name, j.html_url, j.status);
            let _ = j.conclusion.as_deref().map(JobConclusion::parse);
            let _ = [j.started_at, j.completed_at].map(|t| t.as_deref().and_then(parse_time));
        }
    }
    if serde_json::from_slice::<MergeResult>(body).is_ok() {
        accepted += 1;
    }
    let first_line = body.split(|b| *b == b'\n').next().unwrap_or_default();
    if let Ok(v) = HeaderValue::from_bytes(first_line) {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::LINK, v);
        for rel in ["next", "previous", "last"] {
            if let Some(target) = link_target(&h, rel) {
                let base = Url::parse("https://api.github.com/repos/o/r/commits").expect("a fixed, valid URL");
                let _ = base.join(&target).map(|u| same_origin(&u, &base));
            }
        }
    }
    let _ = body_excerpt(body, &["ghp_secret"]);
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> GithubSource {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cfg = GithubConfig {
            api_url: "http://127.0.0.1:9".into(),
            owner: "o".into(),
            repo: "r".into(),
            branch: "main".into(),
            token: None,
            timeout: Duration::from_secs(5),
            initial_commits: 10,
        };
        GithubSource::new(cfg, Arc::new(SourceTelemetry::new())).unwrap()
    }

    fn job(v: serde_json::Value) -> Job {
        serde_json::from_value(v).unwrap()
    }

    /// A job as GitHub lists it becomes the core's fact; what cannot be read is a decoding
    /// error that names the request, the run, the job and the field.
    #[test]
    fn jobs_become_facts_and_bad_ones_are_errors_naming_run_job_and_field() {
        let gh = source();
        let what = "GET /repos/o/r/actions/runs/7/jobs";
        let ok = job(serde_json::json!({
            "id": 70, "run_id": 7, "run_attempt": 2, "name": "Cargo Nextest Tests", "status": "completed",
            "conclusion": "timed_out", "started_at": "2026-03-02T08:00:00Z", "completed_at": "2026-03-02T08:10:00Z",
            "html_url": "https://github.com/o/r/actions/runs/7/job/70",
        }));
        let f = gh.job_fact(ok, 7, 1, what).unwrap();
        assert_eq!(
            (f.job_id, f.name.as_str(), f.attempt, &f.state, f.completed_at.zip(f.started_at).map(|(e, s)| e - s)),
            (70, "Cargo Nextest Tests", 2, &JobState::Completed(JobConclusion::TimedOut), Some(600))
        );
        assert_eq!(f.url, "https://github.com/o/r/actions/runs/7/job/70");
        // Waiting (environments) is not started; no attempt given: the run's.
        let waiting = gh.job_fact(job(serde_json::json!({"id": 71, "status": "waiting"})), 7, 3, what).unwrap();
        assert_eq!((waiting.state, waiting.attempt, waiting.completed_at), (JobState::Queued, 3, None));
        let running = job(serde_json::json!({"id": 72, "status": "in_progress", "completed_at": null}));
        assert_eq!(gh.job_fact(running, 7, 1, what).unwrap().state, JobState::InProgress);
        for (bad, want) in [
            (serde_json::json!({"id": 73, "run_id": 8, "status": "queued"}), "run 7, job 73: belongs to run 8"),
            (
                serde_json::json!({"id": 74, "status": "completed", "conclusion": "success", "started_at": "yesterday"}),
                "run 7, job 74: started_at \"yesterday\" is not ISO-8601",
            ),
            (serde_json::json!({"id": 75, "status": "completed"}), "run 7, job 75: completed without a conclusion"),
        ] {
            let e = gh.job_fact(job(bad), 7, 1, what).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Decode);
            let msg = e.to_string();
            assert!(msg.contains(what) && msg.contains(want), "{msg}");
        }
        // Not JSON of the shape: serde's error, no panic.
        assert!(serde_json::from_str::<JobList>(r#"{"jobs":[{"name":"no id"}]}"#).is_err());
        assert!(decode_answers(br#"{"total_count":1,"jobs":[{"id":1,"status":"completed"}]}"#) >= 1);
    }

    #[test]
    fn the_budget_counts_five_requests_and_one_per_run_of_the_last_pull_requests() {
        let gh = source();
        *gh.quota.lock().unwrap() = Some((1_000, 5_000));
        // Nothing read yet: ASSUMED_RUNS (2) a head, (1000 - 1000) spare: nothing.
        assert_eq!(gh.origin_budget(), 0);
        *gh.quota.lock().unwrap() = Some((1_042, 5_000));
        assert_eq!(gh.origin_budget(), 6, "42 spare requests, 5 + 2 a pull request");
        gh.note_runs(9);
        assert_eq!(gh.origin_budget(), 3, "5 + 9 a pull request");
        // The most runs among the last ORIGINS_PER_POLL readings.
        for _ in 0..ORIGINS_PER_POLL {
            gh.note_runs(1);
        }
        assert_eq!(gh.origin_budget(), 7, "5 + 1 a pull request");
        assert_eq!(origin_requests(4), 9);
    }
}
