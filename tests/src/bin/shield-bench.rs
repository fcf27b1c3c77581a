//! `cargo xtask bench`: per-packet cost of the XDP pipeline, measured side by
//! side in one run with BPF_PROG_TEST_RUN (via bpftool, the same syscall for
//! every program), against an empty XDP program and against xdp-filter from
//! Debian's xdp-tools on the same packet. Reports medians and ratios.

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    time::Instant,
};

use shield_common::{
    gcra::{Gcra, NANOS_PER_SEC},
    maps::*,
};
use shield_tests::packet::{Pkt, TCP_ACK};
use shield_user::{
    dataplane::{Dataplane, LoadOptions, bucket_key},
    net::Cidr,
};

struct Args {
    repeat: u32,
    rounds: u32,
    write: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        repeat: 2_000_000,
        rounds: 7,
        write: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--repeat" => a.repeat = v.parse().expect("--repeat N"),
            "--rounds" => a.rounds = v.parse().expect("--rounds N"),
            "--write" => a.write = Some(v.into()),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

/// Average ns per run of program `id` on `frame`, as the kernel measures it.
fn bpftool_run(id: u32, frame: &std::path::Path, repeat: u32) -> f64 {
    let out = Command::new("bpftool")
        .args(["prog", "run", "id", &id.to_string(), "data_in"])
        .arg(frame)
        .args(["repeat", &repeat.to_string()])
        .output()
        .expect("run bpftool");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bpftool prog run: {text}");
    let ns = text
        .split("duration (average):")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|w| w.trim_end_matches("ns"))
        .unwrap_or_else(|| panic!("no duration in bpftool output: {text}"));
    ns.parse()
        .unwrap_or_else(|_| panic!("bad duration {ns:?} in {text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Loads a shield instance with `feed_hosts` /32 and `feed_nets` /24 feed
/// entries, `sources` tracked buckets, and limits the probe stays under.
fn loaded(feed_hosts: u32, feed_nets: u32, sources: u32) -> (Dataplane, f64) {
    let t = Instant::now();
    let mut dp = Dataplane::load(&LoadOptions::default()).expect("load");
    let e = FeedEntry { feed_id: 1 };
    // Feed addresses live in 100.64.0.0/10 and 44.0.0.0/8: never the probe's.
    for i in 0..feed_hosts {
        let a = Ipv4Addr::from(0x6440_0000u32 + i);
        dp.set_feed_entry(Cidr::host(IpAddr::V4(a)), &e).unwrap();
    }
    for i in 0..feed_nets {
        let a = Ipv4Addr::from(0x2c00_0000u32 + (i << 8));
        dp.set_feed_entry(Cidr::new(IpAddr::V4(a), 24).unwrap(), &e)
            .unwrap();
    }
    let mask = shield_common::addr::v6_mask(64);
    let b = Bucket {
        pkt_tat: 1,
        syn_tat: 1,
        last_event_ns: 0,
        drops: 0,
    };
    for i in 0..sources {
        let a = Ipv4Addr::from(0x0a00_0000u32 + i);
        dp.set_bucket(&bucket_key(IpAddr::V4(a), 0, &mask), &b)
            .unwrap();
    }
    // Generous limits: the probe passes every check and is counted clean.
    let l = Limits {
        packets: Gcra::new(1_000_000_000, NANOS_PER_SEC, 1_000_000_000),
        syns: Gcra::new(1_000, NANOS_PER_SEC, 1_000),
    };
    dp.set_limits(0, 0, &l).unwrap();
    dp.set_source_class(
        "203.0.113.0/24".parse().unwrap(),
        &SourceClass {
            flags: SRC_ALLOWED,
            ..Default::default()
        },
    )
    .unwrap();
    dp.set_ban("198.18.0.0/15".parse().unwrap(), &Ban::new(BAN_FOREVER, 1))
        .unwrap();
    (dp, t.elapsed().as_secs_f64())
}

fn prog_id(p: &aya::programs::Xdp) -> u32 {
    p.info().expect("program info").id()
}

/// xdp-filter attached (skb mode) to a throwaway veth, with a few rules so
/// that its lookups are populated. Removed on drop.
struct XdpFilter {
    id: u32,
}

impl XdpFilter {
    fn start() -> Option<XdpFilter> {
        let _ = Command::new("ip")
            .args(["link", "del", "shbench0"])
            .output();
        let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
        if !ok(Command::new("ip").args([
            "link", "add", "shbench0", "type", "veth", "peer", "name", "shbench1",
        ])) {
            return None;
        }
        let _ = Command::new("ip")
            .args(["link", "set", "shbench0", "up"])
            .output();
        let loaded = Command::new("xdp-filter")
            .args(["load", "--mode", "skb", "--policy", "allow", "shbench0"])
            .output()
            .ok()?;
        if !loaded.status.success() {
            eprintln!(
                "xdp-filter load failed: {}",
                String::from_utf8_lossy(&loaded.stderr)
            );
            return None;
        }
        for args in [
            vec!["ip", "198.18.0.1", "--mode", "src"],
            vec!["ip", "2001:db8::dead", "--mode", "src"],
            vec!["port", "23"],
            vec!["ether", "02:00:00:00:00:99", "--mode", "src"],
        ] {
            let _ = Command::new("xdp-filter").args(&args).output();
        }
        let show = Command::new("bpftool")
            .args(["prog", "show"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&show.stdout);
        let id = text
            .lines()
            .find(|l| l.contains("name xdpfilt_"))?
            .split(':')
            .next()?
            .trim()
            .parse()
            .ok()?;
        Some(XdpFilter { id })
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = Command::new("xdp-filter")
            .args(["unload", "shbench0"])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", "shbench0"])
            .output();
    }
}

fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("shield-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let probe = dir.join("probe.bin");
    let probe_v6 = dir.join("probe6.bin");
    let feed_hit = dir.join("feedhit.bin");
    let allowed = dir.join("allowed.bin");
    let banned = dir.join("banned.bin");
    fs::write(&allowed, Pkt::tcp("203.0.113.5", 443, TCP_ACK).build()).unwrap();
    fs::write(&banned, Pkt::tcp("198.18.0.5", 443, TCP_ACK).build()).unwrap();
    // A clean TCP ACK from a tracked source: every stage runs, nothing matches.
    fs::write(&probe, Pkt::tcp("10.0.0.5", 443, TCP_ACK).build()).unwrap();
    fs::write(
        &probe_v6,
        Pkt::tcp(
            &Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0005u128).to_string(),
            443,
            TCP_ACK,
        )
        .build(),
    )
    .unwrap();
    fs::write(&feed_hit, Pkt::tcp("100.64.1.2", 443, TCP_ACK).build()).unwrap();

    eprintln!("loading: 1k feed entries, 100k sources ...");
    let (mut small, small_load) = loaded(900, 100, 100_000);
    eprintln!("loading: 1M feed entries (900k hosts, 100k /24s), 100k sources ...");
    let (mut big, big_load) = loaded(900_000, 100_000, 100_000);
    let noop = prog_id(big.noop_program().unwrap());
    let small_id = prog_id(small.program().unwrap());
    let big_id = prog_id(big.program().unwrap());
    let filter = XdpFilter::start();
    if filter.is_none() {
        eprintln!("xdp-filter unavailable; its column is skipped");
    }

    let mut cases: Vec<(&str, u32, &std::path::Path, Vec<f64>)> = vec![
        ("empty XDP program (baseline)", noop, &probe, vec![]),
        (
            "shield, 1k feed entries, 100k sources",
            small_id,
            &probe,
            vec![],
        ),
        (
            "shield, 1M feed entries, 100k sources",
            big_id,
            &probe,
            vec![],
        ),
        (
            "shield, 1M feed entries, IPv6 probe",
            big_id,
            &probe_v6,
            vec![],
        ),
        (
            "shield, 1M feed entries, feed hit (drop)",
            big_id,
            &feed_hit,
            vec![],
        ),
        (
            "shield, stops at allowlist (pass)",
            big_id,
            &allowed,
            vec![],
        ),
        ("shield, stops at CIDR ban (drop)", big_id, &banned, vec![]),
    ];
    if let Some(f) = &filter {
        cases.push(("xdp-filter (xdp-tools), 4 rules", f.id, &probe, vec![]));
    }
    for round in 0..a.rounds {
        eprintln!("round {}/{}", round + 1, a.rounds);
        // Interleaved: every case sees the same machine noise.
        for (_, id, frame, samples) in cases.iter_mut() {
            samples.push(bpftool_run(*id, frame, a.repeat));
        }
    }
    let med: Vec<(String, f64)> = cases
        .iter()
        .map(|(n, _, _, s)| (n.to_string(), median(s.clone())))
        .collect();
    let get = |prefix: &str| {
        med.iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, v)| *v)
    };
    let base = get("empty").unwrap();
    let s1k = get("shield, 1k").unwrap();
    let s1m = get("shield, 1M feed entries, 100k").unwrap();

    let mut md = String::new();
    writeln!(
        md,
        "| case | ns/packet (median of {}) | above baseline |",
        a.rounds
    )
    .unwrap();
    writeln!(md, "|---|---:|---:|").unwrap();
    for (n, v) in &med {
        writeln!(md, "| {n} | {v:.1} | {:+.1} |", v - base).unwrap();
    }
    writeln!(md).unwrap();
    writeln!(md, "| ratio | value | target |").unwrap();
    writeln!(md, "|---|---:|---|").unwrap();
    writeln!(
        md,
        "| shield (1M) − baseline | {:.1} ns | ≤ 100 ns |",
        s1m - base
    )
    .unwrap();
    writeln!(md, "| shield 1M / shield 1k | {:.3} | ≤ 1.20 |", s1m / s1k).unwrap();
    if let Some(f) = get("xdp-filter") {
        writeln!(md, "| shield (1M) / xdp-filter | {:.3} | ≤ 1.00 |", s1m / f).unwrap();
    }
    writeln!(md).unwrap();
    writeln!(
        md,
        "Map fill time (one syscall per entry): 1k feed + 100k sources {small_load:.1} s; \
         1M feed + 100k sources {big_load:.1} s."
    )
    .unwrap();
    println!("{md}");
    if let Some(path) = a.write {
        let kernel = Command::new("uname")
            .arg("-r")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let section = format!(
            "<!-- bench:begin -->\nMeasured by `cargo xtask bench --write` ({} × {} packets per case, interleaved) on kernel {kernel}, {} CPUs.\n\n{md}<!-- bench:end -->",
            a.rounds,
            a.repeat,
            std::thread::available_parallelism()
                .map(std::num::NonZero::get)
                .unwrap_or(0),
        );
        let old = fs::read_to_string(&path).unwrap_or_default();
        let new = match (
            old.find("<!-- bench:begin -->"),
            old.find("<!-- bench:end -->"),
        ) {
            (Some(b), Some(e)) => format!(
                "{}{section}{}",
                &old[..b],
                &old[e + "<!-- bench:end -->".len()..]
            ),
            _ => format!("{old}\n{section}\n"),
        };
        fs::write(&path, new).unwrap();
        eprintln!("wrote {}", path.display());
    }
    drop(filter);
    let _ = fs::remove_dir_all(&dir);
}
