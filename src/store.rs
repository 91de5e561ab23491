//! The SQLite store: what the core needs to survive restarts.
//!
//! One file, one [`Connection`], synchronous API (the app calls it from a blocking thread).
//! It keeps the core's [`Facts`] (commits, builds, vanished commits), the sources' cursors
//! (`kv`: GitHub ETag and head, per-job max build id, ...), what has been reported downstream
//! (`marks`: counted into a metric, span exported — so nothing is reported twice after a restart)
//! and, for sinks that want them, persisted counter values (`counters`).
//!
//! # Merge semantics
//! [`Store::apply`] merges facts exactly as [`Facts::apply`] does — it does so by *using*
//! [`Facts::apply`]: in one transaction it reads the stored rows the facts touch into a `Facts`,
//! applies the facts in order, and writes back the rows that changed (comparing rows, not trusting
//! the `bool` it returns). So a build's status never moves backwards, the more advanced sighting
//! wins, fields only fill in and the earliest `first_seen` / vanish time wins — whatever the core
//! decides, with no second implementation to drift from it. Loading is lossless: a row loads back
//! as exactly the merged fact.
//!
//! # Durability
//! The file is in WAL mode with `synchronous=NORMAL`. A transaction that returned `Ok` is in the
//! WAL, which the operating system holds even if the process is killed (`kill -9`, OOM killer,
//! panic=abort): after a process crash every committed transaction is there and the file is
//! consistent (tested by killing a writer with SIGKILL). WAL frames are fsynced only at
//! checkpoints, so a *power loss* or kernel crash may lose the last transactions (never corrupt
//! the file); the exporter re-reads them from the GitHub and Concourse APIs on restart, because the
//! cursors in `kv` are lost together with the facts they covered — store a cursor with its facts
//! ([`Store::apply_with_kv`]) or after them, never before.
//!
//! `foreign_keys` is on, but schema version 1 declares no foreign keys: a rerun may be seen before
//! its original, a commit before its parent, and retention deletes old rows independently.
//!
//! # Schema
//! Versioned by `PRAGMA user_version`; [`MIGRATIONS`]`[i]` takes a file from version `i` to
//! `i + 1`, each in its own transaction. To add version 2, append a migration. A file written by a
//! newer version is refused ([`StoreError::TooNew`]); a file of another application (its
//! `application_id`) is refused ([`StoreError::NotOurs`]).
//!
//! ```text
//! commits(sha PK, parent, author, author_date, committer_date, message, files_json, first_seen)
//! builds(id PK, pipeline, job, name, status, start_time, end_time, rerun_of, url,
//!        inputs_json, outputs_json, resources_known, updated_at)
//! vanished(sha PK, at)
//! kv(key PK, value)
//! marks(kind, key, at, PK(kind, key))
//! counters(name, labels, value, PK(name, labels))
//! origins(sha PK, origin_json)                                       -- v2
//! build_logs(build_id PK, excerpt)                                   -- v3
//! settled_journeys(sha PK, commit_time, ended, view_json, carried_json)  -- v4
//! settled_deployments(build_id PK, environment, end_time, view_json)     -- v4
//! ```
//! Times are Unix seconds. `files_json` is a JSON array of paths; `inputs_json`/`outputs_json`
//! are JSON arrays of `{"step", "resource", "version": {..}, "message"?}`. `updated_at` is the
//! wall-clock time the row was last written (diagnostics only; nothing reads it).
//!
//! # Marks and retention
//! A mark key *belongs* to a commit when it is the sha or starts with `"<sha>/"`, and to a build
//! when it is the decimal id or starts with `"<id>/"` (e.g. `"<sha>/<stage>"`). [`Store::prune`]
//! deletes the marks of what it prunes, so use that convention for per-commit and per-build marks.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::core::journey::{
    BuildFact, BuildId, BuildStatus, CommitFact, Fact, Facts, HorizonFact, Version, VersionFact,
};
use crate::core::premerge::{ChecksJobFact, ChecksRunFact, JobConclusion, JobState, Origin, PullFact, ReviewFact};

/// `PRAGMA application_id` of a deploy-journey store ("DJS1").
pub const APPLICATION_ID: i32 = 0x444a_5331;

/// How long a statement waits for another connection's lock before failing with "busy".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations: `MIGRATIONS[i]` takes the schema from `user_version` `i` to `i + 1`.
/// Append only; never edit a released migration.
pub const MIGRATIONS: &[&str] = &[MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const MIGRATION_1: &str = "
CREATE TABLE commits (
    sha            TEXT    NOT NULL PRIMARY KEY,
    parent         TEXT,
    author         TEXT    NOT NULL,
    author_date    INTEGER NOT NULL,
    committer_date INTEGER NOT NULL,
    message        TEXT    NOT NULL,
    files_json     TEXT    NOT NULL,
    first_seen     INTEGER NOT NULL
) STRICT;
CREATE INDEX commits_committer_date ON commits (committer_date);

CREATE TABLE builds (
    id              INTEGER NOT NULL PRIMARY KEY,
    pipeline        TEXT    NOT NULL,
    job             TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    status          TEXT    NOT NULL
        CHECK (status IN ('pending', 'started', 'succeeded', 'failed', 'errored', 'aborted')),
    start_time      INTEGER,
    end_time        INTEGER,
    rerun_of        INTEGER,
    url             TEXT    NOT NULL,
    inputs_json     TEXT    NOT NULL,
    outputs_json    TEXT    NOT NULL,
    resources_known INTEGER NOT NULL CHECK (resources_known IN (0, 1)),
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX builds_end_time ON builds (end_time);
CREATE INDEX builds_job ON builds (pipeline, job, id);

CREATE TABLE vanished (
    sha TEXT    NOT NULL PRIMARY KEY,
    at  INTEGER NOT NULL
) STRICT;

CREATE TABLE kv (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE marks (
    kind TEXT    NOT NULL,
    key  TEXT    NOT NULL,
    at   INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX marks_key ON marks (key);

CREATE TABLE counters (
    name   TEXT NOT NULL,
    labels TEXT NOT NULL,
    value  REAL NOT NULL,
    PRIMARY KEY (name, labels)
) STRICT, WITHOUT ROWID;
";

/// Version 2: each commit's origin (its pull request as read after the merge, or a direct push).
const MIGRATION_2: &str = "
CREATE TABLE origins (
    sha         TEXT NOT NULL PRIMARY KEY,
    origin_json TEXT NOT NULL
) STRICT;
";

/// Version 3: the log excerpt of each failed build, read once from its event stream.
const MIGRATION_3: &str = "
CREATE TABLE build_logs (
    build_id INTEGER NOT NULL PRIMARY KEY,
    excerpt  TEXT    NOT NULL
) STRICT;
";

/// Version 4: settled journeys and deployments, as the pages and the JSON API show them. Once
/// older than `keep_in_memory` they leave memory (and their facts this file, see
/// [`Store::settle`]); they are read from here until `retention` forgets them.
const MIGRATION_4: &str = "
CREATE TABLE settled_journeys (
    sha            TEXT    NOT NULL PRIMARY KEY,
    commit_time INTEGER NOT NULL,
    ended          INTEGER NOT NULL CHECK (ended IN (0, 1)),
    view_json      TEXT    NOT NULL,
    carried_json   TEXT    NOT NULL
) STRICT;
CREATE INDEX settled_journeys_date ON settled_journeys (commit_time);

CREATE TABLE settled_deployments (
    build_id    INTEGER NOT NULL PRIMARY KEY,
    environment TEXT    NOT NULL,
    end_time    INTEGER NOT NULL,
    view_json   TEXT    NOT NULL
) STRICT;
CREATE INDEX settled_deployments_env ON settled_deployments (environment, end_time);
";

// ------------------------------------------------------------------ errors

/// What went wrong, with the operation and the file (`:memory:` for an in-memory store).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {op}: {source}")]
    Sqlite {
        op: &'static str,
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "store {path}: {op}: the file is corrupted or not an SQLite database ({source}); move it away to start afresh"
    )]
    Corrupt {
        op: &'static str,
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {path}: table {table}, key {key}: column {column} cannot be decoded: {detail}")]
    Decode { path: String, table: &'static str, key: String, column: &'static str, detail: String },
    #[error("store {path}: {op}: cannot encode {what} as JSON: {source}")]
    Encode {
        op: &'static str,
        path: String,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "store {path}: schema version {found} is newer than this build supports ({supported}); refusing to open it"
    )]
    TooNew { path: String, found: i64, supported: i64 },
    #[error("store {path}: not a deploy-journey store (application_id {found:#x}); refusing to use it")]
    NotOurs { path: String, found: i32 },
    #[error(
        "store {path}: not a deploy-journey store (it has {tables} table(s) of another application and no deploy-journey schema); refusing to use it"
    )]
    Foreign { path: String, tables: i64 },
    #[error(
        "store {path} is damaged (PRAGMA quick_check: {findings}); restore it from a backup, or start with --reset-state to forget it"
    )]
    Damaged { path: String, findings: String },
    #[error(
        "store {path}: cannot switch to WAL journal mode (the journal mode is {mode}); is it on a network filesystem?"
    )]
    NoWal { path: String, mode: String },
    #[error(
        "store {path}: in use by another deploy-journey process (it holds the lock on {lock}); stop it first, or give this one its own state_path"
    )]
    Locked { path: String, lock: String },
    // `error`, not `source`: the message holds it, and a chain would print it twice.
    #[error("store {path}: cannot lock {lock}: {error}")]
    Lock { path: String, lock: String, error: std::io::Error },
    #[error(
        "store {path} was built for {what} {stored:?}, but the configuration says {configured:?}: its journeys are not this one's. Move the file away, or start with --reset-state to forget them"
    )]
    OtherWorld { path: String, what: &'static str, stored: String, configured: String },
}

impl StoreError {
    /// The write failed for want of space (`SQLITE_FULL`: a full disk or filesystem quota).
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite { source: rusqlite::Error::SqliteFailure(f, _), .. } if f.code == ErrorCode::DiskFull
        )
    }
}

