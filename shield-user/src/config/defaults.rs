//! What an omitted key means. `default.toml` writes the same values out for
//! operators to read; a test keeps the two in step.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use super::model::{
    AdaptiveConfig, AutobanConfig, Config, LimitSet, MalformedAction, Rate, XdpModeSetting,
};

/// Address space one feed may cover by default, in IPv4 addresses:
/// sixteen /8s. A feed's (or `[crowdsec]`'s) `max_addresses` raises or lowers it.
pub const DEFAULT_MAX_ADDRESSES: u64 = 1 << 28;

/// Highest `max_addresses`: all of IPv4.
pub const MAX_MAX_ADDRESSES: u64 = 1 << 32;

pub(super) const IPV6_PREFIX: u8 = 64;
pub(super) const CONTROL_SOCKET: &str = "/run/shield/shield.sock";
pub(super) const METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9964);
pub(super) const STATE_DIR: &str = "/var/lib/shield";
pub(super) const PIN_DIR: &str = "/sys/fs/bpf/shield";

/// The default tier's limits, key by key: a `[limits]` table that leaves a
/// key out gets that key from here.
pub(super) const LIMITS: LimitSet = LimitSet {
    packets: Some(Rate {
        count: 5000,
        per: Duration::from_secs(1),
    }),
    packet_burst: Some(10_000),
    connections: Some(Rate {
        count: 100,
        per: Duration::from_secs(1),
    }),
    connection_burst: Some(200),
};

pub(super) const FEED_REFRESH: Duration = Duration::from_secs(3600);
pub(super) const FEED_MAX_BYTES: u64 = 64 << 20;
/// Long enough for a 64 MiB list on a slow link, short enough that a stuck
/// server does not hold a refresh for long.
pub(super) const FEED_TIMEOUT: Duration = Duration::from_secs(120);
pub(super) const CROWDSEC_LAPI_URL: &str = "http://127.0.0.1:8080";
pub(super) const CROWDSEC_POLL: Duration = Duration::from_secs(10);
/// Twice the 100,000 decisions the fleet benchmark applies: a cap on what
/// one hostile page can make the agent parse (docs/configuration.md).
pub(super) const CROWDSEC_MAX_DECISIONS: usize = 200_000;

pub(super) const AUTOBAN: AutobanConfig = AutobanConfig {
    enabled: true,
    after: Duration::from_secs(5),
    ttl: Duration::from_secs(600),
    factor: 2,
    max_ttl: Duration::from_secs(24 * 3600),
};

/// Off unless asked for: tightening limits on a guess is the operator's call.
pub(super) const ADAPTIVE: AdaptiveConfig = AdaptiveConfig {
    enabled: false,
    drop_rate: Some(Rate {
        count: 100_000,
        per: Duration::from_secs(1),
    }),
    pass_rate: None,
    factor: 2,
    max_level: 3,
    step: Duration::from_secs(10),
    relax_after: Duration::from_secs(60),
};

/// The configuration of an empty file.
pub(super) fn config() -> Config {
    Config {
        interfaces: Vec::new(),
        xdp_mode: XdpModeSetting::Auto,
        dry_run: false,
        ipv6_prefix: IPV6_PREFIX,
        control_socket: PathBuf::from(CONTROL_SOCKET),
        metrics_listen: METRICS_LISTEN,
        state_dir: PathBuf::from(STATE_DIR),
        pin_dir: PathBuf::from(PIN_DIR),
        malformed: MalformedAction::Drop,
        allow: Vec::new(),
        limits: LIMITS,
        tiers: Vec::new(),
        ports: Vec::new(),
        feeds: Vec::new(),
        crowdsec: None,
        autoban: AUTOBAN,
        adaptive: ADAPTIVE,
    }
}
