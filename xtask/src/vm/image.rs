//! The VM's disk: a Debian root file system built by mmdebstrap from
//! Debian's packages, through the host's own apt sources, with systemd as
//! PID 1 and the test's two units. Built once per set of inputs and kept
//! under `target/vm/<kernel>/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// A kernel the VM can boot: the Debian suite whose root file system the
/// image is built from, and the suite and package of its kernel.
pub struct Kernel {
    /// What `--kernel` calls it.
    pub name: &'static str,
    /// The userspace's suite.
    pub suite: &'static str,
    /// The kernel package's suite: the userspace's, or an older one.
    pub kernel_suite: &'static str,
    pub package: &'static str,
    pub expect: Expect,
}

impl Kernel {
    /// The kernel package as mmdebstrap's `--include` names it. From
    /// another suite, `package/suite`: apt takes the kernel from that
    /// suite and its dependencies from the userspace's. From the
    /// userspace's own, the bare name, so that a newer kernel from its
    /// security or updates suite wins as on any host.
    fn include(&self) -> String {
        if self.kernel_suite == self.suite {
            self.package.to_string()
        } else {
            format!("{}/{}", self.package, self.kernel_suite)
        }
    }
}

/// What shield should do on a kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Install, run and enforce: every scenario.
    Runs,
    /// Refuse to start, in one sentence that names the missing feature,
    /// and leave the host's traffic alone.
    Refuses,
}

impl Expect {
    /// As the guest reads it from the payload's `expect` file.
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Runs => "runs",
            Expect::Refuses => "refuses",
        }
    }
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "debian12",
        suite: "bookworm",
        kernel_suite: "bookworm",
        package: "linux-image-cloud-amd64",
        expect: Expect::Runs,
    },
    // Debian 13's own userspace with its 6.12: the shield binaries, built
    // against Debian 12's glibc, run on its newer one.
    Kernel {
        name: "debian13",
        suite: "trixie",
        kernel_suite: "trixie",
        package: "linux-image-cloud-amd64",
        expect: Expect::Runs,
    },
    // Debian 11's 5.10 under Debian 12's userspace (the binaries need its
    // glibc): older than shield supports, it lacks the coarse clock helper
    // (5.11). The test is the agent's refusal.
    Kernel {
        name: "debian11",
        suite: "bookworm",
        kernel_suite: "bullseye",
        package: "linux-image-cloud-amd64",
        expect: Expect::Refuses,
    },
];

/// Bumped when what this file writes into the image changes, so that a
/// cached image built by an older recipe is rebuilt.
const RECIPE: u32 = 1;

/// Packages beyond Debian's essential set: systemd as PID 1 (with dbus, as
/// on every real host), the kernel and its initramfs, what the guest
/// driver runs (ip, tc, bpftool, nsenter, ps), and passwd, which the .deb
/// depends on and every installed Debian has (Debian 13 no longer counts
/// it as essential; the VM has no network to fetch it).
const PACKAGES: &[&str] = &[
    "passwd",
    "systemd",
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "iproute2",
    "procps",
    "bpftool",
];

/// A built image: its root file system, and the kernel and initramfs
/// taken out of it for QEMU's `-kernel` and `-initrd`.
pub struct Image {
    pub rootfs: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
}

/// The cached image for `kernel`, built first if its inputs changed.
pub fn ensure(kernel: &Kernel, dir: &Path) -> anyhow::Result<Image> {
    let inputs = inputs(kernel)?;
    let image = Image {
        rootfs: dir.join("rootfs.img"),
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    let stamp = dir.join("inputs.txt");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == inputs)
        && [&image.rootfs, &image.vmlinuz, &image.initrd]
            .iter()
            .all(|p| p.exists())
    {
        eprintln!(
            "xtask vm: the {} image is cached ({})",
            kernel.name,
            dir.display()
        );
        return Ok(image);
    }
    // A half-built image must never look finished: the stamp goes last.
    let _ = fs::remove_file(&stamp);
    build(kernel, dir, &image)?;
    fs::write(&stamp, inputs)?;
    Ok(image)
}

/// Everything the image depends on, as text: when any of it changes, the
/// cached image is stale.
fn inputs(kernel: &Kernel) -> anyhow::Result<String> {
    let mut text = format!(
        "recipe {RECIPE}\nsuite {}\nkernel {}\npackages {}\n",
        kernel.suite,
        kernel.include(),
        PACKAGES.join(",")
    );
    for (name, source) in sources_for(kernel)? {
        text.push_str(&format!("sources {name}\n{source}"));
    }
    Ok(text)
}

/// The host's apt sources that name its own Debian release, with that
/// release's codename replaced by `kernel`'s suite: the same mirrors,
/// another release (`bookworm-security` becomes `trixie-security`, say).
/// The kernel's suite, when it is another, gets a copy of its own.
/// (file name, contents).
fn sources_for(kernel: &Kernel) -> anyhow::Result<Vec<(String, String)>> {
    let mut found = sources_of_suite(kernel.suite)?;
    if kernel.kernel_suite != kernel.suite {
        for (name, text) in sources_of_suite(kernel.kernel_suite)? {
            found.push((format!("kernel-{name}"), text));
        }
    }
    Ok(found)
}