fn sql_err(path: &str, op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| {
        let code = match &source {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
            _ => None,
        };
        let corrupt = matches!(code, Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt));
        let path = path.to_string();
        if corrupt { StoreError::Corrupt { op, path, source } } else { StoreError::Sqlite { op, path, source } }
    }
}

fn decode_err(path: &str, table: &'static str, key: &str, column: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Decode { path: path.to_string(), table, key: key.to_string(), column, detail: detail.to_string() }
}

// ------------------------------------------------------------------ public types

/// A persisted counter value (see [`Store::mark_and_count`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counter {
    pub name: String,
    /// Canonical label set, e.g. from [`labels_key`].
    pub labels: String,
    pub value: f64,
}

/// A canonical text form of a label set for the `counters` table: a JSON object, keys sorted.
pub fn labels_key(labels: &[(&str, &str)]) -> String {
    let m: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::to_string(&m).unwrap_or_default()
}

/// What [`Store::prune`] asks its `keep` callback about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneItem<'a> {
    Commit(&'a str),
    Build(BuildId),
}

/// A journey leaving memory: its JSON view (`view::JourneyView`) and the commits its builds took
/// along (`[[sha, subject], ...]`), as documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledJourney {
    pub sha: String,
    pub commit_time: i64,
    pub ended: bool,
    pub view_json: String,
    pub carried_json: String,
}

/// A deployment leaving memory: its JSON view (`view::DeploymentView`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledDeployment {
    pub build_id: BuildId,
    pub environment: String,
    pub end: i64,
    pub view_json: String,
}

/// Which settled journeys a listing wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedFilter {
    All,
    Ended,
    NotEnded,
}

/// Rows deleted by [`Store::prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub commits: u64,
    pub builds: u64,
    pub vanished: u64,
    pub marks: u64,
}

/// Row counts and file sizes, for a debug endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    pub path: String,
    pub schema_version: i64,
    pub commits: u64,
    pub builds: u64,
    pub unfinished_builds: u64,
    pub vanished: u64,
    pub kv: u64,
    pub marks: u64,
    pub marks_by_kind: BTreeMap<String, u64>,
    pub counters: u64,
    /// Journeys and deployments that left memory, kept as documents until `retention`.
    pub settled_journeys: u64,
    pub settled_deployments: u64,
    /// The database file (pages in use for an in-memory store).
    pub db_bytes: u64,
    /// The write-ahead log (0 when absent or in memory).
    pub wal_bytes: u64,
}

// ------------------------------------------------------------------ lock

/// An exclusive advisory lock on `<state file>.lock`, held for as long as this value lives: a
/// second `serve` (or `backfill`) on the same state file is refused instead of taking turns with
/// the first through SQLite's own locks. The operating system drops it with the process, so a
/// `kill -9` leaves no stale lock behind. A separate file, because closing any descriptor of the
/// database file would drop SQLite's own POSIX locks on it.
#[derive(Debug)]
pub struct StoreLock {
    _file: std::fs::File,
}

/// Take the lock for the state file at `path`, or fail at once if another process holds it.
pub fn lock(path: &Path) -> Result<StoreLock, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let (p, l) = (path.display().to_string(), lock_path.display().to_string());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| StoreError::Lock { path: p.clone(), lock: l.clone(), error })?;
    match file.try_lock() {
        Ok(()) => Ok(StoreLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path: p, lock: l }),
        Err(std::fs::TryLockError::Error(error)) => Err(StoreError::Lock { path: p, lock: l, error }),
    }
}

// ------------------------------------------------------------------ identity

/// What a store was built for: its facts are this repository's branch and this Concourse
/// team's builds, and nothing else's. Kept in `kv` under `identity.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `owner/name`.
    pub repository: String,
    pub branch: String,
    pub concourse_url: String,
    pub concourse_team: String,
    /// A fingerprint of the stage definitions (see [`stages_fingerprint`]).
    pub stages: String,
}

/// What [`Store::check_identity`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityCheck {
    /// An empty store: the identity is now recorded.
    Fresh,
    /// A store written before identities existed, with facts: adopted as this configuration's.
    Adopted,
    /// Recorded and equal.
    Same,
    /// Same repository and Concourse, other stage definitions: the facts (commits and builds)
    /// do not depend on them, so journeys are derived afresh from them; the new fingerprint is
    /// recorded.
    StagesChanged,
}

/// A stable fingerprint of the stage definitions: SHA-256 of their canonical text.
pub fn stages_fingerprint(canonical: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(canonical.as_bytes()))[..16].to_string()
}

const ID_KEYS: [&str; 5] =
    ["identity.repository", "identity.branch", "identity.concourse_url", "identity.concourse_team", "identity.stages"];

// ------------------------------------------------------------------ store

/// The SQLite store. `Send`, not `Sync`: share it behind a `Mutex`.
pub struct Store {
    conn: Connection,
    /// For errors and stats: the file path, or `:memory:`.
    path: String,
    /// `None` in memory.
    file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

const COMMIT_COLS: &str = "sha, parent, author, author_date, committer_date, message, files_json, first_seen";
const BUILD_COLS: &str =
    "id, pipeline, job, name, status, start_time, end_time, rerun_of, url, inputs_json, outputs_json, resources_known";

impl Store {
    /// Open (creating if needed) the store at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        let conn = Connection::open(path).map_err(sql_err(&p, "open"))?;
        Store::init(conn, p, Some(path.to_path_buf()))
    }

