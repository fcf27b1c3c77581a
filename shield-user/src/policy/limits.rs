//! Limit inheritance: `[limits]` < `[[tier]]` < `[[port]]`, key by key, with
//! runtime overrides layered over the level they name.

use shield_common::gcra::{Gcra, min_burst};

use crate::config::{LimitSet, Rate};

/// A runtime override (`shieldctl limits set TARGET ...`). `target` is
/// `default`, a tier name or a port rule name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitOverride {
    pub target: String,
    pub limits: LimitSet,
}

/// One limit as the kernel will enforce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedLimit {
    /// `None` (or a zero count): no limit.
    pub rate: Option<Rate>,
    pub burst: u64,
}

impl ResolvedLimit {
    pub const UNLIMITED: ResolvedLimit = ResolvedLimit {
        rate: None,
        burst: 0,
    };

    pub fn is_unlimited(&self) -> bool {
        self.rate.is_none_or(|r| r.count == 0)
    }

    pub fn gcra(&self) -> Gcra {
        match self.rate {
            Some(r) if r.count > 0 => Gcra::new(r.count, duration_ns(r.per), self.burst),
            _ => Gcra::UNLIMITED,
        }
    }
}

fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The burst a rate gets when nobody wrote one: one second's worth, at
/// least one packet.
pub fn default_burst(rate: &Rate) -> u64 {
    let per_ns = duration_ns(rate.per).max(1);
    let per_sec = u128::from(rate.count) * 1_000_000_000 / u128::from(per_ns);
    u64::try_from(per_sec).unwrap_or(u64::MAX).max(1)
}

/// Every override for `target`, later ones winning key by key.
pub(super) fn merged_overrides(overrides: &[LimitOverride], target: &str) -> LimitSet {
    overrides
        .iter()
        .filter(|o| o.target == target)
        .fold(LimitSet::default(), |acc, o| layer(&acc, &o.limits))
}

/// `over`'s keys where set, else `base`'s.
pub(super) fn layer(base: &LimitSet, over: &LimitSet) -> LimitSet {
    LimitSet {
        packets: over.packets.or(base.packets),
        packet_burst: over.packet_burst.or(base.packet_burst),
        connections: over.connections.or(base.connections),
        connection_burst: over.connection_burst.or(base.connection_burst),
    }
}

/// Resolves (packets, connections) from levels ordered least to most
/// specific. The rate comes from the most specific level that sets one. The
/// burst comes from the most specific level at or above that one which sets
/// a burst; a burst sized for a broader level's rate is not inherited by a
/// narrower level's different rate. Bursts too small for the kernel's clock
/// tick are raised, and `warn` hears about it.
pub(super) fn resolve(
    levels: &[Option<LimitSet>],
    tick_ns: u64,
    warn: &mut dyn FnMut(String),
) -> (ResolvedLimit, ResolvedLimit) {
    let pkt = resolve_one(
        levels,
        |l| (l.packets, l.packet_burst),
        tick_ns,
        "packet_burst",
        warn,
    );
    let syn = resolve_one(
        levels,
        |l| (l.connections, l.connection_burst),
        tick_ns,
        "connection_burst",
        warn,
    );
    (pkt, syn)
}

fn resolve_one(
    levels: &[Option<LimitSet>],
    pick: impl Fn(&LimitSet) -> (Option<Rate>, Option<u64>),
    tick_ns: u64,
    burst_key: &str,
    warn: &mut dyn FnMut(String),
) -> ResolvedLimit {
    let keys: Vec<(Option<Rate>, Option<u64>)> = levels.iter().flatten().map(&pick).collect();
    let Some(rate_at) = keys.iter().rposition(|(r, _)| r.is_some()) else {
        return ResolvedLimit::UNLIMITED;
    };
    let Some(rate) = keys[rate_at].0 else {
        return ResolvedLimit::UNLIMITED;
    };
    if rate.count == 0 {
        return ResolvedLimit {
            rate: Some(rate),
            burst: 0,
        };
    }
    let written = keys[rate_at..].iter().rev().find_map(|(_, b)| *b);
    let mut burst = written.unwrap_or_else(|| default_burst(&rate)).max(1);
    let floor = min_burst(
        &Gcra::new(rate.count, duration_ns(rate.per), burst),
        tick_ns,
    );
    if burst < floor {
        if written.is_some() {
            warn(format!(
                "{burst_key} {burst} raised to {floor}: a smaller burst cannot hold the rate across the kernel's {} ms clock tick",
                tick_ns / 1_000_000
            ));
        }
        burst = floor;
    }
    ResolvedLimit {
        rate: Some(rate),
        burst,
    }
}

/// `l` divided by `divisor` for `[adaptive]`: the rate (exactly, by
/// stretching its period when the count does not divide) and the burst,
/// which stays at least one packet and at least what the clock tick needs
/// to hold the new rate. No limit stays no limit.
pub fn tightened(l: ResolvedLimit, divisor: u64, tick_ns: u64) -> ResolvedLimit {
    let Some(rate) = l.rate.filter(|r| r.count > 0) else {
        return l;
    };
    if divisor <= 1 {
        return l;
    }
    let rate = if rate.count % divisor == 0 {
        Rate {
            count: rate.count / divisor,
            per: rate.per,
        }
    } else {
        Rate {
            count: rate.count,
            per: rate
                .per
                .saturating_mul(u32::try_from(divisor).unwrap_or(u32::MAX)),
        }
    };
    let burst = (l.burst / divisor).max(1);
    let floor = min_burst(
        &Gcra::new(rate.count, duration_ns(rate.per), burst),
        tick_ns,
    );
    ResolvedLimit {
        rate: Some(rate),
        burst: burst.max(floor),
    }
}
