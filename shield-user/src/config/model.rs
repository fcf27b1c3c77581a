//! The validated configuration: what the rest of the agent consumes.
//!
//! Everything here is already checked. Parsing and validation (with file,
//! line and column in every error) live in the sibling modules; nothing
//! downstream needs to re-check a value.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::net::Cidr;

/// A rate written `N/s`, `N/min` or `N/h` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: u64,
    pub per: Duration,
}

/// The four limit keys shared by `[limits]`, `[[tier]]` and `[[port]]`.
/// `None` means "inherit".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LimitSet {
    pub packets: Option<Rate>,
    pub packet_burst: Option<u64>,
    pub connections: Option<Rate>,
    pub connection_burst: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpModeSetting {
    /// Native (driver) mode, falling back to generic (skb) mode.
    #[default]
    Auto,
    Native,
    Skb,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MalformedAction {
    #[default]
    Drop,
    Pass,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    pub cidrs: Vec<Cidr>,
    pub limits: LimitSet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRuleConfig {
    pub name: String,
    pub proto: Proto,
    /// Every port the rule covers (ranges already expanded), no duplicates.
    pub ports: Vec<u16>,
    pub limits: LimitSet,
    /// `Some`: only these sources may reach the ports (an ACL).
    pub allow_from: Option<Vec<Cidr>>,
    /// Drops by this rule become `would_drop`.
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedSource {
    Path(PathBuf),
    Url(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeedFormat {
    #[default]
    Auto,
    Plain,
    Netset,
    Spamhaus,
    Ipsum,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedConfig {
    pub name: String,
    pub source: FeedSource,
    pub format: FeedFormat,
    pub refresh: Duration,
    pub allow_http: bool,
    pub allow_broad: bool,
    pub min_score: Option<u32>,
    pub max_bytes: u64,
    /// The whole download (connect included) must finish within this.
    pub timeout: Duration,
    /// The most address space the feed may cover: this many IPv4
    /// addresses, and this many × 2^24 IPv6 /64s (feeds::v6_cap).
    pub max_addresses: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrowdsecConfig {
    pub lapi_url: String,
    /// The bouncer key; `None` only when a client certificate authenticates.
    pub api_key_file: Option<PathBuf>,
    pub poll: Duration,
    /// Decision scopes taken in.
    pub scopes: Vec<DecisionScope>,
    /// Decision types enforced as bans (`ban` by default); others are ignored.
    pub types: Vec<String>,
    /// Only decisions from these origins (`cscli`, `crowdsec`, `CAPI`, …);
    /// empty: every origin.
    pub origins: Vec<String>,
    /// CA bundle that signs the LAPI's certificate (https only).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (https only, both or neither).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub machine_id: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The most address space all Range decisions together may cover, as
    /// for a feed's `max_addresses`.
    pub max_addresses: u64,
    /// Decisions one stream page may hold; a bigger page is refused.
    pub max_decisions: usize,
}

/// What a CrowdSec decision applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DecisionScope {
    /// One address.
    Ip,
    /// A CIDR prefix.
    Range,
}

impl DecisionScope {
    /// As CrowdSec spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionScope::Ip => "Ip",
            DecisionScope::Range => "Range",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutobanConfig {
    pub enabled: bool,
    pub after: Duration,
    pub ttl: Duration,
    pub factor: u32,
    pub max_ttl: Duration,
}

/// `[adaptive]`: tighten the default tier's limits while the host is under
/// a flood (see `crate::adaptive` for the state machine).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveConfig {
    pub enabled: bool,
    /// Total drops (all sources, all reasons) that mean "under a flood".
    pub drop_rate: Option<Rate>,
    /// Total passes that mean "under a flood".
    pub pass_rate: Option<Rate>,
    /// Each level divides the default tier's rates and bursts by this.
    pub factor: u32,
    pub max_level: u32,
    /// At most one level up per `step`.
    pub step: Duration,
    /// Calm this long relaxes one level.
    pub relax_after: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// May be empty in a file; the agent then needs `--iface`.
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpModeSetting,
    pub dry_run: bool,
    pub ipv6_prefix: u8,
    pub control_socket: PathBuf,
    pub metrics_listen: SocketAddr,
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
    pub malformed: MalformedAction,
    pub allow: Vec<Cidr>,
    /// The default tier's limits; `None` keys here mean "no limit".
    pub limits: LimitSet,
    pub tiers: Vec<Tier>,
    pub ports: Vec<PortRuleConfig>,
    pub feeds: Vec<FeedConfig>,
    pub crowdsec: Option<CrowdsecConfig>,
    pub autoban: AutobanConfig,
    pub adaptive: AdaptiveConfig,
}
