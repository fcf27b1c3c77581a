//! Defaults, the embedded policy, and complete configs that parse.

use super::*;

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
            api_key_file: Some("/etc/shield/crowdsec.key".into()),
            poll: Duration::from_secs(30),
            scopes: vec![DecisionScope::Ip, DecisionScope::Range],
            types: vec!["ban".into()],
            origins: vec![],
            ca_file: None,
            cert_file: None,
            key_file: None,
            machine_id: Some("api-host-1".into()),
            password_file: Some("/etc/shield/crowdsec.pw".into()),
            max_addresses: 1 << 28,
            max_decisions: 200_000,
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
