//! Orchestration: config → policy → maps, attach, bans, reload. The binary
//! drives an [`Agent`] from its event loop; everything here is synchronous
//! and owns the dataplane.

mod adaptive_state;
mod apply;
pub mod bans;
pub mod cli;
mod config_mode;
pub mod control;
pub mod crowdsec;
pub mod daemon;
pub mod feeds;
mod ids;
pub mod kernel_log;
pub mod links;
pub mod metrics;
mod offences;
pub mod persist;
mod pinwatch;
pub mod runtime;
pub mod serve;
pub mod tick;
pub mod writer;

pub use config_mode::config_file_warnings;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use crate::{
    config::{self, Config, ConfigErrors, XdpModeSetting},
    dataplane::{self, AttachMode, Attached, Dataplane, DataplaneError, LoadOptions, pins},
    net::Cidr,
    policy::{self, Policy, PolicyDiff, PolicyError, Runtime},
    statefile::{self, StateFileError},
};
use bans::{BanBook, BanError, BanOrigin, BanRecord};
use shield_common::event::FloodEvent;

use crate::{
    adaptive::Adaptive,
    clock,
    events::{FloodTracker, LogBudget},
};

/// What the operator asked for on the command line.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// `None`: the embedded default policy.
    pub config_path: Option<PathBuf>,
    /// Replaces the config's `interfaces` when not empty.
    pub ifaces: Vec<String>,
    /// Forces dry run on, whatever the config says.
    pub dry_run: bool,
    /// Another build of the XDP object (upgrade drills); `None`: the built-in one.
    pub object: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    Pins(#[from] pins::PinError),
    #[error("{0}")]
    State(#[from] StateFileError),
    #[error("{0}")]
    Bans(#[from] BanError),
    #[error("feeds: {0}")]
    Feeds(#[from] feeds::FeedMapError),
    /// What the running daemon could not set up (agent/daemon.rs).
    #[error("{0}: {1}")]
    Runtime(&'static str, std::io::Error),
}

impl AgentError {
    /// The exit codes in docs/ARCHITECTURE.md ("Start-up"): 2 for what the
    /// operator must fix in the config, the command line or the setup it
    /// names (a `state_dir` others could write: restarting cannot help), 1
    /// for everything that went wrong at runtime.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Config(_) | AgentError::Usage(_) | AgentError::Policy(_) => 2,
            AgentError::Dataplane(DataplaneError::NoSuchInterface(_)) => 2,
            AgentError::State(StateFileError::Untrusted { .. }) => 2,
            _ => 1,
        }
    }
}

/// Reads and validates the configuration the options point at, with the
/// command line's overrides applied.
pub fn load_config(opts: &AgentOptions, tick_ns: u64) -> Result<Config, AgentError> {
    let mut cfg = match &opts.config_path {
        Some(p) => config::load(p, tick_ns)?,
        None => config::default_policy(tick_ns),
    };
    if !opts.ifaces.is_empty() {
        cfg.interfaces = opts.ifaces.clone();
    }
    if opts.dry_run {
        cfg.dry_run = true;
    }
    if cfg.interfaces.is_empty() {
        let whence = match &opts.config_path {
            Some(p) => format!("{} sets no `interfaces`", p.display()),
            None => "the default policy names no interfaces".to_string(),
        };
        return Err(AgentError::Usage(format!(
            "no interface to protect: {whence}; pass --iface IF (repeatable) or set `interfaces = [\"eth0\"]`"
        )));
    }
    for iface in &cfg.interfaces {
        if !interface_exists(iface) {
            return Err(DataplaneError::NoSuchInterface(iface.clone()).into());
        }
    }
    Ok(cfg)
}

/// Things a valid config asks for that this build does not do. Said loudly
/// at start-up, on reload and by check-config, never silently ignored.
/// (Nothing at the moment: every section is implemented.)
pub fn unsupported(_cfg: &Config) -> Vec<String> {
    Vec::new()
}

/// The `[adaptive]` level a restarted agent starts at: the saved one if it
/// was earned within `relax_after`, else the configured limits. Reading
/// the file never stops the start: at worst the level starts from 0.
fn resume_adaptive(cfg: &Config) -> Adaptive {
    let saved = match adaptive_state::load(&cfg.state_dir, &mut |w| tracing::error!("{w}")) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "adaptive level not resumed");
            None
        }
    };
    match adaptive_state::decide(saved, &cfg.adaptive, clock::unix_ms()) {
        adaptive_state::Resume::Nothing => Adaptive::default(),
        adaptive_state::Resume::Level { level, age } => {
            tracing::warn!(
                level,
                age_secs = age.as_secs(),
                divisor = u64::from(cfg.adaptive.factor).saturating_pow(level),
                "adaptive level resumed: it was in force {}s before this start, within relax_after",
                age.as_secs()
            );
            Adaptive::resume(level, &cfg.adaptive, clock::monotonic_ns())
        }
        adaptive_state::Resume::Stale { level, age } => {
            tracing::info!(
                level,
                age_secs = age.as_secs(),
                "adaptive level not resumed: last in force {}s ago, longer than relax_after; starting from the configured limits",
                age.as_secs()
            );
            Adaptive::default()
        }
    }
}

fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

fn modes(setting: XdpModeSetting) -> &'static [AttachMode] {
    match setting {
        XdpModeSetting::Auto => &[AttachMode::Native, AttachMode::Skb],
        XdpModeSetting::Native => &[AttachMode::Native],
        XdpModeSetting::Skb => &[AttachMode::Skb],
    }
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct ReloadReport {
    pub changes: usize,
    pub attached: Vec<String>,
    pub detached: Vec<String>,
    pub warnings: Vec<String>,
}

pub struct Agent {
    opts: AgentOptions,
    cfg: Config,
    policy: Policy,
    dp: Dataplane,
    bans: BanBook,
    attached: Vec<Attached>,
    runtime: runtime::RuntimeState,
    tick_ns: u64,
    detached: bool,
    started: Instant,
    floods: FloodTracker,
    feeds: feeds::Feeds,
    tallies: metrics::Tallies,
    started_unix: u64,
    log_budget: LogBudget,
    adaptive: Adaptive,
    /// When adaptive.json was last written (monotonic ns).
    adaptive_saved_ns: u64,
    /// Whether each XDP link still holds its interface (links.rs).
    links: links::LinkWatch,
    /// Failed writes to `state_dir`, shared with jobs that run unlocked.
    writes: Arc<persist::StateWrites>,
    /// policy-ids.json, offences.json and adaptive.json when they are
    /// behind what they keep (a change not yet taken by the writer, or a
    /// write that failed).
    pending: persist::PendingWrites,
    /// The one writer of bans.json and offences.json at a time.
    write_lane: Arc<writer::Lane>,
    pins: pinwatch::PinWatch,
    crowdsec: crowdsec::CrowdsecState,
}

