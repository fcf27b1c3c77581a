//! The real `shield-agent` binary, run inside a lab's server namespace with
//! its own pin and state directories, and cleaned up by a guard.

use std::{
    fs,
    io::Read,
    os::{fd::AsRawFd, unix::net::UnixDatagram, unix::process::CommandExt},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::lab::Lab;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Where cargo put the binaries: next to this test executable's `deps/`,
/// or next to this executable when it is a binary of its own (a benchmark).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("target/<profile>/deps").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p shield-user --bins` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// A per-test home: config, state dir, control socket, notify socket, and a
/// pin directory on bpffs. Removed (pins included) on drop.
pub struct AgentHome {
    pub dir: PathBuf,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    /// Extra environment for the agent (`SSL_CERT_FILE`, say).
    pub env: Vec<(String, String)>,
    notify_path: PathBuf,
    notify: UnixDatagram,
}

impl AgentHome {
    pub fn new() -> AgentHome {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("shield-agent-test-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        AgentHome {
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/shield-test-{tag}")),
            state_dir: dir.join("state"),
            config: dir.join("shield.toml"),
            socket: dir.join("shield.sock"),
            env: Vec::new(),
            notify_path,
            notify,
            dir,
        }
    }

    /// The TOML lines every test config starts with: this home's paths and
    /// the lab's server interface.
    pub fn base_config(&self, lab: &Lab) -> String {
        format!(
            "interfaces = [\"{}\"]\npin_dir = \"{}\"\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n",
            lab.server_if,
            self.pin_dir.display(),
            self.state_dir.display(),
            self.socket.display(),
        )
    }

    pub fn write_config(&self, toml: &str) {
        fs::write(&self.config, toml).unwrap();
    }

    /// Starts the agent on this home's config in the lab's server namespace
    /// and waits for READY=1.
    pub fn start(&self, lab: &Lab, extra: &[&str]) -> Agent {
        let agent = self.spawn(lab, extra);
        agent.wait_ready(self, Duration::from_secs(30))
    }

    /// Starts the agent and waits for either READY=1 (`Ok`) or its exit
    /// (`Err` with the status and everything it logged), for tests of
    /// what the agent must refuse to start on.
    pub fn start_or_exit(&self, lab: &Lab, extra: &[&str]) -> Result<Agent, (ExitStatus, String)> {
        self.start_or_exit_wrapped(lab, &[], extra)
    }

    /// As [`AgentHome::start_or_exit`], through `wrapper` (see
    /// `spawn_wrapped`).
    pub fn start_or_exit_wrapped(
        &self,
        lab: &Lab,
        wrapper: &[String],
        extra: &[&str],
    ) -> Result<Agent, (ExitStatus, String)> {
        let mut agent = self.spawn_wrapped(lab, wrapper, extra);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .wait_notify("READY=1", Duration::from_millis(200))
                .is_some()
            {
                return Ok(agent);
            }
            if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
                agent.child = None;
                return Err((status, agent.logs()));
            }
            assert!(
                Instant::now() < deadline,
                "shield-agent neither READY nor exited after 30 s:\n{}",
                agent.logs()
            );
        }
    }

    /// Starts the agent through `wrapper` (see `spawn_wrapped`) and waits
    /// for READY=1.
    pub fn start_wrapped(&self, lab: &Lab, wrapper: &[String], extra: &[&str]) -> Agent {
        let agent = self.spawn_wrapped(lab, wrapper, extra);
        agent.wait_ready(self, Duration::from_secs(30))
    }

    /// Starts the agent without waiting.
    pub fn spawn(&self, lab: &Lab, extra: &[&str]) -> Agent {
        self.spawn_wrapped(lab, &[], extra)
    }

    /// Starts the agent through `wrapper` (a command that execs the rest of
    /// its arguments, such as `setpriv ...`), without waiting.
    pub fn spawn_wrapped(&self, lab: &Lab, wrapper: &[String], extra: &[&str]) -> Agent {
        self.drain_notify();
        let log = self.dir.join(format!(
            "agent-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let agent = binary("shield-agent");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&agent);
                c
            }
            None => Command::new(&agent),
        };
        cmd.arg("--config").arg(&self.config).args(extra);
        run_in_netns(&mut cmd, &lab.server_ns);
        cmd.env("NOTIFY_SOCKET", &self.notify_path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(log.with_extension("err")).unwrap());
        let child = cmd.spawn().expect("spawn shield-agent");
        Agent {
            child: Some(child),
            log,
        }
    }

    /// Runs `shield-agent ARGS` to completion in the server namespace.
    pub fn run(&self, lab: &Lab, args: &[&str]) -> (ExitStatus, String) {
        let mut cmd = Command::new(binary("shield-agent"));
        cmd.args(args);
        run_in_netns(&mut cmd, &lab.server_ns);
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, text)
    }

    fn drain_notify(&self) {
        self.notify.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        while self.notify.recv(&mut buf).is_ok() {}
        self.notify.set_nonblocking(false).unwrap();
    }

    /// Waits for a notify message containing `needle`.
    pub fn wait_notify(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            self.notify
                .set_read_timeout(Some(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ))
                .unwrap();
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.contains(needle) {
                    return Some(msg);
                }
            }
        }
        None
    }

    /// A handle on the notify socket, for a test that watches every message
    /// (watchdog pings) from a thread of its own while the agent runs.
    pub fn notify_socket(&self) -> UnixDatagram {
        self.notify.try_clone().unwrap()
    }

    /// The program id on the pinned link of `iface`, and the link id.
    pub fn link_ids(&self, iface: &str) -> Option<(u32, u32)> {
        shield_user::dataplane::pinned_link_ids(&self.pin_dir, iface)
    }
}

