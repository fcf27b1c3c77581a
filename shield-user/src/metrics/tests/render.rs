use proptest::prelude::*;
use shield_common::reason::{Reason, Verdict};

use super::{parse_exposition, sample_snapshot};
use crate::{
    dataplane::AttachMode,
    metrics::{
        render::render,
        snapshot::{FeedMetrics, InterfaceMetrics, MapMetrics, Snapshot},
    },
};

const GOLDEN: &str = r#"# HELP shield_packets_total Packets the XDP program decided on, by verdict and the reason for it.
# TYPE shield_packets_total counter
shield_packets_total{verdict="pass",reason="clean"} 1000
shield_packets_total{verdict="pass",reason="allowed"} 0
shield_packets_total{verdict="pass",reason="banned"} 0
shield_packets_total{verdict="pass",reason="feed"} 0
shield_packets_total{verdict="pass",reason="acl"} 0
shield_packets_total{verdict="pass",reason="ratelimit"} 0
shield_packets_total{verdict="pass",reason="synlimit"} 0
shield_packets_total{verdict="pass",reason="malformed"} 0
shield_packets_total{verdict="pass",reason="non_ip"} 0
shield_packets_total{verdict="drop",reason="clean"} 0
shield_packets_total{verdict="drop",reason="allowed"} 0
shield_packets_total{verdict="drop",reason="banned"} 0
shield_packets_total{verdict="drop",reason="feed"} 0
shield_packets_total{verdict="drop",reason="acl"} 0
shield_packets_total{verdict="drop",reason="ratelimit"} 20
shield_packets_total{verdict="drop",reason="synlimit"} 0
shield_packets_total{verdict="drop",reason="malformed"} 0
shield_packets_total{verdict="drop",reason="non_ip"} 0
shield_packets_total{verdict="would_drop",reason="clean"} 0
shield_packets_total{verdict="would_drop",reason="allowed"} 0
shield_packets_total{verdict="would_drop",reason="banned"} 0
shield_packets_total{verdict="would_drop",reason="feed"} 0
shield_packets_total{verdict="would_drop",reason="acl"} 0
shield_packets_total{verdict="would_drop",reason="ratelimit"} 0
shield_packets_total{verdict="would_drop",reason="synlimit"} 0
shield_packets_total{verdict="would_drop",reason="malformed"} 0
shield_packets_total{verdict="would_drop",reason="non_ip"} 0
# HELP shield_bytes_total Bytes of those packets (whole frames), by verdict and reason.
# TYPE shield_bytes_total counter
shield_bytes_total{verdict="pass",reason="clean"} 64000
shield_bytes_total{verdict="pass",reason="allowed"} 0
shield_bytes_total{verdict="pass",reason="banned"} 0
shield_bytes_total{verdict="pass",reason="feed"} 0
shield_bytes_total{verdict="pass",reason="acl"} 0
shield_bytes_total{verdict="pass",reason="ratelimit"} 0
shield_bytes_total{verdict="pass",reason="synlimit"} 0
shield_bytes_total{verdict="pass",reason="malformed"} 0
shield_bytes_total{verdict="pass",reason="non_ip"} 0
shield_bytes_total{verdict="drop",reason="clean"} 0
shield_bytes_total{verdict="drop",reason="allowed"} 0
shield_bytes_total{verdict="drop",reason="banned"} 0
shield_bytes_total{verdict="drop",reason="feed"} 0
shield_bytes_total{verdict="drop",reason="acl"} 0
shield_bytes_total{verdict="drop",reason="ratelimit"} 1280
shield_bytes_total{verdict="drop",reason="synlimit"} 0
shield_bytes_total{verdict="drop",reason="malformed"} 0
shield_bytes_total{verdict="drop",reason="non_ip"} 0
shield_bytes_total{verdict="would_drop",reason="clean"} 0
shield_bytes_total{verdict="would_drop",reason="allowed"} 0
shield_bytes_total{verdict="would_drop",reason="banned"} 0
shield_bytes_total{verdict="would_drop",reason="feed"} 0
shield_bytes_total{verdict="would_drop",reason="acl"} 0
shield_bytes_total{verdict="would_drop",reason="ratelimit"} 0
shield_bytes_total{verdict="would_drop",reason="synlimit"} 0
shield_bytes_total{verdict="would_drop",reason="malformed"} 0
shield_bytes_total{verdict="would_drop",reason="non_ip"} 0
# HELP shield_feed_entries Prefixes a threat feed has in the data plane.
# TYPE shield_feed_entries gauge
shield_feed_entries{feed="blocklist-de"} 0
shield_feed_entries{feed="spamhaus-drop"} 1234
# HELP shield_feed_hits_total Packets whose source a threat feed lists (dropped, or would_drop in dry run).
# TYPE shield_feed_hits_total counter
shield_feed_hits_total{feed="blocklist-de"} 0
shield_feed_hits_total{feed="spamhaus-drop"} 56
# HELP shield_feed_last_success_timestamp_seconds When a threat feed was last fetched and applied (Unix time); absent until the first success.
# TYPE shield_feed_last_success_timestamp_seconds gauge
shield_feed_last_success_timestamp_seconds{feed="spamhaus-drop"} 1700000000
# HELP shield_feed_errors_total Failed refreshes of a threat feed (fetch, parse or apply).
# TYPE shield_feed_errors_total counter
shield_feed_errors_total{feed="blocklist-de"} 5
shield_feed_errors_total{feed="spamhaus-drop"} 2
# HELP shield_feed_held 1 when a feed's last refresh was held back by a guard (shrink, growth or address cap) and its previous entries stay.
# TYPE shield_feed_held gauge
shield_feed_held{feed="blocklist-de"} 1
shield_feed_held{feed="spamhaus-drop"} 0
# HELP shield_feed_held_total Refreshes of a threat feed held back, by guard: shrink (more than half gone), growth (covered space more than doubled), cap (over max_addresses).
# TYPE shield_feed_held_total counter
shield_feed_held_total{feed="blocklist-de",guard="shrink"} 0
shield_feed_held_total{feed="blocklist-de",guard="growth"} 2
shield_feed_held_total{feed="blocklist-de",guard="cap"} 3
shield_feed_held_total{feed="spamhaus-drop",guard="shrink"} 1
shield_feed_held_total{feed="spamhaus-drop",guard="growth"} 0
shield_feed_held_total{feed="spamhaus-drop",guard="cap"} 0
# HELP shield_feed_covered_addresses Address space a threat feed's enforced entries cover, overlaps once: family ipv4 in addresses, ipv6 in /64 networks.
# TYPE shield_feed_covered_addresses gauge
shield_feed_covered_addresses{feed="blocklist-de",family="ipv4"} 0
shield_feed_covered_addresses{feed="blocklist-de",family="ipv6"} 0
shield_feed_covered_addresses{feed="spamhaus-drop",family="ipv4"} 12345678
shield_feed_covered_addresses{feed="spamhaus-drop",family="ipv6"} 1099511627776
# HELP shield_feed_rejected_lines Lines of a threat feed its last parse rejected as malformed.
# TYPE shield_feed_rejected_lines gauge
shield_feed_rejected_lines{feed="blocklist-de"} 0
shield_feed_rejected_lines{feed="spamhaus-drop"} 3
# HELP shield_bans_active Bans in force now, from every origin.
# TYPE shield_bans_active gauge
shield_bans_active 7
# HELP shield_bans_total Bans added since the agent started, by origin.
# TYPE shield_bans_total counter
shield_bans_total{source="manual"} 1
shield_bans_total{source="autoban"} 5
shield_bans_total{source="feed"} 2
shield_bans_total{source="crowdsec"} 4
# HELP shield_flood_events_total Flood events from the data plane: once per second per source and class over a limit.
# TYPE shield_flood_events_total counter
shield_flood_events_total 99
# HELP shield_flood_events_lost_total Flood events the data plane could not queue because the ring buffer was full; the packets were still dropped, and bans can still be decided because the next event for that source comes a second later.
# TYPE shield_flood_events_lost_total counter
shield_flood_events_lost_total 12
# HELP shield_flood_sources Sources over a limit now.
# TYPE shield_flood_sources gauge
shield_flood_sources 3
# HELP shield_map_entries Entries in a BPF map; absent for maps that are not counted.
# TYPE shield_map_entries gauge
shield_map_entries{map="BAN_V4"} 6
# HELP shield_map_capacity Maximum entries of a BPF map.
# TYPE shield_map_capacity gauge
shield_map_capacity{map="BAN_V4"} 262144
shield_map_capacity{map="BUCKETS"} 262144
# HELP shield_buckets_created_total Rate-limit buckets created by the data plane; beyond map_capacity{map="BUCKETS"} each one evicts the least recently used bucket.
# TYPE shield_buckets_created_total counter
shield_buckets_created_total 300000
# HELP shield_xdp_attached 1 when the XDP program is attached to the interface in this mode.
# TYPE shield_xdp_attached gauge
shield_xdp_attached{iface="eth0",mode="native"} 1
# HELP shield_build_info Always 1; the labels say which build of shield-agent runs.
# TYPE shield_build_info gauge
shield_build_info{version="0.1.0",commit="abc123"} 1
# HELP shield_control_requests_total Control-socket requests since the agent started, by outcome.
# TYPE shield_control_requests_total counter
shield_control_requests_total{outcome="ok"} 10
shield_control_requests_total{outcome="error"} 1
shield_control_requests_total{outcome="denied"} 4
# HELP shield_reloads_total Config reloads since the agent started; error means the new config was refused.
# TYPE shield_reloads_total counter
shield_reloads_total{result="ok"} 2
shield_reloads_total{result="error"} 1
# HELP shield_start_time_seconds When the agent process started (Unix time).
# TYPE shield_start_time_seconds gauge
shield_start_time_seconds 1699999000
# HELP shield_feed_refresh_interval_seconds A threat feed's configured refresh interval; a feed is stale when its last success is much older.
# TYPE shield_feed_refresh_interval_seconds gauge
shield_feed_refresh_interval_seconds{feed="blocklist-de"} 600
shield_feed_refresh_interval_seconds{feed="spamhaus-drop"} 3600
# HELP shield_flood_log_suppressed_total Per-source flood and autoban log lines held back by the log rate limit.
# TYPE shield_flood_log_suppressed_total counter
shield_flood_log_suppressed_total 42
# HELP shield_adaptive_level Steps by which [adaptive] has tightened the default tier's limits; 0 means as configured.
# TYPE shield_adaptive_level gauge
shield_adaptive_level 2
# HELP shield_state_write_errors_total Failed writes to state_dir (bans journal, allow entries, ids, feed copies), retries included; enforcement is unaffected.
# TYPE shield_state_write_errors_total counter
shield_state_write_errors_total 3
# HELP shield_pins_missing Pins missing under pin_dir at the last check (bpffs unmounted or cleared); enforcement continues, a restart would not find them.
# TYPE shield_pins_missing gauge
shield_pins_missing 0
# HELP shield_control_connections_dropped_total Control-socket connections refused or cut, by reason (busy, evicted, timeout, oversized).
# TYPE shield_control_connections_dropped_total counter
shield_control_connections_dropped_total{reason="busy"} 0
shield_control_connections_dropped_total{reason="evicted"} 7
shield_control_connections_dropped_total{reason="timeout"} 2
shield_control_connections_dropped_total{reason="oversized"} 1
# HELP shield_metrics_connections_dropped_total Metrics-endpoint connections refused or cut before an answer, by reason (busy, evicted, timeout, oversized).
# TYPE shield_metrics_connections_dropped_total counter
shield_metrics_connections_dropped_total{reason="busy"} 5
shield_metrics_connections_dropped_total{reason="evicted"} 11
shield_metrics_connections_dropped_total{reason="timeout"} 0
shield_metrics_connections_dropped_total{reason="oversized"} 4
# HELP shield_crowdsec_decisions CrowdSec decisions held now (Ip and Range, the configured types), by origin.
# TYPE shield_crowdsec_decisions gauge
shield_crowdsec_decisions{origin="CAPI"} 40
shield_crowdsec_decisions{origin="cscli"} 3
# HELP shield_crowdsec_last_poll_success_timestamp_seconds When a poll of the CrowdSec LAPI last succeeded (Unix time); absent until the first success.
# TYPE shield_crowdsec_last_poll_success_timestamp_seconds gauge
shield_crowdsec_last_poll_success_timestamp_seconds 1700000100
# HELP shield_crowdsec_errors_total Failed polls, logins and alert pushes against the CrowdSec LAPI.
# TYPE shield_crowdsec_errors_total counter
shield_crowdsec_errors_total 6
# HELP shield_crowdsec_alerts_pushed_total Autobans the CrowdSec LAPI accepted as alerts.
# TYPE shield_crowdsec_alerts_pushed_total counter
shield_crowdsec_alerts_pushed_total 8
# HELP shield_crowdsec_alerts_dropped_total Autobans dropped without being pushed because the CrowdSec alert spool was full (10,000 alerts).
# TYPE shield_crowdsec_alerts_dropped_total counter
shield_crowdsec_alerts_dropped_total 5
# HELP shield_crowdsec_spool_writes_total Writes of the CrowdSec alert spool to state_dir (at most one a second).
# TYPE shield_crowdsec_spool_writes_total counter
shield_crowdsec_spool_writes_total 12
"#;

