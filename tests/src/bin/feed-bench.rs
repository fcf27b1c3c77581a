//! `feed-bench`: how long a million-entry feed takes to load into the
//! kernel, how long a 1 % refresh takes, and how much memory the process
//! holds meanwhile. Needs root (it loads the XDP program with private,
//! unpinned maps). Run it in release mode:
//!
//! ```text
//! cargo run --release -p shield-tests --bin feed-bench [-- --entries N --verify --compare]
//! ```
//!
//! The feed is synthetic but shaped like real ones: ~85 % v4 hosts, ~10 % v4
//! prefixes /16–/31, ~5 % v6 (/128 and /48–/64), in the plain format, read
//! from a file through the same fetch → parse → plan → apply path the agent
//! uses.

use std::{
    fs::File,
    io::{BufWriter, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use shield_common::maps::FeedEntry;
use shield_user::{
    config::FeedSource,
    dataplane::{Dataplane, LoadOptions},
    feeds::{
        FeedIndex, FeedSet, FetchOptions, Fetched, ParseOptions, Validators, apply_plan, fetch,
        parse_feed,
    },
    net::Cidr,
};

struct Args {
    entries: u64,
    verify: bool,
    compare: bool,
}

fn args() -> Args {
    let mut a = Args {
        entries: 1_000_000,
        verify: false,
        compare: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--entries" => a.entries = it.next().and_then(|v| v.parse().ok()).expect("--entries N"),
            "--verify" => a.verify = true,
            "--compare" => a.compare = true,
            _ => panic!("unknown argument {k} (use --entries N, --verify, --compare)"),
        }
    }
    a
}

/// xorshift64*: deterministic, dependency-free, good enough for addresses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Line `i` of the feed: a pure function of (seed, i), so the refreshed
/// version can keep most lines and replace a chosen few.
fn line(seed: u64, i: u64, out: &mut impl Write) -> std::io::Result<()> {
    let mut r = Rng(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    r.next();
    let kind = r.next() % 100;
    let x = r.next();
    match kind {
        0..85 => {
            // Anywhere except 0/8 and 127/8, which feeds do not list.
            let a = (x as u32 % 0xdf00_0000) + 0x0100_0000;
            writeln!(out, "{}", Ipv4Addr::from(a))
        }
        85..95 => {
            let len = 16 + (x >> 40) as u32 % 16;
            let a = (x as u32 % 0xdf00_0000) + 0x0100_0000;
            let net = a & (u32::MAX << (32 - len));
            writeln!(out, "{}/{len}", Ipv4Addr::from(net))
        }
        _ => {
            let hi = 0x2001_0db8_0000_0000u128 << 64;
            let a = hi | (u128::from(x) << 32) | u128::from(r.next() as u32);
            if kind.is_multiple_of(2) {
                writeln!(out, "{}", Ipv6Addr::from(a))
            } else {
                let len = 48 + (x >> 50) as u32 % 17;
                let net = a & (u128::MAX << (128 - len));
                writeln!(out, "{}/{len}", Ipv6Addr::from(net))
            }
        }
    }
}

/// Writes `n` lines; every line whose index is a multiple of `stride` (from
/// `offset`) comes from `alt_seed` instead, which is how the refresh
/// changes a fixed share of the feed.
fn write_feed(path: &Path, n: u64, alt: Option<(u64, u64)>) {
    let mut w = BufWriter::new(File::create(path).expect("create feed file"));
    for i in 0..n {
        let seed = match alt {
            Some((stride, alt_seed)) if i % stride == 0 => alt_seed,
            _ => 1,
        };
        line(seed, i, &mut w).expect("write feed");
    }
    w.flush().expect("flush feed");
}

/// (VmRSS, VmHWM) in MiB.
fn memory() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const MIB: f64 = 1024.0 * 1024.0;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Load {
    fetch: Duration,
    parse: Duration,
    set: Duration,
    plan: Duration,
    apply: Duration,
    commit: Duration,
    entries: usize,
    added: usize,
    relabelled: usize,
    removed: usize,
}

impl Load {
    fn total(&self) -> Duration {
        self.fetch + self.parse + self.set + self.plan + self.apply + self.commit
    }

    fn print(&self, what: &str) {
        println!(
            "{what}: {:.0} ms total = fetch {:.0} + parse {:.0} + set {:.0} + plan {:.0} + apply {:.0} + commit {:.0} ms; {} entries, +{} ~{} -{}",
            ms(self.total()),
            ms(self.fetch),
            ms(self.parse),
            ms(self.set),
            ms(self.plan),
            ms(self.apply),
            ms(self.commit),
            self.entries,
            self.added,
            self.relabelled,
            self.removed,
        );
    }
}

/// fetch → parse → FeedSet → plan → apply → commit, as the agent will.
fn load(dp: &mut Dataplane, index: &mut FeedIndex, feed_id: u32, path: &Path) -> Load {
    let opts = FetchOptions {
        connect_timeout: Duration::from_secs(10),
        total_timeout: Duration::from_secs(60),
        max_bytes: 64 << 20,
        allow_http: false,
    };
    let t = Instant::now();
    let Fetched::Body { bytes, .. } = fetch(
        &FeedSource::Path(path.to_path_buf()),
        &Validators::default(),
        &opts,
    )
    .expect("fetch") else {
        panic!("no body")
    };
    let fetch_t = t.elapsed();

    let t = Instant::now();
    let parsed = parse_feed(&bytes[..], &ParseOptions::default()).expect("parse");
    drop(bytes);
    assert_eq!(parsed.rejected, 0, "{:?}", parsed.first_rejects);
    let parse_t = t.elapsed();

    let t = Instant::now();
    let set = FeedSet::from_cidrs(&parsed.entries);
    drop(parsed);
    let set_t = t.elapsed();
    let entries = set.len();

    let t = Instant::now();
    let plan = index.plan_set(feed_id, set);
    let plan_t = t.elapsed();

    let t = Instant::now();
    let stats = apply_plan(dp, &plan).expect("apply");
    let apply_t = t.elapsed();

    let t = Instant::now();
    index.commit(plan).expect("commit");
    let commit_t = t.elapsed();
    Load {
        fetch: fetch_t,
        parse: parse_t,
        set: set_t,
        plan: plan_t,
        apply: apply_t,
        commit: commit_t,
        entries,
        added: stats.added,
        relabelled: stats.relabelled,
        removed: stats.removed,
    }
}

fn main() {
    let a = args();
    let dir = tempfile_dir();
    let v1 = dir.join("feed-v1.txt");
    let v2 = dir.join("feed-v2.txt");
    write_feed(&v1, a.entries, None);
    // Every 100th line replaced: 1 % of the entries go, as many new come.
    write_feed(&v2, a.entries, Some((100, 2)));
    let size = std::fs::metadata(&v1).map(|m| m.len()).unwrap_or(0);

    let mut dp = Dataplane::load(&LoadOptions::default()).expect("load the XDP program (root?)");
    let mut index = FeedIndex::new();
    let (rss0, _) = memory();
    println!(
        "feed: {} lines, {:.1} MiB; process after loading the program: VmRSS {rss0:.1} MiB",
        a.entries,
        size as f64 / MIB
    );

    let full = load(&mut dp, &mut index, 1, &v1);
    full.print("full load");
    let (rss1, hwm1) = memory();
    println!(
        "memory with the feed loaded: VmRSS {rss1:.1} MiB, VmHWM {hwm1:.1} MiB (index {:.1} MiB)",
        index.heap_bytes() as f64 / MIB
    );

    let refresh = load(&mut dp, &mut index, 1, &v2);
    refresh.print("1% refresh");
    println!(
        "1% refresh, kernel writes only (plan + apply + commit): {:.1} ms",
        ms(refresh.plan + refresh.apply + refresh.commit)
    );
    let (rss2, hwm2) = memory();
    println!("memory after the refresh: VmRSS {rss2:.1} MiB, VmHWM {hwm2:.1} MiB");

    if a.verify {
        let t = Instant::now();
        let got = dp.feed_entries().expect("read the feed maps back");
        let want = index.enforced_len();
        println!(
            "verify: kernel holds {} entries, index says {want} ({:.1} s to read back)",
            got.len(),
            t.elapsed().as_secs_f64()
        );
        assert_eq!(got.len(), want);
        let set = index.entries(1).expect("feed 1");
        assert!(got.iter().all(|(c, e)| e.feed_id == 1 && set.contains(c)));
    }
    if a.compare {
        compare(index.entries(1).expect("feed 1"));
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "targets: full load {} (<= 2000 ms), 1% refresh {} (<= 200 ms, kernel writes), VmHWM {} (<= 64 MiB)",
        verdict(ms(full.total()) <= 2000.0),
        verdict(ms(refresh.plan + refresh.apply + refresh.commit) <= 200.0),
        verdict(hwm2 <= 64.0),
    );
}

/// Where apply's time goes, and what batching buys: the same entries into
/// fresh dataplanes, hosts batched, hosts one syscall each, and prefixes
/// (always one each: LPM tries have no batch operations).
fn compare(set: &FeedSet) {
    let e = FeedEntry { feed_id: 1 };
    let hosts = set.v4_hosts();
    let mut dp = Dataplane::load(&LoadOptions::default()).expect("load");
    let t = Instant::now();
    dp.set_feed_hosts(hosts, &e).expect("batch");
    let batched = t.elapsed();
    let t = Instant::now();
    dp.remove_feed_hosts(hosts).expect("batch delete");
    let batched_del = t.elapsed();
    drop(dp);

    let mut dp = Dataplane::load(&LoadOptions::default()).expect("load");
    let t = Instant::now();
    for h in hosts {
        dp.set_feed_entry(Cidr::host(IpAddr::from(*h)), &e)
            .expect("insert");
    }
    let single = t.elapsed();
    let t = Instant::now();
    let mut nets = 0;
    for n in set.nets() {
        dp.set_feed_entry(n, &e).expect("insert");
        nets += 1;
    }
    let tries = t.elapsed();
    println!(
        "compare: {} v4 hosts batched {:.0} ms (delete {:.0} ms) vs one syscall each {:.0} ms; {nets} prefixes into the tries {:.0} ms",
        hosts.len(),
        ms(batched),
        ms(batched_del),
        ms(single),
        ms(tries),
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("shield-feed-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
