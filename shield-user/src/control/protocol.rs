//! The control protocol between `shieldctl` (or an operator's script) and
//! `shield-agent`: typed requests and responses, JSON on the wire.
//!
//! The JSON shape is a stable interface, documented in
//! `docs/control-protocol.md`. Within one [`PROTOCOL_VERSION`] changes are
//! additive only: new optional request fields, new response fields (clients
//! ignore fields they do not know), new request types (an older agent
//! answers `unsupported`). Anything else bumps the version.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::units::RateSpec;
use crate::net::Cidr;

pub const PROTOCOL_VERSION: u32 = 1;

/// What a client asks. Mirrors the `shieldctl` commands.
///
/// Unknown fields are refused so a script's typo (`"ttl"` for `"ttl_secs"`)
/// fails loudly instead of being ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    Stats,
    /// The `n` busiest sources. The agent caps `n` at [`MAX_TOP_N`].
    Top {
        n: u32,
    },
    BanAdd {
        #[serde(with = "cidr_string")]
        net: Cidr,
        /// `None` bans until deleted.
        #[serde(default)]
        ttl_secs: Option<u64>,
        #[serde(default)]
        reason: Option<String>,
    },
    BanDel {
        #[serde(with = "cidr_string")]
        net: Cidr,
    },
    BanList,
    AllowAdd {
        #[serde(with = "cidr_string")]
        net: Cidr,
    },
    AllowDel {
        #[serde(with = "cidr_string")]
        net: Cidr,
    },
    AllowList,
    FeedsList,
    FeedsRefresh {
        /// `None` refreshes every feed.
        #[serde(default)]
        name: Option<String>,
        /// Apply even a refresh the shrink guard would hold back.
        #[serde(default)]
        force: bool,
    },
    Limits,
    LimitsSet {
        /// A tier name, a port-rule name, or `default` for `[limits]`.
        target: String,
        #[serde(default)]
        packets: Option<RateSpec>,
        #[serde(default)]
        packet_burst: Option<u64>,
        #[serde(default)]
        connections: Option<RateSpec>,
        #[serde(default)]
        connection_burst: Option<u64>,
        /// `None`: until the agent restarts (or forever with `persist`).
        #[serde(default)]
        for_secs: Option<u64>,
        /// Journal the override in the state dir so it survives restarts.
        #[serde(default)]
        persist: bool,
    },
    Reload,
    DryRun {
        on: bool,
    },
    /// Remove programs, links and pins: enforcement stops.
    Detach,
    /// Explain the verdict the data plane would give `addr`.
    Check {
        addr: IpAddr,
        #[serde(default)]
        proto: Option<CheckProto>,
        #[serde(default)]
        port: Option<u16>,
    },
}

/// Upper bound on `Top { n }`; the agent clamps larger values.
pub const MAX_TOP_N: u32 = 10_000;

