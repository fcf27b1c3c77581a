//! Threat feeds through the real agent: a real HTTP server on the agent's
//! loopback, real refreshes, real traffic. Needs root; --test-threads=1.

use std::{
    fmt::Write as _,
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use shield_tests::{
    agent::{Agent, AgentHome, feed_row, metric, scrape},
    flow::{FlowReport, Flows},
    http::FeedServer,
    lab::Lab,
};

const PORT: u16 = 7200;

/// A feed from `server`. Its timeout is generous: a first fetch that fails
/// is retried only after 30 s (feeds::retry), longer than the tests wait,
/// and a loaded host can make a local fetch slow.
fn feed(name: &str, server: &FeedServer, extra: &str) -> String {
    format!(
        "[[feed]]\nname = \"{name}\"\nurl = \"{}\"\nallow_http = true\nrefresh = \"1h\"\ntimeout = \"10s\"\n{extra}",
        server.url()
    )
}

fn start(lab: &Lab, home: &AgentHome, feeds: &str) -> Agent {
    home.write_config(&format!("{}{feeds}", home.base_config(lab)));
    home.start(lab, &[])
}

/// Waits until `pred` holds for the feed's row (the first fetch runs on the
/// agent's first housekeeping tick).
fn wait_feed(home: &AgentHome, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let row = feed_row(home, name);
        if pred(&row) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "feed {name} never got there: {row}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn applied(row: &Value) -> bool {
    row["last_success_unix"].is_u64()
}

/// Sends 100 datagrams from every source; what arrived from each. Counted
/// in datagrams sent, not in time: a sender a loaded host runs late still
/// sends them all, so "0 arrived" means 0 of 100.
fn probe(lab: &Lab, sources: &[IpAddr]) -> FlowReport {
    let flows = Flows::start(lab, PORT, sources, Duration::from_millis(2));
    let deadline = Instant::now() + Duration::from_secs(30);
    while sources.iter().any(|&s| flows.sent(s) < 100) {
        assert!(Instant::now() < deadline, "the probe's senders stalled");
        thread::sleep(Duration::from_millis(10));
    }
    flows.stop()
}

#[test]
fn every_format_blocks_what_it_lists() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let a: Vec<IpAddr> = (3..=7).map(|h| lab.add_client_v4(h)).collect();
    let clean = lab.client_v4;
    let plain = FeedServer::start_in(
        &lab.server_ns,
        format!("# my list\n; also a comment\n\n{}\n", a[0]).as_bytes(),
    );
    let netset = FeedServer::start_in(
        &lab.server_ns,
        format!(
            "#\n# firehol_level1\n# Maintainer      : FireHOL\n#\n{}/32\n",
            a[1]
        )
        .as_bytes(),
    );
    let spamhaus = FeedServer::start_in(
        &lab.server_ns,
        format!("; Spamhaus DROP List 2026/11/27\n; Last-Modified: Fri, 27 Nov 2026\n{}/32 ; SBL123456\n", a[2]).as_bytes(),
    );
    let ipsum = FeedServer::start_in(
        &lab.server_ns,
        format!(
            "# IPsum Threat Intelligence Feed\n{}\t5\n{}\t1\n",
            a[3], a[4]
        )
        .as_bytes(),
    );
    let _agent = start(
        &lab,
        &home,
        &[
            feed("plain", &plain, "format = \"plain\"\n"),
            feed("firehol", &netset, "format = \"netset\"\n"),
            feed("drop", &spamhaus, "format = \"spamhaus\"\n"),
            feed("ipsum", &ipsum, "format = \"ipsum\"\nmin_score = 3\n"),
        ]
        .concat(),
    );
    for n in ["plain", "firehol", "drop", "ipsum"] {
        let row = wait_feed(&home, n, applied);
        assert_eq!(row["entries"], 1, "{row}");
    }
    let mut sources = a.clone();
    sources.push(clean);
    let r = probe(&lab, &sources);
    for blocked in &a[..4] {
        assert_eq!(
            r.received(*blocked),
            0,
            "{blocked} listed but got through: {r:?}"
        );
    }
    assert!(
        r.received(a[4]) > 0,
        "ipsum score 1 is under min_score 3: {r:?}"
    );
    assert!(r.received(clean) > 0, "{r:?}");
    assert!(feed_row(&home, "ipsum")["hits"].as_u64().unwrap() > 0);
    let c = home.ctl_json(&["check", &a[2].to_string()]);
    assert_eq!(c["data"]["reason"], "feed", "{c}");
    assert!(
        c["data"]["feeds"][0].as_str().unwrap().starts_with("drop"),
        "{c}"
    );
    let status = home.ctl_json(&["status"]);
    assert_eq!(status["data"]["feeds"]["count"], 4);
    assert_eq!(status["data"]["feeds"]["entries"], 4);
}

