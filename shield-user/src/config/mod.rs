//! The agent's configuration: TOML in, a validated [`Config`] out.
//!
//! Parsing is strict (unknown keys are errors) and reports every problem in
//! the file at once, each with its file, line and column, because an
//! operator fixing a firewall's config should not have to iterate one error
//! at a time. The document is parsed with its spans and walked by hand for
//! that reason: serde's derive stops at the first error.

mod crowdsec;
mod defaults;
mod error;
mod feeds;
mod fields;
mod model;
mod parse;
mod reader;
mod rules;
mod secrets;
mod suggest;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

use toml::de::DeTable;

pub use defaults::{DEFAULT_MAX_ADDRESSES, MAX_MAX_ADDRESSES};
pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use secrets::{check_secret_mode, secret_mode_ok};
pub use units::{format_duration, format_rate, parse_duration, parse_rate};

use error::Report;
use reader::Section;

/// The policy the agent runs when it has no config file. It names no
/// interfaces: those come from `--iface`.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");

/// Where errors in [`DEFAULT_POLICY`] would be reported from.
const DEFAULT_POLICY_ORIGIN: &str = "<embedded default policy>";

/// The embedded default policy, parsed.
///
/// It always parses (a test holds it to that); should a clock tick so coarse
/// that its bursts fail validation ever come along, the same values are
/// built directly instead of failing.
pub fn default_policy(tick_ns: u64) -> Config {
    parse(DEFAULT_POLICY, Path::new(DEFAULT_POLICY_ORIGIN), tick_ns)
        .unwrap_or_else(|_| defaults::config())
}

/// Parses and validates config text. `origin` names the file in errors;
/// `tick_ns` is the kernel clock's tick, which sets the smallest useful
/// burst for each rate. Reads nothing but `text`: the modes of the files
/// it names are [`load`]'s to check.
pub fn parse(text: &str, origin: &Path, tick_ns: u64) -> Result<Config, ConfigErrors> {
    parse_checked(text, origin, tick_ns, Files::Unchecked)
}

/// Whether the files a config names are looked at on disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Files {
    Unchecked,
    /// Credential files must be owner-only (config/secrets.rs).
    Checked,
}

fn parse_checked(
    text: &str,
    origin: &Path,
    tick_ns: u64,
    files: Files,
) -> Result<Config, ConfigErrors> {
    let mut report = Report::new(text, origin);
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            syntax_error(&e, &mut report);
            return report
                .finish()
                .and(Err(ConfigErrors { errors: Vec::new() }));
        }
    };
    let root = Section {
        table: doc.get_ref(),
        span: doc.span(),
        label: "the top level".into(),
    };
    let parsed = parse::document(&root, &mut report);
    validate::check(&parsed, tick_ns, &mut report);
    if files == Files::Checked {
        secrets::check(&parsed.sites.secrets, &mut report);
    }
    report.finish()?;
    Ok(parsed.config)
}

/// Reads and parses a config file, and checks the files it names that
/// hold credentials.
pub fn load(path: &Path, tick_ns: u64) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_checked(&text, path, tick_ns, Files::Checked),
        Err(e) => Err(ConfigErrors {
            errors: vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                message: read_error_message(&e),
            }],
        }),
    }
}

fn read_error_message(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let fix = match e.kind() {
        K::NotFound => {
            "check the path, or start without --config to run the embedded default policy"
        }
        K::PermissionDenied => {
            "the agent runs as root; check the file's permissions and any security policy (SELinux, AppArmor) in the way"
        }
        K::IsADirectory => "name the config file itself, not its directory",
        K::InvalidData => "the file must be UTF-8 text",
        _ => "check that the file exists and is a readable text file",
    };
    format!("cannot read the config file: {e}; {fix}")
}

fn syntax_error(e: &toml::de::Error, report: &mut Report<'_>) {
    let mut msg = format!("invalid TOML: {}", e.message());
    match e.span() {
        Some(span) => {
            let near = report.source(&span);
            if !near.is_empty() && near.len() <= 40 && !near.contains('\n') {
                msg.push_str(&format!(" (at `{near}`)"));
            }
            report.at(&span, msg);
        }
        None => report.unplaced(msg),
    }
}
