//! One boot-to-poweroff run of the VM under QEMU: a throwaway overlay over
//! the cached image, the payload disk, and two serial ports, the console
//! and the driver's results, both files on the host.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::image::Image;
use crate::cmd;

/// What a run leaves behind, for the verdict and for a failure's reader.
pub struct Run {
    pub console: PathBuf,
    pub results: PathBuf,
}

/// Boots `image` with `payload` as its second disk and waits until the
/// guest powers itself off (reboots in between stay in the same QEMU).
/// `deadline` is the whole run's: a hung guest is killed then.
pub fn boot(image: &Image, payload: &Path, dir: &Path, deadline: Duration) -> anyhow::Result<Run> {
    let overlay = dir.join("disk.qcow2");
    let _ = fs::remove_file(&overlay);
    cmd::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&image.rootfs)
            .arg(&overlay),
    )
    .context("creating the VM's throwaway disk")?;
    let run = Run {
        console: dir.join("console.log"),
        results: dir.join("results.log"),
    };
    for f in [&run.console, &run.results] {
        let _ = fs::remove_file(f);
    }
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-machine", "q35", "-accel", "tcg", "-cpu", "max"])
        .args(["-smp", "2", "-m", "2048"])
        .args(["-display", "none", "-monitor", "none", "-nic", "none"])
        .arg("-kernel")
        .arg(&image.vmlinuz)
        .arg("-initrd")
        .arg(&image.initrd)
        // panic=-1: a kernel panic reboots at once, and the guest driver
        // then reports the boot it did not expect instead of a silent hang.
        .args(["-append", "root=/dev/vda rw console=ttyS0 panic=-1"])
        .arg("-drive")
        .arg(format!("file={},format=qcow2,if=virtio", overlay.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            payload.display()
        ))
        .arg("-serial")
        .arg(format!("file:{}", run.console.display()))
        .arg("-serial")
        .arg(format!("file:{}", run.results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!("xtask vm: {qemu:?}");
    let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
    let started = Instant::now();
    let mut shown = 0;
    loop {
        shown = show_progress(&run.results, shown);
        if let Some(status) = child.try_wait()? {
            show_progress(&run.results, shown);
            if !status.success() {
                bail!("QEMU failed ({status}): {}", stderr(&mut child));
            }
            break;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the VM did not power off within {} s; its console is {}",
                deadline.as_secs(),
                run.console.display()
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
    let _ = fs::remove_file(&overlay);
    Ok(run)
}

fn stderr(child: &mut Child) -> String {
    use std::io::Read as _;
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    text
}

/// Echoes the driver's new result lines as they come, so that a long run
/// shows where it is. Returns how many bytes have been shown.
fn show_progress(results: &Path, shown: usize) -> usize {
    let Ok(bytes) = fs::read(results) else {
        return shown;
    };
    let Some(new) = bytes.get(shown..) else {
        return shown;
    };
    // Whole lines only: the rest is shown once its newline arrives.
    let Some(end) = new.iter().rposition(|b| *b == b'\n') else {
        return shown;
    };
    for line in String::from_utf8_lossy(&new[..=end]).lines() {
        eprintln!("  vm| {}", line.trim_end_matches('\r'));
    }
    shown + end + 1
}
