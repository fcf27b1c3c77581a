//! `[crowdsec]`: the LAPI to poll for decisions and, with a machine login,
//! to push autobans to; its credentials' files and what is enforced.

use std::{path::PathBuf, time::Duration};

use super::{
    defaults,
    error::{Report, Span},
    fields::{bounded, check_host, max_addresses, path, positive_duration},
    model::{CrowdsecConfig, DecisionScope},
    reader::{Section, clip},
    secrets::SecretSite,
};

const CROWDSEC_KEYS: &[&str] = &[
    "lapi_url",
    "api_key_file",
    "poll",
    "scopes",
    "types",
    "origins",
    "ca_file",
    "cert_file",
    "key_file",
    "machine_id",
    "password_file",
    "max_addresses",
    "max_decisions",
];

/// Polling faster than this only loads the LAPI; decisions are minutes long.
const MIN_POLL: Duration = Duration::from_secs(1);
const MAX_POLL: Duration = Duration::from_secs(3600);

/// The section, and where it names credential files.
pub(super) fn crowdsec(
    sec: &Section<'_, '_>,
    r: &mut Report<'_>,
) -> (CrowdsecConfig, Vec<SecretSite>) {
    let mut secrets = Vec::new();
    sec.check_keys(CROWDSEC_KEYS, |_| None, r);
    let mut https = false;
    let lapi_url = match sec.string("lapi_url", "\"http://127.0.0.1:8080\"", r) {
        Some((u, span)) => {
            let shown = clip(&format!("{:?}", crate::redact::redact_url(u)));
            let lower = u.to_ascii_lowercase();
            https = lower.starts_with("https://");
            // The LAPI usually listens on the host or a private network,
            // where plain http is the norm; both schemes are fine.
            match lower
                .strip_prefix("https://")
                .or_else(|| lower.strip_prefix("http://"))
            {
                Some(rest) => check_host(rest, &shown, "lapi_url", &span, r),
                None => r.at(
                    &span,
                    format!("`lapi_url`: {shown} is not an http:// or https:// URL"),
                ),
            }
            u.to_string()
        }
        None => defaults::CROWDSEC_LAPI_URL.to_string(),
    };
    let api_key_file = secret_file(sec, "api_key_file", &mut secrets, r);
    let ca_file = tls_file(sec, "ca_file", https, r);
    let cert_file = tls_file(sec, "cert_file", https, r);
    let key_file = tls_file(sec, "key_file", https, r);
    pair(sec, "cert_file", "key_file", "for mutual TLS", r);
    if sec.get("api_key_file").is_none() && sec.get("cert_file").is_none() {
        r.at(
            &sec.span,
            "[crowdsec] needs `api_key_file`: the file holding the bouncer key from `cscli bouncers add` (or `cert_file` and `key_file` for mutual TLS)",
        );
    }
    let poll = match positive_duration(sec, "poll", r) {
        Some((d, at)) if !(MIN_POLL..=MAX_POLL).contains(&d) => {
            r.at(&at, "`poll` must be between 1s and 1h");
            defaults::CROWDSEC_POLL
        }
        Some((d, _)) => d,
        None => defaults::CROWDSEC_POLL,
    };
    let scopes = match sec.strings("scopes", "[\"Ip\", \"Range\"]", r) {
        Some((items, span)) => {
            let mut out = Vec::new();
            for (s, at) in items {
                let scope = match s.to_ascii_lowercase().as_str() {
                    "ip" => DecisionScope::Ip,
                    "range" => DecisionScope::Range,
                    _ => {
                        r.at(
                            &at,
                            format!(
                                "`scopes`: {} is not a scope shield can enforce (\"Ip\" or \"Range\")",
                                clip(&format!("{s:?}"))
                            ),
                        );
                        continue;
                    }
                };
                if !out.contains(&scope) {
                    out.push(scope);
                }
            }
            if out.is_empty() {
                r.at(
                    &span,
                    "`scopes` cannot be empty: give \"Ip\", \"Range\" or both",
                );
            }
            out.sort();
            out
        }
        None => vec![DecisionScope::Ip, DecisionScope::Range],
    };
    let types = match word_list(sec, "types", "[\"ban\"]", r) {
        Some((t, span)) if t.is_empty() => {
            r.at(
                &span,
                "`types` cannot be empty: shield would enforce nothing",
            );
            t
        }
        Some((t, _)) => t,
        None => vec!["ban".to_string()],
    };
    let origins = word_list(sec, "origins", "[\"cscli\", \"crowdsec\"]", r)
        .map(|(o, _)| o)
        .unwrap_or_default();
    let machine_id = match sec.string("machine_id", "\"api-host-1\"", r) {
        Some(("", span)) => {
            r.at(&span, "`machine_id` cannot be empty");
            None
        }
        Some((s, _)) => Some(s.to_string()),
        None => None,
    };
    let password_file = secret_file(sec, "password_file", &mut secrets, r);
    // Pushing alerts needs a machine login: one without the other is
    // half a credential and would fail at the first push.
    pair(
        sec,
        "machine_id",
        "password_file",
        "to push autobans to CrowdSec",
        r,
    );
    let max_addresses = max_addresses(sec, r).unwrap_or(defaults::DEFAULT_MAX_ADDRESSES);
    let max_decisions = bounded(sec, "max_decisions", "200000", 1..=100_000_000, r)
        .map_or(defaults::CROWDSEC_MAX_DECISIONS, |n| n as usize);
    let config = CrowdsecConfig {
        max_addresses,
        max_decisions,
        lapi_url,
        api_key_file,
        poll,
        scopes,
        types,
        origins,
        ca_file,
        cert_file,
        key_file,
        machine_id,
        password_file,
    };
    (config, secrets)
}

