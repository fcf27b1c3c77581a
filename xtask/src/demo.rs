//! `cargo xtask demo`: the shield on a lab network of its own, flooded, with
//! what it dropped and why, then everything removed again.
//!
//! The lab is two network namespaces joined by a veth pair. The agent runs
//! in the server namespace with the embedded default policy (the demo's
//! config file only moves its pins, state and socket out of the way of a
//! real installation). trafgen plays a legitimate client, a UDP flooder and
//! a SYN flooder from the client namespace.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

const CLIENT_NS: &str = "shield-demo-client";
const SERVER_NS: &str = "shield-demo-server";
const CLIENT_IF: &str = "demo-cli";
const SERVER_IF: &str = "demo-srv";
const SERVER: &str = "10.210.0.2";
const LEGIT: &str = "10.210.0.3";
const FLOODER: &str = "10.210.0.66";
const SYN_FLOODER: &str = "10.210.0.77";
const BANNED: &str = "10.210.0.99";

/// Everything the demo creates, removed on drop even when a step fails.
struct Lab {
    dir: PathBuf,
    pin_dir: PathBuf,
    socket: PathBuf,
    agent: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
            let _ = a.wait();
        }
        // The agent leaves enforcement pinned on purpose; the demo does not.
        for dir in [self.pin_dir.join("links"), self.pin_dir.clone()] {
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let _ = fs::remove_file(e.path());
                }
            }
            let _ = fs::remove_dir(&dir);
        }
        for ns in [CLIENT_NS, SERVER_NS] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    cmd::output(Command::new("ip").args(args)).map(|_| ())
}

