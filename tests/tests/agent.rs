//! The real shield-agent binary in a netns lab: start, enforce, restart,
//! crash, reload, upgrade, detach. Needs root; run with --test-threads=1.

use std::{net::IpAddr, process::Command, time::Duration};

use shield_tests::{
    agent::{AgentHome, binary},
    flow::Flows,
    lab::Lab,
};
use shield_user::{
    agent::bans::{BanOrigin, BanRecord, journal_json},
    clock,
};

const PORT: u16 = 7000;
const TICK: Duration = Duration::from_millis(2);

/// Bans `src` for an hour through the journal, the way a reboot finds it.
fn journal_ban(home: &AgentHome, src: IpAddr) {
    std::fs::create_dir_all(&home.state_dir).unwrap();
    let now = clock::unix_ms();
    let rec = BanRecord {
        net: shield_user::net::Cidr::host(src),
        origin: BanOrigin::Manual,
        reason: Some("test".into()),
        created_unix_ms: now,
        expires_unix_ms: Some(now + 3_600_000),
    };
    std::fs::write(home.state_dir.join("bans.json"), journal_json(&[rec])).unwrap();
}

fn xdp_attached(lab: &Lab) -> bool {
    lab.server_link_details().contains("prog/xdp")
}

/// A lab with a banned client address and a clean one, and an agent home
/// whose config is just the paths and the interface.
fn setup() -> (Lab, AgentHome, IpAddr, IpAddr) {
    let lab = Lab::new();
    let clean = lab.add_client_v4(3);
    let banned = lab.client_v4;
    let home = AgentHome::new();
    home.write_config(&home.base_config(&lab));
    journal_ban(&home, banned);
    (lab, home, banned, clean)
}

#[test]
fn enforces_and_sigterm_leaves_enforcement_in_place() {
    let (lab, home, banned, clean) = setup();
    let agent = home.start(&lab, &[]);
    assert!(xdp_attached(&lab));
    let flows = Flows::start(&lab, PORT, &[banned, clean], TICK);
    assert!(flows.wait_more(clean, 50, Duration::from_secs(10)));

    let status = agent.stop();
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(xdp_attached(&lab), "the program must stay attached");
    assert!(home.pin_dir.join("BAN_V4").exists());
    assert!(
        flows.wait_more(clean, 100, Duration::from_secs(10)),
        "clean traffic keeps flowing with the agent gone"
    );
    let r = flows.stop();
    assert!(r.sent(banned) > 100, "{r:?}");
    assert_eq!(r.received(banned), 0, "a banned source got through: {r:?}");
}

#[test]
fn kill_9_and_restart_never_let_a_banned_source_through() {
    let (lab, home, banned, clean) = setup();
    let agent = home.start(&lab, &[]);
    let (link, prog) = home.link_ids(&lab.server_if).expect("pinned link");
    let flows = Flows::start(&lab, PORT, &[banned, clean], TICK);
    assert!(flows.wait_more(clean, 50, Duration::from_secs(10)));

    agent.kill9();
    assert!(
        flows.wait_more(clean, 100, Duration::from_secs(10)),
        "traffic while the agent is dead"
    );
    let agent = home.start(&lab, &[]);
    let (link2, prog2) = home.link_ids(&lab.server_if).unwrap();
    assert_eq!(link2, link, "the restarted agent adopts the pinned link");
    assert_ne!(prog2, prog, "and swaps its own program in");
    assert!(flows.wait_more(clean, 100, Duration::from_secs(10)));
    let r = flows.stop();
    assert_eq!(r.received(banned), 0, "a banned source got through: {r:?}");
    assert!(r.sent(banned) > 300, "{r:?}");
    drop(agent);
}

#[test]
fn upgrade_replaces_the_program_atomically() {
    let (lab, home, banned, clean) = setup();
    let object = home.dir.join("next-shield.o");
    std::fs::write(&object, shield_user::dataplane::OBJECT).unwrap();
    let agent = home.start(&lab, &[]);
    let (link, prog) = home.link_ids(&lab.server_if).unwrap();
    let ring_before = lab.ring_drops();
    let flows = Flows::start(&lab, PORT, &[banned, clean], TICK);
    assert!(flows.wait_more(clean, 50, Duration::from_secs(10)));

    assert!(agent.stop().success());
    let agent = home.start(&lab, &["--bpf-object", object.to_str().unwrap()]);
    let (link2, prog2) = home.link_ids(&lab.server_if).unwrap();
    assert_eq!(link2, link);
    assert_ne!(prog2, prog);
    assert!(agent.logs().contains("replaced=true"), "{}", agent.logs());
    assert!(flows.wait_more(clean, 100, Duration::from_secs(10)));
    let r = flows.stop();
    let ring = lab.ring_drops() - ring_before;
    assert_eq!(r.received(banned), 0, "{r:?}");
    // Less what the veth's XDP ring dropped (both flows share it; none
    // where the kernel holds the sender back): those never met a program.
    let lost = (r.sent(clean) - r.received(clean)).saturating_sub(ring);
    assert!(
        lost <= 2,
        "clean traffic lost {lost} datagrams across the upgrade ({ring} more dropped by the veth ring): {r:?}"
    );
    drop(agent);
}

