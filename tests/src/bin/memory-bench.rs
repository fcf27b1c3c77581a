//! `memory-bench`: the agent's peak memory with the most it is asked to
//! hold at once, for the unit's `MemoryMax=`. Needs root. `cargo xtask
//! bench --only memory` runs it after building the agent; by hand:
//!
//! ```text
//! cargo build --release -p shield-user --bins
//! cargo run --release -p shield-tests --bin memory-bench -- [--feed-entries N] [--decisions N] [--autobans N] [--unit FILE] [--write FILE] [--json FILE]
//! ```
//!
//! One release `shield-agent` on a veth lab, alone in a memory cgroup of
//! its own made before it starts, holds together:
//! - a file feed of 1,000,000 lines (the feed benchmark's generator, left
//!   clear of the flood's sources), waited for in `shieldctl feeds list`;
//! - 100,000 ban decisions from a real CrowdSec LAPI (Debian's 1.4.6, as
//!   in the fleet benchmark), waited for in `shield_bans_active`;
//! - 10,000 autobans from a real flood: two datagrams a round from each of
//!   10,000 spoofed sources through the lab's veth, over a limit of one
//!   packet a second, until `shield_bans_total{source="autoban"}` counts
//!   them all;
//!
//! then refreshes the feed to a version with 1 % of its lines replaced
//! (the old and new versions are both in memory during a refresh) and
//! scrapes `/metrics`. Just before the agent is stopped:
//! - **`agent.peak_rss_mib`**: the process's VmHWM from /proc;
//! - **`agent.cgroup_peak_mib`**: the cgroup's peak usage (`memory.peak`
//!   on cgroup v2, `memory.max_usage_in_bytes` on v1). Since Linux 5.11
//!   BPF maps are charged to the memory cgroup of the process that creates
//!   them, so this includes every map the agent created (a fresh pin
//!   directory: it creates them all) besides its heap, kernel objects and
//!   the page cache of the files it writes (the feed's last good copy, the
//!   ban journal). It is the figure systemd's `MemoryMax=` is held to.
//!
//! With `--unit FILE` it also reports that unit's `MemoryMax=` as
//! `unit.memory_max_mib`, for the summary to check the headroom.

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use shield_tests::{
    agent::{Agent, AgentHome, feed_row, metric, scrape},
    benchout::{self, Results, loadavg, write_section},
    lab::Lab,
    lapi::{self, BOUNCER_KEY, Lapi},
    memcg::{MemCgroup, Usage, systemd_size, unit_setting},
    raw::send_frames,
    statusprobe::{Latencies, StatusProbe},
    synth,
};
use shield_user::{
    feeds::{FeedSet, ParseOptions, parse_feed},
    net::Cidr,
};

const USAGE: &str = "usage: memory-bench [--feed-entries N] [--decisions N] [--autobans N] [--unit FILE] [--quick] [--write FILE] [--json FILE] [--command TEXT]";
/// The marked section of docs/BENCHMARKS.md this bench rewrites.
const SECTION: &str = "memorybench";
const FEED: &str = "bench";
const PORT: u16 = 7400;
const METRICS: u16 = 9964;
/// The flood's sources count up from 172.16.0.0 (`Lab::two_from_each`);
/// the feed leaves this /16 out, or its entries would drop some sources
/// before the rate limiter sees them.
const FLOOD_PREFIX: [u8; 2] = [172, 16];
/// The decisions' addresses count up from 100.64.0.1: apart from the flood.
const DECISIONS_FROM: u32 = 0x6440_0000;
/// `status` answers collected at rest, after the loads: enough for a p99
/// (the fifth-slowest), a few seconds at the probe's pace.
const IDLE_ANSWERS: usize = 500;

