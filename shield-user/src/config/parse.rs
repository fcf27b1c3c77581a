//! The walk from the TOML document to a [`Config`]: every key checked where
//! it stands. Checks that compare items with each other are in `validate`,
//! which gets the positions it needs through [`Sites`].

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use toml::de::DeValue;

use super::{
    defaults,
    error::{Report, Span},
    feeds,
    model::{
        AdaptiveConfig, AutobanConfig, Config, LimitSet, MalformedAction, Rate, XdpModeSetting,
    },
    reader::{Section, clip},
    rules, suggest,
    units::{format_duration, parse_duration, parse_rate},
};
use crate::net::Cidr;

/// A parsed config and where its items were written.
pub(super) struct Parsed {
    pub config: Config,
    pub sites: Sites,
}

/// Positions for the checks that look across items. Each list runs parallel
/// to the matching list in the config.
#[derive(Default)]
pub(super) struct Sites {
    pub limits: LimitSites,
    pub tiers: Vec<rules::TierSites>,
    pub ports: Vec<rules::PortSites>,
    pub feeds: Vec<feeds::FeedSites>,
}

/// Where the burst keys of one level were written, when they were.
#[derive(Default)]
pub(super) struct LimitSites {
    pub packet_burst: Option<Span>,
    pub connection_burst: Option<Span>,
}

pub(super) const LIMIT_KEYS: [&str; 4] =
    ["packets", "packet_burst", "connections", "connection_burst"];

const TOP_KEYS: &[&str] = &[
    "interfaces",
    "xdp_mode",
    "dry_run",
    "ipv6_prefix",
    "control_socket",
    "metrics_listen",
    "state_dir",
    "pin_dir",
    "malformed",
    "allow",
    "limits",
    "tier",
    "port",
    "feed",
    "crowdsec",
    "autoban",
    "adaptive",
];

pub(super) fn document(root: &Section<'_, '_>, r: &mut Report<'_>) -> Parsed {
    root.check_keys(
        TOP_KEYS,
        |k| {
            LIMIT_KEYS
                .contains(&k)
                .then(|| format!("`{k}` goes in [limits], or in a [[tier]] or [[port]] rule"))
        },
        r,
    );
    let mut c = defaults::config();
    let mut sites = Sites::default();

    if let Some(list) = interfaces(root, r) {
        c.interfaces = list;
    }
    if let Some(m) = choice(
        root,
        "xdp_mode",
        &[
            ("auto", XdpModeSetting::Auto),
            ("native", XdpModeSetting::Native),
            ("skb", XdpModeSetting::Skb),
        ],
        r,
    ) {
        c.xdp_mode = m;
    }
    if let Some(b) = root.boolean("dry_run", r) {
        c.dry_run = b;
    }
    if let Some(n) = bounded(root, "ipv6_prefix", "64", 16..=128, r) {
        // In range 16..=128, so it fits.
        c.ipv6_prefix = n as u8;
    }
    if let Some((p, span)) = path(root, "control_socket", r) {
        // sun_path holds 108 bytes including the terminating NUL.
        if p.as_os_str().len() > 107 {
            r.at(
                &span,
                "`control_socket`: a Unix socket path can be at most 107 bytes long",
            );
        }
        c.control_socket = p;
    }
    if let Some((addr, _)) = parsed(
        root,
        "metrics_listen",
        "\"127.0.0.1:9964\"",
        |s| {
            s.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "{} is not a socket address: write an IP and a port, like \"127.0.0.1:9964\" or \"[::1]:9964\"",
                    clip(&format!("{s:?}"))
                )
            })
        },
        r,
    ) {
        c.metrics_listen = addr;
    }
    if let Some((p, _)) = path(root, "state_dir", r) {
        c.state_dir = p;
    }
    if let Some((p, _)) = path(root, "pin_dir", r) {
        c.pin_dir = p;
    }
    if let Some(m) = choice(
        root,
        "malformed",
        &[
            ("drop", MalformedAction::Drop),
            ("pass", MalformedAction::Pass),
        ],
        r,
    ) {
        c.malformed = m;
    }
    if let Some(allow) = root.table("allow", r) {
        allow.check_keys(&["cidrs"], |_| None, r);
        if let Some((cidrs, _)) = cidr_list(&allow, "cidrs", r) {
            c.allow = cidrs;
        }
    }
    if let Some(limits) = root.table("limits", r) {
        limits.check_keys(&LIMIT_KEYS, |_| None, r);
        let (set, at) = limit_set(&limits, r);
        // Each key left out falls back to the default policy's, not to "no
        // limit": writing `[limits] packets = ...` must not lift the SYN limit.
        let d = defaults::LIMITS;
        c.limits = LimitSet {
            packets: set.packets.or(d.packets),
            packet_burst: set.packet_burst.or(d.packet_burst),
            connections: set.connections.or(d.connections),
            connection_burst: set.connection_burst.or(d.connection_burst),
        };
        sites.limits = at;
    }
    for t in root.tables("tier", r) {
        let (tier, at) = rules::tier(&t, r);
        c.tiers.push(tier);
        sites.tiers.push(at);
    }
    for p in root.tables("port", r) {
        let (rule, at) = rules::port(&p, r);
        c.ports.push(rule);
        sites.ports.push(at);
    }
    for f in root.tables("feed", r) {
        let (feed, at) = feeds::feed(&f, r);
        c.feeds.push(feed);
        sites.feeds.push(at);
    }
    if let Some(cs) = root.table("crowdsec", r) {
        c.crowdsec = Some(feeds::crowdsec(&cs, r));
    }
    if let Some(ab) = root.table("autoban", r) {
        c.autoban = autoban(&ab, r);
    }
    if let Some(ad) = root.table("adaptive", r) {
        c.adaptive = adaptive(&ad, r);
    }
    Parsed { config: c, sites }
}

