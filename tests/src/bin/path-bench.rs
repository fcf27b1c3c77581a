//! `path-bench`: packets per second through a veth pair, by filter. Needs
//! root. `cargo xtask bench` runs it; by hand:
//!
//! ```text
//! cargo run --release -p shield-tests --bin path-bench -- [--quick] [--write FILE] [--json FILE]
//! ```
//!
//! A generator in one network namespace pushes UDP frames into its end of
//! the veth pair; the filter sits on the other end, in the other namespace,
//! and what it gets through is counted there. The generator is an XDP
//! program of four instructions' worth (`bpfsys::load_generator`) run by
//! BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: each run sends real
//! frames with XDP_REDIRECT into the veth, from kernel context, in batches,
//! at several million frames per second on one CPU, with a random source
//! per frame out of 1,024. trafgen would spend a syscall and an skb per
//! frame and become the bottleneck itself; here the receiver is.
//!
//! Variants, measured round by round in rotating order:
//! - `none`: an empty XDP program on the receiver (veth only runs its
//!   NAPI receive path with an XDP program or GRO attached; the empty
//!   program is the cheapest way to get it) and the kernel stack behind;
//! - `shield_feed_drop`: shield with every generator source in a feed;
//! - `shield_ratelimit`: shield with a 10/s per-source limit;
//! - `nft_drop`: the empty program plus an nftables netdev ingress rule
//!   dropping the generator's /16;
//! - `nft_meter`: the empty program plus an nftables netdev ingress meter,
//!   `update @set { ip saddr limit rate over 10/second }` in a dynamic set,
//!   dropping what is over.

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    process::{Command, ExitCode},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use aya::programs::{Xdp, XdpMode, xdp::XdpLinkId};
use shield_common::{
    gcra::{Gcra, NANOS_PER_SEC},
    maps::{FeedEntry, Limits},
};
use shield_tests::{
    benchout::{self, Results, median, pin_to_cpu},
    bpfsys,
};
use shield_user::dataplane::{Dataplane, LoadOptions};

const USAGE: &str = "usage: path-bench [--quick] [--seconds S] [--rounds N] [--write FILE] [--json FILE] [--command TEXT]";
/// Generator sources: 10.9.0.0 + 0..SOURCES.
const SOURCES: u32 = 1024;
const SRC_BASE: u32 = 0x0a09_0000;
/// IP id + source low bits, kept constant by the generator.
const ID_PLUS_SRC: u16 = 0xf000;

