//! `cargo xtask package`: a .deb built by cargo-deb (a pinned version,
//! installed on first use) from the release binaries and the layout in
//! `layout.rs`, maintainer scripts from packaging/debian.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{cmd, layout, setup};

/// cargo-deb 3.8.0 needs rustc 1.85; newer releases may need more than
/// these machines have, so the version is pinned.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where cargo-deb takes the staged files from (see `assets` in
/// shield-user/Cargo.toml): an asset glob has one mode for all its files,
/// so the files of each mode are staged apart.
pub const STAGE: &str = "target/xtask/package-root";
/// The files of mode 0640 (the config).
pub const STAGE_0640: &str = "target/xtask/package-root-0640";

#[derive(Args)]
pub struct PackageArgs {
    /// Directory for the .deb.
    #[arg(long, default_value = "target/debian")]
    out: PathBuf,
    /// Cargo profile of the packaged binaries. The package test uses `dev`
    /// to reuse the test build instead of a second, release one.
    #[arg(long, default_value = "release", hide = true)]
    profile: String,
}

impl PackageArgs {
    /// For other commands that need a .deb: `profile`'s binaries into `out`.
    pub fn new(out: &Path, profile: &str) -> PackageArgs {
        PackageArgs {
            out: out.to_path_buf(),
            profile: profile.to_string(),
        }
    }
}

pub fn run(args: &PackageArgs) -> anyhow::Result<()> {
    setup::run()?;
    cargo_deb()?;
    let root = cmd::root();
    let entries = layout::entries(Path::new("/usr"), None)?;
    for (dir, mode) in [(STAGE, 0o644), (STAGE_0640, 0o640)] {
        let stage = root.join(dir);
        let _ = fs::remove_dir_all(&stage);
        fs::create_dir_all(&stage)?;
        let these: Vec<_> = entries.iter().filter(|e| e.mode == mode).collect();
        layout::write(&stage, &these, false)?;
    }
    if let Some(e) = entries.iter().find(|e| e.mode != 0o644 && e.mode != 0o640) {
        bail!(
            "{} has mode {:o}, which no asset in shield-user/Cargo.toml stages",
            e.dest.display(),
            e.mode
        );
    }
    let out = root.join(&args.out);
    fs::create_dir_all(&out)?;
    cmd::run(
        Command::new("cargo")
            .args(["deb", "--locked", "--package", "shield-user", "--profile"])
            .arg(&args.profile)
            .arg("--output")
            .arg(&out)
            .current_dir(&root),
    )
    .context("building the .deb with cargo-deb")?;
    let deb = newest(&out).context("cargo-deb reported success but wrote no .deb")?;
    cmd::run(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    eprintln!("xtask package: {}", deb.display());
    Ok(())
}

fn debs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect()
        })
        .unwrap_or_default()
}

fn newest(dir: &Path) -> Option<PathBuf> {
    debs(dir)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// Installs cargo-deb `CARGO_DEB_VERSION` unless it is already there.
fn cargo_deb() -> anyhow::Result<()> {
    if let Ok(v) = cmd::output(Command::new("cargo").args(["deb", "--version"]))
        && v.split_whitespace().any(|w| w == CARGO_DEB_VERSION)
    {
        return Ok(());
    }
    eprintln!("xtask package: installing cargo-deb {CARGO_DEB_VERSION} (a few minutes, once)");
    cmd::run(Command::new("cargo").args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))
    .context("installing cargo-deb")?;
    let v = cmd::output(Command::new("cargo").args(["deb", "--version"]))?;
    if !v.contains(CARGO_DEB_VERSION) {
        bail!(
            "cargo deb --version says `{}` after installing {CARGO_DEB_VERSION}",
            v.trim()
        );
    }
    Ok(())
}
