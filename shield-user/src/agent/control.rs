//! The agent's answers to shieldctl: each request mapped onto the agent's
//! state, with every refusal a typed error that changes nothing.

use std::{net::IpAddr, time::Duration};

use shield_common::{
    decide,
    maps::{PORT_DRY_RUN, PROTO_TCP, PROTO_UDP, acl_refuses, port_slot},
    reason::Reason,
};

use super::{Agent, runtime::ActiveOverride};
use crate::{
    clock,
    config::{LimitSet, Rate},
    control::{
        ErrorKind, Peer, Reply, Request, Response,
        protocol::{
            AdaptiveInfo, AllowOrigin, AllowRow, BanOrigin, BanRow, BucketInfo, CheckInfo,
            CheckProto, FeedRow, FeedsSummary, Health, IfaceInfo, LimitRow, LimitsInfo, MAX_TOP_N,
            OverrideRow, StatRow, StatusInfo, TopRow, Totals, Verdict,
        },
        units::{MAX_TTL, RateSpec},
    },
    net::Cidr,
    policy::ResolvedLimit,
};

type Answer = Result<Reply, (ErrorKind, String)>;

fn done(message: impl Into<String>) -> Answer {
    Ok(Reply::Done {
        message: message.into(),
    })
}

fn bad(message: impl Into<String>) -> (ErrorKind, String) {
    (ErrorKind::BadRequest, message.into())
}

fn internal(e: impl std::fmt::Display) -> (ErrorKind, String) {
    (ErrorKind::Internal, e.to_string())
}

/// What [`handle`] made of a request.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per request, returned and matched at once, never stored"
)]
pub enum Handled {
    /// Answered under the lock.
    Answer(Response),
    /// A feed refresh: it fetches over the network, so it runs without the
    /// lock (agent/serve.rs, through agent::feeds::refresh).
    Refresh { name: Option<String>, force: bool },
}

/// Answers one request under the agent's lock, or says that it must run
/// without it. Mutations are logged with who asked.
pub fn handle(agent: &mut Agent, req: Request, peer: &Peer) -> Handled {
    if req.is_mutation() {
        tracing::info!(peer = %peer, request = ?req, "control request");
    }
    let answer = match req {
        Request::Status => Ok(Reply::Status(status(agent))),
        Request::Stats => stats(agent),
        Request::Top { n } => Ok(Reply::Top(top(agent, n.min(MAX_TOP_N) as usize))),
        Request::BanAdd {
            net,
            ttl_secs,
            reason,
        } => ban_add(agent, net, ttl_secs, reason),
        Request::BanDel { net } => {
            let crowdsec = agent.bans.crowdsec_holds(&net);
            match agent.bans.remove(&mut agent.dp, net) {
                Ok(true) if crowdsec => done(format!(
                    "lifted the local ban on {net}; it stays banned by a CrowdSec decision (delete it in CrowdSec: cscli decisions delete)"
                )),
                Ok(true) => done(format!("unbanned {net}")),
                Ok(false) if crowdsec => Err((
                    ErrorKind::BadRequest,
                    format!(
                        "{net} is banned by a CrowdSec decision, which shield only mirrors: delete it in CrowdSec (cscli decisions delete), and shield lifts it at the next poll"
                    ),
                )),
                Ok(false) => Err((ErrorKind::NotFound, format!("{net} is not banned"))),
                Err(e) => Err(internal(e)),
            }
        }
        Request::BanList => Ok(Reply::Bans(ban_rows(agent))),
        Request::AllowAdd { net } => allow_add(agent, net),
        Request::AllowDel { net } => allow_del(agent, net),
        Request::AllowList => Ok(Reply::Allow(allow_rows(agent))),
        Request::FeedsList => Ok(Reply::Feeds(feed_rows(agent))),
        Request::FeedsRefresh { name, force } => {
            return Handled::Refresh { name, force };
        }
        Request::Limits => Ok(Reply::Limits(limits(agent))),
        Request::LimitsSet {
            target,
            packets,
            packet_burst,
            connections,
            connection_burst,
            for_secs,
            persist,
        } => {
            let limits = LimitSet {
                packets: packets.map(Rate::from),
                packet_burst,
                connections: connections.map(Rate::from),
                connection_burst,
            };
            limits_set(agent, target, limits, for_secs, persist)
        }
        Request::Reload => match agent.reload() {
            Ok(r) => {
                let mut msg = format!("reloaded: {} map entries changed", r.changes);
                for w in &r.warnings {
                    msg.push_str(&format!("\nwarning: {w}"));
                }
                done(msg)
            }
            Err(e) => Err((
                ErrorKind::BadRequest,
                format!("reload refused, the running policy is unchanged:\n{e}"),
            )),
        },
        Request::DryRun { on } => {
            agent.runtime.dry_run = Some(on);
            match agent.recompute() {
                Ok(_) => done(if on {
                    "dry run on: drops are counted as would_drop and passed"
                } else {
                    "dry run off: drops are enforced"
                }),
                Err(e) => Err(internal(e)),
            }
        }
        Request::Detach => match agent.detach_now() {
            Ok(m) => done(m),
            Err(e) => Err(internal(e)),
        },
        Request::Check { addr, proto, port } => check(agent, addr, proto, port),
    };
    Handled::Answer(match answer {
        Ok(reply) => Response::Ok(reply),
        Err((kind, message)) => Response::error(kind, message),
    })
}

