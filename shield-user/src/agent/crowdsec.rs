//! The agent as a CrowdSec bouncer and machine: a poll loop that mirrors
//! the LAPI's decisions into the ban maps, and a push loop that sends the
//! agent's autobans up as alerts.
//!
//! Network calls run on blocking threads without the agent's lock; a
//! page is taken into the decision book under it, and its diff against
//! the ban maps is written in steps, one hold each ([`write_holds`]).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use super::{
    Agent,
    bans::{BanError, BanOrigin, CrowdsecSync},
    lock,
};
use crate::{
    clock,
    config::CrowdsecConfig,
    control::protocol::CrowdsecStatus,
    crowdsec::{
        Alert, Batch, DecisionBook, Desired, Filter, Lapi, LapiError, SPOOL_FILE, Spool,
        SpoolSnapshot, StreamPage,
    },
    metrics::CrowdsecMetrics,
    net::Cidr,
    statefile::StateFileError,
};

/// A full resync this often even while deltas work: cheap insurance
/// against a delta the LAPI never sent (its stream is keyed by the
/// bouncer's last-pull time).
const RESYNC_EVERY: Duration = Duration::from_secs(600);
/// The longest wait between attempts while the LAPI is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The spool is written at most this often: a flood's autobans come tick
/// by tick, and cost one write per tick, not one each.
const SPOOL_WRITE_EVERY: Duration = Duration::from_secs(1);
/// Pushes wait this long after a first failure, doubling up to
/// [`MAX_PUSH_BACKOFF`]: an alert is worth most while its ban is fresh.
const PUSH_RETRY: Duration = Duration::from_secs(1);
const MAX_PUSH_BACKOFF: Duration = Duration::from_secs(10);
/// CrowdSec's holds are written this many prefixes per hold of the lock
/// ([`write_holds`]): each costs a few microseconds of book and map work
/// in a release build (10 ms per 4,096 measured under load), so a hold
/// lasts a few milliseconds.
const STEP_PREFIXES: usize = 1024;

/// What the agent knows about its LAPI link.
#[derive(Debug)]
pub struct CrowdsecState {
    pub book: DecisionBook,
    /// The next poll asks for everything (`startup=true`).
    pub need_startup: bool,
    /// Some decisions did not fit the ban maps: the next poll diffs every
    /// decision held against the bans again, even with nothing new.
    pub unenforced: bool,
    pub last_poll_success_unix: Option<u64>,
    pub last_push_success_unix: Option<u64>,
    last_startup_mono_ns: u64,
    pub errors_total: u64,
    pub alerts_pushed_total: u64,
    pub rejected_total: u64,
    pub last_error: Option<String>,
    /// Autobans waiting for the LAPI; `None` when the state dir has none
    /// readable (reported at start).
    pub spool: Option<Spool>,
    /// Wakes the push loop when an autoban is spooled.
    pub wake: Arc<Notify>,
    /// Wakes the spool's writer when the spool changed.
    pub flush: Arc<Notify>,
    /// The spool's file, written without the agent's lock.
    pub disk: Arc<SpoolDisk>,
}

/// The spool's file: one write at a time, and the newest snapshot wins
/// (a write that comes late with an older one is skipped).
#[derive(Debug, Default)]
pub struct SpoolDisk {
    /// The generation of the snapshot on disk.
    written: Mutex<u64>,
    /// Writes done (successful or not), for the metrics.
    writes: AtomicU64,
}

