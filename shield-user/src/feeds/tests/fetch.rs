//! `fetch` against a real HTTP server on 127.0.0.1 that each test starts
//! (a small hand-written HTTP/1.1 responder on a std `TcpListener`), and
//! against real files.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::config::FeedSource;
use crate::feeds::fetch::*;

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Req {
    path: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Reply {
    /// A complete response; `length` decides whether Content-Length is sent
    /// (without it the body ends when the connection closes).
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        length: bool,
    },
    /// 200 with a chunked body.
    Chunked { body: Vec<u8>, chunk: usize },
    /// Read the request, answer nothing.
    StallBeforeHeaders,
    /// Announce `announce` bytes, send `send`, then stall.
    StallInBody { announce: usize, send: usize },
}

fn ok(body: &[u8]) -> Reply {
    Reply::Full {
        status: 200,
        headers: vec![],
        body: body.to_vec(),
        length: true,
    }
}

fn status(code: u16, headers: Vec<(&'static str, String)>) -> Reply {
    Reply::Full {
        status: code,
        headers,
        body: Vec::new(),
        length: true,
    }
}

struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: impl Fn(&Req) -> Reply + Send + 'static) -> Server {
        Server::start_with(None, handler)
    }

    /// With `tls`, every connection is a TLS server session first.
    fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Req) -> Reply + Send + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, halt) = (requests.clone(), stop.clone());
        let thread = thread::spawn(move || {
            // Polling accept keeps shutdown simple: drop sets `stop`.
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        match &tls {
                            None => serve(s, &handler, &reqs, &halt),
                            Some(cfg) => {
                                let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
                                    continue;
                                };
                                serve(rustls::StreamOwned::new(conn, s), &handler, &reqs, &halt)
                            }
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The origin its validators belong to.
    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve<S: Read + Write>(
    mut stream: S,
    handler: &impl Fn(&Req) -> Reply,
    reqs: &Mutex<Vec<Req>>,
    stop: &AtomicBool,
) {
    // GET requests have no body, so what the reader buffered past the
    // head can be dropped with it.
    let mut r = BufReader::new(&mut stream);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    drop(r);
    let req = Req { path, headers };
    reqs.lock().unwrap().push(req.clone());
    let mut w = stream;
    let stall = |stop: &AtomicBool| {
        let t = Instant::now();
        while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(20) {
            thread::sleep(Duration::from_millis(10));
        }
    };
    // Write errors mean the client gave up, which some tests expect.
    let _ = match handler(&req) {
        Reply::Full {
            status,
            headers,
            body,
            length,
        } => {
            let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
            for (k, v) in headers {
                head += &format!("{k}: {v}\r\n");
            }
            if length {
                head += &format!("Content-Length: {}\r\n", body.len());
            }
            head += "\r\n";
            w.write_all(head.as_bytes())
                .and_then(|()| w.write_all(&body))
                .and_then(|()| w.flush())
        }
        Reply::Chunked { body, chunk } => {
            let mut out =
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec();
            for c in body.chunks(chunk.max(1)) {
                out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            w.write_all(&out).and_then(|()| w.flush())
        }
        Reply::StallBeforeHeaders => {
            stall(stop);
            Ok(())
        }
        Reply::StallInBody { announce, send } => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {announce}\r\n\r\n");
            let r = w
                .write_all(head.as_bytes())
                .and_then(|()| w.write_all(&vec![b'1'; send]))
                .and_then(|()| w.flush());
            stall(stop);
            r
        }
    };
}

/// Timeouts no test means to reach (those that do set their own): a local
/// fetch, TLS handshake included, can take seconds on a loaded host.
fn opts(max_bytes: u64) -> FetchOptions {
    FetchOptions {
        connect_timeout: Duration::from_secs(10),
        total_timeout: Duration::from_secs(20),
        max_bytes,
        allow_http: true,
    }
}

fn url_src(u: String) -> FeedSource {
    FeedSource::Url(u)
}

fn body(r: Result<Fetched, FetchError>) -> (Vec<u8>, Validators) {
    match r {
        Ok(Fetched::Body { bytes, validators }) => (bytes, validators),
        other => panic!("expected a body, got {other:?}"),
    }
}

const FEED: &[u8] = b"192.0.2.1\n198.51.100.0/24\n";
const DATE: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

#[test]
fn feeds_fetch_etag_then_304_on_if_none_match() {
    let s = Server::start(|r| {
        if r.header("if-none-match") == Some("\"v1\"") {
            status(304, vec![("ETag", "\"v1\"".into())])
        } else {
            Reply::Full {
                status: 200,
                headers: vec![("ETag", "\"v1\"".into())],
                body: FEED.to_vec(),
                length: true,
            }
        }
    });
    let src = url_src(s.url("/drop.txt"));
    let (bytes, v) = body(fetch(&src, &Validators::default(), &opts(1000)));
    assert_eq!(bytes, FEED);
    assert_eq!(v.etag.as_deref(), Some("\"v1\""));
    assert_eq!(v.last_modified, None);
    assert_eq!(fetch(&src, &v, &opts(1000)).unwrap(), Fetched::NotModified);
    let reqs = s.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("if-none-match"), None);
    assert_eq!(reqs[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!(reqs[1].path, "/drop.txt");
    assert!(reqs[1].header("user-agent").unwrap().starts_with("shield/"));
}

#[test]
fn feeds_fetch_last_modified_then_304_on_if_modified_since() {
    let s = Server::start(|r| {
        if r.header("if-modified-since") == Some(DATE) {
            status(304, vec![])
        } else {
            Reply::Full {
                status: 200,
                headers: vec![("Last-Modified", DATE.into())],
                body: FEED.to_vec(),
                length: true,
            }
        }
    });
    let src = url_src(s.url("/f"));
    let (_, v) = body(fetch(&src, &Validators::default(), &opts(1000)));
    assert_eq!(v.last_modified.as_deref(), Some(DATE));
    assert_eq!(v.etag, None);
    assert_eq!(fetch(&src, &v, &opts(1000)).unwrap(), Fetched::NotModified);
    assert_eq!(s.requests()[1].header("if-none-match"), None);
}

#[test]
fn feeds_fetch_changed_body_comes_back_despite_validators() {
    let s = Server::start(|_| Reply::Full {
        status: 200,
        headers: vec![("ETag", "\"v2\"".into())],
        body: FEED.to_vec(),
        length: true,
    });
    let old = Validators {
        etag: Some("\"v1\"".into()),
        last_modified: Some(DATE.into()),
        origin: Some(s.origin()),
    };
    let (bytes, v) = body(fetch(&url_src(s.url("/")), &old, &opts(1000)));
    assert_eq!(bytes, FEED);
    assert_eq!(v.etag.as_deref(), Some("\"v2\""));
    let r = &s.requests()[0];
    assert_eq!(r.header("if-none-match"), Some("\"v1\""));
    assert_eq!(r.header("if-modified-since"), Some(DATE));
}

#[test]
fn feeds_fetch_hostile_validators_are_not_kept() {
    let s = Server::start(|_| Reply::Full {
        status: 200,
        headers: vec![("ETag", "x".repeat(1000)), ("Last-Modified", " ".into())],
        body: FEED.to_vec(),
        length: true,
    });
    let (_, v) = body(fetch(
        &url_src(s.url("/")),
        &Validators::default(),
        &opts(1000),
    ));
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn feeds_fetch_unexpected_304_is_an_error() {
    let s = Server::start(|_| status(304, vec![]));
    let e = fetch(&url_src(s.url("/x")), &Validators::default(), &opts(1000)).unwrap_err();
    assert!(matches!(e, FetchError::Unexpected304 { .. }), "{e}");
}

#[test]
fn feeds_fetch_body_at_the_limit_is_accepted() {
    let big = vec![b'7'; 4096];
    let b2 = big.clone();
    let s = Server::start(move |_| ok(&b2));
    let (bytes, _) = body(fetch(
        &url_src(s.url("/")),
        &Validators::default(),
        &opts(4096),
    ));
    assert_eq!(bytes, big);
}

#[test]
fn feeds_fetch_oversize_announced_by_content_length() {
    let s = Server::start(|_| ok(&[b'1'; 2000]));
    let e = fetch(&url_src(s.url("/big")), &Validators::default(), &opts(1000)).unwrap_err();
    let FetchError::TooLarge {
        announced,
        max_bytes,
        ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((*announced, *max_bytes), (Some(2000), 1000));
    let msg = e.to_string();
    assert!(
        msg.contains(&s.url("/big")) && msg.contains("1000"),
        "{msg}"
    );
}

#[test]
fn feeds_fetch_oversize_without_content_length() {
    let s = Server::start(|_| Reply::Full {
        status: 200,
        headers: vec![],
        body: vec![b'1'; 300_000],
        length: false,
    });
    let e = fetch(&url_src(s.url("/")), &Validators::default(), &opts(1000)).unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::TooLarge {
                announced: None,
                ..
            }
        ),
        "{e}"
    );
    // And a small close-delimited body is read whole.
    let s = Server::start(|_| Reply::Full {
        status: 200,
        headers: vec![],
        body: FEED.to_vec(),
        length: false,
    });
    let (bytes, _) = body(fetch(
        &url_src(s.url("/")),
        &Validators::default(),
        &opts(1000),
    ));
    assert_eq!(bytes, FEED);
}

#[test]
fn feeds_fetch_chunked_bodies_within_and_over_the_limit() {
    let s = Server::start(|_| Reply::Chunked {
        body: FEED.to_vec(),
        chunk: 5,
    });
    let (bytes, _) = body(fetch(
        &url_src(s.url("/")),
        &Validators::default(),
        &opts(1000),
    ));
    assert_eq!(bytes, FEED);

    let s = Server::start(|_| Reply::Chunked {
        body: vec![b'9'; 200_000],
        chunk: 7000,
    });
    let e = fetch(&url_src(s.url("/")), &Validators::default(), &opts(100_000)).unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::TooLarge {
                announced: None,
                ..
            }
        ),
        "{e}"
    );
}

fn assert_times_out(reply: fn() -> Reply) {
    let s = Server::start(move |_| reply());
    let mut o = opts(1 << 20);
    o.total_timeout = Duration::from_millis(800);
    let t = Instant::now();
    let e = fetch(&url_src(s.url("/slow")), &Validators::default(), &o).unwrap_err();
    let took = t.elapsed();
    // The total budget fired, by its own account (not the 10 s connect
    // timeout, nor the server giving up).
    assert!(
        matches!(
            e,
            FetchError::Timeout {
                after,
                phase: "total",
                ..
            } if after == Duration::from_millis(800)
        ),
        "{e}"
    );
    assert!(e.to_string().contains("/slow"), "{e}");
    // Not before the budget, and long before the stalling server's 20 s:
    // under 10 s is the budget firing, with 9 s of room for a loaded
    // 2-core host.
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn feeds_fetch_server_stalling_before_headers_times_out() {
    assert_times_out(|| Reply::StallBeforeHeaders);
}

#[test]
fn feeds_fetch_server_stalling_in_the_body_times_out() {
    assert_times_out(|| Reply::StallInBody {
        announce: 10_000,
        send: 100,
    });
}

#[test]
fn feeds_fetch_error_statuses_name_the_status_and_url() {
    let s = Server::start(|r| match r.path.as_str() {
        "/missing" => status(404, vec![]),
        "/broken" => status(500, vec![]),
        "/partial" => status(206, vec![]),
        _ => status(418, vec![]),
    });
    for (path, code, text) in [
        ("/missing", 404, "HTTP 404 (Not Found)"),
        ("/broken", 500, "HTTP 500 (Internal Server Error)"),
        ("/tea", 418, "HTTP 418"),
        ("/partial", 206, "HTTP 206 (Partial Content)"),
    ] {
        let e = fetch(&url_src(s.url(path)), &Validators::default(), &opts(1000)).unwrap_err();
        assert!(
            matches!(e, FetchError::Status { status, .. } if status == code),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&s.url(path)) && msg.contains(text), "{msg}");
    }
}

#[test]
fn feeds_fetch_plain_http_is_refused_without_allow_http() {
    let s = Server::start(|_| ok(FEED));
    let mut o = opts(1000);
    o.allow_http = false;
    let e = fetch(&url_src(s.url("/f")), &Validators::default(), &o).unwrap_err();
    assert!(matches!(e, FetchError::PlainHttp { .. }), "{e}");
    assert!(e.to_string().contains("allow_http"), "{e}");
    assert!(s.requests().is_empty(), "nothing may be sent over http");
}

#[test]
fn feeds_fetch_follows_up_to_three_redirects() {
    let s = Server::start(|r| {
        let loc = |l: &str| vec![("Location", l.to_string())];
        match r.path.as_str() {
            "/a" => status(301, loc("/b")),
            "/b" => status(302, loc("dir/c")),
            "/dir/c" => status(307, loc("/final")),
            "/final" => ok(FEED),
            "/loop" => status(302, loc("/loop")),
            "/nowhere" => status(302, vec![]),
            "/ftp" => status(302, loc("ftp://127.0.0.1/x")),
            _ => status(404, vec![]),
        }
    });
    let (bytes, _) = body(fetch(
        &url_src(s.url("/a")),
        &Validators::default(),
        &opts(1000),
    ));
    assert_eq!(bytes, FEED);
    let paths: Vec<String> = s.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/a", "/b", "/dir/c", "/final"]);

    let e = fetch(
        &url_src(s.url("/loop")),
        &Validators::default(),
        &opts(1000),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::TooManyRedirects { .. }), "{e}");
    assert_eq!(s.requests().len(), 4 + 1 + MAX_REDIRECTS as usize);

    let e = fetch(
        &url_src(s.url("/nowhere")),
        &Validators::default(),
        &opts(1000),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::BadRedirect { .. }), "{e}");
    let e = fetch(&url_src(s.url("/ftp")), &Validators::default(), &opts(1000)).unwrap_err();
    assert!(matches!(e, FetchError::BadUrl { .. }), "{e}");
}

