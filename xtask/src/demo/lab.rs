//! The demo's own network and everything else it creates: three network
//! namespaces (a legitimate client, an attacker, the protected server)
//! joined by two veth pairs, a pin directory, a temporary directory and the
//! processes started in them. `Lab::teardown` removes all of it and checks
//! that nothing is left; dropping a `Lab` does the same on any early exit.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Every name starts with this and the demo's pid, so that two demos (or a
/// demo and the tests) never collide and leftovers of a killed demo can be
/// recognised and removed.
pub const PREFIX: &str = "shield-demo-";

/// One veth pair between a client namespace and the server.
pub struct Link {
    /// `legit` or `attacker`: the client namespace's role.
    pub role: &'static str,
    pub client_if: &'static str,
    pub server_if: &'static str,
    pub client_addr: [u8; 4],
    pub server_addr: [u8; 4],
}

/// The legitimate client's link, then one link per kind of attack traffic,
/// so that the wire's own counters say how much of each was sent.
pub const LINKS: [Link; 4] = [
    Link {
        role: "legit",
        client_if: "legit0",
        server_if: "srv-legit",
        client_addr: [10, 210, 1, 2],
        server_addr: [10, 210, 1, 1],
    },
    Link {
        role: "attacker",
        client_if: "atk-flood",
        server_if: "srv-flood",
        client_addr: [10, 210, 2, 2],
        server_addr: [10, 210, 2, 1],
    },
    Link {
        role: "attacker",
        client_if: "atk-spoof",
        server_if: "srv-spoof",
        client_addr: [10, 210, 4, 2],
        server_addr: [10, 210, 4, 1],
    },
    Link {
        role: "attacker",
        client_if: "atk-feed",
        server_if: "srv-feed",
        client_addr: [10, 210, 5, 2],
        server_addr: [10, 210, 5, 1],
    },
];

