//! Builds the XDP object with aya-build (as aya-template does) so the agent
//! embeds the exact program it was compiled with.
use std::process::Command;

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;
// A build dependency only so that cargo reruns this script when the eBPF
// crate's library changes (Cargo.toml); nothing of it is used here.
use shield_ebpf as _;

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
    share_ebpf_target_dir(ebpf.name.as_str())?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}

/// aya-build builds the eBPF crate in a target directory under this
/// build's `OUT_DIR`, and every way of building shield-user has its own
/// `OUT_DIR` (clippy, test, dev, release, the fuzz crate's sanitizer
/// build): a fresh machine's `cargo xtask test` built the same object
/// three times, about a minute each. That directory is made a link to one
/// shared under the workspace's `target/`, so that every build after the
/// first is a cargo no-op; cargo's own lock on it keeps two builds that run
/// at once apart. aya-build still copies the object into `OUT_DIR`.
fn share_ebpf_target_dir(name: &str) -> anyhow::Result<()> {
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
    // A relative CARGO_TARGET_DIR is relative to where cargo was started,
    // which a build script cannot know.
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => {
            let manifest = std::env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
            std::path::Path::new(&manifest).join("../target")
        }
    };
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let shared = target.join("ebpf-shared").join(name);
    std::fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    let link = out_dir.join("aya-build").join("target").join(name);
    if std::fs::read_link(&link).is_ok_and(|to| to == shared) {
        return Ok(());
    }
    std::fs::create_dir_all(link.parent().context("a parent")?)?;
    // A directory of an older build, or a link to another place.
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&link)?,
        Ok(_) => std::fs::remove_file(&link)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&shared, &link)
        .with_context(|| format!("linking {} to {}", link.display(), shared.display()))
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
