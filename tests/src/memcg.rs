//! A memory cgroup of its own for one agent, made before the agent starts,
//! so that everything it allocates is charged to it: its heap, the kernel
//! objects it creates, the page cache of the files it writes, and the BPF
//! maps it creates (charged to the creator's memory cgroup since Linux
//! 5.11, which is why the unit holds `MemoryMax=` to the maps too; see
//! docs/OPERATIONS.md, "Memory"). cgroup v2 (`memory.peak`, `memory.max`)
//! and the v1 memory controller (`memory.max_usage_in_bytes`,
//! `memory.limit_in_bytes`) both work.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Removed on drop, which must come after the agent has exited. Maps it
/// created and left pinned keep their charge in the removed cgroup until
/// the pins go.
pub struct MemCgroup {
    pub dir: PathBuf,
    pub v2: bool,
}

/// What a cgroup holds and held, in MiB.
pub struct Usage {
    pub peak: f64,
    pub now: f64,
    pub anon: f64,
    pub file: f64,
    /// Kernel memory: BPF maps, slabs, page tables, socket buffers.
    pub kernel: f64,
    /// Its peak, where the cgroup version keeps one (v1); NaN on v2.
    pub kernel_peak: f64,
}

impl MemCgroup {
    /// A new memory cgroup named `name`.
    pub fn create(name: &str) -> Result<MemCgroup, String> {
        let root = Path::new("/sys/fs/cgroup");
        // cgroup v2: a child of the root, which may hold processes and
        // children at once; the memory controller must be on for its
        // children.
        if let Ok(ctl) = fs::read_to_string(root.join("cgroup.subtree_control")) {
            if !ctl.split_whitespace().any(|c| c == "memory") {
                return Err(format!(
                    "cgroup v2 without the memory controller for {}'s children (cgroup.subtree_control: `{}`)",
                    root.display(),
                    ctl.trim()
                ));
            }
            let dir = root.join(name);
            fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            return Ok(MemCgroup { dir, v2: true });
        }
        // cgroup v1: a child of this process's own memory cgroup.
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let path = own
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
                ctl.split(',').any(|c| c == "memory").then_some(path)
            })
            .ok_or_else(|| format!("no memory cgroup (v1 or v2) for this process:\n{own}"))?;
        let dir = root
            .join("memory")
            .join(path.trim_start_matches('/'))
            .join(name);
        fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(MemCgroup { dir, v2: false })
    }

    /// A command that moves itself into this cgroup and then runs the
    /// rest of its arguments (the agent), for `AgentHome::start_wrapped`.
    pub fn wrapper(&self) -> Vec<String> {
        vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                "echo $$ > '{}' && exec \"$@\"",
                self.dir.join("cgroup.procs").display()
            ),
            "shield-agent".into(),
        ]
    }

    /// Caps the cgroup's memory at `bytes`, as systemd's `MemoryMax=` does.
    pub fn limit(&self, bytes: u64) -> Result<(), String> {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        let p = self.dir.join(file);
        fs::write(&p, bytes.to_string()).map_err(|e| format!("writing {}: {e}", p.display()))
    }

    fn read(&self, file: &str) -> Result<String, String> {
        let p = self.dir.join(file);
        fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))
    }

    fn bytes(&self, file: &str) -> Result<f64, String> {
        let t = self.read(file)?;
        t.trim()
            .parse::<f64>()
            .map_err(|e| format!("{}/{file}: `{}`: {e}", self.dir.display(), t.trim()))
    }

    /// A `memory.stat` line, in bytes.
    fn stat(&self, key: &str) -> Result<f64, String> {
        let t = self.read("memory.stat")?;
        t.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
            .ok_or_else(|| format!("no `{key}` in {}/memory.stat", self.dir.display()))
    }

    /// What this cgroup holds and held, in MiB.
    pub fn usage(&self) -> Result<Usage, String> {
        let mib = |b: f64| b / 1_048_576.0;
        Ok(if self.v2 {
            Usage {
                peak: mib(self.bytes("memory.peak")?),
                now: mib(self.bytes("memory.current")?),
                anon: mib(self.stat("anon")?),
                file: mib(self.stat("file")?),
                kernel: mib(self.stat("kernel")?),
                kernel_peak: f64::NAN,
            }
        } else {
            Usage {
                peak: mib(self.bytes("memory.max_usage_in_bytes")?),
                now: mib(self.bytes("memory.usage_in_bytes")?),
                anon: mib(self.stat("rss")?),
                file: mib(self.stat("cache")?),
                kernel: mib(self.bytes("memory.kmem.usage_in_bytes")?),
                kernel_peak: mib(self.bytes("memory.kmem.max_usage_in_bytes")?),
            }
        })
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

/// A systemd size (`MemoryMax=1G`: `K`, `M`, `G`, `T` suffixes, powers of
/// 1024, or bytes) in bytes.
pub fn systemd_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, scale) = match v.chars().last()? {
        'K' => (&v[..v.len() - 1], 1 << 10),
        'M' => (&v[..v.len() - 1], 1 << 20),
        'G' => (&v[..v.len() - 1], 1 << 30),
        'T' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(scale)
}

/// The last `key=` of a unit file's text.
pub fn unit_setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_sizes() {
        assert_eq!(systemd_size("1G"), Some(1 << 30));
        assert_eq!(systemd_size("768M"), Some(768 << 20));
        assert_eq!(systemd_size("4096"), Some(4096));
        assert_eq!(systemd_size("1.5G"), None);
        assert_eq!(systemd_size("infinity"), None);
        assert_eq!(systemd_size(""), None);
    }

    #[test]
    fn the_last_setting_counts() {
        let unit = "[Service]\nMemoryMax=1G\nMemoryMaxX=2\nMemoryMax=2G\n";
        assert_eq!(unit_setting(unit, "MemoryMax"), Some("2G"));
        assert_eq!(unit_setting(unit, "MemoryHigh"), None);
    }
}
