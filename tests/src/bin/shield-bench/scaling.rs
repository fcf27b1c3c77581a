//! Scaling curves: per-packet cost against the feed's size, and against
//! the number of tracked sources with the LRU bucket map full.

use std::{fmt::Write as _, path::Path};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use shield_common::maps::BUCKET_CAPACITY;
use shield_tests::benchout::{Results, median};

use crate::{
    load::{self, Feed},
    plot,
};

pub struct Params {
    pub quick: bool,
    pub repeat: u32,
    pub rounds: u32,
}

/// `1k`, `100k`, `1M`.
pub fn short(n: u32) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// Median kernel-measured ns of single runs, each on its own frame: the
/// cost of a packet from a source never seen before (bucket miss, insert,
/// and an eviction once the LRU map is full).
fn single_runs(prog: &Xdp, frames: &[Vec<u8>]) -> f64 {
    let v: Vec<f64> = frames
        .iter()
        .map(|f| {
            prog.test_run(TestRunOptions {
                data_in: Some(f),
                repeat: 1,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN")
            .duration
            .as_nanos() as f64
        })
        .collect();
    median(&v)
}

pub fn run(p: &Params, plots: &Path, out: &mut Results) -> String {
    let sizes: &[u32] = if p.quick {
        &[1_000, 10_000, 100_000, 1_000_000]
    } else {
        &[1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000]
    };
    let clean = load::probe(&load::source(5).to_string());
    let mut md = String::new();

    // Against feed size: one instance at a time (a 1M feed is ~100 MiB of
    // kernel memory), each measured against the same empty program.
    let (mut dnoop, _) = load::instance(Feed::mixed(1), 0);
    let noop: &Xdp = dnoop.noop_program().expect("the empty program");
    let mut feed_rows = Vec::new();
    for &n in sizes {
        eprintln!("scaling: feed of {}", short(n));
        let feed = Feed::mixed(n);
        let (mut dp, _) = load::instance(feed, 10_000);
        // The lookups themselves are what grows with the feed: measured with
        // the source cache off, as a source's first packet meets them (a
        // repeat source's memo costs the same at any size).
        let mut cfg = dp.config().unwrap();
        cfg.flags |= shield_common::maps::CFG_NO_SOURCE_CACHE;
        dp.set_config(&cfg).unwrap();
        let prog: &Xdp = dp.program().unwrap();
        let frames = [
            clean.clone(),
            load::probe(&feed.net_hit().to_string()),
            load::probe(&feed.host_hit().to_string()),
        ];
        let mut s: [Vec<f64>; 4] = Default::default();
        for _ in 0..p.rounds {
            s[0].push(load::ns_per_packet(noop, &clean, p.repeat));
            for (i, f) in frames.iter().enumerate() {
                s[i + 1].push(load::ns_per_packet(prog, f, p.repeat));
            }
        }
        let m: Vec<f64> = s.iter().map(|v| median(v)).collect();
        out.push(
            &format!("scale.feed_pass_ns@{}", short(n).to_lowercase()),
            m[1],
            "ns",
        );
        out.push(
            &format!("scale.feed_net_drop_ns@{}", short(n).to_lowercase()),
            m[2],
            "ns",
        );
        feed_rows.push((n, m));
    }
    let _ = writeln!(
        md,
        "**Against feed size** (9 in 10 entries /32 hosts in the exact map, the rest /20–/28 prefixes in the trie; 10k tracked sources; the source cache off, so every packet takes the lookups; {} rounds × {} packets, medians, ns/packet):\n",
        p.rounds, p.repeat
    );
    let _ = writeln!(
        md,
        "| feed entries | empty program | pass (both lookups miss) | drop, prefix hit | drop, host hit |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
    for (n, m) in &feed_rows {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            short(*n),
            m[0],
            m[1],
            m[2],
            m[3]
        );
    }
    let feed_png = plots.join("bench-feed-size.png");
    let series = |i: usize| -> Vec<(f64, f64)> {
        feed_rows
            .iter()
            .map(|(n, m)| (f64::from(*n), m[i]))
            .collect()
    };
    let lines = [
        plot::Series {
            name: "empty program",
            color: plot::GREY,
            points: series(0),
        },
        plot::Series {
            name: "pass (both lookups miss)",
            color: plot::BLUE,
            points: series(1),
        },
        plot::Series {
            name: "drop, prefix hit",
            color: plot::RED,
            points: series(2),
        },
        plot::Series {
            name: "drop, host hit",
            color: plot::GREEN,
            points: series(3),
        },
    ];
    match plot::draw(
        &feed_png,
        &plot::Plot {
            title: "Per-packet cost against feed size",
            x_label: "feed entries (log scale)",
            y_label: "ns per packet",
            series: &lines,
        },
    ) {
        Ok(()) => {
            let _ = writeln!(
                md,
                "\n![per-packet cost against feed size](bench-feed-size.png)\n\n*x: feed entries, log scale ({}); y: ns per packet from 0. Grey: empty program; blue: pass; red: drop on a prefix hit; green: drop on a host hit.*\n",
                sizes
                    .iter()
                    .map(|n| short(*n))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Err(e) => eprintln!("scaling: plot {}: {e}", feed_png.display()),
    }

    // Against tracked sources: one instance filled step by step; the bucket
    // map holds BUCKET_CAPACITY, beyond that every insert evicts.
    let counts: &[u32] = if p.quick {
        &[1_000, 10_000, 100_000, 1_000_000]
    } else {
        &[1_000, 10_000, 100_000, 262_144, 1_000_000]
    };
    let (mut dp, _) = load::instance(Feed::mixed(1_000), 0);
    // Sources no step has seen: 11.0.0.0/8, a fresh range per step.
    let fresh = |step: u32, n: u32| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                load::probe(&std::net::Ipv4Addr::from(0x0b00_0000 + step * 65_536 + i).to_string())
            })
            .collect()
    };
    let mut rows = Vec::new();
    let mut have = 0;
    for (step, &n) in (0u32..).zip(counts) {
        eprintln!("scaling: {} tracked sources", short(n));
        load::add_sources(&mut dp, have, n);
        have = n;
        let prog: &Xdp = dp.program().unwrap();
        let mut s: [Vec<f64>; 2] = Default::default();
        for _ in 0..p.rounds {
            s[0].push(load::ns_per_packet(noop, &clean, p.repeat));
            s[1].push(load::ns_per_packet(prog, &clean, p.repeat));
        }
        // New sources: single runs, against single runs of the empty
        // program (the per-run timer overhead is in both).
        let new = single_runs(prog, &fresh(step, 1_000));
        let base1 = single_runs(noop, &fresh(step, 200));
        // The same cold single runs on sources that are tracked: what is
        // left between this and `new` is the insert (and eviction).
        let tracked: Vec<Vec<u8>> = (0..1_000u32)
            .map(|i| load::probe(&load::source(i * (n / 1_000)).to_string()))
            .collect();
        let old = single_runs(prog, &tracked);
        let m = [median(&s[0]), median(&s[1]), base1, old, new];
        out.push(
            &format!("scale.sources_pass_ns@{}", short(n).to_lowercase()),
            m[1],
            "ns",
        );
        out.push(
            &format!("scale.sources_new_ns@{}", short(n).to_lowercase()),
            m[4],
            "ns",
        );
        rows.push((n, m));
    }
    let _ = writeln!(
        md,
        "**Against tracked sources** (1k feed entries; the bucket map is an LRU hash of {BUCKET_CAPACITY} entries, so from there on every new source evicts one; ns/packet):\n"
    );
    let _ = writeln!(
        md,
        "| sources inserted | empty program | pass, tracked source | single runs: empty program | single runs: tracked source | single runs: new source (miss, insert, eviction when full) |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    for (n, m) in &rows {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            short(*n),
            m[0],
            m[1],
            m[2],
            m[3],
            m[4]
        );
    }
    let src_png = plots.join("bench-sources.png");
    let series =
        |i: usize| -> Vec<(f64, f64)> { rows.iter().map(|(n, m)| (f64::from(*n), m[i])).collect() };
    let lines = [
        plot::Series {
            name: "empty program",
            color: plot::GREY,
            points: series(0),
        },
        plot::Series {
            name: "pass, tracked source",
            color: plot::BLUE,
            points: series(1),
        },
        plot::Series {
            name: "single runs: tracked source",
            color: plot::GREEN,
            points: series(3),
        },
        plot::Series {
            name: "single runs: new source",
            color: plot::RED,
            points: series(4),
        },
    ];
    match plot::draw(
        &src_png,
        &plot::Plot {
            title: "Per-packet cost against tracked sources",
            x_label: "sources inserted (log scale)",
            y_label: "ns per packet",
            series: &lines,
        },
    ) {
        Ok(()) => {
            let _ = writeln!(
                md,
                "\n![per-packet cost against tracked sources](bench-sources.png)\n\n*x: sources inserted, log scale ({}); y: ns per packet from 0. Grey: empty program; blue: pass from a tracked source; green: single runs from tracked sources; red: single runs from new sources.*\n\n\
                 Single runs (one packet per BPF_PROG_TEST_RUN, each from a different source) run with cold caches after the syscall and carry the kernel's per-run timer overhead; compare red with green (the same conditions, with and without the insert), not with blue.",
                counts
                    .iter()
                    .map(|n| short(*n))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Err(e) => eprintln!("scaling: plot {}: {e}", src_png.display()),
    }
    md
}
