//! `[[feed]]` (threat-feed blocklists) and `[crowdsec]` (a shared decision
//! engine): the block sources that come from outside the host.

use std::{path::PathBuf, time::Duration};

use super::{
    defaults,
    error::{Report, Span},
    model::{CrowdsecConfig, DecisionScope, FeedConfig, FeedFormat, FeedSource},
    parse::{bounded, choice, duration, parsed, path, positive_duration},
    reader::{Section, clip},
    rules::name,
    units::{format_duration, parse_size},
};

/// Faster refreshes would hammer the publishers, who rate-limit or ban
/// aggressive clients; no public feed changes that often.
pub(super) const MIN_REFRESH: Duration = Duration::from_secs(10);

pub(super) struct FeedSites {
    pub header: Span,
    pub name: Option<Span>,
}

const FEED_KEYS: &[&str] = &[
    "name",
    "url",
    "path",
    "format",
    "refresh",
    "allow_http",
    "allow_broad",
    "min_score",
    "max_bytes",
    "timeout",
    "max_addresses",
];

pub(super) fn feed(sec: &Section<'_, '_>, r: &mut Report<'_>) -> (FeedConfig, FeedSites) {
    sec.check_keys(FEED_KEYS, |_| None, r);
    let (name, name_at) = name(sec, "\"spamhaus-drop\"", r);
    let allow_http = sec.boolean("allow_http", r).unwrap_or(false);
    let allow_broad = sec.boolean("allow_broad", r).unwrap_or(false);

    let has_url = sec.get("url").is_some();
    let has_path = sec.get("path").is_some();
    match (has_url, has_path) {
        (true, true) => {
            let at = sec.key_span("path").unwrap_or(sec.span.clone());
            r.at(&at, "a feed takes `url` or `path`, not both");
        }
        (false, false) => r.at(
            &sec.span,
            "this [[feed]] has no source: give it a `url` (https://…) or a `path`",
        ),
        _ => {}
    }
    let url = sec.string("url", "\"https://www.spamhaus.org/drop/drop.txt\"", r);
    let file = path(sec, "path", r);
    let source = match (url, file) {
        (Some((u, span)), _) => {
            if !has_path {
                check_feed_url(u, allow_http, &span, r);
            }
            FeedSource::Url(u.to_string())
        }
        (None, Some((p, _))) => FeedSource::Path(p),
        (None, None) => FeedSource::Path(PathBuf::new()),
    };

    let format = choice(
        sec,
        "format",
        &[
            ("auto", FeedFormat::Auto),
            ("plain", FeedFormat::Plain),
            ("netset", FeedFormat::Netset),
            ("spamhaus", FeedFormat::Spamhaus),
            ("ipsum", FeedFormat::Ipsum),
        ],
        r,
    );
    let min_score = bounded(sec, "min_score", "3", 0..=i128::from(u32::MAX), r).map(|n| n as u32);
    if let (Some(f), Some(at)) = (format, sec.get("min_score").map(toml::Spanned::span))
        && !matches!(f, FeedFormat::Ipsum | FeedFormat::Auto)
    {
        r.at(
            &at,
            format!(
                "`min_score` only applies to the ipsum format, and this feed's format is \"{}\"",
                format_name(f)
            ),
        );
    }

    let refresh = match duration(sec, "refresh", r) {
        Some((d, at)) if d < MIN_REFRESH => {
            r.at(
                &at,
                format!(
                    "`refresh`: {} is too often; feeds refresh at most every {} (publishers ban clients that poll harder)",
                    format_duration(d),
                    format_duration(MIN_REFRESH)
                ),
            );
            defaults::FEED_REFRESH
        }
        Some((d, _)) => d,
        None => defaults::FEED_REFRESH,
    };

    let max_bytes = max_bytes(sec, r).unwrap_or(defaults::FEED_MAX_BYTES);
    let timeout = match duration(sec, "timeout", r) {
        Some((d, at)) if d < Duration::from_secs(1) || d > Duration::from_secs(3600) => {
            r.at(&at, "`timeout` must be between 1s and 1h");
            defaults::FEED_TIMEOUT
        }
        Some((d, _)) => d,
        None => defaults::FEED_TIMEOUT,
    };

    let max_addresses = max_addresses(sec, r).unwrap_or(crate::feeds::DEFAULT_MAX_ADDRESSES);
    (
        FeedConfig {
            name,
            source,
            format: format.unwrap_or_default(),
            refresh,
            allow_http,
            allow_broad,
            min_score,
            max_bytes,
            timeout,
            max_addresses,
        },
        FeedSites {
            header: sec.span.clone(),
            name: name_at,
        },
    )
}