fn status(agent: &Agent) -> StatusInfo {
    let totals = match agent.dp.counters() {
        Ok(c) => {
            let mut t = Totals {
                passed_packets: 0,
                dropped_packets: 0,
                would_drop_packets: 0,
            };
            for (v, _, ctr) in c.iter() {
                match v {
                    Verdict::Pass => t.passed_packets += ctr.packets,
                    Verdict::Drop => t.dropped_packets += ctr.packets,
                    Verdict::WouldDrop => t.would_drop_packets += ctr.packets,
                }
            }
            t
        }
        Err(_) => Totals {
            passed_packets: 0,
            dropped_packets: 0,
            would_drop_packets: 0,
        },
    };
    StatusInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: agent.uptime().as_secs(),
        pid: std::process::id(),
        program_id: agent.attached.first().map(|a| a.program_id),
        dry_run: agent.dry_run(),
        interfaces: agent
            .attached
            .iter()
            .map(|a| IfaceInfo {
                name: a.iface.clone(),
                mode: a.mode,
                link_id: Some(a.link_id),
            })
            .collect(),
        feeds: FeedsSummary {
            count: agent.feeds.states.len() as u64,
            entries: agent.feeds.index.enforced_len() as u64,
            failing: agent
                .feeds
                .states
                .iter()
                .filter(|s| s.last_error.is_some())
                .count() as u64,
            held: agent
                .feeds
                .states
                .iter()
                .filter(|s| s.held.is_some())
                .count() as u64,
        },
        totals,
        bans_active: agent.bans.len() as u64,
        health: {
            let w = agent.state_writes();
            let pins = agent.pin_watch();
            Health {
                state_write_errors: w.errors_total(),
                state_unsaved: w.unsaved(),
                state_last_error: w.last_error().map(|(e, _)| e),
                pins_missing: pins.missing.len() as u64,
                pins_error: pins.error.clone(),
            }
        },
        crowdsec: Some(Box::new(agent.crowdsec_status())),
    }
}

fn feed_rows(agent: &Agent) -> Vec<FeedRow> {
    let now = clock::monotonic_ns();
    agent
        .feeds
        .states
        .iter()
        .map(|st| FeedRow {
            name: st.cfg.name.clone(),
            source: super::feeds::source_text(&st.cfg.source),
            format: format!("{:?}", st.cfg.format).to_lowercase(),
            entries: agent.feeds.index.len(st.id) as u64,
            rejected: st.rejected,
            first_rejects: st.first_rejects.clone(),
            last_success_unix: st.last_success_unix,
            last_error: st.last_error.clone(),
            held: st.held.clone(),
            next_refresh_secs: (!st.in_flight())
                .then(|| st.next_refresh_mono_ns.saturating_sub(now) / 1_000_000_000),
            hits: agent.dp.feed_hits(st.id).unwrap_or(0),
            origin: st.origin.clone(),
        })
        .collect()
}

fn feed_name(agent: &Agent, id: u32) -> String {
    agent
        .feeds
        .states
        .iter()
        .find(|s| s.id == id)
        .map_or_else(|| format!("#{id}"), |s| s.cfg.name.clone())
}

fn stats(agent: &Agent) -> Answer {
    let c = agent.dp.counters().map_err(internal)?;
    Ok(Reply::Stats(
        c.iter()
            .map(|(v, r, ctr)| StatRow {
                verdict: v,
                reason: r.name().to_string(),
                packets: ctr.packets,
                bytes: ctr.bytes,
            })
            .collect(),
    ))
}