    /// A fresh store that lives in memory (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let p = ":memory:".to_string();
        let conn = Connection::open_in_memory().map_err(sql_err(&p, "open"))?;
        Store::init(conn, p, None)
    }

    fn init(mut conn: Connection, path: String, file: Option<std::path::PathBuf>) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_err(&path, "set busy_timeout"))?;
        // Before anything writes (switching to WAL rewrites the header): a file of another
        // application is refused untouched. The first read also fails a file that is no database.
        refuse_foreign(&conn, &path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql_err(&path, "set journal_mode=WAL"))?;
        if file.is_some() && !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal { path, mode });
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql_err(&path, "set synchronous=NORMAL"))?;
        conn.pragma_update(None, "foreign_keys", true).map_err(sql_err(&path, "set foreign_keys=ON"))?;
        // 512 KiB of page cache instead of SQLite's 2 MiB: the store is read whole once at start
        // and then written a few pages a cycle, and the cache is resident memory for good.
        conn.pragma_update(None, "cache_size", -512).map_err(sql_err(&path, "set cache_size"))?;
        if file.is_some() {
            quick_check(&conn, &path)?;
        }
        migrate(&mut conn, &path)?;
        Ok(Store { conn, path, file })
    }

    /// The file path, or `:memory:`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql_err(&self.path, "read user_version"))
    }

    // -------------------------------------------------------------- facts

    /// Merge facts, in order, in one transaction, with the semantics of [`Facts::apply`].
    pub fn apply(&mut self, facts: &[Fact]) -> Result<(), StoreError> {
        self.apply_with_kv(facts, &[])
    }

    /// [`Store::apply`] and [`Store::set_kv_many`] in one transaction: a source's facts and the
    /// cursor that covers them are stored together or not at all.
    pub fn apply_with_kv(&mut self, facts: &[Fact], kv: &[(&str, &str)]) -> Result<(), StoreError> {
        if facts.is_empty() && kv.is_empty() {
            return Ok(());
        }
        let path = self.path.as_str();
        let op = "apply facts";
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(path, op))?;
        apply_facts(&tx, path, facts)?;
        set_kv(&tx, path, kv)?;
        tx.commit().map_err(sql_err(path, "commit applied facts"))
    }

    /// Every stored fact, merged, as the core keeps them.
    pub fn load(&self) -> Result<Facts, StoreError> {
        let path = self.path.as_str();
        let op = "load facts";
        // One read transaction: a consistent snapshot even if another process writes.
        let tx = self.conn.unchecked_transaction().map_err(sql_err(path, op))?;
        let mut facts = Facts::default();
        {
            let mut st = tx.prepare(&format!("SELECT {COMMIT_COLS} FROM commits")).map_err(sql_err(path, op))?;
            let mut rows = st.query([]).map_err(sql_err(path, op))?;
            while let Some(row) = rows.next().map_err(sql_err(path, op))? {
                let c = read_commit(path, row)?;
                facts.commits.insert(c.sha.clone(), c);
            }
            let mut st = tx.prepare(&format!("SELECT {BUILD_COLS} FROM builds")).map_err(sql_err(path, op))?;
            let mut rows = st.query([]).map_err(sql_err(path, op))?;
            while let Some(row) = rows.next().map_err(sql_err(path, op))? {
                let b = read_build(path, row)?;
                facts.builds.insert(b.id, b);
            }
            let mut st = tx.prepare("SELECT sha, at FROM vanished").map_err(sql_err(path, op))?;
            let mut rows = st.query([]).map_err(sql_err(path, op))?;
            while let Some(row) = rows.next().map_err(sql_err(path, op))? {
                let sha: String = row.get(0).map_err(|e| decode_err(path, "vanished", "?", "sha", e))?;
                let at: i64 = row.get(1).map_err(|e| decode_err(path, "vanished", &sha, "at", e))?;
                facts.vanished.insert(sha, at);
            }
            let mut st = tx.prepare("SELECT sha, origin_json FROM origins").map_err(sql_err(path, op))?;
            let mut rows = st.query([]).map_err(sql_err(path, op))?;
            while let Some(row) = rows.next().map_err(sql_err(path, op))? {
                let sha: String = row.get(0).map_err(|e| decode_err(path, "origins", "?", "sha", e))?;
                let json: String = row.get(1).map_err(|e| decode_err(path, "origins", &sha, "origin_json", e))?;
                let origin = read_origin(path, &sha, &json)?;
                facts.origins.insert(sha, origin);
            }
            let mut st =
                tx.prepare("SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2").map_err(sql_err(path, op))?;
            let mut rows = st.query(["horizon:", "horizon;"]).map_err(sql_err(path, op))?;
            while let Some(row) = rows.next().map_err(sql_err(path, op))? {
                let key: String = row.get(0).map_err(|e| decode_err(path, "kv", "?", "key", e))?;
                let value: String = row.get(1).map_err(|e| decode_err(path, "kv", &key, "value", e))?;
                let names: Option<(String, String)> =
                    key.strip_prefix(HORIZON_PREFIX).and_then(|k| serde_json::from_str(k).ok());
                let Some((pipeline, job)) = names else {
                    return Err(StoreError::Decode {
                        path: path.to_string(),
                        table: "kv",
                        key,
                        column: "key",
                        detail: "not horizon:[\"<pipeline>\",\"<job>\"]".into(),
                    });
                };
                facts.apply(Fact::Horizon(read_horizon(path, &pipeline, &job, &value)?));
            }
        }
        tx.finish().map_err(sql_err(path, op))?;
        Ok(facts)
    }

    // -------------------------------------------------------------- build logs

    /// Keep the log excerpt of a failed build (read once; not a fact the core needs).
    pub fn put_log_excerpt(&mut self, build_id: BuildId, excerpt: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO build_logs (build_id, excerpt) VALUES (?1, ?2)",
                params![build_id, excerpt],
            )
            .map(|_| ())
            .map_err(sql_err(&self.path, "write a build's log excerpt"))
    }

    /// Every stored log excerpt, by build id.
    pub fn log_excerpts(&self) -> Result<std::collections::HashMap<BuildId, String>, StoreError> {
        let op = "read build log excerpts";
        let mut st = self.conn.prepare("SELECT build_id, excerpt FROM build_logs").map_err(sql_err(&self.path, op))?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql_err(&self.path, op))?;
        rows.collect::<Result<_, _>>().map_err(sql_err(&self.path, op))
    }

    // -------------------------------------------------------------- kv

    /// A cursor or other small value.
    pub fn get_kv(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare("SELECT value FROM kv WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .map_err(sql_err(&self.path, "read kv"))
    }

    /// Every `(key, value)` whose key starts with `prefix`, by key (e.g. all per-job cursors).
    pub fn kv_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let op = "read kv";
        let mut st = self
            .conn
            .prepare("SELECT key, value FROM kv WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")
            .map_err(sql_err(&self.path, op))?;
        let rows = st.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql_err(&self.path, op))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql_err(&self.path, op))
    }

    pub fn set_kv(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.set_kv_many(&[(key, value)])
    }

    /// Several values in one transaction (e.g. a GitHub ETag together with the head it names).
    pub fn set_kv_many(&mut self, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
        let path = self.path.as_str();
        let op = "write kv";
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(path, op))?;
        set_kv(&tx, path, pairs)?;
        tx.commit().map_err(sql_err(path, op))
    }

    pub fn delete_kv(&mut self, key: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute("DELETE FROM kv WHERE key = ?1", [key]).map_err(sql_err(&self.path, "delete kv"))?;
        Ok(n > 0)
    }

    // -------------------------------------------------------------- marks

    /// Mark `keys` of `kind` as reported at `at`, in one transaction; returns the keys that were
    /// not marked before (each once, in the given order).
    pub fn mark(&mut self, kind: &str, keys: &[String], at: i64) -> Result<Vec<String>, StoreError> {
        self.mark_and_count(kind, keys, at, |_| Vec::new())
    }

    /// [`Store::mark`], and in the same transaction add `deltas(newly marked)` to the persisted
    /// counters: a counter is incremented exactly once per key, across crashes and restarts.
    pub fn mark_and_count(
        &mut self,
        kind: &str,
        keys: &[String],
        at: i64,
        deltas: impl FnOnce(&[String]) -> Vec<Counter>,
    ) -> Result<Vec<String>, StoreError> {
        let path = self.path.as_str();
        let op = "mark";
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(path, op))?;
        let mut newly = Vec::new();
        {
            let mut st = tx
                .prepare("INSERT INTO marks (kind, key, at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
                .map_err(sql_err(path, op))?;
            for k in keys {
                if st.execute(params![kind, k, at]).map_err(sql_err(path, op))? > 0 {
                    newly.push(k.clone());
                }
            }
            let deltas = deltas(&newly);
            add_counters(&tx, path, &deltas)?;
        }
        tx.commit().map_err(sql_err(path, op))?;
        Ok(newly)
    }

    pub fn is_marked(&self, kind: &str, key: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare("SELECT 1 FROM marks WHERE kind = ?1 AND key = ?2")
            .and_then(|mut st| st.exists([kind, key]))
            .map_err(sql_err(&self.path, "read marks"))
    }

    /// Every key marked with `kind`.
    pub fn marks(&self, kind: &str) -> Result<HashSet<String>, StoreError> {
        let op = "read marks";
        let mut st = self.conn.prepare("SELECT key FROM marks WHERE kind = ?1").map_err(sql_err(&self.path, op))?;
        let rows = st.query_map([kind], |r| r.get(0)).map_err(sql_err(&self.path, op))?;
        rows.collect::<Result<HashSet<_>, _>>().map_err(sql_err(&self.path, op))
    }

    // -------------------------------------------------------------- counters

    /// Add to persisted counters (creating them at 0), in one transaction.
    pub fn add_counters(&mut self, deltas: &[Counter]) -> Result<(), StoreError> {
        let path = self.path.as_str();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(path, "add counters"))?;
        add_counters(&tx, path, deltas)?;
        tx.commit().map_err(sql_err(path, "add counters"))
    }

    /// Every persisted counter, by name and labels.
    pub fn counters(&self) -> Result<Vec<Counter>, StoreError> {
        let op = "read counters";
        let mut st = self
            .conn
            .prepare("SELECT name, labels, value FROM counters ORDER BY name, labels")
            .map_err(sql_err(&self.path, op))?;
        let rows = st
            .query_map([], |r| Ok(Counter { name: r.get(0)?, labels: r.get(1)?, value: r.get(2)? }))
            .map_err(sql_err(&self.path, op))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql_err(&self.path, op))
    }

    // -------------------------------------------------------------- retention

    /// Retention, in one transaction: delete commits whose committer date is before `before` and
    /// finished builds that ended (or, with no end time, started) before `before`, unless
    /// `keep` says otherwise, together with their marks (see the module docs) and vanish records.
    /// A build that is still pending or started is never deleted, nor a finished build with
    /// neither start nor end time. Persisted counters and `kv` are left alone.
    pub fn prune(&mut self, before: i64, keep: impl Fn(PruneItem<'_>) -> bool) -> Result<Pruned, StoreError> {
        self.prune_and_fold(before, keep, &[])
    }

    /// [`Store::prune`] and [`Store::add_counters`] in one transaction: what pruned facts
    /// contributed to the metrics moves into persisted counters atomically, so a crash can
    /// neither lose it nor count it twice.
    pub fn prune_and_fold(
        &mut self,
        before: i64,
        keep: impl Fn(PruneItem<'_>) -> bool,
        deltas: &[Counter],
    ) -> Result<Pruned, StoreError> {
        self.settle(before, keep, deltas, [], [], before)
    }

    /// Settling, in one transaction: [`Store::prune_and_fold`] of the facts before `before`
    /// (what `keep` spares stays), the journeys and deployments those facts made stored as
    /// documents, and the documents older than `forget_before` (retention) deleted. A crash
    /// leaves either the facts or their documents and folded counters, never both or neither.
    pub fn settle(
        &mut self,
        before: i64,
        keep: impl Fn(PruneItem<'_>) -> bool,
        deltas: &[Counter],
        journeys: impl IntoIterator<Item = SettledJourney>,
        deployments: impl IntoIterator<Item = SettledDeployment>,
        forget_before: i64,
    ) -> Result<Pruned, StoreError> {
        let path = self.path.as_str();
        let op = "prune";
        let e = |err| sql_err(path, op)(err);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e)?;
        let mut out = Pruned::default();
        {
            let mut put_journey = tx
                .prepare(
                    "INSERT OR REPLACE INTO settled_journeys (sha, commit_time, ended, view_json, carried_json) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(e)?;
            for j in journeys.into_iter().filter(|j| j.commit_time >= forget_before) {
                put_journey
                    .execute(params![j.sha, j.commit_time, j.ended as i64, j.view_json, j.carried_json])
                    .map_err(e)?;
            }
            let mut put_deployment = tx
                .prepare(
                    "INSERT OR REPLACE INTO settled_deployments (build_id, environment, end_time, view_json) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(e)?;
            for d in deployments.into_iter().filter(|d| d.end >= forget_before) {
                put_deployment.execute(params![d.build_id, d.environment, d.end, d.view_json]).map_err(e)?;
            }
            tx.execute("DELETE FROM settled_journeys WHERE commit_time < ?1", [forget_before]).map_err(e)?;
            tx.execute("DELETE FROM settled_deployments WHERE end_time < ?1", [forget_before]).map_err(e)?;
        }
        {
            let shas: Vec<String> = {
                let mut st = tx.prepare("SELECT sha FROM commits WHERE committer_date < ?1").map_err(e)?;
                let rows = st.query_map([before], |r| r.get(0)).map_err(e)?;
                rows.collect::<Result<_, _>>().map_err(e)?
            };
            let ids: Vec<BuildId> = {
                let mut st = tx
                    .prepare(
                        "SELECT id FROM builds WHERE status NOT IN ('pending', 'started') \
                         AND coalesce(end_time, start_time) < ?1",
                    )
                    .map_err(e)?;
                let rows = st.query_map([before], |r| r.get(0)).map_err(e)?;
                rows.collect::<Result<_, _>>().map_err(e)?
            };
            let mut del_commit = tx.prepare("DELETE FROM commits WHERE sha = ?1").map_err(e)?;
            let mut del_vanished = tx.prepare("DELETE FROM vanished WHERE sha = ?1").map_err(e)?;
            let mut del_origin = tx.prepare("DELETE FROM origins WHERE sha = ?1").map_err(e)?;
            let mut del_build = tx.prepare("DELETE FROM builds WHERE id = ?1").map_err(e)?;
            let mut del_log = tx.prepare("DELETE FROM build_logs WHERE build_id = ?1").map_err(e)?;
            // The key itself, or any key in ["key/", "key0"): those starting with "key/".
            let mut del_marks = tx
                .prepare("DELETE FROM marks WHERE key = ?1 OR (key >= (?1 || '/') AND key < (?1 || '0'))")
                .map_err(e)?;
            for sha in shas.iter().filter(|s| !keep(PruneItem::Commit(s))) {
                out.commits += del_commit.execute([sha]).map_err(e)? as u64;
                out.vanished += del_vanished.execute([sha]).map_err(e)? as u64;
                del_origin.execute([sha]).map_err(e)?;
                out.marks += del_marks.execute([sha]).map_err(e)? as u64;
            }
            for id in ids.into_iter().filter(|id| !keep(PruneItem::Build(*id))) {
                out.builds += del_build.execute([id]).map_err(e)? as u64;
                del_log.execute([id]).map_err(e)?;
                out.marks += del_marks.execute([id.to_string()]).map_err(e)? as u64;
            }
            // Vanish records of commits that are no longer stored.
            out.vanished += tx
                .execute("DELETE FROM vanished WHERE at < ?1 AND sha NOT IN (SELECT sha FROM commits)", [before])
                .map_err(e)? as u64;
        }
        add_counters(&tx, path, deltas)?;
        tx.commit().map_err(e)?;
        Ok(out)
    }

    // -------------------------------------------------------------- settled documents

    /// The settled journeys whose sha starts with `prefix` (lowercase hex), at most `limit`:
    /// (sha, view JSON, carried JSON), in sha order.
    pub fn settled_journeys_by_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let op = "read settled journeys";
        let e = |err| sql_err(&self.path, op)(err);
        // A range, so the primary key answers it: every sha starting with the prefix sorts
        // between it and the prefix followed by a character above any hex digit.
        let mut st = self
            .conn
            .prepare(
                "SELECT sha, view_json, carried_json FROM settled_journeys \
                 WHERE sha >= ?1 AND sha < ?1 || 'g' ORDER BY sha LIMIT ?2",
            )
            .map_err(e)?;
        let rows = st.query_map(params![prefix, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    /// The newest settled journeys. views (by commit time), at most `limit`.
    pub fn settled_journeys(&self, filter: EndedFilter, limit: usize) -> Result<Vec<(String, String)>, StoreError> {
        let op = "read settled journeys";
        let e = |err| sql_err(&self.path, op)(err);
        let ended = match filter {
            EndedFilter::All => -1,
            EndedFilter::Ended => 1,
            EndedFilter::NotEnded => 0,
        };
        let mut st = self
            .conn
            .prepare(
                "SELECT sha, view_json FROM settled_journeys WHERE (?1 < 0 OR ended = ?1) \
                 ORDER BY commit_time DESC, sha DESC LIMIT ?2",
            )
            .map_err(e)?;
        let rows = st.query_map(params![ended, limit as i64], |r| Ok((r.get(0)?, r.get(1)?))).map_err(e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    /// An environment's newest settled deployments' views (by end, then build id), at most `limit`.
    pub fn settled_deployments(&self, environment: &str, limit: usize) -> Result<Vec<(BuildId, String)>, StoreError> {
        let op = "read settled deployments";
        let e = |err| sql_err(&self.path, op)(err);
        let mut st = self
            .conn
            .prepare(
                "SELECT build_id, view_json FROM settled_deployments WHERE environment = ?1 \
                 ORDER BY end_time DESC, build_id DESC LIMIT ?2",
            )
            .map_err(e)?;
        let rows = st.query_map(params![environment, limit as i64], |r| Ok((r.get(0)?, r.get(1)?))).map_err(e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    // -------------------------------------------------------------- identity

    /// The recorded identity, if any.
    pub fn identity(&self) -> Result<Option<Identity>, StoreError> {
        let mut v = Vec::with_capacity(ID_KEYS.len());
        for k in ID_KEYS {
            match self.get_kv(k)? {
                Some(x) => v.push(x),
                None => return Ok(None),
            }
        }
        let [repository, branch, concourse_url, concourse_team, stages]: [String; 5] =
            v.try_into().unwrap_or_else(|_| unreachable!("five keys read"));
        Ok(Some(Identity { repository, branch, concourse_url, concourse_team, stages }))
    }

    /// Compare the recorded identity with `want`, in one transaction: a store of another
    /// repository, branch or Concourse team is refused ([`StoreError::OtherWorld`]); an empty
    /// store or one without an identity (older files) records `want`; changed stages record the
    /// new fingerprint.
    pub fn check_identity(&mut self, want: &Identity) -> Result<IdentityCheck, StoreError> {
        let stored = self.identity()?;
        let outcome = match &stored {
            Some(have) => {
                // GitHub names are case-insensitive; a Concourse URL is compared as written, less a
                // trailing slash.
                let url = |u: &str| u.trim_end_matches('/').to_string();
                let checks = [
                    (
                        "repository",
                        have.repository.to_lowercase(),
                        want.repository.to_lowercase(),
                        &have.repository,
                        &want.repository,
                    ),
                    ("branch", have.branch.clone(), want.branch.clone(), &have.branch, &want.branch),
                    (
                        "Concourse",
                        url(&have.concourse_url),
                        url(&want.concourse_url),
                        &have.concourse_url,
                        &want.concourse_url,
                    ),
                    (
                        "Concourse team",
                        have.concourse_team.clone(),
                        want.concourse_team.clone(),
                        &have.concourse_team,
                        &want.concourse_team,
                    ),
                ];
                for (what, a, b, stored, configured) in checks {
                    if a != b {
                        return Err(StoreError::OtherWorld {
                            path: self.path.clone(),
                            what,
                            stored: stored.clone(),
                            configured: configured.clone(),
                        });
                    }
                }
                if have.stages == want.stages {
                    return Ok(IdentityCheck::Same);
                }
                IdentityCheck::StagesChanged
            }
            None => {
                let empty: bool = self
                    .conn
                    .query_row(
                        "SELECT NOT EXISTS (SELECT 1 FROM commits) AND NOT EXISTS (SELECT 1 FROM builds)",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(sql_err(&self.path, "read identity"))?;
                if empty { IdentityCheck::Fresh } else { IdentityCheck::Adopted }
            }
        };
        let values = [&want.repository, &want.branch, &want.concourse_url, &want.concourse_team, &want.stages];
        let pairs: Vec<(&str, &str)> = ID_KEYS.iter().copied().zip(values.iter().map(|v| v.as_str())).collect();
        self.set_kv_many(&pairs)?;
        Ok(outcome)
    }

    /// Forget everything (`--reset-state`): facts, cursors, marks, counters and the identity, in
    /// one transaction. The file, its schema and its application id stay.
    pub fn reset(&mut self) -> Result<(), StoreError> {
        let path = self.path.as_str();
        let op = "reset state";
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(path, op))?;
        tx.execute_batch(
            "DELETE FROM commits; DELETE FROM builds; DELETE FROM vanished; DELETE FROM kv; \
             DELETE FROM marks; DELETE FROM counters; DELETE FROM origins; \
             DELETE FROM build_logs; DELETE FROM settled_journeys; DELETE FROM settled_deployments;",
        )
        .map_err(sql_err(path, op))?;
        tx.commit().map_err(sql_err(path, op))
    }

    // -------------------------------------------------------------- diagnostics

    /// Row counts and file sizes.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let path = self.path.as_str();
        let e = |err| sql_err(path, "stats")(err);
        let count = |sql: &str| self.conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(e);
        let mut marks_by_kind = BTreeMap::new();
        {
            let mut st = self.conn.prepare("SELECT kind, count(*) FROM marks GROUP BY kind").map_err(e)?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))).map_err(e)?;
            for row in rows {
                let (k, n) = row.map_err(e)?;
                marks_by_kind.insert(k, n);
            }
        }
        let pages = count("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")?;
        let file_len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        let (db_bytes, wal_bytes) = match &self.file {
            Some(f) => {
                let mut wal = f.clone().into_os_string();
                wal.push("-wal");
                (file_len(f).unwrap_or(pages), file_len(Path::new(&wal)).unwrap_or(0))
            }
            None => (pages, 0),
        };
        Ok(StoreStats {
            path: self.path.clone(),
            schema_version: self.schema_version()?,
            commits: count("SELECT count(*) FROM commits")?,
            builds: count("SELECT count(*) FROM builds")?,
            unfinished_builds: count("SELECT count(*) FROM builds WHERE status IN ('pending', 'started')")?,
            vanished: count("SELECT count(*) FROM vanished")?,
            settled_journeys: count("SELECT count(*) FROM settled_journeys")?,
            settled_deployments: count("SELECT count(*) FROM settled_deployments")?,
            kv: count("SELECT count(*) FROM kv")?,
            marks: marks_by_kind.values().sum(),
            marks_by_kind,
            counters: count("SELECT count(*) FROM counters")?,
            db_bytes,
            wal_bytes,
        })
    }

    /// `PRAGMA integrity_check`: `["ok"]` for a sound file, else SQLite's findings.
    pub fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        let op = "integrity check";
        let mut st = self.conn.prepare("PRAGMA integrity_check").map_err(sql_err(&self.path, op))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(sql_err(&self.path, op))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql_err(&self.path, op))
    }
}

// ------------------------------------------------------------------ helpers

/// Refuse a file that holds another application's tables: ours carries [`APPLICATION_ID`], a new
/// file has no tables at all. Only reads.
fn refuse_foreign(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let op = "read the schema";
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql_err(path, op))?;
    if app == APPLICATION_ID {
        return Ok(());
    }
    if app != 0 {
        return Err(StoreError::NotOurs { path: path.to_string(), found: app });
    }
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(sql_err(path, op))?;
    if tables > 0 {
        return Err(StoreError::Foreign { path: path.to_string(), tables });
    }
    Ok(())
}

/// `PRAGMA quick_check` at open: a damaged page (an index, say) is found before the journey is
/// built on it, not when a query first reads it.
fn quick_check(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let op = "quick check";
    // The header was read, so this is an SQLite file: a check that cannot even walk a damaged
    // b-tree (SQLITE_CORRUPT) reports damage like one that lists findings.
    let damaged = |e: rusqlite::Error| match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DatabaseCorrupt => {
            StoreError::Damaged { path: path.to_string(), findings: e.to_string() }
        }
        _ => sql_err(path, op)(e),
    };
    let mut st = conn.prepare("PRAGMA quick_check(5)").map_err(damaged)?;
    let rows: Vec<String> =
        st.query_map([], |r| r.get(0)).map_err(damaged)?.collect::<Result<_, _>>().map_err(damaged)?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Damaged { path: path.to_string(), findings: rows.join("; ").replace('\n', " ") })
}

