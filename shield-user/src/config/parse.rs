//! The walk from the TOML document to a [`Config`]: every key checked where
//! it stands. Checks that compare items with each other are in `validate`,
//! which gets the positions it needs through [`Sites`].

use std::{collections::HashMap, net::SocketAddr};

use toml::de::DeValue;

use super::{
    crowdsec, defaults,
    error::Report,
    feeds,
    fields::{
        LIMIT_KEYS, LimitSites, bounded, choice, cidr_list, limit_set, parsed, path,
        positive_duration, rate,
    },
    model::{
        AdaptiveConfig, AutobanConfig, Config, LimitSet, MalformedAction, Rate, XdpModeSetting,
    },
    reader::{Section, clip},
    rules,
    secrets::SecretSite,
    units::format_duration,
};

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
    /// Credential files, checked only when the config comes from disk.
    pub secrets: Vec<SecretSite>,
}

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
        let (crowdsec, secrets) = crowdsec::crowdsec(&cs, r);
        c.crowdsec = Some(crowdsec);
        sites.secrets = secrets;
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
