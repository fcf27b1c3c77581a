//! The per-CPU source cache (`SOURCE_CACHE`): what the list lookups said
//! about a recent IPv4 source, valid while the lists' generation stands.
//! Layout and reasoning: `shield_common::maps::SourceMemo`.

use shield_common::maps::{
    CFG_NO_SOURCE_CACHE, MEMO_BANNED, MEMO_CLEAN, SourceClass, SourceMemo, source_cache_slot,
};

use crate::{
    maps::{LISTS_GENERATION, SOURCE_CACHE},
    parse::Packet,
};

/// The source's slot, with the generation read before any list lookup (so
/// that a change made while this packet is looked up leaves its memo void).
pub struct Slot {
    pub generation: u64,
    /// `None` for IPv6, with the cache off, or before the agent set a
    /// generation.
    memo: Option<*mut SourceMemo>,
}

#[inline(always)]
pub fn slot(p: &Packet, flags: u32) -> Slot {
    let generation = match LISTS_GENERATION.get_ptr(0) {
        // SAFETY: an aligned u64 the agent updates atomically.
        Some(g) => unsafe { core::ptr::read_volatile(g) },
        None => 0,
    };
    let memo = if p.v6 || flags & CFG_NO_SOURCE_CACHE != 0 || generation == 0 {
        None
    } else {
        SOURCE_CACHE.get_ptr_mut(source_cache_slot(p.src4))
    };
    Slot { generation, memo }
}

/// What the memo says, if it is this source's, current, and (for a ban)
/// not yet expired: (verdict, class, feed id).
#[inline(always)]
pub fn recall(p: &Packet, slot: &Slot, now: u64) -> Option<(u8, SourceClass, u32)> {
    let m = slot.memo?;
    // SAFETY: a per-CPU slot: only this CPU reads or writes it, and the
    // program runs to completion without another on this CPU.
    let m = unsafe { &*m };
    if m.generation != slot.generation || m.addr != p.src4 {
        return None;
    }
    if m.verdict == MEMO_BANNED && now >= m.until_ns {
        return None;
    }
    Some((m.verdict, m.class, m.feed_id))
}

/// Writes down what the lookups said.
#[inline(always)]
pub fn remember(
    p: &Packet,
    slot: &Slot,
    verdict: u8,
    class: &SourceClass,
    feed_id: u32,
    until_ns: u64,
) {
    let Some(m) = slot.memo else { return };
    // SAFETY: as in `recall`.
    unsafe {
        (*m).generation = slot.generation;
        (*m).addr = p.src4;
        (*m).verdict = verdict;
        (*m).class = *class;
        (*m).feed_id = feed_id;
        (*m).until_ns = until_ns;
    }
}

/// `remember` for a source that passed every list.
#[inline(always)]
pub fn remember_clean(p: &Packet, slot: &Slot, class: &SourceClass) {
    remember(p, slot, MEMO_CLEAN, class, 0, u64::MAX);
}
