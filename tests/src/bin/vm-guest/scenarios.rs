//! The scenarios, in the order an operator lives them: install, start,
//! verdicts, reload, the sandbox, crashes and hangs, stop, reboot,
//! removal. Each one leaves the state the next one starts from, so the
//! first failure ends the run.

use std::{
    fs,
    io::Write as _,
    panic::{self, AssertUnwindSafe},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use shield_tests::lab::Lab;
use shield_user::dataplane::{DataplaneError, features};

use crate::guest::{
    BANNED_HOST, FEED_HOST, LIMITED_HOST, UNIT, client, ctl_json, diagnostics, lab, output, phase,
    running_pid, set_phase, sh, udp, unit_property, wait_for, xdp_attached,
};

type Scenario = (&'static str, fn(&Lab) -> Result<(), String>);

/// Before the reboot.
const FIRST_BOOT: &[Scenario] = &[
    ("install", install),
    ("program-tests", program_tests),
    ("kernel-features", kernel_features),
    ("enable-and-start", enable_and_start),
    ("verdicts", verdicts),
    ("reload", reload),
    ("sandbox", sandbox),
    ("kill-9-restarts-and-enforcement-stays", kill_9),
    ("watchdog-restarts-a-stopped-agent", watchdog),
    ("stop-keeps-enforcement", stop_keeps_enforcement),
];

/// After it.
const SECOND_BOOT: &[Scenario] = &[
    ("reboot-restores-bans", reboot_restores_bans),
    ("remove-detaches", remove_detaches),
];

/// On a kernel older than shield supports (xtask's `debian11`), one boot.
const REFUSAL: &[Scenario] = &[
    ("install", install),
    ("kernel-features", kernel_features_recorded),
    ("refuses-in-one-sentence", refuses_in_one_sentence),
];

/// What shield should do on this kernel, as the host's `Expect` wrote it.
fn expected_to_refuse() -> bool {
    fs::read_to_string("/payload/expect").is_ok_and(|s| s.trim() == "refuses")
}

/// An ordinary port on this host with no rule of its own.
const OPEN_PORT: u16 = 9000;
/// The port the config limits to a burst of `BURST`, then 1 a minute.
const LIMITED_PORT: u16 = 9100;
const BURST: u32 = 5;

const FEED: &str = "/etc/shield/feeds/vm-test.txt";
const CONFIG: &str = "/etc/shield/shield.toml";

/// Generous for TCG, where the guest runs about ten times slower than a
/// host: what takes a second natively is given a minute.
const SLOW: Duration = Duration::from_secs(60);

pub fn run_this_boot() -> ExitCode {
    let (scenarios, next) = match phase().as_deref() {
        None if expected_to_refuse() => {
            set_phase("refusal started");
            (REFUSAL, "done")
        }
        None => {
            set_phase("first boot started");
            (FIRST_BOOT, "second boot")
        }
        Some("second boot") => {
            set_phase("second boot started");
            (SECOND_BOOT, "done")
        }
        Some(other) => {
            say(&format!(
                "FAIL boot: the VM booted again unexpectedly (phase `{other}`): a panic or a crash?"
            ));
            return power_off();
        }
    };
    let lab = lab();
    for (name, scenario) in scenarios {
        let started = Instant::now();
        // A panic (a helper's assert) is that scenario's failure, not the
        // driver's end: the host still gets a FAIL line and the diagnostics.
        let result = panic::catch_unwind(AssertUnwindSafe(|| scenario(&lab)))
            .unwrap_or_else(|p| Err(panic_text(&p)));
        match result {
            Ok(()) => say(&format!(
                "PASS {name} ({:.1} s)",
                started.elapsed().as_secs_f64()
            )),
            Err(why) => {
                say(&format!("FAIL {name}: {why}"));
                say(&diagnostics());
                return power_off();
            }
        }
    }
    if next == "done" {
        let total = if expected_to_refuse() {
            REFUSAL.len()
        } else {
            FIRST_BOOT.len() + SECOND_BOOT.len()
        };
        say(&format!("DONE {total} passed"));
        return power_off();
    }
    set_phase(next);
    say("rebooting");
    let _ = sh(&["systemctl", "reboot"]);
    // systemd stops this unit on the way down.
    loop {
        thread::sleep(Duration::from_secs(60));
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(ToString::to_string))
        .unwrap_or_else(|| "panicked".into())
}

fn power_off() -> ExitCode {
    let _ = sh(&["systemctl", "poweroff"]);
    ExitCode::SUCCESS
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

/// Ten datagrams from `host` to `port`: all of them arrive.
fn passes(lab: &Lab, host: u8, port: u16) -> Result<(), String> {
    ten_datagrams(lab, host, port, 10)
}

/// None of them does.
fn dropped(lab: &Lab, host: u8, port: u16) -> Result<(), String> {
    ten_datagrams(lab, host, port, 0)
}

fn ten_datagrams(lab: &Lab, host: u8, port: u16, expected: u32) -> Result<(), String> {
    let got = udp(lab, host, port, 10);
    check(got == expected, || {
        format!(
            "{} -> port {port}: {got} of 10 arrived, expected {expected}",
            client(host)
        )
    })
}

fn install(_: &Lab) -> Result<(), String> {
    // As an operator would: apt resolves the dependencies (all of them in
    // the image already; the VM has no network).
    sh(&["apt-get", "install", "-y", "/payload/shield.deb"])?;
    let status = sh(&["dpkg-query", "-W", "-f=${Status}", "shield"])?;
    check(status == "install ok installed", || {
        format!("dpkg says `{status}`")
    })?;
    sh(&["getent", "group", "shield"])?;
    // Installed, not started: it needs `interfaces` first.
    check(unit_property("ActiveState") == "inactive", || {
        format!(
            "the agent is {} right after install",
            unit_property("ActiveState")
        )
    })
}

fn program_tests(_: &Lab) -> Result<(), String> {
    let out = output(&["/payload/program-tests", "--test-threads=1"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .filter(|l| l.starts_with("test result:"))
        .collect::<Vec<_>>()
        .join("; ");
    say(&format!("  program tests on {}: {summary}", uname()));
    check(out.status.success(), || {
        format!(
            "the program tests failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One line per feature: `feature <kernel> | <name> | yes/no | how`.
pub fn feature_lines() -> Vec<String> {
    let kernel = uname();
    crate::features::probe()
        .into_iter()
        .map(|(name, yes, how)| {
            format!(
                "feature {kernel} | {name} | {} | {how}",
                if yes { "yes" } else { "no" }
            )
        })
        .collect()
}

/// Recorded for the docs' table. shield needs all but the syncookie
/// helpers and the rows marked optional today (the program tests above
/// would have failed without them), so only a kernel missing one of the
/// others fails here.
fn kernel_features(lab: &Lab) -> Result<(), String> {
    let lines = kernel_features_said(lab);
    let missing: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("| no |") && !l.contains("syncookie") && !l.contains("(optional)"))
        .collect();
    check(missing.is_empty(), || format!("missing: {missing:?}"))
}

/// Every feature line, said for the docs' table.
fn kernel_features_said(_: &Lab) -> Vec<String> {
    let lines = feature_lines();
    for line in &lines {
        say(&format!("  {line}"));
    }
    lines
}

/// On a kernel shield does not support: recorded, and one feature that
/// shield needs must be missing, or this kernel tests nothing.
fn kernel_features_recorded(lab: &Lab) -> Result<(), String> {
    kernel_features_said(lab);
    features::first_missing().map(|_| ()).ok_or_else(|| {
        format!(
            "{} has every feature shield needs: choose an older kernel for the refusal test",
            uname()
        )
    })
}

/// The operator starts the agent on a kernel that lacks a feature: systemd
/// says it failed, the journal says in shield's one sentence which feature
/// is missing (not only a verifier log), systemd stops retrying, nothing is
/// attached, and the host's traffic flows as it did before shield.
fn refuses_in_one_sentence(lab: &Lab) -> Result<(), String> {
    let missing = features::first_missing().ok_or("no feature is missing")?;
    let sentence = DataplaneError::MissingFeature(missing).to_string();
    fs::write(CONFIG, config(false)).map_err(|e| e.to_string())?;
    let started = sh(&["systemctl", "enable", "--now", UNIT]);
    check(started.is_err(), || {
        "systemctl enable --now succeeded on a kernel shield cannot run on".into()
    })?;
    let journal = sh(&["journalctl", "-u", UNIT, "-o", "cat", "--no-pager"])?;
    let said = journal.lines().find(|l| l.contains(&sentence));
    check(said.is_some(), || {
        format!("the journal lacks `{sentence}`:\n{journal}")
    })?;
    say(&format!("  the agent said: {}", said.unwrap_or_default()));
    // Restart=on-failure tries again, StartLimitBurst= times a minute,
    // then systemd gives up: a refusal does not loop for ever.
    let failed = wait_for(SLOW * 2, || {
        (unit_property("ActiveState") == "failed").then_some(())
    });
    check(failed.is_some(), || {
        format!(
            "the unit is {} after two minutes, not failed",
            unit_property("ActiveState")
        )
    })?;
    say(&format!(
        "  systemd gave up after {} restarts",
        unit_property("NRestarts")
    ));
    check(!xdp_attached(lab), || {
        "an XDP program is attached to sh-srv".into()
    })?;
    passes(lab, 1, OPEN_PORT)
}

fn uname() -> String {
    sh(&["uname", "-r"]).unwrap_or_default().trim().to_string()
}

/// The config: the lab's interface, a feed that lists one client, and a
/// port limited to a burst of five.
fn config(with_feed: bool) -> String {
    let mut text = format!(
        "interfaces = [\"sh-srv\"]\n\
         \n\
         [[port]]\n\
         name = \"vm-limited\"\n\
         proto = \"udp\"\n\
         ports = [{LIMITED_PORT}]\n\
         packets = \"1/min\"\n\
         packet_burst = {BURST}\n"
    );
    if with_feed {
        text.push_str(&format!(
            "\n[[feed]]\nname = \"vm-test\"\npath = \"{FEED}\"\nrefresh = \"1h\"\n"
        ));
    }
    text
}

fn enable_and_start(lab: &Lab) -> Result<(), String> {
    fs::create_dir_all("/etc/shield/feeds").map_err(|e| e.to_string())?;
    fs::write(FEED, format!("{}\n", client(FEED_HOST))).map_err(|e| e.to_string())?;
    // Over the packaged file: its owner, group and mode stay.
    fs::write(CONFIG, config(true)).map_err(|e| e.to_string())?;
    sh(&["shield-agent", "check-config", CONFIG])?;
    sh(&["systemctl", "enable", "--now", UNIT])?;
    // Type=notify: `enable --now` returns once the agent said READY=1.
    check(running_pid().is_some(), || {
        "the agent is not running".into()
    })?;
    check(xdp_attached(lab), || "no XDP program on sh-srv".into())?;
    let status = ctl_json(&["status"])?;
    check(status["data"]["program_id"].is_u64(), || {
        format!("shieldctl status: {status}")
    })
}

fn verdicts(lab: &Lab) -> Result<(), String> {
    passes(lab, 1, OPEN_PORT)?;
    // The feed lists .3.
    dropped(lab, FEED_HOST, OPEN_PORT)?;
    // A ban by hand.
    sh(&[
        "shieldctl",
        "ban",
        "add",
        &client(BANNED_HOST).to_string(),
        "--ttl",
        "1d",
    ])?;
    dropped(lab, BANNED_HOST, OPEN_PORT)?;
    passes(lab, 1, OPEN_PORT)?;
    // The rate limit: a burst of five, then one a minute. The bucket
    // cannot admit more than the burst plus one per started minute of
    // sending; and the burst itself arrives (nothing else drops here).
    let started = Instant::now();
    let got = udp(lab, LIMITED_HOST, LIMITED_PORT, 40);
    let minutes = started.elapsed().as_secs() / 60 + 1;
    check(
        got >= BURST && u64::from(got) <= u64::from(BURST) + minutes,
        || format!("{got} of 40 datagrams passed a limit of a burst of {BURST}, then 1/min"),
    )?;
    let stats = ctl_json(&["stats"])?;
    let text = stats.to_string();
    check(
        text.contains("ratelimit") && text.contains("feed") && text.contains("ban"),
        || format!("shieldctl stats does not show the three drop reasons: {text}"),
    )
}

fn reload(lab: &Lab) -> Result<(), String> {
    let pid = running_pid().ok_or("the agent is not running")?;
    fs::write(CONFIG, config(false)).map_err(|e| e.to_string())?;
    sh(&["systemctl", "reload", UNIT])?;
    // The feed is gone from the config: its client passes once the agent
    // has applied the difference.
    let through = wait_for(SLOW, || {
        (udp(lab, FEED_HOST, OPEN_PORT, 10) == 10).then_some(())
    });
    check(through.is_some(), || {
        "the feed's entry still applies after the reload".into()
    })?;
    check(running_pid() == Some(pid), || {
        format!(
            "the reload replaced the agent ({pid} -> {:?})",
            running_pid()
        )
    })?;
    // The ban was not the config's: it stays.
    dropped(lab, BANNED_HOST, OPEN_PORT)
}

fn sandbox(_: &Lab) -> Result<(), String> {
    let pid = running_pid().ok_or("the agent is not running")?.to_string();
    // In the agent's own mount namespace, as systemd set it up.
    let may = |shell: &str| {
        output(&["nsenter", "-t", &pid, "-m", "--", "sh", "-c", shell])
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let creates = |path: &str| may(&format!("touch {path} && rm {path}"));
    for path in [
        "/etc/shield/probe",
        "/usr/lib/probe",
        "/root/probe",
        "/var/lib/probe",
    ] {
        check(!creates(path), || {
            format!("the agent's sandbox lets it write {path}")
        })?;
    }
    for path in ["/var/lib/shield/probe", "/run/shield/probe"] {
        check(creates(path), || {
            format!("the agent's sandbox keeps it from {path}")
        })?;
    }
    // The pins are writable, the kernel's tunables are not: the network
    // stack's (CAP_NET_ADMIN would allow it) nor sysfs.
    check(
        may("mkdir /sys/fs/bpf/shield/probe && rmdir /sys/fs/bpf/shield/probe"),
        || "the agent's sandbox keeps it from pinning in /sys/fs/bpf/shield".into(),
    )?;
    let forward = "/proc/sys/net/ipv4/ip_forward";
    check(!may(&format!("cat {forward} > {forward}")), || {
        format!("the agent's sandbox lets it write {forward}")
    })?;
    check(
        !may(
            "cat /sys/kernel/mm/transparent_hugepage/enabled > /sys/kernel/mm/transparent_hugepage/enabled",
        ),
        || "the agent's sandbox lets it write sysfs".into(),
    )?;
    let host = fs::read_to_string("/payload/host-security-score")
        .map_err(|e| e.to_string())?
        .trim()
        .to_string();
    let text = sh(&["systemd-analyze", "security", "--no-pager", UNIT])?;
    let here = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for"))
        .and_then(|(_, rest)| rest.split(':').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    say(&format!(
        "  systemd-analyze security: {here} here, {host} on the host (offline)"
    ));
    check(here == host, || {
        format!("systemd rates the running unit {here}, the host rated its file {host}:\n{text}")
    })
}

/// While the agent is down or being replaced, the banned client stays
/// dropped: the program and maps are pinned, and enforcement never
/// depended on the process. Checked in a loop until systemd has a new,
/// ready agent.
fn enforced_until_replaced(lab: &Lab, old: u32, limit: Duration) -> Result<u32, String> {
    let deadline = Instant::now() + limit;
    loop {
        dropped(lab, BANNED_HOST, OPEN_PORT)?;
        if let Some(pid) = running_pid().filter(|p| *p != old) {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "systemd did not replace agent {old} within {} s",
                limit.as_secs()
            ));
        }
    }
}

fn restarts() -> u32 {
    unit_property("NRestarts").parse().unwrap_or(0)
}

/// Sends `signal` to the running agent and waits, checking enforcement
/// throughout, until systemd has replaced it, once.
fn replaced_after(lab: &Lab, signal: &str, limit: Duration) -> Result<(), String> {
    let old = running_pid().ok_or("the agent is not running")?;
    let before = restarts();
    sh(&["kill", signal, &old.to_string()])?;
    enforced_until_replaced(lab, old, limit)?;
    check(restarts() == before + 1, || {
        format!("NRestarts went from {before} to {}", restarts())
    })
}

fn kill_9(lab: &Lab) -> Result<(), String> {
    replaced_after(lab, "-9", SLOW * 2)?;
    // The new agent adopted the pins: it works, and the ban is still there.
    passes(lab, 1, OPEN_PORT)?;
    dropped(lab, BANNED_HOST, OPEN_PORT)
}

fn watchdog(lab: &Lab) -> Result<(), String> {
    // A hung agent: alive, but its main loop no longer pings the watchdog
    // (WatchdogSec=30s).
    replaced_after(lab, "-STOP", SLOW * 4)?;
    let log = sh(&["journalctl", "-u", UNIT, "--no-pager"])?;
    check(log.contains("Watchdog timeout"), || {
        "systemd replaced the agent, but its journal says no watchdog timeout".into()
    })?;
    passes(lab, 1, OPEN_PORT)
}

fn stop_keeps_enforcement(lab: &Lab) -> Result<(), String> {
    sh(&["systemctl", "stop", UNIT])?;
    check(unit_property("ActiveState") == "inactive", || {
        format!("after stop the unit is {}", unit_property("ActiveState"))
    })?;
    check(xdp_attached(lab), || {
        "stopping the agent detached shield".into()
    })?;
    dropped(lab, BANNED_HOST, OPEN_PORT)?;
    passes(lab, 1, OPEN_PORT)?;
    sh(&["systemctl", "start", UNIT])?;
    check(running_pid().is_some(), || {
        "the agent did not start again".into()
    })
}

fn reboot_restores_bans(lab: &Lab) -> Result<(), String> {
    // Enabled: systemd starts it at boot, before the network is up.
    wait_for(SLOW * 2, running_pid).ok_or("the agent is not running after the reboot")?;
    check(xdp_attached(lab), || {
        "no XDP program on sh-srv after the reboot".into()
    })?;
    let bans = ctl_json(&["ban", "list"])?;
    let banned = client(BANNED_HOST).to_string();
    check(bans.to_string().contains(&banned), || {
        format!("the ban on {banned} is not in the ban list after the reboot: {bans}")
    })?;
    dropped(lab, BANNED_HOST, OPEN_PORT)?;
    passes(lab, 1, OPEN_PORT)
}

fn remove_detaches(lab: &Lab) -> Result<(), String> {
    sh(&["dpkg", "-r", "shield"])?;
    check(!xdp_attached(lab), || {
        "removing the package left XDP on sh-srv".into()
    })?;
    check(!std::path::Path::new("/sys/fs/bpf/shield").exists(), || {
        "removing the package left the pins in /sys/fs/bpf/shield".into()
    })?;
    // Nothing enforces any more: the banned client gets through.
    passes(lab, BANNED_HOST, OPEN_PORT)
}
