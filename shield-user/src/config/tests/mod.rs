//! The config parser end to end: text in, a `Config` or positioned errors out.

mod defaults;
mod docs;
mod errors;
mod files;
mod limits;
mod robustness;
mod rules;
mod sources;
mod top_level;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use super::*;
use crate::net::Cidr;

pub(super) const TICK: u64 = 4_000_000;

pub(super) fn ok(text: &str) -> Config {
    parse(text, Path::new("shield.toml"), TICK)
        .unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

pub(super) fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text, Path::new("shield.toml"), TICK) {
        Ok(c) => panic!("parsed, but errors were expected: {c:?}"),
        Err(e) => e.errors,
    }
}

/// The only error, as `LINE:COL: message`.
pub(super) fn only(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got: {e:#?}");
    format!("{}:{}: {}", e[0].line, e[0].column, e[0].message)
}

/// Asserts the only error is at `line:col` and mentions `needle`.
#[track_caller]
pub(super) fn only_at(text: &str, line: usize, col: usize, needle: &str) {
    let got = only(text);
    let prefix = format!("{line}:{col}: ");
    assert!(
        got.starts_with(&prefix) && got.contains(needle),
        "want {prefix}…{needle}…, got {got}"
    );
}

pub(super) fn rate(count: u64, secs: u64) -> Rate {
    Rate {
        count,
        per: Duration::from_secs(secs),
    }
}

pub(super) fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}
