//! What the scenarios do to the guest: its lab, systemd, shieldctl, and
//! the phase file that carries the run across a reboot.

use std::{
    fs,
    net::IpAddr,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use shield_tests::lab::Lab;

const CLIENT_NS: &str = "vm-client";
const HOST_NS: &str = "vm-host";
/// The lab's subnet: 10.200.77.0/24, the client .1, this host .2.
const LAB_N: u8 = 77;
/// Extra client addresses: a feed lists one, one is banned, one is rate
/// limited, so that each verdict is seen apart from the others.
pub const FEED_HOST: u8 = 3;
pub const BANNED_HOST: u8 = 4;
pub const LIMITED_HOST: u8 = 5;

pub const UNIT: &str = "shield-agent.service";
const PHASE: &str = "/var/lib/shield-vm-test/phase";

pub fn make_lab() {
    let lab = Lab::on_host(CLIENT_NS, HOST_NS, LAB_N);
    for host in [FEED_HOST, BANNED_HOST, LIMITED_HOST] {
        lab.add_client_v4(host);
    }
}

pub fn lab() -> Lab {
    Lab::existing(CLIENT_NS, HOST_NS, LAB_N)
}

/// The client's address `10.200.77.<host>`.
pub fn client(host: u8) -> IpAddr {
    IpAddr::from([10, 200, LAB_N, host])
}

/// Datagrams from `10.200.77.<host>` to this host's `port` that arrived,
/// of `count` sent.
pub fn udp(lab: &Lab, host: u8, port: u16, count: u32) -> u32 {
    lab.udp_from(client(host), lab.server_v4, port, count)
}

pub fn phase() -> Option<String> {
    fs::read_to_string(PHASE).ok().map(|s| s.trim().to_string())
}

pub fn set_phase(p: &str) {
    fs::create_dir_all("/var/lib/shield-vm-test").unwrap();
    fs::write(PHASE, p).unwrap();
    // Written before a reboot: on disk before systemd starts stopping.
    let _ = Command::new("sync").status();
}

/// Runs a command; Err with its output when it fails.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = output(args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn output(args: &[&str]) -> Result<Output, String> {
    Command::new(args[0])
        .args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))
}

/// `systemctl show -p KEY --value UNIT`.
pub fn unit_property(key: &str) -> String {
    sh(&["systemctl", "show", "-p", key, "--value", UNIT])
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The agent's pid while systemd has it running and ready, else None.
pub fn running_pid() -> Option<u32> {
    if unit_property("ActiveState") != "active" || unit_property("SubState") != "running" {
        return None;
    }
    unit_property("MainPID").parse().ok().filter(|p| *p != 0)
}

/// Polls `f` every 200 ms until it gives Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// `shieldctl --json ARGS`, parsed.
pub fn ctl_json(args: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec!["shieldctl", "--json"];
    all.extend_from_slice(args);
    let text = sh(&all)?;
    serde_json::from_str(&text).map_err(|e| format!("shieldctl said `{text}`: {e}"))
}

/// Whether the kernel has an XDP program on the lab's interface.
pub fn xdp_attached(lab: &Lab) -> bool {
    sh(&["ip", "-j", "-d", "link", "show", "dev", &lab.server_if])
        .map(|t| t.contains("\"xdp\""))
        .unwrap_or(false)
}

/// What an operator would look at when something failed.
pub fn diagnostics() -> String {
    let mut text = String::new();
    for args in [
        &["systemctl", "status", "--no-pager", "-l", UNIT][..],
        &["journalctl", "-u", UNIT, "--no-pager", "-n", "60"][..],
        &["ip", "-d", "link", "show", "dev", "sh-srv"][..],
    ] {
        text.push_str(&format!("--- {}\n", args.join(" ")));
        match output(args) {
            Ok(o) => {
                text.push_str(&String::from_utf8_lossy(&o.stdout));
                text.push_str(&String::from_utf8_lossy(&o.stderr));
            }
            Err(e) => text.push_str(&e),
        }
    }
    text
}
