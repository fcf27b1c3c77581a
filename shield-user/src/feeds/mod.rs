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
pub mod index;
mod lines;
mod parse;
pub mod retry;
mod sniff;

#[cfg(test)]
mod fetch_tests;
#[cfg(test)]
mod tests;

pub use crate::config::FeedFormat;
pub use apply::{ApplyStats, apply_plan};
pub use fetch::{
    FetchError, FetchOptions, Fetched, Validators, fetch, redact_url, url_has_secrets,
};
pub use index::{FeedIndex, FeedSet, IndexError, Plan, shrink_held};
pub use parse::{parse_feed, parse_feed_set, parse_feed_unordered};
pub use sniff::sniff;

use crate::net::Cidr;

/// Longest line taken in, not counting its `\n`. Real feed lines are under
/// 100 bytes; the cap is what keeps a hostile body from growing one buffer
/// without bound. Longer lines are skipped whole and rejected once.
pub const MAX_LINE: usize = 4096;

/// Broadest IPv4 prefix accepted without `allow_broad`: /8.
pub const MIN_V4_PREFIX: u8 = 8;
/// Broadest IPv6 prefix accepted without `allow_broad`: /16.
pub const MIN_V6_PREFIX: u8 = 16;

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

/// True when `c` is broader than shield accepts without `allow_broad`.
pub fn is_broad(c: &Cidr) -> bool {
    let min = if c.is_v4() {
        MIN_V4_PREFIX
    } else {
        MIN_V6_PREFIX
    };
    c.prefix_len() < min
}
