//! `cargo xtask vm-test`: shield on a Debian host of its own, in a VM under
//! QEMU. The .deb is installed there as an operator would, started by
//! systemd as PID 1 on Debian's kernel, attacked with real packets on a
//! veth lab inside the VM, killed, stopped, rebooted and removed; the
//! program tests run on that kernel too. The guest's side of the test is
//! `tests/src/bin/vm-guest`; docs/OPERATIONS.md says what it covers.

mod image;
mod payload;
mod qemu;

use std::{fs, path::Path, time::Duration};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{cmd, setup};

#[derive(Args)]
pub struct VmTestArgs {
    /// The kernel to boot: `debian12` (Debian 12's linux-image-cloud-amd64,
    /// 6.1, with Debian 12's userspace), `debian13` (6.12 with Debian 13's
    /// userspace), or `debian11` (Debian 11's 5.10 under Debian 12's
    /// userspace: older than shield supports, where the test is that the
    /// agent refuses to start in one sentence naming what is missing).
    #[arg(long, default_value = DEFAULT_KERNEL, value_parser = kernel_names())]
    kernel: String,
    /// Every kernel above in turn, then this host's own kernel's features:
    /// prints the kernel x feature table of docs/OPERATIONS.md.
    #[arg(long, conflicts_with = "kernel")]
    all: bool,
}

fn kernel_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(image::KERNELS.iter().map(|k| k.name))
}

/// TCG runs the guest about ten times slower than the host; the whole run
/// (two boots, the program tests, a watchdog timeout of 30 s) takes a few
/// minutes. Four times what it took on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30 * 60);

pub fn run(args: &VmTestArgs) -> anyhow::Result<()> {
    setup::run()?;
    if !args.all {
        return test_kernel(&args.kernel).map(|_| ());
    }
    let mut features = Vec::new();
    let mut failed = Vec::new();
    for kernel in image::KERNELS {
        match test_kernel(kernel.name) {
            Ok(lines) => features.extend(lines),
            Err(e) => {
                eprintln!("xtask vm-test: {}: {e:#}", kernel.name);
                failed.push(kernel.name);
            }
        }
    }
    // This host's kernel, with the guest's own probe (built by the runs).
    let host = cmd::output(
        std::process::Command::new(cmd::target_dir().join("debug/vm-guest")).arg("features"),
    )?;
    features.extend(host.lines().map(str::to_string));
    eprintln!("\n{}", matrix(&features));
    if !failed.is_empty() {
        bail!("the VM test failed on {}", failed.join(", "));
    }
    Ok(())
}

/// What the driver's lines say.
struct Tally<'a> {
    passed: usize,
    failed: Vec<&'a str>,
    done: bool,
}

/// Counts the driver's `PASS` and `FAIL` lines and looks for `DONE`. The
/// serial line ends lines with `\r\n`.
fn tally(text: &str) -> Tally<'_> {
    let lines = || text.lines().map(|l| l.trim_end_matches('\r'));
    Tally {
        passed: lines().filter(|l| l.starts_with("PASS ")).count(),
        failed: lines().filter(|l| l.starts_with("FAIL ")).collect(),
        done: lines().any(|l| l.starts_with("DONE ")),
    }
}

/// The `feature <kernel> | <name> | yes/no | how` lines as a Markdown
/// table: a row per feature, a column per kernel.
fn matrix(lines: &[String]) -> String {
    let mut kernels: Vec<&str> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let mut cells = std::collections::BTreeMap::new();
    for line in lines {
        let Some(rest) = line.trim().strip_prefix("feature ") else {
            continue;
        };
        let parts: Vec<&str> = rest.split(" | ").collect();
        let [kernel, name, yes, ..] = parts.as_slice() else {
            continue;
        };
        if !kernels.contains(kernel) {
            kernels.push(kernel);
        }
        if !names.contains(name) {
            names.push(name);
        }
        cells.insert((*kernel, *name), *yes);
    }
    let mut out = format!("| feature | {} |\n", kernels.join(" | "));
    out.push_str(&format!("|---|{}\n", "---|".repeat(kernels.len())));
    for name in names {
        let row: Vec<&str> = kernels
            .iter()
            .map(|k| cells.get(&(*k, name)).copied().unwrap_or("?"))
            .collect();
        out.push_str(&format!("| {name} | {} |\n", row.join(" | ")));
    }
    out
}

/// The kernel `cargo xtask test` boots.
pub const DEFAULT_KERNEL: &str = "debian12";

/// The whole VM test on one kernel (setup already done). Returns the
/// guest's feature lines.
pub fn test_kernel(name: &str) -> anyhow::Result<Vec<String>> {
    let kernel = image::KERNELS
        .iter()
        .find(|k| k.name == name)
        .with_context(|| format!("no kernel called {name}"))?;
    let dir = cmd::target_dir().join("vm").join(kernel.name);
    let image = image::ensure(kernel, &dir)?;
    let work = dir.join("run");
    fs::create_dir_all(&work)?;
    let payload = payload::build(&work, kernel.expect)?;
    let run = qemu::boot(&image, &payload, &work, DEADLINE)?;
    verdict(&run.results, &run.console)?;
    let text = fs::read_to_string(&run.results)?;
    Ok(text
        .lines()
        .filter(|l| l.trim().starts_with("feature "))
        .map(|l| l.trim().to_string())
        .collect())
}

/// The driver writes `PASS name`, `FAIL name: why` and, once every
/// scenario has run, `DONE n passed`. Anything else is the driver's
/// commentary and only shown.
fn verdict(results: &Path, console: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(results)
        .with_context(|| format!("the VM wrote no results ({})", results.display()))?;
    let Tally {
        passed,
        failed,
        done,
    } = tally(&text);
    if !failed.is_empty() || !done {
        let what = if failed.is_empty() {
            "the driver never finished".to_string()
        } else {
            format!("failed:\n  {}", failed.join("\n  "))
        };
        bail!(
            "the VM test failed: {passed} passed, {what}\nresults: {}\nconsole: {}",
            results.display(),
            console.display()
        );
    }
    eprintln!("xtask vm-test: {passed} scenarios passed in the VM");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_passes_only_with_done_and_no_failure() {
        let t = tally("PASS a (1 s)\r\n  commentary\r\nPASS b\r\nDONE 2 passed\r\n");
        assert_eq!((t.passed, t.failed.len(), t.done), (2, 0, true));
        let t = tally("PASS a\r\nFAIL b: why\r\n");
        assert_eq!(
            (t.passed, t.failed, t.done),
            (1, vec!["FAIL b: why"], false)
        );
        // A driver that stopped without a word (a hung guest, killed).
        assert!(!tally("PASS a\n").done);
    }

    #[test]
    fn the_matrix_has_a_column_per_kernel_and_marks_what_is_unknown() {
        let lines: Vec<String> = [
            "feature 6.1.0 | ring buffer | yes | bpftool",
            "feature 6.1.0 | raw syncookie helpers | no | bpftool",
            "  feature 6.18.4 | ring buffer | yes | bpftool",
            "not a feature line",
        ]
        .map(String::from)
        .to_vec();
        let table = matrix(&lines);
        assert_eq!(
            table,
            "| feature | 6.1.0 | 6.18.4 |\n|---|---|---|\n\
             | ring buffer | yes | yes |\n\
             | raw syncookie helpers | no | ? |\n"
        );
    }
}
