//! The policy compiler: a pure function from a validated [`Config`] (plus
//! runtime state such as `shieldctl allow add` entries and limit overrides)
//! to the exact contents of every configuration map, and the difference
//! between two such compilations.
//!
//! Keeping this pure is what lets reload apply only what changed and lets the
//! host tests check every map the kernel will see.

mod diff;
mod limits;
mod sources;

use std::collections::BTreeMap;

pub use diff::{MapDiff, PolicyDiff};
pub use limits::{LimitOverride, ResolvedLimit, default_burst, tightened};
use shield_common::maps::{
    CFG_DRY_RUN, CFG_MALFORMED_PASS, GlobalConfig, Limits, MAX_ACLS, MAX_CLASSES, MAX_TIERS,
    PORT_DRY_RUN, PROTO_TCP, PROTO_UDP, PortRule, SourceClass,
};
pub use sources::compile_sources;

use crate::{
    config::{Config, MalformedAction, Proto},
    net::Cidr,
};

/// Tier and class ids are the indices; id 0 is always `default`.
pub const DEFAULT_NAME: &str = "default";

/// Everything the kernel's configuration maps should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub global: GlobalConfig,
    /// `SRC_V4`/`SRC_V6`: allowlist, tier and ACL membership.
    pub sources: BTreeMap<Cidr, SourceClass>,
    /// `PORTS`, keyed by (proto, port). Absent slots are all-zero (class 0, no ACL).
    pub ports: BTreeMap<(u8, u16), PortRule>,
    /// `LIMITS`, keyed by (tier id, class id). Absent slots are all-zero (no limit).
    pub limits: BTreeMap<(u16, u16), Limits>,
    /// The same limits in operator terms, for `shieldctl limits` and `check`.
    pub resolved: BTreeMap<(u16, u16), (ResolvedLimit, ResolvedLimit)>,
    /// Tier names by id.
    pub tiers: Vec<String>,
    /// Class (port rule) names by id.
    pub classes: Vec<String>,
    /// Things the compiler adjusted and the operator should hear about.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("too many {what}: {count} (at most {max})")]
    TooMany {
        what: &'static str,
        count: usize,
        max: u32,
    },
    #[error("limit override names `{0}`, which is neither `default`, a tier nor a port rule")]
    UnknownTarget(String),
}

/// Inputs beyond the config file.
#[derive(Clone, Debug, Default)]
pub struct Runtime<'a> {
    /// Allowlist entries added at runtime (`shieldctl allow add`).
    pub allow: &'a [Cidr],
    /// Limit overrides (`shieldctl limits set`), applied over the config.
    pub overrides: &'a [LimitOverride],
    /// The running policy: names keep their ids so buckets (keyed by class id)
    /// survive a reload that reorders or adds rules.
    pub previous: Option<&'a Policy>,
    /// The kernel clock tick; bursts are raised to hold the rate across it.
    pub tick_ns: u64,
    /// `[adaptive]`: the default tier's limits (every class, for sources in
    /// no `[[tier]]`) are divided by this. 0 or 1: as configured. Other
    /// tiers and the allowlist are never tightened.
    pub adaptive_divisor: u64,
}

