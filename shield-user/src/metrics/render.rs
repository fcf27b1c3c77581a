//! The Prometheus text exposition format, version 0.0.4, written by the
//! `prometheus-client` crate's encoder.
//!
//! Every family is always announced with `# HELP` and `# TYPE`, even with no
//! samples, so the set of families does not depend on the agent's state.
//! Output is deterministic: families in a fixed order, list items sorted by
//! name, so two scrapes of the same state are byte-identical. That is why
//! the families are not the crate's registered metrics (a `Family` keeps its
//! series in a hash map, and the agent's numbers live in the kernel maps
//! anyway): one [`Collector`] encodes the snapshot, in order, per scrape.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use shield_common::reason::{Reason, Verdict};

use super::snapshot::{
    ControlDropped, CrowdsecMetrics, FeedMetrics, InterfaceMetrics, MapMetrics, Snapshot,
};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `s` as a complete exposition, ending in a newline.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out::default();

    o.family(
        "shield_packets_total",
        "counter",
        "Packets the XDP program decided on, by verdict and the reason for it.",
    );
    for v in Verdict::ALL {
        for r in Reason::ALL {
            let labels = [("verdict", v.name()), ("reason", r.name())];
            o.sample("shield_packets_total", &labels, s.traffic.get(v, r).packets);
        }
    }
    o.family(
        "shield_bytes_total",
        "counter",
        "Bytes of those packets (whole frames), by verdict and reason.",
    );
    for v in Verdict::ALL {
        for r in Reason::ALL {
            let labels = [("verdict", v.name()), ("reason", r.name())];
            o.sample("shield_bytes_total", &labels, s.traffic.get(v, r).bytes);
        }
    }

    let feeds = unique_sorted(&s.feeds, |f: &FeedMetrics| &f.name);
    o.feed_family(
        &feeds,
        "shield_feed_entries",
        "gauge",
        "Prefixes a threat feed has in the data plane.",
        |f| Some(f.entries),
    );
    o.feed_family(
        &feeds,
        "shield_feed_hits_total",
        "counter",
        "Packets whose source a threat feed lists (dropped, or would_drop in dry run).",
        |f| Some(f.hits),
    );
    o.feed_family(
        &feeds,
        "shield_feed_last_success_timestamp_seconds",
        "gauge",
        "When a threat feed was last fetched and applied (Unix time); absent until the first success.",
        |f| f.last_success_unix,
    );
    o.feed_family(
        &feeds,
        "shield_feed_errors_total",
        "counter",
        "Failed refreshes of a threat feed (fetch, parse or apply).",
        |f| Some(f.errors_total),
    );
    o.feed_family(
        &feeds,
        "shield_feed_held",
        "gauge",
        "1 when a feed's last refresh was held back by a guard (shrink, growth or address cap) and its previous entries stay.",
        |f| Some(u64::from(f.held)),
    );
    o.family(
        "shield_feed_held_total",
        "counter",
        "Refreshes of a threat feed held back, by guard: shrink (more than half gone), growth (covered space more than doubled), cap (over max_addresses).",
    );
    for f in &feeds {
        for (i, guard) in ["shrink", "growth", "cap"].into_iter().enumerate() {
            let labels = [("feed", f.name.as_str()), ("guard", guard)];
            o.sample("shield_feed_held_total", &labels, f.held_total[i]);
        }
    }
    o.family(
        "shield_feed_covered_addresses",
        "gauge",
        "Address space a threat feed's enforced entries cover, overlaps once: family ipv4 in addresses, ipv6 in /64 networks.",
    );
    for f in &feeds {
        for (family, v) in [("ipv4", f.covered_v4), ("ipv6", f.covered_v6_64)] {
            let labels = [("feed", f.name.as_str()), ("family", family)];
            o.sample("shield_feed_covered_addresses", &labels, v);
        }
    }
    o.feed_family(
        &feeds,
        "shield_feed_rejected_lines",
        "gauge",
        "Lines of a threat feed its last parse rejected as malformed.",
        |f| Some(f.rejected_lines),
    );

    o.family(
        "shield_bans_active",
        "gauge",
        "Bans in force now, from every origin.",
    );
    o.sample("shield_bans_active", &[], s.bans_active);
    o.family(
        "shield_bans_total",
        "counter",
        "Bans added since the agent started, by origin.",
    );
    let b = s.bans_total;
    for (source, n) in [
        ("manual", b.manual),
        ("autoban", b.autoban),
        ("feed", b.feed),
        ("crowdsec", b.crowdsec),
    ] {
        o.sample("shield_bans_total", &[("source", source)], n);
    }

    o.family(
        "shield_flood_events_total",
        "counter",
        "Flood events from the data plane: once per second per source and class over a limit.",
    );
    o.sample("shield_flood_events_total", &[], s.flood_events_total);
    o.family(
        "shield_flood_events_lost_total",
        "counter",
        "Flood events the data plane could not queue because the ring buffer was full; the packets were still dropped, and bans can still be decided because the next event for that source comes a second later.",
    );
    o.sample(
        "shield_flood_events_lost_total",
        &[],
        s.flood_events_lost_total,
    );
    o.family("shield_flood_sources", "gauge", "Sources over a limit now.");
    o.sample("shield_flood_sources", &[], s.flood_sources);

    let maps = unique_sorted(&s.maps, |m: &MapMetrics| &m.name);
    o.family(
        "shield_map_entries",
        "gauge",
        "Entries in a BPF map; absent for maps that are not counted.",
    );
    for m in &maps {
        if let Some(n) = m.entries {
            o.sample("shield_map_entries", &[("map", &m.name)], n);
        }
    }
    o.family(
        "shield_map_capacity",
        "gauge",
        "Maximum entries of a BPF map.",
    );
    for m in &maps {
        o.sample("shield_map_capacity", &[("map", &m.name)], m.capacity);
    }
    o.family(
        "shield_buckets_created_total",
        "counter",
        "Rate-limit buckets created by the data plane; beyond map_capacity{map=\"BUCKETS\"} each one evicts the least recently used bucket.",
    );
    o.sample("shield_buckets_created_total", &[], s.buckets_created_total);

    let ifaces = unique_sorted(&s.interfaces, |i: &InterfaceMetrics| &i.iface);
    o.family(
        "shield_xdp_attached",
        "gauge",
        "1 when the XDP program is attached to the interface in this mode.",
    );
    for i in &ifaces {
        let labels = [("iface", i.iface.as_str()), ("mode", i.mode.as_str())];
        o.sample("shield_xdp_attached", &labels, u64::from(i.attached));
    }

    o.family(
        "shield_build_info",
        "gauge",
        "Always 1; the labels say which build of shield-agent runs.",
    );
    let commit = s.build.commit.as_deref().unwrap_or("unknown");
    let labels = [("version", s.build.version.as_str()), ("commit", commit)];
    o.sample("shield_build_info", &labels, 1);

    o.family(
        "shield_control_requests_total",
        "counter",
        "Control-socket requests since the agent started, by outcome.",
    );
    if let Some(c) = s.control_requests {
        for (outcome, n) in [("ok", c.ok), ("error", c.error), ("denied", c.denied)] {
            o.sample("shield_control_requests_total", &[("outcome", outcome)], n);
        }
    }
    o.family(
        "shield_reloads_total",
        "counter",
        "Config reloads since the agent started; error means the new config was refused.",
    );
    for (result, n) in [("ok", s.reloads.ok), ("error", s.reloads.error)] {
        o.sample("shield_reloads_total", &[("result", result)], n);
    }
    o.family(
        "shield_start_time_seconds",
        "gauge",
        "When the agent process started (Unix time).",
    );
    o.sample("shield_start_time_seconds", &[], s.start_time_unix);

    o.feed_family(
        &feeds,
        "shield_feed_refresh_interval_seconds",
        "gauge",
        "A threat feed's configured refresh interval; a feed is stale when its last success is much older.",
        |f| Some(f.refresh_interval_secs),
    );
    o.family(
        "shield_flood_log_suppressed_total",
        "counter",
        "Per-source flood and autoban log lines held back by the log rate limit.",
    );
    o.sample(
        "shield_flood_log_suppressed_total",
        &[],
        s.flood_log_suppressed_total,
    );
    o.family(
        "shield_adaptive_level",
        "gauge",
        "Steps by which [adaptive] has tightened the default tier's limits; 0 means as configured.",
    );
    o.sample("shield_adaptive_level", &[], s.adaptive_level);

    o.family(
        "shield_state_write_errors_total",
        "counter",
        "Failed writes to state_dir (bans journal, allow entries, ids, feed copies), retries included; enforcement is unaffected.",
    );
    o.sample(
        "shield_state_write_errors_total",
        &[],
        s.health.state_write_errors,
    );
    o.family(
        "shield_pins_missing",
        "gauge",
        "Pins missing under pin_dir at the last check (bpffs unmounted or cleared); enforcement continues, a restart would not find them.",
    );
    o.sample("shield_pins_missing", &[], s.health.pins_missing);
    connection_drops(
        &mut o,
        "shield_control_connections_dropped_total",
        "Control-socket connections refused or cut, by reason (busy, evicted, timeout, oversized).",
        s.health.control_dropped,
    );
    connection_drops(
        &mut o,
        "shield_metrics_connections_dropped_total",
        "Metrics-endpoint connections refused or cut before an answer, by reason (busy, evicted, timeout, oversized).",
        s.health.metrics_dropped,
    );

    o.crowdsec(s.crowdsec.as_ref());

    o.encode()
}