/// Bring the schema to [`SCHEMA_VERSION`], one migration per transaction. The version is read
/// inside the (immediate, so exclusive-for-writers) transaction: two processes opening a new file
/// at once migrate it once.
fn migrate(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    loop {
        let op = "migrate schema";
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(path, op))?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql_err(path, op))?;
        let app: i32 = tx.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql_err(path, op))?;
        if app != APPLICATION_ID && (version != 0 || app != 0) {
            return Err(StoreError::NotOurs { path: path.to_string(), found: app });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew { path: path.to_string(), found: version, supported: SCHEMA_VERSION });
        }
        if version == SCHEMA_VERSION {
            return tx.finish().map_err(sql_err(path, op));
        }
        tx.execute_batch(MIGRATIONS[version as usize]).map_err(sql_err(path, op))?;
        tx.pragma_update(None, "user_version", version + 1).map_err(sql_err(path, op))?;
        if version == 0 {
            tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(sql_err(path, op))?;
        }
        tx.commit().map_err(sql_err(path, op))?;
    }
}

/// Merge `facts` into the rows they touch, within `tx`.
fn apply_facts(tx: &rusqlite::Transaction<'_>, path: &str, facts: &[Fact]) -> Result<(), StoreError> {
    if facts.is_empty() {
        return Ok(());
    }
    let op = "apply facts";
    // The stored rows these facts touch (`before`), merged with the facts (`cur`). What changed
    // is decided by comparing the two, not by `Facts::apply`'s return value.
    let mut before = Facts::default();
    let mut touched_commits: BTreeSet<&str> = BTreeSet::new();
    let mut touched_builds: BTreeSet<BuildId> = BTreeSet::new();
    let mut touched_vanished: BTreeSet<&str> = BTreeSet::new();
    let mut touched_origins: BTreeSet<&str> = BTreeSet::new();
    {
        let mut get_commit =
            tx.prepare(&format!("SELECT {COMMIT_COLS} FROM commits WHERE sha = ?1")).map_err(sql_err(path, op))?;
        let mut get_build =
            tx.prepare(&format!("SELECT {BUILD_COLS} FROM builds WHERE id = ?1")).map_err(sql_err(path, op))?;
        let mut get_vanished = tx.prepare("SELECT at FROM vanished WHERE sha = ?1").map_err(sql_err(path, op))?;
        for f in facts {
            match f {
                Fact::Commit(c) => {
                    if touched_commits.insert(&c.sha) {
                        let mut rows = get_commit.query([&c.sha]).map_err(sql_err(path, op))?;
                        if let Some(row) = rows.next().map_err(sql_err(path, op))? {
                            before.commits.insert(c.sha.clone(), read_commit(path, row)?);
                        }
                    }
                }
                Fact::Build(b) => {
                    if touched_builds.insert(b.id) {
                        let mut rows = get_build.query([b.id]).map_err(sql_err(path, op))?;
                        if let Some(row) = rows.next().map_err(sql_err(path, op))? {
                            before.builds.insert(b.id, read_build(path, row)?);
                        }
                    }
                }
                Fact::Vanished { sha, .. } => {
                    if touched_vanished.insert(sha) {
                        let at: Option<i64> =
                            get_vanished.query_row([sha], |r| r.get(0)).optional().map_err(sql_err(path, op))?;
                        if let Some(at) = at {
                            before.vanished.insert(sha.clone(), at);
                        }
                    }
                }
                Fact::Origin { sha, .. } => {
                    if touched_origins.insert(sha) {
                        let json: Option<String> = tx
                            .query_row("SELECT origin_json FROM origins WHERE sha = ?1", [sha], |r| r.get(0))
                            .optional()
                            .map_err(sql_err(path, op))?;
                        if let Some(json) = json {
                            before.origins.insert(sha.clone(), read_origin(path, sha, &json)?);
                        }
                    }
                }
                Fact::Horizon(h) => {
                    let key = horizon_key(&h.pipeline, &h.job);
                    let v: Option<String> = tx
                        .query_row("SELECT value FROM kv WHERE key = ?1", [&key], |r| r.get(0))
                        .optional()
                        .map_err(sql_err(path, op))?;
                    if let Some(v) = v {
                        before.apply(Fact::Horizon(read_horizon(path, &h.pipeline, &h.job, &v)?));
                    }
                }
            }
        }
    }
    let mut cur = before.clone();
    for f in facts {
        cur.apply(f.clone());
    }
    let dirty_commits: Vec<&str> =
        touched_commits.into_iter().filter(|k| cur.commits.get(*k) != before.commits.get(*k)).collect();
    let dirty_builds: Vec<BuildId> =
        touched_builds.into_iter().filter(|k| cur.builds.get(k) != before.builds.get(k)).collect();
    let dirty_vanished: Vec<&str> =
        touched_vanished.into_iter().filter(|k| cur.vanished.get(*k) != before.vanished.get(*k)).collect();
    let dirty_origins: Vec<&str> =
        touched_origins.into_iter().filter(|k| cur.origins.get(*k) != before.origins.get(*k)).collect();
    {
        let mut put_origin = tx
            .prepare("INSERT OR REPLACE INTO origins (sha, origin_json) VALUES (?1, ?2)")
            .map_err(sql_err(path, op))?;
        for sha in dirty_origins {
            let row = OriginRow::from(&cur.origins[sha]);
            let json = to_json(path, op, || format!("the origin of commit {sha}"), &row)?;
            put_origin.execute(params![sha, json]).map_err(sql_err(path, op))?;
        }
        let mut put_commit = tx
            .prepare(&format!("INSERT OR REPLACE INTO commits ({COMMIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"))
            .map_err(sql_err(path, op))?;
        for sha in dirty_commits {
            let c = &cur.commits[sha];
            let files = to_json(path, op, || format!("the files of commit {sha}"), &c.files)?;
            put_commit
                .execute(params![
                    c.sha,
                    c.parent,
                    c.author,
                    c.author_date,
                    c.committer_date,
                    c.message,
                    files,
                    c.first_seen
                ])
                .map_err(sql_err(path, op))?;
        }
        let mut put_build = tx
            .prepare(&format!(
                "INSERT OR REPLACE INTO builds ({BUILD_COLS}, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, unixepoch())"
            ))
            .map_err(sql_err(path, op))?;
        for id in dirty_builds {
            let b = &cur.builds[&id];
            let inputs = to_json(path, op, || format!("the inputs of build {id}"), &versions_json(&b.inputs))?;
            let outputs = to_json(path, op, || format!("the outputs of build {id}"), &versions_json(&b.outputs))?;
            put_build
                .execute(params![
                    b.id,
                    b.pipeline,
                    b.job,
                    b.name,
                    b.status.as_str(),
                    b.start,
                    b.end,
                    b.rerun_of,
                    b.url,
                    inputs,
                    outputs,
                    b.resources_known
                ])
                .map_err(sql_err(path, op))?;
        }
        let mut put_vanished =
            tx.prepare("INSERT OR REPLACE INTO vanished (sha, at) VALUES (?1, ?2)").map_err(sql_err(path, op))?;
        for sha in dirty_vanished {
            put_vanished.execute(params![sha, cur.vanished[sha]]).map_err(sql_err(path, op))?;
        }
        for (k, h) in &cur.horizons {
            if before.horizons.get(k) != Some(h) {
                let v = format!("{} {}", h.since_id, h.since_time);
                set_kv(tx, path, &[(&horizon_key(&h.pipeline, &h.job), &v)])?;
            }
        }
    }
    Ok(())
}

