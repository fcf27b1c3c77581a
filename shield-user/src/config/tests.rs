//! The config parser end to end: text in, a `Config` or positioned errors out.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use proptest::prelude::*;

use super::*;
use crate::net::Cidr;

const TICK: u64 = 4_000_000;

fn ok(text: &str) -> Config {
    parse(text, Path::new("shield.toml"), TICK)
        .unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text, Path::new("shield.toml"), TICK) {
        Ok(c) => panic!("parsed, but errors were expected: {c:?}"),
        Err(e) => e.errors,
    }
}

/// The only error, as `LINE:COL: message`.
fn only(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got: {e:#?}");
    format!("{}:{}: {}", e[0].line, e[0].column, e[0].message)
}

/// Asserts the only error is at `line:col` and mentions `needle`.
#[track_caller]
fn only_at(text: &str, line: usize, col: usize, needle: &str) {
    let got = only(text);
    let prefix = format!("{line}:{col}: ");
    assert!(
        got.starts_with(&prefix) && got.contains(needle),
        "want {prefix}…{needle}…, got {got}"
    );
}

fn rate(count: u64, secs: u64) -> Rate {
    Rate {
        count,
        per: Duration::from_secs(secs),
    }
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

// ---- defaults ----

#[test]
fn empty_file_means_the_documented_defaults() {
    let c = ok("");
    assert!(c.interfaces.is_empty());
    assert_eq!(c.xdp_mode, XdpModeSetting::Auto);
    assert!(!c.dry_run);
    assert_eq!(c.ipv6_prefix, 64);
    assert_eq!(c.control_socket, PathBuf::from("/run/shield/shield.sock"));
    assert_eq!(
        c.metrics_listen,
        "127.0.0.1:9964".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/shield"));
    assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/shield"));
    assert_eq!(c.malformed, MalformedAction::Drop);
    assert!(c.allow.is_empty());
    assert_eq!(
        c.limits,
        LimitSet {
            packets: Some(rate(5000, 1)),
            packet_burst: Some(10_000),
            connections: Some(rate(100, 1)),
            connection_burst: Some(200),
        }
    );
    assert!(c.tiers.is_empty() && c.ports.is_empty() && c.feeds.is_empty());
    assert_eq!(c.crowdsec, None);
    assert_eq!(
        c.autoban,
        AutobanConfig {
            enabled: true,
            after: Duration::from_secs(5),
            ttl: Duration::from_secs(600),
            factor: 2,
            max_ttl: Duration::from_secs(86_400),
        }
    );
}

#[test]
fn the_embedded_default_policy_parses_and_says_what_an_empty_file_does() {
    let parsed = parse(DEFAULT_POLICY, Path::new("default.toml"), TICK);
    assert_eq!(parsed.as_ref().err(), None);
    assert_eq!(parsed.unwrap(), ok(""));
    assert_eq!(default_policy(TICK), ok(""));
    // Even a tick coarse enough to fail its bursts yields the policy.
    assert_eq!(default_policy(10 * 1_000_000_000), ok(""));
    assert!(parse(DEFAULT_POLICY, Path::new("x"), 10 * 1_000_000_000).is_err());
}

#[test]
fn limits_keys_left_out_fall_back_one_by_one() {
    let c = ok("[limits]\npackets = \"1000/s\"\n");
    assert_eq!(c.limits.packets, Some(rate(1000, 1)));
    assert_eq!(c.limits.packet_burst, Some(10_000));
    assert_eq!(c.limits.connections, Some(rate(100, 1)));
    assert_eq!(c.limits.connection_burst, Some(200));

    let c = ok("[limits]\nconnections = \"unlimited\"\n");
    assert_eq!(c.limits.connections.map(|r| r.count), Some(0));
    assert_eq!(c.limits.packets, Some(rate(5000, 1)));
}

// ---- a full config ----

const FULL: &str = r#"
interfaces = ["eth0", "ens5"]
xdp_mode = "native"
dry_run = true
ipv6_prefix = 56
control_socket = "/run/shield/a.sock"
metrics_listen = "[::1]:9100"
state_dir = "/srv/shield"
pin_dir = "/sys/fs/bpf/shield-a"
malformed = "pass"

[allow]
cidrs = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]

[limits]
packets = "1000/s"
packet_burst = 2000
connections = "50/s"
connection_burst = 100

[[tier]]
name = "partners"
cidrs = ["198.51.100.0/24"]
packets = "10000/s"
packet_burst = 20000
connections = "500/s"
connection_burst = 1000

[[tier]]
name = "one-partner-host"
cidrs = ["198.51.100.7/32"]
packets = "unlimited"

[[port]]
name = "ssh"
proto = "tcp"
ports = [22]
connections = "5/min"
allow_from = ["10.0.0.0/8"]

[[port]]
name = "api"
proto = "tcp"
ports = [443, "8000-8002"]
packets = "2000/s"
dry_run = true

[[port]]
name = "dns"
proto = "udp"
ports = [53]
packets = "100/s"

[[feed]]
name = "spamhaus-drop"
url = "https://www.spamhaus.org/drop/drop.txt"
format = "spamhaus"
refresh = "12h"
allow_broad = true

[[feed]]
name = "ipsum"
path = "/var/lib/shield/ipsum.txt"
format = "ipsum"
min_score = 3
max_bytes = "16MiB"

[[feed]]
name = "internal"
url = "http://feeds.internal/block.txt"
allow_http = true
max_bytes = 1048576

[crowdsec]
lapi_url = "http://127.0.0.1:8080"
api_key_file = "/etc/shield/crowdsec.key"
poll = "30s"
machine_id = "api-host-1"
password_file = "/etc/shield/crowdsec.pw"

[autoban]
enabled = false
after = "10s"
ttl = "1h30m"
factor = 3
max_ttl = "2d"
"#;

#[test]
fn a_full_config() {
    let c = ok(FULL);
    assert_eq!(c.interfaces, ["eth0", "ens5"]);
    assert_eq!(c.xdp_mode, XdpModeSetting::Native);
    assert!(c.dry_run);
    assert_eq!(c.ipv6_prefix, 56);
    assert_eq!(c.control_socket, PathBuf::from("/run/shield/a.sock"));
    assert_eq!(
        c.metrics_listen,
        "[::1]:9100".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.state_dir, PathBuf::from("/srv/shield"));
    assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/shield-a"));
    assert_eq!(c.malformed, MalformedAction::Pass);
    assert_eq!(
        c.allow,
        [
            cidr("10.0.0.0/8"),
            cidr("2001:db8::/32"),
            cidr("192.0.2.7/32")
        ]
    );
    assert_eq!(c.limits.packets, Some(rate(1000, 1)));
    assert_eq!(c.limits.connection_burst, Some(100));

    assert_eq!(c.tiers.len(), 2);
    assert_eq!(c.tiers[0].name, "partners");
    assert_eq!(c.tiers[0].cidrs, [cidr("198.51.100.0/24")]);
    assert_eq!(
        c.tiers[0].limits,
        LimitSet {
            packets: Some(rate(10_000, 1)),
            packet_burst: Some(20_000),
            connections: Some(rate(500, 1)),
            connection_burst: Some(1000),
        }
    );
    // Keys a tier leaves out stay `None`: inherited, not copied.
    assert_eq!(
        c.tiers[1].limits,
        LimitSet {
            packets: Some(rate(0, 1)),
            ..LimitSet::default()
        }
    );

    let ssh = &c.ports[0];
    assert_eq!((ssh.name.as_str(), ssh.proto), ("ssh", Proto::Tcp));
    assert_eq!(ssh.ports, [22]);
    assert_eq!(ssh.limits.connections, Some(rate(5, 60)));
    assert_eq!(ssh.limits.packets, None);
    assert_eq!(ssh.allow_from, Some(vec![cidr("10.0.0.0/8")]));
    assert!(!ssh.dry_run);
    let api = &c.ports[1];
    assert_eq!(api.ports, [443, 8000, 8001, 8002]);
    assert_eq!(api.allow_from, None);
    assert!(api.dry_run);
    assert_eq!(c.ports[2].proto, Proto::Udp);

    let drop = &c.feeds[0];
    assert_eq!(
        drop.source,
        FeedSource::Url("https://www.spamhaus.org/drop/drop.txt".into())
    );
    assert_eq!(drop.format, FeedFormat::Spamhaus);
    assert_eq!(drop.refresh, Duration::from_secs(12 * 3600));
    assert!(drop.allow_broad && !drop.allow_http);
    assert_eq!(drop.min_score, None);
    assert_eq!(drop.max_bytes, 64 << 20);
    let ipsum = &c.feeds[1];
    assert_eq!(
        ipsum.source,
        FeedSource::Path("/var/lib/shield/ipsum.txt".into())
    );
    assert_eq!(
        (ipsum.format, ipsum.min_score),
        (FeedFormat::Ipsum, Some(3))
    );
    assert_eq!(ipsum.refresh, Duration::from_secs(3600));
    assert_eq!(ipsum.max_bytes, 16 << 20);
    let internal = &c.feeds[2];
    assert!(internal.allow_http);
    assert_eq!(internal.format, FeedFormat::Auto);
    assert_eq!(internal.max_bytes, 1 << 20);

    assert_eq!(
        c.crowdsec,
        Some(CrowdsecConfig {
            lapi_url: "http://127.0.0.1:8080".into(),
            api_key_file: "/etc/shield/crowdsec.key".into(),
            poll: Duration::from_secs(30),
            machine_id: Some("api-host-1".into()),
            password_file: Some("/etc/shield/crowdsec.pw".into()),
        })
    );
    assert_eq!(
        c.autoban,
        AutobanConfig {
            enabled: false,
            after: Duration::from_secs(10),
            ttl: Duration::from_secs(5400),
            factor: 3,
            max_ttl: Duration::from_secs(2 * 86_400),
        }
    );
}

#[test]
fn the_design_documents_example_parses() {
    let c = ok(r#"
interfaces = ["eth0"]
xdp_mode = "auto"
dry_run = false
ipv6_prefix = 64
control_socket = "/run/shield/shield.sock"
metrics_listen = "127.0.0.1:9964"
state_dir = "/var/lib/shield"
pin_dir = "/sys/fs/bpf/shield"
malformed = "drop"
[allow]
cidrs = ["10.0.0.0/8"]
[limits]
packets = "1000/s"
packet_burst = 2000
connections = "50/s"
connection_burst = 100
[[tier]]
name = "partners"
cidrs = ["198.51.100.0/24"]
packets = "10000/s"
packet_burst = 20000
connections = "500/s"
connection_burst = 1000
[[port]]
name = "ssh"
proto = "tcp"
ports = [22]
connections = "5/min"
allow_from = ["10.0.0.0/8"]
[[feed]]
name = "spamhaus-drop"
url = "https://www.spamhaus.org/drop/drop.txt"
format = "auto"
refresh = "1h"
[crowdsec]
lapi_url = "http://127.0.0.1:8080"
api_key_file = "/etc/shield/crowdsec.key"
poll = "10s"
[autoban]
enabled = true
after = "5s"
ttl = "10m"
factor = 2
max_ttl = "24h"
"#);
    assert_eq!(c.tiers[0].name, "partners");
    assert_eq!(c.ports[0].name, "ssh");
    assert_eq!(c.feeds[0].name, "spamhaus-drop");
}

// ---- positions ----

#[test]
fn syntax_errors_are_one_error_with_a_position() {
    only_at("a = 1\nb = \n", 2, 5, "invalid TOML");
    only_at(
        "xdp_mode = \"auto\"\nxdp_mode = \"skb\"\n",
        2,
        1,
        "duplicate key",
    );
    // Where the closing quote was expected.
    only_at("[limits]\npackets = \"1/s\n", 2, 15, "invalid basic string");
}

#[test]
fn unknown_keys_point_at_the_key_and_suggest_the_closest() {
    assert_eq!(
        only("intefaces = [\"eth0\"]\n"),
        "1:1: unknown key `intefaces` in the top level; did you mean `interfaces`?"
    );
    assert_eq!(
        only("[limits]\n  packet_brust = 10\n"),
        "2:3: unknown key `packet_brust` in [limits]; did you mean `packet_burst`?"
    );
    // Far from every key: the message lists them instead.
    only_at(
        "[autoban]\nbandwidth = 1\n",
        2,
        1,
        "known keys: enabled, after, ttl",
    );
    // A limit key at the top level says where it belongs.
    only_at("packets = \"10/s\"\n", 1, 1, "`packets` goes in [limits]");
    only_at("[tiers]\n", 1, 2, "did you mean `tier`?");
}

#[test]
fn unknown_keys_are_errors_in_every_table() {
    let cases = [
        ("[allow]\ncidr = []\n", "in [allow]; did you mean `cidrs`?"),
        (
            "[[tier]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\npacket = \"1/s\"\n",
            "in [[tier]]; did you mean `packets`?",
        ),
        (
            "[[port]]\nname = \"a\"\nproto = \"tcp\"\nports = [1]\nallowfrom = []\n",
            "in [[port]]; did you mean `allow_from`?",
        ),
        (
            "[[feed]]\nname = \"a\"\npath = \"/x\"\nrefesh = \"1h\"\n",
            "in [[feed]]; did you mean `refresh`?",
        ),
        (
            "[crowdsec]\napi_key_file = \"/k\"\nlapi = \"http://x\"\n",
            "in [crowdsec]",
        ),
        (
            "[autoban]\nttls = \"1h\"\n",
            "in [autoban]; did you mean `ttl`?",
        ),
    ];
    for (text, want) in cases {
        let got = only(text);
        assert!(got.contains(want), "{text:?}: {got}");
    }
}

#[test]
fn wrong_types_name_the_expected_shape_and_the_value_found() {
    assert_eq!(
        only("[limits]\npackets = 1000\n"),
        "2:11: `packets`: expected a string like \"1000/s\", found integer 1000"
    );
    assert_eq!(
        only("[limits]\npacket_burst = \"2000\"\n"),
        "2:16: `packet_burst`: expected an integer like 2000, found string \"2000\""
    );
    assert_eq!(
        only("dry_run = \"yes\"\n"),
        "1:11: `dry_run`: expected true or false, found string \"yes\""
    );
    assert_eq!(
        only("ipv6_prefix = 64.0\n"),
        "1:15: `ipv6_prefix`: expected an integer like 64, found float 64.0"
    );
    assert_eq!(
        only("[autoban]\nttl = 600\n"),
        "2:7: `ttl`: expected a string like \"30s\", found integer 600"
    );
    assert_eq!(
        only("interfaces = \"eth0\"\n"),
        "1:14: `interfaces`: expected a list of strings like [\"eth0\"], found string \"eth0\""
    );
    only_at(
        "interfaces = [\"eth0\", 7]\n",
        1,
        23,
        "found integer 7 in the list",
    );
    only_at("limits = 5\n", 1, 10, "expected a table, written [limits]");
    only_at(
        "[tier]\nname = \"a\"\n",
        1,
        1,
        "write [[tier]] (two brackets), not [tier]",
    );
    only_at("tier = [1]\n", 1, 9, "found integer 1 in the list");
    only_at("[[autoban]]\n", 1, 1, "expected a table, written [autoban]");
}

#[test]
fn every_error_in_the_file_is_reported_in_file_order() {
    let text = r#"xdp_mode = "fast"
ipv6_prefix = 8
[limits]
packets = "lots"
[[tier]]
name = "Partners"
cidrs = ["10.1.2.3/8"]
[[port]]
name = "ssh"
proto = "icmp"
ports = [0]
[[feed]]
name = "f"
url = "ftp://example.com/x"
[autoban]
factor = 0
"#;
    let got: Vec<(usize, usize)> = errors(text).iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(
        got,
        [
            (1, 12),
            (2, 15),
            (4, 11),
            (6, 8),
            (7, 10),
            (10, 9),
            (11, 10),
            (14, 7),
            (16, 10),
        ]
    );
    let text_errors = parse(text, Path::new("/etc/shield/shield.toml"), TICK)
        .unwrap_err()
        .to_string();
    let lines: Vec<&str> = text_errors.lines().collect();
    assert_eq!(lines.len(), 9);
    assert_eq!(
        lines[0],
        "/etc/shield/shield.toml:1:12: `xdp_mode`: \"fast\" is not one of auto, native, skb"
    );
    assert_eq!(
        lines[4],
        "/etc/shield/shield.toml:7:10: `cidrs`: `10.1.2.3/8` has host bits set; did you mean `10.0.0.0/8`?"
    );
}

// ---- top-level keys ----

#[test]
fn interfaces() {
    assert_eq!(
        only("interfaces = []\n"),
        "1:14: `interfaces`: an empty interface list: list at least one interface, or omit the key and pass --iface"
    );
    only_at(
        "interfaces = [\"eth0\", \"a-very-long-name0\"]\n",
        1,
        23,
        "at most 15",
    );
    only_at("interfaces = [\"eth/0\"]\n", 1, 15, "cannot contain '/'");
    only_at("interfaces = [\"eth 0\"]\n", 1, 15, "cannot contain ' '");
    only_at("interfaces = [\"\"]\n", 1, 15, "cannot be empty");
    only_at(
        "interfaces = [\"..\"]\n",
        1,
        15,
        "not a valid interface name",
    );
    only_at(
        "interfaces = [\"eth0\", \"eth0\"]\n",
        1,
        23,
        "already listed",
    );
    // 15 bytes is still fine.
    assert_eq!(ok("interfaces = [\"abcdefghijklmno\"]").interfaces.len(), 1);
}

#[test]
fn enumerations_suggest_the_near_miss() {
    assert_eq!(
        only("xdp_mode = \"nativ\"\n"),
        "1:12: `xdp_mode`: \"nativ\" is not one of auto, native, skb; did you mean `native`?"
    );
    only_at("malformed = \"Drop\"\n", 1, 13, "did you mean `drop`?");
    assert_eq!(ok("xdp_mode = \"skb\"").xdp_mode, XdpModeSetting::Skb);
}

#[test]
fn ipv6_prefix_range() {
    assert_eq!(ok("ipv6_prefix = 16").ipv6_prefix, 16);
    assert_eq!(ok("ipv6_prefix = 128").ipv6_prefix, 128);
    only_at("ipv6_prefix = 15\n", 1, 15, "between 16 and 128");
    only_at("ipv6_prefix = 129\n", 1, 15, "between 16 and 128");
    only_at("ipv6_prefix = -64\n", 1, 15, "-64 is out of range");
    only_at(
        "ipv6_prefix = 99999999999999999999999999999999999999999\n",
        1,
        15,
        "far too large",
    );
}

#[test]
fn addresses_and_paths() {
    only_at(
        "metrics_listen = \"localhost:9964\"\n",
        1,
        18,
        "not a socket address",
    );
    only_at(
        "metrics_listen = \"127.0.0.1\"\n",
        1,
        18,
        "not a socket address",
    );
    only_at("state_dir = \"\"\n", 1, 13, "cannot be empty");
    only_at("pin_dir = \"/a\\u0000b\"\n", 1, 11, "NUL");
    let long = format!("control_socket = \"/{}\"\n", "s".repeat(107));
    only_at(&long, 1, 18, "at most 107 bytes");
    let fits = format!("control_socket = \"/{}\"\n", "s".repeat(106));
    assert_eq!(ok(&fits).control_socket.as_os_str().len(), 107);
}

#[test]
fn prefixes_must_be_networks() {
    only_at(
        "[allow]\ncidrs = [\"10.0.0.0/8\", \"192.168.1.1/24\"]\n",
        2,
        24,
        "`192.168.1.1/24` has host bits set; did you mean `192.168.1.0/24`?",
    );
    only_at(
        "[allow]\ncidrs = [\"10.0.0.0/33\"]\n",
        2,
        10,
        "too long for IPv4",
    );
    only_at(
        "[allow]\ncidrs = [\"example.com\"]\n",
        2,
        10,
        "not an IP address or CIDR",
    );
    only_at(
        "[allow]\ncidrs = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n",
        2,
        24,
        "listed twice (first at 2:10)",
    );
}

// ---- rates, bursts and the tick ----

#[test]
fn rates_in_the_file() {
    let c = ok("[limits]\npackets = \"300/min\"\nconnections = \"7/h\"\n");
    assert_eq!(c.limits.packets, Some(rate(300, 60)));
    assert_eq!(c.limits.connections, Some(rate(7, 3600)));
    only_at("[limits]\npackets = \"0/s\"\n", 2, 11, "admits nothing");
    only_at(
        "[limits]\npackets = \"10/day\"\n",
        2,
        11,
        "unknown unit `day`",
    );
}

#[test]
fn bursts_are_at_least_one() {
    only_at("[limits]\npacket_burst = 0\n", 2, 16, "at least 1");
    only_at("[limits]\nconnection_burst = -3\n", 2, 20, "at least 1");
}

#[test]
fn bursts_below_a_ticks_worth_are_rejected() {
    // 100000/s is one packet every 10 us: a 4 ms tick holds 400 of them.
    assert_eq!(
        only("[limits]\npackets = \"100000/s\"\npacket_burst = 399\n"),
        "3:16: `packet_burst` = 399 is too small for packets = \"100000/s\": bursts below 400 \
         cannot hold the rate with the kernel's 4 ms clock tick; raise it to at least 400"
    );
    ok("[limits]\npackets = \"100000/s\"\npacket_burst = 400\n");

    // A tier's burst is judged against the rate it inherits from [limits].
    let text = "[limits]\nconnections = \"1000/s\"\nconnection_burst = 2\n\
                [[tier]]\nname = \"t\"\ncidrs = [\"10.0.0.0/8\"]\nconnection_burst = 3\n";
    let e = errors(text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (3, 20));
    assert_eq!((e[1].line, e[1].column), (7, 20));
    assert!(
        e[1].message
            .contains("connections = \"1000/s\" (inherited from [limits])")
            && e[1].message.contains("bursts below 4 "),
        "{}",
        e[1].message
    );

    // Its own rate, when it has one, is what counts.
    ok("[[tier]]\nname = \"t\"\ncidrs = [\"10.0.0.0/8\"]\npackets = \"10/s\"\npacket_burst = 1\n");
    // A port rule's too.
    only_at(
        "[[port]]\nname = \"p\"\nproto = \"udp\"\nports = [53]\npackets = \"1000000/s\"\npacket_burst = 100\n",
        6,
        16,
        "bursts below 4000",
    );
    // Unlimited needs no burst to speak of.
    ok("[limits]\npackets = \"unlimited\"\npacket_burst = 1\n");
    // Bursts that were not written are not judged: only what the operator
    // wrote can be pointed at.
    ok("[[tier]]\nname = \"t\"\ncidrs = [\"10.0.0.0/8\"]\npackets = \"10000000/s\"\n");
    // The tick decides.
    assert!(
        parse(
            "[limits]\npackets = \"100000/s\"\npacket_burst = 399\n",
            Path::new("x"),
            1_000_000
        )
        .is_ok()
    );
    let e = parse(
        "[limits]\npackets = \"1000/s\"\npacket_burst = 5\n",
        Path::new("x"),
        10_000_000,
    )
    .unwrap_err();
    assert!(e.to_string().contains("10 ms clock tick"), "{e}");
}

// ---- tiers ----

const TIER_A: &str = "[[tier]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\n";

#[test]
fn tiers_need_a_name_and_prefixes() {
    only_at(
        "[[tier]]\ncidrs = [\"10.0.0.0/8\"]\n",
        1,
        1,
        "has no `name`",
    );
    only_at("[[tier]]\nname = \"a\"\n", 1, 1, "has no `cidrs`");
    only_at(
        "[[tier]]\nname = \"a\"\ncidrs = []\n",
        3,
        9,
        "matches no source",
    );
}

#[test]
fn names_are_short_lowercase_words() {
    assert_eq!(
        only("[[tier]]\nname = \"Big Partners\"\ncidrs = [\"10.0.0.0/8\"]\n"),
        "2:8: `name`: \"Big Partners\" may only use a-z, 0-9, `_` and `-` (names become metric \
         labels and shieldctl arguments); did you mean \"big-partners\"?"
    );
    only_at(
        "[[tier]]\nname = \"\"\ncidrs = [\"10.0.0.0/8\"]\n",
        2,
        8,
        "cannot be empty",
    );
    let long = format!("[[feed]]\nname = \"{}\"\npath = \"/x\"\n", "a".repeat(65));
    only_at(&long, 2, 8, "at most 64");
    ok("[[feed]]\nname = \"a_b-9\"\npath = \"/x\"\n");
}

#[test]
fn names_are_unique() {
    let text = format!("{TIER_A}[[tier]]\nname = \"a\"\ncidrs = [\"10.1.0.0/16\"]\n");
    only_at(
        &text,
        5,
        8,
        "another [[tier]] is already named `a` (line 2)",
    );
    only_at(
        "[[feed]]\nname = \"f\"\npath = \"/a\"\n[[feed]]\nname = \"f\"\npath = \"/b\"\n",
        5,
        8,
        "another [[feed]] is already named `f`",
    );
    // Tier and port names share shieldctl's namespace.
    let text = format!("{TIER_A}[[port]]\nname = \"a\"\nproto = \"tcp\"\nports = [22]\n");
    only_at(&text, 5, 8, "already the name of a [[tier]] (line 2)");
    // Feeds have a namespace of their own.
    ok(&format!("{TIER_A}[[feed]]\nname = \"a\"\npath = \"/a\"\n"));
}

#[test]
fn the_same_prefix_in_two_tiers_is_an_error_but_nesting_is_fine() {
    let text =
        format!("{TIER_A}[[tier]]\nname = \"b\"\ncidrs = [\"192.0.2.0/24\", \"10.0.0.0/8\"]\n");
    only_at(
        &text,
        6,
        26,
        "`10.0.0.0/8` is already in [[tier]] `a` (line 3)",
    );
    let c = ok(&format!(
        "{TIER_A}[[tier]]\nname = \"b\"\ncidrs = [\"10.1.0.0/16\", \"10.1.2.3\"]\n"
    ));
    assert_eq!(c.tiers[1].cidrs.len(), 2);
}

#[test]
fn at_most_63_tiers() {
    let tiers = |n: usize| -> String {
        (0..n)
            .map(|i| format!("[[tier]]\nname = \"t{i}\"\ncidrs = [\"10.{i}.0.0/16\"]\n"))
            .collect()
    };
    assert_eq!(ok(&tiers(63)).tiers.len(), 63);
    // The 64th header is on line 3 * 63 + 1.
    only_at(
        &tiers(64),
        190,
        1,
        "too many tiers: the kernel's tables hold at most 63",
    );
}

// ---- port rules ----

fn port_rule(name: &str, proto: &str, ports: &str) -> String {
    format!("[[port]]\nname = \"{name}\"\nproto = \"{proto}\"\nports = {ports}\n")
}

#[test]
fn ports_ranges_and_their_limits() {
    let c = ok(&port_rule("a", "tcp", "[\"8000-8003\", 22, \"443\"]"));
    assert_eq!(c.ports[0].ports, [8000, 8001, 8002, 8003, 22, 443]);
    assert_eq!(
        ok(&port_rule("a", "tcp", "[\"1-65535\"]")).ports[0]
            .ports
            .len(),
        65_535
    );
    only_at(
        &port_rule("a", "tcp", "[0]"),
        4,
        10,
        "port 0 is out of range; ports are 1 to 65535",
    );
    only_at(
        &port_rule("a", "tcp", "[65536]"),
        4,
        10,
        "port 65536 is out of range",
    );
    only_at(
        &port_rule("a", "tcp", "[-22]"),
        4,
        10,
        "port -22 is out of range",
    );
    only_at(
        &port_rule("a", "tcp", "[\"0-10\"]"),
        4,
        10,
        "port 0 is out of range",
    );
    only_at(
        &port_rule("a", "tcp", "[\"8099-8000\"]"),
        4,
        10,
        "runs backwards; did you mean \"8000-8099\"?",
    );
    only_at(
        &port_rule("a", "tcp", "[\"http\"]"),
        4,
        10,
        "is not a port like 443",
    );
    only_at(&port_rule("a", "tcp", "[22.5]"), 4, 10, "found float 22.5");
    only_at(&port_rule("a", "tcp", "[]"), 4, 9, "at least one port");
    only_at(
        &port_rule("a", "tcp", "22"),
        4,
        9,
        "expected a list like [443",
    );
}

#[test]
fn proto_is_tcp_or_udp() {
    only_at(
        &port_rule("a", "icmp", "[1]"),
        3,
        9,
        "\"icmp\" has no ports",
    );
    only_at(&port_rule("a", "TCP", "[1]"), 3, 9, "did you mean `tcp`?");
    only_at(
        "[[port]]\nname = \"a\"\nports = [1]\n",
        1,
        1,
        "has no `proto`",
    );
    only_at(
        "[[port]]\nname = \"a\"\nproto = \"tcp\"\n",
        1,
        1,
        "has no `ports`",
    );
    // SYN limits mean nothing to UDP.
    only_at(
        &format!("{}connections = \"5/s\"\n", port_rule("a", "udp", "[53]")),
        5,
        1,
        "a udp rule has none",
    );
}

#[test]
fn a_port_belongs_to_one_rule_per_protocol() {
    let text = format!(
        "{}{}",
        port_rule("a", "tcp", "[22, \"8000-8099\"]"),
        port_rule("b", "tcp", "[\"8050-8060\", 22]")
    );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(
        format!("{}:{}: {}", e[0].line, e[0].column, e[0].message),
        "8:10: tcp ports 8050-8060 are already claimed by [[port]] `a` (line 1); a port can be \
         in one rule per protocol"
    );
    assert_eq!((e[1].line, e[1].column), (8, 23));
    assert!(
        e[1].message
            .starts_with("tcp port 22 is already claimed by [[port]] `a`")
    );

    // Partly overlapping ranges say how much overlaps.
    let text = format!(
        "{}{}",
        port_rule("a", "tcp", "[\"8000-8009\"]"),
        port_rule("b", "tcp", "[\"8005-8020\"]")
    );
    only_at(
        &text,
        8,
        10,
        "5 of these tcp ports (8005-8009) are already claimed",
    );

    // Within one rule.
    only_at(
        &port_rule("a", "tcp", "[22, \"20-25\"]"),
        4,
        14,
        "already listed in this rule",
    );

    // The same port for the other protocol is a different destination.
    let c = ok(&format!(
        "{}{}",
        port_rule("a", "tcp", "[53]"),
        port_rule("b", "udp", "[53]")
    ));
    assert_eq!(c.ports.len(), 2);
}

#[test]
fn at_most_63_port_rules() {
    let rules = |n: usize| -> String {
        (0..n)
            .map(|i| port_rule(&format!("p{i}"), "tcp", &format!("[{}]", i + 1)))
            .collect()
    };
    assert_eq!(ok(&rules(63)).ports.len(), 63);
    only_at(&rules(64), 4 * 63 + 1, 1, "too many port rules");
}

#[test]
fn allow_from_makes_an_acl() {
    let c = ok(&format!(
        "{}allow_from = []\n",
        port_rule("a", "tcp", "[11211]")
    ));
    assert_eq!(c.ports[0].allow_from, Some(vec![]));
    only_at(
        &format!(
            "{}allow_from = [\"10.0.0.1/8\"]\n",
            port_rule("a", "tcp", "[22]")
        ),
        5,
        15,
        "did you mean `10.0.0.0/8`?",
    );
}

// ---- feeds ----

fn feed(body: &str) -> String {
    format!("[[feed]]\nname = \"f\"\n{body}")
}

#[test]
fn a_feed_has_exactly_one_source() {
    only_at(&feed(""), 1, 1, "has no source");
    only_at(
        &feed("url = \"https://example.com/x\"\npath = \"/x\"\n"),
        4,
        1,
        "`url` or `path`, not both",
    );
    only_at("[[feed]]\npath = \"/x\"\n", 1, 1, "has no `name`");
}

#[test]
fn feed_urls_are_https_unless_http_is_allowed() {
    only_at(
        &feed("url = \"http://example.com/x\"\n"),
        3,
        7,
        "plain http, which anyone on the path can tamper with",
    );
    let c = ok(&feed("url = \"http://example.com/x\"\nallow_http = true\n"));
    assert!(c.feeds[0].allow_http);
    only_at(
        &feed("url = \"ftp://example.com/x\"\n"),
        3,
        7,
        "not an https:// URL",
    );
    only_at(&feed("url = \"https:///x\"\n"), 3, 7, "not a valid URL");
    only_at(
        &feed("url = \"https://exa mple.com/\"\n"),
        3,
        7,
        "not a valid URL",
    );
}

#[test]
fn feed_settings() {
    only_at(
        &feed("path = \"/x\"\nformat = \"csv\"\n"),
        4,
        10,
        "not one of auto, plain",
    );
    only_at(
        &feed("path = \"/x\"\nformat = \"plain\"\nmin_score = 3\n"),
        5,
        13,
        "only applies to the ipsum format, and this feed's format is \"plain\"",
    );
    // Auto may turn out to be ipsum.
    assert_eq!(
        ok(&feed("path = \"/x\"\nmin_score = 2\n")).feeds[0].min_score,
        Some(2)
    );
    only_at(
        &feed("path = \"/x\"\nrefresh = \"9s\"\n"),
        4,
        11,
        "too often",
    );
    assert_eq!(
        ok(&feed("path = \"/x\"\nrefresh = \"10s\"\n")).feeds[0].refresh,
        Duration::from_secs(10)
    );
    only_at(
        &feed("path = \"/x\"\nmax_bytes = 0\n"),
        4,
        13,
        "must be at least 1",
    );
    only_at(
        &feed("path = \"/x\"\nmax_bytes = \"0MiB\"\n"),
        4,
        13,
        "more than zero",
    );
    only_at(
        &feed("path = \"/x\"\nmax_bytes = \"lots\"\n"),
        4,
        13,
        "not a size",
    );
    only_at(
        &feed("path = \"/x\"\nallow_broad = 1\n"),
        4,
        15,
        "expected true or false",
    );
}

#[test]
fn at_most_255_feeds() {
    let feeds = |n: usize| -> String {
        (0..n)
            .map(|i| format!("[[feed]]\nname = \"f{i}\"\npath = \"/f\"\n"))
            .collect()
    };
    assert_eq!(ok(&feeds(255)).feeds.len(), 255);
    only_at(&feeds(256), 3 * 255 + 1, 1, "too many feeds");
}

// ---- crowdsec and autoban ----

#[test]
fn crowdsec() {
    let c = ok("[crowdsec]\napi_key_file = \"/etc/shield/cs.key\"\n");
    let cs = c.crowdsec.unwrap();
    assert_eq!(cs.lapi_url, "http://127.0.0.1:8080");
    assert_eq!(cs.poll, Duration::from_secs(10));
    assert_eq!((cs.machine_id, cs.password_file), (None, None));

    only_at("[crowdsec]\n", 1, 1, "needs `api_key_file`");
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\nlapi_url = \"tcp://127.0.0.1:8080\"\n",
        3,
        12,
        "not an http:// or https:// URL",
    );
    ok("[crowdsec]\napi_key_file = \"/k\"\nlapi_url = \"https://lapi.example:8080/\"\n");
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\nmachine_id = \"h1\"\n",
        3,
        1,
        "`machine_id` needs `password_file` too",
    );
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\npassword_file = \"/p\"\n",
        3,
        1,
        "`password_file` needs `machine_id` too",
    );
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\npoll = \"0s\"\n",
        3,
        8,
        "longer than zero",
    );
}

