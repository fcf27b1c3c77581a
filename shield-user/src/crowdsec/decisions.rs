//! The decisions shield holds from the LAPI, by decision id, and what they
//! mean for the ban maps: one ban per prefix, lasting as long as the
//! longest decision on it.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Duration,
};

use serde::Deserialize;

use super::duration::parse_go_duration;
use crate::{config::DecisionScope, net::Cidr};

/// A decision as the LAPI writes it. Fields shield does not use are
/// ignored, so newer LAPIs keep working.
#[derive(Clone, Debug, Deserialize)]
pub struct WireDecision {
    pub id: i64,
    #[serde(default)]
    pub origin: String,
    #[serde(default)]
    pub scope: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub scenario: Option<String>,
}

/// Ranges broader than these are refused, as for feeds and `ban add`: one
/// bad decision must not black-hole a large part of the Internet.
const MIN_RANGE_V4: u8 = 8;
const MIN_RANGE_V6: u8 = 16;

/// Which decisions the config takes in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub scopes: Vec<DecisionScope>,
    pub types: Vec<String>,
    /// Empty: every origin.
    pub origins: Vec<String>,
    /// The most address space the Range decisions held may cover together,
    /// as for a feed (`[crowdsec] max_addresses`, feeds::v6_cap).
    pub max_addresses: u64,
}

impl Filter {
    fn wants(&self, scope: DecisionScope, kind: &str, origin: &str) -> bool {
        self.scopes.contains(&scope)
            && self.types.iter().any(|t| t.eq_ignore_ascii_case(kind))
            && (self.origins.is_empty() || self.origins.iter().any(|o| o == origin))
    }
}

/// One decision in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: i64,
    pub net: Cidr,
    pub origin: String,
    pub scenario: String,
    pub expires_unix_ms: u64,
}

/// What the ban maps should hold for one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub expires_unix_ms: u64,
    pub reason: String,
}

/// A decision that was not taken in, and why (hostile or foreign input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub id: i64,
    pub value: String,
    pub why: String,
}

/// What one stream page did to the book.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PageOutcome {
    pub added: usize,
    pub deleted: usize,
    /// Filtered out by scope, type or origin: not an error.
    pub ignored: usize,
    pub rejected: Vec<Rejected>,
    /// Prefixes whose decisions changed (a delta's; a startup page touches
    /// everything and leaves this empty).
    pub touched: Vec<Cidr>,
}

#[derive(Debug, Default)]
pub struct DecisionBook {
    by_id: HashMap<i64, Decision>,
    /// The ids on each prefix, so a delta re-evaluates only its prefixes.
    by_net: HashMap<Cidr, Vec<i64>>,
    /// The space the distinct Range prefixes held cover (IPv4 addresses,
    /// IPv6 /64s), summed: overlapping ranges count twice, which only
    /// errs towards refusing.
    ranges: (u128, u128),
    /// Decisions per origin, kept by `insert` and `remove`: a scrape reads
    /// them without walking 100k decisions (docs/metrics.md).
    origins: BTreeMap<String, u64>,
}

/// What a prefix counts against the cap: nothing for a host (an Ip
/// decision), its IPv4 addresses or IPv6 /64s for a range.
fn range_size(net: &Cidr) -> (u128, u128) {
    let len = u32::from(net.prefix_len());
    match (net.is_host(), net.is_v4()) {
        (true, _) => (0, 0),
        (false, true) => (1u128 << (32 - len), 0),
        (false, false) => (0, if len >= 64 { 1 } else { 1u128 << (64 - len) }),
    }
}

impl DecisionBook {
    /// Applies a stream page. A startup page is the whole truth: the book
    /// becomes exactly what it lists. A delta deletes, then adds.
    pub fn apply_page(
        &mut self,
        new: Vec<WireDecision>,
        deleted: Vec<WireDecision>,
        startup: bool,
        filter: &Filter,
        now_unix_ms: u64,
    ) -> PageOutcome {
        let mut out = PageOutcome::default();
        if startup {
            out.deleted = self.by_id.len();
            self.by_id.clear();
            self.by_net.clear();
            self.ranges = (0, 0);
            self.origins.clear();
        } else {
            for d in &deleted {
                if let Some(gone) = self.remove(d.id) {
                    out.deleted += 1;
                    out.touched.push(gone.net);
                }
            }
        }
        self.by_id.reserve(new.len());
        for w in new {
            match take(&w, filter, now_unix_ms) {
                Ok(Some(d)) if self.over_cap(&d.net, filter.max_addresses) => {
                    out.rejected.push(Rejected {
                        id: w.id,
                        value: w.value.chars().take(64).collect(),
                        why: format!(
                            "{} would take the Range decisions past the cap of {} IPv4 addresses and {} IPv6 /64s ([crowdsec] max_addresses); refused",
                            d.net,
                            filter.max_addresses,
                            crate::feeds::v6_cap(filter.max_addresses)
                        ),
                    });
                }
                Ok(Some(d)) => {
                    if !startup {
                        out.touched.push(d.net);
                    }
                    self.insert(d);
                    out.added += 1;
                }
                Ok(None) => out.ignored += 1,
                Err(why) => out.rejected.push(Rejected {
                    id: w.id,
                    value: w.value.chars().take(64).collect(),
                    why,
                }),
            }
        }
        out
    }

