//! Flood events from the kernel's ring buffer: who is over a limit right
//! now, for how long, how fast they are being dropped, and when a flood has
//! lasted long enough to become a ban.
//!
//! The kernel sends one event when a (source, class) bucket first drops and
//! then at most one per second while it keeps dropping, so "sustained" means
//! events keep arriving with gaps well under a few seconds.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use shield_common::event::{FLOOD_SYNS, FloodEvent};

use crate::{config::AutobanConfig, net::Cidr};

/// A gap longer than this between events ends a flood.
pub const FLOOD_GAP_NS: u64 = 2_500_000_000;

/// One source over one class's limit.
#[derive(Clone, Debug, PartialEq)]
pub struct Flood {
    /// The source as the bucket keys it (v6 masked at `ipv6_prefix`).
    pub source: Cidr,
    pub class: u16,
    pub tier: u16,
    /// The connection limit (SYNs) rather than the packet limit.
    pub syn: bool,
    pub first_ns: u64,
    pub last_ns: u64,
    pub events: u64,
    /// Drops per second, from the bucket's counter between two samples.
    pub drop_rate: f64,
    /// The bucket's drop counter at the last sample, and when.
    pub(crate) sample: Option<(u64, u64)>,
    pub banned: bool,
    /// Its end has been reported (it may start again after that).
    pub(crate) end_reported: bool,
}

/// A ban the tracker wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutobanDecision {
    pub net: Cidr,
    pub ttl: Duration,
    pub reason: String,
}

/// A source's autoban history: the agent keeps it in `state_dir`, so a
/// repeat offence is recognised across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offence {
    /// Autobans so far.
    pub count: u32,
    /// When the last one ends (Unix ms).
    pub until_unix_ms: u64,
}

#[derive(Debug, Default)]
pub struct FloodTracker {
    floods: HashMap<(Cidr, u16), Flood>,
    /// Autobans so far per source: each repeat lasts `factor` times longer.
    repeats: HashMap<Cidr, Offence>,
    pub events_total: u64,
}

/// The source an event's bucket address stands for.
pub fn event_source(ev: &FloodEvent, ipv6_prefix: u8) -> Cidr {
    if ev.family == 4 {
        let a = &ev.addr[12..16];
        Cidr::host(IpAddr::from([a[0], a[1], a[2], a[3]]))
    } else {
        Cidr::truncating(IpAddr::from(ev.addr), ipv6_prefix)
    }
}

impl FloodTracker {
    /// Records one event; returns the flood's source when the event starts
    /// a new flood (a first event, or the first after a gap).
    pub fn on_event(&mut self, ev: &FloodEvent, ipv6_prefix: u8) -> Option<Cidr> {
        self.events_total += 1;
        let source = event_source(ev, ipv6_prefix);
        let mut started = false;
        let f = self.floods.entry((source, ev.class)).or_insert_with(|| {
            started = true;
            Flood {
                source,
                class: ev.class,
                tier: ev.tier,
                syn: ev.kind == FLOOD_SYNS,
                first_ns: ev.ts_ns,
                last_ns: ev.ts_ns,
                events: 0,
                drop_rate: 0.0,
                sample: None,
                banned: false,
                end_reported: false,
            }
        });
        if ev.ts_ns.saturating_sub(f.last_ns) > FLOOD_GAP_NS {
            // The old flood ended; this is a new one.
            f.first_ns = ev.ts_ns;
            f.events = 0;
            f.banned = false;
            f.end_reported = false;
            started = true;
        }
        f.last_ns = f.last_ns.max(ev.ts_ns);
        f.events += 1;
        f.syn |= ev.kind == FLOOD_SYNS;
        started.then_some(source)
    }

    /// Forgets floods that ended.
    pub fn expire(&mut self, now_ns: u64) {
        self.floods
            .retain(|_, f| now_ns.saturating_sub(f.last_ns) <= FLOOD_GAP_NS * 4);
    }

    /// Floods that ended since the last call (no event for
    /// [`FLOOD_GAP_NS`]), each returned once, before [`Self::expire`]
    /// forgets them.
    pub fn take_ended(&mut self, now_ns: u64) -> Vec<Flood> {
        let mut out = Vec::new();
        for f in self.floods.values_mut() {
            if !f.end_reported && now_ns.saturating_sub(f.last_ns) > FLOOD_GAP_NS {
                f.end_reported = true;
                out.push(f.clone());
            }
        }
        out
    }

    /// Floods still going at `now_ns`.
    pub fn active(&self, now_ns: u64) -> impl Iterator<Item = &Flood> {
        self.floods
            .values()
            .filter(move |f| now_ns.saturating_sub(f.last_ns) <= FLOOD_GAP_NS)
    }