#[test]
fn feeds_fetch_connection_refused_names_the_url() {
    // Bind then drop: nothing listens on that port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/feed");
    let e = fetch(&url_src(url.clone()), &Validators::default(), &opts(1000)).unwrap_err();
    assert!(matches!(e, FetchError::Http { .. }), "{e}");
    assert!(e.to_string().contains(&url), "{e}");
}

#[test]
fn feeds_fetch_file_source_with_not_modified() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("list.txt");
    std::fs::write(&p, FEED).unwrap();
    let src = FeedSource::Path(p.clone());
    let (bytes, v) = body(fetch(&src, &Validators::default(), &opts(1000)));
    assert_eq!(bytes, FEED);
    assert!(v.etag.as_deref().unwrap().starts_with("file:26:"), "{v:?}");
    assert_eq!(fetch(&src, &v, &opts(1000)).unwrap(), Fetched::NotModified);

    // Rewritten with other content: a new body.
    std::fs::write(&p, b"203.0.113.9\n").unwrap();
    let (bytes, v2) = body(fetch(&src, &v, &opts(1000)));
    assert_eq!(bytes, b"203.0.113.9\n");
    assert_ne!(v, v2);

    // Over the cap, a directory, and a missing file.
    let e = fetch(&src, &Validators::default(), &opts(5)).unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::TooLarge {
                announced: Some(12),
                ..
            }
        ),
        "{e}"
    );
    let e = fetch(
        &FeedSource::Path(dir.path().to_path_buf()),
        &Validators::default(),
        &opts(1000),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::NotAFile { .. }), "{e}");
    let gone = dir.path().join("gone.txt");
    let e = fetch(
        &FeedSource::Path(gone.clone()),
        &Validators::default(),
        &opts(1000),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::File { .. }), "{e}");
    assert!(e.to_string().contains("gone.txt"), "{e}");
}

