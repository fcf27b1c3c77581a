//! A small HTTP server for feed tests, listening on 127.0.0.1 (or another
//! address of the namespace) inside a lab's namespace (where the agent runs). It serves one body with an ETag,
//! answers conditional requests with 304, can redirect, stall or go away,
//! and can speak HTTPS with the test CA's certificate for 127.0.0.1
//! ([`TEST_CA`], for the agent's `SSL_CERT_FILE`).

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::lab::Lab;

/// The CA that signed the HTTPS server's certificate (for 127.0.0.1).
pub const TEST_CA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shield-user/src/feeds/testdata/tls/ca.pem"
);
const CERT: &[u8] = include_bytes!("../../shield-user/src/feeds/testdata/tls/server.pem");
const KEY: &[u8] = include_bytes!("../../shield-user/src/feeds/testdata/tls/server.key");

fn tls_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(CERT).expect("test cert")],
            PrivateKeyDer::from_pem_slice(KEY).expect("test key"),
        )
        .unwrap();
    Arc::new(cfg)
}

#[derive(Default)]
struct State {
    body: Vec<u8>,
    version: u32,
    stall: bool,
    /// Requests wait (counted) until this is cleared.
    hold: bool,
    redirect: Option<String>,
    requests: u32,
    not_modified: u32,
}

pub struct FeedServer {
    addr: SocketAddr,
    tls: bool,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl FeedServer {
    /// Starts serving `body` in `ns`.
    pub fn start_in(ns: &str, body: &[u8]) -> FeedServer {
        FeedServer::start(ns, IpAddr::from([127, 0, 0, 1]), body, None)
    }

    /// As [`FeedServer::start_in`], listening on `ip` (an address of `ns`,
    /// e.g. one [`Lab::add_server_address`] gave it).
    pub fn start_at(ns: &str, ip: IpAddr, body: &[u8]) -> FeedServer {
        FeedServer::start(ns, ip, body, None)
    }

    /// As [`FeedServer::start_in`], over HTTPS.
    pub fn start_tls_in(ns: &str, body: &[u8]) -> FeedServer {
        FeedServer::start(ns, IpAddr::from([127, 0, 0, 1]), body, Some(tls_config()))
    }

    fn start(
        ns: &str,
        ip: IpAddr,
        body: &[u8],
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> FeedServer {
        let is_tls = tls.is_some();
        let state = Arc::new(Mutex::new(State {
            body: body.to_vec(),
            version: 1,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = {
            let (ns, state, stop) = (ns.to_string(), state.clone(), stop.clone());
            thread::spawn(move || {
                Lab::enter(&ns);
                let l = TcpListener::bind((ip, 0)).expect("bind feed server");
                l.set_nonblocking(true).unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                let deadline = Instant::now() + Duration::from_secs(300);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match l.accept() {
                        Ok((s, _)) => {
                            let (state, stop, tls) = (state.clone(), stop.clone(), tls.clone());
                            thread::spawn(move || {
                                s.set_nonblocking(false).unwrap();
                                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                                match tls {
                                    None => serve(s, &state, &stop),
                                    Some(cfg) => {
                                        let conn = rustls::ServerConnection::new(cfg).unwrap();
                                        serve(rustls::StreamOwned::new(conn, s), &state, &stop);
                                    }
                                }
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        let addr = rx.recv().unwrap();
        FeedServer {
            addr,
            tls: is_tls,
            state,
            stop,
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/feed.txt", self.addr)
    }

    /// Answers every request with `302 Found` to `location` from now on
    /// (`None`: serve the body again).
    pub fn set_redirect(&self, location: Option<String>) {
        self.state.lock().unwrap().redirect = location;
    }

    /// Serves `body` from now on, under a new ETag.
    pub fn set_body(&self, body: &[u8]) {
        let mut s = self.state.lock().unwrap();
        s.body = body.to_vec();
        s.version += 1;
    }

    /// Accepts connections but never answers.
    pub fn set_stall(&self, on: bool) {
        self.state.lock().unwrap().stall = on;
    }

    /// Makes every request wait, already counted, until `set_hold(false)`:
    /// a download stays in flight for as long as a test needs.
    pub fn set_hold(&self, on: bool) {
        self.state.lock().unwrap().hold = on;
    }

    pub fn requests(&self) -> u32 {
        self.state.lock().unwrap().requests
    }

    pub fn not_modified(&self) -> u32 {
        self.state.lock().unwrap().not_modified
    }

    /// Closes the listener: connections are refused from now on.
    pub fn shut_down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn serve<S: Read + Write>(mut s: S, state: &Mutex<State>, stop: &AtomicBool) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    state.lock().unwrap().requests += 1;
    let held_until = Instant::now() + Duration::from_secs(120);
    while state.lock().unwrap().hold && !stop.load(Ordering::Relaxed) && Instant::now() < held_until
    {
        thread::sleep(Duration::from_millis(10));
    }
    let (body, etag, stall, redirect) = {
        let st = state.lock().unwrap();
        (
            st.body.clone(),
            format!("\"v{}\"", st.version),
            st.stall,
            st.redirect.clone(),
        )
    };
    if let Some(to) = redirect {
        let _ = write!(
            s,
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = s.flush();
        return;
    }
    if stall {
        let until = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
        return;
    }
    let conditional = head
        .lines()
        .any(|l| l.starts_with("if-none-match:") && l.contains(&etag));
    if conditional {
        state.lock().unwrap().not_modified += 1;
        let _ = write!(
            s,
            "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
        );
        let _ = s.flush();
        return;
    }
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(&body);
    let _ = s.flush();
}
