//! `cargo xtask bench`: the benchmarks, in release mode, after setup. Two
//! parts, both measured side by side against a peer in the same run:
//! - `packets`: per-packet cost of the XDP pipeline against an empty
//!   program and xdp-filter (`shield-bench`);
//! - `feeds`: loading and refreshing a million-entry threat feed, in
//!   process and through the real agent, against nftables (`feed-bench`);
//! - `fleet`: CrowdSec LAPI decisions applied by the real agent, and an
//!   autoban's propagation between two agents (`fleet-bench`).
//!
//! `--write` rewrites each part's marked section of docs/BENCHMARKS.md.

use std::process::Command;

use clap::{Args, ValueEnum};

use crate::{cmd, setup};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Packets,
    Feeds,
    Fleet,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Run only this part (all by default: packets, feeds, fleet).
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Packets per BPF_PROG_TEST_RUN measurement.
    #[arg(long, default_value_t = 2_000_000)]
    repeat: u32,
    /// Measurements per packet case; the median is reported.
    #[arg(long, default_value_t = 7)]
    rounds: u32,
    /// Rounds of the feed benchmark (in process, nftables, agent each time).
    #[arg(long, default_value_t = 5)]
    feed_rounds: u32,
    /// Lines in the generated feed.
    #[arg(long, default_value_t = 1_000_000)]
    feed_entries: u64,
    /// Write the results into docs/BENCHMARKS.md.
    #[arg(long)]
    write: bool,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    setup::run()?;
    if args.only.is_none() || args.only == Some(Part::Packets) {
        let (repeat, rounds) = (args.repeat.to_string(), args.rounds.to_string());
        bench_bin(
            "shield-bench",
            &["--repeat", &repeat, "--rounds", &rounds],
            args.write,
        )?;
    }
    if args.only.is_none() || args.only == Some(Part::Feeds) {
        // The feed benchmark starts the real agent and shieldctl, which
        // it finds next to itself in target/release.
        cmd::cargo(&["build", "--release", "--package", "shield-user", "--bins"])?;
        let (rounds, entries) = (args.feed_rounds.to_string(), args.feed_entries.to_string());
        bench_bin(
            "feed-bench",
            &[
                "--rounds",
                &rounds,
                "--entries",
                &entries,
                "--command",
                &invocation(),
            ],
            args.write,
        )?;
    }
    if args.only.is_none() || args.only == Some(Part::Fleet) {
        cmd::cargo(&["build", "--release", "--package", "shield-user", "--bins"])?;
        bench_bin("fleet-bench", &["--command", &invocation()], args.write)?;
    }
    Ok(())
}

/// Runs a benchmark binary of the tests crate in release mode; with
/// `write`, it rewrites its own section of docs/BENCHMARKS.md.
fn bench_bin(bin: &str, args: &[&str], write: bool) -> anyhow::Result<()> {
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
    if write {
        c.arg("--write").arg(cmd::root().join("docs/BENCHMARKS.md"));
    }
    cmd::run(&mut c)
}

/// This run's command line as the user typed it (`cargo xtask bench
/// ...`), for the report to say what produced its numbers.
fn invocation() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}
