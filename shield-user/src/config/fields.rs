//! Readers of one config field each (a word from a list, a rate, a
//! duration, a bounded integer, a path, a list of networks, the four limit
//! keys, a URL's host, an address cap), shared by every section's parser:
//! the top level and `[autoban]`/`[adaptive]` (parse.rs), tiers and ports
//! (rules.rs), feeds (feeds.rs) and `[crowdsec]` (crowdsec.rs). Each one
//! reports its own mistakes at the value, with the key.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use super::{
    error::{Report, Span},
    model::{LimitSet, Rate},
    reader::{Section, clip},
    suggest,
    units::{parse_duration, parse_rate},
};
use crate::net::Cidr;

/// Where the burst keys of one level were written, when they were.
#[derive(Default)]
pub(super) struct LimitSites {
    pub packet_burst: Option<Span>,
    pub connection_burst: Option<Span>,
}

pub(super) const LIMIT_KEYS: [&str; 4] =
    ["packets", "packet_burst", "connections", "connection_burst"];

/// One of a few fixed words, with a suggestion for a near miss.
pub(super) fn choice<T: Copy>(
    sec: &Section<'_, '_>,
    key: &str,
    options: &[(&str, T)],
    r: &mut Report<'_>,
) -> Option<T> {
    let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
    let like = format!("\"{}\"", words[0]);
    let (s, span) = sec.string(key, &like, r)?;
    if let Some((_, v)) = options.iter().find(|(w, _)| *w == s) {
        return Some(*v);
    }
    let mut msg = format!(
        "`{key}`: {} is not one of {}",
        clip(&format!("{s:?}")),
        words.join(", ")
    );
    if let Some(near) = suggest::closest(s, &words) {
        msg.push_str(&format!("; did you mean `{near}`?"));
    }
    r.at(&span, msg);
    None
}

/// A string that `f` turns into a value; its complaint is reported at the
/// value, prefixed with the key.
pub(super) fn parsed<T>(
    sec: &Section<'_, '_>,
    key: &str,
    like: &str,
    f: impl FnOnce(&str) -> Result<T, String>,
    r: &mut Report<'_>,
) -> Option<(T, Span)> {
    let (s, span) = sec.string(key, like, r)?;
    match f(s) {
        Ok(v) => Some((v, span)),
        Err(e) => {
            r.at(&span, format!("`{key}`: {e}"));
            None
        }
    }
}

pub(super) fn rate(sec: &Section<'_, '_>, key: &str, r: &mut Report<'_>) -> Option<(Rate, Span)> {
    parsed(sec, key, "\"1000/s\"", parse_rate, r)
}

pub(super) fn duration(
    sec: &Section<'_, '_>,
    key: &str,
    r: &mut Report<'_>,
) -> Option<(Duration, Span)> {
    parsed(sec, key, "\"30s\"", parse_duration, r)
}

/// A duration that must be longer than zero.
pub(super) fn positive_duration(
    sec: &Section<'_, '_>,
    key: &str,
    r: &mut Report<'_>,
) -> Option<(Duration, Span)> {
    let (d, span) = duration(sec, key, r)?;
    if d.is_zero() {
        r.at(&span, format!("`{key}` must be longer than zero"));
        return None;
    }
    Some((d, span))
}

/// An integer within `range`, reported with the value as written otherwise.
pub(super) fn bounded(
    sec: &Section<'_, '_>,
    key: &str,
    like: &str,
    range: std::ops::RangeInclusive<i128>,
    r: &mut Report<'_>,
) -> Option<i128> {
    let (n, span) = sec.integer(key, like, r)?;
    if !range.contains(&n) {
        // An upper bound that is just the type's limit is noise to a reader.
        let bound = if *range.end() >= i128::from(u32::MAX) {
            format!("at least {}", range.start())
        } else {
            format!("between {} and {}", range.start(), range.end())
        };
        let msg = format!(
            "`{key}`: {} is out of range; it must be {bound}",
            r.source(&span)
        );
        r.at(&span, msg);
        return None;
    }
    Some(n)
}

