//! Exactly-once (per store) export of journey spans: the export task, its backoff, the marks
//! it writes in the store once the collector acknowledged, and its counters for `/metrics`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::mpsc;

use crate::clock::Clock;

use super::otlp::{JOURNEY_SCOPE, TraceSinkConfig, TraceSinkError};
use super::spans::{SpanRecord, finished_stage_spans, journey_spans, to_span_data};

/// Mark kind of exported spans in the store; keys are `<sha>/<span id hex>` so that retention
/// forgets them with their commit.
pub const MARK_KIND: &str = "span";
/// Spans per export request.
pub const BATCH_SPANS: usize = 256;
/// Batches waiting for the exporter task; beyond that, spans wait in the store (they are
/// recomputed at the next publish).
pub const QUEUE_BATCHES: usize = 64;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub fn mark_key(sha: &str, span: [u8; 8]) -> String {
    format!("{sha}/{}", hex::encode(span))
}

/// Counters of span export, shared with `/metrics`.
#[derive(Debug, Default)]
pub struct SpanExportStats {
    exported: AtomicU64,
    errors: AtomicU64,
    queued: AtomicU64,
}

/// A reading of [`SpanExportStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanExportCounts {
    /// Spans the collector acknowledged.
    pub exported: u64,
    /// Export requests that failed (each is retried).
    pub errors: u64,
    /// Spans handed to the exporter task and not yet acknowledged and marked.
    pub queued: u64,
}

impl SpanExportStats {
    pub fn counts(&self) -> SpanExportCounts {
        SpanExportCounts {
            exported: self.exported.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }
}

struct Batch {
    spans: Vec<SpanRecord>,
    keys: Vec<String>,
}

/// Exactly-once (per store) export of journey spans. [`SpanExport::offer`] runs on the poll
/// loop after each publish and never waits: it hands the spans that became exportable and
/// are neither marked nor queued to a task that exports them, retrying with backoff until the
/// collector acknowledges, and only then marks them in the store. When the bounded queue is
/// full the rest stays unqueued and is offered again at the next publish; after a restart,
/// whatever is not marked is recomputed from the stored facts.
///
/// At-least-once at the edges: a kill between the collector's acknowledgement and the mark's
/// commit resends those spans after the restart, with the same ids (backends deduplicate or
/// show the same span twice).
pub struct SpanExport {
    tx: Option<mpsc::Sender<Batch>>,
    /// Marked or queued keys.
    known: HashSet<String>,
    stats: Arc<SpanExportStats>,
    repo_url: String,
    branch: String,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanExport").field("known", &self.known.len()).field("stats", &self.stats).finish()
    }
}

/// Store access for marks, off the async workers.
pub type MarkStore = Arc<Mutex<crate::store::Store>>;

impl SpanExport {
    /// Start the exporter task (inside a tokio runtime). `marked` are the keys already in the
    /// store under [`MARK_KIND`]; `clock` gives the marks' time.
    pub fn start(
        cfg: &TraceSinkConfig,
        store: MarkStore,
        marked: HashSet<String>,
        repo_url: String,
        branch: String,
        clock: Clock,
    ) -> Result<SpanExport, TraceSinkError> {
        let exporter = cfg.exporter()?;
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let stats = Arc::new(SpanExportStats::default());
        let task = tokio::spawn(export_task(exporter, rx, store, stats.clone(), clock));
        Ok(SpanExport { tx: Some(tx), known: marked, stats, repo_url, branch, task })
    }

    pub fn stats(&self) -> Arc<SpanExportStats> {
        self.stats.clone()
    }

