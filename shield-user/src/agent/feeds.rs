//! Threat feeds inside the agent: stable ids, the cached copy at start-up,
//! scheduled and on-demand refreshes, the shrink guard, and applying each
//! refresh as a diff that never leaves a kept entry unenforced.
//!
//! Fetching and parsing run on blocking threads without the agent's lock;
//! planning holds it once, and writing the maps once per step of
//! [`STEP_ENTRIES`] entries.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use shield_common::maps::{FeedEntry, MAX_FEEDS};
use tokio::sync::watch;

use super::{Agent, lock};
use crate::{
    clock,
    config::{FeedConfig, FeedSource},
    dataplane::DataplaneError,
    feeds::{
        self, Coverage, FeedIndex, FeedSet, FetchOptions, Fetched, Hold, IndexError, ParseOptions,
        ParsedFeed, Validators, cache, retry,
    },
    statefile,
};

use super::persist::StateWrites;

const IDS_FILE: &str = "feed-ids.json";

/// What the agent knows about one feed.
#[derive(Debug)]
pub struct FeedState {
    pub cfg: FeedConfig,
    pub id: u32,
    pub validators: Validators,
    pub last_success_unix: Option<u64>,
    pub last_error: Option<String>,
    pub errors_total: u64,
    consecutive_failures: u32,
    /// From the last parse: malformed lines, and the first few of them.
    pub rejected: u64,
    pub first_rejects: Vec<String>,
    /// Why the last refresh was held back, and what it would have applied
    /// (only for a hold that a confirmation or `--force` may lift).
    pub held: Option<String>,
    /// Refreshes held back since the agent started, by guard: shrink,
    /// growth, cap.
    pub held_total: [u64; 3],
    /// The address space the enforced entries cover.
    pub covered: Coverage,
    held_set: Option<(FeedSet, Vec<u8>, Validators)>,
    pub next_refresh_mono_ns: u64,
    /// The refresh running now, if one is: everyone who asks for this
    /// feed meanwhile waits for its answer instead of starting another.
    flight: Option<Flight>,
    /// Where the enforced entries came from: the network or the cache (with
    /// its age when applied).
    pub origin: String,
}

/// What a refresh answers: a line for the operator, or why it failed.
pub type Answer = Result<String, RefreshError>;