#[test]
fn autoban() {
    only_at(
        "[autoban]\nafter = \"0s\"\n",
        2,
        9,
        "`after` must be longer than zero",
    );
    only_at(
        "[autoban]\nttl = \"0s\"\n",
        2,
        7,
        "`ttl` must be longer than zero",
    );
    only_at(
        "[autoban]\nfactor = 0\n",
        2,
        10,
        "0 is out of range; it must be at least 1",
    );
    only_at(
        "[autoban]\nmax_ttl = \"5m\"\n",
        2,
        11,
        "`max_ttl` = \"5m\" is shorter than the default `ttl` (10m)",
    );
    assert_eq!(ok("[autoban]\nfactor = 1\n").autoban.factor, 1);
    only_at(
        "[autoban]\nttl = \"2h\"\nmax_ttl = \"1h\"\n",
        3,
        11,
        "`max_ttl` = \"1h\" is shorter than `ttl` = \"2h\"",
    );
    only_at(
        "[autoban]\nttl = \"2d\"\n",
        2,
        7,
        "`ttl` = \"2d\" is longer than the default `max_ttl` (1d)",
    );
    assert_eq!(
        ok("[autoban]\nttl = \"1h\"\nmax_ttl = \"1h\"\n")
            .autoban
            .max_ttl,
        Duration::from_secs(3600)
    );
}

