//! Map names, sizes, keys and values: the ABI between kernel and agent.
//!
//! Addresses are byte arrays in network order. Every type is `#[repr(C)]`
//! with its padding spelled out and its size asserted.

use crate::gcra::Gcra;

// ---- map names (also the pin file names under the pin directory) ----
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_SRC_V4: &str = "SRC_V4";
pub const MAP_SRC_V6: &str = "SRC_V6";
pub const MAP_BAN_V4: &str = "BAN_V4";
pub const MAP_BAN_V6: &str = "BAN_V6";
pub const MAP_BAN_NET_V4: &str = "BAN_NET_V4";
pub const MAP_BAN_NET_V6: &str = "BAN_NET_V6";
pub const MAP_FEED_V4: &str = "FEED_V4";
pub const MAP_FEED_V6: &str = "FEED_V6";
pub const MAP_FEED_NET_V4: &str = "FEED_NET_V4";
pub const MAP_FEED_NET_V6: &str = "FEED_NET_V6";
pub const MAP_FEED_HITS: &str = "FEED_HITS";
pub const MAP_PORTS: &str = "PORTS";
pub const MAP_LIMITS: &str = "LIMITS";
pub const MAP_BUCKETS: &str = "BUCKETS";
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_BUCKETS_CREATED: &str = "BUCKETS_CREATED";
pub const MAP_EVENTS_LOST: &str = "EVENTS_LOST";
pub const MAP_LISTS_GENERATION: &str = "LISTS_GENERATION";
pub const MAP_SOURCE_CACHE: &str = "SOURCE_CACHE";

/// Every map the program declares, in a stable order.
pub const ALL_MAPS: [&str; 21] = [
    MAP_CONFIG,
    MAP_COUNTERS,
    MAP_SRC_V4,
    MAP_SRC_V6,
    MAP_BAN_V4,
    MAP_BAN_V6,
    MAP_BAN_NET_V4,
    MAP_BAN_NET_V6,
    MAP_FEED_V4,
    MAP_FEED_V6,
    MAP_FEED_NET_V4,
    MAP_FEED_NET_V6,
    MAP_FEED_HITS,
    MAP_PORTS,
    MAP_LIMITS,
    MAP_BUCKETS,
    MAP_EVENTS,
    MAP_BUCKETS_CREATED,
    MAP_EVENTS_LOST,
    MAP_LISTS_GENERATION,
    MAP_SOURCE_CACHE,
];

/// The XDP program's name in the object file.
pub const PROGRAM_NAME: &str = "shield";
/// An empty XDP program in the same object: the benchmark's baseline.
pub const NOOP_PROGRAM_NAME: &str = "shield_noop";

// ---- default capacities (the agent may override the big ones at load) ----
pub const SRC_CAPACITY: u32 = 16_384;
pub const BAN_CAPACITY: u32 = 262_144;
pub const BAN_NET_CAPACITY: u32 = 65_536;
pub const FEED_CAPACITY: u32 = 2_097_152;
pub const FEED_NET_CAPACITY: u32 = 524_288;
pub const BUCKET_CAPACITY: u32 = 262_144;
pub const EVENTS_BYTES: u32 = 256 * 1024;

pub const MAX_FEEDS: u32 = 256;
pub const MAX_TIERS: u32 = 64;
pub const MAX_CLASSES: u32 = 64;
/// Port ACLs are a bitmask in [`SourceClass::acl_mask`].
pub const MAX_ACLS: u32 = 64;
/// One slot per TCP port, then one per UDP port.
pub const PORT_SLOTS: u32 = 2 * 65_536;
pub const LIMIT_SLOTS: u32 = MAX_TIERS * MAX_CLASSES;

// ---- CONFIG ----
/// Global switch: every drop becomes `would_drop`.
pub const CFG_DRY_RUN: u32 = 1;
/// Malformed packets pass (still counted under `malformed`).
pub const CFG_MALFORMED_PASS: u32 = 2;
/// Never use `SOURCE_CACHE`: every packet takes every list lookup. For the
/// benchmark's full-pipeline cases and for ruling the cache out when
/// debugging.
pub const CFG_NO_SOURCE_CACHE: u32 = 4;

/// The single entry of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalConfig {
    pub flags: u32,
    /// Prefix length IPv6 sources are keyed at for bans and buckets.
    pub ipv6_prefix: u32,
    /// `addr::v6_mask(ipv6_prefix)`, precomputed so the kernel only ANDs.
    pub ipv6_mask: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<GlobalConfig>() == 24);

