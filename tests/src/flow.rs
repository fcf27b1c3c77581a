//! Steady UDP flows from several client addresses to the server, counted per
//! source on arrival: what a test needs to say "not one packet from X got
//! through while Y kept flowing".

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::lab::Lab;

/// Senders stop by themselves after this long even if nobody stops them.
const MAX_RUN: Duration = Duration::from_secs(90);

pub struct Flows {
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<HashMap<IpAddr, u64>>>,
    senders: Vec<(IpAddr, JoinHandle<u64>)>,
    receiver: JoinHandle<()>,
}

/// What was sent and what arrived, per source.
#[derive(Debug)]
pub struct FlowReport {
    pub sent: HashMap<IpAddr, u64>,
    pub received: HashMap<IpAddr, u64>,
}

impl FlowReport {
    pub fn received(&self, src: IpAddr) -> u64 {
        self.received.get(&src).copied().unwrap_or(0)
    }

    pub fn sent(&self, src: IpAddr) -> u64 {
        self.sent.get(&src).copied().unwrap_or(0)
    }
}

impl Flows {
    /// One sender per source address (each must be configured on the
    /// client), one datagram every `interval`, to the server's v4 address.
    pub fn start(lab: &Lab, port: u16, sources: &[IpAddr], interval: Duration) -> Flows {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(HashMap::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let dst = SocketAddr::new(lab.server_v4, port);
        let receiver = {
            let (ns, stop, received) = (lab.server_ns.clone(), stop.clone(), received.clone());
            thread::spawn(move || {
                Lab::enter(&ns);
                let sock = UdpSocket::bind(dst).expect("bind flow receiver");
                sock.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut buf = [0u8; 64];
                let deadline = Instant::now() + MAX_RUN + Duration::from_secs(5);
                // Keep draining for a moment after stop, for datagrams in flight.
                let mut quiet_since: Option<Instant> = None;
                while Instant::now() < deadline {
                    match sock.recv_from(&mut buf) {
                        Ok((_, from)) => {
                            *received.lock().unwrap().entry(from.ip()).or_insert(0) += 1;
                        }
                        Err(_) if stop.load(Ordering::Relaxed) => {
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
                let h = thread::spawn(move || {
                    Lab::enter(&ns);
                    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind flow sender");
                    let started = Instant::now();
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
                        let _ = sock.send_to(&sent.to_be_bytes(), dst);
                        sent += 1;
                        thread::sleep(interval);
                    }
                    sent
                });
                (src, h)
            })
            .collect();
        Flows {
            stop,
            received,
            senders,
            receiver,
        }
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
            .map(|(src, h)| (src, h.join().unwrap()))
            .collect();
        self.receiver.join().unwrap();
        let received = self.received.lock().unwrap().clone();
        FlowReport { sent, received }
    }
}
