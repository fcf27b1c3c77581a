//! `cargo xtask test`: setup, then every test from cheapest to most involved.

use std::process::Command;

use clap::Args;

use crate::{cmd, fuzz, setup, stages::Stages, vm};

#[derive(Args)]
pub struct TestArgs {
    /// Skip fmt and clippy (iterate faster on tests; CI never skips them).
    #[arg(long)]
    no_lint: bool,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    let mut stages = Stages::new();
    let result = run_stages(args, &mut stages);
    // Printed on failure too: a red run's table still says where it stopped
    // and what the stages before it cost.
    eprintln!("\nxtask test: where the time went\n{}", stages.table());
    result?;
    eprintln!("xtask test: all green");
    Ok(())
}

fn run_stages(args: &TestArgs, stages: &mut Stages) -> anyhow::Result<()> {
    stages.run("setup", setup::run)?;
    if !args.no_lint {
        stages.run("lint: fmt", || cmd::cargo(&["fmt", "--all", "--check"]))?;
        stages.run("lint: clippy (user crates)", || {
            cmd::cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                "shield-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        })?;
        stages.run("lint: clippy (eBPF crate)", || {
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
            )
        })?;
    }
    // Host unit tests: unprivileged, fast.
    stages.run("unit tests", || {
        cmd::cargo(&[
            "test",
            "--workspace",
            "--exclude",
            "shield-ebpf",
            "--exclude",
            "shield-tests",
        ])
    })?;
    // A short fuzz of every cargo-fuzz target, when the toolchain allows.
    // The sanitizer build is most of a fresh machine's fuzz time: shown apart.
    if fuzz::smoke_possible() {
        stages.run("fuzz: build", fuzz::smoke_build)?;
        stages.run("fuzz: run", fuzz::smoke_run)?;
    }
    // Integration suites drive the real binaries; build them and every
    // suite first, so each suite's line below is its own running time.
    stages.run("build: binaries and suites", || {
        cmd::cargo(&["build", "--package", "shield-user", "--bins"])?;
        cmd::cargo(&["test", "--package", "shield-tests", "--no-run"])
    })?;
    // Root tests share kernel state (netns names, the NIC under test): one at
    // a time. Every file in tests/tests is a suite, so none is forgotten.
    for suite in suites()? {
        stages.run(format!("suite: {suite}"), || {
            cmd::cargo(&[
                "test",
                "--package",
                "shield-tests",
                "--test",
                &suite,
                "--",
                "--test-threads=1",
            ])
        })?;
    }
    // Last: the .deb on Debian 12's kernel with systemd as PID 1, in a VM
    // (xtask/src/vm). Its first run builds the image (about a minute).
    stages.run(format!("vm: {} (QEMU)", vm::DEFAULT_KERNEL), || {
        vm::test_kernel(vm::DEFAULT_KERNEL).map(|_| ())
    })?;
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