impl GlobalConfig {
    pub const fn new(flags: u32, ipv6_prefix: u32) -> Self {
        GlobalConfig {
            flags,
            ipv6_prefix,
            ipv6_mask: crate::addr::v6_mask(ipv6_prefix),
        }
    }
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig::new(0, 64)
    }
}

// ---- COUNTERS ----
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

// ---- SRC_V4 / SRC_V6: allowlist, tier and ACL membership in one trie ----
/// `SourceClass::flags`: the source is allowlisted.
pub const SRC_ALLOWED: u16 = 1;

/// What the source-classification trie says about a source. The agent
/// compiles allowlist, tiers and ACL `allow_from` sets into one LPM trie so
/// the kernel does a single lookup; see `shield_user::policy`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceClass {
    /// Bit `n` set: the source is in the `allow_from` of ACL `n + 1`.
    pub acl_mask: u64,
    pub tier: u16,
    pub flags: u16,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<SourceClass>() == 16);

// ---- BAN_* ----
/// `Ban::expires_ns` for a ban that never expires.
pub const BAN_FOREVER: u64 = u64::MAX;
pub const BAN_ORIGIN_MANUAL: u8 = 1;
pub const BAN_ORIGIN_AUTOBAN: u8 = 2;
pub const BAN_ORIGIN_FEED: u8 = 3;
pub const BAN_ORIGIN_CROWDSEC: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ban {
    /// CLOCK_MONOTONIC nanoseconds after which the ban no longer matches.
    pub expires_ns: u64,
    /// `BAN_ORIGIN_*`; the kernel ignores it, the agent reads it back on adopt.
    pub origin: u8,
    /// In the CIDR tries: the entry's own prefix length, so that when the
    /// longest match has expired the program can look again below it
    /// rather than let an expired narrow ban hide an active broader one.
    /// 0 in the exact maps (and in entries written before it existed,
    /// which then behave as they did: no second lookup).
    pub prefix_len: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<Ban>() == 16);

/// Trie lookups the program makes at most for one source: the first, then
/// one more below each expired match. Nested CIDR bans deeper than this
/// whose inner ones have all expired hide the outer ones until the agent
/// sweeps the expired ones (within a second while it runs).
pub const BAN_TRIE_LOOKUPS: usize = 8;

impl Ban {
    pub const fn new(expires_ns: u64, origin: u8) -> Self {
        Ban {
            expires_ns,
            origin,
            prefix_len: 0,
            _pad: [0; 6],
        }
    }

    /// This ban as a CIDR-trie entry for a prefix of `len` bits.
    pub const fn in_trie(self, len: u8) -> Self {
        Ban {
            prefix_len: len,
            ..self
        }
    }

    #[inline(always)]
    pub const fn active(&self, now_ns: u64) -> bool {
        now_ns < self.expires_ns
    }
}

// ---- FEED_* ----
/// Which feed lists the entry (the agent keeps the full set; the kernel only
/// needs one id to count the hit against).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FeedEntry {
    pub feed_id: u32,
}
const _: () = assert!(core::mem::size_of::<FeedEntry>() == 4);

// ---- PORTS ----
/// `PortRule::flags`: drops by this rule's ACL or limits are dry-run only.
pub const PORT_DRY_RUN: u8 = 1;

/// Per destination (proto, port): the rate-limit class and the ACL.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRule {
    /// Class id for the limits table; 0 is the default class.
    pub class: u16,
    /// 0: no ACL; `n`: ACL `n`, checked against bit `n - 1` of `acl_mask`.
    pub acl: u8,
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<PortRule>() == 4);

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// The `PORTS` slot for (proto, port); only TCP and UDP have ports.
#[inline(always)]
pub const fn port_slot(proto: u8, port: u16) -> Option<u32> {
    match proto {
        PROTO_TCP => Some(port as u32),
        PROTO_UDP => Some(65_536 + port as u32),
        _ => None,
    }
}

/// True when a port rule's ACL keeps out a source with `acl_mask`: rule
/// `acl` n (1-based; 0 is no ACL) admits the sources with bit `(n - 1) % 64`
/// set. The one ACL test of the kernel, the agent's `check` and the model.
#[inline(always)]
pub const fn acl_refuses(acl: u8, acl_mask: u64) -> bool {
    acl != 0 && acl_mask & (1u64 << ((acl - 1) as u32 & 63)) == 0
}

