//! The demo's traffic and the receiver that counts what reached the server.
//!
//! - A legitimate client: a real UDP socket in its own namespace, through
//!   the kernel stack (ARP included), at a modest rate.
//! - From the attacker's namespace, trafgen: a UDP flood from one address,
//!   a SYN flood with spoofed sources spread over 64 addresses of a /24, and
//!   UDP from a range the demo feed lists.
//!
//! The receiver sits in the server namespace behind shield: raw sockets see
//! every UDP and TCP packet that shield passed up to the kernel, and count
//! them by source.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::lab::{self, Lab};

pub const LEGIT_PPS: u32 = 200;
pub const FLOOD_PPS: u32 = 50_000;
pub const SPOOF_PPS: u32 = 30_000;
pub const SPOOF_SOURCES: u8 = 64;
pub const FEED_PPS: u32 = 2_000;
pub const FLOODER: [u8; 4] = [10, 210, 2, 66];
pub const SPOOF_NET: [u8; 3] = [10, 210, 3];
pub const FEED_NET: [u8; 3] = [198, 51, 100];
pub const SERVER_PORT: u16 = 8080;

/// The four kinds of traffic, in the order the summary shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Legit,
    Flood,
    Spoofed,
    Feed,
}

impl Stream {
    pub const ALL: [Stream; 4] = [Stream::Legit, Stream::Flood, Stream::Spoofed, Stream::Feed];

    pub fn label(self) -> &'static str {
        match self {
            Stream::Legit => "legit client",
            Stream::Flood => "UDP flood",
            Stream::Spoofed => "spoofed SYN flood",
            Stream::Feed => "feed-listed range",
        }
    }

    /// The veth pair this traffic crosses.
    pub fn link(self) -> &'static lab::Link {
        &lab::LINKS[self.index()]
    }

    pub fn source(self) -> String {
        match self {
            Stream::Legit => lab::dotted(lab::LINKS[0].client_addr),
            Stream::Flood => lab::dotted(FLOODER),
            Stream::Spoofed => format!(
                "{}.{}.{}.1-{SPOOF_SOURCES}",
                SPOOF_NET[0], SPOOF_NET[1], SPOOF_NET[2]
            ),
            Stream::Feed => format!("{}.{}.{}.0/24", FEED_NET[0], FEED_NET[1], FEED_NET[2]),
        }
    }

    pub fn rate(self) -> u32 {
        match self {
            Stream::Legit => LEGIT_PPS,
            Stream::Flood => FLOOD_PPS,
            Stream::Spoofed => SPOOF_PPS,
            Stream::Feed => FEED_PPS,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn of(src: [u8; 4]) -> Option<Stream> {
        if src == lab::LINKS[0].client_addr {
            Some(Stream::Legit)
        } else if src == FLOODER {
            Some(Stream::Flood)
        } else if src[..3] == SPOOF_NET {
            Some(Stream::Spoofed)
        } else if src[..3] == FEED_NET {
            Some(Stream::Feed)
        } else {
            None
        }
    }
}

/// Packets per stream, shared between threads.
#[derive(Default)]
pub struct Counts([AtomicU64; 4]);

impl Counts {
    pub fn get(&self, s: Stream) -> u64 {
        self.0[s.index()].load(Ordering::Relaxed)
    }

    fn add(&self, s: Stream, n: u64) {
        self.0[s.index()].fetch_add(n, Ordering::Relaxed);
    }
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> JoinHandle<anyhow::Result<T>> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on a valid namespace fd; it moves only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("entering {path}: {}", std::io::Error::last_os_error());
        }
        f()
    })
}

/// Counts, by source, the UDP and TCP packets that reach the server's
/// stack. Stops when `stop` is set.
pub struct Receiver {
    pub counts: Arc<Counts>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start(lab: &Lab) -> anyhow::Result<Receiver> {
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for proto in [libc::IPPROTO_UDP, libc::IPPROTO_TCP] {
            let (counts, stop, ready) = (counts.clone(), stop.clone(), ready_tx.clone());
            threads.push(in_netns(&lab.server_ns(), move || {
                let sock = match raw_socket(proto) {
                    Ok(s) => {
                        let _ = ready.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = ready.send(Err(e));
                        bail!("{msg}");
                    }
                };
                // A bound UDP port, so passed packets are not answered with
                // ICMP port unreachable; nobody reads it.
                let _sink = (proto == libc::IPPROTO_UDP)
                    .then(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT)))
                    .transpose()?;
                count_loop(sock, &counts, &stop)
            }));
        }
        for _ in 0..2 {
            ready_rx
                .recv()
                .context("the receiver thread ended before it was ready")??;
        }
        Ok(Receiver {
            counts,
            threads,
            stop,
        })
    }

    /// Stops the threads and returns the counts.
    pub fn finish(self) -> anyhow::Result<Arc<Counts>> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("a receiver thread panicked"))??;
        }
        Ok(self.counts)
    }
}

struct RawSocket(libc::c_int);

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: closing the fd this struct owns.
        unsafe { libc::close(self.0) };
    }
}

fn raw_socket(proto: libc::c_int) -> anyhow::Result<RawSocket> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, proto) };
    if fd < 0 {
        bail!(
            "opening a raw socket in the server namespace: {}",
            std::io::Error::last_os_error()
        );
    }
    let sock = RawSocket(fd);
    let buf: libc::c_int = 32 << 20;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: setsockopt with pointers to live values of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const buf).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    Ok(sock)
}

