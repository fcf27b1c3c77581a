//! shield against a real CrowdSec LAPI (1.4.6 from Debian), in netns labs:
//! decisions in (Ip and Range, added and deleted with cscli), ownership
//! shared with local bans, a LAPI restart, a bad key, and two shield
//! instances sharing an autoban through the LAPI. Needs root;
//! --test-threads=1.

use std::{
    net::{IpAddr, Ipv4Addr},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use shield_tests::{
    agent::{Agent, AgentHome, metric, scrape},
    flow::Flows,
    lab::Lab,
    lapi::{self, BOUNCER_KEY, Lapi},
};

const PORT: u16 = 7300;
/// Every test polls once a second; "enforced within the poll interval"
/// is checked with this much slack for the first poll, the LAPI's own
/// answer and the scheduler of a loaded host.
const POLL: &str = "1s";
const WITHIN: Duration = Duration::from_secs(15);

fn crowdsec_section(home: &AgentHome, url: &str, key: &str, extra: &str) -> String {
    lapi::crowdsec_section(home, url, key, POLL, extra)
}

/// A lab, a LAPI in its server namespace, and an agent polling it.
fn setup(extra: &str) -> (Lab, Lapi, AgentHome, Agent) {
    let lab = Lab::new();
    let lapi = Lapi::start(Some(&lab.server_ns), Ipv4Addr::LOCALHOST);
    let home = AgentHome::new();
    let cs = crowdsec_section(&home, &lapi.url(), BOUNCER_KEY, "");
    home.write_config(&format!("{}{extra}{cs}", home.base_config(&lab)));
    let agent = home.start(&lab, &[]);
    (lab, lapi, home, agent)
}

/// Waits until `cond` holds, or fails with `what` and the agent's logs.
fn wait_for(agent: &Agent, within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}\n{}", agent.logs());
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the client's datagrams to the server are all dropped, or
/// fails with `what`, the agent's logs, and what the agent and the kernel
/// hold for the client's address.
fn wait_blocked(agent: &Agent, home: &AgentHome, lab: &Lab, what: &str) {
    let deadline = Instant::now() + WITHIN;
    let last = loop {
        let through = lab.udp_through(lab.server_v4, PORT, 5);
        if through == 0 {
            return;
        }
        if Instant::now() >= deadline {
            break through;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let src = lab.client_v4.to_string();
    let bpftool = |name: &str| {
        let out = std::process::Command::new("bpftool")
            .args(["map", "dump", "name", name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.chars().take(4000).collect::<String>()
    };
    panic!(
        "{what}: {last} of 5 datagrams still through\ncheck: {:?}\nban list: {:?}\nBAN_V4: {}\nLISTS_GENERATION: {}\n{}",
        home.ctl(&["check", &src]),
        home.ctl(&["--json", "ban", "list"]),
        bpftool("BAN_V4"),
        bpftool("LISTS_GENERATION"),
        agent.logs()
    );
}

fn passes(lab: &Lab, to: IpAddr) -> bool {
    lab.udp_through(to, PORT, 5) >= 4
}

fn blocked(lab: &Lab, to: IpAddr) -> bool {
    lab.udp_through(to, PORT, 5) == 0
}

fn bans(home: &AgentHome) -> Vec<serde_json::Value> {
    home.ctl_json(&["ban", "list"])["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// The `crowdsec` object of `shieldctl --json status`.
fn crowdsec_status(home: &AgentHome) -> serde_json::Value {
    home.ctl_json(&["status"])["data"]["crowdsec"].clone()
}

fn ban_of<'a>(
    rows: &'a [serde_json::Value],
    net: &str,
    origin: &str,
) -> Option<&'a serde_json::Value> {
    rows.iter()
        .find(|r| r["net"] == net && r["origin"] == origin)
}

#[test]
fn decisions_added_with_cscli_are_enforced_and_lifted_when_deleted() {
    let (lab, lapi, home, agent) = setup("");
    let src = lab.client_v4.to_string();
    assert!(passes(&lab, lab.server_v4), "clean before any decision");

    lapi.cscli_ok(&["decisions", "add", "-i", &src, "-d", "1h", "-R", "test ban"]);
    wait_blocked(&agent, &home, &lab, "the decision is not enforced");
    let rows = bans(&home);
    let row = ban_of(&rows, &format!("{src}/32"), "crowdsec").unwrap_or_else(|| panic!("{rows:?}"));
    let left = row["expires_in_secs"].as_u64().unwrap();
    assert!((3500..=3600).contains(&left), "its own duration: {row}");
    assert!(row["reason"].as_str().unwrap().contains("cscli"), "{row}");
    let check = home.ctl_ok(&["check", &src]);
    assert!(check.contains("crowdsec"), "{check}");

    let m = scrape(&lab.server_ns, 9964);
    assert_eq!(
        metric(&m, "shield_bans_total{source=\"crowdsec\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "shield_crowdsec_decisions{origin=\"cscli\"}"),
        Some(1.0),
        "{m}"
    );
    let polled = metric(&m, "shield_crowdsec_last_poll_success_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now - polled < 10.0, "{m}");
    assert_eq!(metric(&m, "shield_crowdsec_errors_total"), Some(0.0), "{m}");

    // A CrowdSec ban is lifted where it was made, not with shieldctl.
    let del = home.ctl(&["ban", "del", &src]);
    assert!(
        !del.ok() && del.stderr.contains("cscli decisions delete"),
        "{del:?}"
    );

    lapi.cscli_ok(&["decisions", "delete", "-i", &src]);
    wait_for(&agent, WITHIN, "the deleted decision still drops", || {
        passes(&lab, lab.server_v4)
    });
    assert!(ban_of(&bans(&home), &format!("{src}/32"), "crowdsec").is_none());
    let m = scrape(&lab.server_ns, 9964);
    assert_eq!(
        metric(&m, "shield_crowdsec_decisions{origin=\"cscli\"}"),
        None,
        "{m}"
    );
}

#[test]
fn a_range_decision_covers_its_prefix() {
    let (lab, lapi, home, agent) = setup("");
    let IpAddr::V4(c) = lab.client_v4 else {
        unreachable!()
    };
    let [a, b, n, _] = c.octets();
    let range = format!("{a}.{b}.{n}.0/24");
    let other = lab.add_client_v4(9);
    lapi.cscli_ok(&["decisions", "add", "-r", &range, "-d", "30m"]);
    wait_blocked(&agent, &home, &lab, "the range is not enforced");
    // The second client address is in the range too.
    let flows = Flows::start(&lab, PORT + 1, &[other], Duration::from_millis(5));
    // By datagrams sent, not time: a slow sender still sends its 21.
    wait_for(&agent, WITHIN, "the second client never sent", || {
        flows.sent(other) > 20
    });
    let r = flows.stop();
    assert!(r.sent(other) > 20 && r.received(other) == 0, "{r:?}");
    let rows = bans(&home);
    assert!(ban_of(&rows, &range, "crowdsec").is_some(), "{rows:?}");

    lapi.cscli_ok(&["decisions", "delete", "-r", &range]);
    wait_for(&agent, WITHIN, "the deleted range still drops", || {
        passes(&lab, lab.server_v4)
    });
}

#[test]
fn an_address_another_origin_also_bans_stays_blocked() {
    let (lab, lapi, home, agent) = setup("");
    let src = lab.client_v4.to_string();
    lapi.cscli_ok(&["decisions", "add", "-i", &src, "-d", "1h"]);
    wait_for(&agent, WITHIN, "the decision is not enforced", || {
        ban_of(&bans(&home), &format!("{src}/32"), "crowdsec").is_some()
    });
    home.ctl_ok(&["ban", "add", &src, "--ttl", "10m", "--reason", "ours too"]);
    let rows = bans(&home);
    assert!(
        ban_of(&rows, &format!("{src}/32"), "manual").is_some(),
        "{rows:?}"
    );

    lapi.cscli_ok(&["decisions", "delete", "-i", &src]);
    wait_for(&agent, WITHIN, "CrowdSec's hold is not released", || {
        ban_of(&bans(&home), &format!("{src}/32"), "crowdsec").is_none()
    });
    assert!(
        blocked(&lab, lab.server_v4),
        "the manual ban still holds it"
    );
    assert!(
        agent.logs().contains("kept_by_other_origin=1"),
        "{}",
        agent.logs()
    );

    // And the other way round: shieldctl lifts its own hold only.
    lapi.cscli_ok(&["decisions", "add", "-i", &src, "-d", "1h"]);
    wait_for(&agent, WITHIN, "the new decision is not taken in", || {
        ban_of(&bans(&home), &format!("{src}/32"), "crowdsec").is_some()
    });
    let out = home.ctl_ok(&["ban", "del", &src]);
    assert!(out.contains("stays banned by a CrowdSec decision"), "{out}");
    assert!(
        blocked(&lab, lab.server_v4),
        "CrowdSec's hold is gone with the manual one: {:?}\n{}",
        bans(&home),
        agent.logs()
    );
}

#[test]
fn a_lapi_restart_loses_nothing_and_resyncs_as_a_diff() {
    let (lab, mut lapi, home, agent) = setup("");
    let src = lab.client_v4.to_string();
    let second = lab.add_client_v4(7).to_string();
    lapi.cscli_ok(&["decisions", "add", "-i", &src, "-d", "1h"]);
    wait_for(&agent, WITHIN, "the decision is not enforced", || {
        blocked(&lab, lab.server_v4)
    });

    lapi.stop();
    wait_for(&agent, WITHIN, "the outage is not counted", || {
        metric(
            &scrape(&lab.server_ns, 9964),
            "shield_crowdsec_errors_total",
        )
        .is_some_and(|n| n >= 1.0)
    });
    // The outage goes on past another failed poll: the decisions stay
    // through it.
    wait_for(&agent, WITHIN, "no second failed poll", || {
        metric(
            &scrape(&lab.server_ns, 9964),
            "shield_crowdsec_errors_total",
        )
        .is_some_and(|n| n >= 2.0)
    });
    assert!(
        blocked(&lab, lab.server_v4),
        "decisions stay while the LAPI is down"
    );
    assert!(
        agent.logs().contains("CrowdSec poll failed"),
        "{}",
        agent.logs()
    );

    // While shield is not looking: one decision goes, another comes.
    // The database is the LAPI's; cscli talks to it through the LAPI, so
    // restart it first, then change things before shield's next poll can
    // see a delta (its backoff is a few seconds by now).
    lapi.run();
    lapi.cscli_ok(&["decisions", "delete", "-i", &src]);
    lapi.cscli_ok(&["decisions", "add", "-i", &second, "-d", "1h"]);
    wait_for(
        &agent,
        Duration::from_secs(20),
        "no resync after the restart",
        || {
            let rows = bans(&home);
            ban_of(&rows, &format!("{second}/32"), "crowdsec").is_some()
                && ban_of(&rows, &format!("{src}/32"), "crowdsec").is_none()
        },
    );
    assert!(
        passes(&lab, lab.server_v4),
        "the deleted decision is lifted"
    );
    assert!(
        agent.logs().contains("CrowdSec LAPI reachable again"),
        "{}",
        agent.logs()
    );
    assert!(agent.logs().contains("startup=true"), "{}", agent.logs());
}

#[test]
fn a_bad_api_key_is_a_clear_error_and_the_local_policy_keeps_running() {
    let lab = Lab::new();
    let lapi = Lapi::start(Some(&lab.server_ns), Ipv4Addr::LOCALHOST);
    let home = AgentHome::new();
    let cs = crowdsec_section(&home, &lapi.url(), "not-the-key-0123456789", "");
    home.write_config(&format!("{}{cs}", home.base_config(&lab)));
    let agent = home.start(&lab, &[]);
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "-i",
        &lab.client_v4.to_string(),
        "-d",
        "1h",
    ]);

    wait_for(&agent, WITHIN, "no clear error about the key", || {
        agent
            .logs()
            .contains("refused the bouncer API key (HTTP 403)")
    });
    assert!(agent.logs().contains("cscli bouncers"), "{}", agent.logs());
    let m = scrape(&lab.server_ns, 9964);
    assert!(
        metric(&m, "shield_crowdsec_errors_total").unwrap() >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "shield_crowdsec_last_poll_success_timestamp_seconds"),
        None
    );
    // Nothing from CrowdSec, and the local policy works.
    assert!(passes(&lab, lab.server_v4));
    let src = lab.client_v4.to_string();
    home.ctl_ok(&["ban", "add", &src]);
    assert!(blocked(&lab, lab.server_v4));
    home.ctl_ok(&["ban", "del", &src]);
    assert!(passes(&lab, lab.server_v4));
    // One error line per distinct failure, not one per poll: two more
    // polls refused, still one line.
    let errors = || {
        metric(
            &scrape(&lab.server_ns, 9964),
            "shield_crowdsec_errors_total",
        )
        .unwrap_or(0.0)
    };
    let seen = errors();
    wait_for(
        &agent,
        Duration::from_secs(40),
        "no more refused polls",
        || errors() >= seen + 2.0,
    );
    assert_eq!(
        agent.logs().matches("refused the bouncer API key").count(),
        1,
        "{}",
        agent.logs()
    );
}

#[test]
fn check_config_refuses_a_key_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let home = AgentHome::new();
    let cs = crowdsec_section(&home, "http://127.0.0.1:8080", BOUNCER_KEY, "");
    std::fs::set_permissions(
        home.dir.join("crowdsec.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let text = format!("{}{cs}", home.base_config(&lab));
    home.write_config(&text);
    let line = text
        .lines()
        .position(|l| l.starts_with("api_key_file"))
        .unwrap()
        + 1;
    let (st, out) = home.run(&lab, &["check-config", home.config.to_str().unwrap()]);
    assert_eq!(st.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!(":{line}:16: `api_key_file`")),
        "{out}"
    );
    assert!(
        out.contains("mode 0644") && out.contains("chmod 600"),
        "{out}"
    );
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

#[test]
fn an_autoban_on_one_instance_is_enforced_on_another_through_the_lapi() {
    let (a, b, lapi) = lapi::linked_labs();
    // The attacker has the same address in both labs: A's 10.200.A.77.
    let attacker = a.add_client_v4(77);
    let IpAddr::V4(s) = a.server_v4 else {
        unreachable!()
    };
    ip(&[
        "-n",
        &b.server_ns,
        "addr",
        "add",
        &format!("{s}/24"),
        "dev",
        &b.server_if,
    ]);
    ip(&[
        "-n",
        &b.client_ns,
        "addr",
        "add",
        &format!("{attacker}/24"),
        "dev",
        "sh-cli",
    ]);

    let (home_a, home_b, agent_a, agent_b) = lapi::start_pair(
        &lapi,
        (&a, &b),
        "shield",
        POLL,
        "after = \"2s\"\nttl = \"1m\"\n",
    );

    // B lets the attacker in (the destination is B's copy of A's address).
    assert!(passes(&b, a.server_v4), "B is open before the autoban");

    let flood = Flows::start(&a, PORT, &[attacker], Duration::from_micros(500));
    wait_for(&agent_a, Duration::from_secs(15), "no autoban on A", || {
        ban_of(&bans(&home_a), &format!("{attacker}/32"), "autoban").is_some()
    });
    flood.stop();
    wait_for(
        &agent_b,
        Duration::from_secs(10),
        "A's autoban is not enforced on B",
        || blocked(&b, a.server_v4),
    );
    let rows = bans(&home_b);
    let row =
        ban_of(&rows, &format!("{attacker}/32"), "crowdsec").unwrap_or_else(|| panic!("{rows:?}"));
    assert!(
        row["reason"].as_str().unwrap().contains("shield/flood"),
        "{row}"
    );
    let left = row["expires_in_secs"].as_u64().unwrap();
    assert!((40..=60).contains(&left), "the autoban's duration: {row}");

    let m = scrape(&a.server_ns, 9964);
    assert!(
        metric(&m, "shield_crowdsec_alerts_pushed_total").unwrap() >= 1.0,
        "{m}"
    );
    // `shieldctl status` shows each side of the link.
    let cs_a = crowdsec_status(&home_a);
    assert_eq!(cs_a["configured"], true, "{cs_a}");
    assert_eq!(cs_a["pushes"], true, "{cs_a}");
    assert!(cs_a["last_push_unix"].as_u64().is_some(), "{cs_a}");
    assert!(cs_a["alerts_pushed_total"].as_u64().unwrap() >= 1, "{cs_a}");
    assert_eq!(cs_a["alerts_spooled"], 0, "{cs_a}");
    let cs_b = crowdsec_status(&home_b);
    assert!(cs_b["last_pull_unix"].as_u64().is_some(), "{cs_b}");
    assert!(cs_b["decisions"].as_u64().unwrap() >= 1, "{cs_b}");
    assert!(cs_b["bans"].as_u64().unwrap() >= 1, "{cs_b}");
    assert_eq!(cs_b["last_error"], serde_json::Value::Null, "{cs_b}");
    // B reaches the LAPI across the labs' link.
    let b_url = format!("http://10.210.0.1:{}", lapi.port);
    assert_eq!(cs_b["lapi_url"].as_str(), Some(b_url.as_str()), "{cs_b}");
    assert_eq!(cs_b["pushes"], false, "{cs_b}");
    let text = home_b.ctl_ok(&["status"]);
    assert!(
        text.contains(&format!("crowdsec    {b_url}: ")) && text.contains("last pull "),
        "{text}"
    );
    assert!(!text.contains("last pull never"), "{text}");
    assert!(
        agent_a.logs().contains("autobans pushed to CrowdSec"),
        "{}",
        agent_a.logs()
    );
    // The alert as the LAPI stored it: scenario, source and a message with the rate.
    let alerts = lapi.cscli_ok(&["alerts", "list", "-o", "json"]);
    assert!(
        alerts.contains("shield/flood") && alerts.contains(&attacker.to_string()),
        "{alerts}"
    );
    assert!(alerts.contains("dropped packets/s"), "{alerts}");
}

#[test]
fn autobans_wait_in_the_spool_while_the_lapi_is_down() {
    let lab = Lab::new();
    let mut lapi = Lapi::start(Some(&lab.server_ns), Ipv4Addr::LOCALHOST);
    lapi.add_machine("shield-s", "shield-s-password-0123");
    let home = AgentHome::new();
    let pw = lapi::secret_file(&home.dir, "crowdsec.pw", "shield-s-password-0123");
    let cs = crowdsec_section(
        &home,
        &lapi.url(),
        BOUNCER_KEY,
        &format!(
            "machine_id = \"shield-s\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    );
    home.write_config(&format!(
        "{}[limits]\npackets = \"100/s\"\npacket_burst = 100\n[autoban]\nafter = \"2s\"\nttl = \"1m\"\n{cs}",
        home.base_config(&lab)
    ));
    let agent = home.start(&lab, &[]);
    lapi.stop();

    let src = lab.client_v4;
    let flood = Flows::start(&lab, PORT, &[src], Duration::from_micros(500));
    wait_for(&agent, Duration::from_secs(15), "no autoban", || {
        ban_of(&bans(&home), &format!("{src}/32"), "autoban").is_some()
    });
    flood.stop();
    let spool = home.state_dir.join("crowdsec-spool.json");
    wait_for(&agent, WITHIN, "the autoban is not spooled", || {
        std::fs::read_to_string(&spool).is_ok_and(|s| s.contains(&src.to_string()))
    });
    // Status says the link is down and what waits for it.
    wait_for(&agent, WITHIN, "status does not show the failure", || {
        let cs = crowdsec_status(&home);
        cs["alerts_spooled"].as_u64() >= Some(1) && cs["last_error"].is_string()
    });
    let cs = crowdsec_status(&home);
    assert_eq!(cs["last_push_unix"], serde_json::Value::Null, "{cs}");
    assert!(cs["errors_total"].as_u64().unwrap() >= 1, "{cs}");
    let text = home.ctl_ok(&["status"]);
    assert!(
        text.contains(", last push never, 0 alerts pushed, "),
        "{text}"
    );
    assert!(text.contains("FAILING: "), "{text}");
    // The agent restarts while the LAPI is still down: the spool stays.
    agent.stop();
    let agent = home.start(&lab, &[]);
    assert!(agent.logs().contains("still spooled"), "{}", agent.logs());

    lapi.run();
    wait_for(
        &agent,
        Duration::from_secs(40),
        "the spooled alert is not pushed",
        || {
            lapi.cscli_ok(&["decisions", "list", "-o", "json"])
                .contains(&src.to_string())
        },
    );
    wait_for(&agent, WITHIN, "the spool is not emptied", || {
        std::fs::read_to_string(&spool).is_ok_and(|s| !s.contains(&src.to_string()))
    });
    wait_for(&agent, WITHIN, "status shows no push", || {
        let cs = crowdsec_status(&home);
        cs["last_push_unix"].is_u64() && cs["alerts_spooled"] == 0
    });
}

/// The test CA and the 127.0.0.1 certificate it signed (shield-user's feed
/// tests use the same throwaway material).
const TLS_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shield-user/src/feeds/testdata/tls"
);

#[test]
fn an_https_lapi_is_trusted_through_ca_file_only() {
    let lab = Lab::new();
    let tls = std::path::Path::new(TLS_DIR);
    let lapi = Lapi::start_with(
        Some(&lab.server_ns),
        Ipv4Addr::LOCALHOST,
        Some((&tls.join("server.pem"), &tls.join("server.key"))),
    );
    assert!(lapi.url().starts_with("https://"));
    let src = lab.client_v4.to_string();
    lapi.cscli_ok(&["decisions", "add", "-i", &src, "-d", "1h"]);

    // Without ca_file the system's roots do not know the test CA.
    let home = AgentHome::new();
    let cs = crowdsec_section(&home, &lapi.url(), BOUNCER_KEY, "");
    home.write_config(&format!("{}{cs}", home.base_config(&lab)));
    let agent = home.start(&lab, &[]);
    wait_for(&agent, WITHIN, "no TLS error without ca_file", || {
        agent.logs().contains("CrowdSec poll failed")
    });
    assert!(
        passes(&lab, lab.server_v4),
        "an unverified LAPI is not obeyed"
    );
    agent.stop();
    drop(home);

    let home = AgentHome::new();
    let cs = crowdsec_section(
        &home,
        &lapi.url(),
        BOUNCER_KEY,
        &format!("ca_file = \"{}\"\n", tls.join("ca.pem").display()),
    );
    home.write_config(&format!("{}{cs}", home.base_config(&lab)));
    let agent = home.start(&lab, &[]);
    wait_for(
        &agent,
        WITHIN,
        "the decision over https is not enforced",
        || blocked(&lab, lab.server_v4),
    );
    assert!(
        !agent.logs().contains("CrowdSec poll failed"),
        "{}",
        agent.logs()
    );
}

#[test]
fn a_bouncer_authenticates_by_client_certificate() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let pki = lapi::Pki::new(&home.dir, "bouncer-ou");
    let lapi = Lapi::start_mtls(Some(&lab.server_ns), Ipv4Addr::LOCALHOST, &pki);
    let src = lab.client_v4.to_string();
    lapi.cscli_ok(&["decisions", "add", "-i", &src, "-d", "1h"]);
    home.write_config(&format!(
        "{}[crowdsec]\nlapi_url = \"{}\"\npoll = \"{POLL}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        home.base_config(&lab),
        lapi.url(),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    ));
    let agent = home.start(&lab, &[]);
    wait_for(
        &agent,
        WITHIN,
        "the decision over mTLS is not enforced",
        || blocked(&lab, lab.server_v4),
    );
    assert!(
        !agent.logs().contains("CrowdSec poll failed"),
        "{}",
        agent.logs()
    );
    agent.stop();

    // A certificate from another CA (and with another OU) is no bouncer.
    // (The same home: its pinned link holds the interface.)
    let wrong_dir = home.dir.join("wrong");
    std::fs::create_dir_all(&wrong_dir).unwrap();
    let wrong = lapi::Pki::new(&wrong_dir, "not-a-bouncer");
    home.write_config(&format!(
        "{}[crowdsec]\nlapi_url = \"{}\"\npoll = \"{POLL}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        home.base_config(&lab),
        lapi.url(),
        pki.ca.display(),
        wrong.client_cert.display(),
        wrong.client_key.display(),
    ));
    let agent = home.start(&lab, &[]);
    wait_for(
        &agent,
        WITHIN,
        "a foreign certificate is not refused",
        || agent.logs().contains("CrowdSec poll failed"),
    );
}

/// The WATCHDOG=1 pings the agent sends, with when each arrived, until
/// `stop` is set.
fn watch_pings(
    home: &AgentHome,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<Vec<Instant>> {
    let sock = home.notify_socket();
    thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut at = Vec::new();
        let mut buf = [0u8; 4096];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1")
            {
                at.push(Instant::now());
            }
        }
        at
    })
}

/// Finding 2 of issue 16: a distributed flood brings thousands of
/// autobans in one tick while the LAPI is down, so each is spooled. The
/// spool (up to 10,000 alerts) must not be rewritten and fsync'd once per
/// autoban under the agent's lock, nor the ban journal and offence history
/// written under it (agent/writer.rs), nor the tick hold the lock for all
/// 10,000 (agent/tick.rs): `status` keeps answering within 100 ms, the
/// watchdog is never late, the spool is written at most once a tick, and
/// nothing spooled or journaled is lost at SIGTERM.
#[test]
fn ten_thousand_spooled_autobans_never_stall_the_agent() {
    use shield_tests::raw::send_frames;
    use std::sync::{Arc, atomic::AtomicBool};
    const SOURCES: u32 = 10_000;
    let lab = Lab::new();
    let mut home = AgentHome::new();
    // systemd's watchdog, a third of the unit's 30 s: pings every 5 s.
    const WATCHDOG: Duration = Duration::from_secs(10);
    home.env
        .push(("WATCHDOG_USEC".into(), WATCHDOG.as_micros().to_string()));
    let pw = lapi::secret_file(&home.dir, "crowdsec.pw", "machine-password-0123");
    // Nothing listens on port 9: every push fails and the alerts stay spooled.
    let cs = crowdsec_section(
        &home,
        "http://127.0.0.1:9",
        BOUNCER_KEY,
        &format!("machine_id = \"m\"\npassword_file = \"{}\"\n", pw.display()),
    );
    home.write_config(&format!(
        "{}[limits]\npackets = \"1/s\"\npacket_burst = 1\nconnections = \"1/s\"\nconnection_burst = 1\n[autoban]\nafter = \"2s\"\nttl = \"10m\"\n{cs}",
        home.base_config(&lab)
    ));
    let started = Instant::now();
    let agent = home.start(&lab, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let pings = watch_pings(&home, stop.clone());
    // `status` in a loop for as long as the flood is handled: a new
    // connection each time, as shieldctl makes, timed from connect to
    // answer (in this process: a shieldctl process's own start-up on a
    // loaded host is not the agent's latency).
    let status_times = {
        let (stop, socket) = (stop.clone(), home.socket.clone());
        thread::spawn(move || {
            use shield_user::control::{Client, Request, Response};
            let mut took = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let mut c = Client::connect(&socket).unwrap();
                let r = c.request(&Request::Status).unwrap();
                took.push(t.elapsed());
                assert!(matches!(r, Response::Ok(_)), "{r:?}");
                thread::sleep(Duration::from_millis(20));
            }
            took
        })
    };
    // Two packets per source per round, as in the observability suite's
    // ten thousand sources: every source floods, and after 2 s of it each
    // one is banned, most of them in the same tick.
    let frames = lab.two_from_each([172, 16], SOURCES, PORT);
    let spooled = || crowdsec_status(&home)["alerts_spooled"].as_u64().unwrap();
    let flood = Instant::now();
    while flood.elapsed() < Duration::from_secs(5)
        || (flood.elapsed() < Duration::from_secs(60) && spooled() < u64::from(SOURCES) / 2)
    {
        assert_eq!(
            send_frames(&lab.client_ns, "sh-cli", frames.clone(), 64),
            frames.len()
        );
        thread::sleep(Duration::from_millis(300));
    }
    let n = spooled();
    assert!(n >= u64::from(SOURCES) / 2, "{n} spooled\n{}", agent.logs());
    let m = scrape(&lab.server_ns, 9964);
    let writes = metric(&m, "shield_crowdsec_spool_writes_total")
        .unwrap_or_else(|| panic!("no spool write count in\n{m}"));
    // At most one write a second (the tick), whatever the number of
    // autobans: a count, not a latency, so a loaded host cannot fail it.
    let secs = started.elapsed().as_secs() + 1;
    assert!(writes as u64 <= secs, "{writes} spool writes in {secs} s");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let took = status_times.join().unwrap();
    let pings = pings.join().unwrap();
    let worst_status = took.iter().max().copied().unwrap_or_default();
    let worst_gap = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let mut sorted = took.clone();
    sorted.sort();
    eprintln!(
        "{n} autobans spooled; {writes} spool writes; {} status calls, median {:?}, p99 {:?}, slowest {worst_status:?}; {} watchdog pings, longest gap {worst_gap:?}",
        took.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 99 / 100],
        pings.len()
    );
    assert!(pings.len() >= 2, "{} watchdog pings", pings.len());
    // The agent pings every WATCHDOG/2 from its event loop, which nothing
    // holds up for long any more (the tick works in slices: agent/tick.rs).
    // A gap a whole second past the interval is a stalled loop, not the
    // scheduler of a loaded host, whose delays are milliseconds. Before the
    // slices, the tick that banned 10,000 sources held the loop about 2 s.
    let late = WATCHDOG / 2 + Duration::from_secs(1);
    assert!(
        worst_gap < late,
        "the watchdog went {worst_gap:?} without a ping: the event loop stalled (it pings every {:?})",
        WATCHDOG / 2
    );
    // No stall: status p99 under 250 ms. The lock is held for one slice at
    // a time (under 60 ms in a debug build on a loaded 2-core host, about
    // 1 ms in a release build) and the answer needs no disk, so 250 ms
    // leaves room for four slices' worth of scheduler delay on a host
    // also running this test's own 10,000-source flood (100 ms, issue
    // 16's first bound, failed once so: issue 15), and still fails the
    // agent before the slices and the writer (p99 415 ms, calls waiting up
    // to 2.4 s). The latency itself is measured where it can be, in a
    // release build: `control.status_p99_ms@load` in docs/BENCHMARKS.md.
    let p99 = sorted[sorted.len() * 99 / 100];
    assert!(
        p99 < Duration::from_millis(250),
        "status p99 {p99:?} (slowest {worst_status:?}) over {} calls",
        took.len()
    );

    // SIGTERM, while the last autobans may still be coming in, loses
    // nothing: what was spooled since the last write is written on the
    // way out. Every autoban is in the ban journal, and (the LAPI being
    // down, and fewer than the spool's 10,000) every one is spooled.
    assert!(agent.stop().success());
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(home.state_dir.join(name)).unwrap()).unwrap()
    };
    let autobans = read("bans.json")["bans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["origin"] == "autoban")
        .count();
    let on_disk = read("crowdsec-spool.json")["alerts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(on_disk, autobans.min(10_000));
}

/// `n` Ip decisions for 10.77.x.y (from `first`), as `cscli decisions
/// import` takes them.
fn import_decisions(lapi: &Lapi, first: u32, n: u32) {
    let csv = (first..first + n)
        .map(|i| format!("1h,ip,10.77.{}.{}\n", (i >> 8) & 0xff, i & 0xff))
        .collect::<String>();
    let p = lapi.path().join(format!("import-{first}.csv"));
    std::fs::write(&p, format!("duration,scope,value\n{csv}")).unwrap();
    lapi.cscli_ok(&["decisions", "import", "-i", p.to_str().unwrap()]);
}

fn crowdsec_bans(home: &AgentHome) -> usize {
    bans(home)
        .iter()
        .filter(|b| b["origin"] == "crowdsec")
        .count()
}

/// Finding 10 of issue 16: a page of 256 MiB of tiny decisions parsed
/// into several GB. A page with more than `max_decisions` is refused with
/// a clear, counted error, and the decisions already applied stay.
#[test]
fn a_page_over_max_decisions_is_refused_and_the_applied_state_kept() {
    let (lab, lapi, home, agent) = {
        let lab = Lab::new();
        let lapi = Lapi::start(Some(&lab.server_ns), Ipv4Addr::LOCALHOST);
        let home = AgentHome::new();
        let cs = crowdsec_section(&home, &lapi.url(), BOUNCER_KEY, "max_decisions = 100\n");
        home.write_config(&format!("{}{cs}", home.base_config(&lab)));
        let agent = home.start(&lab, &[]);
        (lab, lapi, home, agent)
    };
    import_decisions(&lapi, 0, 60);
    wait_for(&agent, WITHIN, "60 decisions are not enforced", || {
        crowdsec_bans(&home) == 60
    });
    // 150 more: the delta page holds 150 (> 100), and so would a resync.
    import_decisions(&lapi, 1000, 150);
    wait_for(&agent, WITHIN, "no error for the oversized page", || {
        crowdsec_status(&home)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("max_decisions"))
    });
    let st = crowdsec_status(&home);
    let err = st["last_error"].as_str().unwrap();
    assert!(err.contains("more than 100 decisions"), "{err}");
    assert!(st["errors_total"].as_u64().unwrap() >= 1, "{st}");
    thread::sleep(Duration::from_secs(3));
    assert_eq!(crowdsec_bans(&home), 60, "the applied decisions stay");
    assert!(agent.logs().contains("max_decisions"), "{}", agent.logs());
    let m = scrape(&lab.server_ns, 9964);
    assert!(
        metric(&m, "shield_crowdsec_errors_total").unwrap() >= 1.0,
        "{m}"
    );
}

/// Finding 10 of issue 16: the LAPI URL went raw into the logs and into
/// every LAPI error, and so into `status`. A password in it must show as
/// `***` everywhere.
#[test]
fn the_lapi_url_is_redacted_in_status_and_logs() {
    const SECRET: &str = "s3cr3t-pw";
    let lab = Lab::new();
    let mut lapi = Lapi::start(Some(&lab.server_ns), Ipv4Addr::LOCALHOST);
    let home = AgentHome::new();
    let url = format!("http://shield:{SECRET}@127.0.0.1:{}", lapi.port);
    let cs = crowdsec_section(&home, &url, BOUNCER_KEY, "");
    home.write_config(&format!("{}{cs}", home.base_config(&lab)));
    let agent = home.start(&lab, &[]);
    let src = lab.client_v4.to_string();
    lapi.cscli_ok(&["decisions", "add", "-i", &src, "-d", "1h"]);
    wait_for(&agent, WITHIN, "the decision is not enforced", || {
        ban_of(&bans(&home), &format!("{src}/32"), "crowdsec").is_some()
    });
    lapi.stop();
    wait_for(&agent, WITHIN, "the outage is not reported", || {
        !crowdsec_status(&home)["last_error"].is_null()
    });
    let shown = format!(
        "{}\n{}",
        home.ctl_ok(&["status"]),
        home.ctl_ok(&["--json", "status"])
    );
    assert!(shown.contains("***@127.0.0.1"), "{shown}");
    lapi.run();
    wait_for(
        &agent,
        Duration::from_secs(40),
        "the LAPI is not reached again",
        || agent.logs().contains("CrowdSec LAPI reachable again"),
    );
    let logs = agent.logs();
    for (what, text) in [("status", &shown), ("logs", &logs)] {
        assert!(
            !text.contains(SECRET),
            "the password is in the {what}:\n{text}"
        );
    }
}