#[test]
fn reload_applies_changes_without_resetting_buckets() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let base = home.base_config(&lab);
    let probe = "[[port]]\nname = \"probe\"\nproto = \"udp\"\nports = [9000]\npackets = \"1/h\"\npacket_burst = 5\n";
    home.write_config(&format!("{base}{probe}"));
    let agent = home.start(&lab, &[]);
    assert_eq!(
        lab.udp_through(lab.server_v4, 9000, 10),
        5,
        "the burst, then nothing"
    );
    assert_eq!(
        lab.udp_through(lab.server_v4, 9001, 5),
        5,
        "9001 is unlimited so far"
    );

    let second = "[[port]]\nname = \"second\"\nproto = \"udp\"\nports = [9001]\npackets = \"1/h\"\npacket_burst = 2\n";
    home.write_config(&format!("{base}{second}{probe}"));
    agent.reload(&home);
    assert!(agent.logs().contains("reloaded"), "{}", agent.logs());
    assert_eq!(
        lab.udp_through(lab.server_v4, 9000, 3),
        0,
        "probe's bucket was reset by the reload"
    );
    assert_eq!(
        lab.udp_through(lab.server_v4, 9001, 5),
        2,
        "the new rule applies"
    );
    drop(agent);
}

#[test]
fn a_bad_config_on_reload_keeps_the_running_policy() {
    let (lab, home, banned, clean) = setup();
    let agent = home.start(&lab, &[]);
    home.write_config(&format!(
        "{}bogus_key = 1\n[limits]\npackets = \"lots\"\n",
        home.base_config(&lab)
    ));
    agent.reload(&home);
    let logs = agent.logs();
    assert!(logs.contains("reload refused"), "{logs}");
    assert!(
        logs.contains("bogus_key"),
        "the error names the key: {logs}"
    );
    let flows = Flows::start(&lab, PORT, &[banned, clean], TICK);
    assert!(flows.wait_more(clean, 50, Duration::from_secs(10)));
    let r = flows.stop();
    assert_eq!(r.received(banned), 0, "{r:?}");
    // Still alive and still answering signals.
    assert!(agent.stop().success());
}

#[test]
fn detach_removes_programs_links_and_pins() {
    let (lab, home, banned, _clean) = setup();
    let agent = home.start(&lab, &[]);
    assert!(agent.stop().success());
    assert_eq!(lab.udp_through(lab.server_v4, PORT, 5), 0, "still banned");

    let (status, out) = home.run(
        &lab,
        &["--detach", "--config", home.config.to_str().unwrap()],
    );
    assert!(status.success(), "{out}");
    assert!(out.contains("detached from 1 interface"), "{out}");
    assert!(!home.pin_dir.exists(), "pins left behind");
    assert!(!xdp_attached(&lab), "program still attached");
    assert!(
        lab.udp_through(lab.server_v4, PORT, 5) >= 4,
        "{banned} should pass now"
    );
    // The journal stays: a later start brings the ban back.
    assert!(home.state_dir.join("bans.json").exists());
}

