//! Checks that compare items with each other, or with the kernel's limits:
//! names, overlapping tiers and ports, table sizes, and bursts that the
//! kernel's coarse clock could not honour.

use std::collections::HashMap;

use shield_common::{
    gcra::{Gcra, min_burst},
    maps::{MAX_ACLS, MAX_CLASSES, MAX_FEEDS, MAX_TIERS},
};

use super::{
    error::{Report, Span},
    fields::LimitSites,
    model::{LimitSet, Proto, Rate},
    parse::Parsed,
    rules::PortEntry,
    units::format_rate,
};
use crate::net::Cidr;

// Id 0 is the default tier, class and "no feed" in each kernel table.
pub(super) const MAX_TIER_COUNT: usize = MAX_TIERS as usize - 1;
pub(super) const MAX_PORT_RULES: usize = MAX_CLASSES as usize - 1;
pub(super) const MAX_FEED_COUNT: usize = MAX_FEEDS as usize - 1;
// Every port rule may carry an `allow_from`, so the ACL bitmask must have a
// bit for each.
const _: () = assert!(MAX_PORT_RULES <= MAX_ACLS as usize);

pub(super) fn check(p: &Parsed, tick_ns: u64, r: &mut Report<'_>) {
    let c = &p.config;
    let s = &p.sites;

    too_many(
        r,
        "tiers",
        MAX_TIER_COUNT,
        s.tiers.iter().map(|t| &t.header),
    );
    too_many(
        r,
        "port rules",
        MAX_PORT_RULES,
        s.ports.iter().map(|t| &t.header),
    );
    too_many(
        r,
        "feeds",
        MAX_FEED_COUNT,
        s.feeds.iter().map(|t| &t.header),
    );

    let tier_names = unique_names(
        r,
        "[[tier]]",
        c.tiers
            .iter()
            .map(|t| t.name.as_str())
            .zip(s.tiers.iter().map(|t| &t.name)),
    );
    let port_names = unique_names(
        r,
        "[[port]]",
        c.ports
            .iter()
            .map(|t| t.name.as_str())
            .zip(s.ports.iter().map(|t| &t.name)),
    );
    unique_names(
        r,
        "[[feed]]",
        c.feeds
            .iter()
            .map(|t| t.name.as_str())
            .zip(s.feeds.iter().map(|t| &t.name)),
    );
    // `shieldctl limits set NAME` takes a tier or a port rule's name; one
    // name for both would leave it guessing.
    for (name, at) in &port_names {
        if let Some(tier_at) = tier_names.get(name) {
            let (line, _) = r.position(tier_at.start);
            r.at(
                at,
                format!(
                    "`{name}` is already the name of a [[tier]] (line {line}); tiers and port rules need different names"
                ),
            );
        }
    }

    tier_overlaps(p, r);
    port_overlaps(p, r);

    bursts(r, tick_ns, &c.limits, &s.limits, &c.limits);
    for (t, at) in c.tiers.iter().zip(&s.tiers) {
        bursts(r, tick_ns, &t.limits, &at.limits, &c.limits);
    }
    for (rule, at) in c.ports.iter().zip(&s.ports) {
        bursts(r, tick_ns, &rule.limits, &at.limits, &c.limits);
    }
}

fn too_many<'s>(
    r: &mut Report<'_>,
    what: &str,
    max: usize,
    headers: impl Iterator<Item = &'s Span>,
) {
    if let Some(first_extra) = headers.into_iter().nth(max) {
        r.at(
            first_extra,
            format!(
                "too many {what}: the kernel's tables hold at most {max}, and this is number {}",
                max + 1
            ),
        );
    }
}

/// Reports repeated names; returns the first place each valid name appears.
fn unique_names<'c>(
    r: &mut Report<'_>,
    what: &str,
    names: impl Iterator<Item = (&'c str, &'c Option<Span>)>,
) -> HashMap<&'c str, Span> {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for (name, at) in names {
        // No span: the name was missing or invalid, and already reported.
        let Some(at) = at else { continue };
        if let Some(first) = seen.get(name) {
            let (line, _) = r.position(first.start);
            r.at(
                at,
                format!(
                    "another {what} is already named `{name}` (line {line}); names must be unique"
                ),
            );
        } else {
            seen.insert(name, at.clone());
        }
    }
    seen
}

/// The same prefix in two tiers has no single answer to "which tier?";
/// a prefix nested in another is fine (the longest one wins).
fn tier_overlaps(p: &Parsed, r: &mut Report<'_>) {
    let mut owner: HashMap<Cidr, (usize, &Span)> = HashMap::new();
    for (i, (tier, at)) in p.config.tiers.iter().zip(&p.sites.tiers).enumerate() {
        for (cidr, span) in tier.cidrs.iter().zip(&at.cidrs) {
            match owner.get(cidr) {
                Some((j, first)) => {
                    let (line, _) = r.position(first.start);
                    let other = tier_label(&p.config.tiers[*j].name);
                    r.at(
                        span,
                        format!(
                            "`{cidr}` is already in {other} (line {line}); a prefix can be in one tier only (a longer prefix inside it may go in another tier)"
                        ),
                    );
                }
                None => {
                    owner.insert(*cidr, (i, span));
                }
            }
        }
    }
}

