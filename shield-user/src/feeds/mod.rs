//! Threat feeds: turning the lists that Spamhaus, FireHOL, ipsum and
//! operators publish into networks to block.
//!
//! Feed bodies come from the network and are hostile until proven otherwise:
//! every line is bounded, every malformed line is skipped and counted (never
//! fatal), and nothing in here panics on input. Parsing streams from any
//! `BufRead` and allocates per accepted entry, not per line, because the
//! agent has to take in feeds of a million entries within its refresh budget.

pub mod apply;
pub mod cache;
mod escape;
pub mod fetch;
pub mod hops;
pub mod index;
mod lines;
mod parse;
pub mod retry;
mod sniff;

#[cfg(test)]
mod tests;

pub use crate::config::FeedFormat;
pub use apply::{ApplyStats, Step, apply_plan, apply_step};
pub use fetch::{FetchError, FetchOptions, Fetched, Validators, fetch};
pub use index::{Coverage, FeedIndex, FeedSet, IndexError, Plan, shrink_held};
pub use parse::{parse_feed, parse_feed_set, parse_feed_unordered};
pub use sniff::sniff;

use crate::net::Cidr;

/// Longest line taken in, not counting its `\n`. Real feed lines are under
/// 100 bytes; the cap is what keeps a hostile body from growing one buffer
/// without bound. Longer lines are skipped whole and rejected once.
pub const MAX_LINE: usize = 4096;

/// The IPv6 cap is the IPv4 one scaled by the ratio of the broadest entry
/// each family accepts: a /8 holds 2^24 addresses, a /16 holds 2^48 /64s,
/// so the IPv6 cap in /64s is `max_addresses << 24` (sixteen /16s by
/// default).
pub const V6_CAP_SHIFT: u32 = 24;

/// A refresh that more than doubles a feed's coverage is held only when it
/// also adds at least this much (a /16 of IPv4; IPv6 scaled as the cap),
/// so small feeds can grow without an operator.
pub const GROWTH_FLOOR_V4: u64 = 1 << 16;

/// The IPv6 cap, in /64s, for an IPv4 cap of `max_addresses`.
pub fn v6_cap(max_addresses: u64) -> u128 {
    u128::from(max_addresses) << V6_CAP_SHIFT
}

/// Why a refresh is held back instead of applied. Every hold keeps the
/// feed's last good entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// More than half of the entries would go.
    Shrink { old: usize, new: usize },
    /// The covered space would more than double.
    Growth { old: Coverage, new: Coverage },
    /// The covered space would pass the feed's cap. Unlike the others, no
    /// confirmation or `--force` lifts this one: only a higher
    /// `max_addresses`.
    Cap { new: Coverage, max_addresses: u64 },
}

impl Hold {
    /// The `guard` label of `shield_feed_held_total`.
    pub fn guard(&self) -> &'static str {
        match self {
            Hold::Shrink { .. } => "shrink",
            Hold::Growth { .. } => "growth",
            Hold::Cap { .. } => "cap",
        }
    }

    /// Whether the next refresh bringing the same entries, or `--force`,
    /// may apply it.
    pub fn confirmable(&self) -> bool {
        !matches!(self, Hold::Cap { .. })
    }
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Shrink { old, new } => write!(
                f,
                "refresh would shrink the feed from {old} to {new} entries (more than half gone)"
            ),
            Hold::Growth { old, new } => write!(
                f,
                "refresh would more than double the address space the feed covers (IPv4 {} -> {} addresses, IPv6 {} -> {} /64s)",
                old.v4_addresses, new.v4_addresses, old.v6_nets64, new.v6_nets64
            ),
            Hold::Cap { new, max_addresses } => write!(
                f,
                "refresh would cover {} IPv4 addresses and {} IPv6 /64s, over the feed's cap of {max_addresses} and {} (max_addresses); refused",
                new.v4_addresses,
                new.v6_nets64,
                v6_cap(*max_addresses)
            ),
        }
    }
}

/// The guards a refresh from `old` to `new` entries must pass, in order:
/// the address cap, growth, shrink. `None`: apply it.
pub fn hold(old: (usize, Coverage), new: (usize, Coverage), max_addresses: u64) -> Option<Hold> {
    let (old_len, old_cov) = old;
    let (new_len, new_cov) = new;
    if new_cov.v4_addresses > max_addresses || new_cov.v6_nets64 > v6_cap(max_addresses) {
        return Some(Hold::Cap {
            new: new_cov,
            max_addresses,
        });
    }
    let grows = |o: u128, n: u128, floor: u128| o > 0 && n > o.saturating_mul(2) && n - o >= floor;
    let floor_v6 = u128::from(GROWTH_FLOOR_V4) << V6_CAP_SHIFT;
    if grows(
        u128::from(old_cov.v4_addresses),
        u128::from(new_cov.v4_addresses),
        u128::from(GROWTH_FLOOR_V4),
    ) || grows(old_cov.v6_nets64, new_cov.v6_nets64, floor_v6)
    {
        return Some(Hold::Growth {
            old: old_cov,
            new: new_cov,
        });
    }
    if shrink_held(old_len, new_len) {
        return Some(Hold::Shrink {
            old: old_len,
            new: new_len,
        });
    }
    None
}

/// How many rejected lines a parse keeps for the operator to see.
pub const MAX_REPORTED: usize = 10;

/// How a feed's body should be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// `Auto` sniffs the format from the first lines.
    pub format: FeedFormat,
    /// ipsum only: skip addresses seen on fewer lists than this. `None`
    /// means 1, which keeps every line ipsum publishes.
    pub min_score: Option<u32>,
    /// Accept prefixes broader than /8 (v4) or /16 (v6).
    pub allow_broad: bool,
}

/// A line that was skipped, as the operator will see it in a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line number in the feed body.
    pub line: u64,
    /// The line, cut to about 80 characters, with everything that is not
    /// printable ASCII escaped so it cannot play tricks on a terminal or log.
    pub text: String,
    /// Why it was skipped.
    pub why: String,
}

/// The outcome of parsing one feed body.
///
/// Every line read lands in exactly one of `accepted`, `rejected`,
/// `refused_broad`, `below_min_score` and `ignored`, so they add up to
/// `lines`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedFeed {
    /// The format used; `Auto` is resolved to what was sniffed.
    pub format: FeedFormat,
    /// The networks to block: sorted and deduplicated, whatever the order
    /// and repetition in the input. Empty from [`parse_feed_set`], which
    /// hands them over as a [`FeedSet`].
    pub entries: Vec<Cidr>,
    /// Lines read (a last line without a newline counts).
    pub lines: u64,
    /// Lines that gave an entry, before deduplication.
    pub accepted: u64,
    /// Blank lines, comments and metadata records.
    pub ignored: u64,
    /// Malformed lines skipped.
    pub rejected: u64,
    /// The first `MAX_REPORTED` skipped lines, malformed or broad, in order.
    pub first_rejects: Vec<Rejected>,
    /// Well-formed entries broader than /8 (v4) or /16 (v6) refused because
    /// `allow_broad` is off. They are listed in `first_rejects` too.
    pub refused_broad: u64,
    /// Accepted prefixes that had host bits set (`10.1.2.3/8`) and were
    /// taken as their network. Counted within `accepted`.
    pub normalized: u64,
    /// ipsum lines under `min_score`. Expected, not an error.
    pub below_min_score: u64,
}

/// True when `c` is broader than shield accepts without `allow_broad`
/// ([`Cidr::is_broad`]).
pub fn is_broad(c: &Cidr) -> bool {
    c.is_broad()
}
