//! The agent's configuration: TOML in, a validated [`Config`] out.

mod model;

pub use model::*;