impl Request {
    /// The wire name of each request type, for telling "unknown type" (a
    /// newer client: `unsupported`) from a malformed request.
    pub const TYPES: &'static [&'static str] = &[
        "status",
        "stats",
        "top",
        "ban_add",
        "ban_del",
        "ban_list",
        "allow_add",
        "allow_del",
        "allow_list",
        "feeds_list",
        "feeds_refresh",
        "limits",
        "limits_set",
        "reload",
        "dry_run",
        "detach",
        "check",
    ];

    /// True for requests that change state; the agent may log these at a
    /// higher level than reads.
    pub fn is_mutation(&self) -> bool {
        !matches!(
            self,
            Request::Status
                | Request::Stats
                | Request::Top { .. }
                | Request::BanList
                | Request::AllowList
                | Request::FeedsList
                | Request::Limits
                | Request::Check { .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckProto {
    Tcp,
    Udp,
    Icmp,
}

/// The agent's answer to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Ok(Reply),
    Err(ErrorReply),
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Err(ErrorReply {
            kind,
            message: message.into(),
        })
    }

    pub fn done(message: impl Into<String>) -> Response {
        Response::Ok(Reply::Done {
            message: message.into(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or a value is invalid.
    BadRequest,
    /// The named ban, allow entry, feed, tier or rule does not exist.
    NotFound,
    /// The request conflicts with current state (e.g. banning an address
    /// the allowlist covers).
    Conflict,
    /// The peer is neither root nor in the control group.
    Denied,
    /// This agent does not implement the request (a newer client).
    Unsupported,
    /// The agent failed; the message says what.
    Internal,
    /// The envelope's `version` is not [`PROTOCOL_VERSION`].
    VersionMismatch,
    /// The request frame, or the reply to it, exceeds the size cap.
    TooLarge,
    /// The agent is at its connection cap; retry shortly.
    Busy,
    /// The client sent no complete request in time.
    Timeout,
}

/// Successful answers. Adjacently tagged (`{"type": ..., "data": ...}`) so
/// list replies can be plain JSON arrays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Reply {
    Status(StatusInfo),
    Stats(Vec<StatRow>),
    Top(Vec<TopRow>),
    Bans(Vec<BanRow>),
    Allow(Vec<AllowRow>),
    Feeds(Vec<FeedRow>),
    Limits(LimitsInfo),
    /// Boxed: by far the largest reply, and rare.
    Check(Box<CheckInfo>),
    /// A mutation succeeded; the message says what changed.
    Done {
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// The agent's version (crate version).
    pub version: String,
    pub uptime_secs: u64,
    pub pid: u32,
    /// The attached XDP program's kernel id; `None` when detached.
    pub program_id: Option<u32>,
    pub dry_run: bool,
    pub interfaces: Vec<IfaceInfo>,
    pub feeds: FeedsSummary,
    pub totals: Totals,
    pub bans_active: u64,
    /// Problems that do not stop enforcement but need an operator.
    #[serde(default)]
    pub health: Health,
    /// The CrowdSec LAPI link. `None` only from an agent older than this
    /// field; an agent without `[crowdsec]` says `configured: false`.
    /// Boxed: it would double the size of every reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<Box<CrowdsecStatus>>,
}

/// Where the agent's link to the CrowdSec LAPI stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrowdsecStatus {
    /// `[crowdsec]` is in the config; every other field is empty without it.
    pub configured: bool,
    /// The LAPI's URL, any userinfo and query redacted.
    pub lapi_url: Option<String>,
    /// A machine login is configured, so autobans are pushed as alerts.
    pub pushes: bool,
    /// The last decision pull that succeeded.
    pub last_pull_unix: Option<u64>,
    /// The last alert push that succeeded.
    pub last_push_unix: Option<u64>,
    /// The latest failure (pull, push or setup); cleared by a good pull.
    pub last_error: Option<String>,
    pub errors_total: u64,
    /// Decisions the agent holds from the LAPI (after its filter).
    pub decisions: u64,
    /// Ban-map entries CrowdSec holds (several decisions may share one).
    pub bans: u64,
    pub alerts_pushed_total: u64,
    /// Autobans spooled in `state_dir`, waiting for the LAPI.
    pub alerts_spooled: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Failed writes to `state_dir` (a full disk), retries included.
    pub state_write_errors: u64,
    /// State files behind what is enforced (their last write failed).
    pub state_unsaved: Vec<String>,
    pub state_last_error: Option<String>,
    /// Pins missing under `pin_dir` (bpffs unmounted or cleared).
    pub pins_missing: u64,
    pub pins_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceInfo {
    pub name: String,
    pub mode: XdpMode,
    pub link_id: Option<u32>,
}

/// How the program runs on an interface: the data plane's own type.
pub use crate::dataplane::AttachMode as XdpMode;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedsSummary {
    pub count: u64,
    pub entries: u64,
    /// Feeds whose last refresh failed.
    pub failing: u64,
    /// Feeds with a refresh held back by the shrink guard.
    pub held: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub passed_packets: u64,
    pub dropped_packets: u64,
    pub would_drop_packets: u64,
}

/// The kernel's own verdicts, serialized as `pass`, `drop`, `would_drop`.
pub use shield_common::reason::Verdict;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatRow {
    pub verdict: Verdict,
    /// The reason label as in the metrics (`allowed`, `banned`, `feed`,
    /// `acl`, `ratelimit`, `synlimit`, `malformed`, ...). A string so new
    /// reasons do not break older clients.
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    /// The source as keyed: an address, or a v6 prefix (`2001:db8:1::/64`).
    pub source: String,
    pub class: String,
    pub tier: String,
    #[serde(with = "finite_f64")]
    pub pps: f64,
    pub drops: u64,
    pub over_limit: bool,
    pub banned_for_secs: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRow {
    #[serde(with = "cidr_string")]
    pub net: Cidr,
    pub origin: BanOrigin,
    pub reason: Option<String>,
    /// `None`: permanent.
    pub expires_in_secs: Option<u64>,
}

/// Who made a ban: the one type for the agent's ban book, its journal and
/// the wire (the kernel's byte for it is `agent::bans`' business).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BanOrigin {
    Manual,
    Autoban,
    Feed,
    /// A decision from CrowdSec's LAPI.
    Crowdsec,
}

impl BanOrigin {
    /// The name in the journal, on the wire, in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BanOrigin::Manual => "manual",
            BanOrigin::Autoban => "autoban",
            BanOrigin::Feed => "feed",
            BanOrigin::Crowdsec => "crowdsec",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRow {
    #[serde(with = "cidr_string")]
    pub net: Cidr,
    pub origin: AllowOrigin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowOrigin {
    /// From `[allow] cidrs` in the config; `allow del` cannot remove it.
    Config,
    /// Added with `shieldctl allow add`.
    Runtime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRow {
    pub name: String,
    /// The URL or file path.
    pub source: String,
    pub format: String,
    pub entries: u64,
    /// Lines skipped as malformed or refused (too broad) in the last load.
    pub rejected: u64,
    /// The first few rejected lines, with line numbers and why.
    pub first_rejects: Vec<String>,
    pub last_success_unix: Option<u64>,
    pub last_error: Option<String>,
    /// Why the last refresh was held back, if it was.
    pub held: Option<String>,
    pub next_refresh_secs: Option<u64>,
    pub hits: u64,
    /// Where the enforced entries came from: `network`, or `cache, 3h old`
    /// when the source was unreachable at start-up.
    #[serde(default)]
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsInfo {
    /// Effective limits, overrides and `[adaptive]` tightening applied, one
    /// row per (tier, class).
    pub rows: Vec<LimitRow>,
    pub overrides: Vec<OverrideRow>,
    /// `[adaptive]`, when it is enabled (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveInfo>,
}

/// Where `[adaptive]` stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdaptiveInfo {
    /// 0: the configured limits; N: the default tier's divided by `divisor`.
    pub level: u32,
    pub max_level: u32,
    /// `factor^level`.
    pub divisor: u64,
    /// Total drops and passes per second, as last measured.
    pub drop_rate: u64,
    pub pass_rate: u64,
    /// The thresholds; `None`: that one is off.
    pub drop_threshold: Option<RateSpec>,
    pub pass_threshold: Option<RateSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitRow {
    pub tier: String,
    pub class: String,
    pub packets: RateSpec,
    pub packet_burst: u64,
    pub connections: RateSpec,
    pub connection_burst: u64,
}

/// A runtime override from `limits set`; `None` fields are not overridden.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideRow {
    pub target: String,
    pub packets: Option<RateSpec>,
    pub packet_burst: Option<u64>,
    pub connections: Option<RateSpec>,
    pub connection_burst: Option<u64>,
    /// `None`: no expiry.
    pub expires_in_secs: Option<u64>,
    pub persisted: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckInfo {
    pub addr: IpAddr,
    pub verdict: Verdict,
    /// The reason label, as in [`StatRow::reason`].
    pub reason: String,
    /// The pipeline walk in words, one line per stage consulted.
    pub steps: Vec<String>,
    /// The allowlist entry that matched.
    pub allowed_by: Option<String>,
    pub banned_by: Option<BanRow>,
    /// Feeds listing the address.
    pub feeds: Vec<String>,
    pub tier: String,
    pub class: String,
    pub limits: Option<LimitRow>,
    pub bucket: Option<BucketInfo>,
}

/// Tokens left in the source's buckets right now (burst units).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketInfo {
    #[serde(with = "finite_f64")]
    pub packet_tokens: f64,
    #[serde(with = "finite_f64")]
    pub syn_tokens: f64,
}

/// Why a frame's bytes are not an acceptable request or response.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed JSON: {0}")]
    Json(String),
    /// Well-formed JSON that is not a valid message: a missing field, a
    /// wrong type, a bad network or rate.
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error(
        "protocol version {got} is not supported (this side speaks version {PROTOCOL_VERSION})"
    )]
    VersionMismatch { got: u32 },
    #[error("unknown request type `{0}`")]
    UnknownType(String),
    #[error("response has neither `ok` nor `err`, or both")]
    Shape,
}

impl DecodeError {
    /// The error kind a server answers with.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DecodeError::Json(_) | DecodeError::Invalid(_) | DecodeError::Shape => {
                ErrorKind::BadRequest
            }
            DecodeError::VersionMismatch { .. } => ErrorKind::VersionMismatch,
            DecodeError::UnknownType(_) => ErrorKind::Unsupported,
        }
    }
}

#[derive(Serialize)]
struct RequestOut<'a> {
    version: u32,
    request: &'a Request,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestIn {
    #[allow(dead_code)] // checked by `VersionProbe` first
    version: u32,
    request: Request,
}

/// Read first, alone, so a future version whose body we cannot parse still
/// gets a clear "version mismatch" instead of a parse error.
#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

#[derive(Deserialize)]
struct TypeProbe {
    request: TypeOnly,
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize, Deserialize)]
struct ResponseWire {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ok: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    err: Option<ErrorReply>,
}

fn json_err(e: serde_json::Error) -> DecodeError {
    match e.classify() {
        serde_json::error::Category::Data => DecodeError::Invalid(e.to_string()),
        _ => DecodeError::Json(e.to_string()),
    }
}

fn check_version(bytes: &[u8]) -> Result<(), DecodeError> {
    let probe: VersionProbe = serde_json::from_slice(bytes).map_err(json_err)?;
    if probe.version != PROTOCOL_VERSION {
        return Err(DecodeError::VersionMismatch { got: probe.version });
    }
    Ok(())
}

/// `{"version": 1, "request": {...}}`
pub fn encode_request(req: &Request) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&RequestOut {
        version: PROTOCOL_VERSION,
        request: req,
    })
}

