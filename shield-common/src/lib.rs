//! Shared between the XDP program (`shield-ebpf`) and the agent (`shield-user`).
//!
//! Everything here is `no_std`, allocation-free and free of I/O, so that the
//! decisions the kernel makes can be unit-tested on the host. Map keys and
//! values are `#[repr(C)]` with explicit padding; each carries a `const` size
//! assert so that a layout change on one side cannot silently diverge from the
//! other.
#![no_std]
#![warn(unused_crate_dependencies)]

#[cfg(any(feature = "model", test))]
extern crate alloc;

pub mod addr;
pub mod decide;
pub mod event;
pub mod gcra;
pub mod maps;
#[cfg(any(feature = "model", test))]
pub mod model;
pub mod reason;
pub mod special;

#[cfg(feature = "user")]
mod pod;
