//! What one scrape shows: plain data the agent fills while it holds its
//! state, so that rendering and serving never touch the agent's locks or
//! the kernel maps.

use shield_common::{
    maps::Counter,
    reason::{COUNTER_SLOTS, Reason, Verdict, counter_index},
};

use crate::dataplane::{AttachMode, Counters};

/// Everything `/metrics` reports, as of one moment.
///
/// Lists (feeds, maps, interfaces) may come in any order and are rendered
/// sorted by name; a name given twice is rendered once (the first), since
/// a duplicate series would make Prometheus reject the whole scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Packets and bytes per (verdict, reason), summed over CPUs.
    pub traffic: Traffic,
    pub feeds: Vec<FeedMetrics>,
    /// Bans in force now (manual, autoban and feed-driven).
    pub bans_active: u64,
    /// Bans ever added since the agent started, by origin.
    pub bans_total: BanTotals,
    /// Flood events read from the data plane's ring buffer.
    pub flood_events_total: u64,
    /// Sources over a limit now.
    pub flood_sources: u64,
    pub maps: Vec<MapMetrics>,
    /// Rate-limit buckets the data plane has created (`BUCKETS_CREATED`).
    /// Buckets leave `BUCKETS` only by LRU eviction, so past the map's
    /// capacity every creation is an eviction.
    pub buckets_created_total: u64,
    /// Flood events lost because the ring buffer was full (`EVENTS_LOST`).
    pub flood_events_lost_total: u64,
    pub interfaces: Vec<InterfaceMetrics>,
    pub build: BuildInfo,
    /// `None` when the agent does not count control requests: the family
    /// is then shown without samples rather than with made-up zeros.
    pub control_requests: Option<ControlRequests>,
    pub reloads: Reloads,
    /// When this agent process started, in Unix seconds.
    pub start_time_unix: u64,
    /// Per-source flood and autoban log lines held back by the log budget.
    pub flood_log_suppressed_total: u64,
    /// `[adaptive]` steps the default tier's limits are tightened by now.
    pub adaptive_level: u64,
    pub health: HealthMetrics,
    /// `None` when no `[crowdsec]` is configured: its families are left out.
    pub crowdsec: Option<CrowdsecMetrics>,
}

/// The CrowdSec LAPI link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrowdsecMetrics {
    /// Decisions held now, by the origin the LAPI gave them (`cscli`,
    /// `crowdsec`, `CAPI`, …).
    pub decisions: Vec<(String, u64)>,
    /// When a poll last succeeded, in Unix seconds; `None` until then.
    pub last_poll_success_unix: Option<u64>,
    /// Failed polls, logins and pushes since the agent started.
    pub errors_total: u64,
    /// Autobans the LAPI accepted as alerts.
    pub alerts_pushed_total: u64,
    /// Autobans dropped unpushed because the spool was full.
    pub alerts_dropped_total: u64,
    /// Writes of the alert spool's file.
    pub spool_writes_total: u64,
}

/// Failures that do not stop enforcement but need an operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthMetrics {
    /// Failed writes to `state_dir`, retries included.
    pub state_write_errors: u64,
    /// Pins missing under `pin_dir` at the last check.
    pub pins_missing: u64,
    /// Control connections refused or cut: `None` when not counted.
    pub control_dropped: Option<ControlDropped>,
    /// Metrics-endpoint connections refused or cut (same reasons):
    /// `None` when not counted.
    pub metrics_dropped: Option<ControlDropped>,
}

/// Connections a server (the control socket's, or the metrics endpoint's)
/// refused or cut, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlDropped {
    /// Over the connection cap, with nothing to evict.
    pub busy: u64,
    /// Closed to make room: the oldest connection still waiting for a
    /// complete request.
    pub evicted: u64,
    /// No complete request in time (slow or silent clients).
    pub timeout: u64,
    /// A frame over the request size limit.
    pub oversized: u64,
}

