//! `[[feed]]`: threat-feed blocklists, fetched from a URL or read from a
//! file (`[crowdsec]`, the other block source from outside the host, is
//! crowdsec.rs).

use std::{path::PathBuf, time::Duration};

use super::{
    defaults,
    error::{Report, Span},
    fields::{bounded, check_host, choice, duration, max_addresses, parsed, path},
    model::{FeedConfig, FeedFormat, FeedSource},
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

    let max_addresses = max_addresses(sec, r).unwrap_or(defaults::DEFAULT_MAX_ADDRESSES);
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
    let shown = clip(&format!("{:?}", crate::redact::redact_url(u)));
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
