//! `cargo xtask setup`: idempotent, and seconds when everything is present.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, output, succeeds};

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and benchmarks use.
const PACKAGES: &[(&str, &str)] = &[
    (
        "iproute2",
        "network namespaces and veth pairs in the integration tests",
    ),
    ("bpftool", "running xdp-filter's program in the benchmark"),
    ("xdp-tools", "xdp-filter, the benchmark's peer"),
    ("nftables", "nftables comparisons"),
    ("netsniff-ng", "trafgen, a line-rate packet generator"),
    (
        "util-linux",
        "nsenter, which runs the demo's agent in a network namespace; setpriv and unshare for the unit and package tests",
    ),
    ("systemd", "systemd-analyze, which checks the systemd unit"),
    (
        "man-db",
        "man, which renders the packaged man pages in the package test",
    ),
    (
        "prometheus",
        "promtool, which checks and unit-tests packaging/prometheus/shield-alerts.yml",
    ),
    (
        "openssl",
        "throwaway certificates for the CrowdSec mutual-TLS test",
    ),
    (
        "libsqlite3-0",
        "the CrowdSec LAPI binaries the crowdsec tests run (they link it)",
    ),
    (
        "mmdebstrap",
        "the VM test's Debian root file system, from the host's apt sources",
    ),
    ("qemu-system-x86", "the VM test's virtual machine"),
    (
        "qemu-utils",
        "qemu-img, the VM test's throwaway disk over its cached image",
    ),
    (
        "e2fsprogs",
        "mkfs.ext4 -d, the VM test's disks made from directories",
    ),
];

pub fn run() -> anyhow::Result<()> {
    check_root()?;
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    crowdsec_package()?;
    bpffs()?;
    kernel()?;
    cargo_fuzz();
    eprintln!("xtask setup: everything is in place");
    Ok(())
}

/// The cargo-fuzz release the fuzz targets are run with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// True when `cargo fuzz` runs.
pub fn has_cargo_fuzz() -> bool {
    crate::cmd::succeeds(Command::new("cargo").args(["fuzz", "--version"]))
}

/// Installs cargo-fuzz for `cargo xtask fuzz` and the short fuzz run in
/// `cargo xtask test`. Not fatal: without it the test run says it skipped
/// fuzzing, and everything else still works.
pub fn cargo_fuzz() {
    if has_cargo_fuzz() {
        return;
    }
    eprintln!("xtask setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (a minute or two, once)");
    let installed = crate::cmd::run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]));
    if let Err(e) = installed {
        eprintln!("xtask setup: could not install cargo-fuzz ({e:#}); fuzzing will be skipped");
    }
}

fn check_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "shield's setup and tests load XDP programs, create network namespaces and \
             install packages: run this as root (for example `sudo -E cargo xtask ...`)"
        );
    }
    Ok(())
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["toolchain", "list"]).output();
    let has_nightly = installed
        .as_ref()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("nightly"))
        })
        .unwrap_or(false);
    if !has_nightly {
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy,rustfmt",
        ]))
        .context("installing the nightly toolchain (the eBPF build needs it)")?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    for (component, why) in [
        ("rust-src", "build-std for the eBPF target"),
        ("clippy", "linting the eBPF crate"),
    ] {
        if !components.lines().any(|l| l.starts_with(component)) {
            eprintln!("xtask setup: adding {component} to nightly ({why})");
            cmd::run(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                "nightly",
            ]))?;
        }
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    // Run it the way aya-build does: under `rustup run nightly`, which puts
    // the nightly's libLLVM on the library path.
    if let Ok(v) =
        output(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"]))
        && v.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    // bpf-linker must link against the same LLVM as the nightly's rustc; the
    // nightly ships it as a shared object, which we expose as an LLVM prefix.
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.*-rust-* in {}; is the nightly complete?",
                lib.display()
            )
        })?;
    let major = llvm
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libLLVM.so."))
        .and_then(|n| n.split('.').next())
        .context("cannot read the LLVM major version")?
        .to_string();
    let prefix = cmd::root().join("target/xtask/llvm-prefix");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = fs::remove_file(&link);
    symlink(&llvm, &link).with_context(|| format!("linking {}", link.display()))?;
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} (about a minute)"
    );
    cmd::run(
        Command::new("cargo")
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
                "--locked",
                "--force",
            ])
            .env("LLVM_PREFIX", &prefix),
    )
    .context("installing bpf-linker")
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(pkg, _)| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
                .map(|s| s.contains("install ok installed"))
                .unwrap_or(false)
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (pkg, why) in PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
        eprintln!("xtask setup: installing {pkg} ({why})");
    }
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("installing Debian packages")
}