fn sources_of_suite(suite: &str) -> anyhow::Result<Vec<(String, String)>> {
    let release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let host = release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .context("/etc/os-release names no VERSION_CODENAME: is this Debian?")?;
    let mut found = Vec::new();
    for path in apt_sources()? {
        let text = fs::read_to_string(&path)?;
        if !text.contains(&host) {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.push((name, text.replace(&host, suite)));
    }
    if found.is_empty() {
        bail!("none of this host's apt sources names its release `{host}`");
    }
    Ok(found)
}

/// The host's active apt source files: mmdebstrap takes its packages
/// through the same mirrors apt uses here, and nowhere else.
fn apt_sources() -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let list = PathBuf::from("/etc/apt/sources.list");
    if fs::metadata(&list).is_ok_and(|m| m.len() > 0) {
        found.push(list);
    }
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        more.sort();
        found.extend(more);
    }
    if found.is_empty() {
        bail!(
            "no apt sources on this host (/etc/apt/sources.list, /etc/apt/sources.list.d/): mmdebstrap needs a Debian mirror"
        );
    }
    Ok(found)
}

fn build(kernel: &Kernel, dir: &Path, image: &Image) -> anyhow::Result<()> {
    eprintln!(
        "xtask vm: building the {} image with mmdebstrap (about a minute)",
        kernel.name
    );
    fs::create_dir_all(dir)?;
    let root = dir.join("root");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    let kernel_package = kernel.include();
    let include = PACKAGES
        .iter()
        .copied()
        .chain([kernel_package.as_str()])
        .collect::<Vec<_>>()
        .join(",");
    let mut mm = Command::new("mmdebstrap");
    mm.args(["--variant=apt", "--mode=root", "--quiet"])
        .arg(format!("--include={include}"))
        // The host's own apt settings for its mirrors (some serve
        // snapshots whose Release files are past their Valid-Until).
        .arg("--aptopt=Acquire::Check-Valid-Until \"false\"")
        .arg(kernel.suite)
        .arg(&root);
    let sources = dir.join("sources");
    let _ = fs::remove_dir_all(&sources);
    fs::create_dir_all(&sources)?;
    for (name, text) in sources_for(kernel)? {
        let path = sources.join(name);
        fs::write(&path, text)?;
        mm.arg(path);
    }
    cmd::run(&mut mm).context("building the VM's root file system with mmdebstrap")?;
    customize(&root)?;
    copy_boot_file(&root, "vmlinuz-", &image.vmlinuz)?;
    copy_boot_file(&root, "initrd.img-", &image.initrd)?;
    let _ = fs::remove_file(&image.rootfs);
    cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(&root)
            .arg(&image.rootfs)
            .arg("3G"),
    )
    .context("writing the root file system into an ext4 image")?;
    fs::remove_dir_all(&root)?;
    Ok(())
}

/// Copies the one `/boot/<prefix>*` file of the image to `to`.
fn copy_boot_file(root: &Path, prefix: &str, to: &Path) -> anyhow::Result<()> {
    let boot = root.join("boot");
    let found: Vec<PathBuf> = fs::read_dir(&boot)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    let [one] = found.as_slice() else {
        bail!(
            "expected one {prefix}* in {}, found {found:?}",
            boot.display()
        );
    };
    fs::copy(one, to).with_context(|| format!("copying {}", one.display()))?;
    Ok(())
}

/// The image's own files: its file systems, a name, and the two units of
/// the test (see `guest` in tests/src/bin/vm-guest).
fn customize(root: &Path) -> anyhow::Result<()> {
    let write = |path: &str, text: &str| -> anyhow::Result<()> {
        let p = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().expect("absolute path"))?;
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write(
        "/etc/fstab",
        "/dev/vda / ext4 defaults 0 1\nLABEL=payload /payload ext4 ro,nofail 0 0\n",
    )?;
    write("/etc/hostname", "shield-vm\n")?;
    fs::create_dir_all(root.join("payload"))?;
    write("/etc/systemd/system/shield-vm-lab.service", LAB_UNIT)?;
    write("/etc/systemd/system/shield-vm-test.service", TEST_UNIT)?;
    for unit in ["shield-vm-lab.service", "shield-vm-test.service"] {
        let link = root
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        fs::create_dir_all(link.parent().expect("has a parent"))?;
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), &link)?;
    }
    Ok(())
}

/// The lab network, made at every boot before the agent starts, as a
/// host's own interfaces are there before its firewall: a client network
/// namespace joined to this host by a veth pair (see `lab` in the guest).
const LAB_UNIT: &str = "\
[Unit]
Description=shield VM test: the lab network
DefaultDependencies=no
RequiresMountsFor=/payload /run
Before=shield-agent.service network-pre.target
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/payload/vm-guest lab

[Install]
WantedBy=multi-user.target
";

/// The test driver: runs the scenarios of this boot, writes one line per
/// result to the second serial port (a file on the host), and reboots or
/// powers the VM off when it is done.
const TEST_UNIT: &str = "\
[Unit]
Description=shield VM test: the scenarios
After=multi-user.target shield-vm-lab.service
Requires=shield-vm-lab.service

[Service]
Type=oneshot
ExecStart=/payload/vm-guest run
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS1
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
";
