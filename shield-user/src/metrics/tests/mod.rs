//! Tests of the renderer and the server, and a strict reader of the text
//! exposition format that both use to check what comes out.

mod render;
mod server;

use std::collections::HashSet;

use shield_common::maps::Counter;
use shield_common::reason::{Reason, Verdict};

use super::snapshot::{
    BanTotals, BuildInfo, ControlDropped, ControlRequests, CrowdsecMetrics, FeedMetrics,
    HealthMetrics, InterfaceMetrics, MapMetrics, Reloads, Snapshot,
};
use crate::dataplane::AttachMode;

/// A small snapshot with something in every field.
pub(super) fn sample_snapshot() -> Snapshot {
    let mut s = Snapshot {
        feeds: vec![
            FeedMetrics {
                name: "spamhaus-drop".into(),
                entries: 1234,
                hits: 56,
                last_success_unix: Some(1_700_000_000),
                errors_total: 2,
                held: false,
                held_total: [1, 0, 0],
                covered_v4: 12_345_678,
                covered_v6_64: 1 << 40,
                rejected_lines: 3,
                refresh_interval_secs: 3600,
            },
            FeedMetrics {
                name: "blocklist-de".into(),
                entries: 0,
                hits: 0,
                last_success_unix: None,
                errors_total: 5,
                held: true,
                held_total: [0, 2, 3],
                covered_v4: 0,
                covered_v6_64: 0,
                rejected_lines: 0,
                refresh_interval_secs: 600,
            },
        ],
        bans_active: 7,
        bans_total: BanTotals {
            manual: 1,
            autoban: 5,
            feed: 2,
            crowdsec: 4,
        },
        flood_events_total: 99,
        buckets_created_total: 300_000,
        flood_events_lost_total: 12,
        flood_sources: 3,
        maps: vec![
            MapMetrics {
                name: "BAN_V4".into(),
                entries: Some(6),
                capacity: 262_144,
            },
            MapMetrics {
                name: "BUCKETS".into(),
                entries: None,
                capacity: 262_144,
            },
        ],
        interfaces: vec![InterfaceMetrics {
            iface: "eth0".into(),
            mode: AttachMode::Native,
            attached: true,
        }],
        build: BuildInfo {
            version: "0.1.0".into(),
            commit: Some("abc123".into()),
        },
        health: HealthMetrics {
            state_write_errors: 3,
            pins_missing: 0,
            control_dropped: Some(ControlDropped {
                busy: 0,
                evicted: 7,
                timeout: 2,
                oversized: 1,
            }),
            metrics_dropped: Some(ControlDropped {
                busy: 5,
                evicted: 11,
                timeout: 0,
                oversized: 4,
            }),
        },
        control_requests: Some(ControlRequests {
            ok: 10,
            error: 1,
            denied: 4,
        }),
        reloads: Reloads { ok: 2, error: 1 },
        start_time_unix: 1_699_999_000,
        crowdsec: Some(CrowdsecMetrics {
            decisions: vec![
                ("cscli".into(), 3),
                ("CAPI".into(), 40),
                ("cscli".into(), 9),
            ],
            last_poll_success_unix: Some(1_700_000_100),
            errors_total: 6,
            alerts_pushed_total: 8,
            alerts_dropped_total: 5,
            spool_writes_total: 12,
        }),
        flood_log_suppressed_total: 42,
        adaptive_level: 2,
        ..Snapshot::default()
    };
    s.traffic.set(
        Verdict::Pass,
        Reason::Clean,
        Counter {
            packets: 1000,
            bytes: 64_000,
        },
    );
    s.traffic.set(
        Verdict::Drop,
        Reason::Ratelimit,
        Counter {
            packets: 20,
            bytes: 1280,
        },
    );
    s
}

#[derive(Debug)]
pub(super) struct Family {
    pub name: String,
    pub kind: String,
    pub samples: Vec<Sample>,
}

