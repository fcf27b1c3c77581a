//! What the demo shows: a live line per second and the closing summary,
//! both from the agent's own counters (`shieldctl --json`), the summary
//! checked against what the receiver counted.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// `shieldctl` against the demo's agent.
pub struct Ctl {
    pub bin: PathBuf,
    pub socket: PathBuf,
}

impl Ctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--socket").arg(&self.socket).args(args);
        c
    }

    /// `shieldctl --json ARGS`, its `data`.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self
            .command(&[&["--json"], args].concat())
            .output()
            .context("running shieldctl")?;
        if !out.status.success() {
            bail!(
                "shieldctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("shieldctl --json {} printed no JSON", args.join(" ")))?;
        Ok(v.get("data").cloned().unwrap_or(Value::Null))
    }

    /// `shieldctl ARGS` as an operator would type it, output shown.
    pub fn show(&self, args: &[&str]) -> anyhow::Result<()> {
        eprintln!("$ shieldctl {}", args.join(" "));
        let status = self.command(args).status().context("running shieldctl")?;
        if !status.success() {
            bail!("shieldctl {} failed ({status})", args.join(" "));
        }
        Ok(())
    }

    /// Like `show`, but at most `lines` lines of the output.
    pub fn show_head(&self, args: &[&str], lines: usize) -> anyhow::Result<()> {
        eprintln!("$ shieldctl {}", args.join(" "));
        let out = self.command(args).output().context("running shieldctl")?;
        if !out.status.success() {
            bail!(
                "shieldctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let all: Vec<&str> = text.lines().collect();
        for l in all.iter().take(lines) {
            eprintln!("{l}");
        }
        if all.len() > lines {
            eprintln!("... and {} more", all.len() - lines);
        }
        Ok(())
    }

    pub fn up(&self) -> bool {
        self.command(&["status"])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

/// Packets by (verdict, reason), as `shieldctl stats` reports them.
#[derive(Clone, Default)]
pub struct Stats(BTreeMap<(String, String), u64>);

impl Stats {
    pub fn read(ctl: &Ctl) -> anyhow::Result<Stats> {
        let rows = ctl.json(&["stats"])?;
        let mut map = BTreeMap::new();
        for r in rows.as_array().context("stats: expected an array")? {
            let field = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
            let packets = r.get("packets").and_then(Value::as_u64).unwrap_or(0);
            map.insert((field("verdict"), field("reason")), packets);
        }
        Ok(Stats(map))
    }

    /// `self - base`, per key.
    pub fn since(&self, base: &Stats) -> Stats {
        Stats(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(*base.0.get(k).unwrap_or(&0))))
                .collect(),
        )
    }

    pub fn total(&self, verdict: &str) -> u64 {
        self.0
            .iter()
            .filter(|((v, _), _)| v == verdict)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn get(&self, verdict: &str, reason: &str) -> u64 {
        *self
            .0
            .get(&(verdict.to_string(), reason.to_string()))
            .unwrap_or(&0)
    }

    /// The non-zero reasons of `verdict`, largest first.
    pub fn reasons(&self, verdict: &str) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .0
            .iter()
            .filter(|((verd, _), n)| verd == verdict && **n > 0)
            .map(|((_, r), n)| (r.clone(), *n))
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.1));
        v
    }
}

/// Thousands separated by commas, for reading at a glance.
pub fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    // One decimal, truncated: 99.96% is not "100.0%".
    let tenths = part.saturating_mul(1000) / whole;
    format!("{}.{}%", tenths / 10, tenths % 10)
}

/// The previous sample, and the autobans seen so far (each new one is
/// announced once).
pub struct Live {
    prev: Stats,
    at: std::time::Instant,
    announced: Vec<String>,
}

impl Live {
    pub fn new(base: Stats) -> Live {
        Live {
            prev: base,
            at: std::time::Instant::now(),
            announced: Vec::new(),
        }
    }

    /// Prints the second that just ended: rates by verdict and reason, the
    /// top offenders, and any new autoban.
    pub fn tick(&mut self, ctl: &Ctl, t: u64) -> anyhow::Result<()> {
        let now = Stats::read(ctl)?;
        // Per second of real time: a sample can come late when the agent
        // is busy (writing 65 autobans to its journal, say).
        let secs = self.at.elapsed().as_secs_f64().max(0.001);
        self.at = std::time::Instant::now();
        let d = now.since(&self.prev);
        self.prev = now;
        let rate = |n: u64| num((n as f64 / secs).round() as u64);
        let reasons: Vec<String> = d
            .reasons("drop")
            .iter()
            .map(|(r, n)| format!("{r} {}", rate(*n)))
            .collect();
        eprintln!(
            "t={t:>3}s  passed {:>7}/s   dropped {:>9}/s  {}",
            rate(d.total("pass")),
            rate(d.total("drop")),
            if reasons.is_empty() {
                String::new()
            } else {
                format!("({})", reasons.join(", "))
            }
        );
        let top = ctl.json(&["top", "-n", "4"])?;
        let offenders: Vec<String> = top
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("?");
                        let pps = r.get("pps").and_then(Value::as_f64).unwrap_or(0.0);
                        let banned = r.get("banned_for_secs").is_some_and(|b| !b.is_null());
                        format!(
                            "{} {}/s{}",
                            s("source"),
                            num(pps as u64),
                            if banned { " banned" } else { "" }
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !offenders.is_empty() {
            eprintln!("        top: {}", offenders.join(" | "));
        }
        let bans = ctl.json(&["ban", "list"])?;
        let autobans: Vec<(String, u64)> = bans
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter(|r| r.get("origin").and_then(Value::as_str) == Some("autoban"))
                    .map(|r| {
                        (
                            r.get("net")
                                .and_then(Value::as_str)
                                .unwrap_or("?")
                                .to_string(),
                            r.get("expires_in_secs")
                                .and_then(Value::as_u64)
                                .unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut new: Vec<String> = autobans
            .iter()
            .filter(|(net, _)| !self.announced.contains(net))
            .map(|(net, ttl)| format!("{net} for {}m{:02}s", ttl / 60, ttl % 60))
            .collect();
        if new.len() > 4 {
            let more = new.len() - 3;
            new.truncate(3);
            new.push(format!("and {more} more"));
        }
        if !new.is_empty() {
            eprintln!(
                "        \x1b[1mautoban\x1b[0m ({} in all): {}",
                autobans.len(),
                new.join(", ")
            );
            self.announced
                .extend(autobans.into_iter().map(|(net, _)| net));
        }
        Ok(())
    }

    pub fn autobans(&self) -> usize {
        self.announced.len()
    }
}
