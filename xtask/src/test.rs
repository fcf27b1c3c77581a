//! `cargo xtask test`: setup, then every test from cheapest to most involved.

use std::process::Command;

use clap::Args;

use crate::{cmd, fuzz, setup};

#[derive(Args)]
pub struct TestArgs {
    /// Skip fmt and clippy (iterate faster on tests; CI never skips them).
    #[arg(long)]
    no_lint: bool,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    setup::run()?;
    if !args.no_lint {
        cmd::cargo(&["fmt", "--all", "--check"])?;
        cmd::cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "shield-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
        cmd::run(
            Command::new("cargo")
                .args([
                    "+nightly",
                    "clippy",
                    "--package",
                    "shield-ebpf",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--",
                    "-D",
                    "warnings",
                ])
                .current_dir(cmd::root()),
        )?;
    }
    // Host unit tests: unprivileged, fast.
    cmd::cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "shield-ebpf",
        "--exclude",
        "shield-tests",
    ])?;
    // A short fuzz of every cargo-fuzz target, when the toolchain allows.
    fuzz::smoke()?;
    // Integration suites drive the real binaries; build them first.
    cmd::cargo(&["build", "--package", "shield-user", "--bins"])?;
    // Root tests share kernel state (netns names, the NIC under test): one at
    // a time. Every file in tests/tests is a suite, so none is forgotten.
    for suite in suites()? {
        cmd::cargo(&[
            "test",
            "--package",
            "shield-tests",
            "--test",
            &suite,
            "--",
            "--test-threads=1",
        ])?;
    }
    eprintln!("xtask test: all green");
    Ok(())
}

/// The integration suites: `tests/tests/*.rs`, cheapest (program tests) first.
fn suites() -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(cmd::root().join("tests/tests"))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    names.sort_by_key(|n| (n != "program", n.clone()));
    Ok(names)
}
