//! The one integration-test binary. One module per feature area.

mod support;

mod alerts;
mod backfill;
mod cli;
mod config;
mod container;
mod core_truth;
mod crash;
mod dashboards;
mod demo;
mod faults;
mod http;
mod journeys;
mod layering;
mod limits;
mod load;
mod metrics;
mod pages;
mod pathspec;
mod readme;
mod restart;
mod retention;
mod security;
mod semconv;
mod sim_concourse;
mod sim_engine;
mod sim_github;
mod sim_workload;
mod sources;
mod state;
mod store;
mod traces;
mod watch;
