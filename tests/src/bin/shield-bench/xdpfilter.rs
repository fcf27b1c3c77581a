//! The peer: xdp-filter from Debian's xdp-tools. It is a foreign program
//! (loaded by its own tool, not by aya), so it is run through `bpftool prog
//! run`, which makes the same BPF_PROG_TEST_RUN syscall; an empty program
//! run both ways shows the two drivers agree.

use std::{net::Ipv4Addr, path::Path, process::Command};

/// Average ns per run of program `id` on `frame`, as the kernel measures it.
pub fn bpftool_run(id: u32, frame: &Path, repeat: u32) -> f64 {
    let out = Command::new("bpftool")
        .args(["prog", "run", "id", &id.to_string(), "data_in"])
        .arg(frame)
        .args(["repeat", &repeat.to_string()])
        .output()
        .expect("run bpftool");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bpftool prog run: {text}");
    let ns = text
        .split("duration (average):")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|w| w.trim_end_matches("ns"))
        .unwrap_or_else(|| panic!("no duration in bpftool output: {text}"));
    ns.parse()
        .unwrap_or_else(|_| panic!("bad duration {ns:?} in {text}"))
}

/// xdp-filter attached (skb mode) to a throwaway veth with its default
/// features (every protocol and address family) and `addresses` source
/// IPv4 rules that never match the probe. Removed on drop.
pub struct XdpFilter {
    pub id: u32,
    dev: String,
}

impl XdpFilter {
    pub fn start(addresses: u32) -> Option<XdpFilter> {
        let dev = format!("shb{}", std::process::id() % 100_000);
        let peer = format!("{dev}p");
        let _ = Command::new("ip").args(["link", "del", &dev]).output();
        let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
        if !ok(Command::new("ip").args(["link", "add", &dev, "type", "veth", "peer", "name", &peer]))
        {
            return None;
        }
        let mut f = XdpFilter { id: 0, dev };
        let _ = Command::new("ip")
            .args(["link", "set", &f.dev, "up"])
            .output();
        let loaded = Command::new("xdp-filter")
            .args(["load", "--mode", "skb", &f.dev])
            .output()
            .ok()?;
        if !loaded.status.success() {
            eprintln!(
                "xdp-filter load failed: {}",
                String::from_utf8_lossy(&loaded.stderr)
            );
            return None;
        }
        // 198.18.0.0/15 is benchmarking space: never the probe's source.
        for i in 0..addresses {
            let a = Ipv4Addr::from(0xc612_0000u32 + i).to_string();
            if !ok(Command::new("xdp-filter").args(["ip", &a, "--mode", "src"])) {
                eprintln!("xdp-filter ip {a} failed");
                return None;
            }
        }
        let show = Command::new("bpftool")
            .args(["prog", "show"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&show.stdout);
        let id = text
            .lines()
            // The newest: ours, loaded a moment ago.
            .rfind(|l| l.contains("name xdpfilt_"))?
            .split(':')
            .next()?
            .trim()
            .parse()
            .ok()?;
        f.id = id;
        Some(f)
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = Command::new("xdp-filter")
            .args(["unload", "--all", &self.dev])
            .output();
        let _ = Command::new("ip").args(["link", "del", &self.dev]).output();
    }
}