/// The stored shape of an [`Origin`] (`origins.origin_json`); core types are not `Serialize`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)] // one row at a time, encoded or decoded and dropped
enum OriginRow {
    Direct,
    Pull {
        number: u64,
        title: String,
        url: String,
        labels: Vec<String>,
        head_sha: String,
        first_commit_at: Option<i64>,
        opened_at: i64,
        ready_at: Option<i64>,
        /// `[submitted_at, approved]`.
        reviews: Vec<(i64, bool)>,
        checks: Vec<CheckRow>,
        merged_at: i64,
        detailed: bool,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRow {
    run_id: i64,
    name: String,
    url: String,
    attempt: u32,
    started_at: i64,
    completed_at: Option<i64>,
    success: bool,
    /// Absent from rows written before jobs were read, and left out when empty (so a row
    /// without jobs stays readable by a binary from before jobs were read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    jobs: Vec<JobRow>,
}

/// A GitHub Actions job as stored: `status` is `queued`, `in_progress` or `completed`, and
/// `conclusion` GitHub's name for how a completed one ended.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRow {
    id: i64,
    name: String,
    url: String,
    attempt: u32,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
    started_at: Option<i64>,
    completed_at: Option<i64>,
}

impl From<&ChecksJobFact> for JobRow {
    fn from(j: &ChecksJobFact) -> JobRow {
        JobRow {
            id: j.job_id,
            name: j.name.clone(),
            url: j.url.clone(),
            attempt: j.attempt,
            status: j.state.status().to_string(),
            conclusion: j.state.conclusion().map(|c| c.as_str().to_string()),
            started_at: j.started_at,
            completed_at: j.completed_at,
        }
    }
}

impl JobRow {
    fn into_fact(self) -> Result<ChecksJobFact, String> {
        let state = match (self.status.as_str(), self.conclusion) {
            ("queued", None) => JobState::Queued,
            ("in_progress", None) => JobState::InProgress,
            ("completed", Some(c)) => JobState::Completed(JobConclusion::parse(&c)),
            (status, c) => return Err(format!("job {}: status {status:?} with conclusion {c:?}", self.id)),
        };
        Ok(ChecksJobFact {
            job_id: self.id,
            name: self.name,
            url: self.url,
            attempt: self.attempt,
            state,
            started_at: self.started_at,
            completed_at: self.completed_at,
        })
    }
}

impl From<&Origin> for OriginRow {
    fn from(o: &Origin) -> OriginRow {
        match o {
            Origin::Direct => OriginRow::Direct,
            Origin::Pull(p) => OriginRow::Pull {
                number: p.number,
                title: p.title.clone(),
                url: p.url.clone(),
                labels: p.labels.clone(),
                head_sha: p.head_sha.clone(),
                first_commit_at: p.first_commit_at,
                opened_at: p.opened_at,
                ready_at: p.ready_at,
                reviews: p.reviews.iter().map(|r| (r.submitted_at, r.approved)).collect(),
                checks: p
                    .checks
                    .iter()
                    .map(|c| CheckRow {
                        run_id: c.run_id,
                        name: c.name.clone(),
                        url: c.url.clone(),
                        attempt: c.attempt,
                        started_at: c.started_at,
                        completed_at: c.completed_at,
                        success: c.success,
                        jobs: c.jobs.iter().map(JobRow::from).collect(),
                    })
                    .collect(),
                merged_at: p.merged_at,
                detailed: p.detailed,
            },
        }
    }
}

fn read_origin(path: &str, sha: &str, json: &str) -> Result<Origin, StoreError> {
    let err = |detail: String| StoreError::Decode {
        path: path.to_string(),
        table: "origins",
        key: sha.to_string(),
        column: "origin_json",
        detail,
    };
    let row: OriginRow = serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
    Ok(match row {
        OriginRow::Direct => Origin::Direct,
        OriginRow::Pull {
            number,
            title,
            url,
            labels,
            head_sha,
            first_commit_at,
            opened_at,
            ready_at,
            reviews,
            checks,
            merged_at,
            detailed,
        } => Origin::Pull(std::sync::Arc::new(PullFact {
            number,
            title,
            url,
            labels,
            head_sha,
            first_commit_at,
            opened_at,
            ready_at,
            reviews: reviews
                .into_iter()
                .map(|(submitted_at, approved)| ReviewFact { submitted_at, approved })
                .collect(),
            checks: checks
                .into_iter()
                .map(|c| {
                    let run_id = c.run_id;
                    let jobs = c.jobs.into_iter().map(JobRow::into_fact).collect::<Result<Vec<_>, _>>();
                    Ok(ChecksRunFact {
                        run_id,
                        name: c.name,
                        url: c.url,
                        attempt: c.attempt,
                        started_at: c.started_at,
                        completed_at: c.completed_at,
                        success: c.success,
                        jobs: jobs.map_err(|e| err(format!("Actions run {run_id}: {e}")))?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?,
            merged_at,
            detailed,
        })),
    })
}

/// Horizons live in `kv` (no schema change): `horizon:["pipeline","job"]` → `"<since_id> <since_time>"`.
const HORIZON_PREFIX: &str = "horizon:";

fn horizon_key(pipeline: &str, job: &str) -> String {
    format!("{HORIZON_PREFIX}{}", serde_json::json!([pipeline, job]))
}

fn read_horizon(path: &str, pipeline: &str, job: &str, v: &str) -> Result<HorizonFact, StoreError> {
    let mut it = v.split(' ').map(str::parse::<i64>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(since_id)), Some(Ok(since_time)), None) => {
            Ok(HorizonFact { pipeline: pipeline.to_string(), job: job.to_string(), since_id, since_time })
        }
        _ => Err(StoreError::Decode {
            path: path.to_string(),
            table: "kv",
            key: horizon_key(pipeline, job),
            column: "value",
            detail: format!("expected \"<build id> <unix time>\", found {v:?}"),
        }),
    }
}

fn set_kv(tx: &rusqlite::Transaction<'_>, path: &str, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
    if pairs.is_empty() {
        return Ok(());
    }
    let op = "write kv";
    let mut st = tx.prepare("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)").map_err(sql_err(path, op))?;
    for (k, v) in pairs {
        st.execute([k, v]).map_err(sql_err(path, op))?;
    }
    Ok(())
}

fn add_counters(tx: &rusqlite::Transaction<'_>, path: &str, deltas: &[Counter]) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let op = "add counters";
    let mut st = tx
        .prepare(
            "INSERT INTO counters (name, labels, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value",
        )
        .map_err(sql_err(path, op))?;
    for d in deltas {
        st.execute(params![d.name, d.labels, d.value]).map_err(sql_err(path, op))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct VersionOut<'a> {
    step: &'a str,
    resource: &'a str,
    #[serde(serialize_with = "version_json")]
    version: &'a Version,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

#[derive(Deserialize)]
struct VersionIn {
    step: String,
    resource: String,
    version: BTreeMap<String, String>,
    #[serde(default)]
    message: Option<String>,
}

/// A version as the JSON object Concourse gives (and older state files hold).
fn version_json<S: serde::Serializer>(v: &&Version, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter())
}

fn versions_json(v: &[VersionFact]) -> Vec<VersionOut<'_>> {
    v.iter()
        .map(|v| VersionOut {
            step: &v.step,
            resource: &v.resource,
            version: &v.version,
            message: v.message.as_deref(),
        })
        .collect()
}

fn to_json<T: Serialize>(
    path: &str,
    op: &'static str,
    what: impl FnOnce() -> String,
    v: &T,
) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|source| StoreError::Encode { op, path: path.to_string(), what: what(), source })
}

fn read_commit(path: &str, row: &Row<'_>) -> Result<CommitFact, StoreError> {
    const T: &str = "commits";
    let sha: String = row.get(0).map_err(|e| decode_err(path, T, "?", "sha", e))?;
    let d = |col: &'static str| {
        let sha = sha.as_str();
        move |e: rusqlite::Error| decode_err(path, T, sha, col, e)
    };
    let files_ref = row.get_ref(6).map_err(d("files_json"))?;
    let files_text = files_ref.as_str().map_err(|e| decode_err(path, T, &sha, "files_json", e))?;
    let files = serde_json::from_str(files_text).map_err(|e| decode_err(path, T, &sha, "files_json", e))?;
    Ok(CommitFact {
        parent: row.get(1).map_err(d("parent"))?,
        author: row.get(2).map_err(d("author"))?,
        author_date: row.get(3).map_err(d("author_date"))?,
        committer_date: row.get(4).map_err(d("committer_date"))?,
        message: row.get(5).map_err(d("message"))?,
        files,
        first_seen: row.get(7).map_err(d("first_seen"))?,
        sha,
    })
}