/// A `…_connections_dropped_total{reason}` family: the control socket and
/// the metrics endpoint count the same four reasons.
fn connection_drops(o: &mut Out, name: &str, help: &str, d: Option<ControlDropped>) {
    o.family(name, "counter", help);
    if let Some(d) = d {
        for (reason, n) in [
            ("busy", d.busy),
            ("evicted", d.evicted),
            ("timeout", d.timeout),
            ("oversized", d.oversized),
        ] {
            o.sample(name, &[("reason", reason)], n);
        }
    }
}

/// The items sorted by `key`, the first of each key kept. Sorting makes the
/// output independent of the order the agent collected them in (a hash
/// map's, say); dropping repeats keeps every series unique.
fn unique_sorted<T>(items: &[T], key: impl Fn(&T) -> &String) -> Vec<&T> {
    let mut v: Vec<&T> = items.iter().collect();
    // Stable, so among equal keys the first given stays first.
    v.sort_by(|a, b| key(a).cmp(key(b)));
    v.dedup_by(|later, earlier| key(later) == key(earlier));
    v
}

/// The families of one scrape, in order, as [`render`] lists them.
#[derive(Debug, Default)]
struct Out {
    families: Vec<FamilyOut>,
}

#[derive(Debug)]
struct FamilyOut {
    name: String,
    kind: MetricType,
    help: String,
    samples: Vec<(Vec<(String, String)>, u64)>,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.families.push(FamilyOut {
            name: name.to_owned(),
            kind: if kind == "counter" {
                MetricType::Counter
            } else {
                MetricType::Gauge
            },
            help: help.to_owned(),
            samples: Vec::new(),
        });
    }

    /// A sample of the family announced last (`name` is its name).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let Some(f) = self.families.last_mut() else {
            return;
        };
        debug_assert_eq!(f.name, name, "a sample outside its family");
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        f.samples.push((labels, value));
    }

    fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(self.families)));
        let mut buf = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail, and the collector only fails
        // when its writer does.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut buf, &registry);
        buf
    }

    /// The CrowdSec families: announced always, sampled only when a
    /// `[crowdsec]` section is configured.
    fn crowdsec(&mut self, cs: Option<&CrowdsecMetrics>) {
        self.family(
            "shield_crowdsec_decisions",
            "gauge",
            "CrowdSec decisions held now (Ip and Range, the configured types), by origin.",
        );
        if let Some(cs) = cs {
            let mut origins: Vec<&(String, u64)> = cs.decisions.iter().collect();
            origins.sort_by(|a, b| a.0.cmp(&b.0));
            origins.dedup_by(|a, b| a.0 == b.0);
            for (origin, n) in origins {
                self.sample("shield_crowdsec_decisions", &[("origin", origin)], *n);
            }
        }
        self.family(
            "shield_crowdsec_last_poll_success_timestamp_seconds",
            "gauge",
            "When a poll of the CrowdSec LAPI last succeeded (Unix time); absent until the first success.",
        );
        if let Some(t) = cs.and_then(|c| c.last_poll_success_unix) {
            self.sample(
                "shield_crowdsec_last_poll_success_timestamp_seconds",
                &[],
                t,
            );
        }
        self.family(
            "shield_crowdsec_errors_total",
            "counter",
            "Failed polls, logins and alert pushes against the CrowdSec LAPI.",
        );
        if let Some(cs) = cs {
            self.sample("shield_crowdsec_errors_total", &[], cs.errors_total);
        }
        self.family(
            "shield_crowdsec_alerts_pushed_total",
            "counter",
            "Autobans the CrowdSec LAPI accepted as alerts.",
        );
        if let Some(cs) = cs {
            self.sample(
                "shield_crowdsec_alerts_pushed_total",
                &[],
                cs.alerts_pushed_total,
            );
        }
        self.family(
            "shield_crowdsec_alerts_dropped_total",
            "counter",
            "Autobans dropped without being pushed because the CrowdSec alert spool was full (10,000 alerts).",
        );
        if let Some(cs) = cs {
            self.sample(
                "shield_crowdsec_alerts_dropped_total",
                &[],
                cs.alerts_dropped_total,
            );
        }
        self.family(
            "shield_crowdsec_spool_writes_total",
            "counter",
            "Writes of the CrowdSec alert spool to state_dir (at most one a second).",
        );
        if let Some(cs) = cs {
            self.sample(
                "shield_crowdsec_spool_writes_total",
                &[],
                cs.spool_writes_total,
            );
        }
    }

    fn feed_family(
        &mut self,
        feeds: &[&FeedMetrics],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&FeedMetrics) -> Option<u64>,
    ) {
        self.family(name, kind, help);
        for f in feeds {
            if let Some(v) = value(f) {
                self.sample(name, &[("feed", &f.name)], v);
            }
        }
    }
}

/// One scrape's families for the encoder.
#[derive(Debug)]
struct Scrape(Vec<FamilyOut>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            // The encoder adds `_total` to a counter's name itself.
            let name = match f.kind {
                MetricType::Counter => f.name.strip_suffix("_total").unwrap_or(&f.name),
                _ => &f.name,
            };
            let mut family = encoder.encode_descriptor(name, &f.help, None, f.kind)?;
            for (labels, value) in &f.samples {
                let labels: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let sample = family.encode_family(&labels)?;
                match f.kind {
                    MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
                    _ => ConstGauge::new(*value).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}