#[test]
fn operator_mistakes_get_one_clear_sentence_and_the_right_exit_code() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let missing = home.dir.join("nope.toml");
    let (status, out) = home.run(&lab, &["--config", missing.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("nope.toml"), "{out}");
    assert!(!out.contains("panicked"), "{out}");

    home.write_config(&home.base_config(&lab).replace(&lab.server_if, "sh-nothere"));
    let (status, out) = home.run(&lab, &["--config", home.config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("sh-nothere") && out.contains("does not exist"),
        "{out}"
    );

    let (status, out) = home.run(&lab, &[]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("--iface"), "{out}");

    home.write_config("interfaces = [\"x\"]\nxdp_mode = \"fast\"\n[limits]\npackets = 5\n");
    let (status, out) = home.run(&lab, &["check-config", home.config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains(":2:"), "line numbers: {out}");
    assert!(out.contains(":4:"), "all errors, not just the first: {out}");

    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(binary("shield-agent"))
        .args(["--iface", "lo"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("needs root"), "{text}");
}

#[test]
fn metrics_report_drops_bans_and_attachment() {
    let (lab, home, banned, _clean) = setup();
    home.write_config(&format!(
        "{}metrics_listen = \"127.0.0.1:19964\"\n",
        home.base_config(&lab)
    ));
    let _agent = home.start(&lab, &[]);
    assert_eq!(lab.udp_through(lab.server_v4, PORT, 20), 0);
    home.ctl_ok(&["ban", "add", "192.0.2.0/24"]);
    assert_eq!(home.ctl(&["ban", "del", "198.51.100.0/24"]).code, Some(1));
    let text = shield_tests::agent::scrape(&lab.server_ns, 19964);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let m = |s: &str| {
        shield_tests::agent::metric(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"))
    };
    assert!(m("shield_packets_total{verdict=\"drop\",reason=\"banned\"}") >= 20.0);
    assert_eq!(
        m("shield_packets_total{verdict=\"pass\",reason=\"feed\"}"),
        0.0
    );
    assert_eq!(
        m("shield_bans_active"),
        2.0,
        "the journal's and the new one"
    );
    assert_eq!(m("shield_bans_total{source=\"manual\"}"), 1.0);
    assert_eq!(
        m(&format!(
            "shield_xdp_attached{{iface=\"{}\",mode=\"native\"}}",
            lab.server_if
        )),
        1.0
    );
    assert!(text.contains("shield_build_info{"), "{text}");
    assert!(m("shield_control_requests_total{outcome=\"ok\"}") >= 1.0);
    assert!(m("shield_control_requests_total{outcome=\"error\"}") >= 1.0);
    let _ = banned;
}

#[test]
fn skb_mode_is_used_when_asked_and_reported() {
    let (lab, home, banned, _clean) = setup();
    home.write_config(&format!("{}xdp_mode = \"skb\"\n", home.base_config(&lab)));
    let agent = home.start(&lab, &[]);
    let status = home.ctl_json(&["status"]);
    assert_eq!(status["data"]["interfaces"][0]["mode"], "skb", "{status}");
    // No [crowdsec]: status says so, in both forms.
    assert_eq!(status["data"]["crowdsec"]["configured"], false, "{status}");
    let text = home.ctl_ok(&["status"]);
    assert!(text.contains("crowdsec    not configured"), "{text}");
    assert!(
        lab.server_link_details().contains("xdpgeneric"),
        "{}",
        lab.server_link_details()
    );
    assert!(agent.logs().contains("mode=\"skb\""), "{}", agent.logs());
    assert_eq!(
        lab.udp_through(lab.server_v4, PORT, 5),
        0,
        "{banned} is banned in skb mode too"
    );
}

#[test]
fn auto_mode_falls_back_to_skb_where_native_is_unavailable() {
    let lab = Lab::new();
    let home = AgentHome::new();
    // A bridge has no driver XDP support (and this kernel has no dummy).
    for args in [
        &[
            "-n",
            &lab.server_ns,
            "link",
            "add",
            "sh-dum",
            "type",
            "bridge",
        ][..],
        &["-n", &lab.server_ns, "link", "set", "sh-dum", "up"],
    ] {
        assert!(Command::new("ip").args(args).status().unwrap().success());
    }
    home.write_config(
        &home
            .base_config(&lab)
            .replace(&format!("[\"{}\"]", lab.server_if), "[\"sh-dum\"]"),
    );
    let agent = home.start(&lab, &[]);
    let status = home.ctl_json(&["status"]);
    assert_eq!(
        status["data"]["interfaces"][0]["name"], "sh-dum",
        "{status}"
    );
    assert_eq!(status["data"]["interfaces"][0]["mode"], "skb", "{status}");
    // No [crowdsec]: status says so, in both forms.
    assert_eq!(status["data"]["crowdsec"]["configured"], false, "{status}");
    let text = home.ctl_ok(&["status"]);
    assert!(text.contains("crowdsec    not configured"), "{text}");
    assert!(
        agent.logs().contains("native XDP unavailable"),
        "{}",
        agent.logs()
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (lab, home, _banned, _clean) = setup();
    let agent = home.start(&lab, &["--log-format", "json"]);
    assert!(agent.stop().success());
    let logs = agent_logs(&home);
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{logs}");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    assert!(logs.contains("\"message\":\"attached\""), "{logs}");
}

/// A runtime allowlist with one entry that breaks its schema is moved
/// aside and reported at start, so the next `allow add` cannot overwrite
/// the only copy of the other entries.
#[test]
fn a_runtime_allowlist_with_a_bad_entry_is_kept_aside_not_overwritten() {
    let lab = Lab::new();
    let home = AgentHome::new();
    home.write_config(&home.base_config(&lab));
    std::fs::create_dir_all(&home.state_dir).unwrap();
    let body = r#"{"version":1,"allow":["192.0.2.0/24","198.51.100.300/32"]}"#;
    std::fs::write(home.state_dir.join("allow.json"), body).unwrap();
    let agent = home.start(&lab, &[]);
    home.ctl_ok(&["allow", "add", "203.0.113.0/24"]);
    let aside: Vec<_> = std::fs::read_dir(&home.state_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("allow.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}\n{}", agent.logs());
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), body);
    let logs = agent.logs();
    assert!(
        logs.contains("ERROR") && logs.contains("allow.json") && logs.contains("moved to"),
        "{logs}"
    );
    let now = std::fs::read_to_string(home.state_dir.join("allow.json")).unwrap();
    assert!(now.contains("203.0.113.0/24"), "{now}");
}

/// Every log file the home's agents wrote (stderr captures).
fn agent_logs(home: &AgentHome) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(&home.dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "err") {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap());
        }
    }
    out
}
