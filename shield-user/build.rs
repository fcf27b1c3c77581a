//! Builds the XDP object with aya-build (as aya-template does) so the agent
//! embeds the exact program it was compiled with.
use std::process::Command;

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    record_git_commit();
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "shield-ebpf")
        .ok_or_else(|| anyhow!("shield-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}

/// `shield_build_info{commit}` tells an operator which build runs on a host.
/// A packager may set `SHIELD_GIT_COMMIT` (a source tarball has no .git);
/// otherwise ask git, and say nothing when there is no git to ask.
fn record_git_commit() {
    println!("cargo:rerun-if-env-changed=SHIELD_GIT_COMMIT");
    if std::env::var_os("SHIELD_GIT_COMMIT").is_some() {
        return;
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        out.status.success().then(|| text.trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    // Rebuild when HEAD moves: HEAD itself (checkout) and the branch it names (commit).
    for path in [
        Some("HEAD".to_owned()),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(file) = git(&["rev-parse", "--git-path", &path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    println!("cargo:rustc-env=SHIELD_GIT_COMMIT={commit}");
}
