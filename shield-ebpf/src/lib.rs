//! Exists so that shield-user can name this crate as a build dependency and
//! cargo rebuilds the agent when the program changes. The program itself is
//! the `shield` binary, built for bpfel-unknown-none by aya-build.
#![no_std]
