//! CrowdSec's Local API (LAPI): shield as a bouncer that takes the fleet's
//! decisions in, and as a machine (watcher) that pushes its autobans up.
//!
//! This module is the protocol and the pure bookkeeping; the agent's side
//! (scheduling, applying, metrics) lives in `agent::crowdsec`.

mod client;
mod decisions;
mod duration;
mod secret;
mod spool;

pub use client::{Lapi, LapiError, StreamPage};
pub use decisions::{Decision, DecisionBook, Desired, Filter, PageOutcome, Rejected};
pub use duration::parse_go_duration;
pub use secret::read_secret;
pub use spool::{Alert, Batch, MAX_SPOOLED, SPOOL_FILE, Snapshot as SpoolSnapshot, Spool};

/// The scenario shield's alerts carry, so that the fleet can tell them
/// from CrowdSec's own detections.
pub const SCENARIO: &str = "shield/flood";

#[cfg(test)]
mod tests;