struct Args {
    feed_entries: u64,
    decisions: u32,
    autobans: u32,
    unit: Option<PathBuf>,
    write: Option<PathBuf>,
    json: Option<PathBuf>,
    command: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        feed_entries: 1_000_000,
        decisions: 100_000,
        autobans: 10_000,
        unit: None,
        write: None,
        json: None,
        command: None,
    };
    // `--quick` changes nothing: the one run is the measurement.
    benchout::parse_args(USAGE, |k, v| {
        match k {
            "--feed-entries" => a.feed_entries = number(k, &v)?,
            "--decisions" => a.decisions = number(k, &v)?,
            "--autobans" => a.autobans = number(k, &v)?,
            "--unit" => a.unit = Some(v.into()),
            "--write" => a.write = Some(v.into()),
            "--json" => a.json = Some(v.into()),
            "--command" => a.command = Some(v),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // Two bytes of the source address count the flood's sources.
    if a.feed_entries < 100 || a.decisions == 0 || !(1..=65_536).contains(&a.autobans) {
        return Err(format!(
            "--feed-entries takes at least 100, --decisions at least 1, --autobans 1 to 65536\n{USAGE}"
        ));
    }
    Ok(a)
}

fn number<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e| format!("{k}: {e}\n{USAGE}"))
}

fn main() -> std::process::ExitCode {
    benchout::exit("memory-bench", parse_args(), run)
}

/// What the run measured.
struct Measured {
    feed_entries: usize,
    feed_lines: u64,
    decisions: u32,
    autobans: f64,
    bans_active: f64,
    feed_applied_s: f64,
    decisions_applied_s: f64,
    flood_s: f64,
    flood_rounds: u32,
    refresh_ms: f64,
    rss_mib: f64,
    hwm_mib: f64,
    cgroup: Usage,
    maps: Option<(usize, f64)>,
    /// `status` round trips during the loads, and at rest after them.
    status_load: Latencies,
    status_idle: Latencies,
    version: &'static str,
}

