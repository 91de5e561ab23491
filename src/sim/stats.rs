//! Request accounting: counts per service, method, route template and status, for tests and
//! benchmarks (`GET /_sim/stats`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<BTreeMap<(String, String, String, u16), u64>>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatRow {
    /// `github`, `concourse` or `sim`.
    pub service: String,
    pub method: String,
    /// The route template, e.g. `/api/v1/builds/{build_id}/resources`.
    pub route: String,
    pub status: u16,
    pub count: u64,
}

impl Stats {
    pub fn record(&self, service: &str, method: &str, route: &str, status: u16) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.entry((service.into(), method.into(), route.into(), status)).or_insert(0) += 1;
    }

    pub fn rows(&self) -> Vec<StatRow> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.iter()
            .map(|((service, method, route, status), count)| StatRow {
                service: service.clone(),
                method: method.clone(),
                route: route.clone(),
                status: *status,
                count: *count,
            })
            .collect()
    }

    /// Total requests to one service (all routes and statuses).
    pub fn total(&self, service: &str) -> u64 {
        self.rows().iter().filter(|r| r.service == service).map(|r| r.count).sum()
    }

    pub fn reset(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Which simulated service a request path belongs to.
pub fn service_of(path: &str) -> &'static str {
    if path.starts_with("/api/v1")
        || path.starts_with("/sky/")
        || path.starts_with("/teams/")
        || path.starts_with("/builds/")
    {
        "concourse"
    } else if path.starts_with("/_sim") {
        "sim"
    } else {
        "github"
    }
}
