//! The `[adaptive]` level in `state_dir/adaptive.json`, so that an agent
//! restarted in the middle of a flood picks the tightened limits up again
//! instead of starting over from the configured ones.
//!
//! The file says which level was in force and when it last was earned (its
//! last change, or the last sample that was not calm). A level that recent
//! is one the old agent would still hold: it relaxes only after
//! `relax_after` of calm. Anything older is ignored.

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    config::AdaptiveConfig,
    statefile::{self, StateFileError},
};

pub const FILE: &str = "adaptive.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saved {
    pub level: u32,
    /// When the level was last earned, Unix milliseconds.
    pub held_unix_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    level: u32,
    held_unix_ms: u64,
}

/// The saved level; a corrupt file is moved aside and reported through
/// `warn`, and nothing is resumed.
pub fn load(
    state_dir: &Path,
    warn: &mut dyn FnMut(String),
) -> Result<Option<Saved>, StateFileError> {
    match statefile::read::<File>(&state_dir.join(FILE)) {
        Ok(f) => Ok(f.map(|f| Saved {
            level: f.level,
            held_unix_ms: f.held_unix_ms,
        })),
        Err(e @ StateFileError::Corrupt { .. }) => {
            warn(e.to_string());
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub fn save(state_dir: &Path, saved: Saved) -> Result<(), StateFileError> {
    statefile::write(
        &state_dir.join(FILE),
        &File {
            version: 1,
            level: saved.level,
            held_unix_ms: saved.held_unix_ms,
        },
    )
}

/// What a starting agent does with a saved level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Nothing to resume: no file, level 0, or `[adaptive]` off.
    Nothing,
    /// Earned within `relax_after`: start at `level` (clamped to
    /// `max_level`).
    Level { level: u32, age: Duration },
    /// Earned longer ago than `relax_after`: the old agent would have
    /// relaxed by now.
    Stale { level: u32, age: Duration },
}

pub fn decide(saved: Option<Saved>, cfg: &AdaptiveConfig, now_unix_ms: u64) -> Resume {
    let Some(s) = saved.filter(|s| s.level > 0 && cfg.enabled) else {
        return Resume::Nothing;
    };
    // A timestamp ahead of the clock (the clock was stepped back) counts
    // as now: the level was in force a moment ago.
    let age = Duration::from_millis(now_unix_ms.saturating_sub(s.held_unix_ms));
    let level = s.level.min(cfg.max_level);
    if age > cfg.relax_after {
        Resume::Stale { level, age }
    } else {
        Resume::Level { level, age }
    }
}

/// How often a held level's timestamp is brought up to date while it is
/// being earned: often enough that a restart lands within `relax_after`
/// of it, rarely enough that a long flood does not mean a write a second.
pub fn refresh_every(cfg: &AdaptiveConfig) -> Duration {
    (cfg.relax_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AdaptiveConfig {
        crate::adaptive::test_config(Duration::from_secs(60))
    }

    #[test]
    fn a_recent_level_is_resumed_and_an_old_one_is_not() {
        let c = cfg();
        let now = 10_000_000;
        let saved = |level, ago_ms: u64| {
            Some(Saved {
                level,
                held_unix_ms: now - ago_ms,
            })
        };
        assert_eq!(decide(None, &c, now), Resume::Nothing);
        assert_eq!(decide(saved(0, 0), &c, now), Resume::Nothing);
        assert_eq!(
            decide(saved(2, 5_000), &c, now),
            Resume::Level {
                level: 2,
                age: Duration::from_secs(5)
            }
        );
        assert_eq!(
            decide(saved(2, 60_000), &c, now),
            Resume::Level {
                level: 2,
                age: Duration::from_secs(60)
            }
        );
        assert_eq!(
            decide(saved(9, 61_000), &c, now),
            Resume::Stale {
                level: 3,
                age: Duration::from_secs(61)
            }
        );
        // From the future (the clock went back): as good as now.
        assert_eq!(
            decide(
                Some(Saved {
                    level: 1,
                    held_unix_ms: now + 3_600_000
                }),
                &c,
                now
            ),
            Resume::Level {
                level: 1,
                age: Duration::ZERO
            }
        );
        let off = AdaptiveConfig {
            enabled: false,
            ..cfg()
        };
        assert_eq!(decide(saved(2, 0), &off, now), Resume::Nothing);
    }

    #[test]
    fn saved_level_loads_back_and_garbage_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), &mut |w| panic!("{w}")).unwrap(), None);
        let s = Saved {
            level: 2,
            held_unix_ms: 1_700_000_000_000,
        };
        save(dir.path(), s).unwrap();
        assert_eq!(load(dir.path(), &mut |w| panic!("{w}")).unwrap(), Some(s));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"level\": 2"), "{text}");
        std::fs::write(dir.path().join(FILE), "{\"version\":1,\"level\":\"high\"}").unwrap();
        let mut warned = Vec::new();
        assert_eq!(load(dir.path(), &mut |w| warned.push(w)).unwrap(), None);
        assert_eq!(warned.len(), 1, "{warned:?}");
    }

    #[test]
    fn refreshes_are_a_quarter_of_relax_after_within_bounds() {
        let mut c = cfg();
        assert_eq!(refresh_every(&c), Duration::from_secs(15));
        c.relax_after = Duration::from_secs(2);
        assert_eq!(refresh_every(&c), Duration::from_secs(1));
        c.relax_after = Duration::from_secs(3600);
        assert_eq!(refresh_every(&c), Duration::from_secs(60));
    }
}
