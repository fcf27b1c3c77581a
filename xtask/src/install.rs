//! `cargo xtask install`: a source install with the .deb's layout, under
//! `--prefix` (default /usr/local), optionally below `--destdir` (staging
//! for another packager; then nothing on this host is touched).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::bail;
use clap::Args;

use crate::{cmd, layout, setup};

#[derive(Args)]
pub struct InstallArgs {
    /// Installation prefix for binaries, man pages, completions and the unit.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Stage below this directory instead of `/` (no group, no systemd reload).
    #[arg(long)]
    destdir: Option<PathBuf>,
    /// Cargo profile of the installed binaries (`dev` in the tests).
    #[arg(long, default_value = "release", hide = true)]
    profile: String,
}

pub fn run(args: &InstallArgs) -> anyhow::Result<()> {
    if !args.prefix.is_absolute() {
        bail!(
            "--prefix must be an absolute path, not {}",
            args.prefix.display()
        );
    }
    setup::run()?;
    cmd::cargo(&[
        "build",
        "--profile",
        &args.profile,
        "--package",
        "shield-user",
        "--bins",
    ])?;
    // Cargo puts the dev profile's output in target/debug.
    let dir = if args.profile == "dev" {
        "debug"
    } else {
        &args.profile
    };
    let bins = cmd::target_dir().join(dir);
    let entries = layout::entries(&args.prefix, Some(&bins))?;
    let root = args.destdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    let written = layout::write(&root, &entries, true)?;
    for p in &written {
        eprintln!("installed {}", p.display());
    }
    if args.destdir.is_some() {
        return Ok(());
    }
    // What the .deb's postinst does.
    if !cmd::succeeds(Command::new("getent").args(["group", "shield"])) {
        cmd::run(Command::new("groupadd").args(["--system", "shield"]))?;
    }
    for name in ["shield.toml", "shield.toml.new"] {
        let path = root.join("etc/shield").join(name);
        if path.exists() {
            layout::restrict_config(&path)?;
        }
    }
    std::fs::create_dir_all("/var/lib/shield")?;
    std::fs::set_permissions(
        "/var/lib/shield",
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    if Path::new("/run/systemd/system").exists() {
        cmd::run(Command::new("systemctl").args(["daemon-reload"]))?;
    }
    eprintln!(
        "\nshield is installed. Next: set `interfaces` in /etc/shield/shield.toml, check it with\n  \
         {} check-config /etc/shield/shield.toml\nthen start it with\n  \
         systemctl enable --now shield-agent",
        args.prefix.join("bin/shield-agent").display()
    );
    Ok(())
}
