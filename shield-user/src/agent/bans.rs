//! Bans: the kernel maps enforce them, the journal in `state_dir` remembers
//! them across reboots (when the pins are gone), with wall-clock expiries.
//!
//! A prefix can be held by several origins at once (a manual ban and a
//! CrowdSec decision on the same address): each origin keeps its own
//! record, and the kernel entry lasts as long as the longest of them. One
//! origin letting go never lifts a ban another still holds.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use shield_common::maps::{
    BAN_FOREVER, BAN_ORIGIN_AUTOBAN, BAN_ORIGIN_CROWDSEC, BAN_ORIGIN_FEED, BAN_ORIGIN_MANUAL, Ban,
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
    /// A decision from CrowdSec's LAPI.
    Crowdsec,
}

impl BanOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            BanOrigin::Manual => "manual",
            BanOrigin::Autoban => "autoban",
            BanOrigin::Feed => "feed",
            BanOrigin::Crowdsec => "crowdsec",
        }
    }

    fn code(self) -> u8 {
        match self {
            BanOrigin::Manual => BAN_ORIGIN_MANUAL,
            BanOrigin::Autoban => BAN_ORIGIN_AUTOBAN,
            BanOrigin::Feed => BAN_ORIGIN_FEED,
            BanOrigin::Crowdsec => BAN_ORIGIN_CROWDSEC,
        }
    }

    fn from_code(c: u8) -> BanOrigin {
        match c {
            BAN_ORIGIN_AUTOBAN => BanOrigin::Autoban,
            BAN_ORIGIN_FEED => BanOrigin::Feed,
            BAN_ORIGIN_CROWDSEC => BanOrigin::Crowdsec,
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
    /// Each prefix's holders: at most one record per origin, never empty.
    bans: BTreeMap<Cidr, Vec<BanRecord>>,
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

/// What [`BanBook::sync_crowdsec`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CrowdsecSync {
    /// Prefixes CrowdSec holds now and did not before.
    pub added: usize,
    /// Prefixes whose CrowdSec expiry moved.
    pub updated: usize,
    /// Prefixes CrowdSec let go of.
    pub removed: usize,
    /// Of the removed, those another origin still holds (still blocked).
    pub still_held: usize,
}

impl CrowdsecSync {
    pub fn changed(&self) -> bool {
        self.added + self.updated + self.removed > 0
    }
}

/// A CrowdSec expiry that moved by less than this is the same decision seen
/// again (a resync recomputes "now + remaining" a few ms later); rewriting
/// it would only churn the maps and the journal.
const SAME_EXPIRY_MS: u64 = 2_000;

/// What one prefix's kernel entry must say: the longest-lasting unexpired
/// holder (`None` when none is left).
fn combined(holders: &[BanRecord], now_ms: u64) -> Option<&BanRecord> {
    holders
        .iter()
        .filter(|b| !b.expired(now_ms))
        .max_by_key(|b| b.expires_unix_ms.unwrap_or(u64::MAX))
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
        let mut book = BanBook {
            path,
            bans: BTreeMap::new(),
            dirty: false,
            writes,
        };
        for b in journal.map(|j| j.bans).unwrap_or_default() {
            book.put(b);
        }
        Ok(book)
    }

    /// Sets `rec` as its origin's hold on its prefix.
    fn put(&mut self, rec: BanRecord) -> Option<BanRecord> {
        let holders = self.bans.entry(rec.net).or_default();
        match holders.iter_mut().find(|h| h.origin == rec.origin) {
            Some(h) => Some(std::mem::replace(h, rec)),
            None => {
                holders.push(rec);
                None
            }
        }
    }

    /// Writes (or removes) the kernel entry for `net` from its holders.
    fn enforce_net(&self, dp: &mut Dataplane, net: Cidr) -> Result<(), BanError> {
        let now_ms = clock::unix_ms();
        match self.bans.get(&net).and_then(|h| combined(h, now_ms)) {
            Some(b) => dp.set_ban(net, &kernel_ban(b, now_ms, clock::monotonic_ns()))?,
            None => dp.remove_ban(net)?,
        }
        Ok(())
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
            if !self.bans.contains_key(&net) {
                let expires_unix_ms = (ban.expires_ns != BAN_FOREVER)
                    .then(|| clock::mono_to_wall(ban.expires_ns, now_mono, now_ms));
                self.put(BanRecord {
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
        let nets: Vec<Cidr> = self.bans.keys().copied().collect();
        for net in nets {
            self.enforce_net(dp, net)?;
            r.from_journal += 1;
        }
        r.from_journal -= r.adopted_from_maps;
        self.save();
        Ok(r)
    }

    /// Enforces, then journals. A crash in between leaves the ban in the
    /// pinned maps, where the next start finds and journals it. A journal
    /// that cannot be written (a full disk) does not stop the ban: it is
    /// reported, and the next write catches up. Replaces the same origin's
    /// earlier hold on the prefix; other origins' stay.
    pub fn add(&mut self, dp: &mut Dataplane, rec: BanRecord) -> Result<(), BanError> {
        let (net, origin) = (rec.net, rec.origin);
        let prev = self.put(rec);
        if let Err(e) = self.enforce_net(dp, net) {
            self.release(net, origin);
            if let Some(p) = prev {
                self.put(p);
            }
            return Err(e);
        }
        self.save();
        Ok(())
    }

    /// Several bans with one journal write: a distributed flood can bring
    /// thousands of autobans in one tick, and rewriting the journal for
    /// each would cost quadratic I/O. Enforced first, as with `add`.
    pub fn add_many(&mut self, dp: &mut Dataplane, recs: &[BanRecord]) -> Result<(), BanError> {
        for rec in recs {
            self.put(rec.clone());
            self.enforce_net(dp, rec.net)?;
        }
        self.save();
        Ok(())
    }

    /// Drops `origin`'s hold on `net` from the book only.
    fn release(&mut self, net: Cidr, origin: BanOrigin) -> Option<BanRecord> {
        let holders = self.bans.get_mut(&net)?;
        let i = holders.iter().position(|h| h.origin == origin)?;
        let old = holders.remove(i);
        if holders.is_empty() {
            self.bans.remove(&net);
        }
        Some(old)
    }

    /// Lifts the local holds (manual, autoban, feed) on a ban; `Ok(false)`
    /// when there were none. A CrowdSec decision on the same prefix stays:
    /// it is lifted where it was made (`cscli decisions delete`), or it
    /// would come back at the next resync.
    pub fn remove(&mut self, dp: &mut Dataplane, net: Cidr) -> Result<bool, BanError> {
        let Some(holders) = self.bans.get(&net) else {
            return Ok(false);
        };
        let local: Vec<BanOrigin> = holders
            .iter()
            .map(|h| h.origin)
            .filter(|o| *o != BanOrigin::Crowdsec)
            .collect();
        if local.is_empty() {
            return Ok(false);
        }
        for o in &local {
            self.release(net, *o);
        }
        self.enforce_net(dp, net)?;
        self.save();
        Ok(true)
    }

    /// Whether a CrowdSec decision holds `net`.
    pub fn crowdsec_holds(&self, net: &Cidr) -> bool {
        self.bans
            .get(net)
            .is_some_and(|h| h.iter().any(|b| b.origin == BanOrigin::Crowdsec))
    }

    /// Makes CrowdSec's holds exactly `desired` (one diff, one journal
    /// write): new prefixes are banned, moved expiries rewritten, prefixes
    /// CrowdSec no longer lists released. A released prefix that another
    /// origin holds stays banned.
    pub fn sync_crowdsec(
        &mut self,
        dp: &mut Dataplane,
        desired: &BTreeMap<Cidr, crate::crowdsec::Desired>,
    ) -> Result<CrowdsecSync, BanError> {
        let mut changes: BTreeMap<Cidr, Option<crate::crowdsec::Desired>> = self
            .bans
            .iter()
            .filter(|(n, h)| {
                !desired.contains_key(n) && h.iter().any(|b| b.origin == BanOrigin::Crowdsec)
            })
            .map(|(n, _)| (*n, None))
            .collect();
        changes.extend(desired.iter().map(|(n, d)| (*n, Some(d.clone()))));
        self.crowdsec_changes(dp, &changes)
    }

    /// Sets CrowdSec's hold on each listed prefix (`None`: released) and
    /// leaves every other prefix alone: what a delta needs.
    pub fn crowdsec_changes(
        &mut self,
        dp: &mut Dataplane,
        changes: &BTreeMap<Cidr, Option<crate::crowdsec::Desired>>,
    ) -> Result<CrowdsecSync, BanError> {
        let now_ms = clock::unix_ms();
        let mut out = CrowdsecSync::default();
        let mut touched = Vec::new();
        for (net, want) in changes {
            let cur = self.bans.get(net).and_then(|h| {
                h.iter()
                    .find(|b| b.origin == BanOrigin::Crowdsec)
                    .map(|b| b.expires_unix_ms)
            });
            match (cur, want) {
                (None, None) => continue,
                (Some(_), None) => {
                    self.release(*net, BanOrigin::Crowdsec);
                    out.removed += 1;
                    if self.bans.contains_key(net) {
                        out.still_held += 1;
                    }
                    touched.push(*net);
                    continue;
                }
                (Some(Some(e)), Some(w)) if e.abs_diff(w.expires_unix_ms) < SAME_EXPIRY_MS => {
                    continue;
                }
                (Some(_), Some(_)) => out.updated += 1,
                (None, Some(_)) => out.added += 1,
            }
            let Some(w) = want else { continue };
            self.put(BanRecord {
                net: *net,
                origin: BanOrigin::Crowdsec,
                reason: Some(w.reason.clone()),
                created_unix_ms: now_ms,
                expires_unix_ms: Some(w.expires_unix_ms),
            });
            touched.push(*net);
        }
        if !out.changed() {
            return Ok(out);
        }
        let now_mono = clock::monotonic_ns();
        let mut writes = Vec::with_capacity(touched.len());
        for net in touched {
            match self.bans.get(&net).and_then(|h| combined(h, now_ms)) {
                Some(b) => writes.push((net, kernel_ban(b, now_ms, now_mono))),
                None => dp.remove_ban(net)?,
            }
        }
        dp.set_bans(&writes)?;
        self.save();
        Ok(out)
    }

    /// Removes expired bans from the maps and the journal. The kernel stops
    /// matching them by itself; this reclaims their slots.
    /// Returns the holds that went (a prefix held twice may show twice).
    pub fn sweep(&mut self, dp: &mut Dataplane) -> Result<Vec<BanRecord>, BanError> {
        let before = self.list().count();
        let gone = self.drop_expired(dp, clock::unix_ms())?;
        if !gone.is_empty() || self.dirty || self.list().count() != before {
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

    /// Forgets holds expired at `now_ms`; a prefix left with no holder
    /// leaves the maps. Returns the expired holds.
    fn drop_expired(
        &mut self,
        dp: &mut Dataplane,
        now_ms: u64,
    ) -> Result<Vec<BanRecord>, BanError> {
        let mut expired = Vec::new();
        let mut empty = Vec::new();
        for (net, holders) in &mut self.bans {
            let (gone, kept): (Vec<BanRecord>, Vec<BanRecord>) = std::mem::take(holders)
                .into_iter()
                .partition(|b| b.expired(now_ms));
            *holders = kept;
            expired.extend(gone);
            if holders.is_empty() {
                empty.push(*net);
            }
        }
        for net in &empty {
            self.bans.remove(net);
            dp.remove_ban(*net)?;
        }
        Ok(expired)
    }

    /// Every v6 prefix banned, for re-placing after `ipv6_prefix` changed:
    /// exact v6 bans are keyed at that prefix.
    pub fn v6_bans(&self) -> Vec<Cidr> {
        self.bans.keys().filter(|n| !n.is_v4()).copied().collect()
    }

    /// Writes the kernel entry of a known ban again (after a re-placement).
    pub fn enforce(&self, dp: &mut Dataplane, net: Cidr) -> Result<(), BanError> {
        self.enforce_net(dp, net)
    }

    /// The narrowest unexpired ban that covers `addr`, as the kernel
    /// applies it (its longest-lasting holder): a v6 ban at least
    /// `ipv6_prefix` long covers that whole prefix, because that is what
    /// the exact map is keyed by.
    pub fn covering(&self, addr: std::net::IpAddr, ipv6_prefix: u8) -> Option<&BanRecord> {
        let now = clock::unix_ms();
        self.bans
            .iter()
            .filter(|(net, _)| enforced_net(**net, ipv6_prefix).contains(&Cidr::host(addr)))
            .filter_map(|(_, h)| combined(h, now))
            .max_by_key(|b| b.net.prefix_len())
    }

    /// Every hold, prefix by prefix (a prefix held by two origins shows
    /// twice).
    pub fn list(&self) -> impl Iterator<Item = &BanRecord> {
        self.bans.values().flatten()
    }

    /// The longest-lasting hold on exactly `net`.
    pub fn get(&self, net: &Cidr) -> Option<&BanRecord> {
        self.bans
            .get(net)
            .and_then(|h| combined(h, clock::unix_ms()))
    }

    /// Prefixes banned.
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Writes the journal; a failure marks it dirty and is reported.
    fn save(&mut self) {
        // Borrowed, not cloned: with 100k CrowdSec decisions the journal is
        // written after every change, and copying it first doubled the cost.
        #[derive(Serialize)]
        struct JournalRef<'a> {
            version: u32,
            bans: Vec<&'a BanRecord>,
        }
        let j = JournalRef {
            version: 1,
            bans: self.list().collect(),
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