// ---- HTTPS, through rustls on both sides ----

const CA: &[u8] = include_bytes!("../testdata/tls/ca.pem");
const CERT: &[u8] = include_bytes!("../testdata/tls/server.pem");
const KEY: &[u8] = include_bytes!("../testdata/tls/server.key");

fn tls_server_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let der = |pem: &[u8]| -> Vec<u8> {
        match ureq::tls::parse_pem(pem).next() {
            Some(Ok(ureq::tls::PemItem::Certificate(c))) => c.der().to_vec(),
            Some(Ok(ureq::tls::PemItem::PrivateKey(k))) => k.der().to_vec(),
            _ => panic!("bad test PEM"),
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(der(CERT))],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der(KEY))),
        )
        .unwrap();
    Arc::new(cfg)
}

/// Makes this thread's fetches trust the test CA (and nothing else).
fn trust_test_ca() {
    let Some(Ok(ureq::tls::PemItem::Certificate(ca))) = ureq::tls::parse_pem(CA).next() else {
        panic!("bad test CA")
    };
    TEST_ROOTS.with(|t| *t.borrow_mut() = Some(ureq::tls::RootCerts::new_with_certs(&[ca])));
}

#[test]
fn feeds_fetch_https_with_a_trusted_ca() {
    trust_test_ca();
    let s = Server::start_with(Some(tls_server_config()), |r| {
        if r.header("if-none-match") == Some("\"t\"") {
            status(304, vec![])
        } else {
            Reply::Full {
                status: 200,
                headers: vec![("ETag", "\"t\"".into())],
                body: FEED.to_vec(),
                length: true,
            }
        }
    });
    let mut o = opts(1000);
    o.allow_http = false;
    let src = url_src(s.https_url("/tls.txt"));
    let (bytes, v) = body(fetch(&src, &Validators::default(), &o));
    assert_eq!(bytes, FEED);
    assert_eq!(fetch(&src, &v, &o).unwrap(), Fetched::NotModified);
}