fn count_loop(sock: RawSocket, counts: &Counts, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut buf = [0u8; 2048];
    // After the stop flag, drain what is already queued.
    let mut draining_since: Option<Instant> = None;
    loop {
        // SAFETY: recv into a buffer we own, bounded by its length.
        let n = unsafe { libc::recv(sock.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 20 {
            let src = [buf[12], buf[13], buf[14], buf[15]];
            if let Some(s) = Stream::of(src) {
                counts.add(s, 1);
            }
            continue;
        }
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if !matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) {
                bail!("receiving in the server namespace: {err}");
            }
        }
        if stop.load(Ordering::SeqCst) {
            // A timeout with the stop flag set: the queue is empty.
            match draining_since {
                Some(t) if t.elapsed() > Duration::from_millis(200) => return Ok(()),
                Some(_) => {}
                None => draining_since = Some(Instant::now()),
            }
        }
    }
}

/// The legitimate client: `LEGIT_PPS` datagrams per second from a real
/// socket until `stop`; returns how many the kernel accepted.
pub fn legit_client(lab: &Lab, stop: Arc<AtomicBool>) -> JoinHandle<anyhow::Result<u64>> {
    in_netns(&lab.namespace("legit"), move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        let dst = SocketAddrV4::new(
            Ipv4Addr::from(Stream::Legit.link().server_addr),
            SERVER_PORT,
        );
        let gap = Duration::from_secs(1) / LEGIT_PPS;
        let start = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let due = start + gap * u32::try_from(sent).unwrap_or(u32::MAX);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            sock.send_to(format!("request {sent}").as_bytes(), dst)
                .context("the legitimate client's send failed")?;
            sent += 1;
        }
        Ok(sent)
    })
}

/// Starts trafgen for `stream` in the attacker namespace, on the stream's
/// own link; it runs until the lab stops it.
pub fn start_trafgen(lab: &mut Lab, stream: Stream) -> anyhow::Result<()> {
    let link = stream.link();
    let mac = lab.server_mac(link.server_if)?;
    let cfg = lab.dir.join(format!("trafgen-{stream:?}.cfg"));
    fs::write(&cfg, frame(stream, &mac)?)?;
    let log = fs::File::create(lab.dir.join(format!("trafgen-{stream:?}.log")))?;
    // nsenter execs trafgen itself (`ip netns exec` forks, and killing it
    // would leave trafgen running).
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.namespace(link.role)))
        .args(["trafgen", "-o", link.client_if, "-i"])
        .arg(&cfg)
        .args(["-b", &format!("{}pps", stream.rate())])
        .stdout(log.try_clone()?)
        .stderr(log)
        // trafgen forks its sender; a group of its own lets the lab kill
        // both at once.
        .process_group(0)
        .spawn()
        .context("starting trafgen (Debian package netsniff-ng)")?;
    lab.procs.push((format!("trafgen {stream:?}"), child));
    Ok(())
}

/// trafgen's byte-level packet description: Ethernet, IPv4 (with the
/// checksum computed per packet), then UDP or a TCP SYN. A source byte may
/// be a trafgen function such as `dinc(1, 64)`.
fn frame(stream: Stream, mac: &str) -> anyhow::Result<String> {
    let mac_bytes: Vec<String> = mac.split(':').map(|b| format!("0x{b}")).collect();
    if mac_bytes.len() != 6 {
        bail!("unexpected MAC address `{mac}`");
    }
    let byte = |b: u8| b.to_string();
    let (src, proto, l4, l4_len): ([String; 4], u8, String, u16) = match stream {
        Stream::Flood => (FLOODER.map(byte), 17, udp(4444, 0x42), UDP_LEN),
        Stream::Feed => (
            [
                byte(FEED_NET[0]),
                byte(FEED_NET[1]),
                byte(FEED_NET[2]),
                "dinc(1, 254)".into(),
            ],
            17,
            udp(5555, 0x46),
            UDP_LEN,
        ),
        Stream::Spoofed => (
            [
                byte(SPOOF_NET[0]),
                byte(SPOOF_NET[1]),
                byte(SPOOF_NET[2]),
                format!("dinc(1, {SPOOF_SOURCES})"),
            ],
            6,
            // Random source port and sequence number, SYN to port 443.
            "drnd(), drnd(), const16(443), drnd(), drnd(), drnd(), drnd(), \
             0, 0, 0, 0, 0x50, 0x02, const16(64240), csumtcp(14, 34), const16(0)"
                .into(),
            20,
        ),
        Stream::Legit => bail!("the legitimate client is a real socket, not trafgen"),
    };
    let dst = stream.link().server_addr.map(byte);
    Ok(format!(
        "{{\n  {mac}, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, 0x08, 0x00,\n  \
         0x45, 0x00, const16({total}), drnd(), drnd(), 0x40, 0x00, 64, {proto}, csumip(14, 33),\n  \
         {src},\n  {dst},\n  {l4}\n}}\n",
        mac = mac_bytes.join(", "),
        total = 20 + l4_len,
        src = src.join(", "),
        dst = dst.join(", "),
    ))
}

/// UDP header plus 64 bytes of `fill` to `SERVER_PORT`, checksum 0 (none).
const UDP_LEN: u16 = 8 + 64;

fn udp(sport: u16, fill: u8) -> String {
    format!(
        "const16({sport}), const16({SERVER_PORT}), const16({UDP_LEN}), const16(0), fill(0x{fill:02x}, 64)"
    )
}
