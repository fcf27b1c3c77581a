//! The writer of `bans.json`, `offences.json`, `policy-ids.json` and
//! `adaptive.json` (what [`Agent::take_writes`] hands out): their contents
//! are taken under the agent's lock (a copy), and serialised, written and
//! fsync'd on a blocking thread without it, so a control request, a scrape, the
//! watchdog or SIGTERM never waits for the disk behind a flood's autobans
//! (docs/ARCHITECTURE.md, "State files").
//!
//! One write at a time, in order ([`Lane`]): a later copy never lands
//! before an earlier one. A request that changed a file waits for
//! [`flush`] before it answers, so "banned" still means journaled (or says
//! why not); read-only requests never wait.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{Agent, lock};
use crate::statefile::StateFileError;

/// Held while a copy is taken and written: whoever holds it next sees the
/// previous write finished.
#[derive(Debug, Default)]
pub struct Lane {
    turn: tokio::sync::Mutex<()>,
    wake: Notify,
}

impl Lane {
    /// Asks [`write_loop`] for a flush (the tick does, once a second).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Writes what is pending now, after any write already under way; returns
/// once it is on disk (or failed, which is reported and retried).
pub async fn flush(agent: &Arc<Mutex<Agent>>) {
    let lane = lock(agent).write_lane();
    let _turn = lane.turn.lock().await;
    let pending = lock(agent).take_writes();
    if pending.is_empty() {
        return;
    }
    let files: Vec<&'static str> = pending.iter().map(|w| w.file).collect();
    let results = tokio::task::spawn_blocking(move || {
        pending
            .into_iter()
            .map(|w| (w.file, w.run()))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_else(|e| {
        files
            .iter()
            .map(|f| {
                let err = StateFileError::Io {
                    path: (*f).into(),
                    source: std::io::Error::other(format!("state write task failed: {e}")),
                };
                (*f, Err(err))
            })
            .collect()
    });
    let mut a = lock(agent);
    for (file, r) in results {
        a.wrote(file, r);
    }
}

/// Flushes whenever woken ([`Lane::wake`]).
pub async fn write_loop(agent: Arc<Mutex<Agent>>) {
    let lane = lock(&agent).write_lane();
    loop {
        lane.wake.notified().await;
        flush(&agent).await;
    }
}