#[test]
fn refresh_adds_and_removes_and_304_changes_nothing() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let (x, y) = (lab.add_client_v4(3), lab.add_client_v4(4));
    let server = FeedServer::start_in(&lab.server_ns, format!("{x}\n").as_bytes());
    let _agent = start(&lab, &home, &feed("list", &server, ""));
    wait_feed(&home, "list", applied);
    let r = probe(&lab, &[x, y]);
    assert_eq!(r.received(x), 0, "{r:?}");
    assert!(r.received(y) > 0, "{r:?}");

    server.set_body(format!("{y}\n").as_bytes());
    let out = home.ctl_ok(&["feeds", "refresh", "list"]);
    assert!(out.contains("+1 -1"), "{out}");
    let r = probe(&lab, &[x, y]);
    assert!(r.received(x) > 0, "removed entry still enforced: {r:?}");
    assert_eq!(r.received(y), 0, "added entry not enforced: {r:?}");

    let out = home.ctl_ok(&["feeds", "refresh", "list"]);
    assert!(out.contains("not modified"), "{out}");
    assert!(server.not_modified() >= 1);
    assert_eq!(feed_row(&home, "list")["entries"], 1);
}

#[test]
fn oversize_and_stalled_downloads_keep_the_last_good_entries() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let x = lab.add_client_v4(3);
    let mut server = FeedServer::start_in(&lab.server_ns, format!("{x}\n").as_bytes());
    // A timeout short enough to see it fire, long enough for a loaded host.
    let _agent = start(
        &lab,
        &home,
        &feed("list", &server, "max_bytes = 512\n")
            .replace("timeout = \"10s\"", "timeout = \"3s\""),
    );
    wait_feed(&home, "list", applied);

    let mut big = String::new();
    for i in 0..200 {
        let _ = writeln!(big, "10.99.{}.{}", i / 250, i % 250);
    }
    server.set_body(big.as_bytes());
    let o = home.ctl(&["feeds", "refresh", "list"]);
    assert_eq!(o.code, Some(1), "{o:?}");
    let row = feed_row(&home, "list");
    let err = row["last_error"].as_str().unwrap();
    assert!(err.contains("512") || err.contains("large"), "{row}");
    assert_eq!(row["entries"], 1, "{row}");
    assert_eq!(probe(&lab, &[x]).received(x), 0);

    server.set_stall(true);
    let started = Instant::now();
    let o = home.ctl(&["feeds", "refresh", "list"]);
    assert_eq!(o.code, Some(1), "{o:?}");
    // The error names the budget that fired: the feed's 3 s, not some
    // other timer.
    let row = feed_row(&home, "list");
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out after 3.0 s"),
        "{row}"
    );
    // And it fired in time: the server stalls for 60 s (tests/src/http.rs)
    // and shieldctl waits 120 s, so an answer within 30 s is the 3 s
    // timeout, with 27 s of room for a loaded 2-core host.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the 3 s timeout did not fire: {:?}",
        started.elapsed()
    );
    assert_eq!(probe(&lab, &[x]).received(x), 0, "the last good copy stays");
    server.set_stall(false);
    server.shut_down();
}

