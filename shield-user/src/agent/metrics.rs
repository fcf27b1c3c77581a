//! The agent's state as a metrics snapshot, taken once per scrape.

use shield_common::maps::*;

use super::{
    Agent,
    bans::{BanError, BanOrigin},
};
use crate::{
    clock,
    metrics::{
        AutobansRefused, BanTotals, BuildInfo, FeedMetrics, HealthMetrics, InterfaceMetrics,
        MapMetrics, Reloads, Snapshot, Traffic,
    },
};

/// Counters the agent keeps for metrics.
#[derive(Debug, Default)]
pub struct Tallies {
    pub bans: BanTotals,
    pub autobans_refused: AutobansRefused,
    pub reloads: Reloads,
}

impl Tallies {
    pub fn ban_added(&mut self, origin: BanOrigin) {
        match origin {
            BanOrigin::Manual => self.bans.manual += 1,
            BanOrigin::Autoban => self.bans.autoban += 1,
            BanOrigin::Feed => self.bans.feed += 1,
            BanOrigin::Crowdsec => self.bans.crowdsec += 1,
        }
    }

    pub fn autoban_refused(&mut self, e: &BanError) {
        match e {
            BanError::AutobanShare { .. } => self.autobans_refused.share += 1,
            _ => self.autobans_refused.error += 1,
        }
    }
}

impl Agent {
    pub fn metrics_snapshot(&self) -> Snapshot {
        let now = clock::monotonic_ns();
        let traffic = self
            .dp
            .counters()
            .map(|c| Traffic::from(&c))
            .unwrap_or_default();
        let feeds = self
            .feeds
            .states
            .iter()
            .map(|st| FeedMetrics {
                name: st.cfg.name.clone(),
                entries: self.feeds.index.len(st.id) as u64,
                hits: self.dp.feed_hits(st.id).unwrap_or(0),
                last_success_unix: st.last_success_unix,
                errors_total: st.errors_total,
                held: st.held.is_some(),
                held_total: st.held_total,
                covered_v4: st.covered.v4_addresses,
                covered_v6_64: u64::try_from(st.covered.v6_nets64).unwrap_or(u64::MAX),
                rejected_lines: st.rejected,
                refresh_interval_secs: st.cfg.refresh.as_secs(),
            })
            .collect();
        // The ban book keeps which kernel entries its bans occupy (bans
        // sharing one, as a /128 and its /64 do, count once).
        let [ban_v4, ban_v6, ban_net_v4, ban_net_v6] = self.bans.map_entries();
        let [feed_v4, feed_net_v4, feed_v6, feed_net_v6] =
            self.feeds.index.enforced_by_map().map(|n| n as u64);
        let src_v4 = self.policy.sources.keys().filter(|c| c.is_v4()).count() as u64;
        let src_v6 = self.policy.sources.len() as u64 - src_v4;
        // Entry counts the agent knows without walking a map: the source
        // tries are the compiled policy, the ban maps the ban book, the
        // feed maps the feed index. BUCKETS is an LRU the kernel fills and
        // evicts by itself; walking it per scrape is not free, so it
        // reports capacity only.
        let maps = [
            (MAP_SRC_V4, Some(src_v4), SRC_CAPACITY),
            (MAP_SRC_V6, Some(src_v6), SRC_CAPACITY),
            (MAP_BAN_V4, Some(ban_v4), BAN_CAPACITY),
            (MAP_BAN_V6, Some(ban_v6), BAN_CAPACITY),
            (MAP_BAN_NET_V4, Some(ban_net_v4), BAN_NET_CAPACITY),
            (MAP_BAN_NET_V6, Some(ban_net_v6), BAN_NET_CAPACITY),
            (MAP_FEED_V4, Some(feed_v4), FEED_CAPACITY),
            (MAP_FEED_V6, Some(feed_v6), FEED_CAPACITY),
            (MAP_FEED_NET_V4, Some(feed_net_v4), FEED_NET_CAPACITY),
            (MAP_FEED_NET_V6, Some(feed_net_v6), FEED_NET_CAPACITY),
            (MAP_BUCKETS, None, BUCKET_CAPACITY),
        ]
        .into_iter()
        .map(|(name, entries, capacity)| MapMetrics {
            name: name.to_string(),
            entries,
            // As loaded; the compiled-in size if the kernel cannot say.
            capacity: u64::from(self.dp.capacity(name).unwrap_or(capacity)),
        })
        .collect();
        Snapshot {
            traffic,
            feeds,
            bans_active: self.bans.len() as u64,
            bans_total: self.tallies.bans,
            autobans_refused: self.tallies.autobans_refused,
            flood_events_total: self.floods.events_total,
            flood_sources: self.floods.active(now).count() as u64,
            maps,
            buckets_created_total: self.dp.buckets_created().unwrap_or(0),
            flood_events_lost_total: self.dp.events_lost().unwrap_or(0),
            interfaces: self
                .attached
                .iter()
                .map(|a| InterfaceMetrics {
                    iface: a.iface.clone(),
                    mode: a.mode,
                    attached: self.link_held(&a.iface),
                })
                .collect(),
            build: BuildInfo::current(),
            control_requests: None,
            reloads: self.tallies.reloads,
            start_time_unix: self.started_unix,
            crowdsec: self.crowdsec_metrics(),
            flood_log_suppressed_total: self.log_budget.suppressed_total,
            adaptive_level: u64::from(self.adaptive.level()),
            health: HealthMetrics {
                state_write_errors: self.writes.errors_total(),
                pins_missing: self.pins.missing.len() as u64,
                control_dropped: None,
                metrics_dropped: None,
            },
        }
    }
}