pub fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    check_version(bytes)?;
    match serde_json::from_slice::<RequestIn>(bytes) {
        Ok(r) => Ok(r.request),
        Err(e) => {
            if let Ok(p) = serde_json::from_slice::<TypeProbe>(bytes)
                && !Request::TYPES.contains(&p.request.kind.as_str())
            {
                return Err(DecodeError::UnknownType(p.request.kind));
            }
            Err(json_err(e))
        }
    }
}

/// `{"version": 1, "ok": {...}}` or `{"version": 1, "err": {...}}`
pub fn encode_response(resp: &Response) -> Result<Vec<u8>, serde_json::Error> {
    let (ok, err) = match resp {
        Response::Ok(r) => (Some(r.clone()), None),
        Response::Err(e) => (None, Some(e.clone())),
    };
    serde_json::to_vec(&ResponseWire {
        version: PROTOCOL_VERSION,
        ok,
        err,
    })
}

pub fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    check_version(bytes)?;
    let wire: ResponseWire = serde_json::from_slice(bytes).map_err(json_err)?;
    match (wire.ok, wire.err) {
        (Some(r), None) => Ok(Response::Ok(r)),
        (None, Some(e)) => Ok(Response::Err(e)),
        _ => Err(DecodeError::Shape),
    }
}