/// `a` and `b` come together or not at all.
fn pair(sec: &Section<'_, '_>, a: &str, b: &str, why: &str, r: &mut Report<'_>) {
    match (sec.key_span(a), sec.key_span(b)) {
        (Some(at), None) => r.at(
            &at,
            format!("`{a}` needs `{b}` too (set both {why}, or neither)"),
        ),
        (None, Some(at)) => r.at(
            &at,
            format!("`{b}` needs `{a}` too (set both {why}, or neither)"),
        ),
        _ => {}
    }
}

/// A list of short names (types, origins): no empty or odd entries, no
/// duplicates.
fn word_list(
    sec: &Section<'_, '_>,
    key: &str,
    like: &str,
    r: &mut Report<'_>,
) -> Option<(Vec<String>, Span)> {
    let (items, span) = sec.strings(key, like, r)?;
    let mut out: Vec<String> = Vec::new();
    for (s, at) in items {
        let fine =
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic() && b != b',');
        if !fine {
            r.at(
                &at,
                format!(
                    "`{key}`: {} is not a name (1 to 64 visible characters, no commas)",
                    clip(&format!("{s:?}"))
                ),
            );
        } else if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Some((out, span))
}

/// A TLS file: a path, and only meaningful for an https:// LAPI.
fn tls_file(sec: &Section<'_, '_>, key: &str, https: bool, r: &mut Report<'_>) -> Option<PathBuf> {
    let (p, span) = path(sec, key, r)?;
    if !https {
        r.at(
            &span,
            format!(
                "`{key}` needs an https:// `lapi_url` (TLS settings mean nothing over plain http)"
            ),
        );
    }
    Some(p)
}

/// A file holding a credential: where it is named is kept, for the check
/// of its mode when the config is loaded from disk (config/secrets.rs).
fn secret_file(
    sec: &Section<'_, '_>,
    key: &'static str,
    secrets: &mut Vec<SecretSite>,
    r: &mut Report<'_>,
) -> Option<PathBuf> {
    let (path, at) = path(sec, key, r)?;
    secrets.push(SecretSite {
        key,
        path: path.clone(),
        at,
    });
    Some(path)
}
