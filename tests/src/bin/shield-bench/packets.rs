//! Per-packet cost: every case one BPF_PROG_TEST_RUN of `repeat` packets,
//! all cases interleaved round by round, medians reported.

use std::{fmt::Write as _, fs, path::Path};

use aya::programs::Xdp;
use shield_tests::{
    benchout::{Results, median},
    bpfsys::{XDP_DROP, XDP_PASS},
};

use crate::{
    load::{self, Feed},
    xdpfilter::{XdpFilter, bpftool_run},
};

/// How a case is run.
enum Driver<'a> {
    /// aya's `TestRun`.
    Aya(&'a Xdp),
    /// `bpftool prog run id N` (the peer, and the empty program once more
    /// to show both drivers agree).
    Bpftool(u32),
}

struct Case<'a> {
    label: String,
    /// The `--json` name, for the cases the issue names.
    name: Option<&'static str>,
    driver: Driver<'a>,
    frame: Vec<u8>,
    samples: Vec<f64>,
}

pub struct Params {
    pub repeat: u32,
    pub rounds: u32,
    pub filter_addresses: u32,
}

pub fn run(p: &Params, dir: &Path, out: &mut Results) -> String {
    let sources = 100_000;
    let (f1k, f100k, f1m) = (
        Feed::mixed(1_000),
        Feed::mixed(100_000),
        Feed::mixed(1_000_000),
    );
    eprintln!("packets: loading 1k, 100k and 1M feed entries (9 in 10 hosts), 100k sources each");
    let (mut d1k, t1k) = load::instance(f1k, sources);
    let (mut d100k, t100k) = load::instance(f100k, sources);
    let (mut d1m, t1m) = load::instance(f1m, sources);
    // The same 1M and 1k instances with the source cache switched off:
    // every packet takes every lookup, as a source's first packet does
    // and every packet does right after a list change.
    let (mut d1m_full, _) = load::instance(f1m, sources);
    let (mut d1k_full, _) = load::instance(f1k, sources);
    for d in [&mut d1m_full, &mut d1k_full] {
        let mut cfg = d.config().unwrap();
        cfg.flags |= shield_common::maps::CFG_NO_SOURCE_CACHE;
        d.set_config(&cfg).unwrap();
    }
    // The baseline comes from an instance of its own, so that each
    // program below borrows a different Dataplane.
    let (mut dnoop, _) = load::instance(Feed::mixed(1), 0);
    eprintln!(
        "packets: starting xdp-filter with {} source rules",
        p.filter_addresses
    );
    let filter = XdpFilter::start(p.filter_addresses);
    if filter.is_none() {
        eprintln!("xdp-filter unavailable; its row is skipped");
    }
    let noop: &Xdp = dnoop.noop_program().expect("the empty program");
    let noop_id = noop.info().expect("program info").id();
    let p1k: &Xdp = d1k.program().unwrap();
    let p100k: &Xdp = d100k.program().unwrap();
    let p1m: &Xdp = d1m.program().unwrap();
    let p1m_full: &Xdp = d1m_full.program().unwrap();
    let p1k_full: &Xdp = d1k_full.program().unwrap();

    let clean = load::probe(&load::source(5).to_string());
    let limited = load::probe("198.51.100.7");
    let case = |label: &str, name: Option<&'static str>, driver, frame: &[u8]| Case {
        label: label.to_string(),
        name,
        driver,
        frame: frame.to_vec(),
        samples: Vec::new(),
    };
    let mut cases = vec![
        case(
            "empty XDP program (baseline)",
            Some("xdp.empty_ns"),
            Driver::Aya(noop),
            &clean,
        ),
        case(
            "shield, pass: 1M feed entries, 100k sources, clean packet",
            Some("xdp.pass_ns"),
            Driver::Aya(p1m),
            &clean,
        ),
        case(
            "shield, pass: the same, source cache off (every list looked up)",
            Some("xdp.pass_full_ns"),
            Driver::Aya(p1m_full),
            &clean,
        ),
        case(
            "shield, pass: the same, IPv6 packet",
            None,
            Driver::Aya(p1m),
            &load::probe("2001:db8::5"),
        ),
        case(
            "shield, pass: 1k feed entries, 100k sources, clean packet",
            None,
            Driver::Aya(p1k),
            &clean,
        ),
    ];
    for (size, name, prog, feed) in [
        ("1k", "xdp.feed_drop_ns@1k", p1k, f1k),
        ("100k", "xdp.feed_drop_ns@100k", p100k, f100k),
        ("1M", "xdp.feed_drop_ns@1m", p1m, f1m),
    ] {
        cases.push(case(
            &format!("shield, feed drop, {size} entries: prefix hit (exact map miss, trie hit)"),
            Some(name),
            Driver::Aya(prog),
            &load::probe(&feed.net_hit().to_string()),
        ));
        cases.push(case(
            &format!("shield, feed drop, {size} entries: host hit (exact map)"),
            None,
            Driver::Aya(prog),
            &load::probe(&feed.host_hit().to_string()),
        ));
    }
    // A source's first packet, or any packet right after a list change, or
    // every packet of a flood whose sources are all new: the lookups run.
    for (size, prog, feed) in [("1k", p1k_full, f1k), ("1M", p1m_full, f1m)] {
        cases.push(case(
            &format!("shield, feed drop, {size} entries: prefix hit, source cache off"),
            None,
            Driver::Aya(prog),
            &load::probe(&feed.net_hit().to_string()),
        ));
        cases.push(case(
            &format!("shield, feed drop, {size} entries: host hit, source cache off"),
            None,
            Driver::Aya(prog),
            &load::probe(&feed.host_hit().to_string()),
        ));
    }
    cases.extend([
        case(
            "shield, rate-limit drop (source over its limit)",
            Some("xdp.ratelimit_drop_ns"),
            Driver::Aya(p1m),
            &limited,
        ),
        case(
            "shield, stops at the allowlist (pass)",
            None,
            Driver::Aya(p1m),
            &load::probe("203.0.113.5"),
        ),
        case(
            "shield, stops at a CIDR ban (drop)",
            None,
            Driver::Aya(p1m),
            &load::probe("198.18.0.5"),
        ),
        case(
            "empty XDP program, run by bpftool",
            None,
            Driver::Bpftool(noop_id),
            &clean,
        ),
    ]);
    if let Some(f) = &filter {
        cases.push(case(
            &format!(
                "xdp-filter (xdp-tools), default features, {} addresses, run by bpftool",
                p.filter_addresses
            ),
            Some("xdp.xdp_filter_ns"),
            Driver::Bpftool(f.id),
            &clean,
        ));
    }

    // Each case must do what its label says before it is timed.
    let want = |c: &Case| -> Option<u32> {
        if c.label.contains("drop") {
            Some(XDP_DROP)
        } else if c.label.starts_with("shield") || c.label.starts_with("empty") {
            Some(XDP_PASS)
        } else {
            None
        }
    };
    for c in &cases {
        if let (Driver::Aya(prog), Some(w)) = (&c.driver, want(c)) {
            // The limited source's first packet is admitted; the rest drop.
            load::verdict(prog, &c.frame);
            let v = load::verdict(prog, &c.frame);
            assert_eq!(v, w, "{}: verdict {v}, expected {w}", c.label);
        }
    }

    let files: Vec<std::path::PathBuf> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = dir.join(format!("frame{i}.bin"));
            fs::write(&f, &c.frame).unwrap();
            f
        })
        .collect();
    for round in 0..p.rounds {
        eprintln!("packets: round {}/{}", round + 1, p.rounds);
        // Interleaved: every case sees the same machine noise.
        for (c, file) in cases.iter_mut().zip(&files) {
            let ns = match c.driver {
                Driver::Aya(prog) => load::ns_per_packet(prog, &c.frame, p.repeat),
                Driver::Bpftool(id) => bpftool_run(id, file, p.repeat),
            };
            c.samples.push(ns);
        }
    }
    drop(filter);

    let med: Vec<(&Case, f64)> = cases.iter().map(|c| (c, median(&c.samples))).collect();
    let base = med[0].1;
    for (c, v) in &med {
        if let Some(n) = c.name {
            out.push(n, *v, "ns");
        }
    }
    let get = |n: &str| out.get(n).unwrap_or(f64::NAN);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{} rounds × {} packets per case, interleaved; the median round.\n",
        p.rounds, p.repeat
    );
    let _ = writeln!(
        md,
        "| case | `--json` name | ns/packet | above baseline | rounds (min–max) |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|");
    for (c, v) in &med {
        let lo = c.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = c.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = writeln!(
            md,
            "| {} | {} | {v:.1} | {:+.1} | {lo:.0}–{hi:.0} |",
            c.label,
            c.name.map_or(String::new(), |n| format!("`{n}`")),
            v - base
        );
    }
    let _ = writeln!(md);
    let (pass, filt) = (get("xdp.pass_ns"), get("xdp.xdp_filter_ns"));
    let flat = get("xdp.feed_drop_ns@1m") / get("xdp.feed_drop_ns@1k");
    let _ = writeln!(md, "| goal | measured | |");
    let _ = writeln!(md, "|---|---:|---|");
    let _ = writeln!(
        md,
        "| `xdp.pass_ns − xdp.empty_ns ≤ 100` | {:.1} ns | {} |",
        pass - base,
        met(pass - base <= 100.0)
    );
    let _ = writeln!(
        md,
        "| `xdp.pass_ns ≤ xdp.xdp_filter_ns` | {:.1} / {:.1} = {:.2} | {} |",
        pass,
        filt,
        pass / filt,
        if filt.is_finite() {
            met(pass <= filt)
        } else {
            "not measured"
        }
    );
    let _ = writeln!(
        md,
        "| `xdp.feed_drop_ns@1m / @1k ≤ 1.2` | {flat:.2} | {} |",
        met(flat <= 1.2)
    );
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Map fill (batched hosts, one syscall per prefix and per source): 1k feed {t1k:.1} s, 100k feed {t100k:.1} s, 1M feed {t1m:.1} s (each with 100k sources)."
    );
    md
}

pub fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}
