//! Helpers shared by the root-only tests: a packet builder and a harness
//! that runs the real XDP program through BPF_PROG_TEST_RUN.
#![warn(unused_crate_dependencies)]

// The benchmarks' plots (src/bin) need plotters and font8x8; cargo has
// no binary-only dependencies.
use font8x8 as _;
use plotters as _;
// A dev-dependency of the suites (kernel_log.rs), seen by this library's
// own unit tests too.
#[cfg(test)]
use log as _;

pub mod agent;
pub mod benchout;
pub mod bpfsys;
pub mod flow;
pub mod fuzzing;
pub mod harness;
pub mod http;
pub mod lab;
pub mod lapi;
pub mod memcg;
pub mod packet;
pub mod raw;
pub mod rtnl;
pub mod statusprobe;
pub mod synth;
