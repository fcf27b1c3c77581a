//! `cargo xtask bench`: runs the benchmark binary (tests crate) in release
//! mode after setup. The numbers are ratios measured side by side in one run.

use std::process::Command;

use clap::Args;

use crate::{cmd, setup};

#[derive(Args)]
pub struct BenchArgs {
    /// Packets per BPF_PROG_TEST_RUN measurement.
    #[arg(long, default_value_t = 2_000_000)]
    repeat: u32,
    /// Measurements per case; the median is reported.
    #[arg(long, default_value_t = 7)]
    rounds: u32,
    /// Write the results into docs/BENCHMARKS.md.
    #[arg(long)]
    write: bool,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    setup::run()?;
    let mut c = Command::new("cargo");
    c.args([
        "run",
        "--release",
        "--quiet",
        "--package",
        "shield-tests",
        "--bin",
        "shield-bench",
        "--",
    ])
    .args([
        "--repeat",
        &args.repeat.to_string(),
        "--rounds",
        &args.rounds.to_string(),
    ])
    .current_dir(cmd::root());
    if args.write {
        c.arg("--write").arg(cmd::root().join("docs/BENCHMARKS.md"));
    }
    cmd::run(&mut c)
}