fn name_of(names: &[String], id: u16) -> String {
    names
        .get(id as usize)
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("#{id}"))
}

fn top(agent: &Agent, n: usize) -> Vec<TopRow> {
    let now = clock::monotonic_ns();
    let now_ms = clock::unix_ms();
    let mut rows: Vec<(Cidr, TopRow)> = agent
        .floods
        .all()
        .map(|f| {
            let row = TopRow {
                source: f.source.to_string(),
                class: name_of(&agent.policy.classes, f.class),
                tier: name_of(&agent.policy.tiers, f.tier),
                pps: f.drop_rate,
                drops: f.sample.map_or(0, |(d, _)| d),
                over_limit: now.saturating_sub(f.last_ns) <= crate::events::FLOOD_GAP_NS,
                banned_for_secs: None,
            };
            (f.source, row)
        })
        .collect();
    rows.sort_by(|(_, a), (_, b)| {
        b.over_limit
            .cmp(&a.over_limit)
            .then(b.pps.total_cmp(&a.pps))
            .then(b.drops.cmp(&a.drops))
    });
    rows.truncate(n);
    // Only for the rows shown: finding the covering ban walks every ban,
    // and a distributed flood brings thousands of both.
    rows.into_iter()
        .map(|(net, mut r)| {
            r.banned_for_secs = agent
                .bans
                .covering(net.addr(), agent.cfg.ipv6_prefix)
                .map(|b| {
                    b.expires_unix_ms
                        .map_or(u64::MAX, |e| e.saturating_sub(now_ms) / 1000)
                });
            r
        })
        .collect()
}

fn ban_row(b: &super::bans::BanRecord, now_ms: u64) -> BanRow {
    BanRow {
        net: b.net,
        origin: b.origin,
        reason: b.reason.clone(),
        expires_in_secs: b
            .expires_unix_ms
            .map(|e| e.saturating_sub(now_ms).div_ceil(1000)),
    }
}

fn ban_rows(agent: &Agent) -> Vec<BanRow> {
    let now_ms = clock::unix_ms();
    agent
        .bans
        .list()
        .filter(|b| !b.expired(now_ms))
        .map(|b| ban_row(b, now_ms))
        .collect()
}

fn ban_add(agent: &mut Agent, net: Cidr, ttl_secs: Option<u64>, reason: Option<String>) -> Answer {
    // Refused outright, as a feed's entry is without `allow_broad`.
    if net.is_broad() {
        let min = net.broadest_blocked();
        return Err(bad(format!(
            "refusing to ban {net}: broader than /{min} would cut off a large part of the Internet; ban narrower prefixes"
        )));
    }
    let ttl = match ttl_secs {
        Some(0) => {
            return Err(bad(
                "a TTL of zero would expire at once; omit --ttl to ban until deleted",
            ));
        }
        Some(s) if Duration::from_secs(s) > MAX_TTL => {
            return Err(bad(format!(
                "a TTL of {s}s is longer than a year; omit --ttl to ban until deleted"
            )));
        }
        t => t.map(Duration::from_secs),
    };
    if let Some(r) = &reason
        && r.len() > 512
    {
        return Err(bad("the reason is longer than 512 bytes"));
    }
    let now_ms = clock::unix_ms();
    let rec = super::bans::BanRecord {
        net,
        origin: BanOrigin::Manual,
        reason,
        created_unix_ms: now_ms,
        expires_unix_ms: ttl.map(|t| now_ms.saturating_add(t.as_millis() as u64)),
    };
    agent.bans.add(&mut agent.dp, rec).map_err(internal)?;
    agent.tallies.ban_added(BanOrigin::Manual);
    let mut msg = match ttl {
        Some(t) => format!("banned {net} for {}", crate::config::format_duration(t)),
        None => format!("banned {net} until deleted"),
    };
    if let Some(a) = agent
        .allow_entries()
        .into_iter()
        .find(|(a, _)| a.contains(&net) || net.contains(a))
    {
        msg.push_str(&format!(
            "\nnote: {} is allowlisted ({}), and the allowlist wins over bans",
            a.0,
            if a.1 { "runtime" } else { "config" }
        ));
    }
    done(msg)
}