fn interfaces(root: &Section<'_, '_>, r: &mut Report<'_>) -> Option<Vec<String>> {
    if let Some(v) = root.get("interfaces")
        && let DeValue::Array(a) = v.get_ref()
        && a.is_empty()
    {
        r.at(
            &v.span(),
            "`interfaces`: an empty interface list: list at least one interface, or omit the key and pass --iface",
        );
        return None;
    }
    let (items, _) = root.strings("interfaces", "[\"eth0\"]", r)?;
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (name, at) in items {
        if let Err(why) = check_ifname(name) {
            r.at(&at, format!("`interfaces`: {why}"));
            continue;
        }
        if let Some(first) = seen.insert(name, at.clone()) {
            let (line, _) = r.position(first.start);
            r.at(
                &at,
                format!("`interfaces`: `{name}` is already listed (line {line})"),
            );
            continue;
        }
        out.push(name.to_string());
    }
    Some(out)
}

/// The kernel's own rule (`dev_valid_name`): 1 to 15 bytes, not `.` or `..`,
/// no `/`, `:` or whitespace.
fn check_ifname(name: &str) -> Result<(), String> {
    let shown = clip(&format!("{name:?}"));
    if name.is_empty() {
        return Err("an interface name cannot be empty".into());
    }
    if name.len() > 15 {
        return Err(format!(
            "{shown} is {} bytes long; Linux interface names have at most 15",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{shown} is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{shown} is not a valid interface name: it cannot contain {c:?}"
        ));
    }
    Ok(())
}

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

const AUTOBAN_KEYS: &[&str] = &["enabled", "after", "ttl", "factor", "max_ttl"];

fn autoban(sec: &Section<'_, '_>, r: &mut Report<'_>) -> AutobanConfig {
    sec.check_keys(AUTOBAN_KEYS, |_| None, r);
    let mut a = defaults::AUTOBAN;
    if let Some(b) = sec.boolean("enabled", r) {
        a.enabled = b;
    }
    if let Some((d, _)) = positive_duration(sec, "after", r) {
        a.after = d;
    }
    let ttl = positive_duration(sec, "ttl", r);
    let max_ttl = positive_duration(sec, "max_ttl", r);
    if let Some(n) = bounded(sec, "factor", "2", 1..=i128::from(u32::MAX), r) {
        a.factor = n as u32;
    }
    if let Some((d, _)) = &ttl {
        a.ttl = *d;
    }
    if let Some((d, _)) = &max_ttl {
        a.max_ttl = *d;
    }
    if a.ttl > a.max_ttl {
        // Blame whichever of the two was written; the other is a default.
        let (span, msg) = match (&ttl, &max_ttl) {
            (Some((_, t)), Some((_, m))) => (
                m.clone(),
                format!(
                    "`max_ttl` = {} is shorter than `ttl` = {}; the first ban would already exceed the cap",
                    r.source(m),
                    r.source(t)
                ),
            ),
            (None, Some((_, m))) => (
                m.clone(),
                format!(
                    "`max_ttl` = {} is shorter than the default `ttl` ({}); lower `ttl` too",
                    r.source(m),
                    format_duration(a.ttl)
                ),
            ),
            (Some((_, t)), None) => (
                t.clone(),
                format!(
                    "`ttl` = {} is longer than the default `max_ttl` ({}); raise `max_ttl` too",
                    r.source(t),
                    format_duration(a.max_ttl)
                ),
            ),
            (None, None) => (sec.span.clone(), "`ttl` is longer than `max_ttl`".into()),
        };
        r.at(&span, msg);
    }
    a
}

const ADAPTIVE_KEYS: &[&str] = &[
    "enabled",
    "drop_rate",
    "pass_rate",
    "factor",
    "max_level",
    "step",
    "relax_after",
];

fn adaptive(sec: &Section<'_, '_>, r: &mut Report<'_>) -> AdaptiveConfig {
    sec.check_keys(ADAPTIVE_KEYS, |_| None, r);
    let mut a = defaults::ADAPTIVE;
    if let Some(b) = sec.boolean("enabled", r) {
        a.enabled = b;
    }
    // "off" turns one threshold off; a rate of zero would mean "always".
    let threshold = |key: &str, r: &mut Report<'_>| -> Option<Option<Rate>> {
        if let Some(v) = sec.get(key)
            && let DeValue::String(s) = v.get_ref()
            && s == "off"
        {
            return Some(None);
        }
        let (rate, span) = rate(sec, key, r)?;
        if rate.count == 0 {
            r.at(
                &span,
                format!("`{key}`: a threshold must be above zero; write \"off\" to use only the other one"),
            );
            return None;
        }
        Some(Some(rate))
    };
    if let Some(t) = threshold("drop_rate", r) {
        a.drop_rate = t;
    }
    if let Some(t) = threshold("pass_rate", r) {
        a.pass_rate = t;
    }
    if let Some(n) = bounded(sec, "factor", "2", 2..=10, r) {
        a.factor = n as u32;
    }
    if let Some(n) = bounded(sec, "max_level", "3", 1..=8, r) {
        a.max_level = n as u32;
    }
    if let Some((d, _)) = positive_duration(sec, "step", r) {
        a.step = d;
    }
    if let Some((d, _)) = positive_duration(sec, "relax_after", r) {
        a.relax_after = d;
    }
    if a.enabled && a.drop_rate.is_none() && a.pass_rate.is_none() {
        r.at(
            &sec.span,
            "[adaptive] is enabled with both `drop_rate` and `pass_rate` off: set at least one threshold",
        );
    }
    a
}