#[test]
fn golden() {
    let text = render(&sample_snapshot());
    if text != GOLDEN {
        println!("{text}");
    }
    assert_eq!(text, GOLDEN);
}

/// Every family docs/metrics.md documents, in the order they are rendered.
const FAMILIES: [(&str, &str); 36] = [
    ("shield_packets_total", "counter"),
    ("shield_bytes_total", "counter"),
    ("shield_feed_entries", "gauge"),
    ("shield_feed_hits_total", "counter"),
    ("shield_feed_last_success_timestamp_seconds", "gauge"),
    ("shield_feed_errors_total", "counter"),
    ("shield_feed_held", "gauge"),
    ("shield_feed_held_total", "counter"),
    ("shield_feed_covered_addresses", "gauge"),
    ("shield_feed_rejected_lines", "gauge"),
    ("shield_bans_active", "gauge"),
    ("shield_bans_total", "counter"),
    ("shield_flood_events_total", "counter"),
    ("shield_flood_events_lost_total", "counter"),
    ("shield_flood_sources", "gauge"),
    ("shield_map_entries", "gauge"),
    ("shield_map_capacity", "gauge"),
    ("shield_buckets_created_total", "counter"),
    ("shield_xdp_attached", "gauge"),
    ("shield_build_info", "gauge"),
    ("shield_control_requests_total", "counter"),
    ("shield_reloads_total", "counter"),
    ("shield_start_time_seconds", "gauge"),
    ("shield_feed_refresh_interval_seconds", "gauge"),
    ("shield_flood_log_suppressed_total", "counter"),
    ("shield_adaptive_level", "gauge"),
    ("shield_state_write_errors_total", "counter"),
    ("shield_pins_missing", "gauge"),
    ("shield_control_connections_dropped_total", "counter"),
    ("shield_metrics_connections_dropped_total", "counter"),
    ("shield_crowdsec_decisions", "gauge"),
    (
        "shield_crowdsec_last_poll_success_timestamp_seconds",
        "gauge",
    ),
    ("shield_crowdsec_errors_total", "counter"),
    ("shield_crowdsec_alerts_pushed_total", "counter"),
    ("shield_crowdsec_alerts_dropped_total", "counter"),
    ("shield_crowdsec_spool_writes_total", "counter"),
];