impl SpoolDisk {
    /// Writes `snap` unless a newer one is on disk already. Blocking.
    fn write(&self, snap: &SpoolSnapshot) -> Result<(), StateFileError> {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *written >= snap.generation {
            return Ok(());
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        snap.write()?;
        *written = snap.generation;
        Ok(())
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

impl Default for CrowdsecState {
    fn default() -> CrowdsecState {
        CrowdsecState {
            book: DecisionBook::default(),
            need_startup: true,
            unenforced: false,
            last_poll_success_unix: None,
            last_push_success_unix: None,
            last_startup_mono_ns: 0,
            errors_total: 0,
            alerts_pushed_total: 0,
            rejected_total: 0,
            last_error: None,
            spool: None,
            wake: Arc::new(Notify::new()),
            flush: Arc::new(Notify::new()),
            disk: Arc::default(),
        }
    }
}

fn filter(cfg: &CrowdsecConfig) -> Filter {
    Filter {
        scopes: cfg.scopes.clone(),
        types: cfg.types.clone(),
        origins: cfg.origins.clone(),
        max_addresses: cfg.max_addresses,
    }
}

impl Agent {
    pub fn crowdsec(&self) -> &CrowdsecState {
        &self.crowdsec
    }

    pub(super) fn crowdsec_metrics(&self) -> Option<CrowdsecMetrics> {
        self.cfg.crowdsec.as_ref()?;
        let cs = &self.crowdsec;
        Some(CrowdsecMetrics {
            decisions: cs.book.by_origin().into_iter().collect(),
            last_poll_success_unix: cs.last_poll_success_unix,
            errors_total: cs.errors_total,
            alerts_pushed_total: cs.alerts_pushed_total,
            alerts_dropped_total: cs.spool.as_ref().map_or(0, |s| s.overflowed),
            spool_writes_total: cs.disk.writes(),
        })
    }

    /// The LAPI link for `shieldctl status`.
    pub(super) fn crowdsec_status(&self) -> CrowdsecStatus {
        let Some(cfg) = self.cfg.crowdsec.as_ref() else {
            return CrowdsecStatus::default();
        };
        let cs = &self.crowdsec;
        CrowdsecStatus {
            configured: true,
            lapi_url: Some(crate::redact::redact_url(&cfg.lapi_url)),
            pushes: cfg.machine_id.is_some(),
            last_pull_unix: cs.last_poll_success_unix,
            last_push_unix: cs.last_push_success_unix,
            last_error: cs.last_error.clone(),
            errors_total: cs.errors_total,
            decisions: cs.book.len() as u64,
            bans: self.bans.held_by(BanOrigin::Crowdsec) as u64,
            alerts_pushed_total: cs.alerts_pushed_total,
            alerts_spooled: cs.spool.as_ref().map_or(0, |s| s.len() as u64),
        }
    }

    /// Queues a tick's autobans for the fleet, when a machine login is
    /// configured. The spool's file is written later, off the lock
    /// ([`spool_write_loop`]).
    pub(super) fn spool_autobans(&mut self, alerts: Vec<Alert>) {
        let pushes = self
            .cfg
            .crowdsec
            .as_ref()
            .is_some_and(|c| c.machine_id.is_some());
        let Some(spool) = self.crowdsec.spool.as_mut().filter(|_| pushes) else {
            return;
        };
        if alerts.is_empty() {
            return;
        }
        let dropped: usize = alerts.into_iter().map(|a| spool.push(a)).sum();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                dropped_total = spool.overflowed,
                spooled = spool.len(),
                "CrowdSec alert spool full ({} alerts): the oldest unpushed autobans were dropped, not pushed; their bans stay in force here",
                crate::crowdsec::MAX_SPOOLED
            );
        }
        self.crowdsec.wake.notify_one();
        self.crowdsec.flush.notify_one();
    }

    /// Takes one stream page into the decision book and returns the diff
    /// it makes against CrowdSec's holds in the ban maps, to be written by
    /// [`write_holds`]; `None` when the page changes nothing.
    fn crowdsec_take_page(&mut self, intake: Intake, cfg: &CrowdsecConfig) -> Option<PageApply> {
        let now_ms = clock::unix_ms();
        let started = std::time::Instant::now();
        let (received, deleted) = (intake.received, intake.deleted);
        let startup = matches!(intake.page, Taken::Startup { .. });
        let (out, startup_desired) = match intake.page {
            Taken::Startup { book, out, desired } => {
                self.crowdsec.book = book;
                (out, Some(desired))
            }
            Taken::Delta(page) => {
                let out = self.crowdsec.book.apply_page(
                    page.new,
                    page.deleted,
                    false,
                    &filter(cfg),
                    now_ms,
                );
                (out, None)
            }
        };
        self.crowdsec.rejected_total += out.rejected.len() as u64;
        // Refused decisions (malformed, too broad, past the address cap)
        // are counted in rejected_total; the first few are named.
        for r in out.rejected.iter().take(3) {
            tracing::warn!(
                id = r.id,
                value = r.value,
                why = r.why,
                "CrowdSec decision refused"
            );
        }
        let cs = &mut self.crowdsec;
        cs.need_startup = false;
        cs.last_poll_success_unix = Some(clock::unix_secs());
        if cs.last_error.take().is_some() {
            tracing::info!(
                url = crate::redact::redact_url(&cfg.lapi_url),
                "CrowdSec LAPI reachable again"
            );
        }
        if startup {
            cs.last_startup_mono_ns = clock::monotonic_ns();
        }
        let retry = std::mem::take(&mut self.crowdsec.unenforced);
        if !startup && !retry && out.added == 0 && out.deleted == 0 {
            return None;
        }
        // A startup page is diffed against everything CrowdSec holds, and
        // so is any page after decisions did not fit; a delta only against
        // the prefixes it touched.
        let changes = if let Some(desired) = startup_desired {
            self.bans.crowdsec_diff(desired)
        } else if retry {
            self.bans.crowdsec_diff(self.crowdsec.book.desired(now_ms))
        } else {
            self.crowdsec
                .book
                .desired_for(&out.touched, now_ms)
                .into_iter()
                .collect()
        };
        Some(PageApply {
            changes,
            startup,
            received,
            deleted,
            ignored: out.ignored,
            refused: out.rejected.len(),
            book_ms: started.elapsed().as_millis() as u64,
            started,
        })
    }

    /// Accounts for a page once [`write_holds`] wrote its diff.
    fn crowdsec_applied(&mut self, p: &PageApply, synced: Result<CrowdsecSync, BanError>) {
        match synced {
            Ok(s) => {
                self.tallies.bans.crowdsec += s.added as u64;
                if s.refused > 0 {
                    self.crowdsec.unenforced = true;
                    self.crowdsec.errors_total += 1;
                    tracing::warn!(
                        refused = s.refused,
                        "CrowdSec decisions not enforced: a ban map is full (see shield_map_entries); retried at every poll"
                    );
                }
                if s.changed() || p.startup {
                    tracing::info!(
                        startup = p.startup,
                        received = p.received,
                        deleted = p.deleted,
                        decisions = self.crowdsec.book.len(),
                        banned = s.added,
                        updated = s.updated,
                        lifted = s.removed - s.still_held,
                        kept_by_other_origin = s.still_held,
                        ignored = p.ignored,
                        refused = p.refused,
                        book_ms = p.book_ms,
                        apply_ms = p.started.elapsed().as_millis() as u64,
                        "CrowdSec decisions applied"
                    );
                }
            }
            Err(e) => {
                self.crowdsec.errors_total += 1;
                // The book and the maps may differ now: the next poll
                // starts over from everything.
                self.crowdsec.need_startup = true;
                tracing::error!(error = %e, "applying CrowdSec decisions failed");
            }
        }
    }

    fn crowdsec_failed(&mut self, what: &str, e: &LapiError) {
        let cs = &mut self.crowdsec;
        cs.errors_total += 1;
        let msg = e.to_string();
        // Once per distinct error, not once per poll: a LAPI down for an
        // hour would otherwise fill the journal.
        if cs.last_error.as_deref() != Some(msg.as_str()) {
            if e.is_auth() {
                tracing::error!(
                    "CrowdSec {what} failed: {msg}; decisions already applied stay until they expire, the local policy keeps running"
                );
            } else {
                tracing::warn!(
                    "CrowdSec {what} failed: {msg}; decisions already applied stay until they expire; retrying"
                );
            }
            cs.last_error = Some(msg);
        }
    }

    /// `[crowdsec]` went away on reload: the book is emptied, and the
    /// diff that releases every hold CrowdSec had is returned for
    /// [`write_holds`]; `None` when it held nothing.
    fn crowdsec_release_all(&mut self) -> Option<Vec<(Cidr, Option<Desired>)>> {
        if self.crowdsec.book.is_empty() && self.bans.held_by(BanOrigin::Crowdsec) == 0 {
            return None;
        }
        self.crowdsec.book = DecisionBook::default();
        self.crowdsec.need_startup = true;
        Some(self.bans.crowdsec_diff(std::collections::BTreeMap::new()))
    }
}

/// A stream page, ready to be taken into the agent's book.
struct Intake {
    page: Taken,
    received: usize,
    deleted: usize,
}

enum Taken {
    /// A startup page is the whole truth: its book and what that book
    /// wants banned, built on a blocking thread, to replace the agent's
    /// book in one move (100k decisions take a few hundred ms to parse and
    /// index; the lock is not held for them).
    Startup {
        book: DecisionBook,
        out: crate::crowdsec::PageOutcome,
        desired: std::collections::BTreeMap<Cidr, Desired>,
    },
    /// A delta changes the agent's book, under the lock (it is small).
    Delta(StreamPage),
}

/// Builds a startup page's book off the lock; a delta passes through.
/// `None` when the build failed (a bug, logged): nothing is taken.
async fn intake(page: StreamPage, startup: bool, cfg: &CrowdsecConfig) -> Option<Intake> {
    let (received, deleted) = (page.new.len(), page.deleted.len());
    if !startup {
        return Some(Intake {
            page: Taken::Delta(page),
            received,
            deleted,
        });
    }
    let f = filter(cfg);
    let build = move || {
        let now_ms = clock::unix_ms();
        let mut book = DecisionBook::default();
        let out = book.apply_page(page.new, page.deleted, true, &f, now_ms);
        let desired = book.desired(now_ms);
        Taken::Startup { book, out, desired }
    };
    match tokio::task::spawn_blocking(build).await {
        Ok(page) => Some(Intake {
            page,
            received,
            deleted,
        }),
        Err(e) => {
            tracing::error!(error = %e, "building the CrowdSec startup book failed");
            None
        }
    }
}

/// A page taken into the book: its diff against the ban maps, and what
/// the log line reports once it is written.
struct PageApply {
    changes: Vec<(Cidr, Option<Desired>)>,
    startup: bool,
    received: usize,
    deleted: usize,
    ignored: usize,
    refused: usize,
    book_ms: u64,
    started: std::time::Instant,
}

/// Writes a diff of CrowdSec's holds [`STEP_PREFIXES`] prefixes per hold
/// of the agent's lock, with a yield between, so a 100k-decision startup
/// page never keeps a control request, a scrape or the event loop waiting
/// for more than one step (docs/ARCHITECTURE.md, "Threading"). Each step
/// is a diff of its own against the bans as they are then: a prefix both
/// the old and the new decisions hold is never touched, so it is never
/// unbanned in between; another origin's ban made between steps is kept.
/// Only the poll loop writes CrowdSec's holds, so no two diffs interleave.
async fn write_holds(
    agent: &Mutex<Agent>,
    changes: &[(Cidr, Option<Desired>)],
) -> Result<CrowdsecSync, BanError> {
    let mut total = CrowdsecSync::default();
    for (i, step) in changes.chunks(STEP_PREFIXES).enumerate() {
        if i > 0 {
            tokio::task::yield_now().await;
        }
        let synced = {
            let mut a = lock(agent);
            let a = &mut *a;
            a.bans
                .crowdsec_changes(&mut a.dp, step.iter().map(|(n, d)| (n, d)))
        };
        total.absorb(synced?);
    }
    Ok(total)
}

/// `first × 2^(failures-1)`, at most `cap` (or `first`, if longer).
fn backoff(first: Duration, failures: u32, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(10);
    first.saturating_mul(1 << doublings).min(cap.max(first))
}

/// Builds a client for `cfg` on a blocking thread (it reads files).
async fn connect(cfg: &CrowdsecConfig) -> Result<Arc<Lapi>, LapiError> {
    let c = cfg.clone();
    tokio::task::spawn_blocking(move || Lapi::new(&c).map(Arc::new))
        .await
        .unwrap_or_else(|e| Err(LapiError::Credential(format!("client task failed: {e}"))))
}

/// Polls the decision stream for as long as the agent runs.
pub async fn poll_loop(agent: Arc<Mutex<Agent>>) {
    let mut current: Option<(CrowdsecConfig, Arc<Lapi>)> = None;
    let mut failures = 0u32;
    loop {
        let (cfg, resync_due, release) = {
            let mut a = lock(&agent);
            let cfg = a.cfg.crowdsec.clone();
            let release = if cfg.is_none() {
                a.crowdsec_release_all()
            } else {
                None
            };
            let due = clock::monotonic_ns().saturating_sub(a.crowdsec.last_startup_mono_ns)
                >= RESYNC_EVERY.as_nanos() as u64;
            (cfg, due, release)
        };
        if let Some(changes) = release {
            match write_holds(&agent, &changes).await {
                Ok(s) => tracing::info!(
                    lifted = s.removed - s.still_held,
                    kept_by_other_origin = s.still_held,
                    "[crowdsec] removed; its bans are lifted"
                ),
                Err(e) => tracing::error!(error = %e, "lifting CrowdSec bans failed"),
            }
        }
        let Some(cfg) = cfg else {
            current = None;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let lapi = match &current {
            Some((c, l)) if *c == cfg => l.clone(),
            _ => match connect(&cfg).await {
                Ok(l) => {
                    if current.is_some() {
                        lock(&agent).crowdsec.need_startup = true;
                    }
                    current = Some((cfg.clone(), l.clone()));
                    l
                }
                Err(e) => {
                    failures += 1;
                    lock(&agent).crowdsec_failed("setup", &e);
                    tokio::time::sleep(backoff(cfg.poll, failures, MAX_BACKOFF)).await;
                    continue;
                }
            },
        };
        let startup = {
            let mut a = lock(&agent);
            if resync_due {
                a.crowdsec.need_startup = true;
            }
            a.crowdsec.need_startup
        };
        let scopes = cfg
            .scopes
            .iter()
            .map(|s| s.as_str().to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",");
        let origins = cfg.origins.join(",");
        let call = lapi.clone();
        let page = tokio::task::spawn_blocking(move || call.stream(startup, &scopes, &origins))
            .await
            .unwrap_or_else(|e| {
                Err(LapiError::Transport {
                    url: String::new(),
                    why: format!("poll task failed: {e}"),
                })
            });
        match page {
            Ok(page) => {
                failures = 0;
                let Some(intake) = intake(page, startup, &cfg).await else {
                    // The bans stay as they are; the next poll resyncs.
                    {
                        let mut a = lock(&agent);
                        a.crowdsec.errors_total += 1;
                        a.crowdsec.need_startup = true;
                    }
                    tokio::time::sleep(cfg.poll).await;
                    continue;
                };
                let taken = lock(&agent).crowdsec_take_page(intake, &cfg);
                if let Some(p) = taken {
                    let synced = write_holds(&agent, &p.changes).await;
                    lock(&agent).crowdsec_applied(&p, synced);
                }
                tokio::time::sleep(cfg.poll).await;
            }
            Err(e) => {
                failures += 1;
                {
                    let mut a = lock(&agent);
                    a.crowdsec_failed("poll", &e);
                    // Whatever happened meanwhile, the next success must be
                    // a full resync, applied as a diff.
                    a.crowdsec.need_startup = true;
                }
                if e.is_auth() {
                    // The operator may fix the key file: read it again.
                    current = None;
                }
                tokio::time::sleep(backoff(cfg.poll, failures, MAX_BACKOFF)).await;
            }
        }
    }
}

/// Pushes spooled autobans as alerts, oldest first, for as long as the
/// agent runs. A failed push keeps them spooled and retries with backoff.
pub async fn push_loop(agent: Arc<Mutex<Agent>>) {
    let wake = lock(&agent).crowdsec.wake.clone();
    let mut current: Option<(CrowdsecConfig, Arc<Lapi>, String)> = None;
    let mut failures = 0u32;
    loop {
        let (cfg, batch) = {
            let a = lock(&agent);
            let batch: Batch = a
                .crowdsec
                .spool
                .as_ref()
                .map(Spool::batch)
                .unwrap_or_default();
            (a.cfg.crowdsec.clone(), batch)
        };
        let creds = cfg
            .as_ref()
            .and_then(|c| Some((c.clone(), c.machine_id.clone()?, c.password_file.clone()?)));
        let Some((cfg, machine_id, password_file)) = creds.filter(|_| !batch.alerts.is_empty())
        else {
            // Nothing to do until an autoban is spooled (or a reload adds
            // credentials: look again now and then).
            let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
            continue;
        };
        let result = push_once(
            &mut current,
            &cfg,
            &machine_id,
            &password_file,
            batch.alerts.clone(),
        )
        .await;
        match result {
            Ok(()) => {
                failures = 0;
                let mut a = lock(&agent);
                let n = batch.alerts.len();
                a.crowdsec.alerts_pushed_total += n as u64;
                a.crowdsec.last_push_success_unix = Some(clock::unix_secs());
                if let Some(s) = a.crowdsec.spool.as_mut() {
                    s.pushed(&batch);
                }
                a.crowdsec.flush.notify_one();
                tracing::info!(alerts = n, "autobans pushed to CrowdSec");
            }
            Err(e) => {
                failures += 1;
                lock(&agent).crowdsec_failed("alert push", &e);
                if e.is_auth() {
                    current = None;
                }
                let wait = backoff(PUSH_RETRY, failures, MAX_PUSH_BACKOFF);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Writes the spool's file when it changed, at most once a
/// [`SPOOL_WRITE_EVERY`], for as long as the agent runs. Only taking the
/// snapshot holds the agent's lock; serializing, writing and fsync'ing
/// run on a blocking thread, so control requests, scrapes and the
/// watchdog never wait for the disk.
pub async fn spool_write_loop(agent: Arc<Mutex<Agent>>) {
    let flush = lock(&agent).crowdsec.flush.clone();
    loop {
        flush.notified().await;
        let started = tokio::time::Instant::now();
        spool_flush(&agent).await;
        tokio::time::sleep_until(started + SPOOL_WRITE_EVERY).await;
    }
}

/// Writes the spool now if it changed since its last snapshot (and after
/// any write under way). The agent calls it once more on its way out, so
/// that autobans spooled since the last write survive a SIGTERM.
pub async fn spool_flush(agent: &Arc<Mutex<Agent>>) {
    let (snap, disk, writes) = {
        let mut a = lock(agent);
        let snap = a.crowdsec.spool.as_mut().and_then(Spool::take_snapshot);
        (snap, a.crowdsec.disk.clone(), a.writes.clone())
    };
    let Some(snap) = snap else {
        return;
    };
    let r = tokio::task::spawn_blocking(move || disk.write(&snap))
        .await
        .unwrap_or_else(|e| {
            Err(StateFileError::Io {
                path: SPOOL_FILE.into(),
                source: std::io::Error::other(format!("spool write task failed: {e}")),
            })
        });
    if !writes.outcome(SPOOL_FILE, r) {
        // Retried after SPOOL_WRITE_EVERY, with whatever is spooled then.
        let mut a = lock(agent);
        if let Some(s) = a.crowdsec.spool.as_mut() {
            s.write_failed();
        }
        a.crowdsec.flush.notify_one();
    }
}

async fn push_once(
    current: &mut Option<(CrowdsecConfig, Arc<Lapi>, String)>,
    cfg: &CrowdsecConfig,
    machine_id: &str,
    password_file: &std::path::Path,
    batch: Vec<Alert>,
) -> Result<(), LapiError> {
    let reuse = current
        .as_ref()
        .filter(|(c, _, _)| c == cfg)
        .map(|(_, l, t)| (l.clone(), t.clone()));
    let (lapi, token) = match reuse {
        Some(x) => x,
        None => {
            let lapi = connect(cfg).await?;
            let (l, id, pw) = (
                lapi.clone(),
                machine_id.to_string(),
                password_file.to_path_buf(),
            );
            let token = tokio::task::spawn_blocking(move || {
                let password = crate::crowdsec::read_secret(&pw)
                    .map_err(|e| LapiError::Credential(format!("password_file: {e}")))?;
                l.login(&id, &password)
            })
            .await
            .unwrap_or_else(|e| Err(LapiError::Credential(format!("login task failed: {e}"))))?;
            *current = Some((cfg.clone(), lapi.clone(), token.clone()));
            (lapi, token)
        }
    };
    let r = tokio::task::spawn_blocking(move || lapi.push_alerts(&token, &batch))
        .await
        .unwrap_or_else(|e| {
            Err(LapiError::Transport {
                url: String::new(),
                why: format!("push task failed: {e}"),
            })
        });
    if r.is_err() {
        // A new login next time: the token may have expired.
        *current = None;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = Duration::from_secs;
        let got: Vec<Duration> = (1..=7).map(|n| backoff(s(1), n, s(10))).collect();
        assert_eq!(got, [s(1), s(2), s(4), s(8), s(10), s(10), s(10)]);
        assert_eq!(backoff(s(60), 5, s(30)), s(60), "never below the poll");
        assert_eq!(backoff(s(1), u32::MAX, s(30)), s(30));
    }
}
