use std::time::Duration;

use shield_common::{
    gcra::Gcra,
    maps::{PORT_DRY_RUN, SRC_ALLOWED},
};

use super::*;
use crate::config::{
    AdaptiveConfig, AutobanConfig, LimitSet, PortRuleConfig, Rate, Tier, XdpModeSetting,
};

const TICK: u64 = 4_000_000;

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn per_s(n: u64) -> Option<Rate> {
    Some(Rate {
        count: n,
        per: Duration::from_secs(1),
    })
}

fn base() -> Config {
    Config {
        interfaces: vec!["eth0".into()],
        xdp_mode: XdpModeSetting::Auto,
        dry_run: false,
        ipv6_prefix: 64,
        control_socket: "/run/shield/shield.sock".into(),
        metrics_listen: "127.0.0.1:9964".parse().unwrap(),
        state_dir: "/var/lib/shield".into(),
        pin_dir: "/sys/fs/bpf/shield".into(),
        malformed: MalformedAction::Drop,
        allow: vec![],
        limits: LimitSet {
            packets: per_s(1000),
            packet_burst: Some(2000),
            connections: per_s(50),
            connection_burst: Some(100),
        },
        tiers: vec![],
        ports: vec![],
        feeds: vec![],
        crowdsec: None,
        autoban: AutobanConfig {
            enabled: true,
            after: Duration::from_secs(5),
            ttl: Duration::from_secs(600),
            factor: 2,
            max_ttl: Duration::from_secs(86400),
        },
        adaptive: AdaptiveConfig {
            enabled: false,
            drop_rate: None,
            pass_rate: None,
            factor: 2,
            max_level: 3,
            step: Duration::from_secs(10),
            relax_after: Duration::from_secs(60),
        },
    }
}

fn tier(name: &str, cidrs: &[&str], limits: LimitSet) -> Tier {
    Tier {
        name: name.into(),
        cidrs: cidrs.iter().map(|s| c(s)).collect(),
        limits,
    }
}

fn port(
    name: &str,
    ports: &[u16],
    limits: LimitSet,
    allow_from: Option<&[&str]>,
) -> PortRuleConfig {
    PortRuleConfig {
        name: name.into(),
        proto: Proto::Tcp,
        ports: ports.to_vec(),
        limits,
        allow_from: allow_from.map(|a| a.iter().map(|s| c(s)).collect()),
        dry_run: false,
    }
}

fn rt() -> Runtime<'static> {
    Runtime {
        tick_ns: TICK,
        ..Runtime::default()
    }
}

#[test]
fn global_flags_follow_the_config() {
    let mut cfg = base();
    assert_eq!(
        compile(&cfg, &rt()).unwrap().global,
        GlobalConfig::new(0, 64)
    );
    cfg.dry_run = true;
    cfg.malformed = MalformedAction::Pass;
    cfg.ipv6_prefix = 48;
    let g = compile(&cfg, &rt()).unwrap().global;
    assert_eq!(g, GlobalConfig::new(CFG_DRY_RUN | CFG_MALFORMED_PASS, 48));
}

#[test]
fn default_limits_fill_slot_zero() {
    let p = compile(&base(), &rt()).unwrap();
    assert_eq!(p.tiers, vec!["default"]);
    assert_eq!(p.classes, vec!["default"]);
    let l = p.limits[&(0, 0)];
    assert_eq!(l.packets, Gcra::new(1000, 1_000_000_000, 2000));
    assert_eq!(l.syns, Gcra::new(50, 1_000_000_000, 100));
    assert_eq!(p.limits.len(), 1);
}

#[test]
fn no_limits_means_no_entries() {
    let mut cfg = base();
    cfg.limits = LimitSet::default();
    let p = compile(&cfg, &rt()).unwrap();
    assert!(p.limits.is_empty(), "all-zero slots mean unlimited");
    assert!(p.resolved[&(0, 0)].0.is_unlimited());
}