/// A [`Cidr`] as its string form, parsed strictly on the way in so a
/// script's `10.1.2.3/8` gets the same "did you mean" as the CLI.
mod cidr_string {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::net::Cidr;

    pub fn serialize<S: Serializer>(c: &Cidr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(c)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// JSON has no NaN or infinity: serde_json would write `null`, which then
/// fails to parse as a number on the client. Non-finite values go out as 0.
mod finite_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(if v.is_finite() { *v } else { 0.0 })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        f64::deserialize(d)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn every_request() -> Vec<Request> {
        vec![
            Request::Status,
            Request::Stats,
            Request::Top { n: 20 },
            Request::BanAdd {
                net: cidr("192.0.2.0/24"),
                ttl_secs: Some(3600),
                reason: Some("scraper".into()),
            },
            Request::BanAdd {
                net: cidr("2001:db8::1"),
                ttl_secs: None,
                reason: None,
            },
            Request::BanDel {
                net: cidr("192.0.2.0/24"),
            },
            Request::BanList,
            Request::AllowAdd {
                net: cidr("10.0.0.0/8"),
            },
            Request::AllowDel {
                net: cidr("10.0.0.0/8"),
            },
            Request::AllowList,
            Request::FeedsList,
            Request::FeedsRefresh {
                name: Some("spamhaus-drop".into()),
                force: true,
            },
            Request::FeedsRefresh {
                name: None,
                force: false,
            },
            Request::Limits,
            Request::LimitsSet {
                target: "partners".into(),
                packets: Some("10000/s".parse().unwrap()),
                packet_burst: Some(20_000),
                connections: Some(RateSpec::Unlimited),
                connection_burst: None,
                for_secs: Some(600),
                persist: false,
            },
            Request::Reload,
            Request::DryRun { on: true },
            Request::Detach,
            Request::Check {
                addr: "192.0.2.7".parse().unwrap(),
                proto: Some(CheckProto::Tcp),
                port: Some(443),
            },
        ]
    }

    #[test]
    fn every_request_round_trips_and_every_type_is_listed() {
        let mut seen = std::collections::BTreeSet::new();
        for req in every_request() {
            let bytes = encode_request(&req).unwrap();
            assert_eq!(decode_request(&bytes).unwrap(), req);
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["version"], 1);
            let t = v["request"]["type"].as_str().unwrap().to_string();
            assert!(
                Request::TYPES.contains(&t.as_str()),
                "{t} missing from TYPES"
            );
            seen.insert(t);
        }
        assert_eq!(
            seen.len(),
            Request::TYPES.len(),
            "a request type has no test"
        );
    }