pub(super) fn path(
    sec: &Section<'_, '_>,
    key: &str,
    r: &mut Report<'_>,
) -> Option<(PathBuf, Span)> {
    let (s, span) = sec.string(key, "\"/var/lib/shield\"", r)?;
    if s.is_empty() {
        r.at(&span, format!("`{key}`: a path cannot be empty"));
        return None;
    }
    if s.contains('\0') {
        r.at(&span, format!("`{key}`: a path cannot contain a NUL byte"));
        return None;
    }
    Some((PathBuf::from(s), span))
}

/// A list of networks, each checked by [`Cidr`]'s strict parser.
pub(super) fn cidr_list(
    sec: &Section<'_, '_>,
    key: &str,
    r: &mut Report<'_>,
) -> Option<(Vec<Cidr>, Vec<Span>)> {
    let (items, _) = sec.strings(key, "[\"10.0.0.0/8\"]", r)?;
    let mut seen: HashMap<Cidr, Span> = HashMap::new();
    let mut cidrs = Vec::with_capacity(items.len());
    let mut spans = Vec::with_capacity(items.len());
    for (s, at) in items {
        match s.parse::<Cidr>() {
            Ok(c) => {
                if let Some(first) = seen.get(&c) {
                    let (line, column) = r.position(first.start);
                    r.at(
                        &at,
                        format!("`{key}`: `{c}` is listed twice (first at {line}:{column})"),
                    );
                    continue;
                }
                seen.insert(c, at.clone());
                cidrs.push(c);
                spans.push(at);
            }
            Err(e) => r.at(&at, format!("`{key}`: {e}")),
        }
    }
    Some((cidrs, spans))
}

/// The four limit keys of `[limits]`, a `[[tier]]` or a `[[port]]` rule.
pub(super) fn limit_set(sec: &Section<'_, '_>, r: &mut Report<'_>) -> (LimitSet, LimitSites) {
    let packets = rate(sec, "packets", r);
    let connections = rate(sec, "connections", r);
    let packet_burst = burst(sec, "packet_burst", r);
    let connection_burst = burst(sec, "connection_burst", r);
    let set = LimitSet {
        packets: packets.map(|(v, _)| v),
        packet_burst: packet_burst.as_ref().map(|(v, _)| *v),
        connections: connections.map(|(v, _)| v),
        connection_burst: connection_burst.as_ref().map(|(v, _)| *v),
    };
    let at = LimitSites {
        packet_burst: packet_burst.map(|(_, s)| s),
        connection_burst: connection_burst.map(|(_, s)| s),
    };
    (set, at)
}

fn burst(sec: &Section<'_, '_>, key: &str, r: &mut Report<'_>) -> Option<(u64, Span)> {
    let (n, span) = sec.integer(key, "2000", r)?;
    if n < 1 {
        let msg = format!(
            "`{key}`: {} is too small; a burst is at least 1 (to block sources, use `allow_from`)",
            r.source(&span)
        );
        r.at(&span, msg);
        return None;
    }
    match u64::try_from(n) {
        Ok(n) => Some((n, span)),
        Err(_) => {
            let msg = format!("`{key}`: {} is too large", r.source(&span));
            r.at(&span, msg);
            None
        }
    }
}

/// The host part of a URL after its scheme (`rest`): present, and no
/// whitespace or control characters anywhere. `shown` is the URL as it may
/// be shown (redacted).
pub(super) fn check_host(rest: &str, shown: &str, key: &str, span: &Span, r: &mut Report<'_>) {
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        r.at(span, format!("`{key}`: {shown} is not a valid URL"));
    }
}

/// `max_addresses`: a whole number of IPv4 addresses, 1 to all of IPv4
/// (docs/configuration.md says how the IPv6 cap follows from it).
pub(super) fn max_addresses(sec: &Section<'_, '_>, r: &mut Report<'_>) -> Option<u64> {
    let (n, span) = sec.integer("max_addresses", "268435456", r)?;
    let max = super::defaults::MAX_MAX_ADDRESSES;
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