// ---- files ----

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("shield-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "interfaces = [\"eth0\"]\n").unwrap();
    assert_eq!(load(&good, TICK).unwrap().interfaces, ["eth0"]);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "\nipv6_prefix = 1\n").unwrap();
    let e = load(&bad, TICK).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:2:15: ", bad.display())),
        "{e}"
    );

    let missing = dir.join("missing.toml");
    let e = load(&missing, TICK).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].line, 0);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}: cannot read the config file: ",
            missing.display()
        )) && shown.contains("No such file")
            && shown.contains("embedded default policy"),
        "{shown}"
    );

    let e = load(&dir, TICK).unwrap_err().to_string();
    assert!(e.contains("not its directory"), "{e}");

    let binary = dir.join("binary.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let e = load(&binary, TICK).unwrap_err().to_string();
    assert!(e.contains("UTF-8"), "{e}");

    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- robustness ----

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!("a = {}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = errors(&deep);
    assert!(e.len() == 1 && e[0].message.contains("recursion"), "{e:?}");
    let tables = format!("a = {}{}", "{ b = ".repeat(50_000), "}".repeat(50_000));
    assert!(parse(&tables, Path::new("x"), TICK).is_err());
}

/// Values of every type, some valid somewhere, most not.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"1000/s\"".to_string()),
        Just("\"unlimited\"".to_string()),
        Just("\"10.0.0.0/8\"".to_string()),
        Just("\"8000-8099\"".to_string()),
        Just("\"1h30m\"".to_string()),
        Just("\"https://example.com/x\"".to_string()),
        Just("[]".to_string()),
        Just("[\"eth0\", 22, \"1-65535\"]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("1979-05-27".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
    ]
}

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "interfaces",
            "xdp_mode",
            "dry_run",
            "ipv6_prefix",
            "control_socket",
            "metrics_listen",
            "state_dir",
            "pin_dir",
            "malformed",
            "cidrs",
            "packets",
            "packet_burst",
            "connections",
            "connection_burst",
            "name",
            "proto",
            "ports",
            "allow_from",
            "url",
            "path",
            "format",
            "refresh",
            "allow_http",
            "min_score",
            "max_bytes",
            "lapi_url",
            "api_key_file",
            "poll",
            "machine_id",
            "password_file",
            "enabled",
            "after",
            "ttl",
            "factor",
            "max_ttl",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,10}",
    ]
}