impl Default for AgentHome {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for AgentHome {
    fn drop(&mut self) {
        let _ = shield_user::dataplane::pins::remove_all(&self.pin_dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Moves the child into `ns`'s network namespace (only: it keeps the host's
/// mount namespace, so bpffs pins are shared, unlike `ip netns exec`).
pub fn run_in_netns(cmd: &mut Command, ns: &str) {
    let f = fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    // SAFETY: setns is async-signal-safe; the fd stays open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running agent; killed on drop if the test did not stop it.
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn wait_ready(mut self, home: &AgentHome, timeout: Duration) -> Agent {
        let deadline = Instant::now() + timeout;
        loop {
            if home
                .wait_notify("READY=1", Duration::from_millis(200))
                .is_some()
            {
                return self;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "shield-agent exited before READY ({status}):\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "shield-agent not READY after {timeout:?}:\n{}",
                self.logs()
            );
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// A `/proc/PID/status` field given in kB (`VmRSS`, `VmHWM`), in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGHUP, then waits for the agent to say READY again (reload done,
    /// successfully or not).
    pub fn reload(&self, home: &AgentHome) {
        home.drain_notify();
        self.signal(libc::SIGHUP);
        assert!(
            home.wait_notify("READY=1", Duration::from_secs(20))
                .is_some(),
            "no READY after SIGHUP:\n{}",
            self.logs()
        );
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(20))
    }

    /// Waits for an agent that was told to exit some other way (detach),
    /// sending SIGTERM only if it is still running after a few seconds.
    pub fn stop_or_exited(mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop()
    }

    /// SIGKILL: no cleanup of any kind runs.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        self.wait(Duration::from_secs(20));
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(Instant::now() < deadline, "shield-agent did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the agent logged so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in [self.log.clone(), self.log.with_extension("err")] {
            if let Ok(mut f) = fs::File::open(&p) {
                let _ = f.read_to_string(&mut s);
            }
        }
        s
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Output of one `shieldctl` run.
#[derive(Debug)]
pub struct CtlOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl AgentHome {
    /// Runs `shieldctl --socket <this home's socket> ARGS`.
    pub fn ctl(&self, args: &[&str]) -> CtlOutput {
        let out = Command::new(binary("shieldctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run shieldctl");
        CtlOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// As [`AgentHome::ctl`], asserting success, returning stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(o.ok(), "shieldctl {args:?} failed: {o:?}");
        o.stdout
    }

    /// `shieldctl --json ARGS` parsed.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl_ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

/// A fresh lab and an agent on it, its base config followed by `extra_config`.
pub fn lab_with_agent(extra_config: &str) -> (Lab, AgentHome, Agent) {
    let lab = Lab::new();
    let home = AgentHome::new();
    home.write_config(&format!("{}{extra_config}", home.base_config(&lab)));
    let agent = home.start(&lab, &[]);
    (lab, home, agent)
}

/// The feed's row in `shieldctl feeds list`; a missing feed fails the test.
pub fn feed_row(home: &AgentHome, name: &str) -> serde_json::Value {
    let list = home.ctl_json(&["feeds", "list"]);
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no feed {name}: {list}"))
}

/// `GET /metrics` from inside `ns` (the agent listens on its loopback).
pub fn scrape(ns: &str, port: u16) -> String {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        use std::io::Write;
        Lab::enter(&ns);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .join()
    .unwrap()
}

/// The value of the series `series` (name with labels, exactly as exposed).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
