//! Source lookups: the classification trie (allowlist, tier, ACL sets),
//! bans and feeds.

use aya_ebpf::maps::lpm_trie::Key;
use shield_common::{addr::apply_mask, maps::SourceClass};

use crate::{
    maps::{
        BAN_NET_V4, BAN_NET_V6, BAN_V4, BAN_V6, FEED_HITS, FEED_NET_V4, FEED_NET_V6, FEED_V4,
        FEED_V6, SRC_V4, SRC_V6,
    },
    parse::Packet,
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

/// An unexpired exact ban (v6 at the configured prefix) or CIDR ban.
#[inline(always)]
pub fn banned(p: &Packet, v6_mask: &[u8; 16], now: u64) -> bool {
    if p.v6 {
        let key = apply_mask(p.src6, v6_mask);
        if let Some(b) = unsafe { BAN_V6.get(key) }
            && b.active(now)
        {
            return true;
        }
        matches!(BAN_NET_V6.get(Key::new(128, p.src6)), Some(b) if b.active(now))
    } else {
        if let Some(b) = unsafe { BAN_V4.get(p.src4) }
            && b.active(now)
        {
            return true;
        }
        matches!(BAN_NET_V4.get(Key::new(32, p.src4)), Some(b) if b.active(now))
    }
}

/// Listed by a feed: exact host entries first (flat cost at any feed size),
/// then prefixes. Counts the hit against the feed.
#[inline(always)]
pub fn feed_listed(p: &Packet) -> bool {
    let hit = if p.v6 {
        match unsafe { FEED_V6.get(p.src6) } {
            Some(f) => Some(*f),
            None => FEED_NET_V6.get(Key::new(128, p.src6)).copied(),
        }
    } else {
        match unsafe { FEED_V4.get(p.src4) } {
            Some(f) => Some(*f),
            None => FEED_NET_V4.get(Key::new(32, p.src4)).copied(),
        }
    };
    match hit {
        Some(f) => {
            if let Some(n) = FEED_HITS.get_ptr_mut(f.feed_id) {
                unsafe { *n += 1 };
            }
            true
        }
        None => false,
    }
}