#[test]
fn port_rule_beats_tier_beats_default_key_by_key() {
    let mut cfg = base();
    cfg.tiers = vec![tier(
        "partners",
        &["198.51.100.0/24"],
        LimitSet {
            packets: per_s(10_000),
            packet_burst: Some(20_000),
            ..LimitSet::default()
        },
    )];
    cfg.ports = vec![port(
        "ssh",
        &[22],
        LimitSet {
            connections: Some(Rate {
                count: 5,
                per: Duration::from_secs(60),
            }),
            ..LimitSet::default()
        },
        None,
    )];
    let p = compile(&cfg, &rt()).unwrap();
    let (partners, ssh) = (1, 1);
    // partners on the default class: its packets, the default connections.
    let l = p.limits[&(partners, 0)];
    assert_eq!(l.packets, Gcra::new(10_000, 1_000_000_000, 20_000));
    assert_eq!(l.syns, Gcra::new(50, 1_000_000_000, 100));
    // partners on ssh: partners' packets, ssh's connections with a default
    // burst of one (5/min is less than one per second), not the inherited 100.
    let l = p.limits[&(partners, ssh)];
    assert_eq!(l.packets, Gcra::new(10_000, 1_000_000_000, 20_000));
    assert_eq!(l.syns, Gcra::new(5, 60_000_000_000, 1));
    // default tier on ssh.
    let l = p.limits[&(0, ssh)];
    assert_eq!(l.packets, Gcra::new(1000, 1_000_000_000, 2000));
    assert_eq!(l.syns, Gcra::new(5, 60_000_000_000, 1));
    assert_eq!(
        p.ports[&(PROTO_TCP, 22)],
        PortRule {
            class: ssh,
            acl: 0,
            flags: 0
        }
    );
}

#[test]
fn unlimited_overrides_an_inherited_limit() {
    let mut cfg = base();
    cfg.tiers = vec![tier(
        "monitoring",
        &["192.0.2.0/28"],
        LimitSet {
            packets: Some(Rate {
                count: 0,
                per: Duration::from_secs(1),
            }),
            ..LimitSet::default()
        },
    )];
    let p = compile(&cfg, &rt()).unwrap();
    assert_eq!(p.limits[&(1, 0)].packets, Gcra::UNLIMITED);
    assert_eq!(p.limits[&(1, 0)].syns, Gcra::new(50, 1_000_000_000, 100));
}

#[test]
fn small_bursts_are_raised_to_hold_the_rate_across_a_tick() {
    let mut cfg = base();
    cfg.limits.packets = per_s(100_000); // 10 us apart; a 4 ms tick holds 400
    cfg.limits.packet_burst = Some(10);
    let p = compile(&cfg, &rt()).unwrap();
    assert_eq!(p.resolved[&(0, 0)].0.burst, 400);
    assert_eq!(p.limits[&(0, 0)].packets.burst(), 400);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("raised to 400"), "{:?}", p.warnings);
}

#[test]
fn sources_carry_what_every_covering_prefix_says() {
    let mut cfg = base();
    cfg.allow = vec![c("10.0.0.0/8")];
    cfg.tiers = vec![
        tier("wide", &["10.1.0.0/16"], LimitSet::default()),
        tier(
            "narrow",
            &["10.1.2.0/24", "2001:db8::/32"],
            LimitSet::default(),
        ),
    ];
    cfg.ports = vec![
        port("ssh", &[22], LimitSet::default(), Some(&["10.1.0.0/16"])),
        port(
            "admin",
            &[8443],
            LimitSet::default(),
            Some(&["10.1.2.128/25", "192.0.2.0/24"]),
        ),
    ];
    let p = compile(&cfg, &rt()).unwrap();
    let s = |x: &str| p.sources[&c(x)];
    assert_eq!(s("10.0.0.0/8").flags, SRC_ALLOWED);
    assert_eq!(s("10.0.0.0/8").tier, 0);
    assert_eq!(s("10.0.0.0/8").acl_mask, 0);
    assert_eq!(
        (s("10.1.0.0/16").tier, s("10.1.0.0/16").acl_mask),
        (1, 0b01)
    );
    assert_eq!(s("10.1.0.0/16").flags, SRC_ALLOWED, "inherits the allow");
    assert_eq!(
        (s("10.1.2.0/24").tier, s("10.1.2.0/24").acl_mask),
        (2, 0b01)
    );
    assert_eq!(
        (s("10.1.2.128/25").tier, s("10.1.2.128/25").acl_mask),
        (2, 0b11),
        "a narrower ACL entry keeps the tier and the wider ACL"
    );
    assert_eq!(s("192.0.2.0/24").flags, 0);
    assert_eq!(
        (s("192.0.2.0/24").tier, s("192.0.2.0/24").acl_mask),
        (0, 0b10)
    );
    assert_eq!(s("2001:db8::/32").tier, 2);
    assert_eq!(p.sources.len(), 6);
    assert_eq!(p.ports[&(PROTO_TCP, 22)].acl, 1);
    assert_eq!(p.ports[&(PROTO_TCP, 8443)].acl, 2);
}

#[test]
fn runtime_allow_entries_join_the_allowlist() {
    let cfg = base();
    let extra = [c("203.0.113.7")];
    let p = compile(
        &cfg,
        &Runtime {
            allow: &extra,
            ..rt()
        },
    )
    .unwrap();
    assert_eq!(p.sources[&c("203.0.113.7")].flags, SRC_ALLOWED);
}

