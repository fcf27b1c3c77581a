//! Steady UDP flows from several client addresses to the server, counted per
//! source on arrival: what a test needs to say "not one packet from X got
//! through while Y kept flowing".

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::lab::{Lab, Path};

/// Senders stop by themselves after this long even if nobody stops them.
const MAX_RUN: Duration = Duration::from_secs(90);

pub struct Flows {
    stop: Arc<AtomicBool>,
    /// Set once the senders are done and the veth holds none of their
    /// frames: whatever passed is then in the receiver's socket.
    drained: Arc<AtomicBool>,
    path: Path,
    received: Arc<Mutex<HashMap<IpAddr, u64>>>,
    /// The highest sequence number (a datagram's payload) arrived per source.
    highest: Arc<Mutex<HashMap<IpAddr, u64>>>,
    senders: Vec<(IpAddr, Arc<AtomicU64>, JoinHandle<u64>)>,
    receiver: JoinHandle<()>,
}

/// What was sent and what arrived, per source.
#[derive(Debug)]
pub struct FlowReport {
    pub sent: HashMap<IpAddr, u64>,
    pub received: HashMap<IpAddr, u64>,
    /// The highest sequence number that arrived, per source: datagram `k`
    /// is the `k`-th (from 0) its sender sent.
    pub highest: HashMap<IpAddr, u64>,
}

impl FlowReport {
    pub fn received(&self, src: IpAddr) -> u64 {
        self.received.get(&src).copied().unwrap_or(0)
    }

    pub fn sent(&self, src: IpAddr) -> u64 {
        self.sent.get(&src).copied().unwrap_or(0)
    }

    /// The sequence number of the last-sent datagram from `src` that arrived.
    pub fn highest_arrived(&self, src: IpAddr) -> Option<u64> {
        self.highest.get(&src).copied()
    }
}

impl Flows {
    /// One sender per source address (each must be configured on the
    /// client), one datagram every `interval`, to the server's v4 address.
    pub fn start(lab: &Lab, port: u16, sources: &[IpAddr], interval: Duration) -> Flows {
        let stop = Arc::new(AtomicBool::new(false));
        let drained = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(HashMap::new()));
        let highest = Arc::new(Mutex::new(HashMap::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let dst = SocketAddr::new(lab.server_v4, port);
        let receiver = {
            let (ns, drained, received, highest) = (
                lab.server_ns.clone(),
                drained.clone(),
                received.clone(),
                highest.clone(),
            );
            thread::spawn(move || {
                Lab::enter(&ns);
                let sock = UdpSocket::bind(dst).expect("bind flow receiver");
                // Room for seconds of datagrams: a loaded host may not run
                // this thread for a while, and a full socket buffer would
                // drop what the shield passed and count it as lost.
                let room: libc::c_int = 16 << 20;
                // SAFETY: setsockopt on our own socket with a c_int value
                // of the size passed.
                let rc = unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUFFORCE,
                        (&raw const room).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
                sock.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut buf = [0u8; 64];
                // Beyond the senders' run and the wait for the path to drain.
                let deadline = Instant::now() + MAX_RUN + Duration::from_secs(40);
                // After the path has drained, a quiet socket is an empty one.
                let mut quiet_since: Option<Instant> = None;
                while Instant::now() < deadline {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            *received.lock().unwrap().entry(from.ip()).or_insert(0) += 1;
                            if let Some(seq) = buf.get(..8).filter(|_| n >= 8) {
                                let seq = u64::from_be_bytes(seq.try_into().unwrap());
                                let mut h = highest.lock().unwrap();
                                let top = h.entry(from.ip()).or_insert(seq);
                                *top = (*top).max(seq);
                            }
                        }
                        Err(_) if drained.load(Ordering::SeqCst) => {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_millis(200) {
                                break;
                            }
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        ready_rx.recv().unwrap();
        let senders = sources
            .iter()
            .map(|&src| {
                let (ns, stop) = (lab.client_ns.clone(), stop.clone());
                let count = Arc::new(AtomicU64::new(0));
                let so_far = Arc::clone(&count);
                let h = thread::spawn(move || {
                    Lab::enter(&ns);
                    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind flow sender");
                    let started = Instant::now();
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
                        let _ = sock.send_to(&sent.to_be_bytes(), dst);
                        sent += 1;
                        so_far.store(sent, Ordering::SeqCst);
                        thread::sleep(interval);
                    }
                    sent
                });
                (src, count, h)
            })
            .collect();
        Flows {
            stop,
            drained,
            path: lab.path(),
            received,
            highest,
            senders,
            receiver,
        }
    }

    /// Datagrams `src` has sent so far: every one numbered below this has
    /// left its sender, every one numbered above it is yet to be sent.
    pub fn sent(&self, src: IpAddr) -> u64 {
        self.senders
            .iter()
            .find(|(s, _, _)| *s == src)
            .map_or(0, |(_, n, _)| n.load(Ordering::SeqCst))
    }

    /// Arrivals from `src` so far.
    pub fn received(&self, src: IpAddr) -> u64 {
        self.received
            .lock()
            .unwrap()
            .get(&src)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `src` has at least `n` more arrivals than now; false on timeout.
    pub fn wait_more(&self, src: IpAddr, n: u64, timeout: Duration) -> bool {
        let start = self.received(src);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.received(src) >= start + n {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn stop(self) -> FlowReport {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .senders
            .into_iter()
            .map(|(src, _, h)| (src, h.join().unwrap()))
            .collect();
        // Frames still queued for the server, or in the veth's ring for a
        // NAPI that a loaded host runs late, are not lost: wait until the
        // server has taken them all. (If it never does, the receiver's
        // quiet period decides, as it did before this wait existed.)
        let _ = self.path.wait_idle();
        self.drained.store(true, Ordering::SeqCst);
        self.receiver.join().unwrap();
        let received = self.received.lock().unwrap().clone();
        let highest = self.highest.lock().unwrap().clone();
        FlowReport {
            sent,
            received,
            highest,
        }
    }
}