/// Added to a change's answer, once the writer has had its go
/// (agent/writer.rs), when the ban journal could not be written: the
/// change is enforced (and survives an agent restart through the pinned
/// maps), not a reboot.
pub fn note_unsaved(agent: &Agent, resp: Response) -> Response {
    match (agent.bans.unsaved(), resp) {
        (Some(e), Response::Ok(Reply::Done { message })) => Response::done(format!(
            "{message}\nwarning: enforced, but NOT journaled ({e}); it survives an agent restart, not a reboot, until the journal can be written (retried every second)"
        )),
        (_, resp) => resp,
    }
}

fn allow_rows(agent: &Agent) -> Vec<AllowRow> {
    agent
        .allow_entries()
        .into_iter()
        .map(|(net, runtime)| AllowRow {
            net,
            origin: if runtime {
                AllowOrigin::Runtime
            } else {
                AllowOrigin::Config
            },
        })
        .collect()
}

fn allow_add(agent: &mut Agent, net: Cidr) -> Answer {
    if agent.runtime.allow.contains(&net) || agent.cfg.allow.contains(&net) {
        return done(format!("{net} is already allowlisted"));
    }
    agent.runtime.allow.push(net);
    if let Err(e) = agent
        .runtime
        .save_allow()
        .map_err(|e| {
            agent.writes.refused(super::runtime::ALLOW_FILE, &e);
            internal(e)
        })
        .and_then(|()| agent.recompute().map_err(internal))
    {
        agent.runtime.allow.retain(|a| *a != net);
        return Err(e);
    }
    done(format!(
        "allowlisted {net}: it passes every check from now on"
    ))
}

fn allow_del(agent: &mut Agent, net: Cidr) -> Answer {
    if !agent.runtime.allow.contains(&net) {
        if agent.cfg.allow.contains(&net) {
            return Err(bad(format!(
                "{net} comes from the config file's [allow]; remove it there and run `shieldctl reload`"
            )));
        }
        return Err((ErrorKind::NotFound, format!("{net} is not allowlisted")));
    }
    agent.runtime.allow.retain(|a| *a != net);
    if let Err(e) = agent
        .runtime
        .save_allow()
        .map_err(|e| {
            agent.writes.refused(super::runtime::ALLOW_FILE, &e);
            internal(e)
        })
        .and_then(|()| agent.recompute().map_err(internal))
    {
        agent.runtime.allow.push(net);
        return Err(e);
    }
    done(format!("removed {net} from the runtime allowlist"))
}

/// A config rate in the protocol's notation; `None` is no limit.
pub fn rate_spec(r: Option<Rate>) -> RateSpec {
    r.map_or(RateSpec::Unlimited, RateSpec::from)
}

fn limit_row(agent: &Agent, tier: u16, class: u16, l: &(ResolvedLimit, ResolvedLimit)) -> LimitRow {
    LimitRow {
        tier: name_of(&agent.policy.tiers, tier),
        class: name_of(&agent.policy.classes, class),
        packets: rate_spec(l.0.rate),
        packet_burst: l.0.burst,
        connections: rate_spec(l.1.rate),
        connection_burst: l.1.burst,
    }
}

fn limits(agent: &Agent) -> LimitsInfo {
    let now_ms = clock::unix_ms();
    LimitsInfo {
        rows: agent
            .policy
            .resolved
            .iter()
            .map(|((t, c), l)| limit_row(agent, *t, *c, l))
            .collect(),
        overrides: agent
            .runtime
            .overrides
            .iter()
            .filter(|o| o.expires_unix_ms.is_none_or(|e| e > now_ms))
            .map(|o| OverrideRow {
                target: o.target.clone(),
                packets: o.limits.packets.map(|r| rate_spec(Some(r))),
                packet_burst: o.limits.packet_burst,
                connections: o.limits.connections.map(|r| rate_spec(Some(r))),
                connection_burst: o.limits.connection_burst,
                expires_in_secs: o
                    .expires_unix_ms
                    .map(|e| e.saturating_sub(now_ms).div_ceil(1000)),
                persisted: o.persisted,
            })
            .collect(),
        adaptive: adaptive_info(agent),
    }
}

fn adaptive_info(agent: &Agent) -> Option<AdaptiveInfo> {
    let cfg = &agent.cfg.adaptive;
    let a = agent.adaptive();
    if !cfg.enabled && a.level() == 0 {
        return None;
    }
    Some(AdaptiveInfo {
        level: a.level(),
        max_level: cfg.max_level,
        divisor: a.divisor(cfg),
        drop_rate: a.drop_rate.round() as u64,
        pass_rate: a.pass_rate.round() as u64,
        drop_threshold: cfg.drop_rate.map(|r| rate_spec(Some(r))),
        pass_threshold: cfg.pass_rate.map(|r| rate_spec(Some(r))),
    })
}