    /// Whether a decision on `net` would take the ranges held past the
    /// cap (a prefix already held adds nothing).
    fn over_cap(&self, net: &Cidr, max_addresses: u64) -> bool {
        let (v4, v6) = range_size(net);
        if (v4, v6) == (0, 0) || self.by_net.contains_key(net) {
            return false;
        }
        self.ranges.0 + v4 > u128::from(max_addresses)
            || self.ranges.1 + v6 > crate::feeds::v6_cap(max_addresses)
    }

    fn insert(&mut self, d: Decision) {
        let (id, net) = (d.id, d.net);
        match self.origins.get_mut(&d.origin) {
            Some(n) => *n += 1,
            None => {
                self.origins.insert(d.origin.clone(), 1);
            }
        }
        if let Some(old) = self.by_id.insert(id, d) {
            self.uncount(&old.origin);
            self.unlink(old.net, id);
        }
        let ids = self.by_net.entry(net).or_default();
        if ids.is_empty() {
            let (v4, v6) = range_size(&net);
            self.ranges = (self.ranges.0 + v4, self.ranges.1 + v6);
        }
        ids.push(id);
    }

    fn remove(&mut self, id: i64) -> Option<Decision> {
        let d = self.by_id.remove(&id)?;
        self.uncount(&d.origin);
        self.unlink(d.net, id);
        Some(d)
    }

    fn uncount(&mut self, origin: &str) {
        if let Some(n) = self.origins.get_mut(origin) {
            *n -= 1;
            if *n == 0 {
                self.origins.remove(origin);
            }
        }
    }

