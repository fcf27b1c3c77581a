//! `cargo xtask bench`: the benchmarks, in release mode, after setup. Every
//! part measures shield side by side with a baseline or a peer in the same
//! run (these machines are noisy; ratios within a run are what count):
//! - `packets`: per-packet cost through BPF_PROG_TEST_RUN against an empty
//!   program and xdp-filter (`shield-bench`);
//! - `rate`: rate-limit accuracy on one and two CPUs (`shield-bench`);
//! - `scaling`: per-packet cost against feed size and tracked sources,
//!   with PNG plots (`shield-bench`);
//! - `path`: packets per second through a veth pair against nftables
//!   (`path-bench`);
//! - `feeds`: a million-entry feed loaded and refreshed against nftables,
//!   and the real agent's memory, scrape time and ban latency
//!   (`feed-bench`);
//! - `fleet`: CrowdSec LAPI decisions applied by the real agent, and an
//!   autoban's propagation between two agents through a real LAPI
//!   (`fleet-bench`);
//! - `memory`: the real agent's peak memory, process and memory cgroup
//!   (BPF maps included), holding a million-entry feed, 100k LAPI
//!   decisions and 10k autobans at once, against the unit's `MemoryMax=`
//!   (`memory-bench`).
//!
//! It prints a summary table, writes docs/BENCHMARKS.md (each part its
//! marked section, plus, when every part ran, the summary with the
//! machine, kernel and command; `--no-write` leaves the file alone) and with `--json FILE` writes
//! `{"results": [{"name", "value", "unit"}...]}`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::{cmd, setup};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Part {
    Packets,
    Rate,
    Scaling,
    Path,
    Feeds,
    Fleet,
    Memory,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Fewer rounds and shorter runs: under 10 minutes on a 2-core machine.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON: {"results": [{"name", "value", "unit"}...]}.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run only these parts (repeatable; all by default).
    #[arg(long, value_enum)]
    only: Vec<Part>,
    /// Print the results without rewriting docs/BENCHMARKS.md.
    #[arg(long)]
    no_write: bool,
    /// Packets per BPF_PROG_TEST_RUN in the per-packet part.
    #[arg(long)]
    repeat: Option<u32>,
    /// Rounds of the per-packet part; the median is reported.
    #[arg(long)]
    rounds: Option<u32>,
    /// Rounds of the feed part (in process, nftables, agent each time).
    #[arg(long)]
    feed_rounds: Option<u32>,
    /// Lines in the generated feed.
    #[arg(long, default_value_t = 1_000_000)]
    feed_entries: u64,
}

/// The issue's result names, in the order the summary lists them, with
/// the goal each one is held to (where it has one of its own).
const SUMMARY: [(&str, &str); 26] = [
    ("xdp.empty_ns", "baseline"),
    ("xdp.pass_ns", "≤ empty + 100, ≤ xdp_filter"),
    ("xdp.feed_drop_ns@1k", ""),
    ("xdp.feed_drop_ns@100k", ""),
    ("xdp.feed_drop_ns@1m", "≤ 1.2 × @1k (prefix hits)"),
    ("xdp.ratelimit_drop_ns", ""),
    ("xdp.xdp_filter_ns", "the peer"),
    ("rate.accuracy_1cpu", "1 ± 0.05"),
    ("rate.accuracy_2cpu", "1 ± 0.05"),
    ("path.pps.none", ""),
    ("path.pps.shield_feed_drop", ""),
    ("path.pps.shield_ratelimit", "≥ 1.3 × nft_meter"),
    ("path.pps.nft_drop", ""),
    ("path.pps.nft_meter", "the peer"),
    ("control.feed_apply_1m_s", "≤ 2"),
    ("control.feed_refresh_1pct_ms", "≤ 200"),
    ("control.ban_latency_ms", "≤ 50"),
    ("control.agent_rss_mib@1m", "≤ 64"),
    ("control.scrape_ms@1m", "≤ 100"),
    ("control.status_p99_ms@load", "≤ 20"),
    ("control.status_p99_ms@idle", "beside @load"),
    ("fleet.lapi_100k_apply_s", "≤ 2"),
    ("fleet.propagation_ms", "≤ poll (1 s) + 500"),
    ("agent.peak_rss_mib", ""),
    ("agent.cgroup_peak_mib", "≤ ½ MemoryMax="),
    ("unit.memory_max_mib", "the unit's"),
];