fn limits_set(
    agent: &mut Agent,
    target: String,
    limits: LimitSet,
    for_secs: Option<u64>,
    persist: bool,
) -> Answer {
    let known = target == crate::policy::DEFAULT_NAME
        || agent.cfg.tiers.iter().any(|t| t.name == target)
        || agent.cfg.ports.iter().any(|p| p.name == target);
    if !known {
        return Err((
            ErrorKind::NotFound,
            format!(
                "`{target}` is neither `default`, a tier nor a port rule (see `shieldctl limits`)"
            ),
        ));
    }
    if limits == LimitSet::default() {
        return Err(bad(
            "nothing to set: give --packets, --packet-burst, --connections or --connection-burst",
        ));
    }
    if limits.packet_burst == Some(0) || limits.connection_burst == Some(0) {
        return Err(bad(
            "a burst of zero admits nothing; to block, use a ban or a port ACL",
        ));
    }
    match for_secs {
        Some(0) => return Err(bad("--for 0 would revert at once")),
        Some(s) if Duration::from_secs(s) > MAX_TTL => {
            return Err(bad(
                "--for longer than a year: use --persist for a permanent change",
            ));
        }
        _ => {}
    }
    let now_ms = clock::unix_ms();
    let o = ActiveOverride {
        target: target.clone(),
        limits,
        expires_unix_ms: for_secs.map(|s| now_ms.saturating_add(s.saturating_mul(1000))),
        persisted: persist,
    };
    let before = agent.runtime.overrides.clone();
    agent.runtime.overrides.push(o);
    let result = agent
        .recompute()
        .map_err(|e| bad(e.to_string()))
        .and_then(|_| {
            if persist {
                agent.runtime.save_overrides().map_err(|e| {
                    agent.writes.refused(super::runtime::OVERRIDES_FILE, &e);
                    internal(e)
                })
            } else {
                Ok(())
            }
        });
    if let Err(e) = result {
        agent.runtime.overrides = before;
        let _ = agent.recompute();
        return Err(e);
    }
    let mut msg = format!("limits for `{target}` changed in the data plane");
    match (for_secs, persist) {
        (Some(s), _) => msg.push_str(&format!(
            "; reverts in {}",
            crate::config::format_duration(Duration::from_secs(s))
        )),
        (None, true) => msg.push_str("; persisted in the state dir"),
        (None, false) => msg.push_str("; until the agent restarts"),
    }
    done(msg)
}