/// The data plane's counters, one per (verdict, reason), laid out like the
/// kernel's counters array so the agent can copy it in one go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traffic {
    slots: [Counter; COUNTER_SLOTS as usize],
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic {
            slots: [Counter::default(); COUNTER_SLOTS as usize],
        }
    }
}

impl Traffic {
    pub fn get(&self, verdict: Verdict, reason: Reason) -> Counter {
        // counter_index is in range for every (Verdict, Reason) by
        // construction; `get` keeps that an invariant rather than a panic.
        self.slots
            .get(counter_index(verdict, reason) as usize)
            .copied()
            .unwrap_or_default()
    }

    pub fn set(&mut self, verdict: Verdict, reason: Reason, counter: Counter) {
        if let Some(slot) = self.slots.get_mut(counter_index(verdict, reason) as usize) {
            *slot = counter;
        }
    }
}

impl From<&Counters> for Traffic {
    fn from(counters: &Counters) -> Traffic {
        let mut t = Traffic::default();
        for (v, r, c) in counters.iter() {
            t.set(v, r, c);
        }
        t
    }
}

/// One threat feed's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedMetrics {
    /// The `[[feed]] name` from the config.
    pub name: String,
    /// Prefixes the feed has in the data plane now.
    pub entries: u64,
    /// Packets whose source this feed lists (`FEED_HITS`), dropped or, in
    /// dry run, counted as would_drop.
    pub hits: u64,
    /// When the feed was last fetched and applied, in Unix seconds; `None`
    /// until the first success (the sample is then left out, so that an
    /// alert on freshness does not see the epoch).
    pub last_success_unix: Option<u64>,
    /// Failed refreshes (fetch, parse or apply) since the agent started.
    pub errors_total: u64,
    /// The last refresh was held back by a guard (shrink, growth or the
    /// address cap): the feed keeps its previous entries.
    pub held: bool,
    /// Refreshes held back since the agent started, by guard: shrink,
    /// growth, cap.
    pub held_total: [u64; 3],
    /// Address space the enforced entries cover: IPv4 addresses, and IPv6
    /// /64 networks (saturating).
    pub covered_v4: u64,
    pub covered_v6_64: u64,
    /// Lines the last parse rejected as garbage.
    pub rejected_lines: u64,
    /// The configured `refresh`, in seconds: staleness is measured against it.
    pub refresh_interval_secs: u64,
}

/// Bans added since the agent started, by who added them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanTotals {
    /// `shieldctl ban add`.
    pub manual: u64,
    /// Sources that stayed over a limit for `[autoban] after`.
    pub autoban: u64,
    /// Decisions pushed by a source such as CrowdSec.
    pub feed: u64,
    /// Prefixes a CrowdSec decision banned.
    pub crowdsec: u64,
}

/// One BPF map's fill.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapMetrics {
    /// The kernel map name, e.g. `BAN_V4`.
    pub name: String,
    /// Entries now; `None` for maps the agent does not count (iterating a
    /// large hash map per scrape is not free). The sample is then left out.
    pub entries: Option<u64>,
    /// `max_entries`.
    pub capacity: u64,
}

/// One interface the config names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceMetrics {
    pub iface: String,
    /// The mode it is attached in, or was last tried in.
    pub mode: AttachMode,
    pub attached: bool,
}

/// What build this agent is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    /// The git commit, when the build set `SHIELD_GIT_COMMIT`.
    pub commit: Option<String>,
}

impl BuildInfo {
    /// This binary's own version, and commit if the build recorded one.
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: option_env!("SHIELD_GIT_COMMIT")
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        }
    }
}

impl Default for BuildInfo {
    fn default() -> BuildInfo {
        BuildInfo::current()
    }
}

/// Control-socket requests since the agent started, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlRequests {
    pub ok: u64,
    /// Answered with an error (bad argument, refused, internal).
    pub error: u64,
    /// Refused because the peer is neither root nor in group `shield`.
    pub denied: u64,
}

/// Config reloads since the agent started (SIGHUP or `shieldctl reload`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reloads {
    pub ok: u64,
    /// Refused: the new config was invalid and the running policy stayed.
    pub error: u64,
}