fn format_name(f: FeedFormat) -> &'static str {
    match f {
        FeedFormat::Auto => "auto",
        FeedFormat::Plain => "plain",
        FeedFormat::Netset => "netset",
        FeedFormat::Spamhaus => "spamhaus",
        FeedFormat::Ipsum => "ipsum",
    }
}

/// A blocklist fetched over plain http can be rewritten by anyone on the
/// path, and a rewritten blocklist is a way to cut the host off: https
/// unless the operator says otherwise in so many words.
fn check_feed_url(u: &str, allow_http: bool, span: &Span, r: &mut Report<'_>) {
    // Errors end up in logs: never with the URL's credentials.
    let shown = clip(&format!("{:?}", crate::feeds::redact_url(u)));
    let lower = u.to_ascii_lowercase();
    let rest = if let Some(rest) = lower.strip_prefix("https://") {
        rest
    } else if let Some(rest) = lower.strip_prefix("http://") {
        if !allow_http {
            r.at(
                span,
                format!(
                    "`url`: {shown} is plain http, which anyone on the path can tamper with; use https://, or set allow_http = true to accept the risk"
                ),
            );
            return;
        }
        rest
    } else {
        r.at(
            span,
            format!("`url`: {shown} is not an https:// URL (for a local file, use `path`)"),
        );
        return;
    };
    check_host(rest, &shown, "url", span, r);
}

fn check_host(rest: &str, shown: &str, key: &str, span: &Span, r: &mut Report<'_>) {
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        r.at(span, format!("`{key}`: {shown} is not a valid URL"));
    }
}

fn max_bytes(sec: &Section<'_, '_>, r: &mut Report<'_>) -> Option<u64> {
    let v = sec.get("max_bytes")?;
    let n = if v.get_ref().is_str() {
        parsed(sec, "max_bytes", "\"64MiB\"", parse_size, r)?.0
    } else {
        bounded(sec, "max_bytes", "67108864", 1..=i128::from(u64::MAX), r)? as u64
    };
    if n == 0 {
        r.at(&v.span(), "`max_bytes` must be more than zero");
        return None;
    }
    Some(n)
}

/// `max_addresses`: a whole number of IPv4 addresses, 1 to all of IPv4
/// (docs/configuration.md says how the IPv6 cap follows from it).
fn max_addresses(sec: &Section<'_, '_>, r: &mut Report<'_>) -> Option<u64> {
    let (n, span) = sec.integer("max_addresses", "268435456", r)?;
    let max = crate::feeds::MAX_MAX_ADDRESSES;
    if !(1..=i128::from(max)).contains(&n) {
        r.at(
            &span,
            format!(
                "`max_addresses`: {} is out of range; it must be between 1 and {max} (all of IPv4)",
                r.source(&span)
            ),
        );
        return None;
    }
    Some(n as u64)
}

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

pub(super) fn crowdsec(sec: &Section<'_, '_>, r: &mut Report<'_>) -> CrowdsecConfig {
    sec.check_keys(CROWDSEC_KEYS, |_| None, r);
    let mut https = false;
    let lapi_url = match sec.string("lapi_url", "\"http://127.0.0.1:8080\"", r) {
        Some((u, span)) => {
            let shown = clip(&format!("{:?}", crate::feeds::redact_url(u)));
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
    let api_key_file = secret_file(sec, "api_key_file", r);
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
    let password_file = secret_file(sec, "password_file", r);
    // Pushing alerts needs a machine login: one without the other is
    // half a credential and would fail at the first push.
    pair(
        sec,
        "machine_id",
        "password_file",
        "to push autobans to CrowdSec",
        r,
    );
    let max_addresses = max_addresses(sec, r).unwrap_or(crate::feeds::DEFAULT_MAX_ADDRESSES);
    let max_decisions = bounded(sec, "max_decisions", "200000", 1..=100_000_000, r)
        .map_or(defaults::CROWDSEC_MAX_DECISIONS, |n| n as usize);
    CrowdsecConfig {
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
    }
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

/// A file holding a credential. One that others can read is refused when it
/// exists now (the agent checks again each time it reads it).
fn secret_file(sec: &Section<'_, '_>, key: &str, r: &mut Report<'_>) -> Option<PathBuf> {
    let (p, span) = path(sec, key, r)?;
    if let Err(why) = crate::crowdsec::check_secret_mode(&p) {
        r.at(&span, format!("`{key}`: {why}"));
    }
    Some(p)
}