struct Row {
    name: String,
    value: Option<f64>,
    unit: String,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    setup::run()?;
    let started = Instant::now();
    let want = |p: Part| args.only.is_empty() || args.only.contains(&p);
    // feed-bench starts the real agent and shieldctl, which it finds next
    // to itself in target/release; one build makes all of them.
    cmd::cargo(&[
        "build",
        "--release",
        "--package",
        "shield-user",
        "--package",
        "shield-tests",
        "--bins",
    ])?;
    let root = cmd::root();
    let doc = root.join("docs/BENCHMARKS.md");
    let tmp = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let command = invocation();
    let mut common = vec!["--command".to_string(), command.clone()];
    if args.quick {
        common.push("--quick".into());
    }
    let mut jsons = Vec::new();
    let mut run_bin = |bin: &str, part_args: Vec<String>| -> anyhow::Result<()> {
        let json = tmp.join(format!("{bin}-{}.json", jsons.len()));
        let mut all = part_args;
        all.extend(common.iter().cloned());
        all.extend(["--json".into(), json.to_string_lossy().into_owned()]);
        if !args.no_write {
            all.extend(["--write".into(), doc.to_string_lossy().into_owned()]);
        }
        bench_bin(bin, &all)?;
        jsons.push(json);
        Ok(())
    };

    let shield_parts: Vec<&str> = [
        (Part::Packets, "packets"),
        (Part::Rate, "rate"),
        (Part::Scaling, "scaling"),
    ]
    .into_iter()
    .filter(|(p, _)| want(*p))
    .map(|(_, n)| n)
    .collect();
    for part in &shield_parts {
        let mut a = vec!["--only".into(), (*part).into()];
        if *part == "packets" {
            if let Some(r) = args.repeat {
                a.extend(["--repeat".into(), r.to_string()]);
            }
            if let Some(r) = args.rounds {
                a.extend(["--rounds".into(), r.to_string()]);
            }
        }
        if *part == "scaling" {
            a.extend([
                "--plots".into(),
                root.join("docs").to_string_lossy().into_owned(),
            ]);
        }
        run_bin("shield-bench", a)?;
    }
    if want(Part::Path) {
        run_bin("path-bench", Vec::new())?;
    }
    if want(Part::Feeds) {
        let rounds = args.feed_rounds.unwrap_or(if args.quick { 2 } else { 5 });
        let a = vec![
            "--rounds".to_string(),
            rounds.to_string(),
            "--entries".into(),
            args.feed_entries.to_string(),
        ];
        run_bin("feed-bench", a)?;
    }
    if want(Part::Fleet) {
        run_bin("fleet-bench", Vec::new())?;
    }
    if want(Part::Memory) {
        let unit = root.join("packaging/systemd/shield-agent.service");
        run_bin(
            "memory-bench",
            vec!["--unit".into(), unit.to_string_lossy().into_owned()],
        )?;
    }

