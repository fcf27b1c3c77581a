//! When to fetch a feed next.
//!
//! Pure arithmetic, with the randomness passed in, so the schedule can be
//! tested exactly. Jitter matters even for one agent: many hosts started
//! by the same deployment would otherwise hit a feed's server in lockstep.

use std::time::Duration;

/// The wait after the first failure; it doubles with every further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);

/// The shortest wait ever returned, so that a zero or tiny `refresh` cannot
/// turn the scheduler into a busy loop against a feed's server.
pub const MIN_DELAY: Duration = Duration::from_secs(1);

/// Spread of the jitter, as a fraction of the delay either way.
pub const JITTER: f64 = 0.10;

/// The delay before the next fetch of a feed.
///
/// `consecutive_failures == 0` is the normal schedule: `refresh ± 10 %`.
/// After failures the delay starts at [`FIRST_BACKOFF`] and doubles each
/// time, never beyond `refresh` (a feed that keeps failing is still tried
/// at least as often as it would be refreshed), with the same ± 10 %.
///
/// `jitter_unit` is the caller's random number in `0..=1`: 0 gives the
/// shortest delay, 1 the longest. Out-of-range values are clamped and NaN
/// counts as the middle, so no input panics.
pub fn next_delay(consecutive_failures: u32, refresh: Duration, jitter_unit: f64) -> Duration {
    let refresh = refresh.max(MIN_DELAY);
    let base = if consecutive_failures == 0 {
        refresh
    } else {
        // 2^20 × 30 s is a year: far past any sane refresh, and small
        // enough that the shift cannot overflow.
        let doublings = (consecutive_failures - 1).min(20);
        FIRST_BACKOFF
            .checked_mul(1 << doublings)
            .unwrap_or(refresh)
            .min(refresh)
    };
    let unit = if jitter_unit.is_nan() {
        0.5
    } else {
        jitter_unit.clamp(0.0, 1.0)
    };
    let factor = 1.0 - JITTER + 2.0 * JITTER * unit;
    // `Duration::mul_f64` panics on overflow; a refresh near Duration::MAX
    // must not take the agent down, so fall back to the unjittered base.
    Duration::try_from_secs_f64(base.as_secs_f64() * factor)
        .unwrap_or(base)
        .max(MIN_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn success_schedule_is_refresh_plus_minus_ten_percent() {
        assert!((secs(next_delay(0, HOUR, 0.0)) - 3240.0).abs() < 1e-6);
        assert!((secs(next_delay(0, HOUR, 0.5)) - 3600.0).abs() < 1e-6);
        assert!((secs(next_delay(0, HOUR, 1.0)) - 3960.0).abs() < 1e-6);
    }

    #[test]
    fn failures_back_off_exponentially_from_thirty_seconds() {
        let got: Vec<f64> = (1..=8).map(|n| secs(next_delay(n, HOUR, 0.5))).collect();
        let want = [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn backoff_is_capped_at_refresh_and_jittered() {
        for n in [9, 20, 21, 1000, u32::MAX] {
            assert!((secs(next_delay(n, HOUR, 0.5)) - 3600.0).abs() < 1e-6);
            assert!((secs(next_delay(n, HOUR, 0.0)) - 3240.0).abs() < 1e-6);
        }
        let short = Duration::from_secs(20);
        assert!((secs(next_delay(1, short, 0.5)) - 20.0).abs() < 1e-6);
        assert!((secs(next_delay(1, HOUR, 1.0)) - 33.0).abs() < 1e-6);
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        assert_eq!(next_delay(0, Duration::ZERO, 0.5), MIN_DELAY);
        assert_eq!(next_delay(3, Duration::ZERO, 0.0), MIN_DELAY);
        assert!(next_delay(0, Duration::MAX, 1.0) >= Duration::from_secs(u64::MAX / 2));
        assert!(next_delay(u32::MAX, Duration::MAX, 1.0) > Duration::ZERO);
        assert_eq!(next_delay(0, HOUR, f64::NAN), HOUR);
        assert_eq!(next_delay(0, HOUR, -5.0), next_delay(0, HOUR, 0.0));
        assert_eq!(next_delay(0, HOUR, f64::INFINITY), next_delay(0, HOUR, 1.0));
    }

    #[test]
    fn delay_grows_with_failures_until_the_cap() {
        let mut last = Duration::ZERO;
        for n in 1..40 {
            let d = next_delay(n, HOUR, 0.5);
            assert!(d >= last);
            last = d;
        }
    }
}