#[test]
fn feeds_fetch_https_with_an_unknown_ca_fails() {
    // The system's roots (or Mozilla's) do not know the test CA.
    TEST_ROOTS.with(|t| *t.borrow_mut() = None);
    let s = Server::start_with(Some(tls_server_config()), |_| ok(FEED));
    let url = s.https_url("/tls.txt");
    let e = fetch(&url_src(url.clone()), &Validators::default(), &opts(1000)).unwrap_err();
    assert!(matches!(e, FetchError::Http { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
}

#[test]
fn feeds_fetch_https_redirect_to_plain_http_is_refused() {
    trust_test_ca();
    let plain = Server::start(|_| ok(FEED));
    let target = plain.url("/feed");
    let s = Server::start_with(Some(tls_server_config()), move |r| match r.path.as_str() {
        "/up" => status(302, vec![("Location", "/there".into())]),
        "/there" => ok(FEED),
        _ => status(301, vec![("Location", target.clone())]),
    });
    // allow_http does not make a downgrade acceptable.
    let e = fetch(
        &url_src(s.https_url("/down")),
        &Validators::default(),
        &opts(1000),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::InsecureRedirect { .. }), "{e}");
    assert!(e.to_string().contains(&plain.url("/feed")), "{e}");
    assert!(
        plain.requests().is_empty(),
        "the plain-http target was contacted"
    );
    // https → https is followed.
    let (bytes, _) = body(fetch(
        &url_src(s.https_url("/up")),
        &Validators::default(),
        &opts(1000),
    ));
    assert_eq!(bytes, FEED);
}

/// A server that sends `ETag: "v1"` with its body and 304 to a request
/// that carries it.
fn etag_server() -> Server {
    Server::start(|r| {
        if r.header("if-none-match") == Some("\"v1\"") {
            status(304, vec![])
        } else {
            Reply::Full {
                status: 200,
                headers: vec![("ETag", "\"v1\"".into()), ("Last-Modified", DATE.into())],
                body: FEED.to_vec(),
                length: true,
            }
        }
    })
}

#[test]
fn feeds_fetch_validators_go_back_only_to_the_origin_that_issued_them() {
    let b = etag_server();
    let to_b = b.url("/feed");
    let a = Server::start(move |_| status(302, vec![("Location", to_b.clone())]));
    let src = url_src(a.url("/f"));

    // The body comes from B: its validators are B's, for B alone.
    let (_, v) = body(fetch(&src, &Validators::default(), &opts(1000)));
    assert_eq!(v.origin.as_deref(), Some(b.origin().as_str()));
    assert_eq!(fetch(&src, &v, &opts(1000)).unwrap(), Fetched::NotModified);
    let to_a = a.requests();
    assert_eq!(to_a.len(), 2);
    for r in &to_a {
        assert_eq!(r.header("if-none-match"), None, "B's ETag reached A: {r:?}");
        assert_eq!(
            r.header("if-modified-since"),
            None,
            "B's date reached A: {r:?}"
        );
    }
    assert_eq!(b.requests()[1].header("if-none-match"), Some("\"v1\""));

    // The other way round: what A issued is not sent to B after A starts
    // redirecting there; B sends its body in full.
    let a_own = Validators {
        etag: Some("\"v1\"".into()),
        last_modified: Some(DATE.into()),
        origin: Some(a.origin()),
    };
    let (bytes, v) = body(fetch(&src, &a_own, &opts(1000)));
    assert_eq!(bytes, FEED);
    assert_eq!(v.origin.as_deref(), Some(b.origin().as_str()));
    let last = b.requests().pop().unwrap();
    assert_eq!(last.header("if-none-match"), None, "A's ETag reached B");
    assert_eq!(last.header("if-modified-since"), None, "A's date reached B");
}

#[test]
fn feeds_fetch_validators_of_unknown_origin_are_not_sent() {
    // A sidecar written before validators kept their origin.
    let s = etag_server();
    let old = Validators {
        etag: Some("\"v1\"".into()),
        last_modified: Some(DATE.into()),
        origin: None,
    };
    let (bytes, v) = body(fetch(&url_src(s.url("/f")), &old, &opts(1000)));
    assert_eq!(bytes, FEED);
    assert_eq!(s.requests()[0].header("if-none-match"), None);
    assert_eq!(v.origin.as_deref(), Some(s.origin().as_str()));
}