fn read_versions(
    path: &str,
    id: BuildId,
    row: &Row<'_>,
    idx: usize,
    col: &'static str,
) -> Result<Vec<VersionFact>, StoreError> {
    let key = id.to_string();
    let text = row
        .get_ref(idx)
        .map_err(|e| decode_err(path, "builds", &key, col, e))?
        .as_str()
        .map_err(|e| decode_err(path, "builds", &key, col, e))?;
    let v: Vec<VersionIn> = serde_json::from_str(text).map_err(|e| decode_err(path, "builds", &key, col, e))?;
    Ok(v.into_iter()
        .map(|v| VersionFact { step: v.step, resource: v.resource, version: v.version.into(), message: v.message })
        .collect())
}

fn read_build(path: &str, row: &Row<'_>) -> Result<BuildFact, StoreError> {
    const T: &str = "builds";
    let id: BuildId = row.get(0).map_err(|e| decode_err(path, T, "?", "id", e))?;
    let key = id.to_string();
    let d = |col: &'static str| {
        let key = key.as_str();
        move |e: rusqlite::Error| decode_err(path, T, key, col, e)
    };
    let status_text: String = row.get(4).map_err(d("status"))?;
    let status = BuildStatus::parse(&status_text)
        .ok_or_else(|| decode_err(path, T, &key, "status", format!("unknown build status {status_text:?}")))?;
    Ok(BuildFact {
        id,
        pipeline: row.get(1).map_err(d("pipeline"))?,
        job: row.get(2).map_err(d("job"))?,
        name: row.get(3).map_err(d("name"))?,
        status,
        start: row.get(5).map_err(d("start_time"))?,
        end: row.get(6).map_err(d("end_time"))?,
        rerun_of: row.get(7).map_err(d("rerun_of"))?,
        url: row.get(8).map_err(d("url"))?,
        inputs: read_versions(path, id, row, 9, "inputs_json")?,
        outputs: read_versions(path, id, row, 10, "outputs_json")?,
        resources_known: row.get::<_, i64>(11).map_err(d("resources_known"))? != 0,
    })
}

