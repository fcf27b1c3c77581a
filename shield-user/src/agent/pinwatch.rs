//! Watching the pins under `pin_dir`. If bpffs is unmounted or remounted
//! under a running agent, the pins vanish; the agent holds its own
//! references to the maps and links, so enforcement carries on, but a
//! restart would find nothing to adopt. The agent says so, and pins
//! everything again as soon as `pin_dir` is usable.

use std::time::Duration;

use super::Agent;
use crate::{clock, dataplane::pins};

/// How often the pins are looked at: a few `stat` calls.
const EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct PinWatch {
    next_check_mono_ns: u64,
    /// Pins found missing at the last check (empty: all there).
    pub missing: Vec<String>,
    /// Why they could not be put back, if that failed.
    pub error: Option<String>,
    /// Times the pins were found gone and put back.
    pub repinned_total: u64,
}

impl Agent {
    /// Checks the pins (at most every [`EVERY`]) and restores missing ones.
    pub(super) fn check_pins(&mut self) {
        let now = clock::monotonic_ns();
        if self.detached || now < self.pins.next_check_mono_ns {
            return;
        }
        self.pins.next_check_mono_ns = now.saturating_add(EVERY.as_nanos() as u64);
        let pin_dir = self.cfg.pin_dir.clone();
        let missing = self.dp.missing_pins(&pin_dir);
        if missing.is_empty() {
            if !self.pins.missing.is_empty() {
                tracing::info!(pin_dir = %pin_dir.display(), "pins are back");
            }
            self.pins.missing.clear();
            self.pins.error = None;
            return;
        }
        if self.pins.missing.is_empty() {
            tracing::error!(
                pin_dir = %pin_dir.display(),
                missing = missing.len(),
                first = missing[0],
                "pins are gone (bpffs unmounted or cleared?); enforcement continues through this agent's own references, but a restart now would start from empty maps"
            );
        }
        self.pins.missing = missing;
        let repin = pins::ensure_pin_dir(&pin_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| self.dp.repin(&pin_dir).map_err(|e| e.to_string()));
        match repin {
            Ok(n) => {
                tracing::warn!(pin_dir = %pin_dir.display(), pinned = n, "pinned the maps and links again");
                self.pins.repinned_total += 1;
                self.pins.missing.clear();
                self.pins.error = None;
            }
            Err(e) => {
                if self.pins.error.as_deref() != Some(e.as_str()) {
                    tracing::error!(pin_dir = %pin_dir.display(), "cannot pin again yet: {e}");
                }
                self.pins.error = Some(e);
            }
        }
    }

    pub fn pin_watch(&self) -> &PinWatch {
        &self.pins
    }
}