/// Polls `f` every 200 ms until it answers, failing after `secs` or
/// when `f` fails.
fn wait<T>(
    secs: u64,
    what: &str,
    agent: &Agent,
    mut f: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().map_err(|e| format!("{what}: {e}"))? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            let logs = agent.logs();
            let tail: Vec<&str> = logs.lines().rev().take(20).collect();
            return Err(format!(
                "{what}: not reached in {secs} s; the agent's last lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Whether the feed holds `want` entries; an error where the agent
/// refused or held back the feed.
fn feed_holds(home: &AgentHome, want: usize) -> Result<Option<()>, String> {
    let row = feed_row(home, FEED);
    for key in ["last_error", "held"] {
        if let Some(e) = row[key].as_str() {
            return Err(format!("the agent's feed `{FEED}`: {e}"));
        }
    }
    let entries = row["last_success_unix"]
        .is_u64()
        .then(|| row["entries"].as_u64())
        .flatten();
    Ok((entries == Some(want as u64)).then_some(()))
}

/// A metric from a scrape that was answered (a scrape can time out while
/// the agent bans thousands at once: no answer yet).
fn scraped(lab: &Lab, series: &str) -> Option<f64> {
    let text = scrape(&lab.server_ns, METRICS);
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    metric(&text, series)
}

/// The `bytes_memlock` bpftool reports for each map pinned under `dir`:
/// (maps, MiB). `None` without bpftool.
fn maps_memlock(dir: &Path) -> Option<(usize, f64)> {
    let mut stack = vec![dir.to_path_buf()];
    let (mut maps, mut bytes) = (0, 0u64);
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            // Programs and links are pinned here too: bpftool refuses them.
            let out = Command::new("bpftool")
                .args(["-j", "map", "show", "pinned"])
                .arg(&p)
                .output()
                .ok()?;
            if !out.status.success() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            if let Some(b) = v["bytes_memlock"].as_u64() {
                maps += 1;
                bytes += b;
            }
        }
    }
    Some((maps, bytes as f64 / 1_048_576.0))
}

/// `MemoryMax=` of a unit file, in MiB; `None` where it sets none.
fn memory_max_mib(unit: &Path) -> Result<Option<f64>, String> {
    let text = fs::read_to_string(unit).map_err(|e| format!("reading {}: {e}", unit.display()))?;
    let Some(v) = unit_setting(&text, "MemoryMax") else {
        return Ok(None);
    };
    let bytes = systemd_size(v)
        .ok_or_else(|| format!("{}: MemoryMax={v} is not a size", unit.display()))?;
    Ok(Some(bytes as f64 / 1_048_576.0))
}

fn run(a: &Args) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces, XDP, cgroups)".into());
    }
    let load_before = loadavg();
    let home = AgentHome::new();
    let outside = Cidr::new(IpAddr::from([FLOOD_PREFIX[0], FLOOD_PREFIX[1], 0, 0]), 16)
        .expect("a /16 network");
    let (v1, v2) = (home.dir.join("feed-v1.txt"), home.dir.join("feed-v2.txt"));
    eprintln!(
        "memory-bench: generating the feed: {} lines, and its 1 % refresh",
        a.feed_entries
    );
    synth::write_feed_outside(&v1, a.feed_entries, None, Some(outside))
        .map_err(|e| format!("writing {}: {e}", v1.display()))?;
    synth::write_feed_outside(&v2, a.feed_entries, Some((100, 2)), Some(outside))
        .map_err(|e| format!("writing {}: {e}", v2.display()))?;
    // The parse the agent runs: how many entries it must end up with.
    let count = |p: &Path| -> Result<usize, String> {
        let body = fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        let parsed = parse_feed(&body[..], &ParseOptions::default())
            .map_err(|e| format!("parsing {}: {e}", p.display()))?;
        Ok(FeedSet::from_cidrs(&parsed.entries).len())
    };
    let (want1, want2) = (count(&v1)?, count(&v2)?);
    let feed = home.dir.join("feed.txt");
    fs::hard_link(&v1, &feed).map_err(|e| format!("linking {}: {e}", feed.display()))?;

    let lab = Lab::new();
    let lapi = Lapi::start(Some(&lab.server_ns), Ipv4Addr::LOCALHOST);
    eprintln!(
        "memory-bench: importing {} decisions into the LAPI",
        a.decisions
    );
    lapi.import_bans(
        (1..=a.decisions).map(|i| IpAddr::from(Ipv4Addr::from(DECISIONS_FROM + i))),
        "4h",
    );

    let cgroup = MemCgroup::create(&format!("shield-memory-bench-{}", std::process::id()))?;
    let crowdsec = lapi::crowdsec_section(&home, &lapi.url(), BOUNCER_KEY, "10s", "");
    // The synthetic feed's prefixes (random /16s to /31s) cover some 730
    // million IPv4 addresses, past a feed's default cap of 2^28.
    home.write_config(&format!(
        "{}metrics_listen = \"127.0.0.1:{METRICS}\"\n\
         [limits]\npackets = \"1/s\"\npacket_burst = 1\n\
         [autoban]\nafter = \"2s\"\nttl = \"1h\"\n\
         [[feed]]\nname = \"{FEED}\"\npath = \"{}\"\nrefresh = \"1h\"\n\
         max_addresses = 4294967296\n\
         {crowdsec}",
        home.base_config(&lab),
        feed.display()
    ));
    eprintln!(
        "memory-bench: starting the agent in {}",
        cgroup.dir.display()
    );
    let agent = home.start_wrapped(&lab, &cgroup.wrapper(), &[]);
    let ready = Instant::now();
    // `status` asked throughout the loads below, then on the idle agent.
    let probe = StatusProbe::start(home.socket.clone());

    let feed_applied_s = {
        wait(180, "the feed loaded", &agent, || feed_holds(&home, want1))?;
        ready.elapsed().as_secs_f64()
    };
    eprintln!("memory-bench: feed loaded ({want1} entries) after {feed_applied_s:.1} s");
    let decisions = f64::from(a.decisions);
    wait(300, "the decisions applied", &agent, || {
        Ok(scraped(&lab, "shield_bans_active").filter(|n| *n >= decisions))
    })?;
    let decisions_applied_s = ready.elapsed().as_secs_f64();
    eprintln!(
        "memory-bench: {} decisions applied after {decisions_applied_s:.1} s",
        a.decisions
    );

    // Two datagrams a round from each source: with a limit of one a
    // second, the second is over it, and a source over its limit for
    // `after` is banned. A banned source's datagrams stop at the ban map,
    // so the rounds shrink to the sources still to be banned.
    let frames = lab.two_from_each(FLOOD_PREFIX, a.autobans, PORT);
    let want = f64::from(a.autobans);
    let flood = Instant::now();
    let mut rounds = 0;
    let autobans = wait(900, "the autobans", &agent, || {
        send_frames(&lab.client_ns, "sh-cli", frames.clone(), 64);
        rounds += 1;
        Ok(scraped(&lab, "shield_bans_total{source=\"autoban\"}").filter(|n| *n >= want))
    })?;
    let flood_s = flood.elapsed().as_secs_f64();
    eprintln!("memory-bench: {autobans} autobans after {flood_s:.1} s ({rounds} rounds)");

    // A refresh holds the old and the new version at once.
    let next = home.dir.join("feed.next");
    fs::hard_link(&v2, &next).map_err(|e| format!("linking {}: {e}", next.display()))?;
    fs::rename(&next, &feed).map_err(|e| format!("replacing {}: {e}", feed.display()))?;
    let t = Instant::now();
    home.ctl_ok(&["feeds", "refresh", FEED]);
    let refresh_ms = t.elapsed().as_secs_f64() * 1e3;
    wait(120, "the refreshed feed", &agent, || {
        feed_holds(&home, want2)
    })?;
    let loaded = probe.finish();

    // Everything held at once, confirmed on one scrape.
    let bans_active = wait(120, "every ban in force", &agent, || {
        Ok(scraped(&lab, "shield_bans_active").filter(|n| *n >= decisions + want))
    })?;
    // Answers from the agent at rest, for comparison.
    let idle = StatusProbe::start(home.socket.clone());
    wait(120, "idle status answers", &agent, || {
        Ok((idle.answered() >= IDLE_ANSWERS).then_some(()))
    })?;
    let idle = idle.finish();
    let m = Measured {
        feed_entries: want2,
        feed_lines: a.feed_entries,
        decisions: a.decisions,
        autobans,
        bans_active,
        feed_applied_s,
        decisions_applied_s,
        flood_s,
        flood_rounds: rounds,
        refresh_ms,
        rss_mib: agent.status_kib("VmRSS") as f64 / 1024.0,
        hwm_mib: agent.status_kib("VmHWM") as f64 / 1024.0,
        cgroup: cgroup.usage()?,
        maps: maps_memlock(&home.pin_dir),
        status_load: loaded,
        status_idle: idle,
        version: if cgroup.v2 { "v2" } else { "v1" },
    };
    let status = agent.stop();
    if !status.success() {
        return Err(format!("the agent exited with {status}"));
    }

    let memory_max = a.unit.as_deref().map(memory_max_mib).transpose()?.flatten();
    let report = report(a, &m, memory_max, &load_before);
    print!("{report}");
    if let Some(path) = &a.json {
        let mut r = Results::default();
        r.push("agent.peak_rss_mib", m.hwm_mib, "MiB");
        r.push("agent.cgroup_peak_mib", m.cgroup.peak, "MiB");
        if let Some(mm) = memory_max {
            r.push("unit.memory_max_mib", mm, "MiB");
        }
        if let Some(p99) = m.status_load.quantile_ms(0.99) {
            r.push("control.status_p99_ms@load", p99, "ms");
        }
        if let Some(p99) = m.status_idle.quantile_ms(0.99) {
            r.push("control.status_p99_ms@idle", p99, "ms");
        }
        r.write_json(path)?;
    }
    if let Some(path) = &a.write {
        write_section(path, SECTION, &report)?;
        eprintln!("memory-bench: wrote {}", path.display());
    }
    Ok(())
}