    /// All tracked floods, ended or not (for sampling and `top`).
    pub fn all_mut(&mut self) -> impl Iterator<Item = &mut Flood> {
        self.floods.values_mut()
    }

    /// The keys of every tracked flood: the tick samples them a slice at a
    /// time, letting go of the agent's lock in between.
    pub fn keys(&self) -> Vec<(Cidr, u16)> {
        self.floods.keys().copied().collect()
    }

    /// The flood under `key`, if it is still tracked.
    pub fn get_mut(&mut self, key: &(Cidr, u16)) -> Option<&mut Flood> {
        self.floods.get_mut(key)
    }

    pub fn all(&self) -> impl Iterator<Item = &Flood> {
        self.floods.values()
    }

    /// Floods that have lasted `cfg.after` and are not banned yet become
    /// bans, each repeat `factor` times longer, capped at `max_ttl`.
    pub fn due_bans(&mut self, now_ns: u64, cfg: &AutobanConfig) -> Vec<AutobanDecision> {
        self.due_bans_at(now_ns, crate::clock::unix_ms(), cfg)
    }

    /// [`Self::due_bans`] with the wall clock given (for the offence history).
    pub fn due_bans_at(
        &mut self,
        now_ns: u64,
        now_unix_ms: u64,
        cfg: &AutobanConfig,
    ) -> Vec<AutobanDecision> {
        let keys = self.keys();
        self.due_bans_among(&keys, now_ns, now_unix_ms, cfg, &mut HashSet::new())
    }

    /// [`Self::due_bans_at`] over the floods under `keys` only (the agent's
    /// tick goes through its floods a slice at a time). `seen` holds the
    /// sources already banned in this round: a source flooding in several
    /// classes is banned, and counted as an offence, once. Sorted by source.
    pub fn due_bans_among(
        &mut self,
        keys: &[(Cidr, u16)],
        now_ns: u64,
        now_unix_ms: u64,
        cfg: &AutobanConfig,
        seen: &mut HashSet<Cidr>,
    ) -> Vec<AutobanDecision> {
        if !cfg.enabled {
            return Vec::new();
        }
        let after = u64::try_from(cfg.after.as_nanos()).unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for k in keys {
            let Some(f) = self.floods.get_mut(k) else {
                continue;
            };
            let ongoing = now_ns.saturating_sub(f.last_ns) <= FLOOD_GAP_NS;
            if f.banned || !ongoing || f.last_ns.saturating_sub(f.first_ns) < after {
                continue;
            }
            f.banned = true;
            if !seen.insert(f.source) {
                continue;
            }
            let o = self.repeats.entry(f.source).or_insert(Offence {
                count: 0,
                until_unix_ms: 0,
            });
            let ttl = scaled_ttl(cfg, o.count);
            o.count += 1;
            o.until_unix_ms = now_unix_ms.saturating_add(ttl.as_millis() as u64);
            out.push(AutobanDecision {
                net: f.source,
                ttl,
                reason: format!(
                    "over the {} limit for {}s",
                    if f.syn { "connection" } else { "packet" },
                    (f.last_ns - f.first_ns) / 1_000_000_000
                ),
            });
        }
        out.sort_by_key(|d| d.net);
        out
    }

    /// The highest drop rate among `source`'s floods (one per class).
    pub fn drop_rate_of(&self, source: Cidr, classes: u16) -> f64 {
        (0..classes)
            .filter_map(|c| self.floods.get(&(source, c)))
            .map(|f| f.drop_rate)
            .fold(0.0, f64::max)
    }
}

/// A budget for per-source log lines (flood start and end, autobans): at
/// most `per_window` lines per window, so ten thousand flooding sources
/// cost the journal a few lines a second and a summary, not ten thousand
/// lines. What does not fit is counted.
#[derive(Debug)]
pub struct LogBudget {
    per_window: u32,
    window_ns: u64,
    window_start: u64,
    used: u32,
    /// Held back in the current window, not yet summarised.
    pending: u64,
    /// Held back since the agent started.
    pub suppressed_total: u64,
}

/// Per-source lines the agent logs per second at most.
pub const LOG_LINES_PER_SEC: u32 = 20;

impl Default for LogBudget {
    fn default() -> LogBudget {
        LogBudget::new(LOG_LINES_PER_SEC, 1_000_000_000)
    }
}

impl LogBudget {
    pub fn new(per_window: u32, window_ns: u64) -> LogBudget {
        LogBudget {
            per_window,
            window_ns,
            window_start: 0,
            used: 0,
            pending: 0,
            suppressed_total: 0,
        }
    }