// ------------------------------------------------------------------ tests

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(sha: &str, parent: Option<&str>, date: i64, first_seen: i64) -> CommitFact {
        CommitFact {
            sha: sha.into(),
            parent: parent.map(Into::into),
            author: "Alice Doe".into(),
            author_date: date - 60,
            committer_date: date,
            message: format!("feat: {sha} \"quoted\" ünïcode\n\nbody line"),
            files: vec!["core/a.rs".into(), "apps/admin-panel/x.tsx".into()],
            first_seen,
        }
    }

    fn vf(step: &str, r: &str, msg: Option<&str>) -> VersionFact {
        VersionFact {
            step: step.into(),
            resource: step.into(),
            version: Version::from([("ref", r)]),
            message: msg.map(Into::into),
        }
    }

    fn build(id: BuildId, status: BuildStatus, start: Option<i64>, end: Option<i64>, known: bool) -> BuildFact {
        BuildFact {
            id,
            pipeline: "lana-bank".into(),
            job: "build-rc".into(),
            name: format!("{id}").into(),
            status,
            start,
            end,
            rerun_of: None,
            url: format!("https://ci.example.com/builds/{id}").into(),
            inputs: if known { vec![vf("repo", "abc", None)] } else { vec![] },
            outputs: if known { vec![vf("image", "sha256:1", Some("m"))] } else { vec![] },
            resources_known: known,
        }
    }

    fn reference(facts: &[Fact]) -> Facts {
        let mut f = Facts::default();
        for x in facts {
            f.apply(x.clone());
        }
        f
    }

    fn assert_same(a: &Facts, b: &Facts) {
        assert_eq!(a.commits, b.commits);
        assert_eq!(a.builds, b.builds);
        assert_eq!(a.vanished, b.vanished);
    }

    #[test]
    fn fresh_store_has_current_schema_and_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dj.sqlite");
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let q = |p: &str| s.conn.pragma_query_value(None, p, |r| r.get::<_, rusqlite::types::Value>(0)).unwrap();
        assert_eq!(q("journal_mode"), rusqlite::types::Value::Text("wal".into()));
        assert_eq!(q("synchronous"), rusqlite::types::Value::Integer(1)); // NORMAL
        assert_eq!(q("foreign_keys"), rusqlite::types::Value::Integer(1));
        assert_eq!(q("busy_timeout"), rusqlite::types::Value::Integer(5000));
        assert_eq!(q("cache_size"), rusqlite::types::Value::Integer(-512));
        assert_eq!(q("application_id"), rusqlite::types::Value::Integer(APPLICATION_ID as i64));
        drop(s);
        // Reopening does not migrate again.
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.integrity_check().unwrap(), vec!["ok".to_string()]);
    }

    #[test]
    fn newer_schema_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dj.sqlite");
        drop(Store::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let e = Store::open(&path).unwrap_err();
        assert!(matches!(e, StoreError::TooNew { found: 99, supported: SCHEMA_VERSION, .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");

        let other = dir.path().join("other.sqlite");
        Connection::open(&other).unwrap().pragma_update(None, "application_id", 42).unwrap();
        let e = Store::open(&other).unwrap_err();
        assert!(matches!(e, StoreError::NotOurs { found: 42, .. }), "{e}");
        assert!(e.to_string().contains("other.sqlite"), "{e}");
    }

    #[test]
    fn garbage_file_is_a_clear_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let e = Store::open(&path).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()) && msg.contains("corrupted"), "{msg}");
    }

    #[test]
    fn facts_round_trip() {
        let mut s = Store::open_in_memory().unwrap();
        let mut b = build(7, BuildStatus::Succeeded, Some(10), Some(20), true);
        b.rerun_of = Some(5);
        b.inputs.push(VersionFact {
            step: "deployments".into(),
            resource: "lana-deployments".into(),
            version: Version::from([("digest", "sha256:ff"), ("tag", "v1 \"x\"")]),
            message: Some("bump\n\n[ci skip]".into()),
        });
        let facts = vec![
            Fact::Commit(commit("a1", None, 100, 101)),
            Fact::Commit(commit("b2", Some("a1"), 200, 201)),
            Fact::Build(b),
            Fact::Build(build(8, BuildStatus::Pending, None, None, false)),
            Fact::Vanished { sha: "b2".into(), at: 300 },
        ];
        s.apply(&facts).unwrap();
        assert_same(&s.load().unwrap(), &reference(&facts));
    }

    fn pull_origin(jobs: Vec<ChecksJobFact>) -> Origin {
        Origin::Pull(std::sync::Arc::new(PullFact {
            number: 4400,
            title: "feat: x".into(),
            url: "https://github.com/o/r/pull/4400".into(),
            labels: vec!["hotfix".into()],
            head_sha: "h".into(),
            first_commit_at: Some(100),
            opened_at: 200,
            ready_at: Some(300),
            reviews: vec![ReviewFact { submitted_at: 400, approved: true }],
            checks: vec![ChecksRunFact {
                run_id: 17,
                name: "Nextest Tests".into(),
                url: "https://github.com/o/r/actions/runs/17".into(),
                attempt: 2,
                started_at: 250,
                completed_at: Some(500),
                success: true,
                jobs,
            }],
            merged_at: 600,
            detailed: true,
        }))
    }

    /// An origin with its Actions jobs (every state) is stored and loaded as it was; a row
    /// written before jobs were read (no `jobs` key) still loads, with none; a bad job row is
    /// an error naming the table, the commit and the run.
    #[test]
    fn origins_round_trip_with_jobs_and_rows_without_jobs_load() {
        let job = |id: i64, state: JobState, end: Option<i64>| ChecksJobFact {
            job_id: id,
            name: format!("job {id}"),
            url: format!("https://github.com/o/r/actions/runs/17/job/{id}"),
            attempt: 2,
            state,
            started_at: Some(260),
            completed_at: end,
        };
        let origin = pull_origin(vec![
            job(1, JobState::Completed(JobConclusion::Success), Some(500)),
            job(2, JobState::Completed(JobConclusion::TimedOut), Some(490)),
            job(3, JobState::Completed(JobConclusion::Other("stale".into())), Some(480)),
            job(4, JobState::InProgress, None),
            job(5, JobState::Queued, None),
        ]);
        let mut s = Store::open_in_memory().unwrap();
        s.apply(&[Fact::Origin { sha: "m1".into(), origin: origin.clone() }]).unwrap();
        assert_eq!(s.load().unwrap().origins["m1"], origin);

        // As an older version wrote it: runs without `jobs`.
        let old = r#"{"kind":"pull","number":4400,"title":"feat: x","url":"https://github.com/o/r/pull/4400",
            "labels":["hotfix"],"head_sha":"h","first_commit_at":100,"opened_at":200,"ready_at":300,
            "reviews":[[400,true]],"checks":[{"run_id":17,"name":"Nextest Tests",
            "url":"https://github.com/o/r/actions/runs/17","attempt":2,"started_at":250,"completed_at":500,
            "success":true}],"merged_at":600,"detailed":true}"#;
        s.conn.execute("UPDATE origins SET origin_json = ?1 WHERE sha = 'm1'", [old]).unwrap();
        assert_eq!(s.load().unwrap().origins["m1"], pull_origin(vec![]));

        let bad = old.replace(
            "\"success\":true}",
            "\"success\":true,\"jobs\":[{\"id\":9,\"name\":\"j\",\"url\":\"u\",\
            \"attempt\":2,\"status\":\"completed\",\"started_at\":1,\"completed_at\":null}]}",
        );
        assert_ne!(bad, old);
        s.conn.execute("UPDATE origins SET origin_json = ?1 WHERE sha = 'm1'", [&bad]).unwrap();
        let e = s.load().unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, StoreError::Decode { table: "origins", column: "origin_json", .. }), "{msg}");
        assert!(msg.contains("m1") && msg.contains("Actions run 17") && msg.contains("job 9"), "{msg}");
    }

    #[test]
    fn merges_like_the_core_across_transactions_and_within_one() {
        use BuildStatus::*;
        let seq = vec![
            Fact::Build(build(1, Succeeded, Some(10), Some(20), false)),
            Fact::Build(build(1, Started, Some(10), None, true)), // backwards: status kept, resources fill in
            Fact::Build(build(1, Failed, None, Some(25), false)), // a finished fact wins
            Fact::Build(build(2, Pending, None, None, false)),
            Fact::Build(build(2, Started, Some(5), None, false)),
            Fact::Build(build(2, Pending, None, None, false)),
            Fact::Commit(commit("c", None, 100, 500)),
            Fact::Commit(commit("c", None, 100, 400)), // earlier sighting wins
            Fact::Commit(commit("c", None, 100, 450)),
            Fact::Vanished { sha: "c".into(), at: 9 },
            Fact::Vanished { sha: "c".into(), at: 3 },
            Fact::Vanished { sha: "c".into(), at: 5 },
        ];
        // Messages learned later complete known inputs.
        let mut late = build(1, Failed, None, None, true);
        late.inputs[0].message = Some("feat: x".into());
        let mut seq2 = seq.clone();
        seq2.push(Fact::Build(late));
        let want = reference(&seq2);
        assert_eq!(want.builds[&1].status, Failed);
        assert_eq!(want.builds[&1].inputs[0].message.as_deref(), Some("feat: x"));
        assert_eq!(want.builds[&2].status, Started);
        assert_eq!(want.commits["c"].first_seen, 400);

        let mut one = Store::open_in_memory().unwrap();
        one.apply(&seq2).unwrap();
        assert_same(&one.load().unwrap(), &want);
        let mut many = Store::open_in_memory().unwrap();
        for f in &seq2 {
            many.apply(std::slice::from_ref(f)).unwrap();
        }
        assert_same(&many.load().unwrap(), &want);
        // Idempotent.
        many.apply(&seq2).unwrap();
        assert_same(&many.load().unwrap(), &want);
    }

    #[test]
    fn bad_json_is_an_error_naming_table_and_key() {
        let mut s = Store::open_in_memory().unwrap();
        s.apply(&[
            Fact::Build(build(41, BuildStatus::Succeeded, Some(1), Some(2), true)),
            Fact::Commit(commit("deadbeef", None, 1, 1)),
        ])
        .unwrap();
        s.conn.execute("UPDATE builds SET outputs_json = '[{\"step\": 3' WHERE id = 41", []).unwrap();
        for e in [
            s.load().unwrap_err(),
            s.apply(&[Fact::Build(build(41, BuildStatus::Failed, None, None, false))]).unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(matches!(e, StoreError::Decode { table: "builds", column: "outputs_json", .. }), "{msg}");
            assert!(msg.contains("table builds, key 41"), "{msg}");
        }
        s.conn.execute("UPDATE builds SET outputs_json = '[]' WHERE id = 41", []).unwrap();
        s.conn.execute("UPDATE commits SET files_json = '{}' WHERE sha = 'deadbeef'", []).unwrap();
        let msg = s.load().unwrap_err().to_string();
        assert!(msg.contains("table commits, key deadbeef") && msg.contains("files_json"), "{msg}");
    }

    #[test]
    fn kv() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.get_kv("github.etag").unwrap(), None);
        s.set_kv("github.etag", "W/\"1\"").unwrap();
        s.set_kv_many(&[("github.etag", "W/\"2\""), ("github.head", "abc"), ("job.lana/build-rc", "77")]).unwrap();
        assert_eq!(s.get_kv("github.etag").unwrap().as_deref(), Some("W/\"2\""));
        assert_eq!(s.get_kv("github.head").unwrap().as_deref(), Some("abc"));
        assert_eq!(s.kv_with_prefix("github.").unwrap().len(), 2);
        assert_eq!(s.kv_with_prefix("job.").unwrap(), vec![("job.lana/build-rc".into(), "77".into())]);
        assert!(s.delete_kv("github.head").unwrap());
        assert!(!s.delete_kv("github.head").unwrap());
    }

    #[test]
    fn facts_and_cursor_commit_together_or_not_at_all() {
        let mut s = Store::open_in_memory().unwrap();
        s.apply_with_kv(&[Fact::Build(build(1, BuildStatus::Started, Some(1), None, true))], &[("job.a", "1")])
            .unwrap();
        assert_eq!(s.get_kv("job.a").unwrap().as_deref(), Some("1"));
        s.conn.execute("UPDATE builds SET inputs_json = 'x' WHERE id = 1", []).unwrap();
        let facts = [
            Fact::Build(build(2, BuildStatus::Started, Some(1), None, true)),
            Fact::Build(build(1, BuildStatus::Succeeded, Some(1), Some(2), true)),
        ];
        assert!(matches!(s.apply_with_kv(&facts, &[("job.a", "2")]), Err(StoreError::Decode { .. })));
        assert_eq!(s.get_kv("job.a").unwrap().as_deref(), Some("1"));
        let n: i64 = s.conn.query_row("SELECT count(*) FROM builds", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "build 2 was rolled back");
    }

    #[test]
    fn marks_report_each_key_once() {
        let mut s = Store::open_in_memory().unwrap();
        let keys = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(s.mark("span", &keys(&["a", "b", "a"]), 10).unwrap(), keys(&["a", "b"]));
        assert_eq!(s.mark("span", &keys(&["b", "c"]), 11).unwrap(), keys(&["c"]));
        assert_eq!(s.mark("counted", &keys(&["a"]), 12).unwrap(), keys(&["a"]));
        assert!(s.is_marked("span", "c").unwrap());
        assert!(!s.is_marked("counted", "c").unwrap());
        assert_eq!(s.marks("span").unwrap(), HashSet::from(["a".into(), "b".into(), "c".into()]));
        assert!(s.marks("nothing").unwrap().is_empty());
    }

    #[test]
    fn mark_and_count_counts_only_new_keys() {
        let mut s = Store::open_in_memory().unwrap();
        let labels = labels_key(&[("stage", "build"), ("env", "staging")]);
        assert_eq!(labels, r#"{"env":"staging","stage":"build"}"#);
        let per_key = |newly: &[String]| {
            vec![Counter { name: "journeys_total".into(), labels: labels.clone(), value: newly.len() as f64 }]
        };
        s.mark_and_count("counted", &["a".into(), "b".into()], 1, per_key).unwrap();
        s.mark_and_count("counted", &["b".into(), "c".into()], 2, per_key).unwrap();
        s.add_counters(&[Counter { name: "other".into(), labels: "{}".into(), value: 0.5 }]).unwrap();
        let c = s.counters().unwrap();
        assert_eq!(c[0], Counter { name: "journeys_total".into(), labels, value: 3.0 });
        assert_eq!(c[1].value, 0.5);
    }

    #[test]
    fn prune_keeps_unfinished_and_kept_and_drops_marks() {
        use BuildStatus::*;
        let mut s = Store::open_in_memory().unwrap();
        s.apply(&[
            Fact::Commit(commit("old1", None, 100, 100)),
            Fact::Commit(commit("old2", Some("old1"), 150, 150)),
            Fact::Commit(commit("new", Some("old2"), 1000, 1000)),
            Fact::Vanished { sha: "old1".into(), at: 120 },
            Fact::Vanished { sha: "gone".into(), at: 50 }, // never stored as a commit
            Fact::Build(build(1, Succeeded, Some(90), Some(100), true)),
            Fact::Build(build(2, Started, Some(10), None, true)), // old but running: kept
            Fact::Build(build(3, Aborted, Some(80), None, false)), // no end: start decides
            Fact::Build(build(4, Failed, Some(900), Some(1100), true)),
            Fact::Build(build(5, Aborted, None, None, false)), // no times at all: kept
            Fact::Build(build(6, Succeeded, Some(1), Some(2), true)), // kept by the callback
        ])
        .unwrap();
        let k = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        s.mark("span", &k(&["old1", "old1/build", "old10", "new", "new/build"]), 1).unwrap();
        s.mark("build", &k(&["1", "1/x", "10", "4"]), 1).unwrap();
        let got = s.prune(500, |it| it == PruneItem::Commit("old2") || it == PruneItem::Build(6)).unwrap();
        assert_eq!(got, Pruned { commits: 1, builds: 2, vanished: 2, marks: 4 });
        let f = s.load().unwrap();
        assert_eq!(f.commits.keys().cloned().collect::<BTreeSet<_>>(), BTreeSet::from(["new".into(), "old2".into()]));
        assert_eq!(f.builds.keys().copied().collect::<Vec<_>>(), vec![2, 4, 5, 6]);
        assert!(f.vanished.is_empty());
        assert_eq!(s.marks("span").unwrap(), HashSet::from(["old10".into(), "new".into(), "new/build".into()]));
        assert_eq!(s.marks("build").unwrap(), HashSet::from(["10".into(), "4".into()]));
    }

    #[test]
    fn stats_count_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.sqlite")).unwrap();
        s.apply(&[
            Fact::Commit(commit("a", None, 1, 1)),
            Fact::Build(build(1, BuildStatus::Started, Some(1), None, false)),
            Fact::Build(build(2, BuildStatus::Succeeded, Some(1), Some(2), false)),
        ])
        .unwrap();
        s.set_kv("k", "v").unwrap();
        s.mark("span", &["a".into()], 1).unwrap();
        let st = s.stats().unwrap();
        assert_eq!((st.commits, st.builds, st.unfinished_builds, st.kv, st.marks), (1, 2, 1, 1, 1));
        assert_eq!(st.marks_by_kind, BTreeMap::from([("span".to_string(), 1)]));
        assert_eq!(st.schema_version, SCHEMA_VERSION);
        assert!(st.db_bytes > 0 && st.wal_bytes > 0, "{st:?}");
    }

    fn ident(repo: &str, branch: &str, url: &str, team: &str, stages: &str) -> Identity {
        Identity {
            repository: repo.into(),
            branch: branch.into(),
            concourse_url: url.into(),
            concourse_team: team.into(),
            stages: stages.into(),
        }
    }

    #[test]
    fn identity_is_recorded_adopted_compared_and_reset() {
        let lana = ident("GaloyMoney/lana-bank", "main", "https://ci.galoy.io", "dev", "f1");
        // Fresh: recorded.
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.identity().unwrap(), None);
        assert_eq!(s.check_identity(&lana).unwrap(), IdentityCheck::Fresh);
        assert_eq!(s.identity().unwrap(), Some(lana.clone()));
        // A file written before identities, with facts: adopted, then the same.
        let mut old = Store::open_in_memory().unwrap();
        old.apply(&[Fact::Commit(commit("a1", None, 1, 1))]).unwrap();
        assert_eq!(old.check_identity(&lana).unwrap(), IdentityCheck::Adopted);
        assert_eq!(old.check_identity(&lana).unwrap(), IdentityCheck::Same);
        // Case of a GitHub name and a trailing slash do not make another world.
        let same = ident("galoymoney/Lana-Bank", "main", "https://ci.galoy.io/", "dev", "f1");
        assert_eq!(old.check_identity(&same).unwrap(), IdentityCheck::Same);
        // Other stages: re-derived, the new fingerprint recorded.
        let restaged = ident("GaloyMoney/lana-bank", "main", "https://ci.galoy.io", "dev", "f2");
        assert_eq!(old.check_identity(&restaged).unwrap(), IdentityCheck::StagesChanged);
        assert_eq!(old.check_identity(&restaged).unwrap(), IdentityCheck::Same);
        // Another repository, branch, Concourse or team: refused, and nothing is overwritten.
        for (what, other) in [
            ("repository", ident("GaloyMoney/other", "main", "https://ci.galoy.io", "dev", "f2")),
            ("branch", ident("GaloyMoney/lana-bank", "develop", "https://ci.galoy.io", "dev", "f2")),
            ("Concourse", ident("GaloyMoney/lana-bank", "main", "https://ci.example.com", "dev", "f2")),
            ("Concourse team", ident("GaloyMoney/lana-bank", "main", "https://ci.galoy.io", "main", "f2")),
        ] {
            let e = old.check_identity(&other).unwrap_err();
            assert!(matches!(&e, StoreError::OtherWorld { what: w, .. } if *w == what), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("was built for {what} ")) && msg.contains("--reset-state"), "{msg}");
        }
        assert_eq!(old.identity().unwrap(), Some(restaged));
        // Reset forgets everything, the identity included.
        old.mark("span", &["a1".into()], 1).unwrap();
        old.reset().unwrap();
        assert_eq!(old.identity().unwrap(), None);
        assert!(old.load().unwrap().commits.is_empty() && old.marks("span").unwrap().is_empty());
        assert_eq!(old.check_identity(&ident("x/y", "main", "https://c", "t", "f")).unwrap(), IdentityCheck::Fresh);
    }

    #[test]
    fn one_lock_per_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let first = lock(&path).unwrap();
        let e = lock(&path).unwrap_err();
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
        assert!(e.to_string().contains(&format!("{}.lock", path.display())), "{e}");
        // Another state file is another lock.
        let _other = lock(&dir.path().join("t.sqlite")).unwrap();
        drop(first);
        let _again = lock(&path).unwrap();
    }

    #[test]
    fn store_is_send() {
        fn send<T: Send>() {}
        send::<Store>();
    }
}
