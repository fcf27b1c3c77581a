//! The agent's configuration: TOML in, a validated [`Config`] out.

mod model;
mod units;

pub use model::*;
pub use units::{format_duration, format_rate, parse_duration, parse_rate};