    #[test]
    fn request_wire_shape_is_stable() {
        let req = Request::BanAdd {
            net: cidr("192.0.2.0/24"),
            ttl_secs: Some(3600),
            reason: None,
        };
        assert_eq!(
            String::from_utf8(encode_request(&req).unwrap()).unwrap(),
            r#"{"version":1,"request":{"type":"ban_add","net":"192.0.2.0/24","ttl_secs":3600,"reason":null}}"#
        );
        // Scripts may omit optional fields entirely.
        let r = decode_request(br#"{"version":1,"request":{"type":"ban_add","net":"192.0.2.9"}}"#)
            .unwrap();
        assert_eq!(
            r,
            Request::BanAdd {
                net: cidr("192.0.2.9/32"),
                ttl_secs: None,
                reason: None
            }
        );
        let r = decode_request(br#"{"version":1,"request":{"type":"feeds_refresh"}}"#).unwrap();
        assert_eq!(
            r,
            Request::FeedsRefresh {
                name: None,
                force: false
            }
        );
        assert_eq!(
            String::from_utf8(encode_request(&Request::Status).unwrap()).unwrap(),
            r#"{"version":1,"request":{"type":"status"}}"#
        );
    }

    #[test]
    fn bad_requests_are_typed() {
        let kind = |b: &[u8]| decode_request(b).unwrap_err().kind();
        assert_eq!(kind(b"not json"), ErrorKind::BadRequest);
        assert!(matches!(
            decode_request(b"{\"version\":1"),
            Err(DecodeError::Json(_))
        ));
        assert_eq!(kind(b""), ErrorKind::BadRequest);
        assert_eq!(
            kind(br#"{"request":{"type":"status"}}"#),
            ErrorKind::BadRequest
        );
        assert_eq!(
            kind(br#"{"version":"1","request":{"type":"status"}}"#),
            ErrorKind::BadRequest
        );
        assert_eq!(
            kind(br#"{"version":2,"request":{"type":"status"}}"#),
            ErrorKind::VersionMismatch
        );
        // A future version is reported as such even if its body is alien.
        assert_eq!(
            kind(br#"{"version":7,"frobnicate":[1,2]}"#),
            ErrorKind::VersionMismatch
        );
        assert_eq!(
            kind(br#"{"version":1,"request":{"type":"teleport"}}"#),
            ErrorKind::Unsupported
        );
        // A known type with a bad body is malformed, not unsupported.
        assert_eq!(
            kind(br#"{"version":1,"request":{"type":"top","n":"many"}}"#),
            ErrorKind::BadRequest
        );
        assert_eq!(
            kind(br#"{"version":1,"request":{"type":"ban_add","net":"10.1.2.3/8"}}"#),
            ErrorKind::BadRequest
        );
        let e = decode_request(br#"{"version":1,"request":{"type":"ban_add","net":"10.1.2.3/8"}}"#)
            .unwrap_err();
        assert!(matches!(e, DecodeError::Invalid(_)), "{e:?}");
        assert!(e.to_string().contains("did you mean `10.0.0.0/8`"), "{e}");
        // Typos in field names fail instead of being ignored.
        assert_eq!(
            kind(br#"{"version":1,"request":{"type":"ban_add","net":"10.0.0.1","ttl":60}}"#),
            ErrorKind::BadRequest
        );
        assert_eq!(
            kind(br#"{"version":1,"request":{"type":"status"},"extra":1}"#),
            ErrorKind::BadRequest
        );
        assert_eq!(
            kind(br#"{"version":1,"request":{"type":"limits_set","target":"x","packets":"0/s"}}"#),
            ErrorKind::BadRequest
        );
    }

    pub(crate) fn sample_replies() -> Vec<Reply> {
        let ban = BanRow {
            net: cidr("203.0.113.0/24"),
            origin: BanOrigin::Autoban,
            reason: Some("flood".into()),
            expires_in_secs: Some(598),
        };
        let limit = LimitRow {
            tier: "default".into(),
            class: "tcp/443".into(),
            packets: "1000/s".parse().unwrap(),
            packet_burst: 2000,
            connections: "50/s".parse().unwrap(),
            connection_burst: 100,
        };
        vec![
            Reply::Status(StatusInfo {
                version: "0.1.0".into(),
                uptime_secs: 3725,
                pid: 4242,
                program_id: Some(77),
                dry_run: false,
                interfaces: vec![IfaceInfo {
                    name: "eth0".into(),
                    mode: XdpMode::Native,
                    link_id: Some(5),
                }],
                feeds: FeedsSummary {
                    count: 2,
                    entries: 1500,
                    failing: 1,
                    held: 0,
                },
                totals: Totals {
                    passed_packets: 1_000_000,
                    dropped_packets: 5000,
                    would_drop_packets: 0,
                },
                bans_active: 3,
                health: Health::default(),
                crowdsec: Some(Box::new(CrowdsecStatus {
                    configured: true,
                    lapi_url: Some("http://127.0.0.1:8080/".into()),
                    pushes: true,
                    last_pull_unix: Some(1_700_000_000),
                    last_push_unix: None,
                    last_error: Some("connection refused".into()),
                    errors_total: 4,
                    decisions: 12,
                    bans: 11,
                    alerts_pushed_total: 2,
                    alerts_spooled: 1,
                })),
            }),
            Reply::Stats(vec![StatRow {
                verdict: Verdict::WouldDrop,
                reason: "ratelimit".into(),
                packets: 10,
                bytes: 1000,
            }]),
            Reply::Top(vec![TopRow {
                source: "2001:db8:1::/64".into(),
                class: "default".into(),
                tier: "default".into(),
                pps: 5000.5,
                drops: 12,
                over_limit: true,
                banned_for_secs: None,
            }]),
            Reply::Bans(vec![ban.clone()]),
            Reply::Allow(vec![AllowRow {
                net: cidr("10.0.0.0/8"),
                origin: AllowOrigin::Config,
            }]),
            Reply::Feeds(vec![FeedRow {
                name: "drop".into(),
                source: "https://example.invalid/drop.txt".into(),
                format: "spamhaus".into(),
                entries: 1000,
                rejected: 2,
                first_rejects: vec!["line 3: `x` is not an IP address or CIDR".into()],
                last_success_unix: Some(1_700_000_000),
                last_error: None,
                held: None,
                next_refresh_secs: Some(3599),
                hits: 17,
                origin: "network".into(),
            }]),
            Reply::Limits(LimitsInfo {
                rows: vec![limit.clone()],
                overrides: vec![OverrideRow {
                    target: "default".into(),
                    packets: Some("500/s".parse().unwrap()),
                    packet_burst: None,
                    connections: None,
                    connection_burst: None,
                    expires_in_secs: Some(60),
                    persisted: false,
                }],
                adaptive: Some(AdaptiveInfo {
                    level: 1,
                    max_level: 3,
                    divisor: 2,
                    drop_rate: 150_000,
                    pass_rate: 900,
                    drop_threshold: Some("100000/s".parse().unwrap()),
                    pass_threshold: None,
                }),
            }),
            Reply::Check(Box::new(CheckInfo {
                addr: "203.0.113.9".parse().unwrap(),
                verdict: Verdict::Drop,
                reason: "banned".into(),
                steps: vec!["allowlist: no match".into(), "bans: 203.0.113.0/24".into()],
                allowed_by: None,
                banned_by: Some(ban),
                feeds: vec![],
                tier: "default".into(),
                class: "tcp/443".into(),
                limits: Some(limit),
                bucket: Some(BucketInfo {
                    packet_tokens: 1999.0,
                    syn_tokens: 99.5,
                }),
            })),
            Reply::Done {
                message: "banned 203.0.113.0/24".into(),
            },
        ]
    }

    #[test]
    fn every_reply_round_trips() {
        for reply in sample_replies() {
            let resp = Response::Ok(reply);
            let bytes = encode_response(&resp).unwrap();
            assert_eq!(decode_response(&bytes).unwrap(), resp);
        }
        let err = Response::error(ErrorKind::NotFound, "no ban for 192.0.2.1/32");
        let bytes = encode_response(&err).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"version":1,"err":{"kind":"not_found","message":"no ban for 192.0.2.1/32"}}"#
        );
        assert_eq!(decode_response(&bytes).unwrap(), err);
    }

    #[test]
    fn reply_wire_shape_is_stable() {
        let resp = Response::Ok(Reply::Bans(vec![BanRow {
            net: cidr("192.0.2.1"),
            origin: BanOrigin::Manual,
            reason: None,
            expires_in_secs: None,
        }]));
        assert_eq!(
            String::from_utf8(encode_response(&resp).unwrap()).unwrap(),
            r#"{"version":1,"ok":{"type":"bans","data":[{"net":"192.0.2.1/32","origin":"manual","reason":null,"expires_in_secs":null}]}}"#
        );
        assert_eq!(
            String::from_utf8(encode_response(&Response::done("ok")).unwrap()).unwrap(),
            r#"{"version":1,"ok":{"type":"done","data":{"message":"ok"}}}"#
        );
    }

    #[test]
    fn responses_tolerate_additions_but_not_ambiguity() {
        // A newer agent may add fields within version 1.
        let r = decode_response(
            br#"{"version":1,"ok":{"type":"done","data":{"message":"x","new":1}},"trace":"t"}"#,
        )
        .unwrap();
        assert_eq!(r, Response::done("x"));
        assert!(matches!(
            decode_response(br#"{"version":1}"#),
            Err(DecodeError::Shape)
        ));
        assert!(matches!(
            decode_response(
                br#"{"version":1,"ok":{"type":"done","data":{"message":"x"}},"err":{"kind":"internal","message":"y"}}"#
            ),
            Err(DecodeError::Shape)
        ));
        assert!(matches!(
            decode_response(br#"{"version":2,"ok":{}}"#),
            Err(DecodeError::VersionMismatch { got: 2 })
        ));
    }

    #[test]
    fn status_from_an_agent_without_the_crowdsec_field_decodes() {
        let Reply::Status(mut s) = sample_replies().remove(0) else {
            panic!("the first sample is a status")
        };
        let v = serde_json::to_value(Reply::Status(s.clone())).unwrap();
        assert_eq!(v["data"]["crowdsec"]["configured"], true);
        assert_eq!(v["data"]["crowdsec"]["last_pull_unix"], 1_700_000_000);
        s.crowdsec = None;
        let mut v = serde_json::to_value(Reply::Status(s.clone())).unwrap();
        assert!(v["data"].get("crowdsec").is_none(), "{v}");
        v["data"].as_object_mut().unwrap().remove("health");
        let back: Reply = serde_json::from_value(v).unwrap();
        assert_eq!(back, Reply::Status(s));
    }

    #[test]
    fn non_finite_floats_do_not_poison_the_reply() {
        let resp = Response::Ok(Reply::Top(vec![TopRow {
            source: "192.0.2.1".into(),
            class: "default".into(),
            tier: "default".into(),
            pps: f64::NAN,
            drops: 0,
            over_limit: false,
            banned_for_secs: None,
        }]));
        let back = decode_response(&encode_response(&resp).unwrap()).unwrap();
        let Response::Ok(Reply::Top(rows)) = back else {
            panic!("wrong reply {back:?}")
        };
        assert_eq!(rows[0].pps, 0.0);
    }

    #[test]
    fn mutations_are_classified() {
        assert!(!Request::Status.is_mutation());
        assert!(
            !Request::Check {
                addr: "::1".parse().unwrap(),
                proto: None,
                port: None
            }
            .is_mutation()
        );
        assert!(Request::Detach.is_mutation());
        assert!(Request::DryRun { on: false }.is_mutation());
    }
}