pub fn dotted(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

pub struct Lab {
    pub tag: String,
    pub dir: PathBuf,
    pub pin_dir: PathBuf,
    pub agent: Option<Child>,
    /// trafgen and other helpers, by name.
    pub procs: Vec<(String, Child)>,
    agent_bin: PathBuf,
    torn_down: bool,
}

impl Lab {
    pub fn namespace(&self, role: &str) -> String {
        format!("{}-{role}", self.tag)
    }

    pub fn server_ns(&self) -> String {
        self.namespace("server")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("demo.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("shield.sock")
    }

    /// Builds the network. On failure the half-built lab is removed.
    pub fn create(agent_bin: &Path) -> anyhow::Result<Lab> {
        remove_stale();
        let tag = format!("{PREFIX}{}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lab = Lab {
            pin_dir: PathBuf::from("/sys/fs/bpf").join(&tag),
            tag,
            dir,
            agent: None,
            procs: Vec::new(),
            agent_bin: agent_bin.to_path_buf(),
            torn_down: false,
        };
        let (server, legit, attacker) = (
            lab.server_ns(),
            lab.namespace("legit"),
            lab.namespace("attacker"),
        );
        for ns in [&server, &legit, &attacker] {
            ip(&["netns", "add", ns])?;
            // The agent's metrics endpoint listens on 127.0.0.1.
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Only trafgen's packets leave the attacker: no IPv6 neighbour or
        // multicast chatter, so the wire's counters count the attack alone.
        for key in ["all", "default"] {
            cmd::output(Command::new("ip").args([
                "netns",
                "exec",
                &attacker,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ]))?;
        }
        for l in &LINKS {
            let client_ns = lab.namespace(l.role);
            ip(&[
                "link",
                "add",
                l.client_if,
                "netns",
                &client_ns,
                "type",
                "veth",
                "peer",
                "name",
                l.server_if,
                "netns",
                &server,
            ])?;
            ip(&[
                "-n",
                &client_ns,
                "addr",
                "add",
                &format!("{}/24", dotted(l.client_addr)),
                "dev",
                l.client_if,
            ])?;
            ip(&[
                "-n",
                &server,
                "addr",
                "add",
                &format!("{}/24", dotted(l.server_addr)),
                "dev",
                l.server_if,
            ])?;
            ip(&["-n", &client_ns, "link", "set", l.client_if, "up"])?;
            ip(&["-n", &server, "link", "set", l.server_if, "up"])?;
        }
        // Spoofed and feed-listed sources have no route back: without this
        // the server's kernel would drop what shield passes (reverse-path
        // filter) and the receiver could not count it.
        let keys = ["all", "default"]
            .into_iter()
            .chain(LINKS.iter().map(|l| l.server_if))
            .map(|dev| format!("net.ipv4.conf.{dev}.rp_filter"));
        for key in keys {
            cmd::output(Command::new("ip").args([
                "netns",
                "exec",
                &server,
                "sysctl",
                "-qw",
                &format!("{key}=0"),
            ]))?;
        }
        Ok(lab)
    }

    /// The MAC address of a server interface.
    pub fn server_mac(&self, server_if: &str) -> anyhow::Result<String> {
        let out = cmd::output(Command::new("ip").args([
            "-n",
            &self.server_ns(),
            "-o",
            "link",
            "show",
            server_if,
        ]))?;
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("no MAC address on {server_if}"))
    }

    /// (packets sent, packets dropped because the peer's ring was full) on
    /// a client-side veth.
    pub fn tx_counters(&self, link: &Link) -> anyhow::Result<(u64, u64)> {
        let out = cmd::output(Command::new("ip").args([
            "-n",
            &self.namespace(link.role),
            "-s",
            "-j",
            "link",
            "show",
            link.client_if,
        ]))?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -s -j link`")?;
        let get = |k: &str| {
            v.get(0)
                .and_then(|l| l.pointer(&format!("/stats64/tx/{k}")))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        Ok((get("packets"), get("dropped")))
    }

    /// Stops the helper processes (trafgen ignores SIGINT and SIGTERM while
    /// it paces its packets, so SIGKILL; what it sent is read from the
    /// wire's counters, not from trafgen).
    pub fn stop_procs(&mut self) {
        for (_, p) in &mut self.procs {
            // SAFETY: kill(2) of the process group this child leads.
            unsafe { libc::kill(-(p.id() as libc::pid_t), libc::SIGKILL) };
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// Removes everything, then checks that nothing is left: namespaces,
    /// pins, processes, files.
    pub fn teardown(&mut self) -> anyhow::Result<()> {
        self.torn_down = true;
        self.stop_procs();
        let agent_pid = self.agent.as_ref().map(Child::id);
        if let Some(mut a) = self.agent.take() {
            signal(&a, libc::SIGTERM);
            reap(&mut a, Duration::from_secs(5));
        }
        // The agent leaves enforcement pinned on purpose (fail-static); the
        // demo removes it the way an operator would.
        if self.pin_dir.exists() && self.config_path().exists() {
            let _ = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", self.server_ns()))
                .arg(&self.agent_bin)
                .arg("--config")
                .arg(self.config_path())
                .arg("--detach")
                .output();
        }
        remove_pins(&self.pin_dir);
        for role in ["legit", "attacker", "server"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(role)])
                .output();
        }
        // Anything else still running with the lab's name in its command
        // line was started by this demo (its paths and namespaces carry the
        // tag): a helper that forked, say.
        for pid in tagged_processes(&self.tag) {
            // SAFETY: kill(2); the pid carries this demo's unique tag.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = fs::remove_dir_all(&self.dir);

        let mut left = Vec::new();
        let netns = cmd::output(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
        left.extend(netns.lines().filter(|l| l.starts_with(&self.tag)).map(|l| {
            format!(
                "network namespace {}",
                l.split_whitespace().next().unwrap_or(l)
            )
        }));
        if self.pin_dir.exists() {
            left.push(format!("pins under {}", self.pin_dir.display()));
        }
        if self.dir.exists() {
            left.push(format!("files under {}", self.dir.display()));
        }
        let pids = agent_pid
            .into_iter()
            .chain(self.procs.iter().map(|(_, p)| p.id()));
        for pid in pids {
            if Path::new(&format!("/proc/{pid}")).exists() {
                left.push(format!("process {pid}"));
            }
        }
        thread::sleep(Duration::from_millis(100));
        for pid in tagged_processes(&self.tag) {
            left.push(format!("process {pid}"));
        }
        self.procs.clear();
        if !left.is_empty() {
            bail!("the demo left behind: {}", left.join(", "));
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.torn_down
            && let Err(e) = self.teardown()
        {
            eprintln!("xtask demo: cleanup incomplete: {e}");
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    cmd::output(Command::new("ip").args(args)).map(|_| ())
}

fn signal(p: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    unsafe { libc::kill(p.id() as libc::pid_t, sig) };
}

/// Waits for `p` up to `grace`, then kills it.
fn reap(p: &mut Child, grace: Duration) {
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if matches!(p.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = p.kill();
    let _ = p.wait();
}

fn remove_pins(dir: &Path) {
    if dir.exists() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Removes what an earlier demo left when it was killed outright (SIGKILL
/// leaves no chance to clean up): namespaces and pins whose pid is gone.
fn remove_stale() {
    let alive = |name: &str| -> bool {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        pid.is_none_or(|p| Path::new(&format!("/proc/{p}")).exists())
    };
    if let Ok(list) = cmd::output(Command::new("ip").args(["netns", "list"])) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(PREFIX) && !alive(ns) {
                eprintln!("xtask demo: removing {ns}, left by an interrupted demo");
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
    if let Ok(rd) = fs::read_dir("/sys/fs/bpf") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !alive(&name) {
                eprintln!("xtask demo: removing /sys/fs/bpf/{name}, left by an interrupted demo");
                remove_pins(&e.path());
            }
        }
    }
}

/// Processes (other than this one) whose command line mentions `tag`.
fn tagged_processes(tag: &str) -> Vec<libc::pid_t> {
    let me = std::process::id();
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(tag))
        })
        .filter_map(|pid| libc::pid_t::try_from(pid).ok())
        .collect()
}
