//! shield's userspace library: everything the agent and shieldctl do, kept
//! out of the binaries so it can be tested.

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
