//! Writes to `state_dir`: the ones still to do ([`PendingWrite`]) and the
//! ones that failed (a full disk, a read-only remount).
//!
//! Enforcement never waits for the disk: what a failed write should have
//! kept stays in memory and in the maps, the failure is logged, counted and
//! shown by `shieldctl status` and the metrics, and the agent writes the
//! file again on its next tick until it succeeds.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{clock, statefile::StateFileError};

/// One state file's contents as of one moment, taken under the agent's
/// lock and written (serialised, fsync'd) outside it, by
/// [`super::writer`] (docs/ARCHITECTURE.md, "State files").
pub struct PendingWrite {
    pub file: &'static str,
    write: Box<dyn FnOnce() -> Result<(), StateFileError> + Send>,
}

impl PendingWrite {
    pub fn new(
        file: &'static str,
        write: impl FnOnce() -> Result<(), StateFileError> + Send + 'static,
    ) -> PendingWrite {
        PendingWrite {
            file,
            write: Box::new(write),
        }
    }

    /// Does the write (blocking: serialisation, write, fsync, rename).
    pub fn run(self) -> Result<(), StateFileError> {
        (self.write)()
    }
}

/// The state files the writer takes from the agent's own state (the ban
/// journal keeps its own mark in the ban book).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateFile {
    /// `policy-ids.json`, after a reload or a recompute.
    PolicyIds,
    /// `offences.json`, after the offence history changed.
    Offences,
    /// `adaptive.json`, after the adaptive level moved or is re-earned.
    Adaptive,
}

impl StateFile {
    pub const ALL: [StateFile; 3] = [
        StateFile::PolicyIds,
        StateFile::Offences,
        StateFile::Adaptive,
    ];
}

/// The state files behind the agent's state: marked by the change that
/// dirtied them, taken by the writer (one flush, agent/writer.rs), and
/// marked again when their write fails, so the next flush retries them.
#[derive(Debug, Default)]
pub struct PendingWrites {
    files: BTreeSet<StateFile>,
}

impl PendingWrites {
    pub fn mark(&mut self, f: StateFile) {
        self.files.insert(f);
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Everything marked, in a fixed order; none is marked afterwards.
    pub fn take(&mut self) -> BTreeSet<StateFile> {
        std::mem::take(&mut self.files)
    }
}

#[derive(Debug, Default)]
pub struct StateWrites {
    errors: AtomicU64,
    /// Files whose latest write failed, with that error.
    failing: Mutex<BTreeMap<String, String>>,
    last: Mutex<Option<(String, u64)>>,
}

impl StateWrites {
    /// Reports the outcome of writing `file` (a name under `state_dir`).
    /// The first failure of a file is logged as an error, retries quietly,
    /// and the recovery once.
    pub fn outcome<E: std::fmt::Display>(&self, file: &str, r: Result<(), E>) -> bool {
        let mut failing = self
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match r {
            Ok(()) => {
                if failing.remove(file).is_some() {
                    tracing::info!(file, "state file written again");
                }
                true
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let msg = e.to_string();
                if !failing.contains_key(file) {
                    tracing::error!(
                        file,
                        "cannot write state: {msg}; enforcement continues from memory and the maps, and the write is retried every second"
                    );
                }
                failing.insert(file.to_string(), msg.clone());
                *self
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((format!("{file}: {msg}"), clock::unix_secs()));
                false
            }
        }
    }

    /// A write that failed where the change it carried was refused as a
    /// whole (`allow add`, `limits set --persist`): counted and remembered,
    /// but nothing is left unsaved.
    pub fn refused(&self, file: &str, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(file, "cannot write state: {e}; the change was refused");
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((format!("{file}: {e}"), clock::unix_secs()));
    }

    /// Failed writes so far, retries included.
    pub fn errors_total(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Files not written since their last change.
    pub fn unsaved(&self) -> Vec<String> {
        self.failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The most recent failure and when it happened (Unix seconds).
    pub fn last_error(&self) -> Option<(String, u64)> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_file_is_taken_once() {
        let mut p = PendingWrites::default();
        p.mark(StateFile::Adaptive);
        p.mark(StateFile::PolicyIds);
        p.mark(StateFile::Adaptive);
        assert!(!p.is_empty());
        assert_eq!(
            p.take().into_iter().collect::<Vec<_>>(),
            vec![StateFile::PolicyIds, StateFile::Adaptive]
        );
        assert!(p.is_empty() && p.take().is_empty());
    }

    #[test]
    fn failures_are_counted_until_a_write_succeeds() {
        let w = StateWrites::default();
        assert!(w.outcome::<String>("bans.json", Ok(())));
        assert!(!w.outcome("bans.json", Err("No space left on device")));
        assert!(!w.outcome("bans.json", Err("No space left on device")));
        assert_eq!(w.errors_total(), 2);
        assert_eq!(w.unsaved(), vec!["bans.json".to_string()]);
        assert!(w.last_error().unwrap().0.contains("No space left"));
        assert!(w.outcome::<String>("bans.json", Ok(())));
        assert!(w.unsaved().is_empty());
        assert_eq!(w.errors_total(), 2);
    }
}
