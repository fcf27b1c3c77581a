//! shieldctl against the real agent in a netns lab: every command, with the
//! data plane checked by real traffic. Needs root; --test-threads=1.

use std::{
    net::IpAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use shield_tests::{
    agent::{binary, lab_with_agent},
    flow::Flows,
};

const PORT: u16 = 7100;
const TICK: Duration = Duration::from_millis(2);

fn s(a: IpAddr) -> String {
    a.to_string()
}

#[test]
fn ban_add_stops_a_flowing_source_before_it_returns() {
    let (lab, home, _agent) = lab_with_agent("");
    let src = lab.client_v4;
    let flows = Flows::start(&lab, PORT, &[src], TICK);
    assert!(flows.wait_more(src, 50, Duration::from_secs(10)));

    let out = home.ctl_ok(&["ban", "add", &s(src), "--reason", "incident 42"]);
    // Datagrams numbered above this one left the sender after ban add had
    // returned; the one numbered so may have been on its way already.
    let at_return = flows.sent(src);
    assert!(out.contains("banned"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while flows.sent(src) < at_return + 100 {
        assert!(Instant::now() < deadline, "the flow stopped sending");
        thread::sleep(Duration::from_millis(10));
    }
    let r = flows.stop();
    // Judged by sequence number, not by arrivals counted at return: on a
    // loaded host the receiving thread may not have read datagrams that
    // passed long before the ban, and a count would blame them on it.
    let highest = r
        .highest_arrived(src)
        .expect("the flow arrived before the ban");
    assert!(
        highest <= at_return,
        "datagrams {}..={highest} were sent after ban add returned and arrived",
        at_return + 1
    );

    let list = home.ctl_json(&["ban", "list"]);
    let row = &list["data"][0];
    assert_eq!(row["net"], format!("{src}/32"));
    assert_eq!(row["origin"], "manual");
    assert_eq!(row["reason"], "incident 42");
    assert!(row["expires_in_secs"].is_null());

    let out = home.ctl_ok(&["ban", "del", &s(src)]);
    assert!(out.contains("unbanned"), "{out}");
    assert!(lab.udp_through(lab.server_v4, PORT, 5) >= 4);
    let gone = home.ctl(&["ban", "del", &s(src)]);
    assert_eq!(gone.code, Some(1), "{gone:?}");
    assert!(gone.stderr.contains("not banned"), "{gone:?}");
}

#[test]
fn bans_expire_after_their_ttl_and_cidr_bans_cover_the_prefix() {
    let (lab, home, _agent) = lab_with_agent("");
    let net = "10.200.0.0/16";
    // Long enough that the checks made while it holds still fall inside it
    // when a loaded host makes each shieldctl run and probe slow (two
    // shieldctl runs and 5 datagrams take well under a second even on a
    // loaded 2-core host; 10 s leaves the rest as room).
    home.ctl_ok(&["ban", "add", net, "--ttl", "10s"]);
    // The agent set the expiry before it answered, so it is due by then.
    let due = Instant::now() + Duration::from_secs(10);
    assert_eq!(
        lab.udp_through(lab.server_v4, PORT, 5),
        0,
        "the /16 covers the client"
    );
    let list = home.ctl_json(&["ban", "list"]);
    let left = list["data"][0]["expires_in_secs"].as_u64().unwrap();
    assert!((1..=10).contains(&left), "{list}");
    // Until the expiry has surely passed (plus a few kernel clock ticks):
    // a wait for a moment that bounds the state from below, so a slow
    // host only makes it later, never early.
    thread::sleep((due + Duration::from_millis(600)).saturating_duration_since(Instant::now()));
    assert!(
        lab.udp_through(lab.server_v4, PORT, 5) >= 4,
        "expired ban still drops"
    );
    // The agent sweeps expired bans from its list on its next tick.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = home.ctl_json(&["ban", "list"]);
        if list["data"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never swept: {list}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dry_run_on_passes_and_counts_off_enforces_again() {
    let (lab, home, _agent) = lab_with_agent("");
    home.ctl_ok(&["ban", "add", &s(lab.client_v4)]);
    assert_eq!(lab.udp_through(lab.server_v4, PORT, 5), 0);

    let out = home.ctl_ok(&["dry-run", "on"]);
    assert!(out.contains("dry run on"), "{out}");
    assert_eq!(home.ctl_json(&["status"])["data"]["dry_run"], true);
    assert_eq!(lab.udp_through(lab.server_v4, PORT, 5), 5);
    let stats = home.ctl_json(&["stats"]);
    let would = stats["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verdict"] == "would_drop" && r["reason"] == "banned")
        .unwrap();
    assert!(would["packets"].as_u64().unwrap() >= 5, "{stats}");

    home.ctl_ok(&["dry-run", "off"]);
    assert_eq!(lab.udp_through(lab.server_v4, PORT, 5), 0);
    assert_eq!(home.ctl_json(&["status"])["data"]["dry_run"], false);
}

#[test]
fn check_explains_ban_allow_acl_and_limit() {
    let cfg = "[[port]]\nname = \"probe\"\nproto = \"udp\"\nports = [9000]\npackets = \"1/h\"\npacket_burst = 3\n\
               [[port]]\nname = \"admin\"\nproto = \"tcp\"\nports = [8443]\nallow_from = [\"192.0.2.0/24\"]\n";
    let (lab, home, _agent) = lab_with_agent(cfg);
    let client = s(lab.client_v4);

    let c = home.ctl_json(&["check", &client, "--proto", "udp", "--port", "9000"]);
    assert_eq!(c["data"]["verdict"], "pass", "{c}");
    assert_eq!(c["data"]["class"], "probe");

    assert_eq!(lab.udp_through(lab.server_v4, 9000, 6), 3);
    let c = home.ctl_json(&["check", &client, "--proto", "udp", "--port", "9000"]);
    assert_eq!(c["data"]["verdict"], "drop", "{c}");
    assert_eq!(c["data"]["reason"], "ratelimit", "{c}");
    assert!(
        c["data"]["bucket"]["packet_tokens"].as_f64().unwrap() < 1.0,
        "{c}"
    );
    assert_eq!(c["data"]["limits"]["packets"], "1/h");

    let c = home.ctl_json(&["check", &client, "--port", "8443"]);
    assert_eq!(c["data"]["reason"], "acl", "{c}");

    home.ctl_ok(&["ban", "add", &client, "--reason", "why not"]);
    let c = home.ctl_json(&["check", &client]);
    assert_eq!(c["data"]["reason"], "banned", "{c}");
    assert_eq!(c["data"]["banned_by"]["reason"], "why not");

    home.ctl_ok(&["allow", "add", "10.200.0.0/16"]);
    let c = home.ctl_json(&["check", &client]);
    assert_eq!(c["data"]["reason"], "allowed", "{c}");
    assert!(
        c["data"]["allowed_by"]
            .as_str()
            .unwrap()
            .contains("10.200.0.0/16")
    );
    assert_eq!(
        lab.udp_through(lab.server_v4, PORT, 5),
        5,
        "the allowlist wins over the ban"
    );
    let human = home.ctl_ok(&["check", &client]);
    assert!(human.contains("PASS (allowed)"), "{human}");

    let list = home.ctl_json(&["allow", "list"]);
    assert_eq!(list["data"][0]["origin"], "runtime");
    home.ctl_ok(&["allow", "del", "10.200.0.0/16"]);
    assert_eq!(lab.udp_through(lab.server_v4, PORT, 5), 0, "banned again");
}

#[test]
fn limits_set_applies_at_once_and_reverts_by_itself() {
    let (lab, home, agent) =
        lab_with_agent("[[port]]\nname = \"probe\"\nproto = \"udp\"\nports = [9000]\n");
    let before = home.ctl_json(&["limits"]);
    assert!(
        before["data"]["rows"].as_array().unwrap().len() >= 2,
        "{before}"
    );
    assert_eq!(lab.udp_through(lab.server_v4, 9000, 10), 10);

    let out = home.ctl_ok(&[
        "limits",
        "set",
        "probe",
        "--packets",
        "1/h",
        "--packet-burst",
        "2",
        "--for",
        "5s",
    ]);
    assert!(out.contains("reverts in 5s"), "{out}");
    let l = home.ctl_json(&["limits"]);
    assert_eq!(l["data"]["overrides"][0]["target"], "probe", "{l}");
    assert_eq!(
        lab.udp_through(lab.server_v4, 9000, 10),
        2,
        "override enforced at once"
    );
    // Reverted by the agent's own tick once the 5 s are up. `limits` stops
    // listing an override the moment it expires; the maps change on the
    // tick after, which the log reports.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = home.ctl_json(&["limits"]);
        if l["data"]["overrides"].as_array().unwrap().is_empty()
            && agent.logs().contains("limit override expired and reverted")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the override never reverted: {l}"
        );
        thread::sleep(Duration::from_millis(200));
    }

    // The bucket's TAT, written under 1/h, is hours ahead; the first packet
    // under the restored limit pulls it back (gcra::rebase) and the limit
    // holds again one interval (and one clock tick) later, not hours later.
    lab.udp_through(lab.server_v4, 9000, 1);
    // At least one interval (1 ms at the default 1000/s) and a few clock
    // ticks: a lower bound, which a loaded host can only lengthen.
    thread::sleep(Duration::from_millis(20));
    assert_eq!(lab.udp_through(lab.server_v4, 9000, 10), 10, "reverted");

    let bad = home.ctl(&["limits", "set", "nosuch", "--packets", "5/s"]);
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(bad.stderr.contains("nosuch"), "{bad:?}");
}

#[test]
fn every_read_command_answers_in_both_formats() {
    let (lab, home, _agent) = lab_with_agent("");
    let status = home.ctl_json(&["status"]);
    assert_eq!(status["data"]["interfaces"][0]["name"], lab.server_if);
    assert!(status["data"]["program_id"].as_u64().is_some());
    for cmd in [
        &["status"][..],
        &["stats"],
        &["top"],
        &["top", "-n", "3"],
        &["ban", "list"],
        &["allow", "list"],
        &["feeds", "list"],
        &["limits"],
    ] {
        home.ctl_ok(cmd);
        let mut j = vec!["--json"];
        j.extend_from_slice(cmd);
        let out = home.ctl_ok(&j);
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}: {out}"));
    }
    let out = home.ctl_ok(&["reload"]);
    assert!(out.contains("reloaded"), "{out}");
    let f = home.ctl(&["feeds", "refresh", "nosuch"]);
    assert_eq!(f.code, Some(1), "{f:?}");
}

#[test]
fn top_shows_a_flooding_source() {
    let (lab, home, _agent) = lab_with_agent("[limits]\npackets = \"100/s\"\npacket_burst = 100\n");
    let src = lab.client_v4;
    let flows = Flows::start(&lab, PORT, &[src], Duration::from_micros(500));
    // Until the agent has seen the flood (its first event, then its rate
    // over a window), top may not list it yet: ask until it does.
    let deadline = Instant::now() + Duration::from_secs(20);
    let top = loop {
        let top = home.ctl_json(&["top"]);
        let row = &top["data"][0];
        if row["over_limit"] == true && row["pps"].as_f64().is_some_and(|p| p > 50.0) {
            break top;
        }
        assert!(
            Instant::now() < deadline,
            "top never showed the flood: {top}"
        );
        thread::sleep(Duration::from_millis(250));
    };
    let r = flows.stop();
    let row = &top["data"][0];
    assert_eq!(row["source"], format!("{src}/32"), "{top}");
    assert_eq!(row["over_limit"], true, "{top}");
    assert!(row["pps"].as_f64().unwrap() > 50.0, "{top}");
    assert!(r.received(src) < r.sent(src), "{r:?}");
}

#[test]
fn bad_input_changes_nothing_and_exits_non_zero() {
    let (_lab, home, _agent) = lab_with_agent("");
    for (args, code, needle) in [
        (&["ban", "add", "10.1.2.3/8"][..], 2, "did you mean"),
        (&["ban", "add", "not-an-ip"], 2, "not-an-ip"),
        (&["ban", "add", "192.0.2.1", "--ttl", "0s"], 2, "zero"),
        (&["ban", "add", "192.0.2.1", "--ttl", "400d"], 2, "longer"),
        (&["ban", "add", "0.0.0.0/1"], 1, "refusing"),
        (&["allow", "del", "192.0.2.0/24"], 1, "not allowlisted"),
        (&["frobnicate"], 2, ""),
    ] {
        let o = home.ctl(args);
        assert_eq!(o.code, Some(code), "{args:?}: {o:?}");
        assert!(o.stderr.contains(needle), "{args:?}: {o:?}");
    }
    let list = home.ctl_json(&["ban", "list"]);
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
}

#[test]
fn an_unprivileged_user_is_refused() {
    let (_lab, home, _agent) = lab_with_agent("");
    // The socket and its directory must be reachable for the refusal to
    // come from the agent or the kernel rather than from a missing path.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(binary("shieldctl"))
        .arg("--socket")
        .arg(&home.socket)
        .args(["ban", "add", "192.0.2.1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied") || err.contains("group"),
        "{err}"
    );
    let list = home.ctl_json(&["ban", "list"]);
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
}

#[test]
fn two_hundred_concurrent_clients_while_enforcing() {
    let (lab, home, agent) = lab_with_agent("");
    let banned = lab.client_v4;
    let clean = lab.add_client_v4(3);
    home.ctl_ok(&["ban", "add", &s(banned)]);
    let flows = Flows::start(&lab, PORT, &[banned, clean], TICK);
    let children: Vec<_> = (0..200)
        .map(|i| {
            let mut c = Command::new(binary("shieldctl"));
            c.arg("--socket").arg(&home.socket);
            if i % 2 == 0 {
                c.arg("status");
            } else {
                c.args(["check", "192.0.2.1"]);
            }
            c.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut failures = Vec::new();
    for ch in children {
        let o = ch.wait_with_output().unwrap();
        if !o.status.success() {
            failures.push(String::from_utf8_lossy(&o.stderr).into_owned());
        }
    }
    assert!(flows.wait_more(clean, 50, Duration::from_secs(10)));
    let r = flows.stop();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(r.received(banned), 0, "{r:?}");
    assert!(home.ctl_ok(&["status"]).contains("enforcing"));
    drop(agent);
}

#[test]
fn detach_needs_yes_and_then_removes_everything() {
    let (lab, home, agent) = lab_with_agent("");
    let o = home.ctl(&["detach"]);
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(home.pin_dir.exists());
    let out = home.ctl_ok(&["detach", "--yes"]);
    assert!(out.contains("detached"), "{out}");
    assert!(!home.pin_dir.exists());
    assert!(!lab.server_link_details().contains("prog/xdp"));
    assert!(agent.stop_or_exited().success());
    let o = home.ctl(&["status"]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("is shield-agent running"), "{o:?}");
}

#[test]
fn garbage_and_oversized_frames_do_not_hurt_the_agent() {
    use std::{
        io::{Read, Write},
        os::unix::net::UnixStream,
    };
    let (lab, home, _agent) = lab_with_agent("");
    home.ctl_ok(&["ban", "add", &s(lab.client_v4)]);
    for frame in [
        &u32::MAX.to_be_bytes()[..],                     // a 4 GiB length prefix
        &[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'][..], // not JSON
        &[0, 0, 0, 2, b'{', b'}'][..],                   // JSON, not a request
        b"GET / HTTP/1.1\r\n\r\n",                       // the wrong protocol
    ] {
        let mut c = UnixStream::connect(&home.socket).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(frame).unwrap();
        let mut reply = Vec::new();
        let _ = c.read_to_end(&mut reply);
        assert!(
            !reply.is_empty(),
            "the agent answers a bad frame with an error"
        );
    }
    // A client that connects and says nothing does not block the others.
    let _silent = UnixStream::connect(&home.socket).unwrap();
    let list = home.ctl_json(&["ban", "list"]);
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "state unchanged: {list}"
    );
    assert_eq!(
        lab.udp_through(lab.server_v4, PORT, 5),
        0,
        "still enforcing"
    );
}

#[test]
fn ipv6_bans_cover_the_configured_prefix() {
    let (lab, home, _agent) = lab_with_agent("");
    assert!(lab.wait_reachable(lab.server_v6, PORT));
    // A single address is banned as its /64 (ipv6_prefix), as the kernel keys it.
    let out = home.ctl_ok(&["ban", "add", &s(lab.client_v6), "--ttl", "1h"]);
    assert!(out.contains("banned"), "{out}");
    assert_eq!(lab.udp_through(lab.server_v6, PORT, 5), 0);
    let IpAddr::V6(c) = lab.client_v6 else {
        unreachable!()
    };
    let flip = |byte: usize| {
        let mut o = c.octets();
        o[byte] ^= 0x55;
        IpAddr::from(o)
    };
    let (same64, other) = (flip(15), flip(7));
    let c = home.ctl_json(&["check", &s(same64)]);
    assert_eq!(c["data"]["reason"], "banned", "same /64: {c}");
    let c = home.ctl_json(&["check", &s(other)]);
    assert_ne!(c["data"]["reason"], "banned", "another /64: {c}");
    home.ctl_ok(&["ban", "del", &s(lab.client_v6)]);
    assert!(
        lab.wait_reachable(lab.server_v6, PORT),
        "unbanned v6 source passes again"
    );
}

/// Issue 16: `ban add NET/64 --ttl 1h`, then `ban add ADDR --ttl 2s` inside
/// it. The kernel keys both at the /64; when the address's ban ends, the
/// /64 stays banned, in the list, in `check` and in the kernel.
#[test]
fn a_host_ban_ending_leaves_its_64_banned() {
    use aya::maps::{HashMap, Map, MapData};
    use shield_common::maps::{Ban, MAP_BAN_V6};
    let (lab, home, _agent) = lab_with_agent("");
    assert!(lab.wait_reachable(lab.server_v6, PORT));
    let IpAddr::V6(c) = lab.client_v6 else {
        unreachable!()
    };
    let mut key = c.octets();
    key[8..].fill(0);
    let net64 = format!("{}/64", std::net::Ipv6Addr::from(key));
    let host = format!("{c}/128");
    home.ctl_ok(&["ban", "add", &net64, "--ttl", "1h"]);
    home.ctl_ok(&["ban", "add", &s(lab.client_v6), "--ttl", "2s"]);
    // Two bans, one kernel entry: the map's fill counts it once.
    let text = shield_tests::agent::scrape(&lab.server_ns, 9964);
    assert_eq!(
        shield_tests::agent::metric(&text, "shield_map_entries{map=\"BAN_V6\"}"),
        Some(1.0),
        "{text}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let list = home.ctl_json(&["ban", "list"]);
        if !list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["net"] == host.as_str())
        {
            break list;
        }
        assert!(Instant::now() < deadline, "the /128 never expired: {list}");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(list["data"][0]["net"], net64.as_str(), "{list}");
    let data = MapData::from_pin(home.pin_dir.join(MAP_BAN_V6)).unwrap();
    let bans: HashMap<MapData, [u8; 16], Ban> = HashMap::try_from(Map::HashMap(data)).unwrap();
    let entry = bans.get(&key, 0).expect("the /64's kernel entry is gone");
    assert!(
        entry.expires_ns > shield_user::clock::monotonic_ns() + 1_800_000_000_000,
        "the /64's kernel entry no longer lasts the hour: {entry:?}"
    );
    let banned = |home: &shield_tests::agent::AgentHome| {
        home.ctl_json(&["stats"])["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["verdict"] == "drop" && r["reason"] == "banned")
            .and_then(|r| r["packets"].as_u64())
            .unwrap()
    };
    let before = banned(&home);
    assert_eq!(lab.udp_through(lab.server_v6, PORT, 5), 0, "the /64 passes");
    assert!(banned(&home) > before, "nothing was dropped as banned");
    let c = home.ctl_json(&["check", &s(lab.client_v6)]);
    assert_eq!(c["data"]["reason"], "banned", "{c}");
}

#[test]
fn a_sustained_flood_becomes_an_autoban() {
    let cfg = "[limits]\npackets = \"100/s\"\npacket_burst = 100\n[autoban]\nafter = \"2s\"\nttl = \"1m\"\n";
    let (lab, home, agent) = lab_with_agent(cfg);
    let src = lab.client_v4;
    let flows = Flows::start(&lab, PORT, &[src], Duration::from_micros(500));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let row = loop {
        let list = home.ctl_json(&["ban", "list"]);
        if let Some(r) = list["data"].as_array().unwrap().first() {
            break r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no autoban: {}",
            agent.logs()
        );
        thread::sleep(Duration::from_millis(200));
    };
    flows.stop();
    assert_eq!(row["net"], format!("{src}/32"), "{row}");
    assert_eq!(row["origin"], "autoban", "{row}");
    let left = row["expires_in_secs"].as_u64().unwrap();
    // Listed by the first poll (every 200 ms) after the ban: 10 s of room
    // for that poll on a loaded 2-core host.
    assert!((50..=60).contains(&left), "{row}");
    assert!(agent.logs().contains("autoban"), "{}", agent.logs());
    assert_eq!(lab.udp_through(lab.server_v4, PORT, 5), 0, "banned now");
}
