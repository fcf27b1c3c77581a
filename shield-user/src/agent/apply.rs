//! Writing a policy difference into the maps. New and changed entries go
//! in before stale ones come out, so no source is ever unclassified in
//! between.

use shield_common::maps::{Limits, PortRule};

use super::bans::{BanBook, BanError};
use crate::{
    dataplane::{Dataplane, DataplaneError},
    policy::{Policy, PolicyDiff},
};

/// What the maps hold now, as a policy (names unknown), to diff against.
pub(super) fn snapshot(dp: &Dataplane) -> Result<Policy, DataplaneError> {
    Ok(Policy {
        global: dp.config()?,
        sources: dp.source_entries()?,
        ports: dp.port_rules()?,
        limits: dp.limits_entries()?,
        resolved: Default::default(),
        tiers: Vec::new(),
        classes: Vec::new(),
        warnings: Vec::new(),
    })
}

pub(super) fn apply(dp: &mut Dataplane, d: &PolicyDiff) -> Result<(), DataplaneError> {
    for (net, v) in &d.sources.upsert {
        dp.set_source_class(*net, v)?;
    }
    for ((proto, port), v) in &d.ports.upsert {
        dp.set_port_rule(*proto, *port, v)?;
    }
    for ((tier, class), v) in &d.limits.upsert {
        dp.set_limits(*tier, *class, v)?;
    }
    if let Some(g) = &d.global {
        dp.set_config(g)?;
    }
    for net in &d.sources.remove {
        dp.remove_source_class(*net)?;
    }
    for (proto, port) in &d.ports.remove {
        dp.set_port_rule(*proto, *port, &PortRule::default())?;
    }
    for (tier, class) in &d.limits.remove {
        dp.set_limits(*tier, *class, &Limits::default())?;
    }
    Ok(())
}

/// As [`apply`], and when `ipv6_prefix` changes, re-keys the exact v6 bans
/// (the kernel looks them up masked at that prefix): each is written under
/// the new key before the old keys are removed.
pub(super) fn apply_with_bans(
    dp: &mut Dataplane,
    d: &PolicyDiff,
    prefix_changed: bool,
    bans: &mut BanBook,
) -> Result<(), BanError> {
    let old_keys = if prefix_changed {
        dp.v6_exact_ban_keys()?
    } else {
        Vec::new()
    };
    apply(dp, d)?;
    if prefix_changed {
        let kept = bans.rekey_v6(dp)?;
        for k in old_keys.into_iter().filter(|k| !kept.contains(k)) {
            dp.remove_v6_exact_ban(k)?;
        }
    }
    Ok(())
}