#[test]
fn parses_back_with_every_family_once() {
    for snap in [sample_snapshot(), Snapshot::default()] {
        let text = render(&snap);
        let families = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let got: Vec<(&str, &str)> = families
            .iter()
            .map(|f| (f.name.as_str(), f.kind.as_str()))
            .collect();
        assert_eq!(got, FAMILIES);
    }
}

#[test]
fn every_verdict_reason_pair_is_present_from_the_first_scrape() {
    let families = parse_exposition(&render(&Snapshot::default())).unwrap_or_default();
    for name in ["shield_packets_total", "shield_bytes_total"] {
        let Some(f) = families.iter().find(|f| f.name == name) else {
            panic!("{name} missing");
        };
        assert_eq!(f.samples.len(), Verdict::ALL.len() * Reason::ALL.len());
        for v in Verdict::ALL {
            for r in Reason::ALL {
                let labels = [("verdict", v.name()), ("reason", r.name())];
                assert_eq!(f.value(&labels), Some(0.0), "{name} {labels:?}");
            }
        }
    }
}

#[test]
fn empty_snapshot_has_no_optional_samples() {
    let families = parse_exposition(&render(&Snapshot::default())).unwrap_or_default();
    let count = |name: &str| {
        families
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.samples.len())
    };
    for name in [
        "shield_feed_entries",
        "shield_feed_last_success_timestamp_seconds",
        "shield_map_entries",
        "shield_map_capacity",
        "shield_xdp_attached",
        // Not counted by this agent: no made-up zeros.
        "shield_control_requests_total",
        "shield_control_connections_dropped_total",
        "shield_metrics_connections_dropped_total",
        // No [crowdsec]: announced, never sampled.
        "shield_crowdsec_decisions",
        "shield_crowdsec_last_poll_success_timestamp_seconds",
        "shield_crowdsec_errors_total",
        "shield_crowdsec_alerts_pushed_total",
        "shield_crowdsec_alerts_dropped_total",
        "shield_crowdsec_spool_writes_total",
    ] {
        assert_eq!(count(name), Some(0), "{name}");
    }
    assert_eq!(count("shield_bans_total"), Some(4));
    assert_eq!(count("shield_reloads_total"), Some(2));
    assert_eq!(count("shield_build_info"), Some(1));
}

