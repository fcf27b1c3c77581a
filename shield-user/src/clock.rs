//! The two clocks the agent converts between: the kernel's monotonic clock
//! (ban expiries and buckets in the maps) and wall time (journals, which
//! must mean the same thing after a reboot resets the monotonic clock).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::dataplane::monotonic_ns;

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
