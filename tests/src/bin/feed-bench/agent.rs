//! The real `shield-agent` with the feed in its config, on a veth pair in a
//! network namespace of its own: how long until the feed is enforced, how
//! long a refresh takes through `shieldctl`, and how much memory the agent
//! holds.

use std::{
    fs,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    control,
    sys::{Ctx, Daemon, Netns, Res, TempDir, memory, tag},
};

const FEED: &str = "bench";
const IFACE: &str = "fb0";

/// Where the two binaries are.
pub struct Bins {
    pub agent: PathBuf,
    pub ctl: PathBuf,
}

impl Bins {
    pub fn in_dir(dir: &Path) -> Res<Bins> {
        let bins = Bins {
            agent: dir.join("shield-agent"),
            ctl: dir.join("shieldctl"),
        };
        for b in [&bins.agent, &bins.ctl] {
            if !b.is_file() {
                return Err(format!(
                    "{} is missing: build it with `cargo build --release -p shield-user --bins` (cargo xtask bench does)",
                    b.display()
                ));
            }
        }
        Ok(bins)
    }
}

pub struct Round {
    /// Spawn until READY=1: program loaded, maps pinned, attached.
    pub ready: Duration,
    /// READY until `feeds list` shows every entry: the first fetch, parse
    /// and apply (it starts on the agent's first tick, right after READY).
    pub applied: Duration,
    pub loaded_rss: f64,
    pub loaded_hwm: f64,
    /// Wall time of `shieldctl feeds refresh`, which returns once the new
    /// version is applied.
    pub refresh: Duration,
    pub refresh_reply: String,
    pub after_rss: f64,
    pub after_hwm: f64,
    /// `GET /metrics` wall times with the feed loaded and
    /// [`TRACKED_SOURCES`] buckets in the map.
    pub scrape_ms: Vec<f64>,
    pub scrape_bytes: usize,
    /// `shieldctl ban add` until the data plane drops, per ban.
    pub ban_ms: Vec<f64>,
    /// `shieldctl ban add` alone, per ban.
    pub ban_ctl_ms: Vec<f64>,
}

/// Sources the agent tracks while its scrape is timed.
pub const TRACKED_SOURCES: u32 = 100_000;
/// The agent's metrics port, inside its own namespace.
const METRICS_PORT: u16 = 9964;
/// Bans timed per round.
const BANS: u32 = 5;

/// Everything one agent run creates. Dropped in this order: the agent
/// stopped, its pins (and with them the XDP link) removed, then the
/// namespace and the directory.
struct Lab {
    agent: Option<Daemon>,
    pin_dir: PathBuf,
    _ns: Netns,
    dir: TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.stop(Duration::from_secs(10));
        }
        // The agent leaves enforcement pinned on purpose (fail-static);
        // the benchmark does not.
        if let Err(e) = shield_user::dataplane::pins::remove_all(&self.pin_dir) {
            eprintln!("removing {}: {e}", self.pin_dir.display());
        }
    }
}

