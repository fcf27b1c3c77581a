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
    /// 6.1, with Debian 12's userspace).
    #[arg(long, default_value = DEFAULT_KERNEL, value_parser = kernel_names())]
    kernel: String,
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
    test_kernel(&args.kernel)
}

/// The kernel `cargo xtask test` boots.
pub const DEFAULT_KERNEL: &str = "debian12";

/// The whole VM test on one kernel (setup already done).
pub fn test_kernel(name: &str) -> anyhow::Result<()> {
    let kernel = image::KERNELS
        .iter()
        .find(|k| k.name == name)
        .with_context(|| format!("no kernel called {name}"))?;
    let dir = cmd::target_dir().join("vm").join(kernel.name);
    let image = image::ensure(kernel, &dir)?;
    let work = dir.join("run");
    fs::create_dir_all(&work)?;
    let payload = payload::build(&work)?;
    let run = qemu::boot(&image, &payload, &work, DEADLINE)?;
    verdict(&run.results, &run.console)
}

/// The driver writes `PASS name`, `FAIL name: why` and, once every
/// scenario has run, `DONE n passed`. Anything else is the driver's
/// commentary and only shown.
fn verdict(results: &Path, console: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(results)
        .with_context(|| format!("the VM wrote no results ({})", results.display()))?;
    let failed: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("FAIL "))
        .collect();
    let done = text.lines().any(|l| l.starts_with("DONE "));
    let passed = text.lines().filter(|l| l.starts_with("PASS ")).count();
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
