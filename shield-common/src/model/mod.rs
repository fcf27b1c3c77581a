//! A host reference model of the whole XDP pipeline, for differential
//! testing: the packet fuzzer runs each frame through the real program
//! (BPF_PROG_TEST_RUN) and through [`Model::judge`] and demands the same
//! verdict, the same counters and the same bucket and feed-hit state.
//!
//! The model is written from the pipeline's specification (docs/ARCHITECTURE.md,
//! "The packet pipeline") over plain collections, not from the kernel code:
//! its own frame parser ([`frame`]), linear longest-prefix scans instead of
//! LPM tries, and list semantics stated as sets ("a source is banned when an
//! active ban covers it") rather than as the kernel's lookup sequence. It
//! shares only the ABI (map value types, counter slots) and the GCRA step,
//! which has its own tests.
//!
//! Time is one number per run. Deterministic verdicts need limits whose
//! emission interval is far longer than the run (for example 1/h with a
//! small burst) and bans that are either expired long ago or permanent.

pub mod frame;

use alloc::collections::BTreeMap;

use crate::{
    addr::v6_mask,
    gcra::{Gcra, rebase, step},
    maps::{
        BucketKey, CFG_DRY_RUN, CFG_MALFORMED_PASS, Counter, Limits, MAX_CLASSES, MAX_TIERS,
        PORT_DRY_RUN, PortRule, SRC_ALLOWED, SourceClass, acl_refuses,
    },
    reason::{COUNTER_SLOTS, Reason, Verdict, counter_index},
};
use frame::{Frame, Header};

/// A network: `len` leading bits of `addr` (IPv4 in the first four bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Net {
    pub v6: bool,
    pub addr: [u8; 16],
    pub len: u8,
}

impl Net {
    /// The network of `addr`'s first `len` bits (host bits cleared).
    pub fn new(v6: bool, addr: [u8; 16], len: u8) -> Net {
        let max = if v6 { 128 } else { 32 };
        let len = len.min(max);
        let mut a = [0u8; 16];
        for bit in 0..usize::from(len) {
            a[bit / 8] |= addr[bit / 8] & (0x80 >> (bit % 8));
        }
        Net { v6, addr: a, len }
    }

    pub fn contains(&self, v6: bool, src: &[u8; 16]) -> bool {
        v6 == self.v6
            && (0..usize::from(self.len)).all(|bit| {
                let m = 0x80 >> (bit % 8);
                src[bit / 8] & m == self.addr[bit / 8] & m
            })
    }

    pub fn max_len(&self) -> u8 {
        if self.v6 { 128 } else { 32 }
    }
}

/// What the maps hold, as the agent would write it.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `GlobalConfig::flags`.
    pub flags: u32,
    /// IPv6 sources are banned and rate-limited per network of this length.
    pub ipv6_prefix: u8,
    /// Allowlist, tier and ACL membership; the longest covering entry
    /// answers.
    pub sources: BTreeMap<Net, SourceClass>,
    /// Ban expiry by network. A v6 ban at least `ipv6_prefix` long bans the
    /// source's whole `ipv6_prefix` network: key it by that network (see
    /// [`Policy::ban_key`]).
    pub bans: BTreeMap<Net, u64>,
    /// Feed id by listed network.
    pub feeds: BTreeMap<Net, u32>,
    /// By (protocol, destination port).
    pub ports: BTreeMap<(u8, u16), PortRule>,
    /// By (tier, class); absent means unlimited.
    pub limits: BTreeMap<(u16, u16), Limits>,
}

impl Policy {
    /// The network a ban on `net` actually covers.
    pub fn ban_key(&self, net: Net) -> Net {
        if net.v6 && net.len >= self.ipv6_prefix {
            Net::new(true, net.addr, self.ipv6_prefix)
        } else {
            net
        }
    }

    fn source_class(&self, h: &Header) -> SourceClass {
        self.sources
            .iter()
            .filter(|(n, _)| n.contains(h.v6, &h.src))
            .max_by_key(|(n, _)| n.len)
            .map_or_else(SourceClass::default, |(_, c)| *c)
    }

