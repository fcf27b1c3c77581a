//! Bans: the kernel maps enforce them, the journal in `state_dir` remembers
//! them across reboots (when the pins are gone), with wall-clock expiries.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use shield_common::maps::{
    BAN_FOREVER, BAN_ORIGIN_AUTOBAN, BAN_ORIGIN_FEED, BAN_ORIGIN_MANUAL, Ban,
};

use crate::{
    clock,
    dataplane::{Dataplane, DataplaneError},
    net::Cidr,
    statefile::{self, StateFileError},
};

use super::persist::StateWrites;

pub const JOURNAL_FILE: &str = "bans.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BanOrigin {
    Manual,
    Autoban,
    Feed,
}

impl BanOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            BanOrigin::Manual => "manual",
            BanOrigin::Autoban => "autoban",
            BanOrigin::Feed => "feed",
        }
    }

    fn code(self) -> u8 {
        match self {
            BanOrigin::Manual => BAN_ORIGIN_MANUAL,
            BanOrigin::Autoban => BAN_ORIGIN_AUTOBAN,
            BanOrigin::Feed => BAN_ORIGIN_FEED,
        }
    }

    fn from_code(c: u8) -> BanOrigin {
        match c {
            BAN_ORIGIN_AUTOBAN => BanOrigin::Autoban,
            BAN_ORIGIN_FEED => BanOrigin::Feed,
            _ => BanOrigin::Manual,
        }
    }
}

/// One ban as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRecord {
    pub net: Cidr,
    pub origin: BanOrigin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_unix_ms: u64,
    /// `None`: until removed.
    pub expires_unix_ms: Option<u64>,
}

