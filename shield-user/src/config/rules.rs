//! `[[tier]]` (limits by source) and `[[port]]` (limits and ACLs by
//! destination), one table at a time.

use toml::de::DeValue;

use super::{
    error::{Report, Span},
    fields::{LIMIT_KEYS, LimitSites, choice, cidr_list, limit_set},
    model::{PortRuleConfig, Proto, Tier},
    reader::{Section, as_integer, clip, describe},
};

/// The longest name accepted: names become metric labels, shieldctl
/// arguments and file names, where a paragraph would be a mistake.
pub(super) const MAX_NAME_LEN: usize = 64;

pub(super) struct TierSites {
    pub header: Span,
    pub name: Option<Span>,
    /// Parallel to `Tier::cidrs`.
    pub cidrs: Vec<Span>,
    pub limits: LimitSites,
}

pub(super) struct PortSites {
    pub header: Span,
    pub name: Option<Span>,
    /// `None` when `proto` was missing or wrong: the rule's ports then claim
    /// nothing, rather than clash with the wrong protocol's rules.
    pub proto: Option<Proto>,
    /// The ports as written, ranges unexpanded.
    pub entries: Vec<PortEntry>,
    pub limits: LimitSites,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PortEntry {
    pub lo: u16,
    pub hi: u16,
    pub span: Span,
}

pub(super) fn tier(sec: &Section<'_, '_>, r: &mut Report<'_>) -> (Tier, TierSites) {
    let mut known = vec!["name", "cidrs"];
    known.extend(LIMIT_KEYS);
    sec.check_keys(&known, |_| None, r);
    let (name, name_at) = name(sec, "\"partners\"", r);
    match sec.get("cidrs") {
        None => r.at(
            &sec.span,
            "this [[tier]] has no `cidrs`: list the sources it applies to, like cidrs = [\"198.51.100.0/24\"]",
        ),
        Some(v) if is_empty_list(v) => r.at(
            &v.span(),
            "`cidrs`: a tier with no prefixes matches no source; list at least one",
        ),
        Some(_) => {}
    }
    let (cidrs, cidr_spans) = cidr_list(sec, "cidrs", r).unwrap_or_default();
    let (limits, limit_sites) = limit_set(sec, r);
    (
        Tier {
            name,
            cidrs,
            limits,
        },
        TierSites {
            header: sec.span.clone(),
            name: name_at,
            cidrs: cidr_spans,
            limits: limit_sites,
        },
    )
}

fn is_empty_list(v: &toml::Spanned<DeValue<'_>>) -> bool {
    matches!(v.get_ref(), DeValue::Array(a) if a.is_empty())
}

pub(super) fn port(sec: &Section<'_, '_>, r: &mut Report<'_>) -> (PortRuleConfig, PortSites) {
    let mut known = vec!["name", "proto", "ports", "allow_from", "dry_run"];
    known.extend(LIMIT_KEYS);
    sec.check_keys(&known, |_| None, r);
    let (name, name_at) = name(sec, "\"ssh\"", r);

    let proto = if sec.get("proto").is_some() {
        proto(sec, r)
    } else {
        r.at(
            &sec.span,
            "this [[port]] rule has no `proto`: write proto = \"tcp\" or proto = \"udp\"",
        );
        None
    };

    let entries = port_entries(sec, r);
    // Duplicates within the rule are reported by `validate`, which sees every
    // rule's ports at once; here they only must not appear twice.
    let mut seen = vec![false; 65_536];
    let mut ports = Vec::new();
    for e in &entries {
        for p in e.lo..=e.hi {
            if !std::mem::replace(&mut seen[usize::from(p)], true) {
                ports.push(p);
            }
        }
    }

    let allow_from = cidr_list(sec, "allow_from", r).map(|(c, _)| c);
    let dry_run = sec.boolean("dry_run", r).unwrap_or(false);
    let (limits, limit_sites) = limit_set(sec, r);
    if proto == Some(Proto::Udp) {
        // SYNs are TCP; on UDP these keys would silently do nothing.
        for key in ["connections", "connection_burst"] {
            if let Some(at) = sec.key_span(key) {
                r.at(
                    &at,
                    format!("`{key}` limits new TCP connections (SYNs); a udp rule has none. Use `packets`"),
                );
            }
        }
    }
    (
        PortRuleConfig {
            name,
            proto: proto.unwrap_or(Proto::Tcp),
            ports,
            limits,
            allow_from,
            dry_run,
        },
        PortSites {
            header: sec.span.clone(),
            name: name_at,
            proto,
            entries,
            limits: limit_sites,
        },
    )
}

fn proto(sec: &Section<'_, '_>, r: &mut Report<'_>) -> Option<Proto> {
    if let Some(v) = sec.get("proto")
        && let DeValue::String(s) = v.get_ref()
        && matches!(s.as_ref(), "icmp" | "icmpv6" | "ip" | "any" | "all")
    {
        r.at(
            &v.span(),
            format!(
                "`proto`: {s:?} has no ports; a [[port]] rule is \"tcp\" or \"udp\" (write one rule for each)"
            ),
        );
        return None;
    }
    choice(sec, "proto", &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], r)
}