// ---- LIMITS ----
/// The effective limits of a (tier, class) pair, inheritance already applied.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub packets: Gcra,
    pub syns: Gcra,
}
const _: () = assert!(core::mem::size_of::<Limits>() == 32);

/// The `LIMITS` slot of (tier, class); out-of-range ids fold onto the default.
#[inline(always)]
pub const fn limits_slot(tier: u16, class: u16) -> u32 {
    let t = fold_tier(tier) as u32;
    let c = if (class as u32) < MAX_CLASSES {
        class as u32
    } else {
        0
    };
    t * MAX_CLASSES + c
}

// ---- BUCKETS ----
/// A source's bucket for one destination class under one tier.
///
/// The tier is part of the key because a TAT is debt measured in time under
/// the limit that wrote it: carried into another tier's limit it would mean
/// a different number of packets (one second of debt is one packet at 1/s
/// and a million at 1M/s). A source the operator moves to another tier
/// therefore starts with that tier's full burst, and nothing it owed under
/// the old tier delays it (docs/configuration.md, "Changing limits").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    /// IPv4-mapped for v4; masked at `ipv6_prefix` for v6.
    pub addr: [u8; 16],
    /// The port rule's class id as the rule holds it (unfolded).
    pub class: u16,
    pub family: u8,
    /// The tier whose limits apply, folded as [`limits_slot`] folds it, so
    /// it always fits: `MAX_TIERS` is 64. (Builds before the tier was keyed
    /// wrote 0 here, which is tier 0's key: their buckets stay valid.)
    pub tier: u8,
}
const _: () = assert!(core::mem::size_of::<BucketKey>() == 20);
const _: () = assert!(MAX_TIERS <= 256);

impl BucketKey {
    /// An IPv4 source's key. With [`BucketKey::v6`], the one derivation of
    /// a bucket key, used by the kernel, the agent and the model.
    #[inline(always)]
    pub const fn v4(src: [u8; 4], class: u16, tier: u16) -> Self {
        BucketKey {
            addr: crate::addr::v4_mapped(src),
            class,
            family: 4,
            tier: fold_tier(tier) as u8,
        }
    }

    /// An IPv6 source's key: its network at `ipv6_prefix` (`v6_mask`).
    #[inline(always)]
    pub const fn v6(src: [u8; 16], v6_mask: &[u8; 16], class: u16, tier: u16) -> Self {
        BucketKey {
            addr: crate::addr::apply_mask(src, v6_mask),
            class,
            family: 6,
            tier: fold_tier(tier) as u8,
        }
    }
}

/// Out-of-range tier ids fold onto the default tier, 0.
#[inline(always)]
pub const fn fold_tier(tier: u16) -> u16 {
    if (tier as u32) < MAX_TIERS { tier } else { 0 }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// GCRA TAT for packets, updated by compare-and-swap.
    pub pkt_tat: u64,
    /// GCRA TAT for TCP SYNs.
    pub syn_tat: u64,
    /// When the last flood event for this bucket went out.
    pub last_event_ns: u64,
    /// Packets this bucket dropped. Incremented without atomics: CPUs racing
    /// on one source may lose an increment, which a rate estimate for
    /// `shieldctl top` tolerates and the fast path is spared.
    pub drops: u64,
}
const _: () = assert!(core::mem::size_of::<Bucket>() == 32);

// ---- LISTS_GENERATION ----
/// `LISTS_GENERATION`: one u64 in a memory-mappable array. The agent adds
/// one after every change to the allowlist/tier, ban or feed maps (after,
/// so a packet that reads the new value also sees the change); a
/// `SOURCE_CACHE` entry stamped with an older value is looked up again.
/// Only ever incremented, and kept in its pin across restarts, so a stamp
/// can never come back into date.
pub const LISTS_GENERATION_SLOTS: u32 = 1;

// ---- SOURCE_CACHE ----
/// `SOURCE_CACHE`: per CPU, a direct-mapped cache of what the list lookups
/// said about recent IPv4 sources, so a source's next packets skip them
/// while the lists stay unchanged. Direct-mapped (a slot per hash of the
/// address, overwritten by the next source that hashes there) so that a
/// flood of spoofed sources costs a plain store per packet, not the insert
/// and eviction an LRU map would take. IPv6 is not cached: bans and
/// buckets key it at a prefix while the lists tell its addresses apart.
pub const SOURCE_CACHE_BITS: u32 = 14;
pub const SOURCE_CACHE_SLOTS: u32 = 1 << SOURCE_CACHE_BITS;

