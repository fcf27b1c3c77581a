//! Holding rtnl, the kernel's lock over all network configuration, the way
//! a busy host does: a network namespace full of devices, torn down. The
//! kernel unregisters all of a dying namespace's devices in one batch
//! under rtnl, and a device's teardown costs in proportion to its queues,
//! so a namespace of veth pairs with thousands of queues each holds the
//! lock for seconds (about 30 ms per pair with 2048 queues each way, on a
//! loaded 2-core host), without any traffic or kernel module.

use std::{
    fs,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace full of queue-heavy devices, ready to be torn down.
pub struct RtnlHold {
    ns: String,
    released: bool,
}

impl RtnlHold {
    /// Makes the namespace with `pairs` veth pairs (2048 queues each way;
    /// a pair costs about 12 MiB of kernel memory until the teardown).
    pub fn prepare(pairs: u32) -> RtnlHold {
        let ns = format!(
            "shr-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &ns]);
        let hold = RtnlHold {
            ns,
            released: false,
        };
        let batch = std::env::temp_dir().join(format!("{}.batch", hold.ns));
        let q = "numtxqueues 2048 numrxqueues 2048";
        let text: String = (0..pairs)
            .map(|i| format!("link add v{i} {q} type veth peer name p{i} {q}\n"))
            .collect();
        fs::write(&batch, text).expect("write the ip batch");
        run(&["ip", "-n", &hold.ns, "-batch", batch.to_str().unwrap()]);
        let _ = fs::remove_file(&batch);
        hold
    }

    /// Tears the namespace down, and returns a probe that is blocked on
    /// rtnl behind the teardown; `None` if no probe could be caught
    /// waiting (the teardown was over before one asked).
    pub fn release(mut self) -> Option<Probe> {
        run(&["ip", "netns", "del", &self.ns]);
        self.released = true;
        // The teardown runs in a kernel worker soon after; a probe that
        // asks before it starts is answered at once, so ask again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let mut probe = Probe::start();
            loop {
                if probe.blocked_on_rtnetlink() {
                    return Some(probe);
                }
                if probe.done() {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        None
    }
}

impl Drop for RtnlHold {
    fn drop(&mut self) {
        if !self.released {
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        }
    }
}

/// `ip link show dev lo`: a request that needs rtnl.
pub struct Probe {
    child: Child,
}

impl Probe {
    fn start() -> Probe {
        let child = Command::new("ip")
            .args(["-o", "link", "show", "dev", "lo"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run ip");
        Probe { child }
    }

    /// Whether the probe is asleep inside the kernel's netlink handling
    /// (its kernel stack, which only a sleeping task shows).
    fn blocked_on_rtnetlink(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/stack", self.child.id()))
            .is_ok_and(|s| s.contains("netlink_rcv_skb"))
    }

    /// Whether the probe has its answer: rtnl was free for it.
    pub fn done(&mut self) -> bool {
        self.child.try_wait().expect("wait for ip").is_some()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