    /// Whether one more line may be logged at `now_ns`; if not, it is
    /// counted as suppressed.
    pub fn allow(&mut self, now_ns: u64) -> bool {
        if now_ns.saturating_sub(self.window_start) >= self.window_ns {
            self.window_start = now_ns;
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            true
        } else {
            self.pending += 1;
            self.suppressed_total += 1;
            false
        }
    }

    /// Lines held back since the last call, for one summary line.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.pending)
    }
}

impl FloodTracker {
    /// The autoban history, for the agent to save.
    pub fn offences(&self) -> impl Iterator<Item = (&Cidr, &Offence)> {
        self.repeats.iter()
    }

    /// Takes a saved history in (at start-up).
    pub fn restore_offences(&mut self, saved: impl IntoIterator<Item = (Cidr, Offence)>) {
        self.repeats.extend(saved);
    }

    /// Forgets sources that stayed out of trouble for `max_ttl` after their
    /// last autoban ended, so the history stays bounded; true if any went.
    pub fn forget_offences(&mut self, now_unix_ms: u64, cfg: &AutobanConfig) -> bool {
        let grace = cfg.max_ttl.as_millis() as u64;
        let before = self.repeats.len();
        self.repeats
            .retain(|_, o| now_unix_ms <= o.until_unix_ms.saturating_add(grace));
        self.repeats.len() != before
    }
}

/// `ttl × factor^repeats`, at most `max_ttl`.
pub fn scaled_ttl(cfg: &AutobanConfig, repeats: u32) -> Duration {
    let mut ttl = cfg.ttl;
    for _ in 0..repeats {
        ttl = ttl.saturating_mul(cfg.factor);
        if ttl >= cfg.max_ttl {
            return cfg.max_ttl;
        }
    }
    ttl.min(cfg.max_ttl)
}

#[cfg(test)]
mod tests {
    use shield_common::event::FLOOD_PACKETS;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn ev(addr: [u8; 4], ts: u64) -> FloodEvent {
        FloodEvent {
            addr: shield_common::addr::v4_mapped(addr),
            ts_ns: ts,
            class: 0,
            tier: 0,
            family: 4,
            kind: FLOOD_PACKETS,
            _pad: [0; 2],
        }
    }

    fn cfg() -> AutobanConfig {
        AutobanConfig {
            enabled: true,
            after: Duration::from_secs(5),
            ttl: Duration::from_secs(600),
            factor: 2,
            max_ttl: Duration::from_secs(1800),
        }
    }