#[test]
fn per_rule_dry_run_and_udp_slots() {
    let mut cfg = base();
    let mut r = port("dns", &[53, 5353], LimitSet::default(), None);
    r.proto = Proto::Udp;
    r.dry_run = true;
    cfg.ports = vec![r];
    let p = compile(&cfg, &rt()).unwrap();
    assert_eq!(p.ports[&(PROTO_UDP, 53)].flags, PORT_DRY_RUN);
    assert_eq!(p.ports[&(PROTO_UDP, 5353)].class, 1);
    assert!(!p.ports.contains_key(&(PROTO_TCP, 53)));
}

#[test]
fn class_ids_survive_reordering_and_insertion() {
    let mut cfg = base();
    cfg.ports = vec![
        port("ssh", &[22], LimitSet::default(), None),
        port("api", &[443], LimitSet::default(), None),
    ];
    let first = compile(&cfg, &rt()).unwrap();
    assert_eq!(first.classes, vec!["default", "ssh", "api"]);
    cfg.ports = vec![
        port("metrics", &[9100], LimitSet::default(), None),
        port("api", &[443], LimitSet::default(), None),
    ];
    let second = compile(
        &cfg,
        &Runtime {
            previous: Some(&first),
            ..rt()
        },
    )
    .unwrap();
    assert_eq!(second.ports[&(PROTO_TCP, 443)].class, 2, "api keeps its id");
    assert_eq!(
        second.ports[&(PROTO_TCP, 9100)].class,
        1,
        "metrics takes the free one"
    );
    let d = PolicyDiff::between(Some(&first), &second);
    assert_eq!(d.ports.remove, vec![(PROTO_TCP, 22)]);
    assert_eq!(d.ports.upsert.len(), 1);
}

#[test]
fn overrides_layer_over_their_target_and_unknown_targets_fail() {
    let mut cfg = base();
    cfg.tiers = vec![tier("partners", &["198.51.100.0/24"], LimitSet::default())];
    let o = [LimitOverride {
        target: "partners".into(),
        limits: LimitSet {
            packets: per_s(10),
            packet_burst: Some(40),
            ..LimitSet::default()
        },
    }];
    let p = compile(
        &cfg,
        &Runtime {
            overrides: &o,
            ..rt()
        },
    )
    .unwrap();
    assert_eq!(p.limits[&(1, 0)].packets, Gcra::new(10, 1_000_000_000, 40));
    assert_eq!(
        p.limits[&(0, 0)].packets,
        Gcra::new(1000, 1_000_000_000, 2000)
    );
    let bad = [LimitOverride {
        target: "nope".into(),
        limits: LimitSet::default(),
    }];
    assert_eq!(
        compile(
            &cfg,
            &Runtime {
                overrides: &bad,
                ..rt()
            }
        ),
        Err(PolicyError::UnknownTarget("nope".into()))
    );
}

#[test]
fn diff_of_identical_policies_is_empty_and_from_nothing_is_everything() {
    let mut cfg = base();
    cfg.allow = vec![c("10.0.0.0/8")];
    let a = compile(&cfg, &rt()).unwrap();
    let b = compile(&cfg, &rt()).unwrap();
    assert!(PolicyDiff::between(Some(&a), &b).is_empty());
    let full = PolicyDiff::between(None, &a);
    assert_eq!(full.global, Some(a.global));
    assert_eq!(full.sources.upsert.len(), 1);
    assert_eq!(full.limits.upsert.len(), 1);
    cfg.limits.packets = per_s(2000);
    let c2 = compile(&cfg, &rt()).unwrap();
    let d = PolicyDiff::between(Some(&a), &c2);
    assert_eq!(
        d.changes(),
        1,
        "only the default limits slot changed: {d:?}"
    );
}

#[test]
fn too_many_tiers_is_an_error() {
    let mut cfg = base();
    cfg.tiers = (0..64)
        .map(|i| tier(&format!("t{i}"), &[], LimitSet::default()))
        .collect();
    assert!(matches!(
        compile(&cfg, &rt()),
        Err(PolicyError::TooMany { what: "tiers", .. })
    ));
}

#[test]
fn default_bursts_are_one_second_of_rate() {
    assert_eq!(default_burst(&per_s(1000).unwrap()), 1000);
    let slow = Rate {
        count: 5,
        per: Duration::from_secs(3600),
    };
    assert_eq!(default_burst(&slow), 1);
}

mod lpm_equivalence {
    use std::net::{IpAddr, Ipv4Addr};

    use proptest::prelude::*;

    use super::*;