fn step(title: &str) {
    eprintln!("\n\x1b[1m==> {title}\x1b[0m");
}

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    step("building shield-agent and shieldctl (release)");
    cmd::cargo(&["build", "--release", "--package", "shield-user", "--bins"])?;
    let bin = cmd::root().join("target/release");

    // Leftovers of an interrupted demo would make `ip netns add` fail.
    for ns in [CLIENT_NS, SERVER_NS] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    let dir = std::env::temp_dir().join(format!("shield-demo-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let mut lab = Lab {
        pin_dir: PathBuf::from(format!("/sys/fs/bpf/shield-demo-{}", std::process::id())),
        socket: dir.join("shield.sock"),
        dir,
        agent: None,
    };

    step("lab: two network namespaces and a veth pair");
    ip(&["netns", "add", CLIENT_NS])?;
    ip(&["netns", "add", SERVER_NS])?;
    ip(&[
        "link", "add", CLIENT_IF, "netns", CLIENT_NS, "type", "veth", "peer", "name", SERVER_IF,
        "netns", SERVER_NS,
    ])?;
    ip(&[
        "-n",
        CLIENT_NS,
        "addr",
        "add",
        "10.210.0.1/24",
        "dev",
        CLIENT_IF,
    ])?;
    ip(&[
        "-n",
        SERVER_NS,
        "addr",
        "add",
        &format!("{SERVER}/24"),
        "dev",
        SERVER_IF,
    ])?;
    for (ns, dev) in [(CLIENT_NS, CLIENT_IF), (SERVER_NS, SERVER_IF)] {
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    eprintln!("   {CLIENT_NS} ({CLIENT_IF}) <-> {SERVER_NS} ({SERVER_IF}, {SERVER})");

    step("shield-agent with the embedded default policy");
    let config = lab.dir.join("demo.toml");
    fs::write(
        &config,
        format!(
            "# Only where things go; every policy key is the embedded default.\n\
             interfaces = [\"{SERVER_IF}\"]\n\
             pin_dir = \"{}\"\n\
             state_dir = \"{}\"\n\
             control_socket = \"{}\"\n\
             metrics_listen = \"127.0.0.1:0\"\n",
            lab.pin_dir.display(),
            lab.dir.join("state").display(),
            lab.socket.display()
        ),
    )?;
    eprintln!("{}", fs::read_to_string(&config)?);
    let log = fs::File::create(lab.dir.join("agent.log"))?;
    let agent = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{SERVER_NS}"))
        .arg(bin.join("shield-agent"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting shield-agent")?;
    lab.agent = Some(agent);
    wait_ready(&bin, &lab)?;
    ctl(&bin, &lab, &["status"])?;
    ctl(&bin, &lab, &["limits"])?;

    let mac = server_mac()?;
    step(&format!(
        "traffic: a legitimate client ({LEGIT}, 500 packets/s), a UDP flooder ({FLOODER}, 100k packets/s), \
         a SYN flooder ({SYN_FLOODER}, 20k SYNs/s to port 443) and a source we ban by hand ({BANNED})"
    ));
    ctl(
        &bin,
        &lab,
        &[
            "ban",
            "add",
            BANNED,
            "--ttl",
            "10m",
            "--reason",
            "demo: known bad",
        ],
    )?;
    let legit = trafgen(
        &lab,
        &mac,
        LEGIT,
        "udp(sp=40000, dp=8080), fill(0x41, 64)",
        "500pps",
        4_000,
    )?;
    let flood = trafgen(
        &lab,
        &mac,
        FLOODER,
        "udp(sp=4444, dp=8080), fill(0x42, 64)",
        "100000pps",
        800_000,
    )?;
    let syn = trafgen(
        &lab,
        &mac,
        SYN_FLOODER,
        "tcp(sp=5555, dp=443, syn), fill(0x00, 0)",
        "20000pps",
        60_000,
    )?;
    let banned = trafgen(
        &lab,
        &mac,
        BANNED,
        "udp(sp=6666, dp=8080), fill(0x43, 64)",
        "1000pps",
        2_000,
    )?;
    eprintln!("   flooding for about 8 s; autoban turns a flood of more than 5 s into a ban");
    for mut t in [legit, flood, syn, banned] {
        t.wait()?;
    }
    thread::sleep(Duration::from_millis(1500));

    step("what was dropped and why: shieldctl stats");
    ctl(&bin, &lab, &["stats"])?;
    step("who is flooding: shieldctl top");
    ctl(&bin, &lab, &["top"])?;
    step("bans, including the autoban: shieldctl ban list");
    ctl(&bin, &lab, &["ban", "list"])?;
    step(&format!(
        "why the flooder is dropped: shieldctl check {FLOODER} --proto udp --port 8080"
    ));
    ctl(
        &bin,
        &lab,
        &["check", FLOODER, "--proto", "udp", "--port", "8080"],
    )?;
    step(&format!(
        "and why the legitimate client passes: shieldctl check {LEGIT} --proto udp --port 8080"
    ));
    ctl(
        &bin,
        &lab,
        &["check", LEGIT, "--proto", "udp", "--port", "8080"],
    )?;

    step("cleaning up: shieldctl detach --yes, then the lab");
    ctl(&bin, &lab, &["detach", "--yes"])?;
    drop(lab);
    eprintln!("\ndemo done: no namespaces, pins or files left behind");
    Ok(())
}

fn ctl(bin: &Path, lab: &Lab, args: &[&str]) -> anyhow::Result<()> {
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                (*a).to_string()
            }
        })
        .collect();
    eprintln!("$ shieldctl {}", shown.join(" "));
    let status = Command::new(bin.join("shieldctl"))
        .arg("--socket")
        .arg(&lab.socket)
        .args(args)
        .status()
        .context("running shieldctl")?;
    if !status.success() {
        bail!("shieldctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn wait_ready(bin: &Path, lab: &Lab) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ok = Command::new(bin.join("shieldctl"))
            .arg("--socket")
            .arg(&lab.socket)
            .arg("status")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(200));
    }
    let log = fs::read_to_string(lab.dir.join("agent.log")).unwrap_or_default();
    bail!("shield-agent did not come up within 20 s; its log:\n{log}")
}

fn server_mac() -> anyhow::Result<String> {
    let out =
        cmd::output(Command::new("ip").args(["-n", SERVER_NS, "-o", "link", "show", SERVER_IF]))?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .context("no MAC address on the server interface")
}

/// Starts trafgen in the client namespace sending `count` frames of `l4`
/// from `src` at `rate`; it stops by itself.
fn trafgen(
    lab: &Lab,
    mac: &str,
    src: &str,
    l4: &str,
    rate: &str,
    count: u32,
) -> anyhow::Result<Child> {
    let cfg = lab.dir.join(format!("trafgen-{src}.cfg"));
    fs::write(
        &cfg,
        format!("{{ eth(da={mac}), ipv4(sa={src}, da={SERVER}), {l4} }}\n"),
    )?;
    Command::new("ip")
        .args(["netns", "exec", CLIENT_NS, "trafgen", "-o", CLIENT_IF, "-i"])
        .arg(&cfg)
        .args(["-b", rate, "-n", &count.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting trafgen")
}
