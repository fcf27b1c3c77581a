//! Human output for `shieldctl`: aligned tables, compact numbers and
//! durations. `--json` bypasses all of this.

use std::fmt::Write as _;

use super::{
    protocol::{
        AllowOrigin, BanOrigin, BanRow, CheckInfo, CrowdsecStatus, ErrorKind, ErrorReply, FeedRow,
        LimitsInfo, OverrideRow, Reply, StatRow, StatusInfo, TopRow, Verdict,
    },
    units::{RateSpec, format_bytes, format_count, format_duration, format_rate},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain-text table: columns padded to their widest cell, two spaces
/// apart, numbers right-aligned where asked.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `headers` may be empty for a key/value layout.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_string()).collect(),
            align: vec![Align::Left; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the given columns.
    pub fn right(mut self, cols: &[usize]) -> Table {
        for &c in cols {
            if c >= self.align.len() {
                self.align.resize(c + 1, Align::Left);
            }
            self.align[c] = Align::Right;
        }
        self
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows
            .push(cells.into_iter().map(|c| clean(&c.into())).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let ncols = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; ncols];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let lines = (!self.headers.is_empty())
            .then_some(&self.headers)
            .into_iter()
            .chain(&self.rows);
        for line in lines {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map_or("", String::as_str);
                let pad = width - cell.chars().count();
                if i > 0 {
                    text.push_str("  ");
                }
                match self.align.get(i).copied().unwrap_or(Align::Left) {
                    Align::Left => {
                        text.push_str(cell);
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        text.extend(std::iter::repeat_n(' ', pad));
                        text.push_str(cell);
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Feed lines, ban reasons and names can carry anything, including escape
/// sequences that would reprogram the operator's terminal. Control
/// characters are shown escaped instead.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Drop => "drop",
        Verdict::WouldDrop => "would drop",
    }
}

fn count(n: u64) -> String {
    format_count(n as f64)
}

fn expires(secs: Option<u64>) -> String {
    secs.map_or_else(|| "never".into(), |s| format!("in {}", format_duration(s)))
}

fn ago(now_unix: u64, then: Option<u64>) -> String {
    match then {
        None => "never".into(),
        Some(t) if t > now_unix => "just now".into(),
        Some(t) => format!("{} ago", format_duration(now_unix - t)),
    }
}

/// Renders a reply for a terminal. `now_unix` dates the "ago" columns.
pub fn render(reply: &Reply, now_unix: u64) -> String {
    match reply {
        Reply::Status(s) => status(s, now_unix),
        Reply::Stats(rows) => stats(rows),
        Reply::Top(rows) => top(rows),
        Reply::Bans(rows) => bans(rows),
        Reply::Allow(rows) => {
            if rows.is_empty() {
                return "no allow entries\n".into();
            }
            let mut t = Table::new(&["NET", "ORIGIN"]);
            for r in rows {
                let origin = match r.origin {
                    AllowOrigin::Config => "config",
                    AllowOrigin::Runtime => "runtime",
                };
                t.row([r.net.to_string(), origin.into()]);
            }
            t.render()
        }
        Reply::Feeds(rows) => feeds(rows, now_unix),
        Reply::Limits(info) => limits(info),
        Reply::Check(c) => check(c),
        Reply::Done { message } => format!("{}\n", clean(message)),
    }
}

/// The one-line error `shieldctl` prints for an agent's refusal.
pub fn render_error(e: &ErrorReply) -> String {
    let msg = clean(&e.message);
    match e.kind {
        ErrorKind::VersionMismatch => format!(
            "{msg} (shieldctl and shield-agent are different versions; upgrade the older one)"
        ),
        ErrorKind::Busy | ErrorKind::Timeout | ErrorKind::Denied => msg,
        ErrorKind::Unsupported => {
            format!("{msg} (this shield-agent is older than shieldctl)")
        }
        _ => format!("shield-agent: {msg}"),
    }
}

fn status(s: &StatusInfo, now_unix: u64) -> String {
    let mut t = Table::new(&[]);
    t.row([
        "agent".to_string(),
        format!(
            "shield-agent {}, pid {}, up {}",
            s.version,
            s.pid,
            format_duration(s.uptime_secs)
        ),
    ]);
    let program = match (s.program_id, s.dry_run) {
        (None, _) => "not attached: NOT ENFORCING".to_string(),
        (Some(id), false) => format!("id {id}, enforcing"),
        (Some(id), true) => format!("id {id}, DRY RUN (drops are only counted)"),
    };
    t.row(["program".to_string(), program]);
    let ifaces = if s.interfaces.is_empty() {
        "none".to_string()
    } else {
        s.interfaces
            .iter()
            .map(|i| {
                let mode = i.mode.as_str();
                match i.link_id {
                    Some(l) => format!("{} ({mode}, link {l})", i.name),
                    None => format!("{} ({mode})", i.name),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    t.row(["interfaces".to_string(), ifaces]);
    let f = &s.feeds;
    let mut feeds = format!(
        "{} feed{}, {} entries",
        f.count,
        if f.count == 1 { "" } else { "s" },
        count(f.entries)
    );
    if f.failing > 0 {
        let _ = write!(feeds, ", {} failing", f.failing);
    }
    if f.held > 0 {
        let _ = write!(feeds, ", {} held back", f.held);
    }
    t.row(["feeds".to_string(), feeds]);
    t.row(["bans".to_string(), format!("{} active", s.bans_active)]);
    let tot = &s.totals;
    let mut packets = format!(
        "{} passed, {} dropped",
        count(tot.passed_packets),
        count(tot.dropped_packets)
    );
    if tot.would_drop_packets > 0 || s.dry_run {
        let _ = write!(packets, ", {} would drop", count(tot.would_drop_packets));
    }
    t.row(["packets".to_string(), packets]);
    let h = &s.health;
    if h.state_write_errors > 0 || !h.state_unsaved.is_empty() {
        let mut state = format!("{} failed writes", count(h.state_write_errors));
        if !h.state_unsaved.is_empty() {
            let _ = write!(state, "; NOT SAVED: {}", h.state_unsaved.join(", "));
        }
        if let Some(e) = &h.state_last_error {
            let _ = write!(state, "; last: {e}");
        }
        t.row(["state dir".to_string(), state]);
    }
    if h.pins_missing > 0 {
        let mut pins = format!(
            "{} MISSING (a restart now would start from empty maps)",
            h.pins_missing
        );
        if let Some(e) = &h.pins_error {
            let _ = write!(pins, "; {e}");
        }
        t.row(["pins".to_string(), pins]);
    }
    if let Some(cs) = &s.crowdsec {
        crowdsec_rows(&mut t, cs, now_unix);
    }
    t.render()
}

/// The LAPI link: where, what it gave, when it last worked, and what is
/// wrong with it now.
fn crowdsec_rows(t: &mut Table, cs: &CrowdsecStatus, now_unix: u64) {
    if !cs.configured {
        t.row(["crowdsec".to_string(), "not configured".to_string()]);
        return;
    }
    let url = cs.lapi_url.as_deref().map_or_else(String::new, clean);
    t.row([
        "crowdsec".to_string(),
        format!(
            "{url}: {} decision{}, {} ban{}",
            count(cs.decisions),
            if cs.decisions == 1 { "" } else { "s" },
            count(cs.bans),
            if cs.bans == 1 { "" } else { "s" }
        ),
    ]);
    let mut link = format!("last pull {}", ago(now_unix, cs.last_pull_unix));
    if cs.pushes {
        let _ = write!(
            link,
            ", last push {}, {} alerts pushed, {} spooled",
            ago(now_unix, cs.last_push_unix),
            count(cs.alerts_pushed_total),
            count(cs.alerts_spooled)
        );
    }
    if cs.errors_total > 0 {
        let _ = write!(link, ", {} errors", count(cs.errors_total));
    }
    t.row(["".to_string(), link]);
    if let Some(e) = &cs.last_error {
        t.row(["".to_string(), format!("FAILING: {}", clean(e))]);
    }
}

fn stats(rows: &[StatRow]) -> String {
    // Most (verdict, reason) pairs never occur (nothing passes as `banned`
    // outside dry run); the table shows what happened, `--json` every pair.
    let rows: Vec<&StatRow> = rows.iter().filter(|r| r.packets > 0).collect();
    if rows.is_empty() {
        return "no packets counted yet\n".into();
    }
    let mut t = Table::new(&["VERDICT", "REASON", "PACKETS", "BYTES"]).right(&[2, 3]);
    for r in rows {
        t.row([
            verdict(r.verdict).to_string(),
            r.reason.clone(),
            count(r.packets),
            format_bytes(r.bytes),
        ]);
    }
    t.render()
}

fn top(rows: &[TopRow]) -> String {
    if rows.is_empty() {
        return "no active sources\n".into();
    }
    let mut t = Table::new(&["SOURCE", "TIER", "CLASS", "RATE", "DROPS", "STATE"]).right(&[3, 4]);
    for r in rows {
        let state = match (r.banned_for_secs, r.over_limit) {
            (Some(s), _) => format!("banned, {} left", format_duration(s)),
            (None, true) => "over limit".into(),
            (None, false) => String::new(),
        };
        t.row([
            r.source.clone(),
            r.tier.clone(),
            r.class.clone(),
            format_rate(r.pps),
            count(r.drops),
            state,
        ]);
    }
    t.render()
}

fn ban_origin(o: BanOrigin) -> &'static str {
    match o {
        BanOrigin::Manual => "manual",
        BanOrigin::Autoban => "autoban",
        BanOrigin::Feed => "feed",
        BanOrigin::Crowdsec => "crowdsec",
    }
}

fn bans(rows: &[BanRow]) -> String {
    if rows.is_empty() {
        return "no active bans\n".into();
    }
    let mut t = Table::new(&["NET", "ORIGIN", "EXPIRES", "REASON"]);
    for r in rows {
        t.row([
            r.net.to_string(),
            ban_origin(r.origin).into(),
            expires(r.expires_in_secs),
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    t.render()
}

fn feeds(rows: &[FeedRow], now_unix: u64) -> String {
    if rows.is_empty() {
        return "no feeds configured\n".into();
    }
    let mut t = Table::new(&[
        "NAME", "FORMAT", "ENTRIES", "REJECTED", "HITS", "UPDATED", "NEXT", "STATE",
    ])
    .right(&[2, 3, 4]);
    let mut notes = String::new();
    for r in rows {
        let state = match (&r.last_error, &r.held) {
            (Some(_), _) => "failing",
            (None, Some(_)) => "held",
            (None, None) => "ok",
        };
        t.row([
            r.name.clone(),
            r.format.clone(),
            count(r.entries),
            count(r.rejected),
            count(r.hits),
            ago(now_unix, r.last_success_unix),
            r.next_refresh_secs
                .map_or_else(|| "-".into(), |s| format!("in {}", format_duration(s))),
            state.into(),
        ]);
        let name = clean(&r.name);
        if r.origin.starts_with("cache") {
            let _ = writeln!(
                notes,
                "{name}: enforcing the last good copy ({})",
                clean(&r.origin)
            );
        }
        if let Some(e) = &r.last_error {
            let _ = writeln!(notes, "{name}: last refresh failed: {}", clean(e));
        }
        if let Some(h) = &r.held {
            let _ = writeln!(
                notes,
                "{name}: refresh held back: {} (apply with `shieldctl feeds refresh {name} --force`)",
                clean(h)
            );
        }
        if !r.first_rejects.is_empty() {
            let _ = writeln!(notes, "{name}: {} lines rejected, first:", r.rejected);
            for line in &r.first_rejects {
                let _ = writeln!(notes, "  {}", clean(line));
            }
        }
    }
    let mut out = t.render();
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    out
}

fn override_summary(o: &OverrideRow) -> String {
    let mut parts = Vec::new();
    if let Some(p) = o.packets {
        parts.push(format!("packets {p}"));
    }
    if let Some(b) = o.packet_burst {
        parts.push(format!("packet burst {b}"));
    }
    if let Some(c) = o.connections {
        parts.push(format!("connections {c}"));
    }
    if let Some(b) = o.connection_burst {
        parts.push(format!("connection burst {b}"));
    }
    parts.join(", ")
}

fn limits(info: &LimitsInfo) -> String {
    let mut t = Table::new(&["TIER", "CLASS", "PACKETS", "BURST", "CONNECTIONS", "BURST"])
        .right(&[2, 3, 4, 5]);
    for r in &info.rows {
        t.row([
            r.tier.clone(),
            r.class.clone(),
            r.packets.to_string(),
            r.packet_burst.to_string(),
            r.connections.to_string(),
            r.connection_burst.to_string(),
        ]);
    }
    let mut out = if t.is_empty() {
        "no limits\n".to_string()
    } else {
        t.render()
    };
    if let Some(a) = &info.adaptive {
        let threshold =
            |t: &Option<RateSpec>| t.as_ref().map_or("off".to_string(), ToString::to_string);
        let state = if a.level == 0 {
            "as configured".to_string()
        } else {
            format!("default tier's limits divided by {}", a.divisor)
        };
        let _ = writeln!(
            out,
            "\nadaptive: level {}/{} ({state}); now {} drops/s (threshold {}), {} passes/s (threshold {})",
            a.level,
            a.max_level,
            a.drop_rate,
            threshold(&a.drop_threshold),
            a.pass_rate,
            threshold(&a.pass_threshold),
        );
    }
    if !info.overrides.is_empty() {
        let mut o = Table::new(&["OVERRIDE", "CHANGES", "EXPIRES", "PERSISTED"]);
        for r in &info.overrides {
            o.row([
                r.target.clone(),
                override_summary(r),
                expires(r.expires_in_secs),
                if r.persisted { "yes" } else { "no" }.into(),
            ]);
        }
        out.push('\n');
        out.push_str(&o.render());
    }
    out
}

fn check(c: &CheckInfo) -> String {
    let mut out = format!(
        "{}: {} ({})\n",
        c.addr,
        verdict(c.verdict).to_uppercase(),
        clean(&c.reason)
    );
    for step in &c.steps {
        let _ = writeln!(out, "  {}", clean(step));
    }
    let mut t = Table::new(&[]);
    if let Some(a) = &c.allowed_by {
        t.row(["allowed by", a.as_str()]);
    }
    if let Some(b) = &c.banned_by {
        let mut s = format!(
            "{} ({}, expires {})",
            b.net,
            ban_origin(b.origin),
            expires(b.expires_in_secs)
        );
        if let Some(r) = &b.reason {
            let _ = write!(s, ": {r}");
        }
        t.row(["banned by".to_string(), s]);
    }
    if !c.feeds.is_empty() {
        t.row(["feeds".to_string(), c.feeds.join(", ")]);
    }
    t.row(["tier".to_string(), c.tier.clone()]);
    t.row(["class".to_string(), c.class.clone()]);
    if let Some(l) = &c.limits {
        t.row([
            "limits".to_string(),
            format!(
                "packets {} (burst {}), connections {} (burst {})",
                l.packets, l.packet_burst, l.connections, l.connection_burst
            ),
        ]);
    }
    if let Some(b) = &c.bucket {
        t.row([
            "bucket".to_string(),
            format!(
                "{} packet tokens, {} connection tokens left",
                format_count(b.packet_tokens),
                format_count(b.syn_tokens)
            ),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{
        AllowRow, FeedsSummary, IfaceInfo, LimitRow, Totals, tests::sample_replies,
    };

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NET", "PACKETS", "NOTE"]).right(&[1]);
        t.row(["10.0.0.0/8", "5", "a"]);
        t.row(["192.0.2.1/32", "12345", ""]);
        t.row(["::/0", "12", "longer note"]);
        assert_eq!(
            t.render(),
            "\
NET           PACKETS  NOTE
10.0.0.0/8          5  a
192.0.2.1/32    12345
::/0               12  longer note
"
        );
    }

    #[test]
    fn tables_tolerate_ragged_rows_and_no_headers() {
        let mut t = Table::new(&[]);
        t.row(["key", "value"]);
        t.row(["longer key"]);
        t.row(["k", "v", "extra"]);
        assert_eq!(
            t.render(),
            "key         value\nlonger key\nk           v      extra\n"
        );
        assert_eq!(Table::new(&["A"]).render(), "A\n");
        assert_eq!(Table::new(&[]).render(), "");
    }

    #[test]
    fn cells_cannot_inject_terminal_escapes() {
        let mut t = Table::new(&["X"]);
        t.row(["evil\x1b[2Jline\nbreak"]);
        let out = t.render();
        assert!(!out.contains('\x1b'));
        assert_eq!(out.lines().count(), 2);
        assert!(out.contains("evil\\u{1b}[2Jline\\nbreak"), "{out}");
    }

    #[test]
    fn non_ascii_cells_align_by_character() {
        let mut t = Table::new(&["NAME", "N"]).right(&[1]);
        t.row(["café", "1"]);
        t.row(["tea", "22"]);
        assert_eq!(t.render(), "NAME   N\ncafé   1\ntea   22\n");
    }

    #[test]
    fn bans_show_human_expiry() {
        let out = render(
            &Reply::Bans(vec![
                BanRow {
                    net: "203.0.113.0/24".parse().unwrap(),
                    origin: BanOrigin::Autoban,
                    reason: Some("flood".into()),
                    expires_in_secs: Some(598),
                },
                BanRow {
                    net: "2001:db8::/32".parse().unwrap(),
                    origin: BanOrigin::Manual,
                    reason: None,
                    expires_in_secs: None,
                },
            ]),
            0,
        );
        assert_eq!(
            out,
            "\
NET             ORIGIN   EXPIRES   REASON
203.0.113.0/24  autoban  in 9m58s  flood
2001:db8::/32   manual   never
"
        );
        assert_eq!(render(&Reply::Bans(vec![]), 0), "no active bans\n");
    }

    #[test]
    fn top_shows_rates_and_state() {
        let out = render(
            &Reply::Top(vec![
                TopRow {
                    source: "198.51.100.7".into(),
                    class: "tcp/443".into(),
                    tier: "default".into(),
                    pps: 5000.0,
                    drops: 1200,
                    over_limit: true,
                    banned_for_secs: None,
                },
                TopRow {
                    source: "2001:db8:1::/64".into(),
                    class: "default".into(),
                    tier: "partners".into(),
                    pps: 12.0,
                    drops: 0,
                    over_limit: false,
                    banned_for_secs: Some(3600),
                },
            ]),
            0,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "SOURCE           TIER      CLASS      RATE  DROPS  STATE"
        );
        assert_eq!(
            lines[1],
            "198.51.100.7     default   tcp/443  5.0k/s   1.2k  over limit"
        );
        assert_eq!(
            lines[2],
            "2001:db8:1::/64  partners  default    12/s      0  banned, 1h left"
        );
    }

    #[test]
    fn status_says_when_not_enforcing() {
        let mut s = StatusInfo {
            version: "0.1.0".into(),
            uptime_secs: 3725,
            pid: 7,
            program_id: None,
            dry_run: false,
            interfaces: vec![IfaceInfo {
                name: "eth0".into(),
                mode: crate::control::protocol::XdpMode::Skb,
                link_id: None,
            }],
            feeds: FeedsSummary {
                count: 1,
                entries: 1500,
                failing: 1,
                held: 0,
            },
            totals: Totals {
                passed_packets: 10,
                dropped_packets: 2_500_000,
                would_drop_packets: 0,
            },
            bans_active: 2,
            health: Default::default(),
            crowdsec: None,
        };
        let out = render(&Reply::Status(s.clone()), 0);
        assert!(
            out.contains("program     not attached: NOT ENFORCING"),
            "{out}"
        );
        assert!(
            out.contains("agent       shield-agent 0.1.0, pid 7, up 1h2m"),
            "{out}"
        );
        assert!(out.contains("1 feed, 1.5k entries, 1 failing"), "{out}");
        assert!(out.contains("10 passed, 2.5M dropped\n"), "{out}");
        s.program_id = Some(9);
        s.dry_run = true;
        let out = render(&Reply::Status(s), 0);
        assert!(out.contains("id 9, DRY RUN"), "{out}");
        assert!(out.contains("0 would drop"), "{out}");
        assert!(
            !out.contains("crowdsec"),
            "an older agent says nothing: {out}"
        );
    }

    #[test]
    fn status_shows_the_crowdsec_link() {
        let mut s = match &crate::control::protocol::tests::sample_replies()[0] {
            Reply::Status(s) => s.clone(),
            r => panic!("{r:?}"),
        };
        s.crowdsec = Some(Box::default());
        let out = render(&Reply::Status(s.clone()), 0);
        assert!(out.contains("crowdsec    not configured\n"), "{out}");
        s.crowdsec = Some(Box::new(CrowdsecStatus {
            configured: true,
            lapi_url: Some("http://127.0.0.1:8080/".into()),
            pushes: true,
            last_pull_unix: Some(1_000),
            last_push_unix: None,
            last_error: Some("LAPI http://127.0.0.1:8080/ is down\n".into()),
            errors_total: 3,
            decisions: 1,
            bans: 1,
            alerts_pushed_total: 0,
            alerts_spooled: 2,
        }));
        let out = render(&Reply::Status(s), 1_065);
        assert!(
            out.contains("crowdsec    http://127.0.0.1:8080/: 1 decision, 1 ban\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "last pull 1m5s ago, last push never, 0 alerts pushed, 2 spooled, 3 errors\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("FAILING: LAPI http://127.0.0.1:8080/ is down\\n\n"),
            "{out}"
        );
    }

    #[test]
    fn feeds_explain_problems() {
        let out = render(
            &Reply::Feeds(vec![FeedRow {
                name: "drop".into(),
                source: "https://example.invalid/drop.txt".into(),
                format: "spamhaus".into(),
                entries: 1000,
                rejected: 2,
                first_rejects: vec!["line 3: `x` is not an IP address or CIDR".into()],
                last_success_unix: Some(1000),
                last_error: Some("HTTP 503".into()),
                held: None,
                next_refresh_secs: Some(60),
                hits: 0,
                origin: "cache, 3h old".into(),
            }]),
            1000 + 598,
        );
        assert!(out.contains("9m58s ago"), "{out}");
        assert!(out.contains("failing"), "{out}");
        assert!(out.contains("drop: last refresh failed: HTTP 503"), "{out}");
        assert!(
            out.contains("  line 3: `x` is not an IP address or CIDR"),
            "{out}"
        );
    }

    #[test]
    fn limits_list_overrides() {
        let info = LimitsInfo {
            rows: vec![LimitRow {
                tier: "default".into(),
                class: "default".into(),
                packets: "1000/s".parse().unwrap(),
                packet_burst: 2000,
                connections: "unlimited".parse().unwrap(),
                connection_burst: 100,
            }],
            overrides: vec![OverrideRow {
                target: "default".into(),
                packets: Some("500/s".parse().unwrap()),
                packet_burst: Some(10),
                connections: None,
                connection_burst: None,
                expires_in_secs: Some(1800),
                persisted: true,
            }],
            adaptive: Some(crate::control::protocol::AdaptiveInfo {
                level: 2,
                max_level: 3,
                divisor: 4,
                drop_rate: 150_000,
                pass_rate: 900,
                drop_threshold: Some("100000/s".parse().unwrap()),
                pass_threshold: None,
            }),
        };
        let out = render(&Reply::Limits(info), 0);
        assert!(
            out.contains("adaptive: level 2/3 (default tier's limits divided by 4); now 150000 drops/s (threshold 100000/s), 900 passes/s (threshold off)"),
            "{out}"
        );
        assert!(
            out.contains("default  default   1000/s   2000    unlimited    100"),
            "{out}"
        );
        assert!(
            out.contains("default   packets 500/s, packet burst 10  in 30m   yes"),
            "{out}"
        );
    }

    #[test]
    fn every_reply_renders() {
        for r in sample_replies() {
            let out = render(&r, 2_000_000_000);
            assert!(out.ends_with('\n') && out.len() > 5, "{r:?} → {out:?}");
        }
        let allow = render(
            &Reply::Allow(vec![AllowRow {
                net: "10.0.0.0/8".parse().unwrap(),
                origin: AllowOrigin::Runtime,
            }]),
            0,
        );
        assert_eq!(allow, "NET         ORIGIN\n10.0.0.0/8  runtime\n");
    }

    #[test]
    fn errors_read_well() {
        let e = ErrorReply {
            kind: ErrorKind::NotFound,
            message: "no ban for 192.0.2.1/32".into(),
        };
        assert_eq!(render_error(&e), "shield-agent: no ban for 192.0.2.1/32");
        let e = ErrorReply {
            kind: ErrorKind::VersionMismatch,
            message: "protocol version 2 is not supported".into(),
        };
        assert!(render_error(&e).contains("upgrade"));
    }
}