impl Agent {
    /// Loads (or adopts) the pinned maps, brings them to the configured
    /// policy by writing only what differs, restores bans, and attaches to
    /// every interface (replacing a previous program atomically).
    /// `cfg` is what [`load_config`] made of `opts` (the caller needs it
    /// first, to bind the control socket before touching the maps).
    pub fn start(opts: AgentOptions, cfg: Config) -> Result<Agent, AgentError> {
        let tick_ns = clock::kernel_clock_tick_ns();
        for w in unsupported(&cfg) {
            tracing::warn!("{w}");
        }
        if let Some(p) = &opts.config_path {
            for w in config_file_warnings(p, &cfg) {
                tracing::warn!("{w}");
            }
        }
        pins::ensure_pin_dir(&cfg.pin_dir)?;
        statefile::ensure_dir(&cfg.state_dir)?;

        let mut load = LoadOptions {
            pin_dir: Some(cfg.pin_dir.clone()),
            capacities: Vec::new(),
            kernel_log: kernel_log::wanted_level(),
        };
        let load_with = |load: &LoadOptions| match &opts.object {
            Some(obj) => Dataplane::load_object(obj, load),
            None => Dataplane::load(load),
        };
        let mut dp = match load_with(&load) {
            // A diagnostic switch never costs enforcement: a kernel whose
            // verifier refuses the program with its log on gets it without.
            Err(e) if load.kernel_log.is_some() => {
                tracing::warn!(
                    "the XDP program with its log on was refused ({e}); loading it with the log off"
                );
                load.kernel_log = None;
                load_with(&load)?
            }
            loaded => loaded?,
        };
        // Optional features: said once, with what the agent does instead.
        if !dp.lpm_batches_supported().unwrap_or(true) {
            tracing::warn!(
                "this kernel has no batch updates for LPM tries: feed and ban prefixes are written one syscall each, so large feeds apply more slowly"
            );
        }

        let previous = ids::load(&cfg.state_dir);
        let runtime = runtime::RuntimeState::load(&cfg.state_dir, &mut |w| tracing::error!("{w}"))?;
        let overrides = runtime.live_overrides(clock::unix_ms());
        // Before the first compile: limits a flood had tightened must not
        // loosen for a moment because the agent restarted.
        let adaptive = resume_adaptive(&cfg);
        let policy = policy::compile(
            &cfg,
            &Runtime {
                allow: &runtime.allow,
                overrides: &overrides,
                previous: previous.as_ref(),
                tick_ns,
                adaptive_divisor: adaptive.divisor(&cfg.adaptive),
            },
        )?;
        for w in &policy.warnings {
            tracing::warn!("{w}");
        }
        let in_maps = apply::snapshot(&dp)?;
        let writes = Arc::new(persist::StateWrites::default());
        let mut bans = BanBook::open(&cfg.state_dir, writes.clone(), &mut |w| {
            tracing::error!("{w}")
        })?;
        let prefix_changed = in_maps.global.ipv6_prefix != policy.global.ipv6_prefix;
        let diff = PolicyDiff::between(Some(&in_maps), &policy);
        apply::apply_with_bans(&mut dp, &diff, prefix_changed, &mut bans)?;
        tracing::info!(
            changes = diff.changes(),
            sources = policy.sources.len(),
            port_slots = policy.ports.len(),
            "policy applied"
        );
        let restored = bans.restore(&mut dp)?;
        tracing::info!(
            journal = restored.from_journal,
            expired = restored.expired,
            adopted = restored.adopted_from_maps,
            "bans restored"
        );

        let mut agent = Agent {
            opts,
            cfg,
            policy,
            dp,
            bans,
            attached: Vec::new(),
            runtime,
            tick_ns,
            detached: false,
            started: Instant::now(),
            floods: FloodTracker::default(),
            feeds: feeds::Feeds::default(),
            tallies: metrics::Tallies::default(),
            started_unix: clock::unix_secs(),
            log_budget: LogBudget::default(),
            adaptive,
            adaptive_saved_ns: clock::monotonic_ns(),
            links: links::LinkWatch::default(),
            writes,
            pending: persist::PendingWrites::default(),
            write_lane: Arc::default(),
            pins: pinwatch::PinWatch::default(),
            crowdsec: crowdsec::CrowdsecState::default(),
        };
        match crate::crowdsec::Spool::open(&agent.cfg.state_dir, &mut |w| tracing::error!("{w}")) {
            Ok(s) => {
                if !s.is_empty() {
                    tracing::info!(
                        alerts = s.len(),
                        "CrowdSec alerts still spooled from before"
                    );
                }
                agent.crowdsec.spool = Some(s);
            }
            Err(e) => {
                tracing::error!(error = %e, "the CrowdSec alert spool is unreadable; autobans are not pushed")
            }
        }
        let history = offences::load(&agent.cfg.state_dir, &mut |w| tracing::error!("{w}"))?;
        agent.floods.restore_offences(history);
        agent.sync_feeds()?;
        match agent.reconcile_feed_maps() {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "stale feed entries removed from adopted maps"),
            Err(e) => tracing::warn!("checking adopted feed maps: {e}"),
        }
        agent.attach_all()?;
        // Before the first request: what start-up changed is on disk.
        agent.pending.mark(persist::StateFile::PolicyIds);
        agent.write_now();
        Ok(agent)
    }

    fn attach_all(&mut self) -> Result<(Vec<String>, Vec<String>), AgentError> {
        let mut attached = Vec::new();
        let mut new = Vec::new();
        for iface in &self.cfg.interfaces {
            let a = self
                .dp
                .attach_pinned(iface, modes(self.cfg.xdp_mode), &self.cfg.pin_dir)?;
            if a.mode == AttachMode::Skb && self.cfg.xdp_mode == XdpModeSetting::Auto {
                tracing::warn!(
                    iface,
                    "native XDP unavailable; running in skb (generic) mode, which is slower"
                );
            }
            tracing::info!(
                iface = a.iface,
                mode = a.mode.as_str(),
                link = a.link_id,
                program = a.program_id,
                replaced = a.replaced,
                "attached"
            );
            if !self.attached.iter().any(|x| x.iface == a.iface) {
                new.push(a.iface.clone());
            }
            attached.push(a);
        }
        let gone = dataplane::detach_others(&self.cfg.pin_dir, &self.cfg.interfaces);
        self.dp.release_links(&self.cfg.interfaces);
        for g in &gone {
            tracing::info!(iface = g, "detached (no longer configured)");
        }
        self.attached = attached;
        self.links_attached();
        Ok((new, gone))
    }

    /// Re-reads the config and applies the difference. On any error the
    /// running policy stays exactly as it was.
    pub fn reload(&mut self) -> Result<ReloadReport, AgentError> {
        let r = self.reload_inner();
        match &r {
            Ok(_) => self.tallies.reloads.ok += 1,
            Err(_) => self.tallies.reloads.error += 1,
        }
        r
    }

    fn reload_inner(&mut self) -> Result<ReloadReport, AgentError> {
        let cfg = load_config(&self.opts, self.tick_ns)?;
        if cfg.pin_dir != self.cfg.pin_dir || cfg.state_dir != self.cfg.state_dir {
            return Err(AgentError::Usage(
                "pin_dir and state_dir cannot change on reload; restart shield-agent to move them"
                    .into(),
            ));
        }
        let policy = self.compile(&cfg)?;
        for w in unsupported(&cfg) {
            tracing::warn!("{w}");
        }
        let diff = PolicyDiff::between(Some(&self.policy), &policy);
        let prefix_changed = self.policy.global.ipv6_prefix != policy.global.ipv6_prefix;
        let file_warnings = self
            .opts
            .config_path
            .as_deref()
            .map(|p| config_file_warnings(p, &cfg))
            .unwrap_or_default();
        apply::apply_with_bans(&mut self.dp, &diff, prefix_changed, &mut self.bans)?;
        let mut warnings = policy.warnings.clone();
        warnings.extend(file_warnings);
        self.policy = policy;
        self.save_ids();
        self.cfg = cfg;
        self.sync_feeds()?;
        let (attached, detached) = self.attach_all()?;
        Ok(ReloadReport {
            changes: diff.changes(),
            attached,
            detached,
            warnings,
        })
    }

    /// Keeps the ids of the policy now in the maps: marked for the writer,
    /// which retries a failed write rather than undo a policy applied.
    fn save_ids(&mut self) {
        self.pending.mark(persist::StateFile::PolicyIds);
    }

    /// Failed writes to `state_dir` so far.
    pub fn state_writes(&self) -> &persist::StateWrites {
        &self.writes
    }

    fn compile(&self, cfg: &Config) -> Result<Policy, AgentError> {
        let mut cfg = cfg.clone();
        if let Some(on) = self.runtime.dry_run {
            cfg.dry_run = on;
        }
        let overrides = self.runtime.live_overrides(clock::unix_ms());
        Ok(policy::compile(
            &cfg,
            &Runtime {
                allow: &self.runtime.allow,
                overrides: &overrides,
                previous: Some(&self.policy),
                tick_ns: self.tick_ns,
                adaptive_divisor: self.adaptive.divisor(&cfg.adaptive),
            },
        )?)
    }

    /// Recompiles the running config with the current runtime state
    /// (allow entries, overrides, dry run) and applies the difference.
    pub fn recompute(&mut self) -> Result<usize, AgentError> {
        let policy = self.compile(&self.cfg.clone())?;
        let diff = PolicyDiff::between(Some(&self.policy), &policy);
        apply::apply_with_bans(&mut self.dp, &diff, false, &mut self.bans)?;
        self.policy = policy;
        self.save_ids();
        Ok(diff.changes())
    }

    /// Whether drops are only counted right now.
    pub fn dry_run(&self) -> bool {
        self.policy.global.flags & shield_common::maps::CFG_DRY_RUN != 0
    }

    /// Every allowlist entry: (prefix, from shieldctl rather than the config).
    pub fn allow_entries(&self) -> Vec<(Cidr, bool)> {
        let mut v: Vec<(Cidr, bool)> = self.cfg.allow.iter().map(|c| (*c, false)).collect();
        v.extend(self.runtime.allow.iter().map(|c| (*c, true)));
        v
    }

    /// `shieldctl detach`: removes links and pins; the agent then exits.
    pub fn detach_now(&mut self) -> Result<String, AgentError> {
        let removed = pins::remove_all(&self.cfg.pin_dir)?;
        self.dp.release_links(&[]);
        self.detached = true;
        self.attached.clear();
        self.links_attached();
        Ok(format!(
            "detached from {} interface(s) [{}]; removed {} pinned map(s); shield-agent exits",
            removed.links.len(),
            removed.links.join(", "),
            removed.maps
        ))
    }

    /// True once detached: the event loop should exit.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// The tick's first job ([`tick`]): state files to retry, pins and
    /// links to check, expired bans and overrides to lift.
    fn tick_housekeeping(&mut self) {
        self.retry_feed_ids();
        self.check_pins();
        match self.bans.sweep(&mut self.dp) {
            Ok(gone) => {
                let now = clock::monotonic_ns();
                for b in &gone {
                    if self.log_budget.allow(now) {
                        tracing::info!(
                            source = %b.net,
                            origin = b.origin.as_str(),
                            "ban expired"
                        );
                    }
                }
                if gone.len() > 1 {
                    tracing::info!(expired = gone.len(), "bans expired");
                }
            }
            Err(e) => tracing::error!(error = %e, "sweeping expired bans"),
        }
        if self.runtime.expire(clock::unix_ms()) {
            match self.recompute() {
                Ok(n) => tracing::info!(changes = n, "limit override expired and reverted"),
                Err(e) => tracing::error!(error = %e, "reverting an expired limit override"),
            }
        }
    }

    /// Logs the floods that ended and forgets the stale ones.
    fn tick_floods_ended(&mut self, now: u64) {
        for f in self.floods.take_ended(now) {
            if self.log_budget.allow(now) {
                tracing::info!(
                    source = %f.source,
                    class = self.policy.classes.get(f.class as usize).map_or("?", String::as_str),
                    secs = (f.last_ns - f.first_ns) / 1_000_000_000,
                    events = f.events,
                    drop_rate = f.drop_rate.round(),
                    banned = f.banned,
                    "flood ended"
                );
            }
        }
        self.floods.expire(now);
    }

    /// The tick's last job: held-back log lines said, `[adaptive]`, links.
    fn tick_finish(&mut self, now: u64) {
        let suppressed = self.log_budget.take_suppressed();
        if suppressed > 0 {
            tracing::warn!(
                suppressed,
                flooding = self.floods.active(now).count(),
                "per-source flood and autoban log lines held back (at most {} a second); shieldctl top and ban list show them all",
                crate::events::LOG_LINES_PER_SEC
            );
        }
        self.adapt(now);
    }

    /// The offence history follows the bans; the writer takes it
    /// ([`Agent::take_writes`]) and a failed write is taken again.
    fn save_offences(&mut self) {
        self.pending.mark(persist::StateFile::Offences);
    }

    /// Starts this tick's autobans ([`tick::AutobanRound`]): the offence
    /// history and CrowdSec's book forget what expired.
    fn autoban_begin(&mut self) -> tick::AutobanRound {
        let now_ms = clock::unix_ms();
        if self.floods.forget_offences(now_ms, &self.cfg.autoban) {
            self.save_offences();
        }
        self.crowdsec.book.expire(now_ms);
        tick::AutobanRound {
            now_ms,
            seen: std::collections::HashSet::new(),
        }
    }

    /// Bans the floods under `keys` (a slice of the tick's) that lasted
    /// long enough, and spools their alerts.
    fn autoban_slice(&mut self, round: &mut tick::AutobanRound, keys: &[(Cidr, u16)], now: u64) {
        let now_ms = round.now_ms;
        let due = self
            .floods
            .due_bans_among(keys, now, now_ms, &self.cfg.autoban, &mut round.seen);
        if due.is_empty() {
            return;
        }
        self.save_offences();
        let recs: Vec<BanRecord> = due
            .iter()
            .map(|d| BanRecord {
                net: d.net,
                origin: BanOrigin::Autoban,
                reason: Some(d.reason.clone()),
                created_unix_ms: now_ms,
                expires_unix_ms: Some(now_ms.saturating_add(d.ttl.as_millis() as u64)),
            })
            .collect();
        let added = match self.bans.add_many(&mut self.dp, &recs) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(bans = due.len(), error = %e, "autoban failed");
                return;
            }
        };
        let classes = self.policy.classes.len().min(usize::from(u16::MAX)) as u16;
        let mut alerts = Vec::with_capacity(added.added.len());
        for rec in &added.added {
            // `due` is sorted by source.
            let Ok(i) = due.binary_search_by_key(&rec.net, |d| d.net) else {
                continue;
            };
            let d = &due[i];
            self.tallies.ban_added(BanOrigin::Autoban);
            alerts.push(crate::crowdsec::Alert {
                source: d.net,
                rate_pps: self.floods.drop_rate_of(d.net, classes),
                reason: d.reason.clone(),
                duration_secs: d.ttl.as_secs().max(1),
                at_unix_ms: now_ms,
            });
            if self.log_budget.allow(now) {
                tracing::warn!(
                    source = %d.net,
                    ttl = ?d.ttl,
                    reason = d.reason,
                    "autoban"
                );
            }
        }
        self.spool_autobans(alerts);
        // Refused autobans (the map's autoban share used up, or the map
        // full) are counted, and logged within the per-source log budget:
        // the flood that brings them could bring a line each.
        for (rec, e) in &added.refused {
            self.tallies.autoban_refused(e);
            if self.log_budget.allow(now) {
                tracing::warn!(
                    source = %rec.net,
                    error = %e,
                    "autoban refused; the source stays rate-limited"
                );
            }
        }
    }

    /// State files behind the agent's state, as of now, for the writer
    /// to write outside the lock ([`writer::flush`]).
    pub fn take_writes(&mut self) -> Vec<persist::PendingWrite> {
        let mut out = Vec::new();
        if let Some(w) = self.bans.take_journal() {
            out.push(w);
        }
        let dir = self.cfg.state_dir.clone();
        for f in self.pending.take() {
            let name = state_file_name(f);
            out.push(match f {
                persist::StateFile::PolicyIds => {
                    persist::PendingWrite::new(name, ids::save_later(&dir, &self.policy))
                }
                persist::StateFile::Offences => {
                    let mut offences: Vec<(Cidr, crate::events::Offence)> =
                        self.floods.offences().map(|(n, o)| (*n, *o)).collect();
                    offences.sort_by_key(|(n, _)| *n);
                    let dir = dir.clone();
                    persist::PendingWrite::new(name, move || {
                        offences::save(&dir, offences.iter().map(|(n, o)| (n, o)))
                    })
                }
                persist::StateFile::Adaptive => {
                    let saved = adaptive_state::Saved {
                        level: self.adaptive.level(),
                        held_unix_ms: clock::unix_ms(),
                    };
                    let dir = dir.clone();
                    persist::PendingWrite::new(name, move || adaptive_state::save(&dir, saved))
                }
            });
        }
        out
    }

    /// Whether a change waits for the writer.
    pub fn has_pending_writes(&self) -> bool {
        !self.pending.is_empty() || self.bans.journal_behind()
    }

    /// The outcome of a write [`Agent::take_writes`] handed out: a failure
    /// is counted and reported, and the file is taken again next time.
    pub fn wrote(&mut self, file: &str, r: Result<(), StateFileError>) {
        let ok = self.writes.outcome(file, r);
        if file == bans::JOURNAL_FILE {
            self.bans.journal_written(ok);
        } else if !ok {
            let failed = persist::StateFile::ALL
                .into_iter()
                .find(|f| state_file_name(*f) == file);
            if let Some(f) = failed {
                self.pending.mark(f);
            }
        }
    }

    /// Writes what is pending on this thread (start-up, before any request).
    fn write_now(&mut self) {
        for w in self.take_writes() {
            let file = w.file;
            let r = w.run();
            self.wrote(file, r);
        }
    }

    /// The lane the writer holds while it writes.
    pub fn write_lane(&self) -> Arc<writer::Lane> {
        self.write_lane.clone()
    }

    /// `[adaptive]`: one sample of the total counters; a level change
    /// recompiles the policy (LIMITS slots only, so buckets keep their state).
    fn adapt(&mut self, now: u64) {
        if !self.cfg.adaptive.enabled && self.adaptive.level() == 0 {
            return;
        }
        let Ok(counters) = self.dp.counters() else {
            return;
        };
        let (mut drops, mut passes) = (0u64, 0u64);
        for (v, _, c) in counters.iter() {
            match v {
                shield_common::reason::Verdict::Pass => passes += c.packets,
                _ => drops += c.packets,
            }
        }
        let sample = crate::adaptive::Sample {
            drops,
            passes,
            at_ns: now,
        };
        let step = self.adaptive.observe(&self.cfg.adaptive, sample);
        self.save_adaptive(step.is_some(), now);
        let Some(step) = step else {
            return;
        };
        let divisor = self.adaptive.divisor(&self.cfg.adaptive);
        let (drop_rate, pass_rate) = (
            self.adaptive.drop_rate.round(),
            self.adaptive.pass_rate.round(),
        );
        match self.recompute() {
            Ok(changes) if step.tightened() => tracing::warn!(
                level = step.to,
                from = step.from,
                divisor,
                drop_rate,
                pass_rate,
                changes,
                "adaptive limits tightened: the default tier's limits are divided by {divisor}"
            ),
            Ok(changes) => tracing::info!(
                level = step.to,
                from = step.from,
                divisor,
                drop_rate,
                pass_rate,
                changes,
                "adaptive limits relaxed"
            ),
            Err(e) => tracing::error!(level = step.to, error = %e, "applying adaptive limits"),
        }
    }

    /// Keeps adaptive.json up with the level: at once when it changes, and
    /// now and then while it is being earned (so its timestamp stays
    /// within `relax_after` of a restart); a failed write is retried on
    /// the next tick.
    fn save_adaptive(&mut self, changed: bool, now: u64) {
        let refresh = adaptive_state::refresh_every(&self.cfg.adaptive).as_nanos() as u64;
        let due = self.adaptive.level() > 0
            && self.adaptive.pressed()
            && now.saturating_sub(self.adaptive_saved_ns) >= refresh;
        if !(changed || due) {
            return;
        }
        // The level as of the writer's flush, at the end of this tick.
        self.pending.mark(persist::StateFile::Adaptive);
        self.adaptive_saved_ns = now;
    }

    /// Samples the drop rates of the floods under `keys` (a slice of
    /// [`FloodTracker::keys`]; floods gone since are skipped).
    fn sample_flood_rates(&mut self, keys: &[(Cidr, u16)], now: u64) {
        let mask = self.policy.global.ipv6_mask;
        for k in keys {
            let Some(f) = self.floods.get_mut(k) else {
                continue;
            };
            let key = dataplane::bucket_key(f.source.addr(), f.class, f.tier, &mask);
            let Ok(Some(b)) = self.dp.bucket(&key) else {
                continue;
            };
            if let Some((drops, at)) = f.sample
                && now > at
            {
                f.drop_rate = b.drops.saturating_sub(drops) as f64 * 1e9 / (now - at) as f64;
            }
            f.sample = Some((b.drops, now));
        }
    }

    /// The kernel's flood events, for the event loop to poll.
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<aya::maps::MapData>, AgentError> {
        Ok(self.dp.take_events()?)
    }

    /// One record from the ring buffer.
    pub fn on_event(&mut self, bytes: &[u8]) {
        if bytes.len() < size_of::<FloodEvent>() {
            tracing::warn!(len = bytes.len(), "short flood event ignored");
            return;
        }
        // SAFETY: FloodEvent is plain old data and the buffer holds enough bytes.
        let ev: FloodEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if let Some(source) = self.floods.on_event(&ev, self.cfg.ipv6_prefix)
            && self.log_budget.allow(clock::monotonic_ns())
        {
            tracing::info!(
                source = %source,
                class = self.policy.classes.get(ev.class as usize).map_or("?", String::as_str),
                tier = self.policy.tiers.get(ev.tier as usize).map_or("?", String::as_str),
                kind = if ev.kind == shield_common::event::FLOOD_SYNS { "connections" } else { "packets" },
                "flood started"
            );
        }
    }

    /// `[adaptive]` now: its level and the rates it last measured.
    pub fn adaptive(&self) -> &Adaptive {
        &self.adaptive
    }

    pub fn floods(&self) -> &FloodTracker {
        &self.floods
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn attached(&self) -> &[Attached] {
        &self.attached
    }

    pub fn dataplane(&self) -> &Dataplane {
        &self.dp
    }

    pub fn bans(&self) -> &BanBook {
        &self.bans
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// One line for `systemctl status`.
    pub fn status_line(&self) -> String {
        let ifaces: Vec<String> = self
            .attached
            .iter()
            .map(|a| format!("{} ({})", a.iface, a.mode.as_str()))
            .collect();
        format!(
            "enforcing on {}{}; {} bans",
            ifaces.join(", "),
            if self.cfg.dry_run { " in dry run" } else { "" },
            self.bans.len()
        )
    }
}

/// The name in `state_dir` of a file the writer takes from the agent.
fn state_file_name(f: persist::StateFile) -> &'static str {
    match f {
        persist::StateFile::PolicyIds => ids::FILE,
        persist::StateFile::Offences => offences::FILE,
        persist::StateFile::Adaptive => adaptive_state::FILE,
    }
}

/// The agent behind its lock. A panic while holding it leaves the state
/// as it was between two map writes, which the next operation reconciles,
/// so a poisoned lock is taken as it is.
pub fn lock(agent: &std::sync::Mutex<Agent>) -> std::sync::MutexGuard<'_, Agent> {
    agent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `--detach`: removes links and pins under `pin_dir`. The ban journal in
/// `state_dir` stays, so a later start restores the bans.
pub fn detach(pin_dir: &Path) -> Result<pins::Removed, AgentError> {
    Ok(pins::remove_all(pin_dir)?)
}