    /// Queue what became exportable in `derived`: the spans of every succeeded stage, and
    /// once a journey ended its root and the rest. Returns how many spans were queued.
    pub fn offer(&mut self, derived: &crate::core::journey::Derived) -> usize {
        let Some(tx) = &self.tx else { return 0 };
        let mut pending: Vec<(String, SpanRecord)> = vec![];
        let fixes = super::spans::fix_links(derived);
        let fix_attempts = super::spans::fix_attempt_links(derived);
        for j in &derived.journeys {
            let spans = if j.ended {
                let mut spans = journey_spans(j, &self.repo_url, &self.branch, &[]);
                // A revert or hotfix links to the deployment it failed.
                if let (Some(root), Some(links)) = (spans.first_mut(), fixes.get(&j.sha))
                    && root.parent.is_none()
                {
                    root.links.extend(links.iter().copied());
                }
                spans
            } else {
                finished_stage_spans(j, &[])
            };
            let mut spans = spans;
            for (on, link) in fix_attempts.get(&j.sha).into_iter().flatten() {
                if let Some(sp) = spans.iter_mut().find(|s| s.span_id == *on)
                    && !sp.links.contains(link)
                {
                    sp.links.push(*link);
                }
            }
            for s in spans {
                let key = mark_key(&j.sha, s.span_id);
                if !self.known.contains(&key) {
                    pending.push((key, s));
                }
            }
        }
        let mut queued = 0;
        for chunk in pending.chunks(BATCH_SPANS) {
            let (keys, spans): (Vec<String>, Vec<SpanRecord>) = chunk.iter().cloned().unzip();
            let n = spans.len();
            let keys_again = keys.clone();
            match tx.try_send(Batch { spans, keys }) {
                Ok(()) => {
                    self.known.extend(keys_again);
                    self.stats.queued.fetch_add(n as u64, Ordering::Relaxed);
                    queued += n;
                }
                // Full: the rest is offered again at the next publish. Closed: the task ended.
                Err(_) => break,
            }
        }
        queued
    }

    /// Know these exported spans' keys again (their commits came back into memory).
    pub fn remember(&mut self, keys: impl IntoIterator<Item = String>) {
        self.known.extend(keys);
    }

    /// After retention: forget the keys of commits no longer kept (their marks went with them).
    pub fn retain_commits(&mut self, keep: impl Fn(&str) -> bool) {
        self.known.retain(|k| keep(k.split('/').next().unwrap_or("")));
    }

    /// Stop: let the task finish the batch in hand for up to `grace`; anything not marked by
    /// then is exported again after the next start.
    pub async fn shutdown(mut self, grace: Duration) {
        self.tx = None;
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            abort.abort();
        }
    }
}

async fn export_task(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<Batch>,
    store: MarkStore,
    stats: Arc<SpanExportStats>,
    clock: Clock,
) {
    use backon::BackoffBuilder;
    let scope = InstrumentationScope::builder(JOURNEY_SCOPE).with_version(env!("CARGO_PKG_VERSION")).build();
    let backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(BACKOFF_MIN)
            .with_max_delay(BACKOFF_MAX)
            .with_jitter()
            .without_max_times()
            .build()
    };
    while let Some(batch) = rx.recv().await {
        let n = batch.spans.len() as u64;
        let mut delays = backoff();
        loop {
            let data: Vec<SpanData> = batch.spans.iter().map(|s| to_span_data(s, &scope)).collect();
            match exporter.export(data).await {
                Ok(()) => break,
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    let wait = delays.next().unwrap_or(BACKOFF_MAX);
                    tracing::warn!(error = %e, spans = n, retry_in_ms = wait.as_millis() as u64, "span export failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        stats.exported.fetch_add(n, Ordering::Relaxed);
        // Marked only after the acknowledgement. A store error is retried too: until the mark
        // is written, a restart would send these spans again.
        let mut delays = backoff();
        loop {
            let (store, keys, at) = (store.clone(), batch.keys.clone(), clock());
            let marked = tokio::task::spawn_blocking(move || {
                let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                s.mark(MARK_KIND, &keys, at)
            })
            .await;
            match marked {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => tracing::error!(error = %e, "cannot mark exported spans; retrying"),
                Err(e) => tracing::error!(error = %e, "marking exported spans failed; retrying"),
            }
            tokio::time::sleep(delays.next().unwrap_or(BACKOFF_MAX)).await;
        }
        stats.queued.fetch_sub(n, Ordering::Relaxed);
    }
}
