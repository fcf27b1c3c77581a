//! The two clocks the agent converts between: the kernel's monotonic clock
//! (ban expiries and buckets in the maps) and wall time (journals, which
//! must mean the same thing after a reboot resets the monotonic clock), and
//! the resolution of the coarse clock the XDP program reads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// The monotonic time at which a wall-clock deadline falls, given the two
/// clocks read at the same moment. Deadlines already past map to `now`.
pub fn wall_to_mono(deadline_unix_ms: u64, now_unix_ms: u64, now_mono_ns: u64) -> u64 {
    let left_ms = deadline_unix_ms.saturating_sub(now_unix_ms);
    now_mono_ns.saturating_add(left_ms.saturating_mul(1_000_000))
}

/// The inverse of [`wall_to_mono`].
pub fn mono_to_wall(deadline_mono_ns: u64, now_mono_ns: u64, now_unix_ms: u64) -> u64 {
    let left_ms = deadline_mono_ns.saturating_sub(now_mono_ns) / 1_000_000;
    now_unix_ms.saturating_add(left_ms)
}

/// CLOCK_MONOTONIC in nanoseconds. The kernel reads the coarse variant of
/// the same clock (`bpf_ktime_get_coarse_ns`), which lags it by at most one
/// tick, so ban expiries and TATs written from here compare correctly there.
pub fn monotonic_ns() -> u64 {
    // SAFETY: a valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    timespec_ns(|ts| unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, ts) })
}

/// The resolution of the clock the XDP program reads (one scheduler tick).
pub fn kernel_clock_tick_ns() -> u64 {
    // SAFETY: a valid pointer to a timespec.
    timespec_ns(|ts| unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, ts) })
}

/// The nanoseconds `f` writes into a timespec.
fn timespec_ns(f: impl FnOnce(&mut libc::timespec) -> libc::c_int) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    f(&mut ts);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_the_time_left() {
        let mono = wall_to_mono(10_500, 10_000, 7_000_000_000);
        assert_eq!(mono, 7_500_000_000);
        assert_eq!(mono_to_wall(mono, 7_000_000_000, 10_000), 10_500);
        assert_eq!(wall_to_mono(9_000, 10_000, 5), 5, "past deadlines are now");
    }
}