#[test]
fn label_values_are_escaped() {
    let nasty = "a\"b\\c\nd\re}{,=";
    let snap = Snapshot {
        interfaces: vec![InterfaceMetrics {
            iface: nasty.into(),
            mode: AttachMode::Skb,
            attached: false,
        }],
        feeds: vec![FeedMetrics {
            name: nasty.into(),
            ..FeedMetrics::default()
        }],
        maps: vec![MapMetrics {
            name: nasty.into(),
            entries: Some(1),
            capacity: 2,
        }],
        ..Snapshot::default()
    };
    let mut snap = snap;
    snap.build.version = "1.0\"\n".into();
    snap.build.commit = Some("\\".into());
    let text = render(&snap);
    assert!(
        text.contains("shield_xdp_attached{iface=\"a\\\"b\\\\c\\nd\re}{,=\",mode=\"skb\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("shield_build_info{version=\"1.0\\\"\\n\",commit=\"\\\\\"} 1\n"),
        "{text}"
    );
    let families = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (family, label) in [
        ("shield_xdp_attached", "iface"),
        ("shield_feed_entries", "feed"),
        ("shield_map_entries", "map"),
    ] {
        let f = families.iter().find(|f| f.name == family);
        let v = f.and_then(|f| f.samples.first()).and_then(|s| {
            s.labels
                .iter()
                .find(|(k, _)| k == label)
                .map(|(_, v)| v.clone())
        });
        assert_eq!(v.as_deref(), Some(nasty), "{family}");
    }
}

#[test]
fn order_of_input_does_not_matter_and_repeats_are_dropped() {
    let feed = |name: &str, entries| FeedMetrics {
        name: name.into(),
        entries,
        ..FeedMetrics::default()
    };
    let a = Snapshot {
        feeds: vec![feed("b", 2), feed("a", 1), feed("c", 3)],
        ..Snapshot::default()
    };
    let b = Snapshot {
        feeds: vec![feed("c", 3), feed("b", 2), feed("a", 1), feed("a", 99)],
        ..Snapshot::default()
    };
    let text = render(&a);
    assert_eq!(text, render(&b));
    let families = parse_exposition(&text).unwrap_or_default();
    let entries = families.iter().find(|f| f.name == "shield_feed_entries");
    let got: Vec<(String, f64)> = entries
        .map(|f| {
            f.samples
                .iter()
                .map(|s| (s.labels[0].1.clone(), s.value))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        got,
        [("a".into(), 1.0), ("b".into(), 2.0), ("c".into(), 3.0)]
    );
}

#[test]
fn large_counters_are_exact_integers() {
    let mut s = Snapshot::default();
    s.traffic.set(
        Verdict::WouldDrop,
        Reason::NonIp,
        shield_common::maps::Counter {
            packets: u64::MAX,
            bytes: 1,
        },
    );
    let text = render(&s);
    assert!(text.contains(
        "shield_packets_total{verdict=\"would_drop\",reason=\"non_ip\"} 18446744073709551615\n"
    ));
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,12}",
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![Just('\\'), Just('"'), Just('\n'), Just('x')],
            0..8
        )
        .prop_map(|v| v.into_iter().collect()),
    ]
}