    let rows = merge(&jsons)?;
    let table = summary(&rows);
    println!("\n{table}");
    if let Some(path) = &args.json {
        write_json(path, &rows)?;
        eprintln!("wrote {}", path.display());
    }
    // The summary stands for one run of every part: a run of some parts
    // rewrites their own sections only.
    if !args.no_write && args.only.is_empty() {
        let meta = format!(
            "Measured by `{command}` on {}, kernel {}, {} (took {:.1} min; load average at the end {}). \
             Other developers' builds and tests shared the machine while this ran.\n\n{table}",
            today(),
            output_or(Command::new("uname").arg("-r")),
            machine(),
            started.elapsed().as_secs_f64() / 60.0,
            std::fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        );
        write_section(&doc, "benchsummary", &meta)?;
        eprintln!("wrote {}", doc.display());
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// Runs a benchmark binary of the tests crate in release mode. feed-bench
/// has no `--quick` of its own: fewer rounds are its quick.
fn bench_bin(bin: &str, args: &[String]) -> anyhow::Result<()> {
    let args: Vec<&String> = if bin == "feed-bench" {
        args.iter().filter(|a| *a != "--quick").collect()
    } else {
        args.iter().collect()
    };
    let mut c = Command::new("cargo");
    c.args([
        "run",
        "--release",
        "--quiet",
        "--package",
        "shield-tests",
        "--bin",
        bin,
        "--",
    ])
    .args(args)
    .current_dir(cmd::root());
    cmd::run(&mut c)
}

/// Every part's results under the issue's names, in the summary's order.
fn merge(files: &[PathBuf]) -> anyhow::Result<Vec<Row>> {
    let mut all = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
        for r in v["results"].as_array().into_iter().flatten() {
            all.push(Row {
                name: r["name"].as_str().unwrap_or_default().to_string(),
                value: r["value"].as_f64(),
                unit: r["unit"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    // Only the stable names: the parts' other figures are in their own
    // sections of BENCHMARKS.md.
    let rank = |n: &str| SUMMARY.iter().position(|(s, _)| *s == n);
    all.retain(|r| rank(&r.name).is_some());
    all.sort_by_key(|r| rank(&r.name));
    Ok(all)
}

fn write_json(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let results: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::json!({ "name": r.name, "value": r.value, "unit": r.unit }))
        .collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({ "results": results }))?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn show(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

/// Whether `name` meets its goal, judged on this run's values; `None`
/// where it has no goal of its own or a value it needs is missing.
fn verdict(name: &str, rows: &[Row]) -> Option<String> {
    let v = |n: &str| rows.iter().find(|r| r.name == n).and_then(|r| r.value);
    let x = v(name)?;
    let ok = match name {
        "xdp.pass_ns" => {
            return Some(format!(
                "{} (+100), {} (≤ xdp_filter)",
                met(x - v("xdp.empty_ns")? <= 100.0),
                met(x <= v("xdp.xdp_filter_ns")?)
            ));
        }
        "xdp.feed_drop_ns@1m" => x <= 1.2 * v("xdp.feed_drop_ns@1k")?,
        "rate.accuracy_1cpu" | "rate.accuracy_2cpu" => (x - 1.0).abs() <= 0.05,
        "path.pps.shield_ratelimit" => x >= 1.3 * v("path.pps.nft_meter")?,
        "control.feed_apply_1m_s" => x <= 2.0,
        "control.feed_refresh_1pct_ms" => x <= 200.0,
        "control.ban_latency_ms" => x <= 50.0,
        "control.agent_rss_mib@1m" => x <= 64.0,
        "control.scrape_ms@1m" => x <= 100.0,
        "control.status_p99_ms@load" => x <= 20.0,
        "fleet.lapi_100k_apply_s" => x <= 2.0,
        "fleet.propagation_ms" => x <= 1500.0,
        // The unit's headroom (docs/OPERATIONS.md, "Memory").
        "agent.cgroup_peak_mib" => 2.0 * x <= v("unit.memory_max_mib")?,
        _ => return None,
    };
    Some(met(ok).to_string())
}

/// The summary: the issue's names in its order, with their goals.
fn summary(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| result | value | unit | goal | |");
    let _ = writeln!(s, "|---|---:|---|---|---|");
    for r in rows {
        let goal = SUMMARY
            .iter()
            .find(|(n, _)| *n == r.name)
            .map_or("", |(_, g)| *g);
        let verdict = verdict(&r.name, rows).unwrap_or_default();
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {goal} | {verdict} |",
            r.name,
            show(r.value),
            r.unit
        );
    }
    s
}

fn output_or(c: &mut Command) -> String {
    cmd::output(c)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn today() -> String {
    output_or(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{cpus} × {model}")
}

/// Replaces the marked section `name` of `path` (or appends one).
fn write_section(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &old[..b], &old[e + end.len()..]),
        (None, None) => format!("{}\n\n{section}\n", old.trim_end()),
        _ => anyhow::bail!("{} has a broken {begin} … {end} pair", path.display()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// This run's command line as the user typed it (`cargo xtask bench
/// ...`), for the report to say what produced its numbers.
fn invocation() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, value: f64) -> Row {
        Row {
            name: name.into(),
            value: Some(value),
            unit: String::new(),
        }
    }

    #[test]
    fn goals_are_judged_on_the_runs_own_values() {
        let rows = vec![
            row("xdp.empty_ns", 6.0),
            row("xdp.pass_ns", 66.0),
            row("xdp.xdp_filter_ns", 32.0),
            row("xdp.feed_drop_ns@1k", 47.0),
            row("xdp.feed_drop_ns@1m", 50.0),
            row("path.pps.shield_ratelimit", 500.0),
            row("path.pps.nft_meter", 400.0),
            row("rate.accuracy_2cpu", 0.94),
            row("agent.cgroup_peak_mib", 300.0),
            row("unit.memory_max_mib", 512.0),
        ];
        assert_eq!(
            verdict("xdp.pass_ns", &rows).unwrap(),
            "met (+100), **not met** (≤ xdp_filter)"
        );
        assert_eq!(verdict("xdp.feed_drop_ns@1m", &rows).unwrap(), "met");
        assert_eq!(
            verdict("path.pps.shield_ratelimit", &rows).unwrap(),
            "**not met**"
        );
        assert_eq!(verdict("rate.accuracy_2cpu", &rows).unwrap(), "**not met**");
        assert_eq!(
            verdict("agent.cgroup_peak_mib", &rows).unwrap(),
            "**not met**"
        );
        // No goal of its own, or a value it needs is missing: no verdict.
        assert_eq!(verdict("xdp.empty_ns", &rows), None);
        assert_eq!(verdict("control.ban_latency_ms", &rows), None);
    }

    #[test]
    fn only_the_issues_names_are_kept_in_its_order() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("r.json");
        std::fs::write(
            &f,
            r#"{"results":[{"name":"scale.x","value":1,"unit":"ns"},{"name":"xdp.pass_ns","value":60,"unit":"ns"},{"name":"xdp.empty_ns","value":null,"unit":"ns"}]}"#,
        )
        .unwrap();
        let rows = merge(&[f]).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["xdp.empty_ns", "xdp.pass_ns"]);
        assert_eq!(rows[0].value, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