/// Why the feed maps could not be brought in line with the feed index.
#[derive(Debug, thiserror::Error)]
pub enum FeedMapError {
    #[error("no free feed id (at most {} feeds)", MAX_FEEDS - 1)]
    NoFreeId,
    #[error("writing the feed maps: {0}")]
    Write(#[source] DataplaneError),
    #[error("reading the feed maps: {0}")]
    Read(#[source] DataplaneError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("no feed named `{0}` is configured")]
    NotFound(String),
    /// The fetch, the parse or the apply failed; the feed keeps its last
    /// good entries.
    #[error("{0}")]
    Failed(String),
    /// A guard held the new body back (a shrink, a widening, the address
    /// cap); the feed keeps its last good entries, and this is no failure
    /// of the source.
    #[error("{0}")]
    Held(String),
}

/// A refresh in flight and where its answer will appear.
#[derive(Debug)]
struct Flight {
    force: bool,
    answer: watch::Receiver<Option<Answer>>,
}

/// A refresh that has been started (its feed marked in flight) and must
/// now be run by [`run`]: the only one for its feed until it finishes.
pub struct Ticket {
    name: String,
    force: bool,
    cfg: FeedConfig,
    validators: Validators,
    answer: watch::Sender<Option<Answer>>,
}

/// What asking for a refresh comes to, decided under the agent's lock.
enum Begin {
    /// Answered at once (no such feed; a held refresh applied by force).
    Done(Answer),
    /// A refresh is running and serves this request too.
    Join(watch::Receiver<Option<Answer>>),
    /// A plain refresh is running and this one is forced: wait for it to
    /// finish, then ask again.
    After(watch::Receiver<Option<Answer>>),
    /// This request starts the refresh (boxed: a ticket carries a whole
    /// feed config).
    Start(Box<Ticket>, watch::Receiver<Option<Answer>>),
}

impl FeedState {
    /// Whether a refresh of this feed is running.
    pub fn in_flight(&self) -> bool {
        self.flight.is_some()
    }
}

#[derive(Debug, Default)]
pub struct Feeds {
    pub states: Vec<FeedState>,
    pub index: FeedIndex,
    /// Held by the refresh whose plan is being written (see [`run`]).
    lane: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Serialize, Deserialize, Default)]
struct Ids {
    ids: BTreeMap<String, u32>,
}

/// Feed ids by name, stable across restarts (hit counters in the kernel are
/// indexed by id). New names take the lowest free id in 1..MAX_FEEDS.
/// A failed write of the id file is reported through `writes` and does
/// not stop the feeds: the ids hold in memory, and ids already on disk stay
/// valid for the names they list.
fn assign_ids(
    state_dir: &Path,
    names: &[&str],
    writes: &StateWrites,
) -> Result<BTreeMap<String, u32>, FeedMapError> {
    let path = state_dir.join(IDS_FILE);
    let mut ids = statefile::read::<Ids>(&path)
        .unwrap_or_else(|e| {
            tracing::warn!("{e}");
            None
        })
        .unwrap_or_default()
        .ids;
    ids.retain(|n, id| names.contains(&n.as_str()) && *id > 0 && *id < MAX_FEEDS);
    for n in names {
        if ids.contains_key(*n) {
            continue;
        }
        let free = (1..MAX_FEEDS)
            .find(|i| !ids.values().any(|v| v == i))
            .ok_or(FeedMapError::NoFreeId)?;
        ids.insert((*n).to_string(), free);
    }
    writes.outcome(IDS_FILE, statefile::write(&path, &Ids { ids: ids.clone() }));
    Ok(ids)
}

impl Agent {
    /// Writes the feed ids in use again (after a failed write).
    pub(super) fn retry_feed_ids(&self) {
        if !self.writes.unsaved().iter().any(|f| f == IDS_FILE) {
            return;
        }
        let ids = self
            .feeds
            .states
            .iter()
            .map(|s| (s.cfg.name.clone(), s.id))
            .collect();
        let path = self.cfg.state_dir.join(IDS_FILE);
        self.writes
            .outcome(IDS_FILE, statefile::write(&path, &Ids { ids }));
    }
}

fn parse_options(cfg: &FeedConfig) -> ParseOptions {
    ParseOptions {
        format: cfg.format,
        min_score: cfg.min_score,
        allow_broad: cfg.allow_broad,
    }
}

/// Parses a body straight into the compact set the index keeps (on a
/// blocking thread: a million lines take tens of milliseconds, spread over
/// the CPUs). The report's `entries` stay empty.
fn parse(cfg: &FeedConfig, bytes: &[u8]) -> (ParsedFeed, FeedSet) {
    feeds::parse_feed_set(bytes, &parse_options(cfg))
}

fn reject_lines(p: &ParsedFeed) -> Vec<String> {
    p.first_rejects
        .iter()
        .map(|r| format!("line {}: {} ({})", r.line, r.text, r.why))
        .collect()
}

/// A random number in [0, 1) for jitter, without a dependency: std's
/// randomly keyed hasher.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(clock::monotonic_ns());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Agent {
    /// Brings the feed set in line with the config: ids, states, entries of
    /// feeds that went away removed, cached copies applied for new ones.
    /// Every feed is then due for a fetch.
    pub(super) fn sync_feeds(&mut self) -> Result<(), FeedMapError> {
        let names: Vec<&str> = self.cfg.feeds.iter().map(|f| f.name.as_str()).collect();
        let ids = assign_ids(&self.cfg.state_dir, &names, &self.writes)?;
        // Feeds gone from the config (or whose source changed): out.
        let mut keep = Vec::new();
        for st in std::mem::take(&mut self.feeds.states) {
            let still = self
                .cfg
                .feeds
                .iter()
                .find(|f| f.name == st.cfg.name && f.source == st.cfg.source);
            match still {
                Some(f) => {
                    let mut st = st;
                    // A new cap is judged against a fresh body too.
                    let parse_changed = parse_options(f) != parse_options(&st.cfg)
                        || f.max_addresses != st.cfg.max_addresses;
                    st.cfg = f.clone();
                    if parse_changed {
                        // Re-read with the new settings at the next refresh.
                        st.validators = Validators::default();
                        st.next_refresh_mono_ns = 0;
                    }
                    keep.push(st);
                }
                None => {
                    let plan = self.feeds.index.remove_feed(st.id);
                    self.apply_feed_plan(plan)?;
                    let _ = cache::remove(&self.cfg.state_dir, &st.cfg.name);
                    tracing::info!(feed = st.cfg.name, "feed removed; its entries are gone");
                }
            }
        }
        self.feeds.states = keep;
        for f in self.cfg.feeds.clone() {
            if self.feeds.states.iter().any(|s| s.cfg.name == f.name) {
                continue;
            }
            let id = ids[&f.name];
            let mut st = FeedState {
                cfg: f.clone(),
                id,
                validators: Validators::default(),
                last_success_unix: None,
                last_error: None,
                errors_total: 0,
                consecutive_failures: 0,
                rejected: 0,
                first_rejects: Vec::new(),
                held: None,
                held_total: [0; 3],
                covered: Coverage::default(),
                held_set: None,
                next_refresh_mono_ns: 0,
                flight: None,
                origin: "none yet".into(),
            };
            self.apply_cache(&mut st);
            self.feeds.states.push(st);
        }
        Ok(())
    }

