//! Bans: the kernel maps enforce them, the journal in `state_dir` remembers
//! them across reboots (when the pins are gone), with wall-clock expiries.
//!
//! A prefix can be held by several origins at once (a manual ban and a
//! CrowdSec decision on the same address): each origin keeps its own
//! record. Several prefixes can share one kernel entry, too: the kernel
//! keys every IPv6 ban of `ipv6_prefix` bits or more at that prefix (a
//! /128 and the /64 around it are one entry; see
//! [`shield_common::maps::ban_slot`]). Each kernel entry is always the
//! union of every hold on every prefix that maps to it, lasting as long as
//! the longest: one ban ending or lifted never lifts or shortens another.
//!
//! Autobans come from floods, whose sources can be spoofed, so they may
//! fill only [`AUTOBAN_SHARE`] of a ban map: the rest stays free for manual
//! and CrowdSec bans (docs/SECURITY.md, "Bans").

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use shield_common::maps::{
    BAN_FOREVER, BAN_ORIGIN_AUTOBAN, BAN_ORIGIN_CROWDSEC, BAN_ORIGIN_FEED, BAN_ORIGIN_MANUAL, Ban,
    BanMap, GlobalConfig,
};

use crate::{
    clock,
    dataplane::{Dataplane, DataplaneError, ban_slot_of},
    net::Cidr,
    statefile::{self, StateFileError},
};

use super::persist::{PendingWrite, StateWrites};

pub const JOURNAL_FILE: &str = "bans.json";

pub use crate::control::protocol::BanOrigin;

/// The kernel's byte for each origin (`shield_common::maps::Ban`).
impl BanOrigin {
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
    /// An autoban that would need a new entry in a ban map whose autoban
    /// share is used up.
    #[error(
        "{map} holds {entries} bans of its {capacity}; autobans may fill {limit}, the rest is kept for manual and CrowdSec bans"
    )]
    AutobanShare {
        map: &'static str,
        entries: u64,
        capacity: u64,
        limit: u64,
    },
}

/// The part of each ban map autobans may fill: half. A flood of spoofed
/// sources can bring as many autobans as it likes (with `[autoban]
/// unverified = true`); the other half stays free for the bans an operator
/// or CrowdSec makes, which a flood must never lock out. Half of the
/// exact maps (131,072 entries each at the default size) still holds the
/// largest CrowdSec decision sets seen (about 100k).
pub const AUTOBAN_SHARE: (u64, u64) = (1, 2);

/// The entries autobans may fill in a map of `capacity`.
pub fn autoban_limit(capacity: u64) -> u64 {
    capacity * AUTOBAN_SHARE.0 / AUTOBAN_SHARE.1
}

/// What [`BanBook::add_many`] did with each record.
#[derive(Debug, Default)]
pub struct Added {
    /// In the book and the maps.
    pub added: Vec<BanRecord>,
    /// Not taken: neither in the book nor in the maps.
    pub refused: Vec<(BanRecord, BanError)>,
}

/// What [`BanBook::restore`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub from_journal: usize,
    pub expired: usize,
    pub adopted_from_maps: usize,
}

/// What [`BanBook::crowdsec_changes`] changed.
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
    /// Prefixes CrowdSec wants banned that the maps refused (full): not
    /// in the book, to be tried again.
    pub refused: usize,
}

impl CrowdsecSync {
    pub fn changed(&self) -> bool {
        self.added + self.updated + self.removed > 0
    }

    /// Adds what a later step of the same diff changed.
    pub fn absorb(&mut self, step: CrowdsecSync) {
        self.added += step.added;
        self.updated += step.updated;
        self.removed += step.removed;
        self.still_held += step.still_held;
        self.refused += step.refused;
    }
}

/// A CrowdSec expiry that moved by less than this is the same decision seen
/// again (a resync recomputes "now + remaining" a few ms later); rewriting
/// it would only churn the maps and the journal.
const SAME_EXPIRY_MS: u64 = 2_000;