pub fn compile(cfg: &Config, rt: &Runtime<'_>) -> Result<Policy, PolicyError> {
    let tier_names: Vec<&str> = cfg.tiers.iter().map(|t| t.name.as_str()).collect();
    let class_names: Vec<&str> = cfg.ports.iter().map(|p| p.name.as_str()).collect();
    let tiers = assign_ids(
        &tier_names,
        rt.previous.map(|p| &p.tiers[..]),
        MAX_TIERS,
        "tiers",
    )?;
    let classes = assign_ids(
        &class_names,
        rt.previous.map(|p| &p.classes[..]),
        MAX_CLASSES,
        "port rules",
    )?;
    let id_of = |names: &[String], n: &str| names.iter().position(|x| x == n).unwrap_or(0) as u16;

    for o in rt.overrides {
        let known = o.target == DEFAULT_NAME
            || tier_names.contains(&o.target.as_str())
            || class_names.contains(&o.target.as_str());
        if !known {
            return Err(PolicyError::UnknownTarget(o.target.clone()));
        }
    }

    let mut flags = 0;
    if cfg.dry_run {
        flags |= CFG_DRY_RUN;
    }
    if cfg.malformed == MalformedAction::Pass {
        flags |= CFG_MALFORMED_PASS;
    }
    let global = GlobalConfig::new(flags, cfg.ipv6_prefix.into());

    // ACL ids are positional among the rules that have one; nothing keys
    // state on them, so they need no stability across reloads.
    let acl_rules: Vec<_> = cfg
        .ports
        .iter()
        .filter(|p| p.allow_from.is_some())
        .collect();
    if acl_rules.len() > MAX_ACLS as usize {
        return Err(PolicyError::TooMany {
            what: "port rules with allow_from",
            count: acl_rules.len(),
            max: MAX_ACLS,
        });
    }

    let mut ports = BTreeMap::new();
    for rule in &cfg.ports {
        let acl = acl_rules
            .iter()
            .position(|r| r.name == rule.name)
            .map_or(0, |i| i as u8 + 1);
        let proto = match rule.proto {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        };
        let value = PortRule {
            class: id_of(&classes, &rule.name),
            acl,
            flags: if rule.dry_run { PORT_DRY_RUN } else { 0 },
        };
        for &port in &rule.ports {
            ports.insert((proto, port), value);
        }
    }

    let mut allow: Vec<Cidr> = cfg.allow.clone();
    allow.extend_from_slice(rt.allow);
    let tier_sets: Vec<(u16, &[Cidr])> = cfg
        .tiers
        .iter()
        .map(|t| (id_of(&tiers, &t.name), &t.cidrs[..]))
        .collect();
    let acl_sets: Vec<&[Cidr]> = acl_rules
        .iter()
        .map(|r| r.allow_from.as_deref().unwrap_or_default())
        .collect();
    let sources = compile_sources(&allow, &tier_sets, &acl_sets);

    let mut warnings = Vec::new();
    let mut limits_map = BTreeMap::new();
    let mut resolved = BTreeMap::new();
    let override_for = |name: &str| limits::merged_overrides(rt.overrides, name);
    let default_level = limits::layer(&cfg.limits, &override_for(DEFAULT_NAME));
    let tier_levels: Vec<(u16, _)> = std::iter::once((0u16, None))
        .chain(cfg.tiers.iter().map(|t| {
            (
                id_of(&tiers, &t.name),
                Some(limits::layer(&t.limits, &override_for(&t.name))),
            )
        }))
        .collect();
    let class_levels: Vec<(u16, _)> = std::iter::once((0u16, None))
        .chain(cfg.ports.iter().map(|p| {
            (
                id_of(&classes, &p.name),
                Some(limits::layer(&p.limits, &override_for(&p.name))),
            )
        }))
        .collect();
    for (tier, tier_level) in &tier_levels {
        for (class, class_level) in &class_levels {
            let levels = [Some(default_level), *tier_level, *class_level];
            let (mut pkt, mut syn) = limits::resolve(&levels, rt.tick_ns, &mut |w| {
                warnings.push(format!(
                    "tier `{}`, class `{}`: {w}",
                    tiers[*tier as usize], classes[*class as usize]
                ))
            });
            if *tier == 0 {
                pkt = limits::tightened(pkt, rt.adaptive_divisor, rt.tick_ns);
                syn = limits::tightened(syn, rt.adaptive_divisor, rt.tick_ns);
            }
            let l = Limits {
                packets: pkt.gcra(),
                syns: syn.gcra(),
            };
            if l != Limits::default() {
                limits_map.insert((*tier, *class), l);
            }
            resolved.insert((*tier, *class), (pkt, syn));
        }
    }
    warnings.sort();
    warnings.dedup();

    Ok(Policy {
        global,
        sources,
        ports,
        limits: limits_map,
        resolved,
        tiers,
        classes,
        warnings,
    })
}

/// Names → ids, index 0 being `default`. Names the previous policy knew keep
/// their ids; new names take the lowest free ones.
fn assign_ids(
    names: &[&str],
    previous: Option<&[String]>,
    max: u32,
    what: &'static str,
) -> Result<Vec<String>, PolicyError> {
    if names.len() + 1 > max as usize {
        return Err(PolicyError::TooMany {
            what,
            count: names.len(),
            max: max - 1,
        });
    }
    let mut slots: Vec<Option<String>> = vec![Some(DEFAULT_NAME.to_string())];
    if let Some(prev) = previous {
        for (i, n) in prev.iter().enumerate().skip(1) {
            if names.contains(&n.as_str()) {
                if slots.len() <= i {
                    slots.resize(i + 1, None);
                }
                slots[i] = Some(n.clone());
            }
        }
    }
    for n in names {
        if slots.iter().any(|s| s.as_deref() == Some(n)) {
            continue;
        }
        match slots.iter().position(Option::is_none) {
            Some(free) => slots[free] = Some((*n).to_string()),
            None => slots.push(Some((*n).to_string())),
        }
    }
    if slots.len() > max as usize {
        // Reusing old ids left holes that pushed us past the table; start
        // afresh (buckets of renumbered classes restart, which is safe).
        return assign_ids(names, None, max, what);
    }
    // Holes (names that went away) stay as placeholders that nothing maps to.
    Ok(slots.into_iter().map(Option::unwrap_or_default).collect())
}

#[cfg(test)]
mod tests;