    fn unlink(&mut self, net: Cidr, id: i64) {
        if let Some(ids) = self.by_net.get_mut(&net) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_net.remove(&net);
                let (v4, v6) = range_size(&net);
                self.ranges = (
                    self.ranges.0.saturating_sub(v4),
                    self.ranges.1.saturating_sub(v6),
                );
            }
        }
    }

    /// Forgets decisions that ran out (the kernel stopped matching them
    /// already); returns how many.
    pub fn expire(&mut self, now_unix_ms: u64) -> usize {
        let gone: Vec<i64> = self
            .by_id
            .values()
            .filter(|d| d.expires_unix_ms <= now_unix_ms)
            .map(|d| d.id)
            .collect();
        for id in &gone {
            self.remove(*id);
        }
        gone.len()
    }

    /// What the ban maps should hold for each of `nets`: `None` where no
    /// decision is left. A delta's changes, without walking every decision.
    pub fn desired_for(&self, nets: &[Cidr], now_unix_ms: u64) -> BTreeMap<Cidr, Option<Desired>> {
        let mut out = BTreeMap::new();
        for net in nets {
            let best = self
                .by_net
                .get(net)
                .into_iter()
                .flatten()
                .filter_map(|id| self.by_id.get(id))
                .filter(|d| d.expires_unix_ms > now_unix_ms)
                .max_by_key(|d| d.expires_unix_ms);
            out.insert(*net, best.map(desired_of));
        }
        out
    }

    /// One ban per prefix: the longest-lasting decision on it wins.
    pub fn desired(&self, now_unix_ms: u64) -> BTreeMap<Cidr, Desired> {
        let mut out: BTreeMap<Cidr, Desired> = BTreeMap::new();
        for d in self.by_id.values() {
            if d.expires_unix_ms <= now_unix_ms {
                continue;
            }
            let longer = out
                .get(&d.net)
                .is_none_or(|cur| cur.expires_unix_ms < d.expires_unix_ms);
            if longer {
                out.insert(d.net, desired_of(d));
            }
        }
        out
    }

    /// Decisions held, per origin.
    pub fn by_origin(&self) -> BTreeMap<String, u64> {
        self.origins.clone()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

fn desired_of(d: &Decision) -> Desired {
    Desired {
        expires_unix_ms: d.expires_unix_ms,
        reason: format!(
            "crowdsec decision #{} ({}, origin {})",
            d.id, d.scenario, d.origin
        ),
    }
}

/// `Ok(None)`: filtered out; `Err`: malformed or refused.
fn take(w: &WireDecision, filter: &Filter, now_unix_ms: u64) -> Result<Option<Decision>, String> {
    let scope = match w.scope.to_ascii_lowercase().as_str() {
        "ip" => DecisionScope::Ip,
        "range" => DecisionScope::Range,
        // Usernames, countries, AS numbers…: not something XDP can match.
        _ => return Ok(None),
    };
    if !filter.wants(scope, &w.kind, &w.origin) {
        return Ok(None);
    }
    let net = match scope {
        DecisionScope::Ip => w
            .value
            .parse::<IpAddr>()
            .map(Cidr::host)
            .map_err(|_| format!("scope Ip, but {:?} is not an address", clip(&w.value)))?,
        DecisionScope::Range => {
            let (net, _) = Cidr::parse_normalizing(&w.value)
                .map_err(|e| format!("scope Range, but {:?}: {e}", clip(&w.value)))?;
            let min = if net.is_v4() {
                MIN_RANGE_V4
            } else {
                MIN_RANGE_V6
            };
            if net.prefix_len() < min {
                return Err(format!(
                    "{net} is broader than /{min}; refused so that one decision cannot cut off a large part of the Internet"
                ));
            }
            net
        }
    };
    let (negative, left) = parse_go_duration(&w.duration)
        .ok_or_else(|| format!("duration {:?} is not a Go duration", clip(&w.duration)))?;
    if negative || left.is_zero() {
        // Already over: nothing to enforce.
        return Ok(None);
    }
    // A year caps what a hostile LAPI answer could pin.
    let left = left.min(Duration::from_secs(366 * 24 * 3600));
    Ok(Some(Decision {
        id: w.id,
        net,
        origin: clip(&w.origin),
        scenario: clip(w.scenario.as_deref().unwrap_or("")),
        expires_unix_ms: now_unix_ms.saturating_add(left.as_millis() as u64),
    }))
}

fn clip(s: &str) -> String {
    s.chars().take(128).collect()
}

/// The body of `GET /v1/decisions/stream`.
#[derive(Debug, Default)]
pub struct StreamBody {
    pub new: Vec<WireDecision>,
    pub deleted: Vec<WireDecision>,
}

/// Why a stream body was not taken.
#[derive(Debug, thiserror::Error)]
pub enum StreamBodyError {
    #[error("more than {max} decisions in one page")]
    TooMany { max: usize },
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// Parses a stream body holding at most `max` decisions (new and deleted
/// together). The count is checked as the decisions are parsed, so an
/// oversized page is refused before it is held in memory: a 256 MiB body
/// of tiny decisions would otherwise become gigabytes of them.
pub fn parse_stream_body(bytes: &[u8], max: usize) -> Result<StreamBody, StreamBodyError> {
    use serde::de::DeserializeSeed;
    let over = std::cell::Cell::new(false);
    let mut d = serde_json::Deserializer::from_slice(bytes);
    let parsed = BodySeed {
        left: std::cell::Cell::new(max),
        over: &over,
    }
    .deserialize(&mut d)
    .and_then(|b| d.end().map(|()| b));
    match parsed {
        Ok(b) => Ok(b),
        Err(_) if over.get() => Err(StreamBodyError::TooMany { max }),
        Err(e) => Err(e.into()),
    }
}

/// The body's object: `new` and `deleted` (each a list or null), every
/// other key ignored, all drawing on one budget of decisions.
struct BodySeed<'a> {
    left: std::cell::Cell<usize>,
    over: &'a std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for BodySeed<'_> {
    type Value = StreamBody;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<StreamBody, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BodySeed<'_> {
    type Value = StreamBody;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with `new` and `deleted` lists")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StreamBody, A::Error> {
        let mut body = StreamBody::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let list = ListSeed {
                left: &self.left,
                over: self.over,
            };
            match key.as_ref() {
                "new" => body.new = map.next_value_seed(list)?,
                "deleted" => body.deleted = map.next_value_seed(list)?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(body)
    }
}

/// One list of decisions (null is an empty one), counted against the
/// page's budget.
#[derive(Clone, Copy)]
struct ListSeed<'a> {
    left: &'a std::cell::Cell<usize>,
    over: &'a std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for ListSeed<'_> {
    type Value = Vec<WireDecision>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ListSeed<'_> {
    type Value = Vec<WireDecision>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of decisions or null")
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(w) = seq.next_element::<WireDecision>()? {
            let Some(left) = self.left.get().checked_sub(1) else {
                self.over.set(true);
                return Err(serde::de::Error::custom("too many decisions"));
            };
            self.left.set(left);
            out.push(w);
        }
        Ok(out)
    }
}
