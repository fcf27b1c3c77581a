//! The XDP program attached in native mode to a veth in a network namespace,
//! judging real packets sent through the kernel stack. Needs root.

use aya::programs::XdpMode;
use shield_common::{
    gcra::{Gcra, NANOS_PER_SEC},
    maps::*,
    reason::{Reason, Verdict},
};
use shield_tests::{harness::cidr, lab::Lab};
use shield_user::dataplane::{Dataplane, LoadOptions};

/// Loads the program and attaches it natively to the lab's server veth. The
/// calling thread stays in the server namespace.
fn attach(lab: &Lab) -> Dataplane {
    Lab::enter(&lab.server_ns);
    let mut dp = Dataplane::load(&LoadOptions::default()).unwrap();
    dp.attach(&lab.server_if, XdpMode::Driver)
        .expect("native XDP on veth");
    // Attaching restarts the veth's NAPI; wait until both families get
    // through (ARP and neighbour discovery settled) before measuring.
    assert!(
        lab.wait_reachable(lab.server_v4, 4999),
        "v4 path never came up"
    );
    assert!(
        lab.wait_reachable(lab.server_v6, 4999),
        "v6 path never came up"
    );
    dp
}

#[test]
fn attaches_natively_to_veth() {
    let lab = Lab::new();
    let dp = attach(&lab);
    let details = lab.server_link_details();
    assert!(
        details.contains("xdp "),
        "expected native (driver) XDP, got: {details}"
    );
    assert!(!details.contains("xdpgeneric"), "{details}");
    drop(dp);
    // Dropping the dataplane drops the link: nothing stays attached.
    assert!(
        !lab.server_link_details().contains("prog/xdp"),
        "{}",
        lab.server_link_details()
    );
}

#[test]
fn clean_traffic_flows_and_is_counted() {
    let lab = Lab::new();
    let dp = attach(&lab);
    assert_eq!(lab.udp_through(lab.server_v4, 5001, 50), 50);
    assert_eq!(lab.udp_through(lab.server_v6, 5001, 50), 50);
    let c = dp.counters().unwrap();
    assert!(c.packets(Verdict::Pass, Reason::Clean) >= 100, "{c:?}");
    assert_eq!(c.packets(Verdict::Drop, Reason::Malformed), 0);
}

#[test]
fn bans_drop_real_traffic_and_unbans_restore_it() {
    let lab = Lab::new();
    let mut dp = attach(&lab);
    for (src, dst) in [
        (lab.client_v4, lab.server_v4),
        (lab.client_v6, lab.server_v6),
    ] {
        let net = shield_user::net::Cidr::host(src);
        dp.set_ban(net, &Ban::new(BAN_FOREVER, BAN_ORIGIN_MANUAL))
            .unwrap();
        assert_eq!(lab.udp_through(dst, 5002, 40), 0, "{src} banned");
        dp.remove_ban(net).unwrap();
        // While banned, the client's IPv6 neighbour solicitations (sent from
        // the banned address) were dropped too; let it resolve again.
        assert!(lab.wait_reachable(dst, 5002), "{src} reachable after unban");
        assert_eq!(lab.udp_through(dst, 5002, 40), 40, "{src} unbanned");
    }
    assert!(
        dp.counters()
            .unwrap()
            .packets(Verdict::Drop, Reason::Banned)
            >= 80
    );
}

#[test]
fn feed_prefix_drops_and_counts_hits() {
    let lab = Lab::new();
    let mut dp = attach(&lab);
    let std::net::IpAddr::V4(c) = lab.client_v4 else {
        unreachable!()
    };
    let [a, b, n, _] = c.octets();
    let net = cidr(&format!("{a}.{b}.{n}.0/24"));
    dp.set_feed_entry(net, &FeedEntry { feed_id: 9 }).unwrap();
    assert_eq!(lab.udp_through(lab.server_v4, 5003, 25), 0);
    assert_eq!(dp.feed_hits(9).unwrap(), 25);
}

#[test]
fn rate_limit_admits_the_burst_of_a_real_flood() {
    let lab = Lab::new();
    let mut dp = attach(&lab);
    dp.set_port_rule(
        PROTO_UDP,
        5004,
        &PortRule {
            class: 3,
            acl: 0,
            flags: 0,
        },
    )
    .unwrap();
    let l = Limits {
        packets: Gcra::new(1, NANOS_PER_SEC, 20),
        syns: Gcra::UNLIMITED,
    };
    dp.set_limits(0, 3, &l).unwrap();
    // 500 datagrams in well under a second: the burst gets through, at most
    // one more if the flood straddles a refill (a loaded 2-core host still
    // sends 500 small datagrams in far less than the 1 s a second refill
    // would take).
    let ring_before = lab.ring_drops();
    let got = lab.udp_through(lab.server_v4, 5004, 500);
    let ring = lab.ring_drops() - ring_before;
    assert!((20..=21).contains(&got), "got {got}");
    let c = dp.counters().unwrap();
    // Every datagram the program saw beyond the burst (and the one refill)
    // was dropped by the limit; only those the veth's ring dropped first
    // never reached it.
    let limited = c.packets(Verdict::Drop, Reason::Ratelimit);
    assert!(
        (479 - ring..=480 - ring).contains(&limited),
        "{limited} limited, {ring} dropped by the veth ring: {c:?}"
    );
    // Another port is another class with no limit.
    assert_eq!(lab.udp_through(lab.server_v4, 5005, 100), 100);
}

#[test]
fn dry_run_passes_what_it_would_drop() {
    let lab = Lab::new();
    let mut dp = attach(&lab);
    dp.set_ban(
        shield_user::net::Cidr::host(lab.client_v4),
        &Ban::new(BAN_FOREVER, 1),
    )
    .unwrap();
    dp.set_config(&GlobalConfig::new(CFG_DRY_RUN, 64)).unwrap();
    assert_eq!(lab.udp_through(lab.server_v4, 5006, 30), 30);
    let c = dp.counters().unwrap();
    assert_eq!(c.packets(Verdict::WouldDrop, Reason::Banned), 30);
}