#[test]
fn the_shrink_guard_holds_a_refresh_until_forced() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let (x, y) = (lab.add_client_v4(3), lab.add_client_v4(4));
    let mut v1 = format!("{x}\n");
    for i in 0..100 {
        let _ = writeln!(v1, "10.98.0.{i}");
    }
    let server = FeedServer::start_in(&lab.server_ns, v1.as_bytes());
    let _agent = start(&lab, &home, &feed("list", &server, ""));
    wait_feed(&home, "list", applied);
    assert_eq!(feed_row(&home, "list")["entries"], 101);

    server.set_body(format!("{y}\n").as_bytes());
    let o = home.ctl(&["feeds", "refresh", "list"]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("held"), "{o:?}");
    let row = feed_row(&home, "list");
    assert!(row["held"].as_str().unwrap().contains("101"), "{row}");
    assert!(
        row["last_error"].is_null(),
        "a hold is no failure of the source: {row}"
    );
    assert_eq!(row["entries"], 101);
    let r = probe(&lab, &[x, y]);
    assert_eq!(r.received(x), 0, "{r:?}");
    assert!(r.received(y) > 0, "{r:?}");
    let status = home.ctl_json(&["status"]);
    assert_eq!(status["data"]["feeds"]["held"], 1);

    let out = home.ctl_ok(&["feeds", "refresh", "list", "--force"]);
    assert!(out.contains("force"), "{out}");
    let row = feed_row(&home, "list");
    assert!(row["held"].is_null(), "{row}");
    assert_eq!(row["entries"], 1);
    let r = probe(&lab, &[x, y]);
    assert!(r.received(x) > 0, "{r:?}");
    assert_eq!(r.received(y), 0, "{r:?}");
}

#[test]
fn the_cached_copy_is_enforced_while_the_source_is_down() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let x = lab.add_client_v4(3);
    let mut server = FeedServer::start_in(&lab.server_ns, format!("{x}\n").as_bytes());
    let agent = start(&lab, &home, &feed("list", &server, ""));
    wait_feed(&home, "list", applied);
    // The copy is stored after the apply, off the agent's lock; a stop
    // before it is written would leave nothing to restart from.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !home.state_dir.join("feeds/list.cache.json").exists() {
        assert!(
            Instant::now() < deadline,
            "the feed's copy was never stored"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(agent.stop().success());
    // A reboot: no pins, and the feed's server is unreachable.
    let (ok, out) = home.run(
        &lab,
        &["--detach", "--config", home.config.to_str().unwrap()],
    );
    assert!(ok.success(), "{out}");
    assert!(
        probe(&lab, &[x]).received(x) > 0,
        "detached: nothing enforced"
    );
    server.shut_down();

    let _agent = home.start(&lab, &[]);
    let row = feed_row(&home, "list");
    assert!(
        row["origin"].as_str().unwrap().starts_with("cache"),
        "{row}"
    );
    assert_eq!(row["entries"], 1);
    assert_eq!(probe(&lab, &[x]).received(x), 0, "cached entries enforced");
    let row = wait_feed(&home, "list", |r| r["last_error"].is_string());
    assert_eq!(
        row["entries"], 1,
        "a failed refresh keeps the cache's entries: {row}"
    );
}

#[test]
fn a_feed_listing_everything_blocks_nothing() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let x = lab.add_client_v4(3);
    let server = FeedServer::start_in(
        &lab.server_ns,
        format!("0.0.0.0/0\n::/0\n10.0.0.0/7\n{x}\n").as_bytes(),
    );
    let _agent = start(&lab, &home, &feed("poisoned", &server, ""));
    let row = wait_feed(&home, "poisoned", applied);
    assert_eq!(row["entries"], 1, "{row}");
    assert_eq!(row["rejected"], 3, "{row}");
    assert!(
        row["first_rejects"][0]
            .as_str()
            .unwrap()
            .contains("broader"),
        "{row}"
    );
    let r = probe(&lab, &[lab.client_v4, x]);
    assert!(r.received(lab.client_v4) > 0, "{r:?}");
    assert_eq!(r.received(x), 0, "{r:?}");
}

