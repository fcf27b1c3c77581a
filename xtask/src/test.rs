//! `cargo xtask test`: setup, then every test from cheapest to most involved.

use std::process::Command;

use clap::Args;

use crate::{cmd, setup};

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
    // Root tests share kernel state (netns names, the NIC under test): one at a time.
    for suite in ["program", "netns"] {
        cmd::cargo(&[
            "test",
            "--package",
            "shield-tests",
            "--test",
            suite,
            "--",
            "--test-threads=1",
        ])?;
    }
    eprintln!("xtask test: all green");
    Ok(())
}