struct Args {
    quick: bool,
    seconds: Option<f64>,
    rounds: Option<u32>,
    write: Option<std::path::PathBuf>,
    json: Option<std::path::PathBuf>,
    command: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        seconds: None,
        rounds: None,
        write: None,
        json: None,
        command: None,
    };
    a.quick = benchout::parse_args(USAGE, |k, v| {
        match k {
            "--seconds" => {
                a.seconds = Some(
                    v.parse()
                        .ok()
                        .filter(|s: &f64| *s > 0.0)
                        .ok_or("--seconds takes a positive number")?,
                );
            }
            "--rounds" => {
                a.rounds = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or("--rounds takes a positive number")?,
                );
            }
            "--write" => a.write = Some(v.into()),
            "--json" => a.json = Some(v.into()),
            "--command" => a.command = Some(v),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

fn sh(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, String> {
    sh(Command::new("ip").args(args))
}

/// The two namespaces and the veth pair between them; deleted on drop.
struct Lab {
    gen_ns: String,
    rx_ns: String,
    gen_if: String,
    rx_if: String,
}

impl Lab {
    fn create() -> Result<Lab, String> {
        let tag = format!("shpb-{}", std::process::id());
        let lab = Lab {
            gen_ns: format!("{tag}-g"),
            rx_ns: format!("{tag}-r"),
            gen_if: "pbgen".into(),
            rx_if: "pbrx".into(),
        };
        ip(&["netns", "add", &lab.gen_ns])?;
        ip(&["netns", "add", &lab.rx_ns])?;
        ip(&[
            "link",
            "add",
            &lab.gen_if,
            "netns",
            &lab.gen_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.rx_if,
            "netns",
            &lab.rx_ns,
        ])?;
        for (ns, dev, addr) in [
            (&lab.gen_ns, &lab.gen_if, "10.211.0.1/24"),
            (&lab.rx_ns, &lab.rx_if, "10.211.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn link(&self, ns: &str, dev: &str) -> Result<serde_json::Value, String> {
        let text = ip(&["-n", ns, "-s", "-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        Ok(v[0].clone())
    }

    /// Packets the receiving end has taken off its ring (whatever the
    /// filter then did with them).
    fn rx_packets(&self) -> Result<u64, String> {
        self.link(&self.rx_ns, &self.rx_if)?["stats64"]["rx"]["packets"]
            .as_u64()
            .ok_or_else(|| "no rx packet count".to_string())
    }

    fn nft(&self, script: &str) -> Result<(), String> {
        let file = std::env::temp_dir().join(format!("{}.nft", self.rx_ns));
        fs::write(&file, script).map_err(|e| e.to_string())?;
        let r = sh(Command::new("ip")
            .args(["netns", "exec", &self.rx_ns, "nft", "-f"])
            .arg(&file));
        let _ = fs::remove_file(&file);
        r.map(drop)
    }

    fn nft_clear(&self) {
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.rx_ns,
                "nft",
                "delete",
                "table",
                "netdev",
                "shpb",
            ])
            .output();
    }

    /// Moves the receiver's NAPI into a kernel thread of its own on `cpu`,
    /// so that the generator (on the other CPU) is not what limits it.
    /// Best effort: reports what it could not do.
    fn napi_thread(&self, cpu: usize) -> Option<String> {
        let set = Command::new("ip")
            .args(["netns", "exec", &self.rx_ns, "sh", "-c"])
            .arg(format!("echo 1 > /sys/class/net/{}/threaded", self.rx_if))
            .output();
        if !set.as_ref().is_ok_and(|o| o.status.success()) {
            return Some("threaded NAPI could not be enabled".into());
        }
        // The kthreads are named napi/<dev>-<id>.
        let want = format!("napi/{}-", self.rx_if);
        let mut pinned = 0;
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim().starts_with(&want)
                && let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>()
            {
                // SAFETY: an all-zero cpu_set_t is empty; CPU_SET writes in it.
                let mut s: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                // SAFETY: `s` is a valid set; libc indexes it with a bounds check.
                unsafe { libc::CPU_SET(cpu, &mut s) };
                // SAFETY: valid set; a kthread that went away only fails.
                if unsafe { libc::sched_setaffinity(pid, std::mem::size_of_val(&s), &s) } == 0 {
                    pinned += 1;
                }
                // Real-time priority: on a machine shared with builds, a
                // normal kthread gets a fair share of its CPU and the
                // measurement would be of the scheduler. The kernel's RT
                // throttling still leaves others 5 % of that CPU.
                let param = libc::sched_param { sched_priority: 10 };
                // SAFETY: valid parameter block; failure only leaves it at
                // normal priority, which the report then shows.
                if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } != 0 {
                    return Some("the NAPI thread could not be made real-time".into());
                }
            }
        }
        (pinned == 0).then(|| "no NAPI thread found to pin".into())
    }
}

/// Deletes the namespaces of earlier runs that were killed before their
/// guard ran (`shpb-<pid>-g`/`-r` whose process is gone).
fn sweep_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("shpb-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing namespace {name} left by an interrupted run");
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.gen_ns, &self.rx_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Enters network namespace `ns` (this thread only).
fn enter(ns: &str) -> Result<(), String> {
    let f = fs::File::open(format!("/run/netns/{ns}")).map_err(|e| format!("{ns}: {e}"))?;
    // SAFETY: valid fd; CLONE_NEWNET moves only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn csum(words: &[u8]) -> u16 {
    let mut sum: u32 = words
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 64-byte UDP frame to the receiver, from 10.9.0.0 (the generator
/// rewrites the source), with a valid IPv4 header checksum.
fn frame(dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend(dst_mac);
    f.extend(src_mac);
    f.extend(0x0800u16.to_be_bytes());
    let payload = 64 - 14 - 20 - 8;
    let mut iph = [0u8; 20];
    iph[0] = 0x45;
    iph[2..4].copy_from_slice(&((20 + 8 + payload) as u16).to_be_bytes());
    iph[4..6].copy_from_slice(&ID_PLUS_SRC.to_be_bytes());
    iph[8] = 64;
    iph[9] = 17;
    iph[12..16].copy_from_slice(&Ipv4Addr::from(SRC_BASE).octets());
    iph[16..20].copy_from_slice(&Ipv4Addr::new(10, 211, 0, 2).octets());
    let c = csum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(iph);
    f.extend(40000u16.to_be_bytes());
    f.extend(9u16.to_be_bytes());
    f.extend(((8 + payload) as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend(std::iter::repeat_n(0u8, payload));
    f
}

fn mac(v: &serde_json::Value) -> Result<[u8; 6], String> {
    let s = v["address"].as_str().ok_or("no MAC address")?;
    let b: Vec<u8> = s
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    b.try_into().map_err(|_| format!("bad MAC {s}"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    None,
    ShieldFeedDrop,
    ShieldRatelimit,
    NftDrop,
    NftMeter,
}

impl Variant {
    const ALL: [Variant; 5] = [
        Variant::None,
        Variant::ShieldFeedDrop,
        Variant::ShieldRatelimit,
        Variant::NftDrop,
        Variant::NftMeter,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::ShieldFeedDrop => "shield_feed_drop",
            Variant::ShieldRatelimit => "shield_ratelimit",
            Variant::NftDrop => "nft_drop",
            Variant::NftMeter => "nft_meter",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Variant::None => {
                "no filter: empty XDP program, then the kernel stack (UDP to a closed port)"
            }
            Variant::ShieldFeedDrop => {
                "shield, every source in a feed (1,024 + 100,000 host entries)"
            }
            Variant::ShieldRatelimit => {
                "shield, 10/s per source, 1,024 sources each about 25 times over it"
            }
            Variant::NftDrop => "nftables netdev ingress: `ip saddr 10.9.0.0/16 drop`",
            Variant::NftMeter => {
                "nftables netdev ingress meter: `update @m { ip saddr limit rate over 10/second burst 10 packets } drop`"
            }
        }
    }
}

/// The generator: runs live-frame test runs from `gen_ns` on `cpu` until
/// `stop`, adding the frames it sent to `sent`.
fn generator(
    gen_ns: String,
    ifindex: u32,
    frame: Vec<u8>,
    cpu: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> thread::JoinHandle<Result<(), String>> {
    thread::spawn(move || {
        enter(&gen_ns)?;
        if let Err(e) = pin_to_cpu(cpu) {
            eprintln!("path: {e}");
        }
        let fd =
            bpfsys::load_generator(ifindex, SOURCES, ID_PLUS_SRC).map_err(|e| e.to_string())?;
        const CHUNK: u32 = 100_000;
        while !stop.load(Ordering::Relaxed) {
            match bpfsys::test_run(&fd, &frame, CHUNK, bpfsys::BPF_F_TEST_XDP_LIVE_FRAMES, 64) {
                Ok(_) => {
                    sent.fetch_add(u64::from(CHUNK), Ordering::Relaxed);
                }
                // The kernel stops a long run when a signal is pending and
                // does not say how far it got: not counted, run again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("live-frame test run: {e}")),
            }
        }
        Ok(())
    })
}

struct Sample {
    rx_pps: f64,
    offered_pps: f64,
}

fn main() -> ExitCode {
    benchout::exit("path-bench", args(), run)
}

fn run(a: &Args) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root: it creates namespaces and loads XDP programs".into());
    }
    let seconds = a.seconds.unwrap_or(if a.quick { 2.0 } else { 4.0 });
    let rounds = a.rounds.unwrap_or(if a.quick { 3 } else { 5 });
    sweep_stale();
    let lab = Lab::create()?;
    let gen_link = lab.link(&lab.gen_ns, &lab.gen_if)?;
    let rx_link = lab.link(&lab.rx_ns, &lab.rx_if)?;
    let ifindex = gen_link["ifindex"].as_u64().ok_or("no ifindex")? as u32;
    let frame = frame(mac(&rx_link)?, mac(&gen_link)?);
    // This thread attaches programs by interface name: it lives in the
    // receiver's namespace from here on.
    enter(&lab.rx_ns)?;

    // Three programs: the empty one, shield with the feed, shield with
    // the limit. Each is attached only while its variant runs.
    let mut empty = Dataplane::load(&LoadOptions::default()).map_err(|e| e.to_string())?;
    empty.noop_program().map_err(|e| e.to_string())?;
    let mut feed = Dataplane::load(&LoadOptions::default()).map_err(|e| e.to_string())?;
    let generous = Limits {
        packets: Gcra::new(1_000_000_000, NANOS_PER_SEC, 1_000_000_000),
        syns: Gcra::UNLIMITED,
    };
    feed.set_limits(0, 0, &generous)
        .map_err(|e| e.to_string())?;
    let hosts: Vec<[u8; 4]> = (0..SOURCES)
        .map(|i| Ipv4Addr::from(SRC_BASE + i).octets())
        .chain((0..100_000u32).map(|i| Ipv4Addr::from(0x6440_0000 + i).octets()))
        .collect();
    feed.set_feed_hosts(&hosts, &FeedEntry { feed_id: 1 })
        .map_err(|e| e.to_string())?;
    let mut limited = Dataplane::load(&LoadOptions::default()).map_err(|e| e.to_string())?;
    limited
        .set_limits(
            0,
            0,
            &Limits {
                packets: Gcra::new(10, NANOS_PER_SEC, 10),
                syns: Gcra::UNLIMITED,
            },
        )
        .map_err(|e| e.to_string())?;

    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut samples: Vec<(Variant, Vec<Sample>)> =
        Variant::ALL.iter().map(|v| (*v, Vec::new())).collect();
    let mut notes: Vec<String> = Vec::new();
    let load_before = benchout::loadavg();
    for r in 0..rounds {
        let mut order = Variant::ALL;
        order.rotate_left(r as usize % Variant::ALL.len());
        for v in order {
            let prog: &mut Xdp = match v {
                Variant::None | Variant::NftDrop | Variant::NftMeter => {
                    empty.noop_program().map_err(|e| e.to_string())?
                }
                Variant::ShieldFeedDrop => feed.program().map_err(|e| e.to_string())?,
                Variant::ShieldRatelimit => limited.program().map_err(|e| e.to_string())?,
            };
            let link: XdpLinkId = prog
                .attach(&lab.rx_if, XdpMode::Driver)
                .map_err(|e| format!("attaching to {}: {e}", lab.rx_if))?;
            let nft = match v {
                Variant::NftDrop => Some(format!(
                    "table netdev shpb {{\n chain ingress {{ type filter hook ingress device \"{}\" priority 0; policy accept;\n  ip saddr 10.9.0.0/16 drop\n }}\n}}\n",
                    lab.rx_if
                )),
                Variant::NftMeter => Some(format!(
                    "table netdev shpb {{\n set m4 {{ type ipv4_addr; size 65535; flags dynamic,timeout; timeout 30s; }}\n chain ingress {{ type filter hook ingress device \"{}\" priority 0; policy accept;\n  ip saddr 10.9.0.0/16 update @m4 {{ ip saddr limit rate over 10/second burst 10 packets }} drop\n }}\n}}\n",
                    lab.rx_if
                )),
                _ => None,
            };
            if let Some(script) = &nft {
                lab.nft(script)?;
            }
            if cpus >= 2
                && let Some(n) = lab.napi_thread(1)
                && !notes.contains(&n)
            {
                notes.push(n);
            }
            let stop = Arc::new(AtomicBool::new(false));
            let sent = Arc::new(AtomicU64::new(0));
            let g = generator(
                lab.gen_ns.clone(),
                ifindex,
                frame.clone(),
                0,
                stop.clone(),
                sent.clone(),
            );
            // Warm up (buckets, meter entries, caches), then count.
            thread::sleep(Duration::from_millis(500));
            let (rx0, s0, t0) = (
                lab.rx_packets()?,
                sent.load(Ordering::Relaxed),
                Instant::now(),
            );
            thread::sleep(Duration::from_secs_f64(seconds));
            let (rx1, s1, dt) = (
                lab.rx_packets()?,
                sent.load(Ordering::Relaxed),
                t0.elapsed().as_secs_f64(),
            );
            stop.store(true, Ordering::Relaxed);
            g.join().map_err(|_| "the generator panicked")??;
            if nft.is_some() {
                lab.nft_clear();
            }
            let prog: &mut Xdp = match v {
                Variant::None | Variant::NftDrop | Variant::NftMeter => {
                    empty.noop_program().map_err(|e| e.to_string())?
                }
                Variant::ShieldFeedDrop => feed.program().map_err(|e| e.to_string())?,
                Variant::ShieldRatelimit => limited.program().map_err(|e| e.to_string())?,
            };
            prog.detach(link).map_err(|e| e.to_string())?;
            let s = Sample {
                rx_pps: (rx1 - rx0) as f64 / dt,
                offered_pps: (s1 - s0) as f64 / dt,
            };
            eprintln!(
                "path: round {}/{rounds} {:>16}: received {:.0} pps (offered {:.0})",
                r + 1,
                v.name(),
                s.rx_pps,
                s.offered_pps
            );
            samples.iter_mut().find(|(x, _)| *x == v).unwrap().1.push(s);
        }
    }
    let load_after = benchout::loadavg();
    // Sanity: what shield itself counted.
    let fc = feed.counters().map_err(|e| e.to_string())?;
    let lc = limited.counters().map_err(|e| e.to_string())?;
    let feed_drops = fc.packets(
        shield_common::reason::Verdict::Drop,
        shield_common::reason::Reason::Feed,
    );
    let rl_drops = lc.packets(
        shield_common::reason::Verdict::Drop,
        shield_common::reason::Reason::Ratelimit,
    );
    let rl_total = lc.total_packets();

    let mut results = Results::default();
    let mut md = String::new();
    let command = a.command.clone().unwrap_or_else(|| {
        format!(
            "cargo run --release -p shield-tests --bin path-bench --{}",
            if a.quick { " --quick" } else { "" }
        )
    });
    let _ = writeln!(
        md,
        "Measured by `{command}` on kernel {}, {}: {rounds} rounds of {seconds} s per variant (after 0.5 s of warm-up), the order rotating every round; the median round. Load average {load_before} at the start, {load_after} at the end.\n",
        benchout::kernel(),
        benchout::machine(),
    );
    let _ = writeln!(
        md,
        "Generator: live-frame BPF_PROG_TEST_RUN with XDP_REDIRECT on CPU 0, 64-byte UDP frames from 1,024 random sources. Receiver: the veth's NAPI {}. Counted: the receiving veth's rx packets (every frame it took off its ring, whatever the filter then did).\n",
        if notes.is_empty() && cpus >= 2 {
            "in a kernel thread of its own, pinned to CPU 1".to_string()
        } else {
            format!("in softirq ({})", notes.join("; "))
        }
    );
    let _ = writeln!(
        md,
        "| variant | `--json` name | received pps | rounds (min–max) | offered pps |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|");
    for (v, s) in &samples {
        let rx: Vec<f64> = s.iter().map(|x| x.rx_pps).collect();
        let off: Vec<f64> = s.iter().map(|x| x.offered_pps).collect();
        let m = median(&rx);
        results.push(&format!("path.pps.{}", v.name()), m, "pps");
        let _ = writeln!(
            md,
            "| {} | `path.pps.{}` | {:.0} | {:.0}–{:.0} | {:.0} |",
            v.describe(),
            v.name(),
            m,
            rx.iter().copied().fold(f64::INFINITY, f64::min),
            rx.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            median(&off)
        );
    }
    let ratio = |x: &str, y: &str| {
        results.get(&format!("path.pps.{x}")).unwrap_or(f64::NAN)
            / results.get(&format!("path.pps.{y}")).unwrap_or(f64::NAN)
    };
    let goal = ratio("shield_ratelimit", "nft_meter");
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| goal | measured | |\n|---|---:|---|\n| `path.pps.shield_ratelimit ≥ 1.3 × path.pps.nft_meter` | {goal:.2} × | {} |",
        if goal >= 1.3 { "met" } else { "**not met**" }
    );
    let _ = writeln!(
        md,
        "\nOther ratios: shield_feed_drop / nft_drop {:.2}; shield_feed_drop / none {:.2}. shield's own counters over the whole run: {} feed drops; {} rate-limit drops of {} packets.",
        ratio("shield_feed_drop", "nft_drop"),
        ratio("shield_feed_drop", "none"),
        feed_drops,
        rl_drops,
        rl_total
    );
    println!("{md}");
    if let Some(p) = &a.write {
        benchout::write_section(p, "pathbench", &md)?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = &a.json {
        results.write_json(p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the generator does to a frame: source low bits `s`, id
    /// `ID_PLUS_SRC - s`.
    fn as_generated(mut f: Vec<u8>, s: u16) -> Vec<u8> {
        f[14 + 14..14 + 16].copy_from_slice(&s.to_be_bytes());
        f[14 + 4..14 + 6].copy_from_slice(&(ID_PLUS_SRC - s).to_be_bytes());
        f
    }

    #[test]
    fn the_generators_rewrite_keeps_the_header_checksum_valid() {
        let f = frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.len(), 64);
        // A valid header sums (with its checksum) to 0xffff: csum gives 0.
        assert_eq!(csum(&f[14..34]), 0);
        for s in [0u16, 1, 513, (SOURCES - 1) as u16] {
            let g = as_generated(f.clone(), s);
            assert_eq!(csum(&g[14..34]), 0, "source low bits {s}");
        }
        // A rewrite that breaks the invariant is caught.
        let mut bad = as_generated(f, 7);
        bad[14 + 4] ^= 1;
        assert_ne!(csum(&bad[14..34]), 0);
    }
}