#[derive(Debug)]
pub(super) struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Family {
    pub fn value(&self, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.labels.len() == labels.len()
                    && s.labels
                        .iter()
                        .zip(labels)
                        .all(|((k, v), (k2, v2))| k == k2 && v == v2)
            })
            .map(|s| s.value)
    }
}

/// Reads an exposition strictly: every line a HELP, a TYPE or a sample;
/// every family with exactly one HELP and one TYPE before its samples; a
/// family's samples together; no series twice; names prefixed `shield_`.
pub(super) fn parse_exposition(text: &str) -> Result<Vec<Family>, String> {
    if !text.ends_with('\n') {
        return Err("does not end in a newline".into());
    }
    let mut families: Vec<Family> = Vec::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or(format!("{n}: HELP without text"))?;
            check_name(name).map_err(|e| format!("{n}: {e}"))?;
            if help.is_empty() {
                return Err(format!("{n}: empty HELP"));
            }
            if !helps.insert(name.to_owned()) {
                return Err(format!("{n}: second HELP for {name}"));
            }
            if families.iter().any(|f| f.name == name) {
                return Err(format!("{n}: HELP for {name} after its TYPE"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or(format!("{n}: TYPE without type"))?;
            if !matches!(kind, "counter" | "gauge") {
                return Err(format!("{n}: unexpected type {kind}"));
            }
            if !helps.contains(name) {
                return Err(format!("{n}: TYPE for {name} without HELP before it"));
            }
            if families.iter().any(|f| f.name == name) {
                return Err(format!("{n}: second TYPE for {name}"));
            }
            families.push(Family {
                name: name.to_owned(),
                kind: kind.to_owned(),
                samples: Vec::new(),
            });
        } else if line.starts_with('#') || line.is_empty() {
            return Err(format!("{n}: unexpected line {line:?}"));
        } else {
            let sample = parse_sample(line).map_err(|e| format!("{n}: {e} in {line:?}"))?;
            let family = families
                .last_mut()
                .filter(|f| f.name == sample.name)
                .ok_or(format!("{n}: {} outside its family", sample.name))?;
            if family.kind == "counter" && !sample.name.ends_with("_total") {
                return Err(format!("{n}: counter {} without _total", sample.name));
            }
            let key = format!("{}{:?}", sample.name, sample.labels);
            if !series.insert(key) {
                return Err(format!("{n}: duplicate series {line:?}"));
            }
            family.samples.push(sample);
        }
    }
    if helps.len() != families.len() {
        return Err("a HELP without a TYPE".into());
    }
    Ok(families)
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with("shield_")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value".to_string())?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            // label name
            let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
            let mut end = start;
            while let Some(&(i, c)) = chars.peek() {
                if c == '=' {
                    break;
                }
                if !(c.is_ascii_lowercase() || c == '_') {
                    return Err(format!("bad label name char {c:?}"));
                }
                end = i + c.len_utf8();
                chars.next();
            }
            let key = &after[start..end];
            if key.is_empty() {
                return Err("empty label name".into());
            }
            if chars.next().map(|(_, c)| c) != Some('=')
                || chars.next().map(|(_, c)| c) != Some('"')
            {
                return Err("expected =\"".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    None => return Err("unterminated label value".into()),
                    Some('"') => break,
                    Some('\n') => return Err("raw newline in label value".into()),
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some(c) => value.push(c),
                }
            }
            if labels.iter().any(|(k, _)| k == key) {
                return Err(format!("label {key} twice"));
            }
            labels.push((key.to_owned(), value));
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    rest = &after[i + 1..];
                    break;
                }
                other => return Err(format!("expected , or }} but got {other:?}")),
            }
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before value")?;
    if value.contains(' ') {
        return Err("a timestamp or trailing text".into());
    }
    let value: f64 = value.parse().map_err(|e| format!("value {value:?}: {e}"))?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}