proptest! {
    /// Whatever names the agent hands over, the output parses, every label
    /// value reads back as given, and each distinct name is one series.
    #[test]
    fn any_names_render_valid_exposition(
        feeds in proptest::collection::vec((any_name(), any::<u64>(), proptest::option::of(any::<u64>())), 0..6),
        maps in proptest::collection::vec((any_name(), proptest::option::of(any::<u64>())), 0..6),
        ifaces in proptest::collection::vec((any_name(), any::<bool>()), 0..4),
        version in any_name(),
    ) {
        let mut s = Snapshot {
            feeds: feeds.iter().map(|(name, entries, last)| FeedMetrics {
                name: name.clone(),
                entries: *entries,
                last_success_unix: *last,
                ..FeedMetrics::default()
            }).collect(),
            maps: maps.iter().map(|(name, entries)| MapMetrics {
                name: name.clone(),
                entries: *entries,
                capacity: 1,
            }).collect(),
            interfaces: ifaces.iter().map(|(iface, attached)| InterfaceMetrics {
                iface: iface.clone(),
                mode: AttachMode::Native,
                attached: *attached,
            }).collect(),
            ..Snapshot::default()
        };
        s.build.version = version.clone();
        let text = render(&s);
        let families = parse_exposition(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let labels_of = |family: &str, label: &str| -> Vec<String> {
            families.iter().find(|f| f.name == family).map(|f| {
                f.samples.iter().filter_map(|s| {
                    s.labels.iter().find(|(k, _)| k == label).map(|(_, v)| v.clone())
                }).collect()
            }).unwrap_or_default()
        };
        let unique = |names: Vec<String>| {
            let mut n = names;
            n.sort();
            n.dedup();
            n
        };
        prop_assert_eq!(labels_of("shield_feed_entries", "feed"), unique(feeds.iter().map(|f| f.0.clone()).collect()));
        prop_assert_eq!(labels_of("shield_map_capacity", "map"), unique(maps.iter().map(|m| m.0.clone()).collect()));
        prop_assert_eq!(labels_of("shield_xdp_attached", "iface"), unique(ifaces.iter().map(|i| i.0.clone()).collect()));
        prop_assert_eq!(labels_of("shield_build_info", "version"), vec![version]);
    }
}
