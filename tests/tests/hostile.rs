//! shield attacked on purpose, through the real agent in a netns lab:
//! `kill -9` at the worst moments (mid feed apply, mid reload), a full
//! `state_dir`, bpffs pulled from under the agent, a hostile local client
//! on the control socket, and what the agent exposes (metrics bind,
//! secrets in feed URLs, file modes). Needs root; --test-threads=1.
//!
//! Each test prints a `hostile:` line with what it tried and saw; those
//! figures are the ones docs/SECURITY.md reports.

use std::{
    collections::BTreeSet,
    ffi::CString,
    fmt::Write as _,
    fs,
    io::{Read, Write},
    net::IpAddr,
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use shield_tests::{
    agent::{Agent, AgentHome, binary, feed_row, metric, scrape},
    flow::Flows,
    http::FeedServer,
    lab::Lab,
};
use shield_user::{
    dataplane::{Dataplane, LoadOptions},
    net::Cidr,
    policy::{self, Policy, PolicyDiff, Runtime},
};

const PORT: u16 = 7300;
const TICK: Duration = Duration::from_millis(2);
const METRICS: u16 = 19973;

/// The maps pinned under `pin_dir`, opened beside the running agent.
fn kernel(pin_dir: &Path) -> Dataplane {
    Dataplane::load(&LoadOptions {
        pin_dir: Some(pin_dir.to_path_buf()),
        ..LoadOptions::default()
    })
    .expect("open the pinned maps")
}

fn feed_set(pin_dir: &Path) -> BTreeSet<Cidr> {
    kernel(pin_dir)
        .feed_entries()
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

/// `n` distinct host addresses, one per line; `version` picks a range of
/// its own so two versions share nothing.
fn feed_text(version: u8, n: u32) -> (String, BTreeSet<Cidr>) {
    let mut text = String::with_capacity(n as usize * 14);
    let mut set = BTreeSet::new();
    for i in 0..n {
        let addr = std::net::Ipv4Addr::new(
            10,
            64 + version * 16 + (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        );
        let _ = writeln!(text, "{addr}");
        set.insert(Cidr::host(IpAddr::V4(addr)));
    }
    (text, set)
}

fn read_feed_lines(path: &Path) -> BTreeSet<Cidr> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| Cidr::host(l.parse().unwrap()))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_during_a_feed_apply_leaves_one_whole_version() {
    const N: u32 = 200_000;
    let lab = Lab::new();
    let home = AgentHome::new();
    let feed = home.dir.join("big.txt");
    let (a_text, a) = feed_text(0, N);
    let (b_text, b) = feed_text(1, N);
    fs::write(&feed, &a_text).unwrap();
    home.write_config(&format!(
        "{}[[feed]]\nname = \"big\"\npath = \"{}\"\nrefresh = \"1h\"\n",
        home.base_config(&lab),
        feed.display()
    ));
    let mut agent = home.start(&lab, &[]);
    wait_until("the first apply", Duration::from_secs(60), || {
        feed_row(&home, "big")["entries"] == N
    });
    assert_eq!(feed_set(&home.pin_dir), a);

    let delays_ms = [0u64, 450, 600, 800, 1300];
    let mut mixed_at_kill = 0;
    let mut at_kill_seen = Vec::new();
    let mut versions_after = Vec::new();
    for (round, delay) in delays_ms.iter().enumerate() {
        // Odd rounds move to B, even ones back to A.
        let (next_text, next) = if round % 2 == 0 {
            (&b_text, &b)
        } else {
            (&a_text, &a)
        };
        fs::write(&feed, next_text).unwrap();
        let refresh = Command::new(binary("shieldctl"))
            .arg("--socket")
            .arg(&home.socket)
            .args(["feeds", "refresh", "big"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(*delay));
        agent.kill9();
        let _ = refresh.wait_with_output();
        let at_kill = feed_set(&home.pin_dir);
        let prev = if round % 2 == 0 { &a } else { &b };
        at_kill_seen.push(if &at_kill == prev {
            "old"
        } else if &at_kill == next {
            "new"
        } else {
            mixed_at_kill += 1;
            "mixed"
        });

        // Restart with the source unreadable: only the last good copy can
        // be applied, and whatever the maps held must give way to it.
        let hidden = feed.with_extension("hidden");
        fs::rename(&feed, &hidden).unwrap();
        agent = home.start(&lab, &[]);
        let after = feed_set(&home.pin_dir);
        let cached = read_feed_lines(&home.state_dir.join("feeds/big.cache"));
        assert!(
            after == a || after == b,
            "round {round} (kill after {delay} ms): the restarted agent enforces a mix of {} entries ({} of A, {} of B)",
            after.len(),
            after.intersection(&a).count(),
            after.intersection(&b).count()
        );
        assert_eq!(
            after, cached,
            "round {round}: maps differ from the last good copy"
        );
        assert_eq!(feed_row(&home, "big")["entries"], after.len());
        versions_after.push(if after == a { 'A' } else { 'B' });

        // With the source back, the maps become exactly the file.
        fs::rename(&hidden, &feed).unwrap();
        home.ctl_ok(&["feeds", "refresh", "big"]);
        assert_eq!(
            &feed_set(&home.pin_dir),
            next,
            "round {round}: after refresh"
        );
    }
    println!(
        "hostile: feed of {N} entries, {} kill -9 during refresh at {delays_ms:?} ms: maps at kill {at_kill_seen:?} ({mixed_at_kill} mid-apply); versions after restart {versions_after:?}; never a mix",
        delays_ms.len()
    );
    drop(agent);
}

/// The policy maps as a [`Policy`] (names unknown), like the agent's own
/// start-up snapshot.
fn policy_in_maps(pin_dir: &Path) -> Policy {
    let dp = kernel(pin_dir);
    Policy {
        global: dp.config().unwrap(),
        sources: dp.source_entries().unwrap(),
        ports: dp.port_rules().unwrap(),
        limits: dp.limits_entries().unwrap(),
        resolved: Default::default(),
        tiers: Vec::new(),
        classes: Vec::new(),
        warnings: Vec::new(),
    }
}

fn compiled(config: &Path) -> Policy {
    let tick = shield_user::clock::kernel_clock_tick_ns();
    let cfg = shield_user::config::load(config, tick).expect("valid config");
    policy::compile(
        &cfg,
        &Runtime {
            allow: &[],
            overrides: &[],
            previous: None,
            tick_ns: tick,
            adaptive_divisor: 1,
        },
    )
    .unwrap()
}

/// A config whose tier holds `n` prefixes from a range picked by
/// `version`; the names stay, so ids are the same in every version.
fn policy_config(home: &AgentHome, lab: &Lab, version: u8, n: u32) -> String {
    let mut cidrs = String::new();
    for i in 0..n {
        let _ = write!(
            cidrs,
            "\"172.{}.{}.{}/32\",",
            16 + version,
            (i >> 8) as u8,
            i as u8
        );
    }
    let port = 8000 + u16::from(version);
    format!(
        "{}[allow]\ncidrs = [\"192.0.2.{version}/32\"]\n[limits]\npackets = \"{}/s\"\npacket_burst = {}\n[[tier]]\nname = \"bulk\"\ncidrs = [{cidrs}]\npackets = \"100000/s\"\npacket_burst = 200000\n[[port]]\nname = \"api\"\nproto = \"tcp\"\nports = [{port}]\nconnections = \"100/s\"\nconnection_burst = 200\n",
        home.base_config(lab),
        1000 + u32::from(version),
        4000 + u32::from(version),
    )
}

#[test]
fn kill_9_during_a_reload_restarts_into_the_configs_policy() {
    const N: u32 = 2_000;
    let lab = Lab::new();
    let home = AgentHome::new();
    let configs = [
        policy_config(&home, &lab, 0, N),
        policy_config(&home, &lab, 1, N),
    ];
    home.write_config(&configs[0]);
    let mut agent = home.start(&lab, &[]);
    let delays_ms = [0u64, 500, 800, 1100, 2000];
    // Kills that found the maps at the old policy, mid-apply, at the new.
    let mut seen = (0, 0, 0);
    for (round, delay) in delays_ms.iter().enumerate() {
        let before = compiled(&home.config);
        home.write_config(&configs[(round + 1) % 2]);
        let want = compiled(&home.config);
        agent.signal(libc::SIGHUP);
        thread::sleep(Duration::from_millis(*delay));
        agent.kill9();
        let at_kill = policy_in_maps(&home.pin_dir);
        match (
            PolicyDiff::between(Some(&at_kill), &before).changes(),
            PolicyDiff::between(Some(&at_kill), &want).changes(),
        ) {
            (0, _) => seen.0 += 1,
            (_, 0) => seen.2 += 1,
            _ => seen.1 += 1,
        }
        agent = home.start(&lab, &[]);
        let after = policy_in_maps(&home.pin_dir);
        let diff = PolicyDiff::between(Some(&after), &want);
        assert_eq!(
            diff.changes(),
            0,
            "round {round} (kill {delay} ms after SIGHUP): the maps differ from the config in {} entries",
            diff.changes()
        );
    }
    // The apply itself lasts milliseconds, so kills rarely land inside
    // it: tear one by hand, half the new prefixes written beside the old.
    agent.kill9();
    let before = compiled(&home.config);
    home.write_config(&configs[(delays_ms.len() + 1) % 2]);
    let want = compiled(&home.config);
    {
        let mut dp = kernel(&home.pin_dir);
        for (net, v) in want.sources.iter().take(N as usize / 2) {
            dp.set_source_class(*net, v).unwrap();
        }
    }
    let torn = policy_in_maps(&home.pin_dir);
    assert_ne!(PolicyDiff::between(Some(&torn), &before).changes(), 0);
    assert_ne!(PolicyDiff::between(Some(&torn), &want).changes(), 0);
    let agent = home.start(&lab, &[]);
    let after = policy_in_maps(&home.pin_dir);
    assert_eq!(
        PolicyDiff::between(Some(&after), &want).changes(),
        0,
        "a torn apply survived the restart"
    );
    println!(
        "hostile: policy of {N} tier prefixes, {} kill -9 during reload: maps at kill old/mixed/new = {seen:?}, plus one torn apply made by hand; every restart matched the config exactly",
        delays_ms.len()
    );
    drop(agent);
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(fstype: &str, dir: &Path, opts: &str) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", fstype, "-o", opts, fstype])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {fstype} on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(dir.to_path_buf())
    }

    fn unmount(&self) {
        let c = CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Fills the filesystem holding `dir` until a write fails.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    let block = [0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    filler
}

/// Starts the agent with metrics on and bans the lab's client; a second
/// client (host 3) stays clean. Answers the agent, the banned and the clean
/// address.
fn start_banning_one(lab: &Lab, home: &AgentHome) -> (Agent, IpAddr, IpAddr) {
    home.write_config(&format!(
        "{}metrics_listen = \"127.0.0.1:{METRICS}\"\n",
        home.base_config(lab)
    ));
    let agent = home.start(lab, &[]);
    let (banned, clean) = (lab.client_v4, lab.add_client_v4(3));
    home.ctl_ok(&["ban", "add", &banned.to_string()]);
    (agent, banned, clean)
}

#[test]
fn a_full_state_dir_keeps_enforcing_and_says_so() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let _disk = Mount::new("tmpfs", &home.state_dir, "size=64k,mode=0700");
    let (agent, early, late) = start_banning_one(&lab, &home);
    let filler = fill(&home.state_dir);

    // A ban while the disk is full: enforced at once, and said to be
    // unjournaled.
    let out = home.ctl_ok(&["ban", "add", &late.to_string()]);
    assert!(out.contains("NOT journaled"), "{out}");
    let flows = Flows::start(&lab, PORT, &[early, late], TICK);
    // Both banned sources under way (the datagrams, not the time, are what
    // the checks below count).
    wait_until("the flows to send", Duration::from_secs(30), || {
        flows.sent(early) >= 100 && flows.sent(late) >= 100
    });
    let status = home.ctl_json(&["status"]);
    let health = &status["data"]["health"];
    assert!(
        health["state_write_errors"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_eq!(health["state_unsaved"][0], "bans.json", "{status}");
    let text = home.ctl_ok(&["status"]);
    assert!(text.contains("NOT SAVED: bans.json"), "{text}");
    let m = scrape(&lab.server_ns, METRICS);
    assert!(
        metric(&m, "shield_state_write_errors_total").unwrap() >= 1.0,
        "{m}"
    );
    assert!(
        agent.logs().contains("cannot write state"),
        "{}",
        agent.logs()
    );

    // A crash with the disk still full: the restarted agent finds the
    // unjournaled ban in the pinned maps, and starts in spite of the disk.
    agent.kill9();
    let agent = home.start(&lab, &[]);
    let bans = home.ctl_json(&["ban", "list"]);
    assert_eq!(bans["data"].as_array().unwrap().len(), 2, "{bans}");

    // Room again: the journal catches up by itself.
    fs::remove_file(&filler).unwrap();
    let unsaved = || home.ctl_json(&["status"])["data"]["health"]["state_unsaved"].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while unsaved().as_array().is_some_and(|a| !a.is_empty()) {
        assert!(Instant::now() < deadline, "still unsaved: {}", unsaved());
        thread::sleep(Duration::from_millis(100));
    }
    let journal = fs::read_to_string(home.state_dir.join("bans.json")).unwrap();
    assert!(journal.contains(&late.to_string()), "{journal}");
    let r = flows.stop();
    assert!(r.sent(late) > 100, "{r:?}");
    assert_eq!(r.received(early), 0, "{r:?}");
    assert_eq!(r.received(late), 0, "the unjournaled ban leaked: {r:?}");
    println!(
        "hostile: state_dir full (64 KiB tmpfs): {} ban packets sent, 0 through, across a kill -9; journal caught up",
        r.sent(early) + r.sent(late)
    );
    drop(agent);
}

#[test]
fn bpffs_pulled_from_under_the_agent_changes_nothing_it_enforces() {
    let lab = Lab::new();
    let mut home = AgentHome::new();
    let fs_dir = home.dir.join("bpffs");
    let bpffs = Mount::new("bpf", &fs_dir, "mode=0700");
    home.pin_dir = fs_dir.join("pins");
    let (agent, banned, clean) = start_banning_one(&lab, &home);
    let (link, _) = home.link_ids(&lab.server_if).expect("pinned link");
    let flows = Flows::start(&lab, PORT, &[banned, clean], TICK);
    assert!(flows.wait_more(clean, 50, Duration::from_secs(10)));

    bpffs.unmount();
    assert!(!home.pin_dir.exists());
    wait_until("the agent to notice", Duration::from_secs(10), || {
        home.ctl_json(&["status"])["data"]["health"]["pins_missing"]
            .as_u64()
            .unwrap()
            > 0
    });
    let m = scrape(&lab.server_ns, METRICS);
    assert!(metric(&m, "shield_pins_missing").unwrap() > 0.0, "{m}");
    assert!(
        home.ctl_ok(&["status"]).contains("MISSING"),
        "status must say so"
    );
    assert!(
        lab.server_link_details().contains("prog/xdp"),
        "the program must stay attached"
    );
    assert!(
        flows.wait_more(clean, 100, Duration::from_secs(10)),
        "clean traffic with the pins gone"
    );

    // bpffs comes back: the agent pins everything again, so a crash now
    // loses nothing.
    let _bpffs = Mount::new("bpf", &fs_dir, "mode=0700");
    wait_until("the pins to come back", Duration::from_secs(10), || {
        home.link_ids(&lab.server_if).is_some()
    });
    assert!(agent.logs().contains("pinned the maps and links again"));
    let (link2, _) = home.link_ids(&lab.server_if).unwrap();
    assert_eq!(link2, link, "the same link, pinned again");
    agent.kill9();
    assert!(flows.wait_more(clean, 100, Duration::from_secs(10)));
    let agent = home.start(&lab, &[]);
    assert_eq!(home.link_ids(&lab.server_if).unwrap().0, link);
    let bans = home.ctl_json(&["ban", "list"]);
    assert_eq!(bans["data"].as_array().unwrap().len(), 1, "{bans}");
    assert!(flows.wait_more(clean, 100, Duration::from_secs(10)));
    let r = flows.stop();
    assert!(r.sent(banned) > 300, "{r:?}");
    assert_eq!(r.received(banned), 0, "a banned source got through: {r:?}");
    println!(
        "hostile: bpffs unmounted and remounted under a running agent, then kill -9: {} banned packets, 0 through",
        r.sent(banned)
    );
    drop(agent);
}

/// Lifts this process's open-file limit so it can hold the connections.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit for both calls.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

#[test]
fn a_thousand_hostile_connections_do_not_silence_shieldctl() {
    raise_nofile();
    let lab = Lab::new();
    let home = AgentHome::new();
    let (agent, banned, clean) = start_banning_one(&lab, &home);
    let flows = Flows::start(&lab, PORT, &[banned, clean], TICK);

    // 1,000 connections at once: slowloris (half a header, then nothing),
    // oversized length prefixes, garbage, and silence; all held open.
    let kinds: [&[u8]; 4] = [
        &[0, 0],
        &u32::MAX.to_be_bytes(),
        b"\x00\x00\x00\x09not json!",
        b"",
    ];
    let mut held = Vec::new();
    let mut refused_connect = 0;
    for i in 0..1000 {
        match UnixStream::connect(&home.socket) {
            Ok(mut c) => {
                let _ = c.write_all(kinds[i % kinds.len()]);
                held.push(c);
            }
            Err(_) => refused_connect += 1,
        }
    }
    // And one that keeps reconnecting and dribbling for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribbler = {
        let (socket, stop) = (home.socket.clone(), stop.clone());
        thread::spawn(move || {
            let mut opened = 0u64;
            let mut conns = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mut c) = UnixStream::connect(&socket) {
                    let _ = c.write_all(&[0]);
                    conns.push(c);
                    opened += 1;
                }
                if conns.len() > 300 {
                    conns.drain(..100);
                }
                thread::sleep(Duration::from_millis(2));
            }
            opened
        })
    };

    // Meanwhile, operators: every call must answer, and in bounded time
    // (shieldctl's own timeout), not be told "busy".
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let started = Instant::now();
        let args: &[&str] = match i % 3 {
            0 => &["status"],
            1 => &["ban", "list"],
            _ => &["check", "192.0.2.1"],
        };
        let o = home.ctl(args);
        assert!(o.ok(), "call {i} ({args:?}) failed under attack: {o:?}");
        slowest = slowest.max(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let dribbled = dribbler.join().unwrap();

    // The hostile connections got answers or were closed; none is served
    // forever.
    let mut answered = 0;
    let mut closed = 0;
    for c in &mut held {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = Vec::new();
        match c.read_to_end(&mut buf) {
            Ok(_) if !buf.is_empty() => answered += 1,
            Ok(_) => closed += 1,
            Err(e) => panic!("a hostile connection still open after 15 s: {e}"),
        }
    }
    assert!(flows.wait_more(clean, 50, Duration::from_secs(10)));
    let r = flows.stop();
    assert_eq!(r.received(banned), 0, "enforcement slipped: {r:?}");
    let m = scrape(&lab.server_ns, METRICS);
    let dropped = |reason: &str| {
        metric(
            &m,
            &format!("shield_control_connections_dropped_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or_else(|| panic!("no {reason} in {m}"))
    };
    assert!(dropped("evicted") > 0.0, "{m}");
    assert!(dropped("oversized") > 0.0, "{m}");
    assert!(home.ctl_ok(&["status"]).contains("enforcing"));
    println!(
        "hostile: {} hostile connections held + {dribbled} dribbling reconnects ({refused_connect} connects refused by the kernel); 30/30 shieldctl calls answered (slowest {:.2} s); hostile ones: {answered} answered with an error, {closed} closed; evicted {}, timeout {}, oversized {}, busy {}",
        held.len(),
        slowest.as_secs_f64(),
        dropped("evicted"),
        dropped("timeout"),
        dropped("oversized"),
        dropped("busy"),
    );
    drop(agent);
}

#[test]
fn metrics_listen_on_loopback_by_default_and_idle_clients_do_not_block_scrapes() {
    let lab = Lab::new();
    let home = AgentHome::new();
    home.write_config(&home.base_config(&lab));
    let _agent = home.start(&lab, &[]);
    // Any local user can connect to it: 200 connections that never finish
    // a request must not keep the scraper out.
    let ns = lab.server_ns.clone();
    let idle = thread::spawn(move || {
        Lab::enter(&ns);
        (0..200)
            .filter_map(|_| {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", 9964)).ok()?;
                c.write_all(b"GET /metr").ok()?;
                Some(c)
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert_eq!(idle.len(), 200);
    // Past the 64 slots each new connection evicted the oldest idle one
    // (136 of the idle ones, then one for each scrape that found the slots
    // full), and the endpoint counts what it cut. Each eviction is counted
    // by the evicted connection's task, which a loaded host may run after
    // a scrape has rendered: scrape until all 136 are counted. (The 200
    // connects take milliseconds, far inside the endpoint's 5 s read
    // timeout, so none of them timed out instead.)
    let dropped = |text: &str, reason: &str| {
        metric(
            text,
            &format!("shield_metrics_connections_dropped_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or_else(|| panic!("no {reason} count in {text}"))
    };
    let mut scrapes = 0.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = scrape(&lab.server_ns, 9964);
        scrapes += 1.0;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        if scrapes >= 5.0 && dropped(&text, "evicted") >= 136.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "evictions never counted: {text}");
        thread::sleep(Duration::from_millis(100));
    };
    let evicted = dropped(&text, "evicted");
    assert!(
        evicted <= 136.0 + scrapes,
        "{evicted} evicted by 136 idle connections and {scrapes} scrapes"
    );
    assert_eq!(dropped(&text, "busy"), 0.0, "{text}");
    drop(idle);
    let text = scrape(&lab.server_ns, 9964);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.server_ns,
            "ss",
            "-Hltn",
            "sport = :9964",
        ])
        .output()
        .unwrap();
    let ss = String::from_utf8_lossy(&out.stdout);
    assert!(ss.contains("127.0.0.1:9964"), "{ss}");
    assert_eq!(ss.lines().count(), 1, "only loopback: {ss}");
    // From the client's side of the link, nothing answers.
    let server = lab.server_v4;
    let ns = lab.client_ns.clone();
    let reached = thread::spawn(move || {
        Lab::enter(&ns);
        std::net::TcpStream::connect_timeout(&(server, 9964).into(), Duration::from_secs(2)).is_ok()
    })
    .join()
    .unwrap();
    assert!(!reached, "metrics reachable from the network");
}

#[test]
fn feed_credentials_never_show() {
    const USER_SECRET: &str = "pa55w0rd-XYZ";
    const TOKEN: &str = "t0ken-ABC123";
    let lab = Lab::new();
    let home = AgentHome::new();
    let x = lab.add_client_v4(3);
    let mut server = FeedServer::start_in(&lab.server_ns, format!("{x}\n").as_bytes());
    let url = server
        .url()
        .replace("http://", &format!("http://feeduser:{USER_SECRET}@"))
        + &format!("?format=plain&token={TOKEN}");
    home.write_config(&format!(
        "{}metrics_listen = \"127.0.0.1:{METRICS}\"\n[[feed]]\nname = \"secret\"\nurl = \"{url}\"\nallow_http = true\nrefresh = \"1h\"\ntimeout = \"10s\"\n",
        home.base_config(&lab)
    ));
    let agent = home.start(&lab, &[]);
    wait_until("the feed", Duration::from_secs(15), || {
        feed_row(&home, "secret")["last_success_unix"].is_u64()
    });
    // A failure puts the URL into an error message and the log.
    server.shut_down();
    let _ = home.ctl(&["feeds", "refresh", "secret"]);
    let row = feed_row(&home, "secret");
    assert!(row["last_error"].is_string(), "{row}");
    let mut shown = String::new();
    for args in [
        &["feeds", "list"][..],
        &["--json", "feeds", "list"],
        &["status"],
        &["--json", "status"],
    ] {
        shown.push_str(&home.ctl_ok(args));
    }
    shown.push_str(&scrape(&lab.server_ns, METRICS));
    shown.push_str(&agent.logs());
    // Config errors quote the URL too.
    let bad = home.dir.join("bad.toml");
    fs::write(
        &bad,
        format!(
            "[[feed]]\nname = \"s\"\nurl = \"{}\"\n",
            url.replace("/feed.txt", "")
        ),
    )
    .unwrap();
    let (_, check) = home.run(&lab, &["check-config", bad.to_str().unwrap()]);
    shown.push_str(&check);
    // A restart with the server still down: the cached copy is recognised
    // as this feed's (by digest, not by the URL) and enforced.
    drop(agent);
    let agent = home.start(&lab, &[]);
    let row = feed_row(&home, "secret");
    assert!(
        row["origin"].as_str().unwrap().starts_with("cache"),
        "{row}\n{}",
        agent.logs()
    );
    assert_eq!(row["entries"], 1, "{row}");
    shown.push_str(&agent.logs());
    shown.push_str(&home.ctl_ok(&["feeds", "list"]));
    // Every file the agent keeps, the feed cache's sidecar included.
    let mut files = 0;
    let mut dirs = vec![home.state_dir.clone()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let bytes = fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for secret in [USER_SECRET, TOKEN, "feeduser"] {
                assert!(
                    !text.contains(secret),
                    "{secret} in {}:\n{text}",
                    p.display()
                );
            }
            files += 1;
        }
    }
    assert!(
        home.state_dir.join("feeds/secret.cache.json").exists(),
        "no sidecar among {files} files"
    );
    for secret in [USER_SECRET, TOKEN] {
        assert!(!shown.contains(secret), "{secret} leaked in:\n{shown}");
    }
    assert!(shown.contains("***@127.0.0.1"), "{shown}");
    assert!(check.contains("plain http"), "{check}");
    println!(
        "hostile: feed URL credentials checked in feeds list, status (text, JSON), metrics, logs, check-config, {files} files in state_dir: none shown"
    );
    drop(agent);
}

#[test]
fn an_https_feed_is_never_followed_down_to_http() {
    let lab = Lab::new();
    let mut home = AgentHome::new();
    home.env
        .push(("SSL_CERT_FILE".into(), shield_tests::http::TEST_CA.into()));
    let (x, y) = (lab.add_client_v4(3), lab.add_client_v4(4));
    let tls = FeedServer::start_tls_in(&lab.server_ns, format!("{x}\n").as_bytes());
    let plain = FeedServer::start_in(&lab.server_ns, format!("{y}\n").as_bytes());
    // allow_http, so only the downgrade itself can be the reason.
    home.write_config(&format!(
        "{}[[feed]]\nname = \"tls\"\nurl = \"{}\"\nallow_http = true\nrefresh = \"1h\"\ntimeout = \"5s\"\n",
        home.base_config(&lab),
        tls.url()
    ));
    let agent = home.start(&lab, &[]);
    wait_until("the https feed", Duration::from_secs(15), || {
        feed_row(&home, "tls")["last_success_unix"].is_u64()
    });
    assert_eq!(feed_row(&home, "tls")["entries"], 1);

    tls.set_redirect(Some(plain.url()));
    let o = home.ctl(&["feeds", "refresh", "tls"]);
    assert_eq!(o.code, Some(1), "{o:?}");
    let row = feed_row(&home, "tls");
    let err = row["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("from https to plain http"), "{row}");
    assert_eq!(plain.requests(), 0, "the http target was contacted");
    assert_eq!(row["entries"], 1, "the last good entries stay: {row}");
    let c = home.ctl_json(&["check", &x.to_string()]);
    assert_eq!(c["data"]["reason"], "feed", "{c}");
    drop(agent);
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn state_files_are_private_and_a_writable_config_is_called_out() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let x = lab.add_client_v4(3);
    let feed = home.dir.join("list.txt");
    fs::write(&feed, format!("{x}\n")).unwrap();
    home.write_config(&format!(
        "{}[[feed]]\nname = \"list\"\npath = \"{}\"\n",
        home.base_config(&lab),
        feed.display()
    ));
    // A state_dir someone left readable is closed again (a writable one is
    // refused: a_state_dir_others_could_write_is_refused).
    fs::create_dir_all(&home.state_dir).unwrap();
    fs::set_permissions(&home.state_dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&home.config, fs::Permissions::from_mode(0o666)).unwrap();
    let agent = home.start(&lab, &[]);
    home.ctl_ok(&["ban", "add", "198.51.100.7"]);
    home.ctl_ok(&["allow", "add", "203.0.113.0/24"]);
    wait_until("the feed cache", Duration::from_secs(15), || {
        home.state_dir.join("feeds/list.cache").exists()
    });
    assert_eq!(mode(&home.state_dir), 0o700);
    for f in [
        "bans.json",
        "allow.json",
        "policy-ids.json",
        "feed-ids.json",
        "feeds/list.cache",
        "feeds/list.cache.json",
    ] {
        assert_eq!(mode(&home.state_dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&home.state_dir.join("feeds")), 0o700);
    assert_eq!(mode(&home.socket), 0o660);
    let logs = agent.logs();
    assert!(logs.contains("is world-writable"), "{logs}");
    let (status, out) = home.run(&lab, &["check-config", home.config.to_str().unwrap()]);
    assert!(status.success(), "{out}");
    assert!(
        out.contains("warning:") && out.contains("world-writable"),
        "{out}"
    );
    fs::set_permissions(&home.config, fs::Permissions::from_mode(0o640)).unwrap();
    let (_, out) = home.run(&lab, &["check-config", home.config.to_str().unwrap()]);
    assert!(!out.contains("warning"), "{out}");
    drop(agent);
}

fn chown(p: &Path, uid: u32) {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; -1 leaves the group as it is.
    let rc = unsafe { libc::lchown(c.as_ptr(), uid, u32::MAX) };
    assert_eq!(rc, 0, "chown {}", p.display());
}

/// Outside systemd nothing else vouches for `state_dir`: a directory or a
/// file in it that another user owns or could write is where that user
/// plants an allowlist entry for themselves. The agent refuses to start on
/// it (exit 2, a config-class error) and says which path and how to fix it.
#[test]
fn a_state_dir_others_could_write_is_refused() {
    const NOBODY: u32 = 65534;
    let lab = Lab::new();
    let home = AgentHome::new();
    home.write_config(&home.base_config(&lab));
    let sd = home.state_dir.clone();
    let allow = sd.join("allow.json");
    let cache = sd.join("feeds/planted.cache");
    let planted = r#"{"version":1,"allow":["0.0.0.0/0"]}"#;
    let reset = || {
        let _ = fs::remove_dir_all(&sd);
        fs::create_dir_all(sd.join("feeds")).unwrap();
        fs::set_permissions(&sd, fs::Permissions::from_mode(0o700)).unwrap();
    };
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a Path, &'a str);
    let cases: Vec<Case> = vec![
        (
            "state_dir owned by another user",
            Box::new(|| chown(&sd, NOBODY)),
            &sd,
            "chmod 0700",
        ),
        (
            "group-writable state_dir",
            Box::new(|| fs::set_permissions(&sd, fs::Permissions::from_mode(0o770)).unwrap()),
            &sd,
            "chmod 0700",
        ),
        (
            "world-writable state_dir",
            Box::new(|| fs::set_permissions(&sd, fs::Permissions::from_mode(0o777)).unwrap()),
            &sd,
            "chmod 0700",
        ),
        (
            "allow.json planted by another user",
            Box::new(|| {
                fs::write(&allow, planted).unwrap();
                fs::set_permissions(&allow, fs::Permissions::from_mode(0o600)).unwrap();
                chown(&allow, NOBODY);
            }),
            &allow,
            "chmod 0600",
        ),
        (
            "world-writable allow.json",
            Box::new(|| {
                fs::write(&allow, planted).unwrap();
                fs::set_permissions(&allow, fs::Permissions::from_mode(0o666)).unwrap();
            }),
            &allow,
            "chmod 0600",
        ),
        (
            "a feed cache another user owns",
            Box::new(|| {
                fs::write(&cache, "192.0.2.1\n").unwrap();
                chown(&cache, NOBODY);
            }),
            &cache,
            "chmod 0600",
        ),
    ];
    for (what, make, path, chmod) in &cases {
        reset();
        make();
        match home.start_or_exit(&lab, &[]) {
            Ok(agent) => panic!("{what}: the agent started on it:\n{}", agent.logs()),
            Err((status, out)) => {
                assert_eq!(status.code(), Some(2), "{what}:\n{out}");
                let fix = format!("chown root:root {p} && {chmod} {p}", p = path.display());
                assert!(out.contains(&fix), "{what}: no `{fix}` in:\n{out}");
            }
        }
        assert!(
            !home.pin_dir.join("BAN_V4").exists(),
            "{what}: maps were loaded before the check"
        );
    }
    // Done as told, the same files are accepted.
    reset();
    fs::write(&allow, planted).unwrap();
    fs::set_permissions(&allow, fs::Permissions::from_mode(0o600)).unwrap();
    let agent = home.start(&lab, &[]);
    let list = home.ctl_ok(&["allow", "list"]);
    assert!(list.contains("0.0.0.0/0"), "{list}");
    println!(
        "hostile: {} untrusted state_dir layouts refused with exit 2 and the fix named",
        cases.len()
    );
    drop(agent);
}

/// Feed URLs may carry credentials (`user:password@`, `?token=`): a config
/// that holds one and that every local user can read is called out, by
/// the agent's log at start and on reload, and by check-config, with the
/// file and the fix. A config without secrets may stay world-readable.
#[test]
fn a_world_readable_config_with_feed_credentials_is_called_out() {
    let lab = Lab::new();
    let home = AgentHome::new();
    // Nothing listens there: the feed fails, which changes nothing here.
    let secret_feed = "[[feed]]\nname = \"paid\"\nurl = \"http://127.0.0.1:9/drop.txt?key=K3yValue\"\nallow_http = true\nrefresh = \"1h\"\n";
    home.write_config(&format!("{}{secret_feed}", home.base_config(&lab)));
    fs::set_permissions(&home.config, fs::Permissions::from_mode(0o644)).unwrap();
    let shown = home.config.display().to_string();
    let fix = format!("chown root:shield {shown} && chmod 0640 {shown}");
    let check = || home.run(&lab, &["check-config", &shown]).1;

    let out = check();
    assert!(
        out.contains("warning:") && out.contains("readable by every user") && out.contains(&fix),
        "{out}"
    );
    assert!(
        !out.contains("K3yValue"),
        "the warning shows the secret: {out}"
    );
    let agent = home.start(&lab, &[]);
    let logs = agent.logs();
    assert!(logs.contains("WARN") && logs.contains(&fix), "{logs}");
    assert!(!logs.contains("K3yValue"), "{logs}");
    drop(agent);

    fs::set_permissions(&home.config, fs::Permissions::from_mode(0o640)).unwrap();
    let out = check();
    assert!(!out.contains("warning"), "{out}");

    // Userinfo counts too; a config with no secret in it is no concern.
    home.write_config(&format!(
        "{}{}",
        home.base_config(&lab),
        secret_feed
            .replace("http://", "http://u:pw@")
            .replace("?key=K3yValue", "")
    ));
    fs::set_permissions(&home.config, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(check().contains(&fix), "userinfo");
    home.write_config(&format!(
        "{}{}",
        home.base_config(&lab),
        secret_feed.replace("?key=K3yValue", "")
    ));
    fs::set_permissions(&home.config, fs::Permissions::from_mode(0o644)).unwrap();
    let out = check();
    assert!(!out.contains("warning"), "{out}");
}

/// Finding 8 of issue 16: any local user can loop complete `GET /metrics`
/// requests on many connections, never closing them. Each used to cost a
/// snapshot under the agent's lock, and an answered connection kept its
/// slot (lingering for the client to close) where eviction could not take
/// it, so Prometheus got 503s. Every well-behaved scrape must get a 200.
#[test]
fn a_local_loop_of_complete_metrics_requests_does_not_starve_scrapes() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    };
    let lab = Lab::new();
    let home = AgentHome::new();
    home.write_config(&home.base_config(&lab));
    let _agent = home.start(&lab, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // 8 threads, each keeping its last 16 connections open after a
    // complete request (128 > the 64 slots), reading nothing back.
    let hostile: Vec<_> = (0..8)
        .map(|_| {
            let (ns, stop, sent) = (lab.server_ns.clone(), stop.clone(), sent.clone());
            thread::spawn(move || {
                Lab::enter(&ns);
                let mut open = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", 9964)) else {
                        continue;
                    };
                    if c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                        .is_ok()
                    {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    open.push_back(c);
                    if open.len() > 16 {
                        open.pop_front();
                    }
                }
            })
        })
        .collect();
    // Let the loop fill every slot first.
    while sent.load(Ordering::Relaxed) < 500 {
        thread::sleep(Duration::from_millis(10));
    }
    let mut failed = Vec::new();
    const SCRAPES: usize = 30;
    for _ in 0..SCRAPES {
        let ns = lab.server_ns.clone();
        // The scrape helper, keeping the read error: a reset tells an
        // evicted or refused connection from a slow one.
        let (text, err) = thread::spawn(move || {
            use std::io::Read;
            Lab::enter(&ns);
            let mut s = std::net::TcpStream::connect(("127.0.0.1", 9964)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            let err = s.read_to_string(&mut out).err();
            (out, err)
        })
        .join()
        .unwrap();
        if !text.starts_with("HTTP/1.1 200") {
            let first = text.lines().next().unwrap_or("(nothing)");
            failed.push(format!("{first} {err:?}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for h in hostile {
        h.join().unwrap();
    }
    let hostile_requests = sent.load(Ordering::Relaxed);
    let after = scrape(&lab.server_ns, 9964);
    let dropped: Vec<_> = after
        .lines()
        .filter(|l| l.starts_with("shield_metrics_connections_dropped_total{"))
        .collect();
    eprintln!(
        "hostile: {hostile_requests} complete metrics requests on connections held open; {} of {SCRAPES} scrapes failed {failed:?}; {dropped:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {SCRAPES} scrapes failed: {failed:?}",
        failed.len()
    );
}

/// rtnl, the kernel's lock over all network configuration, is held for
/// seconds at a time by other work on a busy host (here, a network
/// namespace full of devices being torn down). Whether an XDP link still
/// holds its interface is a question the kernel answers under rtnl; asked
/// under the agent's own lock, it held control requests and scrapes until
/// the host's network configuration was done.
#[test]
fn the_agent_answers_while_other_work_holds_the_kernels_network_lock() {
    use shield_tests::rtnl::RtnlHold;
    let lab = Lab::new();
    let home = AgentHome::new();
    home.write_config(&home.base_config(&lab));
    let _agent = home.start(&lab, &[]);
    let mut tried = Vec::new();
    // A hold must outlast the wait below and the answers; a longer one
    // is tried if the kernel got through a teardown quicker than that.
    for pairs in [150, 200, 250] {
        let hold = RtnlHold::prepare(pairs);
        let Some(mut probe) = hold.release() else {
            tried.push(format!("{pairs} pairs: no probe caught waiting"));
            continue;
        };
        // Not a bound on anything: the agent looks at its links once a
        // second, so 1.5 s into the hold it has run into the held lock
        // (if it asks under its own, the requests below wait for rtnl).
        thread::sleep(Duration::from_millis(1500));
        if probe.done() {
            tried.push(format!("{pairs} pairs: the hold ended within 1.5 s"));
            continue;
        }
        let status = home.ctl_json(&["status"]);
        let m = scrape(&lab.server_ns, 9964);
        if probe.done() {
            tried.push(format!(
                "{pairs} pairs: status and scrape answered only once rtnl was free"
            ));
            continue;
        }
        assert_eq!(status["type"], "status", "{status}");
        assert_eq!(
            metric(
                &m,
                &format!(
                    "shield_xdp_attached{{iface=\"{}\",mode=\"native\"}}",
                    lab.server_if
                )
            ),
            Some(1.0),
            "{m}"
        );
        eprintln!(
            "hostile: status and a scrape answered while rtnl was held ({pairs} pairs torn down); before: {tried:?}"
        );
        return;
    }
    panic!("never answered while rtnl was held: {tried:?}");
}
