//! Where "now" comes from: the one place that reads the wall clock.
//!
//! Everything that measures an age or stamps a time takes a [`Clock`]: the system clock in
//! production; a simulator's accelerated clock in the demo and in tests, so "running for 20
//! minutes" means simulated minutes. A remote clock ([`Source`]: a simulator's
//! `/_sim/clock`, or a running exporter's `/api/v1/status`) is read over HTTP; [`Source::follow`]
//! turns it into a [`Clock`] kept current in the background.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Unix seconds, from wherever this process takes its time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock in Unix seconds. The only read of the system time outside the simulator.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The system clock as a [`Clock`].
pub fn system() -> Clock {
    Arc::new(unix_now)
}

#[derive(Debug, thiserror::Error)]
#[error("clock {url}: {why}")]
pub struct ClockError {
    pub url: String,
    pub why: String,
}

/// A clock read over HTTP, or the system's.
#[derive(Clone)]
pub enum Source {
    System,
    /// A simulator's virtual clock (`GET {url}/_sim/clock`), for tests (hidden `--sim-clock`).
    Simulator {
        client: reqwest::Client,
        url: String,
    },
    /// A running exporter's clock (`GET {url}/api/v1/status`): `watch --from` measures time as
    /// the exporter does, simulated against the demo.
    Exporter {
        client: reqwest::Client,
        url: String,
    },
}

impl Source {
    pub fn simulator(client: reqwest::Client, url: &str) -> Source {
        Source::Simulator { client, url: url.trim_end_matches('/').to_string() }
    }

    pub fn exporter(client: reqwest::Client, url: &str) -> Source {
        Source::Exporter { client, url: url.trim_end_matches('/').to_string() }
    }

    /// Unix seconds on this clock now.
    pub async fn now(&self) -> Result<i64, ClockError> {
        let (client, url) = match self {
            Source::System => return Ok(unix_now()),
            Source::Simulator { client, url } => (client, format!("{url}/_sim/clock")),
            Source::Exporter { client, url } => (client, format!("{url}/api/v1/status")),
        };
        let err = |why: String| ClockError { url: url.clone(), why };
        let r = client.get(&url).send().await.map_err(|e| err(e.without_url().to_string()))?;
        let r = r.error_for_status().map_err(|e| err(e.without_url().to_string()))?;
        let v: serde_json::Value = r.json().await.map_err(|e| err(e.without_url().to_string()))?;
        v["now"].as_i64().ok_or_else(|| err("answer has no integer \"now\"".into()))
    }

    /// A [`Clock`] that follows this one: read once now, then every 100 ms in the background
    /// (it never goes back; an unreadable reading keeps the last one). Needs a Tokio runtime.
    pub async fn follow(self) -> Result<Clock, ClockError> {
        if matches!(self, Source::System) {
            return Ok(system());
        }
        let first = self.now().await?;
        let now = Arc::new(AtomicI64::new(first));
        let writer = now.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match self.now().await {
                    Ok(t) => {
                        writer.fetch_max(t, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "remote clock unreadable; keeping the last reading"),
                }
            }
        });
        Ok(Arc::new(move || now.load(Ordering::Relaxed)))
    }
}