    fn arb_cidr() -> impl Strategy<Value = Cidr> {
        // A small corner of the space, so prefixes nest and overlap often.
        (0u32..=255, 20u8..=32).prop_map(|(low, len)| {
            Cidr::truncating(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (low << 4))), len)
        })
    }

    proptest! {
        /// One longest-prefix lookup in the compiled trie gives the same
        /// answer as asking every list directly.
        #[test]
        fn compiled_trie_answers_like_the_lists(
            allow in prop::collection::vec(arb_cidr(), 0..4),
            t1 in prop::collection::vec(arb_cidr(), 0..4),
            t2 in prop::collection::vec(arb_cidr(), 0..4),
            a1 in prop::collection::vec(arb_cidr(), 0..4),
            a2 in prop::collection::vec(arb_cidr(), 0..4),
            probe in 0u32..=0xfff,
        ) {
            // Overlapping tiers are a config error; keep the generated ones disjoint.
            let t2: Vec<Cidr> = t2.into_iter().filter(|c| !t1.contains(c)).collect();
            let tiers = [(1u16, &t1[..]), (2u16, &t2[..])];
            let acls = [&a1[..], &a2[..]];
            let trie = compile_sources(&allow, &tiers, &acls);
            let addr = Cidr::host(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | probe)));

            let got = trie
                .iter()
                .filter(|(p, _)| p.contains(&addr))
                .max_by_key(|(p, _)| p.prefix_len())
                .map(|(_, v)| *v)
                .unwrap_or_default();

            let allowed = allow.iter().any(|c| c.contains(&addr));
            let tier = tiers
                .iter()
                .flat_map(|(id, cs)| cs.iter().map(move |c| (c.prefix_len(), *id, c)))
                .filter(|(_, _, c)| c.contains(&addr))
                .max_by_key(|(len, _, _)| *len)
                .map_or(0, |(_, id, _)| id);
            let mask = u64::from(a1.iter().any(|c| c.contains(&addr)))
                | u64::from(a2.iter().any(|c| c.contains(&addr))) << 1;
            prop_assert_eq!(got.flags & SRC_ALLOWED != 0, allowed);
            prop_assert_eq!(got.tier, tier);
            prop_assert_eq!(got.acl_mask, mask);
        }
    }
}

#[test]
fn adaptive_tightens_only_the_default_tier() {
    let mut cfg = base();
    cfg.tiers = vec![tier(
        "partners",
        &["198.51.100.0/24"],
        LimitSet {
            packets: per_s(10_000),
            ..LimitSet::default()
        },
    )];
    cfg.ports = vec![port(
        "api",
        &[443],
        LimitSet {
            packets: per_s(300),
            packet_burst: Some(600),
            ..LimitSet::default()
        },
        None,
    )];
    let plain = compile(&cfg, &rt()).unwrap();
    let tight = compile(
        &cfg,
        &Runtime {
            adaptive_divisor: 4,
            ..rt()
        },
    )
    .unwrap();
    // Sources in no tier: every class divided by 4, rates and bursts.
    assert_eq!(
        tight.limits[&(0, 0)].packets,
        Gcra::new(250, 1_000_000_000, 500)
    );
    assert_eq!(tight.limits[&(0, 0)].syns, Gcra::new(50, 4_000_000_000, 25));
    assert_eq!(
        tight.limits[&(0, 1)].packets,
        Gcra::new(75, 1_000_000_000, 150)
    );
    // Partners (including what they inherit from [limits]) are the floor.
    for class in [0, 1] {
        assert_eq!(tight.limits[&(1, class)], plain.limits[&(1, class)]);
    }
    assert_eq!(tight.sources, plain.sources, "the allowlist is untouched");
    // The difference is LIMITS slots only: buckets and ids stay.
    let diff = PolicyDiff::between(Some(&plain), &tight);
    assert_eq!(diff.changes(), 2);
    assert!(PolicyDiff::between(Some(&tight), &plain).changes() == 2);
    // 1 and 0 mean "as configured".
    for d in [0, 1] {
        let p = compile(
            &cfg,
            &Runtime {
                adaptive_divisor: d,
                ..rt()
            },
        )
        .unwrap();
        assert_eq!(p.limits, plain.limits);
    }
}

#[test]
fn tightening_keeps_bursts_usable_and_no_limit_unlimited() {
    let l = ResolvedLimit {
        rate: per_s(100_000),
        burst: 400,
    };
    // 100000/s over 8 is 12500/s; the burst 50 is raised to the tick's 50.
    let t = tightened(l, 8, TICK);
    assert_eq!(t.rate, per_s(12_500));
    assert!(t.burst >= 50, "{t:?}");
    let t = tightened(
        ResolvedLimit {
            rate: per_s(1),
            burst: 1,
        },
        8,
        TICK,
    );
    assert_eq!(
        t.rate,
        Some(Rate {
            count: 1,
            per: Duration::from_secs(8)
        })
    );
    assert_eq!(t.burst, 1);
    assert_eq!(
        tightened(ResolvedLimit::UNLIMITED, 8, TICK),
        ResolvedLimit::UNLIMITED
    );
}