impl BanRecord {
    pub fn expired(&self, now_unix_ms: u64) -> bool {
        self.expires_unix_ms.is_some_and(|e| e <= now_unix_ms)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Journal {
    version: u32,
    bans: Vec<BanRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum BanError {
    #[error(transparent)]
    Journal(#[from] StateFileError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// The agent's view of every ban.
#[derive(Debug)]
pub struct BanBook {
    path: PathBuf,
    bans: BTreeMap<Cidr, BanRecord>,
    /// The journal is behind `bans` (its last write failed).
    dirty: bool,
    writes: Arc<StateWrites>,
}

/// What [`BanBook::restore`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub from_journal: usize,
    pub expired: usize,
    pub adopted_from_maps: usize,
}

impl BanBook {
    /// Reads the journal. A corrupt journal is moved aside and reported
    /// through `warn`; the book then starts from what the maps hold.
    pub fn open(
        state_dir: &Path,
        writes: Arc<StateWrites>,
        warn: &mut dyn FnMut(String),
    ) -> Result<BanBook, BanError> {
        let path = state_dir.join(JOURNAL_FILE);
        let journal = match statefile::read::<Journal>(&path) {
            Ok(j) => j,
            Err(e @ StateFileError::Corrupt { .. }) => {
                warn(e.to_string());
                None
            }
            Err(e) => return Err(e.into()),
        };
        let bans = journal
            .map(|j| j.bans.into_iter().map(|b| (b.net, b)).collect())
            .unwrap_or_default();
        Ok(BanBook {
            path,
            bans,
            dirty: false,
            writes,
        })
    }

    /// Makes the maps and the journal agree: journal bans still running are
    /// (re)written with their remaining time, expired ones dropped, and bans
    /// found only in adopted maps are taken into the journal.
    pub fn restore(&mut self, dp: &mut Dataplane) -> Result<Restored, BanError> {
        let now_ms = clock::unix_ms();
        let now_mono = clock::monotonic_ns();
        let mut r = Restored::default();
        for (net, ban) in dp.ban_entries()? {
            if !ban.active(now_mono) {
                dp.remove_ban(net)?;
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = self.bans.entry(net) {
                let expires_unix_ms = (ban.expires_ns != BAN_FOREVER)
                    .then(|| clock::mono_to_wall(ban.expires_ns, now_mono, now_ms));
                slot.insert(BanRecord {
                    net,
                    origin: BanOrigin::from_code(ban.origin),
                    reason: Some("found in the kernel maps, not in the journal".into()),
                    created_unix_ms: now_ms,
                    expires_unix_ms,
                });
                r.adopted_from_maps += 1;
            }
        }
        r.expired = self.drop_expired(dp, now_ms)?.len();
        for b in self.bans.values() {
            dp.set_ban(b.net, &kernel_ban(b, now_ms, now_mono))?;
            r.from_journal += 1;
        }
        r.from_journal -= r.adopted_from_maps;
        self.save();
        Ok(r)
    }

    /// Enforces, then journals. A crash in between leaves the ban in the
    /// pinned maps, where the next start finds and journals it. A journal
    /// that cannot be written (a full disk) does not stop the ban: it is
    /// reported, and [`BanBook::flush`] writes it later.
    pub fn add(&mut self, dp: &mut Dataplane, rec: BanRecord) -> Result<(), BanError> {
        dp.set_ban(
            rec.net,
            &kernel_ban(&rec, clock::unix_ms(), clock::monotonic_ns()),
        )?;
        self.bans.insert(rec.net, rec);
        self.save();
        Ok(())
    }

    /// Several bans with one journal write: a distributed flood can bring
    /// thousands of autobans in one tick, and rewriting the journal for
    /// each would cost quadratic I/O. Enforced first, as with `add`.
    pub fn add_many(&mut self, dp: &mut Dataplane, recs: &[BanRecord]) -> Result<(), BanError> {
        let (now_ms, now_mono) = (clock::unix_ms(), clock::monotonic_ns());
        for rec in recs {
            dp.set_ban(rec.net, &kernel_ban(rec, now_ms, now_mono))?;
            self.bans.insert(rec.net, rec.clone());
        }
        self.save();
        Ok(())
    }

    /// Lifts a ban; `Ok(false)` when there was none. As with `add`, the
    /// maps and memory change even when the journal cannot be written.
    pub fn remove(&mut self, dp: &mut Dataplane, net: Cidr) -> Result<bool, BanError> {
        if !self.bans.contains_key(&net) {
            return Ok(false);
        }
        dp.remove_ban(net)?;
        self.bans.remove(&net);
        self.save();
        Ok(true)
    }

    /// Removes expired bans from the maps and the journal. The kernel stops
    /// matching them by itself; this reclaims their slots.
    /// Returns the bans that went.
    pub fn sweep(&mut self, dp: &mut Dataplane) -> Result<Vec<BanRecord>, BanError> {
        let gone = self.drop_expired(dp, clock::unix_ms())?;
        if !gone.is_empty() || self.dirty {
            self.save();
        }
        Ok(gone)
    }

    /// Why the journal is behind the bans in force, when it is.
    pub fn unsaved(&self) -> Option<String> {
        if !self.dirty {
            return None;
        }
        self.writes
            .last_error()
            .map(|(e, _)| e)
            .or_else(|| Some(format!("{} is not up to date", self.path.display())))
    }

    /// Forgets bans expired at `now_ms` and removes them from the maps.
    fn drop_expired(
        &mut self,
        dp: &mut Dataplane,
        now_ms: u64,
    ) -> Result<Vec<BanRecord>, BanError> {
        let expired: Vec<Cidr> = self
            .bans
            .values()
            .filter(|b| b.expired(now_ms))
            .map(|b| b.net)
            .collect();
        let mut gone = Vec::with_capacity(expired.len());
        for net in &expired {
            gone.extend(self.bans.remove(net));
            dp.remove_ban(*net)?;
        }
        Ok(gone)
    }

    /// Re-places every v6 ban after `ipv6_prefix` changed: exact v6 bans are
    /// keyed at that prefix. `remove_old` runs with the old config in place.
    pub fn v6_bans(&self) -> Vec<BanRecord> {
        self.bans
            .values()
            .filter(|b| !b.net.is_v4())
            .cloned()
            .collect()
    }

    /// Writes the kernel entry of a known ban again (after a re-placement).
    pub fn enforce(&self, dp: &mut Dataplane, rec: &BanRecord) -> Result<(), BanError> {
        dp.set_ban(
            rec.net,
            &kernel_ban(rec, clock::unix_ms(), clock::monotonic_ns()),
        )?;
        Ok(())
    }

    /// The narrowest unexpired ban that covers `addr`, as the kernel
    /// applies it: a v6 ban at least `ipv6_prefix` long covers that whole
    /// prefix, because that is what the exact map is keyed by.
    pub fn covering(&self, addr: std::net::IpAddr, ipv6_prefix: u8) -> Option<&BanRecord> {
        let now = clock::unix_ms();
        self.bans
            .values()
            .filter(|b| {
                !b.expired(now) && enforced_net(b.net, ipv6_prefix).contains(&Cidr::host(addr))
            })
            .max_by_key(|b| b.net.prefix_len())
    }

    pub fn list(&self) -> impl Iterator<Item = &BanRecord> {
        self.bans.values()
    }

    pub fn get(&self, net: &Cidr) -> Option<&BanRecord> {
        self.bans.get(net)
    }

    pub fn len(&self) -> usize {
        self.bans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Writes the journal; a failure marks it dirty and is reported.
    fn save(&mut self) {
        let j = Journal {
            version: 1,
            bans: self.bans.values().cloned().collect(),
        };
        let ok = self
            .writes
            .outcome(JOURNAL_FILE, statefile::write(&self.path, &j));
        self.dirty = !ok;
    }
}

/// What a ban on `net` blocks in the kernel.
pub fn enforced_net(net: Cidr, ipv6_prefix: u8) -> Cidr {
    if !net.is_v4() && net.prefix_len() >= ipv6_prefix {
        Cidr::truncating(net.addr(), ipv6_prefix)
    } else {
        net
    }
}

fn kernel_ban(b: &BanRecord, now_unix_ms: u64, now_mono: u64) -> Ban {
    let expires = match b.expires_unix_ms {
        None => BAN_FOREVER,
        Some(e) => clock::wall_to_mono(e, now_unix_ms, now_mono),
    };
    Ban::new(expires, b.origin.code())
}

/// The journal as a file a test or an operator can write by hand.
pub fn journal_json(bans: &[BanRecord]) -> String {
    serde_json::to_string_pretty(&Journal {
        version: 1,
        bans: bans.to_vec(),
    })
    .unwrap_or_default()
}
