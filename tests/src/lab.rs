//! A two-host lab: network namespaces joined by a veth pair, torn down by a
//! guard even when the test panics.
//!
//! `client` (10.200.N.1, fd00:200:N::1) talks to `server` (10.200.N.2,
//! fd00:200:N::2); the shield attaches to the server's end.

use std::{
    fs::File,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    pub client_ns: String,
    pub server_ns: String,
    /// The server-side veth, where XDP goes.
    pub server_if: String,
    pub client_v4: IpAddr,
    pub server_v4: IpAddr,
    pub client_v6: IpAddr,
    pub server_v6: IpAddr,
    path: Path,
    /// Whether dropping this value deletes the namespaces.
    owned: bool,
}

/// The client-to-server direction of a lab's veth pair, as its counters
/// see it: enough to tell when every frame the client sent has been taken
/// by the server (passed to its stack, or dropped by XDP).
#[derive(Clone, Debug)]
pub struct Path {
    client_ns: String,
    server_ns: String,
    /// Frames the server counted before the client's queue existed.
    before_queue: u64,
}

fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("run ip/tc");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

impl Path {
    /// (frames queued on the client, frames the queue handed to the veth,
    /// frames the server's end took or dropped on arrival, frames the
    /// client's veth dropped).
    fn counts(&self) -> (u64, u64, u64, u64) {
        let q = json(Command::new("tc").args([
            "-n",
            &self.client_ns,
            "-s",
            "-j",
            "qdisc",
            "show",
            "dev",
            "sh-cli",
        ]));
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("qdisc stats: {q}"));
        let root = &q[0];
        let link = |ns: &str, dev: &str| {
            json(Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "dev", dev]))
        };
        let srv = link(&self.server_ns, "sh-srv");
        let cli = link(&self.client_ns, "sh-cli");
        // A frame the server's end refuses on arrival (a device not up,
        // say) is counted as its rx drop, not as a packet: it is not in
        // flight either.
        (
            n(&root["qlen"]),
            n(&root["packets"]),
            n(&srv[0]["stats64"]["rx"]["packets"]) + n(&srv[0]["stats64"]["rx"]["dropped"]),
            n(&cli[0]["stats64"]["tx"]["dropped"]),
        )
    }

    /// Frames the server counted that never went through the client's
    /// queue. Without XDP the veth delivers at once, counting each frame
    /// on both ends as it goes: what the server counted before the queue
    /// existed is the difference (the queue's own count starts at 0).
    /// Exact only while nothing is in flight, and only from counts read
    /// together: `counts` reads the queue, then the server, then the client,
    /// and a frame the client's kernel sends on its own (IPv6 neighbour
    /// discovery, MLD) between the first two reads is taken but not yet
    /// handed. One such frame made the difference one too many, and every
    /// `wait_idle` on that lab then waited its whole 30 s for a frame that
    /// was never in flight (seen as a crowdsec test whose wait for a ban
    /// ran out of time). So the counts are read until two readings in a
    /// row agree.
    fn counted_before_queue(&self) -> u64 {
        let mut last = self.counts();
        for _ in 0..100 {
            let now = self.counts();
            if now == last {
                break;
            }
            last = now;
        }
        let (queued, handed, taken, dropped) = last;
        (taken + dropped).saturating_sub(queued + handed)
    }

    /// Frames from the client not yet taken by the server: waiting in the
    /// client's queue, or in the veth's ring for the server's NAPI (which
    /// a loaded host may run late).
    pub fn in_flight(&self) -> u64 {
        let (queued, handed, taken, dropped) = self.counts();
        (queued + handed + self.before_queue).saturating_sub(taken + dropped)
    }

    /// Waits until every frame the client has sent so far has been taken
    /// by the server; false if that takes over 30 s.
    pub fn wait_idle(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.in_flight() == 0 {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        // Rare, and then the test that waited usually fails for it: say
        // what the path looked like, so that the failure can be read.
        eprintln!(
            "lab path {} -> {}: not idle after 30 s (queued, handed, taken, client drops) = {:?}, before the queue {}\n{}",
            self.client_ns,
            self.server_ns,
            self.counts(),
            self.before_queue,
            self.describe()
        );
        false
    }

    /// The client's queue and both ends' counters, as `tc` and `ip` show them.
    fn describe(&self) -> String {
        let run = |ns: &str, args: &[&str]| {
            let out = Command::new(args[0])
                .args(["-n", ns])
                .args(&args[1..])
                .output()
                .expect("run ip/tc");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        [
            run(
                &self.client_ns,
                &["tc", "-s", "qdisc", "show", "dev", "sh-cli"],
            ),
            run(
                &self.client_ns,
                &["ip", "-s", "-s", "link", "show", "dev", "sh-cli"],
            ),
            run(
                &self.server_ns,
                &["ip", "-s", "-s", "link", "show", "dev", "sh-srv"],
            ),
            run(
                &self.server_ns,
                &["ip", "-d", "link", "show", "dev", "sh-srv"],
            ),
        ]
        .join("")
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `dev` in `ns` is operationally up.
fn wait_up(ns: &str, dev: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", "dev", dev])
            .output()
            .expect("run ip");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(" state UP ") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{dev} in {ns} never came up: {text}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

impl Lab {
    pub fn new() -> Lab {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 200 + 1;
        // The whole pid: with pid_max at 4 194 304 (the default on many
        // hosts) pids run past 100 000, and a shortened one could
        // name another test process's namespaces.
        let tag = format!("{}-{n}", std::process::id());
        let lab = Lab::named(&format!("shc-{tag}"), &format!("shs-{tag}"), n as u8, true);
        ip(&["netns", "add", &lab.client_ns]);
        ip(&["netns", "add", &lab.server_ns]);
        lab.build()
    }

    /// A lab whose server is this machine itself: the server's end of the
    /// veth stays in the host's own network namespace, which gets the name
    /// `host_ns` (for `ip -n`). For a machine that is all the lab's, the
    /// VM test's, where the agent runs under systemd and protects the
    /// host's own interface. It outlives this value (`Lab::existing`
    /// finds it again); deleting `client_ns` takes it down.
    pub fn on_host(client_ns: &str, host_ns: &str, n: u8) -> Lab {
        let lab = Lab::named(client_ns, host_ns, n, false);
        ip(&["netns", "add", &lab.client_ns]);
        ip(&["netns", "attach", &lab.server_ns, "1"]);
        lab.build()
    }

    /// The lab `Lab::on_host` made, found again (by another process).
    pub fn existing(client_ns: &str, host_ns: &str, n: u8) -> Lab {
        let mut lab = Lab::named(client_ns, host_ns, n, false);
        lab.path.before_queue = lab.path.counted_before_queue();
        lab
    }

    fn named(client_ns: &str, server_ns: &str, n: u8, owned: bool) -> Lab {
        Lab {
            client_ns: client_ns.into(),
            server_ns: server_ns.into(),
            server_if: "sh-srv".into(),
            client_v4: format!("10.200.{n}.1").parse().unwrap(),
            server_v4: format!("10.200.{n}.2").parse().unwrap(),
            client_v6: format!("fd00:200:{n}::1").parse().unwrap(),
            server_v6: format!("fd00:200:{n}::2").parse().unwrap(),
            path: Path {
                client_ns: client_ns.into(),
                server_ns: server_ns.into(),
                before_queue: 0,
            },
            owned,
        }
    }

    /// The veth pair, its addresses and the client's queue, between the
    /// two namespaces that exist by now.
    fn build(self) -> Lab {
        let lab = self;
        ip(&[
            "link",
            "add",
            "sh-cli",
            "netns",
            &lab.client_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.server_if,
            "netns",
            &lab.server_ns,
        ]);
        for (ns, dev, v4, v6) in [
            (&lab.client_ns, "sh-cli", lab.client_v4, lab.client_v6),
            (
                &lab.server_ns,
                lab.server_if.as_str(),
                lab.server_v4,
                lab.server_v6,
            ),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // The end brought up first gets its carrier from the second, and
        // until the kernel's link-watch work has run for it, it has no
        // queue and drops what it sends. That work is deferred; on a loaded
        // host the first datagrams of a test could beat it.
        for (ns, dev) in [
            (&lab.client_ns, "sh-cli"),
            (&lab.server_ns, lab.server_if.as_str()),
        ] {
            wait_up(ns, dev);
        }
        // With XDP on the server end, the veth hands each frame to a
        // 256-slot ring that the server's NAPI drains; on a loaded host
        // NAPI can fall behind a fast sender and the veth drops what does
        // not fit. With a queue on the client end, kernels since 6.16 hold
        // the sender back instead (the queue stops until the ring has room,
        // and the socket's send buffer blocks the sender). Older kernels
        // still drop; `ring_drops` counts those for the tests that must
        // account for every frame.
        let mut lab = lab;
        let out = Command::new("tc")
            .args([
                "-n",
                &lab.client_ns,
                "qdisc",
                "replace",
                "dev",
                "sh-cli",
                "root",
                "pfifo",
                "limit",
                "100000",
            ])
            .output()
            .expect("run tc");
        assert!(
            out.status.success(),
            "tc qdisc on sh-cli: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab.path.before_queue = lab.path.counted_before_queue();
        lab
    }

    /// The client-to-server path, for waiting until it is idle.
    pub fn path(&self) -> Path {
        self.path.clone()
    }

    /// Frames the client's veth dropped on the way to the server because
    /// the server's XDP ring was full (the veth counts them as its own tx
    /// drops). Zero where the kernel applies backpressure instead.
    pub fn ring_drops(&self) -> u64 {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.client_ns,
                "-s",
                "-j",
                "link",
                "show",
                "dev",
                "sh-cli",
            ])
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip -s link: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j is JSON");
        v[0]["stats64"]["tx"]["dropped"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tx drop count in {v}"))
    }

    /// Runs `f` with this thread moved into `ns`. Only the calling thread
    /// changes namespace; tests run each in a thread of their own.
    pub fn enter(ns: &str) {
        let f = File::open(format!("/run/netns/{ns}")).expect("open netns");
        // SAFETY: valid fd; CLONE_NEWNET affects only this thread.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
    }

    /// `ip -d link show` of the server interface, as seen from its namespace.
    pub fn server_link_details(&self) -> String {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.server_ns,
                "-d",
                "link",
                "show",
                "dev",
                &self.server_if,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends `count` UDP datagrams from the client to `server:port` (v4 or v6
    /// by `to`) and returns how many the server received. The receiver binds
    /// before the sender starts and stops once the sender is done, the
    /// server has taken every frame off the veth (`Path::wait_idle`), and
    /// its socket has been quiet for 300 ms. Silence before then does not
    /// end it: on a loaded host the sender thread may take longer than
    /// that to start, and the server's NAPI to drain the veth.
    pub fn udp_through(&self, to: IpAddr, port: u16, count: u32) -> u32 {
        let any = if to.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        };
        self.udp_from(any, to, port, count)
    }

    /// As [`Lab::udp_through`], from the client's address `from` (one
    /// [`Lab::add_client_v4`] added, say).
    pub fn udp_from(&self, from: IpAddr, to: IpAddr, port: u16, count: u32) -> u32 {
        let server_ns = self.server_ns.clone();
        let client_ns = self.client_ns.clone();
        let path = self.path();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sent = Arc::new(AtomicBool::new(false));
        let all_sent = Arc::clone(&sent);
        let receiver = thread::spawn(move || {
            Lab::enter(&server_ns);
            let sock = UdpSocket::bind(SocketAddr::new(to, port)).expect("bind server");
            sock.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut got = 0;
            let mut buf = [0u8; 2048];
            // Beyond the sender's wait for an idle path (30 s at most).
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                // Read before the check: a datagram that arrived during the
                // last timeout is counted before the silence ends the run.
                let done = all_sent.load(Ordering::SeqCst);
                match sock.recv(&mut buf) {
                    Ok(_) => got += 1,
                    Err(_) if done => break,
                    Err(_) => {}
                }
            }
            got
        });
        ready_rx.recv().unwrap();
        let sender = thread::spawn(move || {
            Lab::enter(&client_ns);
            let sock = UdpSocket::bind(SocketAddr::new(from, 0))
                .unwrap_or_else(|e| panic!("bind the client to {from}: {e}"));
            for i in 0..count {
                // Errors (ICMP unreachable feedback) do not stop the run.
                let _ = sock.send_to(&i.to_be_bytes(), SocketAddr::new(to, port));
            }
            // Frames the kernel still holds for the server are not lost
            // yet; if the path never drains, silence decides as before.
            let _ = path.wait_idle();
            sent.store(true, Ordering::SeqCst);
        });
        sender.join().unwrap();
        receiver.join().unwrap()
    }
}

impl Lab {
    /// Two identical UDP datagrams to the server's `port` from each of
    /// `sources` addresses `a.b.X.Y` (X.Y counting up from 0.0): with a
    /// limit of one packet, the second of each pair is over it. For
    /// `raw::send_frames`, which fakes the sources.
    pub fn two_from_each(&self, prefix: [u8; 2], sources: u32, port: u16) -> Vec<Vec<u8>> {
        (0..sources)
            .flat_map(|i| {
                let src = IpAddr::from([prefix[0], prefix[1], (i >> 8) as u8, (i & 0xff) as u8]);
                let mut p = crate::packet::Pkt::udp(&src.to_string(), port);
                p.dst = self.server_v4;
                let f = p.build();
                [f.clone(), f]
            })
            .collect()
    }

    /// Adds another address to the client (a second source host), e.g.
    /// `10.200.N.3` for `host = 3`.
    pub fn add_client_v4(&self, host: u8) -> IpAddr {
        let IpAddr::V4(c) = self.client_v4 else {
            unreachable!()
        };
        let [a, b, n, _] = c.octets();
        let addr = IpAddr::from([a, b, n, host]);
        ip(&[
            "-n",
            &self.client_ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "sh-cli",
        ]);
        addr
    }

    /// Gives the server namespace's loopback another address, `addr`/32:
    /// a "globally reachable" host for tests that need one (a global
    /// address, but only inside the lab's namespace; nothing leaves it).
    pub fn add_server_address(&self, addr: IpAddr) -> IpAddr {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        ip(&[
            "-n",
            &self.server_ns,
            "addr",
            "add",
            &format!("{addr}/{len}"),
            "dev",
            "lo",
        ]);
        addr
    }

    /// Waits until the client can reach `to` again, e.g. after IPv6 neighbour
    /// discovery failed while its source was banned. Gives up after 20 s
    /// (neighbour discovery retries once a second, and a loaded host is slow).
    pub fn wait_reachable(&self, to: IpAddr, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.udp_through(to, port, 1) == 1 {
                return true;
            }
        }
        false
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Deleting a namespace deletes its end of the veth, and the pair with it.
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
