//! The agent's state as a metrics snapshot, taken once per scrape.

use shield_common::maps::*;

use super::{Agent, bans::BanOrigin};
use crate::{
    clock,
    metrics::{
        BanTotals, BuildInfo, FeedMetrics, InterfaceMetrics, MapMetrics, Reloads, Snapshot, Traffic,
    },
};

/// Counters the agent keeps for metrics.
#[derive(Debug, Default)]
pub struct Tallies {
    pub bans: BanTotals,
    pub reloads: Reloads,
}

impl Tallies {
    pub fn ban_added(&mut self, origin: BanOrigin) {
        match origin {
            BanOrigin::Manual => self.bans.manual += 1,
            BanOrigin::Autoban => self.bans.autoban += 1,
            BanOrigin::Feed => self.bans.feed += 1,
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
                rejected_lines: st.rejected,
            })
            .collect();
        let src_v4 = self.policy.sources.keys().filter(|c| c.is_v4()).count() as u64;
        let src_v6 = self.policy.sources.len() as u64 - src_v4;
        // Entry counts the agent knows without walking a map (the source
        // tries are the compiled policy); walking the big hash maps on
        // every scrape is not free, so those report capacity only.
        let maps = [
            (MAP_SRC_V4, Some(src_v4), SRC_CAPACITY),
            (MAP_SRC_V6, Some(src_v6), SRC_CAPACITY),
            (MAP_BAN_V4, None, BAN_CAPACITY),
            (MAP_BAN_V6, None, BAN_CAPACITY),
            (MAP_BAN_NET_V4, None, BAN_NET_CAPACITY),
            (MAP_BAN_NET_V6, None, BAN_NET_CAPACITY),
            (MAP_FEED_V4, None, FEED_CAPACITY),
            (MAP_FEED_V6, None, FEED_CAPACITY),
            (MAP_FEED_NET_V4, None, FEED_NET_CAPACITY),
            (MAP_FEED_NET_V6, None, FEED_NET_CAPACITY),
            (MAP_BUCKETS, None, BUCKET_CAPACITY),
        ]
        .into_iter()
        .map(|(name, entries, capacity)| MapMetrics {
            name: name.to_string(),
            entries,
            capacity: u64::from(capacity),
        })
        .collect();
        Snapshot {
            traffic,
            feeds,
            bans_active: self.bans.len() as u64,
            bans_total: self.tallies.bans,
            flood_events_total: self.floods.events_total,
            flood_sources: self.floods.active(now).count() as u64,
            maps,
            buckets_created_total: self.dp.buckets_created().unwrap_or(0),
            interfaces: self
                .attached
                .iter()
                .map(|a| InterfaceMetrics {
                    iface: a.iface.clone(),
                    mode: a.mode,
                    attached: !self.detached,
                })
                .collect(),
            build: BuildInfo::current(),
            control_requests: None,
            reloads: self.tallies.reloads,
            start_time_unix: self.started_unix,
        }
    }
}