    /// The last good copy, so a host that boots with the network down still
    /// enforces its feeds.
    fn apply_cache(&mut self, st: &mut FeedState) {
        let cached = match cache::load(&self.cfg.state_dir, &st.cfg.name) {
            Ok(Some(c)) if c.is_from(&st.cfg.source) => c,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(feed = st.cfg.name, "cache unusable, ignored: {e}");
                return;
            }
        };
        let (parsed, set) = parse(&st.cfg, &cached.bytes);
        let covered = set.coverage();
        // A copy from before a lower cap is not enforced.
        if let Some(h) = feeds::hold(
            (0, Coverage::default()),
            (set.len(), covered),
            st.cfg.max_addresses,
        ) {
            let why = format!("cached copy not applied: {h}");
            tracing::warn!(feed = st.cfg.name, "{why}");
            st.held_total[guard_index(&h)] += 1;
            st.held = Some(why);
            return;
        }
        let plan = self.feeds.index.plan_set(st.id, set);
        match self.apply_feed_plan(plan) {
            Ok(()) => {
                st.covered = covered;
                st.validators = cached.validators;
                st.last_success_unix = Some(cached.fetched_unix);
                st.rejected = parsed.rejected + parsed.refused_broad;
                st.first_rejects = reject_lines(&parsed);
                st.origin = format!(
                    "cache, {} old",
                    crate::config::format_duration(Duration::from_secs(cached.age.as_secs()))
                );
                tracing::info!(
                    feed = st.cfg.name,
                    entries = self.feeds.index.len(st.id),
                    age_secs = cached.age.as_secs(),
                    "applied the cached copy"
                );
            }
            Err(e) => tracing::error!(feed = st.cfg.name, "applying the cached copy: {e}"),
        }
    }

    /// Writes a plan and commits it; on a failed write, rolls the maps back
    /// so they match the index again.
    fn apply_feed_plan(&mut self, plan: feeds::Plan) -> Result<(), FeedMapError> {
        if plan.is_empty() {
            return Ok(self.feeds.index.commit(plan)?);
        }
        match feeds::apply_plan(&mut self.dp, &plan) {
            Ok(stats) => {
                tracing::debug!(?stats, "feed plan applied");
                Ok(self.feeds.index.commit(plan)?)
            }
            Err(e) => {
                let _ = feeds::apply_plan(&mut self.dp, &plan.rollback());
                Err(FeedMapError::Write(e))
            }
        }
    }

    /// Removes kernel feed entries no configured feed lists: what a feed
    /// dropped from the config while the agent was down left behind.
    pub(super) fn reconcile_feed_maps(&mut self) -> Result<usize, FeedMapError> {
        let in_kernel = self.dp.feed_entries().map_err(FeedMapError::Read)?;
        let stale: Vec<_> = in_kernel
            .into_iter()
            .filter(|(net, _)| self.feeds.index.label(net).is_none())
            .map(|(net, _)| net)
            .collect();
        for net in &stale {
            self.dp
                .remove_feed_entry(*net)
                .map_err(FeedMapError::Write)?;
        }
        Ok(stale.len())
    }

    /// Refreshes of the feeds that are due and not already running,
    /// started (marked in flight): the caller runs each with [`run`].
    pub fn feeds_due(&mut self) -> Vec<Ticket> {
        let now = clock::monotonic_ns();
        self.feeds
            .states
            .iter_mut()
            .filter(|s| s.flight.is_none() && s.next_refresh_mono_ns <= now)
            .map(|s| start_flight(s, false).0)
            .collect()
    }

    /// Joins the refresh of `name` that is running, or starts one.
    fn begin_refresh(&mut self, name: &str, force: bool) -> Begin {
        if force
            && self
                .feeds
                .states
                .iter()
                .any(|s| s.cfg.name == name && s.flight.is_none())
            && let Some(r) = self.apply_held(name)
        {
            return Begin::Done(r);
        }
        let Some(st) = self.feeds.states.iter_mut().find(|s| s.cfg.name == name) else {
            return Begin::Done(Err(RefreshError::NotFound(name.to_string())));
        };
        match &st.flight {
            Some(f) if f.force || !force => Begin::Join(f.answer.clone()),
            Some(f) => Begin::After(f.answer.clone()),
            None => {
                let (ticket, rx) = start_flight(st, force);
                Begin::Start(Box::new(ticket), rx)
            }
        }
    }

    pub fn feeds(&self) -> &Feeds {
        &self.feeds
    }

    /// Applies a held refresh now (`feeds refresh NAME --force`); `None`
    /// when nothing is held for `name`.
    fn apply_held(&mut self, name: &str) -> Option<Answer> {
        let i = self.feeds.states.iter().position(|s| s.cfg.name == name)?;
        let (set, bytes, validators) = self.feeds.states[i].held_set.take()?;
        let id = self.feeds.states[i].id;
        let new_len = set.len();
        let covered = set.coverage();
        let plan = self.feeds.index.plan_set(id, set);
        let applied = self
            .apply_feed_plan(plan)
            .map_err(|e| RefreshError::Failed(e.to_string()));
        Some(applied.map(|()| {
            let st = &mut self.feeds.states[i];
            st.held = None;
            st.covered = covered;
            let _ = cache::store(
                &self.cfg.state_dir,
                name,
                &st.cfg.source,
                &bytes,
                &validators,
            );
            st.validators = validators;
            format!("{name}: held refresh applied by force, {new_len} entries")
        }))
    }

    /// Handles a finished fetch+parse (under the lock): the guards, then
    /// either the answer (not modified, held, failed) or the plan to write
    /// step by step ([`write_steps`]) and finish with
    /// [`Agent::complete_refresh`].
    fn prepare_refresh(
        &mut self,
        name: &str,
        outcome: Result<Option<Download>, RefreshError>,
        force: bool,
    ) -> Finish {
        let Some(i) = self.feeds.states.iter().position(|s| s.cfg.name == name) else {
            let gone = format!("feed `{name}` was removed meanwhile");
            return Finish::Done(Err(RefreshError::Failed(gone)));
        };
        let result = match outcome {
            Err(e) => Err(e),
            Ok(None) => {
                let _ = cache::refreshed(&self.cfg.state_dir, name);
                Ok(format!("{name}: not modified"))
            }
            Ok(Some((parsed, set, bytes, validators))) => {
                let id = self.feeds.states[i].id;
                let old_len = self.feeds.index.len(id);
                let new_len = set.len();
                let st = &mut self.feeds.states[i];
                st.rejected = parsed.rejected + parsed.refused_broad;
                st.first_rejects = reject_lines(&parsed);
                for r in parsed.first_rejects.iter().take(3) {
                    tracing::warn!(
                        feed = name,
                        line = r.line,
                        text = r.text,
                        why = r.why,
                        "feed line skipped"
                    );
                }
                // The next refresh "agrees" when it brings the same content.
                let agrees = st.held_set.as_ref().is_some_and(|(h, _, _)| *h == set);
                let old_cov = self
                    .feeds
                    .index
                    .entries(id)
                    .map(FeedSet::coverage)
                    .unwrap_or_default();
                let new_cov = set.coverage();
                let hold =
                    feeds::hold((old_len, old_cov), (new_len, new_cov), st.cfg.max_addresses)
                        .filter(|h| !(h.confirmable() && (force || agrees)));
                if let Some(h) = hold {
                    let why = if h.confirmable() {
                        format!(
                            "{h}; held back until the next refresh agrees or `shieldctl feeds refresh {name} --force`"
                        )
                    } else {
                        format!(
                            "{h}: the last good entries stay; raise this feed's max_addresses to accept it"
                        )
                    };
                    tracing::warn!(feed = name, guard = h.guard(), old_len, new_len, "{why}");
                    st.held_total[guard_index(&h)] += 1;
                    st.held = Some(why.clone());
                    // Only what may be confirmed is kept for it.
                    st.held_set = h.confirmable().then_some((set, bytes, validators));
                    Err(RefreshError::Held(why))
                } else {
                    st.held = None;
                    st.held_set = None;
                    let plan = self.feeds.index.plan_set(id, set);
                    return Finish::Apply(Box::new(Pending {
                        name: name.to_string(),
                        plan,
                        covered: new_cov,
                        new_len,
                        rejected: parsed.rejected,
                        bytes,
                        validators,
                    }));
                }
            }
        };
        Finish::Done(self.settle(name, result))
    }

    /// Finishes a refresh whose plan [`write_steps`] has written (`written`
    /// says whether every step went through): the plan committed, or the
    /// maps put back to what the index says. The index may have moved on
    /// while the steps were written (a reload, a held refresh applied by
    /// force): the entries the plan touched are then rewritten from the
    /// index and the feed's new list planned again, in one hold.
    fn complete_refresh(
        &mut self,
        p: Pending,
        written: Result<(), DataplaneError>,
    ) -> (Answer, Option<CacheJob>) {
        let Pending {
            name,
            plan,
            covered,
            new_len,
            rejected,
            bytes,
            validators,
        } = p;
        let (add, rm) = (plan.add.len(), plan.remove.len());
        let current = self.feeds.index.is_current(&plan);
        let applied = match written {
            Err(e) => {
                if current {
                    let _ = feeds::apply_plan(&mut self.dp, &plan.rollback());
                } else {
                    self.rewrite_from_index(&plan);
                }
                Err(FeedMapError::Write(e))
            }
            Ok(()) if current => self.feeds.index.commit(plan).map_err(FeedMapError::from),
            Ok(()) => {
                self.rewrite_from_index(&plan);
                match self.feeds.states.iter().find(|s| s.cfg.name == name) {
                    Some(st) => {
                        let again = self.feeds.index.plan_set(st.id, plan.into_next());
                        self.apply_feed_plan(again)
                    }
                    // settle() says the feed was removed meanwhile.
                    None => Ok(()),
                }
            }
        };
        let Some(st) = self.feeds.states.iter_mut().find(|s| s.cfg.name == name) else {
            let gone = format!("feed `{name}` was removed meanwhile");
            return (Err(RefreshError::Failed(gone)), None);
        };
        let mut job = None;
        let result = match applied {
            Err(e) => Err(RefreshError::Failed(e.to_string())),
            Ok(()) => {
                st.covered = covered;
                job = Some(CacheJob {
                    writes: self.writes.clone(),
                    state_dir: self.cfg.state_dir.clone(),
                    name: name.clone(),
                    source: st.cfg.source.clone(),
                    bytes,
                    validators: validators.clone(),
                });
                st.validators = validators;
                st.origin = "network".into();
                tracing::info!(
                    feed = name,
                    entries = new_len,
                    added = add,
                    removed = rm,
                    rejected,
                    "feed applied"
                );
                Ok(format!(
                    "{name}: {new_len} entries (+{add} -{rm}), {rejected} lines rejected"
                ))
            }
        };
        (self.settle(&name, result), job)
    }

    /// Every entry `plan` touched written as the index has it now (its
    /// feed's label, or deleted when no feed lists it): one syscall per
    /// entry, for the rare plan the index moved on under.
    fn rewrite_from_index(&mut self, plan: &feeds::Plan) {
        let mut failed = 0u64;
        for net in plan.touched() {
            let r = match self.feeds.index.label(&net) {
                Some(feed_id) => self.dp.set_feed_entry(net, &FeedEntry { feed_id }),
                None => self.dp.remove_feed_entry(net),
            };
            failed += u64::from(r.is_err());
        }
        if failed > 0 {
            tracing::error!(
                failed,
                "feed entries could not be rewritten after a concurrent change; the next refresh plans them again"
            );
        }
    }

    /// The end of every refresh: the flight cleared, success or failure
    /// recorded, the next refresh scheduled. `result` is returned.
    fn settle(&mut self, name: &str, result: Answer) -> Answer {
        let now_mono = clock::monotonic_ns();
        let Some(st) = self.feeds.states.iter_mut().find(|s| s.cfg.name == name) else {
            return result;
        };
        let refresh = st.cfg.refresh;
        st.flight = None;
        match &result {
            Ok(_) => {
                st.last_success_unix = Some(clock::unix_secs());
                st.last_error = None;
                st.consecutive_failures = 0;
            }
            Err(RefreshError::Held(_)) => {
                st.last_error = None;
            }
            Err(e) => {
                st.errors_total += 1;
                st.consecutive_failures += 1;
                st.last_error = Some(e.to_string());
                tracing::warn!(
                    feed = name,
                    failures = st.consecutive_failures,
                    "refresh failed, the last good entries stay: {e}"
                );
            }
        }
        let failures = if result.is_ok() || st.held.is_some() {
            0
        } else {
            st.consecutive_failures
        };
        let delay = retry::next_delay(failures, refresh, jitter());
        st.next_refresh_mono_ns = now_mono.saturating_add(delay.as_nanos() as u64);
        result
    }
}