fn check(agent: &Agent, addr: IpAddr, proto: Option<CheckProto>, port: Option<u16>) -> Answer {
    let host = Cidr::host(addr);
    let mut steps = Vec::new();
    let flags = agent.policy.global.flags;
    let (proto_num, port) = match (proto, port) {
        (Some(CheckProto::Udp), p) => (Some(PROTO_UDP), p),
        (Some(CheckProto::Icmp), _) => (None, None),
        (_, Some(p)) => (Some(PROTO_TCP), Some(p)),
        (Some(CheckProto::Tcp), None) => (Some(PROTO_TCP), None),
        (None, None) => (None, None),
    };

    let src = agent
        .policy
        .sources
        .iter()
        .filter(|(c, _)| c.contains(&host))
        .max_by_key(|(c, _)| c.prefix_len())
        .map(|(c, v)| (*c, *v));
    let class = src.map(|s| s.1).unwrap_or_default();
    let tier_name = name_of(&agent.policy.tiers, class.tier);

    let allowed_by = agent
        .allow_entries()
        .into_iter()
        .filter(|(a, _)| a.contains(&host))
        .max_by_key(|(a, _)| a.prefix_len())
        .map(|(a, rt)| format!("{a} ({})", if rt { "runtime" } else { "config" }));
    let now_ms = clock::unix_ms();
    let banned_by = agent
        .bans
        .covering(addr, agent.cfg.ipv6_prefix)
        .map(|b| ban_row(b, now_ms));

    let rule = match (proto_num, port) {
        (Some(pr), Some(p)) => port_slot(pr, p).and(agent.policy.ports.get(&(pr, p)).copied()),
        _ => None,
    };
    let class_id = rule.map_or(0, |r| r.class);
    let class_name = name_of(&agent.policy.classes, class_id);
    let rule_dry = rule.is_some_and(|r| r.flags & PORT_DRY_RUN != 0);
    let resolved = agent
        .policy
        .resolved
        .get(&(class.tier, class_id))
        .or_else(|| agent.policy.resolved.get(&(0, class_id)))
        .copied();
    let limits = resolved.map(|l| limit_row(agent, class.tier, class_id, &l));

    let bucket = agent
        .dp
        .bucket(&crate::dataplane::bucket_key(
            addr,
            class_id,
            class.tier,
            &agent.policy.global.ipv6_mask,
        ))
        .ok()
        .flatten();
    let now = clock::monotonic_ns();
    let tokens = |tat: u64, l: &ResolvedLimit| -> f64 {
        let g = l.gcra();
        if g.is_unlimited() {
            return f64::INFINITY;
        }
        let ahead = tat.saturating_sub(now) as f64;
        ((g.tolerance_ns as f64 - ahead) / g.emission_ns as f64 + 1.0).max(0.0)
    };
    let bucket_info = match (bucket, resolved) {
        (Some(b), Some(l)) => Some(BucketInfo {
            packet_tokens: tokens(b.pkt_tat, &l.0),
            syn_tokens: tokens(b.syn_tat, &l.1),
        }),
        _ => None,
    };

    let feeds: Vec<String> = agent
        .feeds
        .index
        .feeds_containing(addr)
        .into_iter()
        .map(|(id, net)| format!("{} ({net})", feed_name(agent, id)))
        .collect();

    // The same order as the kernel's pipeline.
    let reason = if let Some(a) = &allowed_by {
        steps.push(format!("allowlist: {a} matches → pass"));
        Reason::Allowed
    } else if let Some(b) = &banned_by {
        steps.push("allowlist: no match".into());
        steps.push(format!(
            "ban: {} ({}{}) → drop",
            b.net,
            b.origin.as_str(),
            b.expires_in_secs
                .map_or(", until deleted".to_string(), |s| format!(", {s}s left"))
        ));
        Reason::Banned
    } else if !feeds.is_empty() {
        steps.push("allowlist: no match".into());
        steps.push("bans: none".into());
        steps.push(format!("feeds: listed by {} → drop", feeds.join(", ")));
        Reason::Feed
    } else {
        steps.push("allowlist: no match".into());
        steps.push("bans: none".into());
        steps.push("feeds: none".into());
        let acl_denied = rule.is_some_and(|r| acl_refuses(r.acl, class.acl_mask));
        match rule {
            Some(r) if r.acl != 0 => steps.push(format!(
                "port rule `{class_name}` admits only its allow_from: {}",
                if acl_denied {
                    "not listed → drop"
                } else {
                    "listed"
                }
            )),
            Some(_) => steps.push(format!("port rule `{class_name}` (no ACL)")),
            None => steps.push("no port rule: default class".into()),
        }
        if acl_denied {
            Reason::Acl
        } else {
            steps.push(format!("tier `{tier_name}`, class `{class_name}`"));
            if let Some(l) = &limits {
                steps.push(format!(
                    "limits: packets {} (burst {}), connections {} (burst {})",
                    l.packets, l.packet_burst, l.connections, l.connection_burst
                ));
            }
            match &bucket_info {
                Some(b) if b.packet_tokens < 1.0 => {
                    steps.push("bucket: empty, the source is over its packet limit → drop".into());
                    Reason::Ratelimit
                }
                Some(b) => {
                    steps.push(format!(
                        "bucket: {:.0} packets and {:.0} connections of burst left",
                        b.packet_tokens.min(1e12),
                        b.syn_tokens.min(1e12)
                    ));
                    Reason::Clean
                }
                None => {
                    steps.push("bucket: none yet (full burst available)".into());
                    Reason::Clean
                }
            }
        }
    };
    let v = decide::verdict(reason, flags, rule_dry);
    if v == Verdict::WouldDrop {
        steps.push("dry run: the drop is only counted (would_drop)".into());
    }
    Ok(Reply::Check(Box::new(CheckInfo {
        addr,
        verdict: v,
        reason: reason.name().to_string(),
        steps,
        allowed_by,
        banned_by,
        feeds,
        tier: tier_name,
        class: class_name,
        limits,
        bucket: bucket_info.map(|b| BucketInfo {
            packet_tokens: if b.packet_tokens.is_finite() {
                b.packet_tokens
            } else {
                0.0
            },
            syn_tokens: if b.syn_tokens.is_finite() {
                b.syn_tokens
            } else {
                0.0
            },
        }),
    })))
}
