//! The VM's second disk: what the test brings into the guest. The .deb as
//! `cargo xtask package` builds it, the guest driver, the program-test
//! executable, the sandbox score systemd gives the unit on this host, and
//! what shield should do on the VM's kernel (`expect`).
//! An ext4 image made from a directory (`mkfs.ext4 -d`), so nothing is
//! mounted on the host.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::image::Expect;
use crate::{cmd, package};

/// Builds everything the guest needs and returns the disk image.
pub fn build(work: &Path, expect: Expect) -> anyhow::Result<PathBuf> {
    let dir = work.join("payload");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;

    // The dev profile, as the package test builds it: the suites' build
    // already made those binaries, and a release build would add minutes
    // to a fresh machine's CI for no extra coverage of the packaging.
    let debs = work.join("deb");
    let _ = fs::remove_dir_all(&debs);
    package::run(&package::PackageArgs::new(&debs, "dev"))?;
    let deb = one_with_extension(&debs, "deb")?;
    fs::copy(&deb, dir.join("shield.deb"))?;

    cmd::cargo(&["build", "--package", "shield-tests", "--bin", "vm-guest"])?;
    fs::copy(
        cmd::target_dir().join("debug/vm-guest"),
        dir.join("vm-guest"),
    )?;
    fs::copy(program_tests()?, dir.join("program-tests"))?;
    fs::write(dir.join("host-security-score"), host_security_score()?)?;
    fs::write(dir.join("expect"), expect.as_str())?;

    let size_mb = du_mb(&dir)? * 3 / 2 + 32;
    let img = work.join("payload.img");
    let _ = fs::remove_file(&img);
    cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "payload", "-d"])
            .arg(&dir)
            .arg(&img)
            .arg(format!("{size_mb}M")),
    )
    .context("writing the payload disk")?;
    Ok(img)
}

fn one_with_extension(dir: &Path, ext: &str) -> anyhow::Result<PathBuf> {
    let found: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one .{ext} in {}, found {found:?}", dir.display()),
    }
}

/// The program suite (tests/tests/program.rs) as an executable, from
/// cargo's own report of what it built.
fn program_tests() -> anyhow::Result<PathBuf> {
    let out = cmd::output(
        Command::new("cargo")
            .args([
                "test",
                "--package",
                "shield-tests",
                "--test",
                "program",
                "--no-run",
                "--message-format=json",
            ])
            .current_dir(cmd::root()),
    )?;
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "program"
            && let Some(exe) = msg["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo built no executable for the program suite")
}

/// `systemd-analyze security --offline` of the unit in packaging/: the
/// guest checks that systemd, running it for real, rates it the same.
fn host_security_score() -> anyhow::Result<String> {
    let unit = cmd::root().join("packaging/systemd/shield-agent.service");
    let out = cmd::output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit),
    )?;
    out.lines()
        .find_map(|l| l.split_once("Overall exposure level for"))
        .and_then(|(_, rest)| rest.split(':').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
        .with_context(|| format!("no exposure level in systemd-analyze's answer:\n{out}"))
}

fn du_mb(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        total += e?.metadata()?.len();
    }
    Ok(total / (1 << 20) + 1)
}