const PORTS_LIKE: &str = "a port like 443 or a range like \"8000-8099\"";

fn port_entries(sec: &Section<'_, '_>, r: &mut Report<'_>) -> Vec<PortEntry> {
    if sec.get("ports").is_none() {
        r.at(
            &sec.span,
            "this [[port]] rule has no `ports`: list them, like ports = [443, \"8000-8099\"]",
        );
        return Vec::new();
    }
    let Some((items, span)) = sec.array("ports", "a list like [443, \"8000-8099\"]", r) else {
        return Vec::new();
    };
    if items.is_empty() {
        r.at(
            &span,
            "`ports`: the list is empty; a rule needs at least one port",
        );
        return Vec::new();
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let at = item.span();
        let parsed = match item.get_ref() {
            DeValue::Integer(_) => {
                as_integer("ports", item, "443", r).and_then(|n| match port_number(n) {
                    Ok(p) => Some((p, p)),
                    Err(e) => {
                        r.at(&at, format!("`ports`: {e}"));
                        None
                    }
                })
            }
            DeValue::String(s) => match port_range(s) {
                Ok(range) => Some(range),
                Err(e) => {
                    r.at(&at, format!("`ports`: {e}"));
                    None
                }
            },
            _ => {
                let msg = format!(
                    "`ports`: expected {PORTS_LIKE}, found {}",
                    describe(item, r)
                );
                r.at(&at, msg);
                None
            }
        };
        if let Some((lo, hi)) = parsed {
            out.push(PortEntry { lo, hi, span: at });
        }
    }
    out
}

fn port_number(n: i128) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(format!("port {n} is out of range; ports are 1 to 65535")),
    }
}

/// `"8000-8099"`, or a single port written as a string.
fn port_range(s: &str) -> Result<(u16, u16), String> {
    let shown = clip(&format!("{s:?}"));
    let number = |t: &str| -> Result<u16, String> {
        let t = t.trim();
        if t.is_empty() || t.len() > 6 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{shown} is not {PORTS_LIKE}"));
        }
        // At most six digits, so this parse cannot fail.
        port_number(t.parse::<i128>().unwrap_or(0))
    };
    match s.split_once('-') {
        None => number(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (lo, hi) = (number(a)?, number(b)?);
            if lo > hi {
                return Err(format!(
                    "the range {shown} runs backwards; did you mean \"{hi}-{lo}\"?"
                ));
            }
            Ok((lo, hi))
        }
    }
}

/// A `name`: required, and limited to what works as a metric label, a
/// shieldctl argument and a file name.
pub(super) fn name(
    sec: &Section<'_, '_>,
    example: &str,
    r: &mut Report<'_>,
) -> (String, Option<Span>) {
    let what = sec.label.clone();
    if sec.get("name").is_none() {
        r.at(
            &sec.span,
            format!("this {what} has no `name`: give it one, like name = {example}"),
        );
        return (String::new(), None);
    }
    let Some((s, span)) = sec.string("name", example, r) else {
        return (String::new(), None);
    };
    match check_name(s) {
        Ok(()) => (s.to_string(), Some(span)),
        Err(e) => {
            r.at(&span, format!("`name`: {e}"));
            (s.to_string(), None)
        }
    }
}

fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} is {} bytes long; names have at most {MAX_NAME_LEN}",
            clip(&format!("{s:?}")),
            s.len()
        ));
    }
    if s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Ok(());
    }
    let mut msg = format!(
        "{} may only use a-z, 0-9, `_` and `-` (names become metric labels and shieldctl arguments)",
        clip(&format!("{s:?}"))
    );
    let fixed: String = s
        .trim()
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            ' ' | '.' | '/' => '-',
            c => c,
        })
        .collect();
    if !fixed.is_empty()
        && fixed.len() <= MAX_NAME_LEN
        && fixed
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        msg.push_str(&format!("; did you mean \"{fixed}\"?"));
    }
    Err(msg)
}
