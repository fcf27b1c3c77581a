//! Processes, namespaces and files, each behind a guard that removes it
//! again, plus the sweep that removes what an interrupted run left behind
//! (a Ctrl-C or a kill runs no destructor).

use std::{
    fmt::Display,
    fs,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

pub type Res<T> = Result<T, String>;

/// `.ctx(|| "what was being done")` on any error that can be shown.
pub trait Ctx<T> {
    fn ctx<S: Display>(self, what: impl FnOnce() -> S) -> Res<T>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx<S: Display>(self, what: impl FnOnce() -> S) -> Res<T> {
        self.map_err(|e| format!("{}: {e}", what()))
    }
}

/// Every name this benchmark gives to a namespace, pin directory or temp
/// directory starts with this and then the owning process id, which is how
/// the sweep tells a dead run's leftovers from a live run's.
pub const TAG: &str = "shfb";

pub fn tag() -> String {
    format!("{TAG}-{}", std::process::id())
}

/// Runs `cmd` to completion; fails with its stderr.
pub fn run(cmd: &mut Command) -> Res<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().ctx(|| format!("starting {shown}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Res<Netns> {
        run(Command::new("ip").args(["netns", "add", &name]))?;
        Ok(Netns { name })
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Res<()> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args)).map(drop)
    }

    /// Makes `cmd` start inside this namespace, and die with us.
    ///
    /// Only the network namespace changes: unlike `ip netns exec`, the
    /// child keeps the host's mount namespace (bpffs pins stay visible) and
    /// no extra process runs, so a timing covers the command alone.
    pub fn enter(&self, cmd: &mut Command) -> Res<()> {
        let path = format!("/run/netns/{}", self.name);
        let f = fs::File::open(&path).ctx(|| format!("opening {path}"))?;
        // SAFETY: setns and prctl are async-signal-safe; `f` stays open
        // inside the closure until the command is dropped.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // A benchmark killed outright must not leave an agent
                // running in a namespace nobody will delete.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A directory, removed with its contents on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn create(path: PathBuf) -> Res<TempDir> {
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).ctx(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How a command that was timed ended.
pub struct Timed {
    /// Spawn to exit; for a command stopped at its limit, the limit.
    pub wall: Duration,
    /// False when the command was still running at its limit and killed.
    pub finished: bool,
    /// Peak resident memory of the process, from wait4's rusage.
    pub max_rss_mib: f64,
}

/// Runs `cmd` (stdout discarded, stderr to `errlog`) and times it from
/// spawn to exit; fails with the first part of its stderr. With a `limit`,
/// a command still running then is killed and reported unfinished.
pub fn timed(cmd: &mut Command, errlog: &Path, limit: Option<Duration>) -> Res<Timed> {
    let shown = format!("{cmd:?}");
    let err = fs::File::create(errlog).ctx(|| format!("creating {}", errlog.display()))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
    let t = Instant::now();
    let child = cmd.spawn().ctx(|| format!("starting {shown}"))?;
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut finished = true;
    // wait4 rather than Child::wait: it also gives the child's peak RSS.
    // Polled with WNOHANG only when there is a limit to watch.
    loop {
        let flags = if limit.is_some() { libc::WNOHANG } else { 0 };
        // SAFETY: our own child, reaped here only (Child never waits on
        // drop).
        let rc = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
        if rc == pid {
            break;
        }
        if rc < 0 {
            return Err(format!(
                "waiting for {shown}: {}",
                std::io::Error::last_os_error()
            ));
        }
        if limit.is_some_and(|l| t.elapsed() >= l) && finished {
            finished = false;
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            continue;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let wall = t.elapsed();
    if finished && !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let text = fs::read_to_string(errlog).unwrap_or_default();
        let head: String = text.chars().take(2000).collect();
        return Err(format!(
            "{shown} failed (wait status {status}): {}",
            head.trim()
        ));
    }
    Ok(Timed {
        wall: if finished {
            wall
        } else {
            limit.unwrap_or(wall)
        },
        finished,
        max_rss_mib: ru.ru_maxrss as f64 / 1024.0,
    })
}

/// A long-running child: SIGTERM on drop, SIGKILL if it does not exit.
pub struct Daemon {
    pub child: Child,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then up to `grace` for it to exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// (VmRSS, VmHWM) of `pid` in MiB.
pub fn memory(pid: i32) -> Res<(f64, f64)> {
    let path = format!("/proc/{pid}/status");
    let s = fs::read_to_string(&path).ctx(|| format!("reading {path}"))?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .ok_or_else(|| format!("no {name} in {path}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The three load averages, as the kernel shows them.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The pid in a name `shfb-<pid>...`, when it has one.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TAG)?.strip_prefix('-')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn dead(name: &str) -> bool {
    owner(name).is_some_and(|pid| {
        pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// Removes namespaces, pin directories and temp directories of earlier
/// runs that did not get to clean up (their process is gone). A pin
/// directory goes through the same removal the agent's `--detach` uses, so
/// an XDP link left pinned is detached too.
pub fn sweep_stale(bpffs: &Path) {
    if let Ok(list) = run(Command::new("ip").args(["netns", "list"])) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if dead(name) {
                eprintln!("removing namespace {name} left by an interrupted run");
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }
    for dir in [bpffs.to_path_buf(), std::env::temp_dir()] {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !dead(&name) {
                continue;
            }
            eprintln!("removing {} left by an interrupted run", e.path().display());
            if dir == bpffs {
                if let Err(err) = shield_user::dataplane::pins::remove_all(&e.path()) {
                    eprintln!("  could not: {err}");
                }
            } else {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_recognised_by_their_owner() {
        assert_eq!(owner("shfb-1234-nft0"), Some(1234));
        assert_eq!(owner("shfb-99"), Some(99));
        assert_eq!(owner("shfb-x"), None);
        assert_eq!(owner("shield-demo-server"), None);
        // Our own names are never stale, whatever /proc says.
        assert!(!dead(&tag()));
        assert!(!dead("shs-12-1"));
    }
}
