//! The pure journey core: no I/O, no clock, no async. Events and `now` in, journeys out.

pub mod classify;
pub mod deployments;
pub mod eta;
pub mod facts;
#[cfg(test)]
mod fixtures;
pub mod held;
pub mod incremental;
pub mod journey;
pub mod lineage;
pub mod pathspec;
pub mod premerge;