impl Lab {
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn ctl(&self, bins: &Bins, args: &[&str]) -> Res<String> {
        let out = Command::new(&bins.ctl)
            .arg("--socket")
            .arg(self.dir.join("shield.sock"))
            .args(args)
            .output()
            .ctx(|| "running shieldctl")?;
        if !out.status.success() {
            return Err(format!(
                "shieldctl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The feed's entry count once its last refresh succeeded; an error if
    /// the agent reports one for the feed.
    fn feed_entries(&self, bins: &Bins) -> Res<Option<u64>> {
        let text = self.ctl(bins, &["--json", "feeds", "list"])?;
        let v: serde_json::Value =
            serde_json::from_str(&text).ctx(|| format!("feeds list is not JSON: {text}"))?;
        let row = v["data"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == FEED))
            .ok_or_else(|| format!("feeds list has no feed `{FEED}`: {text}"))?;
        if let Some(e) = row["last_error"].as_str() {
            return Err(format!("the agent could not load the feed: {e}"));
        }
        if let Some(e) = row["held"].as_str() {
            return Err(format!("the agent held the feed back: {e}"));
        }
        Ok(row["last_success_unix"]
            .is_u64()
            .then(|| row["entries"].as_u64())
            .flatten())
    }
}

/// One run: start, wait for the feed, measure, refresh, measure, stop.
/// `want` is how many entries each version holds once applied.
pub fn round(
    bins: &Bins,
    root: &Path,
    n: u32,
    v1: &Path,
    v2: &Path,
    want: (usize, usize),
) -> Res<Round> {
    let ns = Netns::create(format!("{}-agent{n}", tag()))?;
    ns.ip(&["link", "add", IFACE, "type", "veth", "peer", "name", "fb1"])?;
    for dev in [IFACE, "fb1", "lo"] {
        ns.ip(&["link", "set", dev, "up"])?;
    }
    let lab = Lab {
        agent: None,
        pin_dir: PathBuf::from(format!("/sys/fs/bpf/{}-agent{n}", tag())),
        _ns: ns,
        dir: TempDir::create(root.join(format!("agent{n}")))?,
    };
    let feed = lab.dir.join("feed.txt");
    // Hard links, not copies: the agent reads the same bytes as every
    // other run, and the refresh below is one rename.
    fs::hard_link(v1, &feed).ctx(|| format!("linking {}", feed.display()))?;
    let config = lab.dir.join("shield.toml");
    // The synthetic feed's prefixes (random /16s to /31s) cover some 730
    // million IPv4 addresses, past a feed's default cap of 2^28.
    fs::write(
        &config,
        format!(
            "interfaces = [\"{IFACE}\"]\n\
             pin_dir = \"{}\"\n\
             state_dir = \"{}\"\n\
             control_socket = \"{}\"\n\
             metrics_listen = \"127.0.0.1:{METRICS_PORT}\"\n\
             [[feed]]\n\
             name = \"{FEED}\"\n\
             path = \"{}\"\n\
             refresh = \"1h\"\n\
             max_addresses = 4294967296\n",
            lab.pin_dir.display(),
            lab.dir.join("state").display(),
            lab.dir.join("shield.sock").display(),
            feed.display(),
        ),
    )
    .ctx(|| "writing the agent's config")?;
    // READY=1 over the systemd notify protocol marks the end of start-up
    // precisely, without polling.
    let notify_path = lab.dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).ctx(|| "binding the notify socket")?;
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .ctx(|| "notify socket")?;

    let mut lab = lab;
    let log = fs::File::create(lab.dir.join("agent.log")).ctx(|| "creating the agent log")?;
    let mut cmd = Command::new(&bins.agent);
    cmd.arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    lab._ns.enter(&mut cmd)?;
    let started = Instant::now();
    let child = cmd.spawn().ctx(|| "starting shield-agent")?;
    lab.agent = Some(Daemon { child });

    let deadline = started + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    let ready = loop {
        if let Ok(n) = notify.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
        {
            break started.elapsed();
        }
        if let Some(s) = lab.agent.as_mut().and_then(Daemon::exited) {
            return Err(format!(
                "shield-agent exited during start-up ({s}):\n{}",
                lab.log_tail()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "shield-agent not ready after 60 s:\n{}",
                lab.log_tail()
            ));
        }
    };

    // Polled: each `feeds list` waits for the agent's lock, which the
    // apply holds, so it answers right after the entries are in.
    let wait_for = |count: usize, since: Instant| -> Res<Duration> {
        loop {
            if lab.feed_entries(bins)? == Some(count as u64) {
                return Ok(since.elapsed());
            }
            if since.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "the feed never reached {count} entries:\n{}",
                    lab.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    };
    let applied = wait_for(want.0, started + ready)?;
    let pid = lab.agent.as_ref().map_or(0, Daemon::pid);
    let (loaded_rss, loaded_hwm) = memory(pid)?;

    let next = lab.dir.join("feed.next");
    fs::hard_link(v2, &next).ctx(|| format!("linking {}", next.display()))?;
    fs::rename(&next, &feed).ctx(|| format!("replacing {}", feed.display()))?;
    let t = Instant::now();
    let reply = lab.ctl(bins, &["feeds", "refresh", FEED])?;
    let refresh = t.elapsed();
    if lab.feed_entries(bins)? != Some(want.1 as u64) {
        return Err(format!(
            "after the refresh the feed does not hold {} entries: {reply}",
            want.1
        ));
    }
    let (after_rss, after_hwm) = memory(pid)?;

    control::track_sources(&lab.pin_dir, TRACKED_SOURCES)?;
    let (scrape_ms, scrape_bytes) = control::scrape(&lab._ns.name, METRICS_PORT, 5)?;
    let mut ban_ms = Vec::new();
    let mut ban_ctl_ms = Vec::new();
    for i in 0..BANS {
        let addr = std::net::Ipv4Addr::new(198, 18, 5, 1 + i as u8);
        let (l, c) = control::ban_latency(
            &bins.ctl,
            &lab.dir.join("shield.sock"),
            &lab.pin_dir,
            IFACE,
            addr,
        )?;
        ban_ms.push(l);
        ban_ctl_ms.push(c);
    }
    Ok(Round {
        ready,
        applied,
        loaded_rss,
        loaded_hwm,
        refresh,
        refresh_reply: reply.trim().to_string(),
        after_rss,
        after_hwm,
        scrape_ms,
        scrape_bytes,
        ban_ms,
        ban_ctl_ms,
    })
}