/// A parsed download: the report (without entries), the entries as the
/// compact set, the body and its validators.
type Download = (ParsedFeed, FeedSet, Vec<u8>, Validators);

/// What a finished fetch and parse comes to, decided under the lock.
enum Finish {
    /// Settled: not modified, held or failed.
    Done(Answer),
    /// A plan to write step by step, then complete.
    Apply(Box<Pending>),
}

/// A refresh whose plan is being written, and what completing it needs.
struct Pending {
    name: String,
    plan: feeds::Plan,
    covered: Coverage,
    new_len: usize,
    rejected: u64,
    bytes: Vec<u8>,
    validators: Validators,
}

/// Feed entries written per hold of the agent's lock: batched writes of
/// one to a few microseconds each (more on a busy host), so a hold lasts
/// a few milliseconds and a million-entry load yields to requests,
/// signals and the watchdog some 500 times (docs/ARCHITECTURE.md, "Tasks
/// and threading"; `control.status_p99_ms@load` in docs/BENCHMARKS.md).
const STEP_ENTRIES: usize = 2048;

/// Writes `plan` one step at a time, the lock taken for each step and
/// the runtime's other tasks run between steps. Between any two steps the
/// maps hold every entry the feed keeps (additions come first), as
/// [`feeds::apply_plan`] promises for a plan written at once.
async fn write_steps(agent: &Mutex<Agent>, plan: &feeds::Plan) -> Result<(), DataplaneError> {
    for step in plan.steps(STEP_ENTRIES) {
        feeds::apply_step(&mut lock(agent).dp, plan.feed_id, &step)?;
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Keeping a body as the feed's last good copy.
pub struct CacheJob {
    writes: Arc<StateWrites>,
    state_dir: std::path::PathBuf,
    name: String,
    source: FeedSource,
    bytes: Vec<u8>,
    validators: Validators,
}

impl CacheJob {
    fn run(self) {
        let r = cache::store(
            &self.state_dir,
            &self.name,
            &self.source,
            &self.bytes,
            &self.validators,
        );
        self.writes
            .outcome(&format!("feeds/{} (last good copy)", self.name), r);
    }
}

/// The slot of `held_total` a hold counts in.
fn guard_index(h: &Hold) -> usize {
    match h {
        Hold::Shrink { .. } => 0,
        Hold::Growth { .. } => 1,
        Hold::Cap { .. } => 2,
    }
}

/// Marks `st` in flight and makes the ticket that runs its refresh.
fn start_flight(st: &mut FeedState, force: bool) -> (Ticket, watch::Receiver<Option<Answer>>) {
    let (tx, rx) = watch::channel(None);
    st.flight = Some(Flight {
        force,
        answer: rx.clone(),
    });
    // A forced refresh must not be answered "not modified".
    let validators = if force {
        Validators::default()
    } else {
        st.validators.clone()
    };
    let ticket = Ticket {
        name: st.cfg.name.clone(),
        force,
        cfg: st.cfg.clone(),
        validators,
        answer: tx,
    };
    (ticket, rx)
}

/// The answer of a refresh in flight, once it has one.
async fn answer_of(mut rx: watch::Receiver<Option<Answer>>) -> Answer {
    match rx.wait_for(Option::is_some).await {
        Ok(a) => a.clone().unwrap_or_else(unreachable_answer),
        Err(_) => Err(RefreshError::Failed(
            "the refresh task ended without an answer".into(),
        )),
    }
}

fn unreachable_answer() -> Answer {
    Err(RefreshError::Failed("the refresh has no answer".into()))
}

/// Refreshes one feed on request: joins the refresh of it that is already
/// running (one download, whoever asks and however often), or starts one.
/// A forced request does not join a plain refresh, whose answer may be
/// "not modified" or "held": it waits for it, then runs its own.
pub async fn refresh(agent: Arc<Mutex<Agent>>, name: String, force: bool) -> Answer {
    loop {
        let begun = lock(&agent).begin_refresh(&name, force);
        match begun {
            Begin::Done(a) => return a,
            Begin::Join(rx) => return answer_of(rx).await,
            Begin::After(rx) => {
                let _ = answer_of(rx).await;
            }
            Begin::Start(ticket, rx) => {
                // Its own task: a client that goes away does not cancel a
                // refresh that others may be waiting for.
                tokio::spawn(run(agent.clone(), *ticket));
                return answer_of(rx).await;
            }
        }
    }
}

/// Clears a flight whose task ended without finishing (a panic), so the
/// feed is not left "in flight" for good.
struct Grounded {
    agent: Arc<Mutex<Agent>>,
    name: String,
    armed: bool,
}

impl Drop for Grounded {
    fn drop(&mut self) {
        if self.armed
            && let Some(st) = lock(&self.agent)
                .feeds
                .states
                .iter_mut()
                .find(|s| s.cfg.name == self.name)
        {
            st.flight = None;
        }
    }
}

/// Fetches, parses and applies the feed of a started refresh, then hands
/// the answer to everyone waiting for it. Runs without the agent's lock
/// except to apply the result.
pub async fn run(agent: Arc<Mutex<Agent>>, ticket: Ticket) {
    let Ticket {
        name,
        force,
        cfg,
        validators,
        answer,
    } = ticket;
    let mut grounded = Grounded {
        agent: agent.clone(),
        name: name.clone(),
        armed: true,
    };
    let work = tokio::task::spawn_blocking(move || {
        let opts = FetchOptions::for_feed(&cfg);
        match feeds::fetch(&cfg.source, &validators, &opts) {
            Ok(Fetched::NotModified) => Ok(None),
            Ok(Fetched::Body { bytes, validators }) => {
                let (parsed, set) = parse(&cfg, &bytes);
                Ok(Some((parsed, set, bytes, validators)))
            }
            Err(e) => Err(RefreshError::Failed(e.to_string())),
        }
    })
    .await
    .unwrap_or_else(|e| Err(RefreshError::Failed(format!("refresh task failed: {e}"))));
    // One feed's plan is written at a time: a plan is made against the
    // index as it is, and another feed's steps in between would make it
    // stale.
    let lane = lock(&agent).feeds.lane.clone();
    let _lane = lane.lock().await;
    let finish = lock(&agent).prepare_refresh(&name, work, force);
    let (result, job) = match finish {
        Finish::Done(answer) => (answer, None),
        Finish::Apply(p) => {
            let written = write_steps(&agent, &p.plan).await;
            lock(&agent).complete_refresh(*p, written)
        }
    };
    grounded.armed = false;
    let _ = answer.send(Some(result));
    // Enforcement already has the new list; the copy can follow. Then hand
    // the refresh's buffers (body, parse) back to the kernel: glibc keeps
    // freed arena memory otherwise, and a million-line refresh leaves tens
    // of MiB resident that the next refresh would not reuse first.
    tokio::task::spawn_blocking(move || {
        if let Some(job) = job {
            job.run();
        }
        // SAFETY: malloc_trim only releases free memory; no pointers change.
        unsafe { libc::malloc_trim(0) };
    });
}

/// Where a feed's data comes from, for `feeds list`.
pub fn source_text(s: &FeedSource) -> String {
    match s {
        FeedSource::Path(p) => p.display().to_string(),
        FeedSource::Url(u) => crate::redact::redact_url(u),
    }
}