fn any_header() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "[allow]",
        "[limits]",
        "[[tier]]",
        "[[port]]",
        "[[feed]]",
        "[crowdsec]",
        "[autoban]",
        "[tier]",
        "[[limits]]",
    ])
    .prop_map(str::to_string)
}

/// A document of sections made of known (and unknown) keys with values of
/// any type, to reach deep into the walk.
fn any_document() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            any_header(),
            prop::collection::vec((any_key(), any_value()), 0..6),
        ),
        0..8,
    )
    .prop_map(|sections| {
        let mut out = String::new();
        for (header, pairs) in sections {
            out.push_str(&header);
            out.push('\n');
            for (k, v) in pairs {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    })
}

proptest! {
    #[test]
    fn garbage_never_panics(text in "\\PC{0,200}", tick in any::<u64>()) {
        let _ = parse(&text, Path::new("x"), tick);
    }

    #[test]
    fn structured_garbage_never_panics_and_errors_are_placed(
        text in any_document(),
        tick in prop_oneof![Just(TICK), any::<u64>()],
    ) {
        let lines = text.lines().count().max(1);
        if let Err(e) = parse(&text, Path::new("x"), tick) {
            prop_assert!(!e.errors.is_empty());
            for err in &e.errors {
                prop_assert!(err.line >= 1 && err.line <= lines + 1, "{err} in\n{text}");
                prop_assert!(err.column >= 1);
                prop_assert!(!err.message.is_empty());
            }
        }
    }
}
