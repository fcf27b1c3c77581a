//! GCRA (the generic cell rate algorithm): a token bucket whose whole state is
//! one number, the theoretical arrival time (TAT) of the next conforming
//! packet. One `u64` per key is what lets the kernel update it with a single
//! compare-and-swap.

/// A compiled limit: `emission_ns` is the spacing between packets at the
/// sustained rate, `tolerance_ns` how far ahead of schedule a burst may run.
/// `emission_ns == 0` means "no limit".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gcra {
    pub emission_ns: u64,
    pub tolerance_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Gcra>() == 16);

pub const NANOS_PER_SEC: u64 = 1_000_000_000;

impl Gcra {
    pub const UNLIMITED: Gcra = Gcra {
        emission_ns: 0,
        tolerance_ns: 0,
    };

    /// A limit of `count` packets per `per_ns` nanoseconds that lets `burst`
    /// packets through back to back. `burst` is at least one: a bucket that
    /// admits nothing is a block, and blocks belong in ACLs.
    pub const fn new(count: u64, per_ns: u64, burst: u64) -> Gcra {
        if count == 0 {
            return Gcra::UNLIMITED;
        }
        let mut emission = per_ns / count;
        if emission == 0 {
            // Faster than one per nanosecond cannot be expressed; it is no limit.
            emission = 1;
        }
        let burst = if burst == 0 { 1 } else { burst };
        Gcra {
            emission_ns: emission,
            tolerance_ns: emission.saturating_mul(burst - 1),
        }
    }

    pub const fn is_unlimited(&self) -> bool {
        self.emission_ns == 0
    }

    /// The burst this limit admits back to back.
    pub const fn burst(&self) -> u64 {
        match self.tolerance_ns.checked_div(self.emission_ns) {
            Some(n) => n + 1,
            None => 0,
        }
    }
}

/// The smallest burst that keeps the long-run rate exact when `now` comes
/// from a clock that advances in steps of `tick_ns`.
///
/// The kernel reads the coarse monotonic clock (one scheduler tick, 1 to 10
/// ms, per step) because it is several times cheaper than the precise one.
/// All packets within a tick see the same `now`, so between two steps the
/// bucket must be able to absorb a whole tick's worth of packets:
/// `burst × emission ≥ tick`. Below that, the effective rate falls to
/// `burst / tick`.
pub const fn min_burst(limit: &Gcra, tick_ns: u64) -> u64 {
    if limit.emission_ns == 0 {
        return 0;
    }
    tick_ns.div_ceil(limit.emission_ns)
}

/// One GCRA step. Returns the new TAT when the packet conforms, `None` when it
/// must be dropped (and the TAT stays as it is).
#[inline(always)]
pub const fn step(tat: u64, now: u64, limit: &Gcra) -> Option<u64> {
    let tat = if tat > now { tat } else { now };
    if tat - now <= limit.tolerance_ns {
        Some(tat.saturating_add(limit.emission_ns))
    } else {
        None
    }
}

