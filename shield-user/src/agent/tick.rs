//! The agent's once-a-second tick, as its own task (docs/ARCHITECTURE.md,
//! "The agent's tasks"): housekeeping, flood rates, autobans, `[adaptive]`.
//!
//! A distributed flood makes the tick's work large (10,000 floods to
//! sample, 10,000 autobans to write into the maps), so the work is cut
//! into slices of [`SLICE`] items, each under the agent's lock, and the
//! task yields between slices: control requests, scrapes, flood events,
//! the watchdog and SIGTERM wait for at most one slice, never for the
//! whole tick. Nothing here touches the disk: the writer does
//! ([`super::writer`]).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{Agent, lock};
use crate::{clock, net::Cidr};

/// Items (floods sampled, autobans added) per hold of the lock. A slice
/// costs about 1 ms in a release build and under 30 ms in a debug build
/// on a loaded 2-core host (one map write or lookup per item).
pub const SLICE: usize = 256;

/// One tick's autobans, decided and added a slice of floods at a time.
pub struct AutobanRound {
    pub(super) now_ms: u64,
    /// Sources banned in this round (a source flooding in two classes is
    /// banned once).
    pub(super) seen: HashSet<Cidr>,
}

/// Ticks once a second, for as long as the agent runs.
pub async fn tick_loop(agent: Arc<Mutex<Agent>>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    // A tick that ran long is followed by a full second, not a burst.
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        tick(&agent).await;
    }
}

/// One tick: expired bans and overrides lifted, flood rates sampled,
/// floods that lasted long enough banned, `[adaptive]` stepped, feeds due
/// started, and the writer woken for what changed.
pub async fn tick(agent: &Arc<Mutex<Agent>>) {
    let keys = {
        let mut a = lock(agent);
        a.tick_housekeeping();
        a.floods.keys()
    };
    for slice in keys.chunks(SLICE) {
        tokio::task::yield_now().await;
        lock(agent).sample_flood_rates(slice, clock::monotonic_ns());
    }
    tokio::task::yield_now().await;
    let now = clock::monotonic_ns();
    let mut round = {
        let mut a = lock(agent);
        a.tick_floods_ended(now);
        a.autoban_begin()
    };
    if lock(agent).cfg.autoban.enabled {
        for slice in keys.chunks(SLICE) {
            tokio::task::yield_now().await;
            lock(agent).autoban_slice(&mut round, slice, now);
        }
        tokio::task::yield_now().await;
    }
    let feeds_due = {
        let mut a = lock(agent);
        a.tick_finish(now);
        a.write_lane().wake();
        a.feeds_due()
    };
    for ticket in feeds_due {
        tokio::spawn(super::feeds::run(agent.clone(), ticket));
    }
}