#[test]
fn a_source_in_both_versions_is_never_passed_during_the_swap() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let (x, y) = (lab.add_client_v4(3), lab.add_client_v4(4));
    let body = |seed: u32, extra: IpAddr| {
        let mut s = format!("{x}\n{extra}\n");
        for i in 0..40_000u32 {
            let v = 0xac10_0000u32 | ((i * 7 + seed) & 0xf_ffff);
            let _ = writeln!(s, "{}", std::net::Ipv4Addr::from(v));
        }
        s
    };
    let v1 = body(1, "192.0.2.1".parse().unwrap());
    let server = FeedServer::start_in(&lab.server_ns, v1.as_bytes());
    let _agent = start(&lab, &home, &feed("big", &server, ""));
    wait_feed(&home, "big", applied);

    server.set_body(body(3, y).as_bytes());
    let flows = Flows::start(&lab, PORT, &[x, lab.client_v4], Duration::from_micros(500));
    assert!(flows.wait_more(lab.client_v4, 50, Duration::from_secs(10)));
    let out = home.ctl_ok(&["feeds", "refresh", "big"]);
    assert!(flows.wait_more(lab.client_v4, 50, Duration::from_secs(10)));
    let r = flows.stop();
    assert!(out.contains("entries"), "{out}");
    assert!(r.sent(x) > 200, "{r:?}");
    assert_eq!(
        r.received(x),
        0,
        "a source listed before and after got through: {r:?}"
    );
    assert_eq!(
        probe(&lab, &[y]).received(y),
        0,
        "the new entry is enforced"
    );
}

#[test]
fn sigterm_does_not_wait_for_a_stalled_download() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let server = FeedServer::start_in(&lab.server_ns, b"192.0.2.1\n");
    server.set_stall(true);
    let feed = feed("slow", &server, "").replace("timeout = \"10s\"", "timeout = \"1m\"");
    let agent = start(&lab, &home, &feed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.requests() == 0 {
        assert!(Instant::now() < deadline, "the first refresh never started");
        thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    assert!(agent.stop().success());
    // The download would hold the agent for a minute (its timeout, and the
    // server's 60 s stall); the runtime gives tasks 2 s at shutdown
    // (shield-agent.rs), so 15 s leaves 13 s for a loaded 2-core host and
    // still tells the two apart.
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "exit took {:?}",
        t.elapsed()
    );
    server.set_stall(false);
}