/// When a limit is raised (say from 1/h to 1000/s), buckets may hold TATs
/// hours ahead that the new limit could never have produced: under `limit`
/// a TAT is at most `now + tolerance + emission`. This returns that bound
/// when `tat` is beyond it, so the kernel can write it back and the new
/// limit takes effect after one emission interval instead of hours later.
#[inline(always)]
pub const fn rebase(tat: u64, now: u64, limit: &Gcra) -> Option<u64> {
    let bound = now
        .saturating_add(limit.tolerance_ns)
        .saturating_add(limit.emission_ns);
    if tat > bound { Some(bound) } else { None }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn admitted(limit: &Gcra, arrivals: impl Iterator<Item = u64>) -> u64 {
        let mut tat = 0;
        let mut n = 0;
        for now in arrivals {
            if let Some(t) = step(tat, now, limit) {
                tat = t;
                n += 1;
            }
        }
        n
    }

    #[test]
    fn exactly_burst_back_to_back() {
        for burst in [1, 2, 5, 100] {
            let l = Gcra::new(10, NANOS_PER_SEC, burst);
            let now = 5 * NANOS_PER_SEC;
            assert_eq!(admitted(&l, core::iter::repeat_n(now, 1000)), burst);
            assert_eq!(l.burst(), burst);
        }
    }

    #[test]
    fn refills_at_the_rate() {
        let l = Gcra::new(10, NANOS_PER_SEC, 1);
        let t0 = NANOS_PER_SEC;
        let mut tat = step(0, t0, &l).unwrap();
        assert!(step(tat, t0 + 99_999_999, &l).is_none());
        tat = step(tat, t0 + 100_000_000, &l).unwrap();
        assert_eq!(tat, t0 + 200_000_000);
    }

    #[test]
    fn denied_packets_leave_state_alone() {
        let l = Gcra::new(1, NANOS_PER_SEC, 1);
        let tat = step(0, 10, &l).unwrap();
        assert_eq!(step(tat, 11, &l), None);
        assert_eq!(
            step(tat, 10 + NANOS_PER_SEC, &l),
            Some(10 + 2 * NANOS_PER_SEC)
        );
    }

    #[test]
    fn min_burst_covers_one_tick() {
        let tick = 4_000_000;
        assert_eq!(min_burst(&Gcra::new(1_000, NANOS_PER_SEC, 1), tick), 4);
        assert_eq!(min_burst(&Gcra::new(10, NANOS_PER_SEC, 1), tick), 1);
        assert_eq!(min_burst(&Gcra::UNLIMITED, tick), 0);
        // Below it, a flood gets one packet per tick: the rate collapses.
        let l = Gcra::new(1_000, NANOS_PER_SEC, 1);
        let ticks = (0..1_000u64).map(|i| NANOS_PER_SEC + (i / 40) * tick);
        assert_eq!(admitted(&l, ticks), 25);
    }

    #[test]
    fn unlimited_and_zero_burst() {
        assert!(Gcra::new(0, NANOS_PER_SEC, 10).is_unlimited());
        assert_eq!(Gcra::new(5, NANOS_PER_SEC, 0).burst(), 1);
        assert_eq!(Gcra::new(u64::MAX, 1, 1).emission_ns, 1);
    }

    #[test]
    fn does_not_overflow_near_the_end_of_time() {
        let l = Gcra::new(1, NANOS_PER_SEC, 3);
        assert_eq!(step(u64::MAX - 1, u64::MAX - 1, &l), Some(u64::MAX));
    }

    proptest! {
        /// Steady state: a source that sends faster than the limit gets
        /// `rate × window + burst` packets through in a window, give or take
        /// the one packet that straddles the window's end. This needs the
        /// burst tolerance to cover the sender's spacing (burst ≥ 2 does, as
        /// the flood runs at least twice the rate); with burst 1 each admitted
        /// packet can lag its slot by up to one gap, and the count drifts low.
        #[test]
        fn admitted_over_window_is_rate_times_window_plus_burst(
            rate in 1u64..10_000,
            burst in 2u64..1_000,
            window_ms in 1u64..5_000,
            overdrive in 2u64..20,
        ) {
            let limit = Gcra::new(rate, NANOS_PER_SEC, burst);
            let window = window_ms * 1_000_000;
            let start = 7 * NANOS_PER_SEC;
            let gap = (limit.emission_ns / overdrive).max(1);
            let arrivals = (0..).map(|i| start + i * gap).take_while(|t| *t < start + window);
            let got = admitted(&limit, arrivals);
            let expected = window / limit.emission_ns + burst;
            prop_assert!(got <= expected + 1, "got {got}, expected {expected}");
            prop_assert!(got + 1 >= expected.min(window / gap), "got {got}, expected {expected}");
        }

        /// With a clock that only advances once per tick (the kernel's coarse
        /// clock), the long-run rate is still exact as long as the burst is at
        /// least `min_burst`.
        #[test]
        fn coarse_clock_keeps_the_rate_when_burst_covers_a_tick(
            rate in 1u64..20_000,
            extra in 0u64..100,
            tick_ms in prop::sample::select(&[1u64, 4, 10][..]),
            window_s in 1u64..5,
        ) {
            let tick = tick_ms * 1_000_000;
            let probe = Gcra::new(rate, NANOS_PER_SEC, 1);
            // Two more than the minimum also absorbs the flood's own spacing.
            let burst = min_burst(&probe, tick) + 2 + extra;
            let limit = Gcra::new(rate, NANOS_PER_SEC, burst);
            let start = 3 * NANOS_PER_SEC;
            let window = window_s * NANOS_PER_SEC;
            // A flood at four times the rate, timestamped by a ticking clock.
            let gap = (limit.emission_ns / 4).max(1);
            let arrivals = (0..)
                .map(|i| start + i * gap)
                .take_while(|t| *t < start + window)
                .map(|t| t - (t % tick));
            let got = admitted(&limit, arrivals);
            let ideal = window / limit.emission_ns + burst;
            // The full rate (no collapse to one packet per tick), never above
            // it; the lagging clock hides at most the last tick's refill.
            prop_assert!(got <= ideal + 1, "got {got} ideal {ideal}");
            // (A short window may hold fewer arrivals than the burst.)
            let sent = window.div_ceil(gap);
            prop_assert!(
                got + tick / limit.emission_ns + 2 >= ideal.min(sent),
                "got {got} ideal {ideal} sent {sent}"
            );
        }

        /// Never more than the limit, whatever the arrival pattern.
        #[test]
        fn never_exceeds_the_envelope(
            rate in 1u64..1_000,
            burst in 1u64..100,
            mut gaps in proptest::collection::vec(0u64..50_000_000, 1..500),
        ) {
            let limit = Gcra::new(rate, NANOS_PER_SEC, burst);
            let start = NANOS_PER_SEC;
            let mut t = start;
            for g in gaps.iter_mut() { t += *g; *g = t; }
            let span = t - start;
            let got = admitted(&limit, gaps.iter().copied());
            prop_assert!(got <= span / limit.emission_ns + burst);
        }
    }

    #[test]
    fn rebase_only_touches_tats_the_limit_could_not_have_written() {
        let fast = Gcra::new(1000, NANOS_PER_SEC, 10);
        let now = 5 * NANOS_PER_SEC;
        // Written under 1/h: two hours ahead.
        let slow_tat = now + 7200 * NANOS_PER_SEC;
        let rebased = rebase(slow_tat, now, &fast).unwrap();
        assert_eq!(rebased, now + fast.tolerance_ns + fast.emission_ns);
        assert_eq!(step(rebased, now, &fast), None, "still over right now");
        let later = now + fast.emission_ns;
        assert!(
            step(rebased, later, &fast).is_some(),
            "admitted one interval later"
        );
        // A TAT the limit itself produces is never rebased.
        let mut tat = 0;
        for _ in 0..10 {
            tat = step(tat, now, &fast).unwrap();
            assert_eq!(rebase(tat, now, &fast), None);
        }
    }
}