    fn banned(&self, h: &Header, now: u64) -> bool {
        self.bans
            .iter()
            .any(|(n, &expires)| now < expires && n.contains(h.v6, &h.src))
    }

    /// The feed a hit is counted against: a host entry's, else the longest
    /// covering network's.
    fn feed(&self, h: &Header) -> Option<u32> {
        let host = Net::new(h.v6, h.src, if h.v6 { 128 } else { 32 });
        if let Some(id) = self.feeds.get(&host) {
            return Some(*id);
        }
        self.feeds
            .iter()
            .filter(|(n, _)| n.contains(h.v6, &h.src))
            .max_by_key(|(n, _)| n.len)
            .map(|(_, id)| *id)
    }
}

/// A bucket as the model keeps it: the two TATs and the drop count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelBucket {
    pub pkt_tat: u64,
    pub syn_tat: u64,
    pub drops: u64,
}

/// The pipeline with its state: buckets, counters, feed hits.
#[derive(Clone, Debug)]
pub struct Model {
    pub policy: Policy,
    /// The clock every packet of the run reads.
    pub now: u64,
    pub buckets: BTreeMap<BucketKey, ModelBucket>,
    pub counters: [Counter; COUNTER_SLOTS as usize],
    pub feed_hits: BTreeMap<u32, u64>,
}

impl Model {
    pub fn new(policy: Policy, now: u64) -> Model {
        Model {
            policy,
            now,
            buckets: BTreeMap::new(),
            counters: [Counter::default(); COUNTER_SLOTS as usize],
            feed_hits: BTreeMap::new(),
        }
    }

    /// The verdict for `f`, with every side effect the program has.
    pub fn judge(&mut self, f: &[u8]) -> (Verdict, Reason) {
        let (reason, rule_dry_run) = match frame::parse(f) {
            Frame::NonIp => (Reason::NonIp, false),
            Frame::Malformed => (Reason::Malformed, false),
            Frame::Ip(h) => self.decide(&h),
        };
        let flags = self.policy.flags;
        let drop = match reason {
            Reason::Clean | Reason::Allowed | Reason::NonIp => false,
            Reason::Malformed => flags & CFG_MALFORMED_PASS == 0,
            Reason::Banned | Reason::Feed | Reason::Acl | Reason::Ratelimit | Reason::Synlimit => {
                true
            }
        };
        let verdict = match (drop, rule_dry_run || flags & CFG_DRY_RUN != 0) {
            (false, _) => Verdict::Pass,
            (true, true) => Verdict::WouldDrop,
            (true, false) => Verdict::Drop,
        };
        let c = &mut self.counters[counter_index(verdict, reason) as usize];
        c.packets += 1;
        c.bytes += f.len() as u64;
        (verdict, reason)
    }

    fn decide(&mut self, h: &Header) -> (Reason, bool) {
        let p = &self.policy;
        let src = p.source_class(h);
        if src.flags & SRC_ALLOWED != 0 {
            return (Reason::Allowed, false);
        }
        if p.banned(h, self.now) {
            return (Reason::Banned, false);
        }
        if let Some(id) = p.feed(h) {
            *self.feed_hits.entry(id).or_default() += 1;
            return (Reason::Feed, false);
        }
        let has_port = h.has_l4 && (h.proto == 6 || h.proto == 17);
        let rule = if has_port {
            p.ports
                .get(&(h.proto, h.dport))
                .copied()
                .unwrap_or_default()
        } else {
            PortRule::default()
        };
        let rule_dry = rule.flags & PORT_DRY_RUN != 0;
        if acl_refuses(rule.acl, src.acl_mask) {
            return (Reason::Acl, rule_dry);
        }
        let tier = if u32::from(src.tier) < MAX_TIERS {
            src.tier
        } else {
            0
        };
        let class = if u32::from(rule.class) < MAX_CLASSES {
            rule.class
        } else {
            0
        };
        let limits = p.limits.get(&(tier, class)).copied().unwrap_or_default();
        let check_syn = h.syn && !limits.syns.is_unlimited();
        if limits.packets.is_unlimited() && !check_syn {
            return (Reason::Clean, false);
        }
        // The bucket key keeps the rule's own class id, unfolded, and the
        // tier whose limits apply.
        let key = if h.v6 {
            BucketKey::v6(
                h.src,
                &v6_mask(self.policy.ipv6_prefix.into()),
                rule.class,
                tier,
            )
        } else {
            BucketKey::v4(h.src4(), rule.class, tier)
        };
        let now = self.now;
        let b = self.buckets.entry(key).or_default();
        let over = if !limits.packets.is_unlimited() && !admit(&mut b.pkt_tat, now, &limits.packets)
        {
            Some(Reason::Ratelimit)
        } else if check_syn && !admit(&mut b.syn_tat, now, &limits.syns) {
            Some(Reason::Synlimit)
        } else {
            None
        };
        match over {
            Some(r) => {
                b.drops += 1;
                (r, rule_dry)
            }
            None => (Reason::Clean, false),
        }
    }
}

