//! shield's XDP program. Parse, look up, decide, count; every decision that
//! can be a pure function lives in shield-common.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]
#![warn(unused_crate_dependencies)]

// The package's library is empty; it exists for shield-user's build
// (shield-ebpf/src/lib.rs).
use shield_ebpf as _;

mod limit;
mod lists;
mod maps;
mod memo;
mod parse;
mod rare;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, macros::xdp, programs::XdpContext,
};
use shield_common::{
    decide::verdict,
    maps::{
        GlobalConfig, Limits, MEMO_ALLOWED, MEMO_BANNED, MEMO_CLEAN, MEMO_FEED, PORT_DRY_RUN,
        PortRule, SRC_ALLOWED, acl_refuses, limits_slot, port_slot,
    },
    reason::{Reason, Verdict, counter_index},
};

use crate::{
    maps::{CONFIG, COUNTERS, LIMITS, PORTS},
    parse::{Packet, Parsed, parse},
};

#[xdp]
pub fn shield(ctx: XdpContext) -> u32 {
    let cfg = match CONFIG.get(0) {
        Some(c) => *c,
        None => GlobalConfig::default(),
    };
    let (reason, rule_dry_run) = match parse(&ctx) {
        Parsed::NonIp => (Reason::NonIp, false),
        Parsed::Malformed => (Reason::Malformed, false),
        Parsed::Ip(p) => judge(&p, &cfg),
    };
    let v = verdict(reason, cfg.flags, rule_dry_run);
    count(&ctx, v, reason);
    match v {
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Pass | Verdict::WouldDrop => xdp_action::XDP_PASS,
    }
}

/// Steps 2 to 6 of the pipeline. Returns the reason and whether the matching
/// rule is dry-run only.
#[inline(always)]
fn judge(p: &Packet, cfg: &GlobalConfig) -> (Reason, bool) {
    // The coarse clock (CLOCK_MONOTONIC at scheduler-tick resolution) costs a
    // few ns where bpf_ktime_get_ns costs ~30 on these machines; see
    // docs/BENCHMARKS.md and `shield_common::gcra` for what the tick means
    // for limits.
    // SAFETY: a helper with no arguments and no side effects.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // A source seen since the lists last changed skips the list lookups,
    // most of the cost of a packet (see `memo`).
    let slot = memo::slot(p, cfg.flags);
    let src = match memo::recall(p, &slot, now) {
        Some((MEMO_CLEAN, class, _)) => class,
        Some((MEMO_ALLOWED, _, _)) => return (Reason::Allowed, false),
        Some((MEMO_BANNED, _, _)) => return (Reason::Banned, false),
        Some((_, _, feed_id)) => {
            lists::count_feed_hit(feed_id);
            return (Reason::Feed, false);
        }
        None => {
            let src = lists::source_class(p);
            if src.flags & SRC_ALLOWED != 0 {
                memo::remember(p, &slot, MEMO_ALLOWED, &src, 0, u64::MAX);
                return (Reason::Allowed, false);
            }
            if let Some(until) = lists::banned(p, &cfg.ipv6_mask, now) {
                memo::remember(p, &slot, MEMO_BANNED, &src, 0, until);
                return (Reason::Banned, false);
            }
            if let Some(feed_id) = lists::feed_listed(p) {
                memo::remember(p, &slot, MEMO_FEED, &src, feed_id, u64::MAX);
                return (Reason::Feed, false);
            }
            memo::remember_clean(p, &slot, &src);
            src
        }
    };
    let rule = match port_slot(p.proto, p.dport) {
        Some(slot) if p.has_l4 => match PORTS.get(slot) {
            Some(r) => *r,
            None => PortRule::default(),
        },
        _ => PortRule::default(),
    };
    let rule_dry = rule.flags & PORT_DRY_RUN != 0;
    if acl_refuses(rule.acl, src.acl_mask) {
        return (Reason::Acl, rule_dry);
    }
    let limits = match LIMITS.get(limits_slot(src.tier, rule.class)) {
        Some(l) => *l,
        None => Limits::default(),
    };
    match limit::check(p, rule.class, src.tier, &limits, &cfg.ipv6_mask, now) {
        Some(r) => (r, rule_dry),
        None => (Reason::Clean, false),
    }
}

#[inline(always)]
fn count(ctx: &XdpContext, v: Verdict, r: Reason) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter_index(v, r)) {
        let len = (ctx.data_end() - ctx.data()) as u64;
        // SAFETY: per-CPU slot, so no other writer.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

/// The benchmark's baseline: an XDP program that does nothing. `cargo xtask
/// bench` reports shield's cost above it. Never attached by the agent.
#[xdp]
pub fn shield_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
