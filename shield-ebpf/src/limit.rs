//! Per-source GCRA buckets. The maths is `shield_common::gcra::step`; this
//! file only does the map work and the compare-and-swap.

use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use shield_common::{
    event::{FLOOD_PACKETS, FLOOD_SYNS, FloodEvent},
    gcra::{Gcra, rebase, step},
    maps::{Bucket, BucketKey, FLOOD_EVENT_INTERVAL_NS, Limits},
    reason::Reason,
};

use crate::{
    maps::{BUCKETS, BUCKETS_CREATED, EVENTS, EVENTS_LOST},
    parse::Packet,
    rare::rare,
};

/// CAS attempts before giving up; losing four races in a row means other
/// CPUs are admitting this source's packets right now, so dropping is safe.
const CAS_TRIES: usize = 4;

/// A new source's bucket, as global data rather than a value built on the
/// stack: LLVM builds a 32-byte zero value with a call to `memset`, a
/// function of its own, and Linux 6.1's verifier charges any function call
/// 32 bytes of stack on top of the program's, past its 512-byte limit
/// (docs/OPERATIONS.md, "Kernels tested").
static NEW_BUCKET: Bucket = Bucket {
    pkt_tat: 0,
    syn_tat: 0,
    last_event_ns: 0,
    drops: 0,
};

/// Applies the packet and (for SYNs) connection limits. `None`: within limits.
#[inline(always)]
pub fn check(
    p: &Packet,
    class: u16,
    tier: u16,
    limits: &Limits,
    v6_mask: &[u8; 16],
    now: u64,
) -> Option<Reason> {
    let check_syn = p.syn && !limits.syns.is_unlimited();
    if limits.packets.is_unlimited() && !check_syn {
        return None;
    }
    let key = if p.v6 {
        BucketKey::v6(p.src6, v6_mask, class, tier)
    } else {
        BucketKey::v4(p.src4, class, tier)
    };
    let bucket = match BUCKETS.get_ptr_mut(key) {
        Some(b) => b,
        None => {
            // BPF_NOEXIST: if another CPU created it meanwhile, use theirs.
            // Counted so the agent can tell evictions from live buckets.
            // By reference: by value, the static is copied to the stack.
            #[expect(clippy::needless_borrows_for_generic_args, reason = "see NEW_BUCKET")]
            let inserted = BUCKETS.insert(key, &NEW_BUCKET, 1);
            if inserted.is_ok()
                && let Some(n) = BUCKETS_CREATED.get_ptr_mut(0)
            {
                // SAFETY: per-CPU slot, so no other writer.
                unsafe { *n += 1 };
            }
            match BUCKETS.get_ptr_mut(key) {
                Some(b) => b,
                None => {
                    rare!(
                        "no bucket after an insert (evicted at once); the packet passes unlimited"
                    );
                    return None;
                }
            }
        }
    };
    // SAFETY: `bucket` points at a live map value the lookup just returned;
    // `&raw mut` takes a field's address without making a reference.
    let pkt_tat = unsafe { &raw mut (*bucket).pkt_tat };
    // SAFETY: as above.
    let syn_tat = unsafe { &raw mut (*bucket).syn_tat };
    let (over, kind) = if !limits.packets.is_unlimited() && !admit(pkt_tat, now, &limits.packets) {
        (Reason::Ratelimit, FLOOD_PACKETS)
    } else if check_syn && !admit(syn_tat, now, &limits.syns) {
        (Reason::Synlimit, FLOOD_SYNS)
    } else {
        return None;
    };
    // SAFETY: `bucket` points into a live map value; a racy read or write of
    // the event timestamp can at worst send one extra event, of the drop
    // count lose one increment.
    unsafe {
        let drops = core::ptr::read_volatile(&raw const (*bucket).drops);
        core::ptr::write_volatile(&raw mut (*bucket).drops, drops.wrapping_add(1));
        let last = core::ptr::read_volatile(&raw const (*bucket).last_event_ns);
        if now.wrapping_sub(last) >= FLOOD_EVENT_INTERVAL_NS || last == 0 {
            core::ptr::write_volatile(&raw mut (*bucket).last_event_ns, now);
            if let Some(mut e) = EVENTS.reserve::<FloodEvent>(0) {
                e.write(FloodEvent {
                    addr: key.addr,
                    ts_ns: now,
                    class,
                    tier,
                    family: key.family,
                    kind,
                    _pad: [0; 2],
                });
                e.submit(0);
            } else {
                // The ring buffer is full: count the loss so it shows.
                rare!("the flood event ring buffer is full; an event is lost");
                if let Some(n) = EVENTS_LOST.get_ptr_mut(0) {
                    // Per-CPU slot, so no other writer.
                    *n += 1;
                }
            }
        }
    }
    Some(over)
}

/// One GCRA step on the TAT at `tat`, made exact across CPUs by CAS.
#[inline(always)]
fn admit(tat: *mut u64, now: u64, limit: &Gcra) -> bool {
    for _ in 0..CAS_TRIES {
        // SAFETY: `tat` points at an aligned u64 inside a map value.
        let old = unsafe { core::ptr::read_volatile(tat) };
        let Some(new) = step(old, now, limit) else {
            // A TAT further ahead than this limit can ever put it was
            // written under a slower one the operator has since raised;
            // pull it back so the new limit applies within one interval.
            // One attempt: losing the race means another CPU wrote a TAT.
            if let Some(rebased) = rebase(old, now, limit) {
                // SAFETY: `tat` points at an aligned u64 inside a map value;
                // the compare-and-swap is the kernel's atomic.
                unsafe {
                    let _ = atomic_cxchg::<
                        u64,
                        { AtomicOrdering::SeqCst },
                        { AtomicOrdering::SeqCst },
                    >(tat, old, rebased);
                }
            }
            return false;
        };
        // SAFETY: as above.
        let (_, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                tat, old, new,
            )
        };
        if swapped {
            return true;
        }
    }
    rare!(
        "a bucket's compare-and-swap lost {} races in a row; the packet counts as over its limit",
        CAS_TRIES as u32
    );
    false
}
