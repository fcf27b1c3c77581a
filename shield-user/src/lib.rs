//! shield's userspace library: everything the agent and shieldctl do, kept
//! out of the binaries so it can be tested.

pub mod config;
pub mod control;
pub mod dataplane;
pub mod net;
