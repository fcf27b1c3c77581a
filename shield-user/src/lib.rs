//! shield's userspace library: everything the agent and shieldctl do, kept
//! out of the binaries so it can be tested.
#![warn(unused_crate_dependencies)]

// The binaries' dependencies (src/bin: anyhow at their edges, the
// tracing subscriber they install) are the library's too, as cargo has no
// binary-only dependencies.
use anyhow as _;
use tracing_subscriber as _;

pub mod adaptive;
pub mod agent;
pub mod clock;
pub mod config;
pub mod control;
pub mod crowdsec;
pub mod dataplane;
pub mod events;
pub mod evict;
pub mod feeds;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod redact;
pub mod statefile;
pub mod systemd;
