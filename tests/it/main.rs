//! The one integration-test binary. One module per feature area.

mod support;

mod cli;
mod config;
mod core_truth;
mod http;
mod journeys;
mod metrics;
mod pathspec;
mod restart;
mod retention;
mod security;
mod sim_concourse;
mod sim_engine;
mod sim_github;
mod sim_workload;
mod sources;
mod store;
mod traces;