#[test]
fn concurrent_refreshes_of_one_feed_share_one_download() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let x = lab.add_client_v4(3);
    let server = FeedServer::start_in(&lab.server_ns, format!("{x}\n").as_bytes());
    // A timeout far longer than the test holds the download in flight.
    let feed = feed("list", &server, "").replace("timeout = \"10s\"", "timeout = \"2m\"");
    let agent = start(&lab, &home, &feed);
    wait_feed(&home, "list", applied);
    let before = server.requests();
    server.set_body(format!("{x}\n192.0.2.1\n").as_bytes());
    server.set_hold(true);
    const N: usize = 24;
    let outs = thread::scope(|s| {
        let runs: Vec<_> = (0..N)
            .map(|_| s.spawn(|| home.ctl(&["feeds", "refresh", "list"])))
            .collect();
        // Every request has reached the agent, and a download is in
        // flight: only now may it finish.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let seen = agent
                .logs()
                .matches("control request: feeds refresh")
                .count();
            if seen >= N && server.requests() > before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {seen} of {N} refresh requests arrived"
            );
            thread::sleep(Duration::from_millis(50));
        }
        server.set_hold(false);
        runs.into_iter()
            .map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        server.requests() - before,
        1,
        "{N} concurrent refreshes of one feed started more than one download"
    );
    for o in &outs {
        assert!(o.ok(), "{o:?}");
        assert!(o.stdout.contains("list: 2 entries"), "{o:?}");
    }
    assert_eq!(feed_row(&home, "list")["entries"], 2);
    // The feed is not stuck "in flight": the next refresh runs on its own.
    let out = home.ctl_ok(&["feeds", "refresh", "list"]);
    assert!(out.contains("not modified"), "{out}");
    assert_eq!(server.requests() - before, 2);
    // And the cache holds one pair, no temporaries.
    let dir = home.state_dir.join("feeds");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        if names == ["list.cache", "list.cache.json"] {
            break;
        }
        assert!(Instant::now() < deadline, "{names:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_feed_covering_more_than_its_address_cap_is_refused() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let x = lab.add_client_v4(3);
    let server = FeedServer::start_in(&lab.server_ns, format!("{x}\n").as_bytes());
    let agent = start(&lab, &home, &feed("list", &server, ""));
    wait_feed(&home, "list", applied);
    // Seventeen /8s, each within the per-entry limit, together over the
    // default cap of sixteen; none of them holds the lab's addresses.
    let mut wide = format!("{x}\n");
    for i in 20..37 {
        let _ = writeln!(wide, "{i}.0.0.0/8");
    }
    server.set_body(wide.as_bytes());
    for args in [
        &["feeds", "refresh", "list"][..],
        // The same content again does not confirm it, nor does --force.
        &["feeds", "refresh", "list"],
        &["feeds", "refresh", "list", "--force"],
    ] {
        let o = home.ctl(args);
        assert_eq!(o.code, Some(1), "{args:?} {o:?}");
        assert!(o.stderr.contains("max_addresses"), "{o:?}");
        let row = feed_row(&home, "list");
        assert_eq!(row["entries"], 1, "{row}");
        assert!(row["held"].as_str().unwrap().contains("cap"), "{row}");
    }
    assert_eq!(
        probe(&lab, &[x]).received(x),
        0,
        "the last good entry stays"
    );
    let m = scrape(&lab.server_ns, 9964);
    assert_eq!(
        metric(&m, "shield_feed_held_total{feed=\"list\",guard=\"cap\"}"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(metric(&m, "shield_feed_held{feed=\"list\"}"), Some(1.0));
    assert!(agent.logs().contains("max_addresses"));

    // An operator who means it raises the cap.
    home.write_config(&format!(
        "{}{}",
        home.base_config(&lab),
        feed("list", &server, "max_addresses = 536870912\n")
    ));
    agent.reload(&home);
    // Within the cap now, but still more than double what the feed
    // covered: the growth guard holds it until confirmed or forced.
    let out = home.ctl_ok(&["feeds", "refresh", "list", "--force"]);
    assert!(out.contains("18 entries"), "{out}");
    let m = scrape(&lab.server_ns, 9964);
    assert_eq!(
        metric(
            &m,
            "shield_feed_covered_addresses{feed=\"list\",family=\"ipv4\"}"
        ),
        Some((17u64 << 24) as f64 + 1.0),
        "{m}"
    );
}

#[test]
fn a_refresh_that_more_than_doubles_the_covered_space_waits_for_confirmation() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let x = lab.add_client_v4(3);
    let server = FeedServer::start_in(&lab.server_ns, format!("{x}\n198.18.0.0/16\n").as_bytes());
    let _agent = start(&lab, &home, &feed("list", &server, ""));
    wait_feed(&home, "list", applied);
    let v2 = format!("{x}\n198.18.0.0/15\n203.0.113.0/24\n");
    server.set_body(v2.as_bytes());
    let o = home.ctl(&["feeds", "refresh", "list"]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("double"), "{o:?}");
    let row = feed_row(&home, "list");
    assert!(row["held"].as_str().unwrap().contains("double"), "{row}");
    assert_eq!(row["entries"], 2, "{row}");
    // The next refresh brings the same content: confirmed.
    server.set_body(v2.as_bytes());
    let out = home.ctl_ok(&["feeds", "refresh", "list"]);
    assert!(out.contains("3 entries"), "{out}");
    assert!(feed_row(&home, "list")["held"].is_null());
    // Doubling again: held, and --force applies it.
    server.set_body(format!("{x}\n198.16.0.0/13\n").as_bytes());
    assert_eq!(home.ctl(&["feeds", "refresh", "list"]).code, Some(1));
    let out = home.ctl_ok(&["feeds", "refresh", "list", "--force"]);
    assert!(out.contains("2 entries"), "{out}");
    let row = feed_row(&home, "list");
    assert!(row["held"].is_null(), "{row}");
}

/// docs/SECURITY.md, "Feeds": a feed whose configured URL is global may not
/// be redirected into non-global space (here the namespace's 127.0.0.1,
/// standing for the host's own services or cloud metadata), by address or
/// by name; a global hop is followed; and a feed configured at a
/// non-global URL may redirect anywhere.
#[test]
fn a_redirect_from_a_global_url_into_local_space_is_refused() {
    let lab = Lab::new();
    let home = AgentHome::new();
    let x = lab.add_client_v4(3);
    let body = format!("{x}\n");
    // 11.0.0.0/8 is ordinary global unicast; these addresses exist only on
    // the lab namespace's loopback.
    let public = lab.add_server_address("11.0.0.1".parse().unwrap());
    let mirror = lab.add_server_address("11.0.0.2".parse().unwrap());
    let inside = FeedServer::start_in(&lab.server_ns, body.as_bytes());
    let outside = FeedServer::start_at(&lab.server_ns, public, b"");
    let other = FeedServer::start_at(&lab.server_ns, mirror, body.as_bytes());
    outside.set_redirect(Some(inside.url()));
    let intranet = FeedServer::start_in(&lab.server_ns, b"");
    intranet.set_redirect(Some(inside.url()));
    let _agent = start(
        &lab,
        &home,
        &format!(
            "{}{}",
            feed("public", &outside, ""),
            feed("intranet", &intranet, "")
        ),
    );

    let refused = |what: &str| {
        let row = wait_feed(&home, "public", |r| r["last_error"].is_string());
        let err = row["last_error"].as_str().unwrap();
        assert!(
            err.contains("127.0.0.1") && err.contains("not a globally reachable address"),
            "{what}: {row}"
        );
        assert_eq!(row["entries"], 0, "{what}: {row}");
    };
    refused("by address");
    // The intranet feed went through the same server, so the refusal was
    // the rule, not a server that could not be reached.
    wait_feed(&home, "intranet", applied);
    let served_inside = inside.requests();
    assert_eq!(served_inside, 1, "only the intranet feed's hop reached it");

    // By name: `localhost` is judged by what it resolves to, when the
    // connection is made.
    outside.set_redirect(Some(inside.url().replace("127.0.0.1", "localhost")));
    let o = home.ctl(&["feeds", "refresh", "public"]);
    assert_eq!(o.code, Some(1), "{o:?}");
    let row = feed_row(&home, "public");
    let err = row["last_error"].as_str().unwrap();
    assert!(
        err.contains("localhost") && err.contains("not a globally reachable address"),
        "{row}"
    );
    assert_eq!(
        inside.requests(),
        served_inside,
        "a refused hop sent nothing"
    );

    // A global hop is followed.
    outside.set_redirect(Some(other.url()));
    home.ctl_ok(&["feeds", "refresh", "public"]);
    let row = wait_feed(&home, "public", applied);
    assert_eq!(row["entries"], 1, "{row}");
    assert_eq!(
        probe(&lab, &[x]).received(x),
        0,
        "the mirror's entry is enforced"
    );
}