/// What a kernel entry must say: the longest-lasting unexpired hold among
/// `holds` (`None` when none is left).
fn combined<'a>(
    holds: impl IntoIterator<Item = &'a BanRecord>,
    now_ms: u64,
) -> Option<&'a BanRecord> {
    holds
        .into_iter()
        .filter(|b| !b.expired(now_ms))
        .max_by_key(|b| b.expires_unix_ms.unwrap_or(u64::MAX))
}

/// Which kernel entries the book's prefixes occupy, under one
/// `ipv6_prefix`: each entry's key with how many prefixes map to it, and
/// the entries per map. Kept with every change to the book, so a full map
/// is known without walking it.
#[derive(Debug)]
struct Occupancy {
    ipv6_prefix: u8,
    refs: HashMap<Cidr, u32>,
    per_map: [u64; 4],
}

impl Occupancy {
    fn new<'a>(ipv6_prefix: u8, nets: impl Iterator<Item = &'a Cidr>) -> Occupancy {
        let mut o = Occupancy {
            ipv6_prefix,
            refs: HashMap::new(),
            per_map: [0; 4],
        };
        for n in nets {
            o.add(*n);
        }
        o
    }

    fn key(&self, net: Cidr) -> Cidr {
        enforced_net(net, self.ipv6_prefix)
    }

    fn map(&self, key: Cidr) -> BanMap {
        ban_slot_of(key, self.ipv6_prefix.into()).map
    }

    fn holds(&self, key: &Cidr) -> bool {
        self.refs.contains_key(key)
    }

    /// A prefix came into the book.
    fn add(&mut self, net: Cidr) {
        let key = self.key(net);
        let map = self.map(key);
        let n = self.refs.entry(key).or_insert(0);
        if *n == 0 {
            self.per_map[map.index()] += 1;
        }
        *n += 1;
    }

    /// A prefix left the book.
    fn remove(&mut self, net: Cidr) {
        let key = self.key(net);
        let map = self.map(key);
        if let Some(n) = self.refs.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&key);
                self.per_map[map.index()] -= 1;
            }
        }
    }
}