/// CrowdSec 1.4.6 for the crowdsec tests and the fleet benchmark,
/// unpacked (never installed: its postinst registers with CrowdSec's
/// central API, which fails offline) into `<target>/crowdsec/root`, where
/// the tests look for it.
fn crowdsec_package() -> anyhow::Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::root().join("target"));
    let cache = target.join("crowdsec");
    let root = cache.join("root");
    if root.join("usr/bin/crowdsec").exists() {
        return Ok(());
    }
    eprintln!("xtask setup: fetching Debian's crowdsec package (the LAPI the tests run)");
    if !succeeds(Command::new("apt-cache").args(["show", "crowdsec"])) {
        cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    let tmp = cache.join(format!("dl-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    cmd::run(
        Command::new("apt-get")
            .args(["download", "-q", "crowdsec"])
            .current_dir(&tmp),
    )
    .context("apt-get download crowdsec")?;
    let deb = fs::read_dir(&tmp)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    cmd::run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(tmp.join("root")),
    )?;
    if fs::rename(tmp.join("root"), &root).is_err() && !root.join("usr/bin/crowdsec").exists() {
        bail!(
            "could not move the unpacked crowdsec package to {}",
            root.display()
        );
    }
    let _ = fs::remove_dir_all(&tmp);
    let ldd = output(Command::new("ldd").arg(root.join("usr/bin/crowdsec")))?;
    if ldd.contains("not found") {
        bail!("crowdsec's libraries do not all resolve on this system:\n{ldd}");
    }
    Ok(())
}

fn bpffs() -> anyhow::Result<()> {
    let dir = PathBuf::from("/sys/fs/bpf");
    if is_bpffs(&dir) {
        return Ok(());
    }
    fs::create_dir_all(&dir).ok();
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("mounting bpffs at /sys/fs/bpf (pinned maps live there)")
}

fn is_bpffs(dir: &Path) -> bool {
    output(Command::new("stat").args(["-f", "-c", "%T"]).arg(dir))
        .map(|t| t.trim() == "bpf_fs")
        .unwrap_or(false)
}

fn kernel() -> anyhow::Result<()> {
    let mut missing: Vec<String> = Vec::new();
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push(
            "BTF (/sys/kernel/btf/vmlinux): build the kernel with CONFIG_DEBUG_INFO_BTF=y".into(),
        );
    }
    if !succeeds(Command::new("ip").args(["netns", "list"])) {
        missing.push("network namespaces (`ip netns list` failed)".into());
    }
    let release = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let (major, minor) = parse_release(release.trim());
    // The oldest kernel tested (docs/OPERATIONS.md, "Kernels tested").
    if (major, minor) < (6, 1) {
        missing.push("a kernel of 6.1 or later, the oldest shield is tested on".into());
    }
    // bpftool asks the kernel itself: program and map types, and helpers.
    match output(Command::new("bpftool").args(["feature", "probe", "kernel"])) {
        Ok(probe) => {
            for (needle, what) in [
                ("program_type xdp is available", "XDP programs"),
                ("map_type lpm_trie is available", "LPM trie maps"),
                ("map_type lru_hash is available", "LRU hash maps"),
                ("map_type ringbuf is available", "ring buffers"),
                (
                    "bpf_ktime_get_coarse_ns",
                    "the bpf_ktime_get_coarse_ns helper",
                ),
            ] {
                if !probe.contains(needle) {
                    missing.push(format!("{what} (per `bpftool feature probe kernel`)"));
                }
            }
        }
        Err(e) => missing.push(format!("a working `bpftool feature probe kernel`: {e}")),
    }
    if !missing.is_empty() {
        bail!(
            "this kernel lacks what shield needs:\n  - {}",
            missing.join("\n  - ")
        );
    }
    Ok(())
}

fn parse_release(r: &str) -> (u32, u32) {
    let mut it = r
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor)
}