    #[test]
    fn a_sustained_flood_becomes_one_ban() {
        let mut t = FloodTracker::default();
        for s in 0..=4 {
            t.on_event(&ev([192, 0, 2, 1], 100 * S + s * S), 64);
        }
        assert!(t.due_bans(104 * S, &cfg()).is_empty(), "4 s is not 5 s");
        t.on_event(&ev([192, 0, 2, 1], 105 * S), 64);
        let bans = t.due_bans(105 * S, &cfg());
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].net, "192.0.2.1".parse().unwrap());
        assert_eq!(bans[0].ttl, Duration::from_secs(600));
        assert!(t.due_bans(106 * S, &cfg()).is_empty(), "once per flood");
    }

    /// The tick decides autobans a slice of floods at a time
    /// (agent/tick.rs): a source flooding in two classes, its floods in
    /// different slices, is still banned once and counted one offence.
    #[test]
    fn a_source_flooding_in_two_classes_is_banned_once_across_slices() {
        let mut t = FloodTracker::default();
        for s in 0..=5 {
            t.on_event(&ev([192, 0, 2, 1], s * S), 64);
            t.on_event(
                &FloodEvent {
                    class: 1,
                    ..ev([192, 0, 2, 1], s * S)
                },
                64,
            );
            t.on_event(&ev([192, 0, 2, 2], s * S), 64);
        }
        let mut keys = t.keys();
        keys.sort();
        assert_eq!(keys.len(), 3);
        let mut seen = HashSet::new();
        let mut banned = Vec::new();
        for slice in keys.chunks(1) {
            let due = t.due_bans_among(slice, 5 * S, 1_000, &cfg(), &mut seen);
            banned.extend(due.into_iter().map(|d| d.net));
        }
        banned.sort();
        let want: Vec<Cidr> = vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()];
        assert_eq!(banned, want);
        let counts: Vec<u32> = want.iter().map(|n| t.repeats[n].count).collect();
        assert_eq!(counts, [1, 1], "one offence each");
        assert!(
            t.due_bans_among(&keys, 6 * S, 2_000, &cfg(), &mut HashSet::new())
                .is_empty(),
            "every flood of a banned source is marked banned"
        );
    }

    #[test]
    fn a_gap_restarts_the_clock_and_repeats_last_longer() {
        let mut t = FloodTracker::default();
        for s in [0, 1, 2, 6, 7, 8, 9, 10] {
            t.on_event(&ev([192, 0, 2, 1], s * S), 64);
        }
        assert!(
            t.due_bans(10 * S, &cfg()).is_empty(),
            "the flood restarted at 6 s"
        );
        t.on_event(&ev([192, 0, 2, 1], 11 * S), 64);
        assert_eq!(t.due_bans(11 * S, &cfg())[0].ttl, Duration::from_secs(600));
        for s in 20..=25 {
            t.on_event(&ev([192, 0, 2, 1], s * S), 64);
        }
        assert_eq!(t.due_bans(25 * S, &cfg())[0].ttl, Duration::from_secs(1200));
        for s in 40..=45 {
            t.on_event(&ev([192, 0, 2, 1], s * S), 64);
        }
        assert_eq!(
            t.due_bans(45 * S, &cfg())[0].ttl,
            Duration::from_secs(1800),
            "capped at max_ttl"
        );
    }

    #[test]
    fn the_offence_history_round_trips_and_is_forgotten_after_max_ttl() {
        let c = cfg();
        let mut t = FloodTracker::default();
        for s in 0..=5 {
            t.on_event(&ev([192, 0, 2, 1], s * S), 64);
        }
        let now_ms = 1_000_000;
        assert_eq!(t.due_bans_at(5 * S, now_ms, &c).len(), 1);
        let saved: Vec<(Cidr, Offence)> = t.offences().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            saved,
            vec![(
                "192.0.2.1".parse().unwrap(),
                Offence {
                    count: 1,
                    until_unix_ms: now_ms + 600_000
                }
            )]
        );
        // A restarted agent remembers: the next ban is a repeat.
        let mut back = FloodTracker::default();
        back.restore_offences(saved);
        for s in 0..=5 {
            back.on_event(&ev([192, 0, 2, 1], s * S), 64);
        }
        assert_eq!(
            back.due_bans_at(5 * S, now_ms + 700_000, &c)[0].ttl,
            Duration::from_secs(1200)
        );
        // Forgotten max_ttl (30 min) after the last ban ended, not before.
        let ends = now_ms + 700_000 + 1_200_000;
        assert!(!back.forget_offences(ends + 1_800_000, &c));
        assert!(back.forget_offences(ends + 1_800_001, &c));
        assert_eq!(back.offences().count(), 0);
    }

    #[test]
    fn disabled_autoban_bans_nothing_and_ended_floods_expire() {
        let mut t = FloodTracker::default();
        for s in 0..=10 {
            t.on_event(&ev([192, 0, 2, 9], s * S), 64);
        }
        let mut off = cfg();
        off.enabled = false;
        assert!(t.due_bans(10 * S, &off).is_empty());
        assert_eq!(t.active(10 * S).count(), 1);
        assert_eq!(t.active(20 * S).count(), 0);
        t.expire(100 * S);
        assert_eq!(t.all().count(), 0);
    }

    #[test]
    fn each_ended_flood_is_reported_once_and_again_after_a_restart() {
        let mut t = FloodTracker::default();
        for s in 0..=3 {
            t.on_event(&ev([192, 0, 2, 1], s * S), 64);
        }
        t.on_event(&ev([192, 0, 2, 2], 5 * S), 64);
        assert!(t.take_ended(4 * S).is_empty(), "both still going");
        let ended = t.take_ended(6 * S);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].source, "192.0.2.1".parse().unwrap());
        assert_eq!(ended[0].events, 4);
        assert!(t.take_ended(6 * S).is_empty(), "once");
        assert_eq!(t.take_ended(8 * S).len(), 1, "the other one");
        assert_eq!(
            t.on_event(&ev([192, 0, 2, 1], 9 * S), 64),
            Some("192.0.2.1".parse().unwrap()),
            "a new flood"
        );
        assert_eq!(t.take_ended(12 * S).len(), 1);
    }

    #[test]
    fn the_log_budget_lets_a_few_lines_through_per_window_and_counts_the_rest() {
        let mut b = LogBudget::new(3, S);
        let allowed = (0..10_000).filter(|i| b.allow(10 * S + i)).count();
        assert_eq!(allowed, 3);
        assert_eq!(b.take_suppressed(), 9_997);
        assert_eq!(b.take_suppressed(), 0, "summarised once");
        assert!(b.allow(11 * S), "a new window");
        assert_eq!(b.suppressed_total, 9_997);
    }

    #[test]
    fn v6_sources_are_their_prefix() {
        let e = FloodEvent {
            addr: "2001:db8:1:2:3:4:5:6"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            family: 6,
            ..ev([0; 4], 0)
        };
        assert_eq!(event_source(&e, 64), "2001:db8:1:2::/64".parse().unwrap());
    }
}
