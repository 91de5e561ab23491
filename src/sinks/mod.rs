//! Sinks: what the journeys become for the outside world. `metrics` renders Prometheus metrics
//! at scrape time from the latest snapshot.

pub mod metrics;
pub mod traces;
