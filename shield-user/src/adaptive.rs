//! Adaptive limits (`[adaptive]`): the decision of when to tighten the
//! default tier's limits and when to relax them again, as a pure state
//! machine over samples of the data plane's total counters. The agent feeds
//! it one sample per tick and recompiles the policy when the level changes.
//!
//! - **Under a flood**: the total drop rate or pass rate is over its
//!   threshold. The level goes up one step, at most once per `step`, up to
//!   `max_level`.
//! - **Calm**: every configured rate is under half its threshold. After
//!   `relax_after` of unbroken calm the level goes down one step, and the
//!   next step down needs another `relax_after` of calm.
//! - In between (the hysteresis band), the level holds and the calm clock
//!   starts over.

use crate::config::{AdaptiveConfig, Rate};

/// The data plane's counters summed over CPUs and reasons, at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Packets dropped (dry run's `would_drop` included: it is policy saying drop).
    pub drops: u64,
    pub passes: u64,
    pub at_ns: u64,
}

/// A level change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub from: u32,
    pub to: u32,
}

impl Step {
    pub fn tightened(&self) -> bool {
        self.to > self.from
    }
}

#[derive(Clone, Debug, Default)]
pub struct Adaptive {
    level: u32,
    last_raise_ns: Option<u64>,
    calm_since_ns: Option<u64>,
    last_relax_ns: Option<u64>,
    prev: Option<Sample>,
    /// The last sample was not calm: the level is being earned, not just
    /// waiting out `relax_after`.
    pressed: bool,
    /// Rates measured between the last two samples, per second.
    pub drop_rate: f64,
    pub pass_rate: f64,
}