fn report(a: &Args, m: &Measured, memory_max: Option<f64>, load_before: &str) -> String {
    let mut o = String::new();
    let kernel = benchout::kernel();
    let _ = writeln!(
        o,
        "Measured by `{}` on kernel {kernel}, {}, memory cgroup {}. Load average {load_before} at the start and {} at the end (the machine was shared with other builds and tests).\n",
        a.command.as_deref().unwrap_or("memory-bench"),
        benchout::machine(),
        m.version,
        loadavg()
    );
    let _ = writeln!(o, "Held at once when measured:\n");
    let _ = writeln!(
        o,
        "- the feed: {} lines, {} entries after the parse's merge, refreshed once to a version with 1 % of its lines replaced (first load {:.1} s after READY, refresh {:.0} ms);",
        m.feed_lines, m.feed_entries, m.feed_applied_s, m.refresh_ms
    );
    let _ = writeln!(
        o,
        "- {} CrowdSec decisions from the LAPI, all bans {:.1} s after READY;",
        m.decisions, m.decisions_applied_s
    );
    let _ = writeln!(
        o,
        "- {:.0} autobans, from a flood of {} sources in {:.0} s ({} rounds); {:.0} bans in force in all.\n",
        m.autobans, a.autobans, m.flood_s, m.flood_rounds, m.bans_active
    );
    let q = |l: &Latencies, q: f64| l.quantile_ms(q).map_or("-".into(), |v| format!("{v:.1}"));
    let _ = writeln!(
        o,
        "`shieldctl status` meanwhile (a fresh connection per request, one every 10 ms from another thread; the process start of shieldctl left out), from READY until the refreshed feed was in force, and then as many at rest:\n"
    );
    let _ = writeln!(
        o,
        "| when | answers | no answer | median ms | p99 ms | slowest ms |\n|---|---:|---:|---:|---:|---:|"
    );
    for (when, l) in [
        (
            "`control.status_p99_ms@load`: during the loads",
            &m.status_load,
        ),
        ("`control.status_p99_ms@idle`: at rest", &m.status_idle),
    ] {
        let _ = writeln!(
            o,
            "| {when} | {} | {} | {} | {} | {} |",
            l.answered.len(),
            l.failed,
            q(l, 0.5),
            q(l, 0.99),
            q(l, 1.0)
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "| measurement | MiB |\n|---|---:|");
    let _ = writeln!(
        o,
        "| `agent.peak_rss_mib`: the agent's VmHWM (peak resident set) | {:.1} |",
        m.hwm_mib
    );
    let _ = writeln!(o, "| its VmRSS at the end | {:.1} |", m.rss_mib);
    let _ = writeln!(
        o,
        "| `agent.cgroup_peak_mib`: its memory cgroup's peak, BPF maps included | {:.1} |",
        m.cgroup.peak
    );
    let _ = writeln!(
        o,
        "| the cgroup at the end: in all / anonymous / page cache / kernel | {:.1} / {:.1} / {:.1} / {:.1} |",
        m.cgroup.now, m.cgroup.anon, m.cgroup.file, m.cgroup.kernel
    );
    if m.cgroup.kernel_peak.is_finite() {
        let _ = writeln!(
            o,
            "| the cgroup's kernel memory at its peak | {:.1} |",
            m.cgroup.kernel_peak
        );
    }
    if let Some((n, mib)) = m.maps {
        let _ = writeln!(
            o,
            "| of the kernel memory, the {n} pinned maps (`bpftool`'s `bytes_memlock`) | {mib:.1} |"
        );
    }
    if let Some(mm) = memory_max {
        let _ = writeln!(
            o,
            "\n| target | measured | |\n|---|---|---|\n| the unit's `MemoryMax=` ({mm:.0} MiB) at least twice the cgroup's peak | {:.1} MiB, {:.1} × | {} |",
            m.cgroup.peak,
            mm / m.cgroup.peak,
            if mm >= 2.0 * m.cgroup.peak {
                "met"
            } else {
                "not met: raise `MemoryMax=` (docs/OPERATIONS.md)"
            }
        );
    }
    o
}