fn admit(tat: &mut u64, now: u64, limit: &Gcra) -> bool {
    match step(*tat, now, limit) {
        Some(t) => {
            *tat = t;
            true
        }
        None => {
            if let Some(r) = rebase(*tat, now, limit) {
                *tat = r;
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{gcra::NANOS_PER_SEC, maps::BAN_FOREVER};

    fn v4(a: [u8; 4], len: u8) -> Net {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&a);
        Net::new(false, b, len)
    }

    fn udp4(src: [u8; 4], dport: u16) -> alloc::vec::Vec<u8> {
        let mut f = alloc::vec![0u8; 14 + 28];
        f[12] = 0x08;
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[3] = 28;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src);
        ip[22..24].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn nets_clear_host_bits_and_contain() {
        let n = v4([10, 1, 2, 3], 16);
        assert_eq!(&n.addr[..4], &[10, 1, 0, 0]);
        assert!(n.contains(false, &v4([10, 1, 200, 1], 32).addr));
        assert!(!n.contains(false, &v4([10, 2, 0, 0], 32).addr));
        assert!(!n.contains(true, &v4([10, 1, 0, 0], 32).addr));
        assert!(v4([0; 4], 0).contains(false, &[9; 16]));
    }

    #[test]
    fn pipeline_order() {
        let src = [198, 51, 100, 7];
        let mut p = Policy {
            ipv6_prefix: 64,
            ..Policy::default()
        };
        p.bans.insert(v4(src, 24), BAN_FOREVER);
        p.feeds.insert(v4(src, 32), 3);
        let mut m = Model::new(p.clone(), 1000);
        assert_eq!(m.judge(&udp4(src, 53)), (Verdict::Drop, Reason::Banned));
        // An expired ban no longer matches; the feed then does.
        p.bans.insert(v4(src, 24), 1000);
        let mut m = Model::new(p.clone(), 1000);
        assert_eq!(m.judge(&udp4(src, 53)), (Verdict::Drop, Reason::Feed));
        assert_eq!(m.feed_hits.get(&3), Some(&1));
        // The allowlist beats both.
        let allowed = SourceClass {
            flags: SRC_ALLOWED,
            ..SourceClass::default()
        };
        p.sources.insert(v4(src, 8), allowed);
        let mut m = Model::new(p, 1000);
        assert_eq!(m.judge(&udp4(src, 53)), (Verdict::Pass, Reason::Allowed));
        assert_eq!(
            m.counters[counter_index(Verdict::Pass, Reason::Allowed) as usize].bytes,
            42
        );
    }

    #[test]
    fn an_expired_narrow_ban_does_not_hide_a_broad_one() {
        let mut p = Policy {
            ipv6_prefix: 64,
            ..Policy::default()
        };
        p.bans.insert(v4([203, 0, 113, 0], 24), BAN_FOREVER);
        p.bans.insert(v4([203, 0, 113, 0], 28), 10);
        let mut m = Model::new(p, 1000);
        assert_eq!(m.judge(&udp4([203, 0, 113, 1], 53)).1, Reason::Banned);
        assert_eq!(m.judge(&udp4([203, 0, 114, 1], 53)).1, Reason::Clean);
    }

    fn limit(rate: u64, burst: u64) -> Limits {
        Limits {
            packets: Gcra::new(rate, NANOS_PER_SEC, burst),
            syns: Gcra::UNLIMITED,
        }
    }

    /// A source moved to another tier owes that tier nothing: its debt
    /// under the old tier's limit is time, which under the new limit would
    /// mean another number of packets. Both packets are judged at one
    /// `now`, as the kernel's coarse clock gives every packet in a tick.
    #[test]
    fn a_source_moved_to_a_generous_tier_is_not_held_by_the_strict_ones_debt() {
        let src = [198, 51, 100, 7];
        let mut p = Policy {
            ipv6_prefix: 64,
            ..Policy::default()
        };
        p.limits.insert((0, 0), limit(1_000_000, 1_000_000));
        p.limits.insert((1, 0), limit(1, 1));
        let tier1 = SourceClass {
            tier: 1,
            ..SourceClass::default()
        };
        p.sources.insert(v4(src, 24), tier1);
        let now = 5 * NANOS_PER_SEC;
        let mut m = Model::new(p, now);
        assert_eq!(m.judge(&udp4(src, 53)).1, Reason::Clean, "tier 1's one");
        assert_eq!(m.judge(&udp4(src, 53)).1, Reason::Ratelimit, "tier 1 full");
        // Back in tier 0 within the same tick: tier 0's own bucket decides.
        m.policy.sources.clear();
        for i in 0..100 {
            assert_eq!(m.judge(&udp4(src, 53)).1, Reason::Clean, "tier 0, {i}");
        }
        // And tier 1's debt is still there for it, should it move back.
        m.policy.sources.insert(v4(src, 24), tier1);
        assert_eq!(m.judge(&udp4(src, 53)).1, Reason::Ratelimit, "tier 1 again");
    }

    /// A limit raised in place (same tier and class, as `limits set` or a
    /// reload does) keeps the bucket. The bound: the source waits at most
    /// one emission interval of the new limit, as it would had it just
    /// spent the new limit's whole burst (the rebase in `gcra`).
    #[test]
    fn a_raised_limit_holds_a_source_at_most_one_new_interval() {
        let src = [198, 51, 100, 7];
        let mut p = Policy {
            ipv6_prefix: 64,
            ..Policy::default()
        };
        p.limits.insert((0, 0), limit(1, 10));
        let now = 5 * NANOS_PER_SEC;
        let mut m = Model::new(p, now);
        for _ in 0..10 {
            assert_eq!(m.judge(&udp4(src, 53)).1, Reason::Clean);
        }
        assert_eq!(m.judge(&udp4(src, 53)).1, Reason::Ratelimit);
        // Raised to 50/s with a burst of 100: 10 s of debt is beyond what
        // the new limit can write, so it is pulled back to an empty bucket.
        let raised = limit(50, 100);
        m.policy.limits.insert((0, 0), raised);
        assert_eq!(m.judge(&udp4(src, 53)).1, Reason::Ratelimit);
        m.now = now + raised.packets.emission_ns;
        assert_eq!(m.judge(&udp4(src, 53)).1, Reason::Clean, "one interval on");
    }

    #[test]
    fn burst_then_limited_then_dry_run() {
        let src = [203, 0, 113, 9];
        let mut p = Policy {
            ipv6_prefix: 64,
            ..Policy::default()
        };
        p.limits.insert(
            (0, 0),
            Limits {
                packets: Gcra::new(1, 3600 * NANOS_PER_SEC, 3),
                syns: Gcra::UNLIMITED,
            },
        );
        let mut m = Model::new(p.clone(), 5);
        for _ in 0..3 {
            assert_eq!(m.judge(&udp4(src, 53)).1, Reason::Clean);
        }
        assert_eq!(m.judge(&udp4(src, 53)), (Verdict::Drop, Reason::Ratelimit));
        assert_eq!(m.buckets.values().next().unwrap().drops, 1);
        p.flags = CFG_DRY_RUN;
        let mut m = Model::new(p, 5);
        for _ in 0..3 {
            m.judge(&udp4(src, 53));
        }
        assert_eq!(
            m.judge(&udp4(src, 53)),
            (Verdict::WouldDrop, Reason::Ratelimit)
        );
    }
}