fn per_second(r: &Rate) -> f64 {
    r.count as f64 / r.per.as_secs_f64().max(1e-9)
}

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Adaptive {
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Starts at `level` (a restarted agent picking up where the last one
    /// was), at most `max_level`. The next raise waits a full `step`, and
    /// the first relax a full `relax_after` of calm, as if the level had
    /// just been reached.
    pub fn resume(level: u32, cfg: &AdaptiveConfig, now_ns: u64) -> Adaptive {
        if !cfg.enabled {
            return Adaptive::default();
        }
        Adaptive {
            level: level.min(cfg.max_level),
            last_raise_ns: Some(now_ns),
            ..Adaptive::default()
        }
    }

    /// Whether the last sample was not calm (over a threshold, or in the
    /// hysteresis band).
    pub fn pressed(&self) -> bool {
        self.pressed
    }

    /// What the default tier's rates are divided by now: `factor^level`.
    /// 1 when adaptive limits are off (a reload may turn them off before
    /// the next sample brings the level back to 0).
    pub fn divisor(&self, cfg: &AdaptiveConfig) -> u64 {
        if !cfg.enabled {
            return 1;
        }
        u64::from(cfg.factor).saturating_pow(self.level.min(cfg.max_level))
    }

    /// Takes one sample; returns the step taken, if any.
    pub fn observe(&mut self, cfg: &AdaptiveConfig, s: Sample) -> Option<Step> {
        if !cfg.enabled {
            return self.reset();
        }
        if self.level > cfg.max_level {
            // A reload lowered max_level.
            let from = self.level;
            self.level = cfg.max_level;
            self.prev = Some(s);
            return Some(Step {
                from,
                to: self.level,
            });
        }
        let prev = self.prev.replace(s)?;
        if s.at_ns <= prev.at_ns {
            return None;
        }
        let secs = (s.at_ns - prev.at_ns) as f64 / 1e9;
        // Counters only go back when the pins were removed; that interval
        // measures nothing.
        self.drop_rate = s.drops.saturating_sub(prev.drops) as f64 / secs;
        self.pass_rate = s.passes.saturating_sub(prev.passes) as f64 / secs;
        let over = |limit: &Option<Rate>, rate: f64, scale: f64| {
            limit.as_ref().is_some_and(|l| rate > per_second(l) * scale)
        };
        let hot =
            over(&cfg.drop_rate, self.drop_rate, 1.0) || over(&cfg.pass_rate, self.pass_rate, 1.0);
        let calm = !over(&cfg.drop_rate, self.drop_rate, 0.5)
            && !over(&cfg.pass_rate, self.pass_rate, 0.5);
        let now = s.at_ns;
        self.pressed = !calm;
        if hot {
            self.calm_since_ns = None;
            let due = self
                .last_raise_ns
                .is_none_or(|t| now.saturating_sub(t) >= ns(cfg.step));
            if self.level < cfg.max_level && due {
                self.last_raise_ns = Some(now);
                self.level += 1;
                return Some(Step {
                    from: self.level - 1,
                    to: self.level,
                });
            }
            return None;
        }
        if !calm {
            self.calm_since_ns = None;
            return None;
        }
        let since = *self.calm_since_ns.get_or_insert(now);
        let calm_for = now.saturating_sub(since);
        let since_relax = self
            .last_relax_ns
            .map_or(u64::MAX, |t| now.saturating_sub(t));
        let wait = ns(cfg.relax_after);
        if self.level > 0 && calm_for >= wait && since_relax >= wait {
            self.last_relax_ns = Some(now);
            self.level -= 1;
            return Some(Step {
                from: self.level + 1,
                to: self.level,
            });
        }
        None
    }

    /// Back to the configured limits (adaptive turned off).
    fn reset(&mut self) -> Option<Step> {
        let from = self.level;
        *self = Adaptive::default();
        (from > 0).then_some(Step { from, to: 0 })
    }
}

/// The tests' config: on at 1000 drops/s, factor 2, three levels, a step
/// every 5 s, relaxing after `relax_after`.
#[cfg(test)]
pub(crate) fn test_config(relax_after: std::time::Duration) -> AdaptiveConfig {
    AdaptiveConfig {
        enabled: true,
        drop_rate: Some(Rate {
            count: 1000,
            per: std::time::Duration::from_secs(1),
        }),
        pass_rate: None,
        factor: 2,
        max_level: 3,
        step: std::time::Duration::from_secs(5),
        relax_after,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn cfg() -> AdaptiveConfig {
        test_config(Duration::from_secs(30))
    }

    /// Runs `secs` one-second ticks at `drops_per_sec`, returning every step.
    fn run(
        a: &mut Adaptive,
        c: &AdaptiveConfig,
        t: &mut u64,
        d: &mut u64,
        secs: u64,
        drops_per_sec: u64,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..secs {
            *t += S;
            *d += drops_per_sec;
            steps.extend(a.observe(
                c,
                Sample {
                    drops: *d,
                    passes: 0,
                    at_ns: *t,
                },
            ));
        }
        steps
    }

    #[test]
    fn a_flood_raises_one_step_per_interval_up_to_the_cap() {
        let (c, mut a, mut t, mut d) = (cfg(), Adaptive::default(), 0, 0);
        assert!(
            run(&mut a, &c, &mut t, &mut d, 10, 500).is_empty(),
            "under the threshold"
        );
        let steps = run(&mut a, &c, &mut t, &mut d, 11, 5000);
        assert_eq!(
            steps,
            vec![
                Step { from: 0, to: 1 },
                Step { from: 1, to: 2 },
                Step { from: 2, to: 3 }
            ],
            "at once, then every 5 s"
        );
        assert_eq!(a.divisor(&c), 8);
        assert!(
            run(&mut a, &c, &mut t, &mut d, 30, 5000).is_empty(),
            "capped at max_level"
        );
        assert_eq!(a.level(), 3);
    }

    #[test]
    fn calm_relaxes_one_step_per_relax_after_and_the_band_holds() {
        let (c, mut a, mut t, mut d) = (cfg(), Adaptive::default(), 0, 0);
        run(&mut a, &c, &mut t, &mut d, 12, 5000);
        assert_eq!(a.level(), 3);
        // 700/s: not a flood, not calm either (over half of 1000): holds.
        assert!(run(&mut a, &c, &mut t, &mut d, 100, 700).is_empty());
        assert_eq!(a.level(), 3);
        // Calm: one step down after 30 s of it (counted from its first
        // sample), then one per further 30 s.
        assert!(run(&mut a, &c, &mut t, &mut d, 30, 100).is_empty());
        assert_eq!(
            run(&mut a, &c, &mut t, &mut d, 1, 100),
            vec![Step { from: 3, to: 2 }]
        );
        assert!(run(&mut a, &c, &mut t, &mut d, 29, 100).is_empty());
        assert_eq!(
            run(&mut a, &c, &mut t, &mut d, 1, 100),
            vec![Step { from: 2, to: 1 }]
        );
        // A blip in the band restarts the calm clock.
        run(&mut a, &c, &mut t, &mut d, 20, 100);
        run(&mut a, &c, &mut t, &mut d, 1, 800);
        assert!(run(&mut a, &c, &mut t, &mut d, 30, 100).is_empty());
        assert_eq!(
            run(&mut a, &c, &mut t, &mut d, 1, 100),
            vec![Step { from: 1, to: 0 }]
        );
        assert!(
            run(&mut a, &c, &mut t, &mut d, 100, 0).is_empty(),
            "never below 0"
        );
    }

    #[test]
    fn the_pass_rate_threshold_works_alone_and_disabling_resets() {
        let mut c = cfg();
        c.drop_rate = None;
        c.pass_rate = Some(Rate {
            count: 10_000,
            per: Duration::from_secs(1),
        });
        let mut a = Adaptive::default();
        let mut passes = 0;
        let mut steps = Vec::new();
        for i in 1..=3 {
            passes += 20_000;
            steps.extend(a.observe(
                &c,
                Sample {
                    drops: u64::MAX / 2,
                    passes,
                    at_ns: i * S,
                },
            ));
        }
        assert_eq!(steps, vec![Step { from: 0, to: 1 }]);
        assert!(a.pass_rate > 19_000.0);
        c.enabled = false;
        assert_eq!(
            a.observe(
                &c,
                Sample {
                    drops: 0,
                    passes,
                    at_ns: 4 * S
                }
            ),
            Some(Step { from: 1, to: 0 })
        );
        assert_eq!(a.divisor(&c), 1);
    }

    #[test]
    fn counters_going_back_and_a_lowered_cap_are_handled() {
        let (mut c, mut a, mut t, mut d) = (cfg(), Adaptive::default(), 0, 0);
        run(&mut a, &c, &mut t, &mut d, 12, 5000);
        assert_eq!(a.level(), 3);
        // Pins removed: counters restart at 0. No flood is read into that.
        let s = a.observe(
            &c,
            Sample {
                drops: 0,
                passes: 0,
                at_ns: t + S,
            },
        );
        assert_eq!(s, None);
        assert_eq!(a.drop_rate, 0.0);
        c.max_level = 1;
        assert_eq!(
            a.observe(
                &c,
                Sample {
                    drops: 0,
                    passes: 0,
                    at_ns: t + 2 * S
                }
            ),
            Some(Step { from: 3, to: 1 })
        );
    }

    #[test]
    fn a_resumed_level_holds_until_calm_relaxes_it_and_raises_wait_a_step() {
        let c = cfg();
        let t0 = 100 * S;
        let a = Adaptive::resume(7, &c, t0);
        assert_eq!(a.level(), 3, "clamped to max_level");
        let off = AdaptiveConfig {
            enabled: false,
            ..cfg()
        };
        assert_eq!(Adaptive::resume(2, &off, t0).level(), 0);

        // Still flooding: the level holds, and the next raise (from 2)
        // waits a full step after the resume.
        let (mut a, mut t, mut d) = (Adaptive::resume(2, &c, t0), t0, 0);
        let steps = run(&mut a, &c, &mut t, &mut d, 4, 5000);
        assert_eq!(steps, [], "no raise within a step of resuming");
        assert!(a.pressed());
        let steps = run(&mut a, &c, &mut t, &mut d, 2, 5000);
        assert_eq!(steps, [Step { from: 2, to: 3 }]);

        // Calm: relaxed only after relax_after of it, as after any raise.
        let (mut a, mut t, mut d) = (Adaptive::resume(2, &c, t0), t0, 0);
        let steps = run(&mut a, &c, &mut t, &mut d, 30, 0);
        assert_eq!(steps, []);
        assert!(!a.pressed());
        let steps = run(&mut a, &c, &mut t, &mut d, 2, 0);
        assert_eq!(steps, [Step { from: 2, to: 1 }]);
    }
}