/// `SourceMemo::verdict`: what the lookups decided.
pub const MEMO_CLEAN: u8 = 1;
pub const MEMO_ALLOWED: u8 = 2;
pub const MEMO_FEED: u8 = 3;
pub const MEMO_BANNED: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceMemo {
    /// The `LISTS_GENERATION` read before the lookups; 0 for an empty slot.
    pub generation: u64,
    /// `MEMO_BANNED`: the ban's expiry (CLOCK_MONOTONIC ns); the memo is
    /// void from then on, though no list changed.
    pub until_ns: u64,
    /// `MEMO_CLEAN`: the source's tier and ACL sets.
    pub class: SourceClass,
    pub addr: [u8; 4],
    /// `MEMO_FEED`: the listing feed, whose hits are still counted.
    pub feed_id: u32,
    pub verdict: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<SourceMemo>() == 48);

/// The slot of `addr` (Fibonacci hashing: the top bits of a multiplication,
/// which spread neighbouring addresses over the whole table).
pub const fn source_cache_slot(addr: [u8; 4]) -> u32 {
    u32::from_be_bytes(addr).wrapping_mul(0x9E37_79B1) >> (32 - SOURCE_CACHE_BITS)
}

/// `BUCKETS_CREATED`: a per-CPU count of buckets the program created. The
/// agent never deletes buckets, so once `BUCKETS` is full every creation
/// evicts the least recently used one: evictions = created − live entries.
pub const BUCKETS_CREATED_SLOTS: u32 = 1;

/// `EVENTS_LOST`: a per-CPU count of flood events the program could not
/// reserve because `EVENTS` was full (the agent fell behind). The drop
/// itself still happens; only the event is lost, and the bucket's next
/// event comes `FLOOD_EVENT_INTERVAL_NS` later, so a sustained flood is
/// still seen and banned.
pub const EVENTS_LOST_SLOTS: u32 = 1;

/// Minimum spacing of flood events per bucket.
pub const FLOOD_EVENT_INTERVAL_NS: u64 = 1_000_000_000;

#[cfg(test)]
mod tests {
    #[test]
    fn a_24_of_neighbours_spreads_over_the_source_cache() {
        let slots: alloc::collections::BTreeSet<u32> = (0..=255u8)
            .map(|i| super::source_cache_slot([198, 51, 100, i]))
            .collect();
        assert!(slots.iter().all(|s| *s < super::SOURCE_CACHE_SLOTS));
        assert_eq!(slots.len(), 256, "no two neighbours share a slot");
    }

    use super::*;

    #[test]
    fn port_slots_do_not_collide() {
        assert_eq!(port_slot(PROTO_TCP, 443), Some(443));
        assert_eq!(port_slot(PROTO_UDP, 443), Some(65_536 + 443));
        assert_eq!(port_slot(PROTO_UDP, 65_535), Some(PORT_SLOTS - 1));
        assert_eq!(port_slot(PROTO_ICMP, 0), None);
    }

    #[test]
    fn limit_slots_stay_in_range() {
        assert_eq!(limits_slot(0, 0), 0);
        assert_eq!(limits_slot(1, 2), MAX_CLASSES + 2);
        assert!(!acl_refuses(0, 0), "no ACL");
        assert!(acl_refuses(1, 0b10) && !acl_refuses(1, 0b01));
        assert!(!acl_refuses(64, 1 << 63));
        // Ids past 64 wrap rather than overflow the shift.
        assert!(!acl_refuses(65, 1) && acl_refuses(200, 1));
        assert_eq!(limits_slot(63, 63), LIMIT_SLOTS - 1);
        assert_eq!(limits_slot(64, 3), 3);
        assert_eq!(limits_slot(u16::MAX, u16::MAX), 0);
    }

    #[test]
    fn bans_expire() {
        let b = Ban::new(100, BAN_ORIGIN_MANUAL);
        assert!(b.active(99));
        assert!(!b.active(100));
        assert!(Ban::new(BAN_FOREVER, 0).active(u64::MAX - 1));
    }

    #[test]
    fn config_precomputes_mask() {
        let c = GlobalConfig::new(CFG_DRY_RUN, 48);
        assert_eq!(c.ipv6_mask, crate::addr::v6_mask(48));
    }
}