/// The agent's view of every ban.
#[derive(Debug)]
pub struct BanBook {
    path: PathBuf,
    /// Each prefix's holders: at most one record per origin, never empty.
    bans: BTreeMap<Cidr, Vec<BanRecord>>,
    /// The journal is behind `bans`: a change not yet taken by
    /// [`BanBook::take_journal`], or a write that failed.
    dirty: bool,
    /// The journal's last write failed.
    failed: bool,
    writes: Arc<StateWrites>,
    occupied: Occupancy,
    /// Holds per origin, kept with `bans` by `put`, `release` and
    /// `drop_expired`: `status` and the sweep count without walking a
    /// book of 100k bans (docs/BENCHMARKS.md, `control.status_p99_ms`).
    held: HashMap<BanOrigin, usize>,
    /// No hold expires before this (Unix ms; a lower bound, lowered by
    /// `put`, made exact by each sweep): a sweep before it has nothing to
    /// do and skips the walk.
    next_expiry_ms: u64,
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
            failed: false,
            writes,
            // Until the first call with the maps says otherwise.
            occupied: Occupancy::new(
                GlobalConfig::default().ipv6_prefix as u8,
                std::iter::empty(),
            ),
            held: HashMap::new(),
            next_expiry_ms: u64::MAX,
        };
        for b in journal.map(|j| j.bans).unwrap_or_default() {
            book.put(b);
        }
        Ok(book)
    }

    /// Follows the kernel's `ipv6_prefix`: when it changed, which entry
    /// each v6 prefix occupies changed with it.
    fn follow_prefix(&mut self, dp: &Dataplane) -> Result<(), BanError> {
        let prefix = u8::try_from(dp.config()?.ipv6_prefix.min(128)).unwrap_or(128);
        if prefix != self.occupied.ipv6_prefix {
            self.occupied = Occupancy::new(prefix, self.bans.keys());
        }
        Ok(())
    }

    /// Sets `rec` as its origin's hold on its prefix.
    fn put(&mut self, rec: BanRecord) -> Option<BanRecord> {
        let net = rec.net;
        if let Some(e) = rec.expires_unix_ms {
            self.next_expiry_ms = self.next_expiry_ms.min(e);
        }
        let holders = match self.bans.entry(net) {
            std::collections::btree_map::Entry::Vacant(v) => {
                self.occupied.add(net);
                v.insert(Vec::new())
            }
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
        };
        match holders.iter_mut().find(|h| h.origin == rec.origin) {
            Some(h) => Some(std::mem::replace(h, rec)),
            None => {
                *self.held.entry(rec.origin).or_default() += 1;
                holders.push(rec);
                None
            }
        }
    }

    /// Drops `origin`'s hold on `net` from the book only.
    fn release(&mut self, net: Cidr, origin: BanOrigin) -> Option<BanRecord> {
        let holders = self.bans.get_mut(&net)?;
        let i = holders.iter().position(|h| h.origin == origin)?;
        let old = holders.remove(i);
        if let Some(n) = self.held.get_mut(&origin) {
            *n = n.saturating_sub(1);
        }
        if holders.is_empty() {
            self.bans.remove(&net);
            self.occupied.remove(net);
        }
        Some(old)
    }

    /// Puts `origin`'s hold on `net` back as it was (`prev`) after a write
    /// the maps refused.
    fn restore_hold(&mut self, net: Cidr, origin: BanOrigin, prev: Option<BanRecord>) {
        match prev {
            Some(p) => {
                self.put(p);
            }
            None => {
                self.release(net, origin);
            }
        }
    }

    /// Every hold on every prefix whose ban lives in the kernel entry `key`
    /// (under `ipv6_prefix`).
    fn sharing(&self, key: Cidr, ipv6_prefix: u8) -> impl Iterator<Item = &BanRecord> {
        // Only an exact v6 entry is shared, by prefixes inside it, which
        // sort between its own network and its last address as a host.
        let last = if ban_slot_of(key, ipv6_prefix.into()).map == BanMap::ExactV6 {
            Cidr::host(key.last())
        } else {
            key
        };
        self.bans
            .range(key..=last)
            .filter(move |(n, _)| enforced_net(**n, ipv6_prefix) == key)
            .flat_map(|(_, h)| h)
    }

    /// Writes (or removes) the kernel entry `key` from every hold that
    /// shares it.
    fn enforce_key(&self, dp: &mut Dataplane, key: Cidr) -> Result<(), BanError> {
        let now_ms = clock::unix_ms();
        match combined(self.sharing(key, self.occupied.ipv6_prefix), now_ms) {
            Some(b) => dp.set_ban(key, &kernel_ban(b, now_ms, clock::monotonic_ns()))?,
            None => dp.remove_ban(key)?,
        }
        Ok(())
    }

    /// Writes (or removes) the kernel entry `net`'s ban lives in.
    fn enforce_net(&self, dp: &mut Dataplane, net: Cidr) -> Result<(), BanError> {
        self.enforce_key(dp, self.occupied.key(net))
    }

    /// Makes the maps and the journal agree: journal bans still running are
    /// (re)written with their remaining time, expired ones dropped, and bans
    /// found only in adopted maps are taken into the journal.
    pub fn restore(&mut self, dp: &mut Dataplane) -> Result<Restored, BanError> {
        self.follow_prefix(dp)?;
        let now_ms = clock::unix_ms();
        let now_mono = clock::monotonic_ns();
        let mut r = Restored::default();
        for (net, ban) in dp.ban_entries()? {
            if !ban.active(now_mono) {
                dp.remove_ban(net)?;
                continue;
            }
            // An entry a prefix in the book maps to is that prefix's (a
            // /128's ban shows as its /64), not another ban.
            if !self.occupied.holds(&net) {
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
        let keys: Vec<Cidr> = self.occupied.refs.keys().copied().collect();
        for key in keys {
            self.enforce_key(dp, key)?;
        }
        r.from_journal = self.bans.len() - r.adopted_from_maps;
        self.note_change();
        Ok(r)
    }

    /// Whether `rec` may take a new entry: an autoban may not once its map
    /// holds its [`AUTOBAN_SHARE`]. One on an entry already there costs
    /// nothing. `capacities` caches the maps' sizes across a batch.
    fn admit(
        &self,
        dp: &Dataplane,
        rec: &BanRecord,
        capacities: &mut [Option<u64>; 4],
    ) -> Result<(), BanError> {
        let key = self.occupied.key(rec.net);
        if rec.origin != BanOrigin::Autoban || self.occupied.holds(&key) {
            return Ok(());
        }
        let map = self.occupied.map(key);
        let capacity = match capacities[map.index()] {
            Some(c) => c,
            None => {
                let c = u64::from(dp.capacity(map.name())?);
                capacities[map.index()] = Some(c);
                c
            }
        };
        let limit = autoban_limit(capacity);
        let entries = self.occupied.per_map[map.index()];
        if entries >= limit {
            return Err(BanError::AutobanShare {
                map: map.name(),
                entries,
                capacity,
                limit,
            });
        }
        Ok(())
    }

    /// Enforces, then journals. A crash in between leaves the ban in the
    /// pinned maps, where the next start finds and journals it. A journal
    /// that cannot be written (a full disk) does not stop the ban: it is
    /// reported, and the next write catches up. Replaces the same origin's
    /// earlier hold on the prefix; other origins' stay. A ban the maps
    /// refuse (full) is not taken into the book.
    pub fn add(&mut self, dp: &mut Dataplane, rec: BanRecord) -> Result<(), BanError> {
        self.follow_prefix(dp)?;
        self.add_one(dp, rec, &mut [None; 4])?;
        self.note_change();
        Ok(())
    }

    fn add_one(
        &mut self,
        dp: &mut Dataplane,
        rec: BanRecord,
        capacities: &mut [Option<u64>; 4],
    ) -> Result<(), BanError> {
        self.admit(dp, &rec, capacities)?;
        let (net, origin) = (rec.net, rec.origin);
        let prev = self.put(rec);
        if let Err(e) = self.enforce_net(dp, net) {
            // A refused write leaves the entry as it was.
            self.restore_hold(net, origin, prev);
            return Err(e);
        }
        Ok(())
    }

    /// Several bans with one journal write: a distributed flood can bring
    /// thousands of autobans in one tick, and rewriting the journal for
    /// each would cost quadratic I/O. Enforced first, as with `add`. Each
    /// record is taken or refused on its own (autoban share used up, map
    /// full); a refused one leaves no trace in the book or the maps.
    pub fn add_many(&mut self, dp: &mut Dataplane, recs: &[BanRecord]) -> Result<Added, BanError> {
        self.follow_prefix(dp)?;
        let mut out = Added::default();
        let mut capacities = [None; 4];
        for rec in recs {
            match self.add_one(dp, rec.clone(), &mut capacities) {
                Ok(()) => out.added.push(rec.clone()),
                Err(e) => out.refused.push((rec.clone(), e)),
            }
        }
        if !out.added.is_empty() {
            self.note_change();
        }
        Ok(out)
    }

    /// Lifts the local holds (manual, autoban, feed) on a ban; `Ok(false)`
    /// when there were none. A CrowdSec decision on the same prefix stays:
    /// it is lifted where it was made (`cscli decisions delete`), or it
    /// would come back at the next resync. Bans sharing its kernel entry
    /// keep it.
    pub fn remove(&mut self, dp: &mut Dataplane, net: Cidr) -> Result<bool, BanError> {
        self.follow_prefix(dp)?;
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
        let key = self.occupied.key(net);
        for o in &local {
            self.release(net, *o);
        }
        self.enforce_key(dp, key)?;
        self.note_change();
        Ok(true)
    }

    /// Whether a CrowdSec decision holds `net`.
    pub fn crowdsec_holds(&self, net: &Cidr) -> bool {
        self.bans
            .get(net)
            .is_some_and(|h| h.iter().any(|b| b.origin == BanOrigin::Crowdsec))
    }

    /// What makes CrowdSec's holds exactly `desired`: every prefix it
    /// wants, with its expiry, and every prefix it holds and no longer
    /// wants (`None`), for [`crowdsec_changes`](Self::crowdsec_changes) to
    /// write in one call or in steps. A released prefix that another origin
    /// holds stays banned; a prefix whose expiry did not move is skipped
    /// there, so a resync rewrites only what changed.
    pub fn crowdsec_diff(
        &self,
        desired: BTreeMap<Cidr, crate::crowdsec::Desired>,
    ) -> Vec<(Cidr, Option<crate::crowdsec::Desired>)> {
        let mut changes: BTreeMap<Cidr, Option<crate::crowdsec::Desired>> = self
            .bans
            .iter()
            .filter(|(n, h)| {
                !desired.contains_key(n) && h.iter().any(|b| b.origin == BanOrigin::Crowdsec)
            })
            .map(|(n, _)| (*n, None))
            .collect();
        changes.extend(desired.into_iter().map(|(n, d)| (n, Some(d))));
        changes.into_iter().collect()
    }

    /// Sets CrowdSec's hold on each listed prefix (`None`: released) and
    /// leaves every other prefix alone: what a delta needs. Prefixes whose
    /// new entry a full map refuses keep their previous state in the book
    /// (counted in [`CrowdsecSync::refused`]).
    pub fn crowdsec_changes<'c>(
        &mut self,
        dp: &mut Dataplane,
        changes: impl IntoIterator<Item = (&'c Cidr, &'c Option<crate::crowdsec::Desired>)>,
    ) -> Result<CrowdsecSync, BanError> {
        #[derive(Clone, Copy)]
        enum Change {
            Added,
            Updated,
            Removed,
        }
        self.follow_prefix(dp)?;
        let now_ms = clock::unix_ms();
        let mut out = CrowdsecSync::default();
        // Each touched prefix, with CrowdSec's hold before, to put back if
        // the maps refuse it.
        let mut touched: Vec<(Cidr, Option<BanRecord>, Change)> = Vec::new();
        for (net, want) in changes {
            let cur = self.bans.get(net).and_then(|h| {
                h.iter()
                    .find(|b| b.origin == BanOrigin::Crowdsec)
                    .map(|b| b.expires_unix_ms)
            });
            let change = match (cur, want) {
                (None, None) => continue,
                (Some(_), None) => {
                    let prev = self.release(*net, BanOrigin::Crowdsec);
                    touched.push((*net, prev, Change::Removed));
                    continue;
                }
                (Some(Some(e)), Some(w)) if e.abs_diff(w.expires_unix_ms) < SAME_EXPIRY_MS => {
                    continue;
                }
                (Some(_), Some(_)) => Change::Updated,
                (None, Some(_)) => Change::Added,
            };
            let Some(w) = want else { continue };
            let prev = self.put(BanRecord {
                net: *net,
                origin: BanOrigin::Crowdsec,
                reason: Some(w.reason.clone()),
                created_unix_ms: now_ms,
                expires_unix_ms: Some(w.expires_unix_ms),
            });
            touched.push((*net, prev, change));
        }
        if touched.is_empty() {
            return Ok(out);
        }
        let now_mono = clock::monotonic_ns();
        let prefix = self.occupied.ipv6_prefix;
        let keys: BTreeSet<Cidr> = touched
            .iter()
            .map(|(n, ..)| self.occupied.key(*n))
            .collect();
        let (mut writes, mut gone) = (Vec::with_capacity(keys.len()), Vec::new());
        for key in keys {
            match combined(self.sharing(key, prefix), now_ms) {
                Some(b) => writes.push((key, kernel_ban(b, now_ms, now_mono))),
                None => gone.push(key),
            }
        }
        let mut refused = BTreeSet::new();
        if dp.set_bans(&writes).is_err() {
            // A batch stops at the first entry that does not fit (a full
            // map). Which ones the maps lack, one by one: an entry already
            // there is rewritten in place, which a full map allows.
            for (key, ban) in &writes {
                if dp.set_ban(*key, ban).is_err() {
                    refused.insert(*key);
                }
            }
        }
        for (net, prev, change) in touched {
            if refused.contains(&self.occupied.key(net)) {
                self.restore_hold(net, BanOrigin::Crowdsec, prev);
                out.refused += 1;
                continue;
            }
            match change {
                Change::Added => out.added += 1,
                Change::Updated => out.updated += 1,
                Change::Removed => {
                    out.removed += 1;
                    if self.bans.contains_key(&net) {
                        out.still_held += 1;
                    }
                }
            }
        }
        for key in gone {
            dp.remove_ban(key)?;
        }
        self.note_change();
        Ok(out)
    }

    /// Removes expired bans from the maps and the journal. The kernel stops
    /// matching them by itself; this reclaims their slots.
    /// Returns the holds that went (a prefix held twice may show twice).
    pub fn sweep(&mut self, dp: &mut Dataplane) -> Result<Vec<BanRecord>, BanError> {
        self.follow_prefix(dp)?;
        let now_ms = clock::unix_ms();
        if now_ms < self.next_expiry_ms {
            return Ok(Vec::new());
        }
        let gone = self.drop_expired(dp, now_ms)?;
        if !gone.is_empty() {
            self.note_change();
        }
        Ok(gone)
    }

    /// Why the journal is behind the bans in force, when its last write
    /// failed.
    pub fn unsaved(&self) -> Option<String> {
        if !self.failed {
            return None;
        }
        self.writes
            .last_error()
            .map(|(e, _)| e)
            .or_else(|| Some(format!("{} is not up to date", self.path.display())))
    }

    /// Forgets holds expired at `now_ms`; the kernel entry of a prefix left
    /// with no holder is written again from the bans that still share it,
    /// or removed when none does. Returns the expired holds.
    fn drop_expired(
        &mut self,
        dp: &mut Dataplane,
        now_ms: u64,
    ) -> Result<Vec<BanRecord>, BanError> {
        let mut expired = Vec::new();
        let mut empty = Vec::new();
        let mut next = u64::MAX;
        for (net, holders) in &mut self.bans {
            if !holders.iter().any(|b| b.expired(now_ms)) {
                let soonest = holders.iter().filter_map(|b| b.expires_unix_ms).min();
                next = next.min(soonest.unwrap_or(u64::MAX));
                continue;
            }
            let (gone, kept): (Vec<BanRecord>, Vec<BanRecord>) = std::mem::take(holders)
                .into_iter()
                .partition(|b| b.expired(now_ms));
            next = next.min(
                kept.iter()
                    .filter_map(|b| b.expires_unix_ms)
                    .min()
                    .unwrap_or(u64::MAX),
            );
            *holders = kept;
            for b in &gone {
                if let Some(n) = self.held.get_mut(&b.origin) {
                    *n = n.saturating_sub(1);
                }
            }
            expired.extend(gone);
            if holders.is_empty() {
                empty.push(*net);
            }
        }
        self.next_expiry_ms = next;
        let mut keys = BTreeSet::new();
        for net in empty {
            self.bans.remove(&net);
            self.occupied.remove(net);
            keys.insert(self.occupied.key(net));
        }
        for key in keys {
            self.enforce_key(dp, key)?;
        }
        Ok(expired)
    }

    /// After `ipv6_prefix` changed: writes every exact v6 entry again under
    /// the new prefix and returns their keys, so that the caller can remove
    /// the entries keyed at the old one.
    pub fn rekey_v6(&mut self, dp: &mut Dataplane) -> Result<BTreeSet<[u8; 16]>, BanError> {
        self.follow_prefix(dp)?;
        let keys: Vec<Cidr> = self
            .occupied
            .refs
            .keys()
            .filter(|k| !k.is_v4())
            .copied()
            .collect();
        let mut exact = BTreeSet::new();
        for key in keys {
            self.enforce_key(dp, key)?;
            if self.occupied.map(key) == BanMap::ExactV6
                && let Some(o) = key.v6_octets()
            {
                exact.insert(o);
            }
        }
        Ok(exact)
    }

    /// The ban the kernel applies to `addr`, as its lookups find it: the
    /// exact entry (v4 host, or v6 at `ipv6_prefix`) with the longest-lasting
    /// of the bans sharing it, else the narrowest unexpired CIDR ban.
    pub fn covering(&self, addr: std::net::IpAddr, ipv6_prefix: u8) -> Option<&BanRecord> {
        let now = clock::unix_ms();
        let exact = enforced_net(Cidr::host(addr), ipv6_prefix);
        combined(self.sharing(exact, ipv6_prefix), now).or_else(|| {
            self.bans
                .iter()
                .filter(|(net, _)| {
                    let slot = ban_slot_of(**net, ipv6_prefix.into());
                    matches!(slot.map, BanMap::TrieV4 | BanMap::TrieV6)
                        && net.contains(&Cidr::host(addr))
                })
                .filter_map(|(_, h)| combined(h, now))
                .max_by_key(|b| b.net.prefix_len())
        })
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

    /// Holds `origin` has in the book, expired ones not yet swept included.
    pub fn held_by(&self, origin: BanOrigin) -> usize {
        self.held.get(&origin).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Kernel entries the bans occupy in each map (by
    /// [`BanMap::index`]): what `shield_map_entries` reports.
    pub fn map_entries(&self) -> [u64; 4] {
        self.occupied.per_map
    }

    /// The journal is behind the book until the next write takes it.
    fn note_change(&mut self) {
        self.dirty = true;
    }

    /// The journal as the book stands, to write outside the agent's lock
    /// (a copy: serialising 100k records takes longer than copying them);
    /// `None` when it is up to date. A write that fails must be reported
    /// through [`BanBook::journal_written`], so that it is taken again.
    pub fn take_journal(&mut self) -> Option<PendingWrite> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let journal = Journal {
            version: 1,
            bans: self.list().cloned().collect(),
        };
        let path = self.path.clone();
        Some(PendingWrite::new(JOURNAL_FILE, move || {
            statefile::write(&path, &journal)
        }))
    }

    /// Whether the journal is behind the book.
    pub fn journal_behind(&self) -> bool {
        self.dirty
    }

    /// The outcome of writing what [`BanBook::take_journal`] took.
    pub fn journal_written(&mut self, ok: bool) {
        self.failed = !ok;
        if !ok {
            self.dirty = true;
        }
    }

    /// Writes the journal now, on this thread (start-up, tests); a failure
    /// is reported and leaves it to the next write.
    pub fn write_journal_now(&mut self) {
        if let Some(w) = self.take_journal() {
            let ok = self.writes.outcome(w.file, w.run());
            self.journal_written(ok);
        }
    }
}

/// The network whose kernel entry a ban on `net` is: `net` itself, or for
/// a v6 ban at least `ipv6_prefix` long, the `ipv6_prefix` network around
/// it ([`shield_common::maps::ban_slot`]).
pub fn enforced_net(net: Cidr, ipv6_prefix: u8) -> Cidr {
    Cidr::truncating(net.addr(), ban_slot_of(net, ipv6_prefix.into()).len)
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
