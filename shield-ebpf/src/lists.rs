//! Source lookups: the classification trie (allowlist, tier, ACL sets),
//! bans and feeds.

use aya_ebpf::maps::{LpmTrie, lpm_trie::Key};
use shield_common::{
    addr::apply_mask,
    maps::{BAN_TRIE_LOOKUPS, Ban, SourceClass},
};

use crate::{
    maps::{
        BAN_NET_V4, BAN_NET_V6, BAN_V4, BAN_V6, FEED_HITS, FEED_NET_V4, FEED_NET_V6, FEED_V4,
        FEED_V6, SRC_V4, SRC_V6,
    },
    parse::Packet,
    rare::rare,
};

/// Allowlist membership, tier and ACL bits in one longest-prefix lookup. A
/// source no entry covers is in tier 0 and no ACL set.
#[inline(always)]
pub fn source_class(p: &Packet) -> SourceClass {
    let hit = if p.v6 {
        SRC_V6.get(Key::new(128, p.src6))
    } else {
        SRC_V4.get(Key::new(32, p.src4))
    };
    match hit {
        Some(c) => *c,
        None => SourceClass::default(),
    }
}

/// An unexpired exact ban (v6 at the configured prefix) or CIDR ban: the
/// expiry of the one found.
#[inline(always)]
pub fn banned(p: &Packet, v6_mask: &[u8; 16], now: u64) -> Option<u64> {
    if p.v6 {
        let key = apply_mask(p.src6, v6_mask);
        // SAFETY: the value is only read, at once; a racing update can at
        // worst give the ban's old or new expiry.
        if let Some(b) = unsafe { BAN_V6.get(key) }
            && b.active(now)
        {
            return Some(b.expires_ns);
        }
        cidr_banned(&BAN_NET_V6, p.src6, now)
    } else {
        // SAFETY: as for BAN_V6.
        if let Some(b) = unsafe { BAN_V4.get(p.src4) }
            && b.active(now)
        {
            return Some(b.expires_ns);
        }
        cidr_banned(&BAN_NET_V4, p.src4, now)
    }
}

/// An unexpired CIDR ban covers `addr`: its expiry. The trie answers with
/// the longest match only; when that one has expired, a shorter one may
/// still be in force, so look again below it.
#[inline(always)]
fn cidr_banned<const N: usize>(
    trie: &LpmTrie<[u8; N], Ban>,
    addr: [u8; N],
    now: u64,
) -> Option<u64> {
    let mut len = (N * 8) as u32;
    for _ in 0..BAN_TRIE_LOOKUPS {
        match trie.get(Key::new(len, addr)) {
            Some(b) if b.active(now) => return Some(b.expires_ns),
            Some(b) if b.prefix_len > 0 => len = u32::from(b.prefix_len) - 1,
            _ => return None,
        }
    }
    rare!(
        "the ban trie walk met {} expired prefixes and gave up; the address is not banned by a shorter one",
        BAN_TRIE_LOOKUPS as u32
    );
    None
}

/// Listed by a feed: exact host entries first (flat cost at any feed size),
/// then prefixes. Returns the listing feed, its hit counted.
#[inline(always)]
pub fn feed_listed(p: &Packet) -> Option<u32> {
    let hit = if p.v6 {
        // SAFETY: the value is copied out at once; a racing update can at
        // worst give the old or the new feed id.
        match unsafe { FEED_V6.get(p.src6) } {
            Some(f) => Some(*f),
            None => FEED_NET_V6.get(Key::new(128, p.src6)).copied(),
        }
    } else {
        // SAFETY: as for FEED_V6.
        match unsafe { FEED_V4.get(p.src4) } {
            Some(f) => Some(*f),
            None => FEED_NET_V4.get(Key::new(32, p.src4)).copied(),
        }
    };
    let f = hit?;
    count_feed_hit(f.feed_id);
    Some(f.feed_id)
}

#[inline(always)]
pub fn count_feed_hit(feed_id: u32) {
    if let Some(n) = FEED_HITS.get_ptr_mut(feed_id) {
        // SAFETY: per-CPU slot, so no other writer.
        unsafe { *n += 1 };
    }
}
