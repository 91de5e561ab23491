//! deploy-journey: follows every commit on a branch through Concourse pipelines to an environment,
//! and exports what it sees as Prometheus metrics and OpenTelemetry traces.
//!
//! # Layout
//! Data flows `sources` → `core` → `sinks`/`http`; `store` persists what the core needs across
//! restarts. `sim` is a model of Concourse and GitHub that serves their real HTTP APIs for tests,
//! the demo and benchmarks. See ARCHITECTURE.md.

pub mod app;
pub mod backfill;
pub mod clock;
pub mod config;
pub mod core;
pub mod demo;
pub mod http;
pub mod memory;
pub mod pages;
pub mod retention;
pub mod server;
pub mod sim;
pub mod sinks;
pub mod snapshot;
pub mod sources;
pub mod store;
pub mod view;
pub mod watch;
pub mod webconfig;
pub mod write_behind;
