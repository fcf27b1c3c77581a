//! Autobans waiting to be pushed to the LAPI. Kept in `state_dir` so that
//! neither a LAPI outage nor an agent restart loses one.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    net::Cidr,
    statefile::{self, StateFileError},
};

pub const SPOOL_FILE: &str = "crowdsec-spool.json";

/// Alerts kept at most. A LAPI gone for days while floods keep coming must
/// not grow the state dir without bound; the oldest go first (their bans
/// are the nearest to expiring anyway).
pub const MAX_SPOOLED: usize = 10_000;

/// Alerts pushed per request.
pub const BATCH: usize = 100;

/// One autoban, as pushed to the fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub source: Cidr,
    /// Dropped packets per second when the ban was decided (0 when no
    /// sample was taken yet).
    pub rate_pps: f64,
    pub reason: String,
    pub duration_secs: u64,
    pub at_unix_ms: u64,
}

impl Alert {
    /// The LAPI's alert model (every field it requires), carrying one
    /// decision so that the LAPI stores it as given rather than running
    /// its own profiles.
    pub fn wire(&self) -> serde_json::Value {
        let at = rfc3339(self.at_unix_ms);
        let (scope, value) = if self.source.is_host() {
            ("Ip", self.source.addr().to_string())
        } else {
            ("Range", self.source.to_string())
        };
        let message = format!(
            "shield: {value} flooded at {:.0} dropped packets/s ({}); banned for {}s",
            self.rate_pps, self.reason, self.duration_secs
        );
        let mut source = serde_json::json!({ "scope": scope, "value": value });
        if scope == "Ip" {
            source["ip"] = serde_json::Value::String(value.clone());
        } else {
            source["range"] = serde_json::Value::String(value.clone());
        }
        serde_json::json!({
            "scenario": super::SCENARIO,
            "scenario_hash": "",
            "scenario_version": env!("CARGO_PKG_VERSION"),
            "message": message,
            "events_count": 1,
            "events": [{
                "timestamp": at,
                "meta": [
                    { "key": "rate_pps", "value": format!("{:.0}", self.rate_pps) },
                    { "key": "reason", "value": self.reason },
                ],
            }],
            "start_at": at,
            "stop_at": at,
            "capacity": 0,
            "leakspeed": "0",
            "simulated": false,
            "remediation": true,
            "source": source,
            "decisions": [{
                "duration": format!("{}s", self.duration_secs),
                "origin": "crowdsec",
                "scenario": super::SCENARIO,
                "scope": scope,
                "type": "ban",
                "value": value,
                "simulated": false,
            }],
        })
    }
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SpoolFile {
    version: u32,
    alerts: Vec<Alert>,
}

/// The queue. Each alert carries a sequence number, so that a push that
/// succeeds removes exactly the alerts it sent, whatever was spooled or
/// dropped meanwhile. The file is written behind the queue
/// ([`Spool::take_snapshot`]), not on every change: a flood brings
/// thousands of autobans in one tick, and the agent must not rewrite and
/// fsync up to [`MAX_SPOOLED`] alerts for each of them.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    /// Oldest first, sequence numbers increasing.
    alerts: VecDeque<(u64, Alert)>,
    next_seq: u64,
    /// The queue changed since the last snapshot was taken.
    changed: bool,
    /// Snapshots taken so far; the file keeps the newest one written.
    generation: u64,
    /// Alerts dropped because the spool was full.
    pub overflowed: u64,
}

/// Alerts on their way to the LAPI: the oldest [`BATCH`] in the spool.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub alerts: Vec<Alert>,
    /// Sequence number of the last alert in the batch.
    last_seq: u64,
}

/// The spool as it was when taken, to be written without the agent's lock.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    path: PathBuf,
    alerts: Vec<Alert>,
}

impl Snapshot {
    /// Serializes and writes it (temporary file, fsync, rename).
    pub fn write(&self) -> Result<(), StateFileError> {
        /// [`SpoolFile`], borrowed: 10,000 alerts are not copied again.
        #[derive(Serialize)]
        struct Out<'a> {
            version: u32,
            alerts: &'a [Alert],
        }
        statefile::write(
            &self.path,
            &Out {
                version: 1,
                alerts: &self.alerts,
            },
        )
    }

    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}

impl Spool {
    /// Reads the spool; a corrupt one is moved aside (reported through
    /// `warn`) and the queue starts empty.
    pub fn open(state_dir: &Path, warn: &mut dyn FnMut(String)) -> Result<Spool, StateFileError> {
        let path = state_dir.join(SPOOL_FILE);
        let alerts = match statefile::read::<SpoolFile>(&path) {
            Ok(f) => f.map(|f| f.alerts).unwrap_or_default(),
            Err(e @ StateFileError::Corrupt { .. }) => {
                warn(e.to_string());
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let alerts: VecDeque<(u64, Alert)> = (0u64..).zip(alerts).collect();
        Ok(Spool {
            path,
            next_seq: alerts.len() as u64,
            alerts,
            changed: false,
            generation: 0,
            overflowed: 0,
        })
    }

    /// Queues `a`; returns how many of the oldest alerts were dropped to
    /// make room (0 or 1). The caller counts and reports them.
    pub fn push(&mut self, a: Alert) -> usize {
        self.alerts.push_back((self.next_seq, a));
        self.next_seq += 1;
        self.changed = true;
        let mut dropped = 0;
        while self.alerts.len() > MAX_SPOOLED {
            self.alerts.pop_front();
            dropped += 1;
        }
        self.overflowed += dropped as u64;
        dropped
    }

    /// The next alerts to push (oldest first), without removing them.
    pub fn batch(&self) -> Batch {
        let alerts: Vec<&(u64, Alert)> = self.alerts.iter().take(BATCH).collect();
        Batch {
            last_seq: alerts.last().map_or(0, |(s, _)| *s),
            alerts: alerts.into_iter().map(|(_, a)| a.clone()).collect(),
        }
    }

    /// Removes the alerts of `batch` once the LAPI took them: by sequence
    /// number, so alerts spooled since (and the spool may have overflowed
    /// meanwhile, dropping some of the batch) stay. Returns how many were
    /// removed.
    pub fn pushed(&mut self, batch: &Batch) -> usize {
        if batch.alerts.is_empty() {
            return 0;
        }
        // The batch was the front of the queue and only the front is ever
        // dropped, so what is left of it is still at the front.
        let mut removed = 0;
        while self
            .alerts
            .front()
            .is_some_and(|(s, _)| *s <= batch.last_seq)
        {
            self.alerts.pop_front();
            removed += 1;
        }
        self.changed |= removed > 0;
        removed
    }

    /// The queue as it is now, if it changed since the last snapshot.
    pub fn take_snapshot(&mut self) -> Option<Snapshot> {
        if !self.changed {
            return None;
        }
        self.changed = false;
        self.generation += 1;
        Some(Snapshot {
            generation: self.generation,
            path: self.path.clone(),
            alerts: self.alerts.iter().map(|(_, a)| a.clone()).collect(),
        })
    }

    /// A snapshot's write failed: the next one must be taken anyway.
    pub fn write_failed(&mut self) {
        self.changed = true;
    }

    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` from Unix milliseconds (the LAPI parses RFC 3339).
fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
pub(super) fn rfc3339_for_test(unix_ms: u64) -> String {
    rfc3339(unix_ms)
}