fn tier_label(name: &str) -> String {
    if name.is_empty() {
        "another [[tier]]".into()
    } else {
        format!("[[tier]] `{name}`")
    }
}

/// A destination port belongs to one rule per protocol: two rules for one
/// port would make the kernel pick a class at random.
fn port_overlaps(p: &Parsed, r: &mut Report<'_>) {
    // The rule that owns each port, per protocol; usize::MAX is "free".
    let mut owners = [vec![usize::MAX; 65_536], vec![usize::MAX; 65_536]];
    for (i, at) in p.sites.ports.iter().enumerate() {
        let Some(proto) = at.proto else { continue };
        let slots = &mut owners[usize::from(proto == Proto::Udp)];
        for entry in &at.entries {
            // Ports of this entry that someone already claimed, grouped by
            // claimer: (first, last, count).
            let mut clashes: Vec<(usize, u16, u16, u32)> = Vec::new();
            for port in entry.lo..=entry.hi {
                let slot = &mut slots[usize::from(port)];
                if *slot == usize::MAX {
                    *slot = i;
                    continue;
                }
                match clashes.iter_mut().find(|c| c.0 == *slot) {
                    Some(c) => {
                        c.2 = port;
                        c.3 += 1;
                    }
                    None => clashes.push((*slot, port, port, 1)),
                }
            }
            for (other, first, last, count) in clashes {
                let ports = port_words(proto, entry, first, last, count);
                let msg = if other == i {
                    format!("{ports} already listed in this rule")
                } else {
                    let (line, _) = r.position(p.sites.ports[other].header.start);
                    let name = &p.config.ports[other].name;
                    format!(
                        "{ports} already claimed by [[port]] `{name}` (line {line}); a port can be in one rule per protocol"
                    )
                };
                r.at(&entry.span, msg);
            }
        }
    }
}

fn port_words(proto: Proto, entry: &PortEntry, first: u16, last: u16, count: u32) -> String {
    let proto = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    if count == 1 {
        format!("{proto} port {first} is")
    } else if entry.lo == first && entry.hi == last {
        format!("{proto} ports {first}-{last} are")
    } else {
        format!("{count} of these {proto} ports ({first}-{last}) are")
    }
}

/// With a clock that advances once per tick, all packets of a tick share one
/// timestamp, so a bucket must hold a tick's worth of packets or the rate
/// collapses to `burst` per tick. Only bursts written at a level are judged,
/// against the rate in force there: its own, or the inherited one.
fn bursts(
    r: &mut Report<'_>,
    tick_ns: u64,
    level: &LimitSet,
    at: &LimitSites,
    inherited: &LimitSet,
) {
    let pairs = [
        (
            "packet_burst",
            "packets",
            level.packet_burst,
            &at.packet_burst,
            level.packets,
            inherited.packets,
        ),
        (
            "connection_burst",
            "connections",
            level.connection_burst,
            &at.connection_burst,
            level.connections,
            inherited.connections,
        ),
    ];
    for (key, rate_key, burst, span, own, parent) in pairs {
        let (Some(burst), Some(span)) = (burst, span) else {
            continue;
        };
        let (rate, whose) = match (own, parent) {
            (Some(rate), _) => (rate, String::new()),
            (None, Some(rate)) => (rate, " (inherited from [limits])".to_string()),
            (None, None) => continue,
        };
        let need = needed_burst(&rate, burst, tick_ns);
        if burst < need {
            r.at(
                span,
                format!(
                    "`{key}` = {burst} is too small for {rate_key} = \"{}\"{whose}: bursts below {need} cannot hold the rate with the kernel's {} clock tick; raise it to at least {need}",
                    format_rate(&rate),
                    tick_words(tick_ns)
                ),
            );
        }
    }
}

fn needed_burst(rate: &Rate, burst: u64, tick_ns: u64) -> u64 {
    let per_ns = u64::try_from(rate.per.as_nanos()).unwrap_or(u64::MAX);
    min_burst(&Gcra::new(rate.count, per_ns, burst), tick_ns)
}

/// `4 ms`, `4.167 ms`, `0.5 ms`: three decimals are plenty to recognise a
/// tick.
fn tick_words(tick_ns: u64) -> String {
    if tick_ns < 1_000 {
        return format!("{tick_ns} ns");
    }
    let micros = tick_ns / 1_000 + u64::from(tick_ns % 1_000 >= 500);
    let (whole, frac) = (micros / 1_000, micros % 1_000);
    if frac == 0 {
        format!("{whole} ms")
    } else {
        let frac = format!("{frac:03}");
        format!("{whole}.{} ms", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_wording() {
        assert_eq!(tick_words(4_000_000), "4 ms");
        assert_eq!(tick_words(4_166_667), "4.167 ms");
        assert_eq!(tick_words(500_000), "0.5 ms");
        assert_eq!(tick_words(10_000_000), "10 ms");
        assert_eq!(tick_words(3_999_999), "4 ms");
        assert_eq!(tick_words(1), "1 ns");
    }

    #[test]
    fn kernel_table_sizes() {
        assert_eq!(MAX_TIER_COUNT, 63);
        assert_eq!(MAX_PORT_RULES, 63);
        assert_eq!(MAX_FEED_COUNT, 255);
    }
}
