//! The server on a real loopback socket, driven by real TCP clients.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::oneshot,
    task::JoinHandle,
    time::{sleep, timeout},
};

use super::{parse_exposition, sample_snapshot};
use crate::metrics::{
    CONTENT_TYPE, MetricsError, ServerConfig, SnapshotFn, bind, render,
    snapshot::{FeedMetrics, Snapshot},
};

/// Long enough for a loaded CI machine, short enough to notice a hang.
const PATIENCE: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    fn start(config: ServerConfig, snapshot: SnapshotFn) -> Server {
        let std = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = std.local_addr().expect("local addr");
        let listener = TcpListener::from_std(std).expect("from_std");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::metrics::serve_with(
            listener,
            snapshot,
            async {
                let _ = stopped.await;
            },
            config,
        ));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        timeout(PATIENCE, self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve does not panic");
    }
}

fn fixed(s: Snapshot) -> SnapshotFn {
    Arc::new(move || s.clone())
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8(raw[..end].to_vec()).expect("ASCII head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    Reply {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    }
}

/// Sends `raw` and reads the reply until the server closes.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    timeout(PATIENCE, async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(raw).await.expect("send");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read reply");
        parse_reply(&out)
    })
    .await
    .expect("a reply in time")
}

/// Like [`get`], but `None` when the server closes without a reply.
async fn try_get(addr: SocketAddr, path: &str) -> Option<Reply> {
    let req = format!("GET {path} HTTP/1.1\r\n\r\n");
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("a reply or a close in time")
        .ok()?;
    (!out.is_empty()).then(|| parse_reply(&out))
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    exchange(addr, req.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_metrics_returns_the_rendering() {
    let snap = sample_snapshot();
    let expected = render(&snap);
    let server = Server::start(ServerConfig::default(), fixed(snap));

    let r = get(server.addr, "/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
    assert_eq!(
        r.header("content-length"),
        Some(&*expected.len().to_string())
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(String::from_utf8(r.body).expect("utf-8"), expected);

    // HTTP/1.0, a query string and bare LFs are all fine.
    let r = exchange(server.addr, b"GET /metrics?x=1 HTTP/1.0\n\n").await;
    assert_eq!((r.status, r.body.len()), (200, expected.len()));

    let r = exchange(server.addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(&*expected.len().to_string())
    );
    assert!(r.body.is_empty());

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_paths_and_methods() {
    let server = Server::start(ServerConfig::default(), fixed(Snapshot::default()));
    let addr = server.addr;

    let r = get(addr, "/").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    assert!(String::from_utf8_lossy(&r.body).contains("href=\"/metrics\""));

    assert_eq!(get(addr, "/nope").await.status, 404);
    assert_eq!(get(addr, "/metrics/").await.status, 404);

    let r = exchange(
        addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    assert_eq!(
        exchange(addr, b"GET /metrics HTTP/2.0\r\n\r\n")
            .await
            .status,
        505
    );
    for bad in [
        &b"hello\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
        b"GET \xff HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(exchange(addr, bad).await.status, 400, "{bad:?}");
    }

    // A client that connects and leaves gets nothing and harms nothing.
    drop(TcpStream::connect(addr).await.expect("connect"));
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /metr").await.expect("send");
    drop(half);
    assert_eq!(get(addr, "/metrics").await.status, 200);

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_head_gets_431_and_the_server_keeps_serving() {
    let config = ServerConfig::default();
    let dropped = Arc::clone(&config.dropped);
    let server = Server::start(config, fixed(sample_snapshot()));
    let mut req = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    req.resize(16 * 1024, b'a');
    let r = exchange(server.addr, &req).await;
    assert_eq!(r.status, 431, "{r:?}");

    // Exactly at the limit is still fine.
    let mut req = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    req.resize(8 * 1024 - 4, b'a');
    req.extend_from_slice(b"\r\n\r\n");
    assert_eq!(exchange(server.addr, &req).await.status, 200);

    assert_eq!(get(server.addr, "/metrics").await.status, 200);
    let d = dropped.read();
    assert_eq!((d.oversized, d.busy, d.evicted, d.timeout), (1, 0, 0, 0));
    server.stop().await;
}

/// Reads until the server closes; returns how long that took.
async fn wait_for_close(mut s: TcpStream, started: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    let read = timeout(PATIENCE, s.read(&mut buf))
        .await
        .expect("the server closes a silent client");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the server answered a silent client: {read:?}"
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_are_cut_off_while_others_are_served() {
    // 5 s: room for the scrape below to be served first on a loaded host.
    let read_timeout = Duration::from_secs(5);
    let config = ServerConfig {
        read_timeout,
        ..ServerConfig::default()
    };
    let dropped = Arc::clone(&config.dropped);
    let server = Server::start(config, fixed(sample_snapshot()));
    let started = Instant::now();
    let silent = TcpStream::connect(server.addr).await.expect("connect");
    // Slowloris: a byte every 50 ms, never finishing, must not reset the
    // clock. It trickles for 10 s or more, twice the timeout: a server that
    // reset its clock per byte would let it trickle to the end.
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    let trickle = tokio::spawn(async move {
        let mut head = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        head.resize(200, b'a');
        let mut cut_off = false;
        for b in head {
            if slow.write_all(&[b]).await.is_err() {
                cut_off = true;
                break;
            }
            sleep(Duration::from_millis(50)).await;
        }
        (slow, cut_off)
    });

    // Served meanwhile, well before the silent ones are dropped.
    let r = get(server.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    let served_at = started.elapsed();

    let silent_for = wait_for_close(silent, started).await;
    // Compared with when the silent client was actually cut off, not with
    // the configured timeout: a loaded host delays both alike.
    assert!(
        served_at < silent_for,
        "a scrape waited for the silent clients: served at {served_at:?}, silent cut off at {silent_for:?}"
    );
    let (slow, cut_off) = timeout(PATIENCE, trickle)
        .await
        .expect("trickle")
        .expect("trickle task");
    assert!(cut_off, "the trickle kept the slow client in for 200 bytes");
    let slow_for = wait_for_close(slow, started).await;
    // Not before their time: the timer starts at accept, after `started`,
    // and a loaded host only makes it later.
    for (who, t) in [("silent", silent_for), ("slow", slow_for)] {
        assert!(t >= read_timeout, "{who} cut off early: {t:?}");
    }
    assert_eq!(dropped.read().timeout, 2, "{:?}", dropped.read());
    assert_eq!(get(server.addr, "/metrics").await.status, 200);
    server.stop().await;
}

/// Established IPv4 TCP connections on the loopback to or from `port`:
/// the receive queues of the server's ends and the send queues (bytes not
/// yet acknowledged) of the clients' ends.
fn loopback_queues(port: u16) -> (Vec<u64>, Vec<u64>) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port_of = |addr: &str| {
        addr.split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let (mut server, mut client) = (Vec::new(), Vec::new());
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(&"01"), Some(queues)) =
            (f.get(1), f.get(2), f.get(3), f.get(4))
        else {
            continue;
        };
        let Some((tx, rx)) = queues.split_once(':') else {
            continue;
        };
        let hex = |q| u64::from_str_radix(q, 16).unwrap_or(u64::MAX);
        if port_of(local) == Some(port) {
            server.push(hex(rx));
        } else if port_of(remote) == Some(port) {
            client.push(hex(tx));
        }
    }
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_scrapes_are_all_answered() {
    const CLIENTS: usize = 100;
    let snap = sample_snapshot();
    let expected = Arc::new(render(&snap));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let port = Arc::new(std::sync::OnceLock::<u16>::new());
    let gate_port = Arc::clone(&port);
    let snapshot: SnapshotFn = Arc::new(move || {
        // The first snapshot is an agent lock held until every scrape has
        // arrived and the server has read it (the clients' bytes all
        // acknowledged, the server's receive queues empty): then they all
        // overlap it, on however loaded a host, rather than by luck.
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            let port = *gate_port.get().expect("the server's port");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let (server, client) = loopback_queues(port);
                let all_read = server.len() == CLIENTS && server.iter().all(|&q| q == 0);
                let all_sent = client.len() == CLIENTS && client.iter().all(|&q| q == 0);
                if all_read && all_sent {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        snap.clone()
    });
    let config = ServerConfig {
        max_connections: 128,
        // Neither is to be reached: a scrape may wait out the gate above.
        read_timeout: PATIENCE,
        render_timeout: PATIENCE,
        ..ServerConfig::default()
    };
    let server = Server::start(config, snapshot);
    port.set(server.addr.port()).expect("set once");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let addr = server.addr;
            let expected = Arc::clone(&expected);
            tokio::spawn(async move {
                let r = get(addr, "/metrics").await;
                assert_eq!(r.status, 200);
                assert_eq!(r.body, expected.as_bytes());
            })
        })
        .collect();
    for c in clients {
        c.await.expect("client");
    }
    // Scrapes that waited for a snapshot shared it: the first took one,
    // every scrape that asked while it was held shares the next (or that
    // first one too, if they all asked before it started: its worker
    // thread may be preempted between taking the renderer and starting
    // it). At most two (one per worker thread) can have been read but not
    // yet asked when the gate opened; each of those may take one more.
    let calls = calls.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&calls),
        "{calls} snapshots for {CLIENTS} scrapes"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_make_room_for_a_scrape() {
    let config = ServerConfig {
        max_connections: 4,
        // Never reached, however slowly a loaded host runs this test.
        read_timeout: Duration::from_secs(600),
        ..ServerConfig::default()
    };
    let dropped = Arc::clone(&config.dropped);
    let server = Server::start(config, fixed(Snapshot::default()));
    // Every slot held by a connection that never finishes its head. The
    // server accepts in connect order and each is in line from its accept,
    // whether or not its task has run yet.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(server.addr).await.expect("connect");
        c.write_all(b"GET /metr").await.expect("send");
        idle.push(c);
    }
    for _ in 0..3 {
        let r = get(server.addr, "/metrics").await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    // Idle ones were closed to make room (a scrape whose slot came free
    // when the previous one finished needed none), the newest kept. The
    // first scrape found every slot held, so the oldest surely went; its
    // task may take a while to close it on a loaded host.
    let mut got = Vec::new();
    let oldest = timeout(PATIENCE, idle[0].read_to_end(&mut got)).await;
    assert!(
        matches!(oldest, Ok(Ok(_))),
        "the oldest idle connection made room: {oldest:?}"
    );
    let mut closed = 1;
    for c in &mut idle[1..] {
        let mut got = Vec::new();
        if let Ok(Ok(_)) = timeout(Duration::from_millis(200), c.read_to_end(&mut got)).await {
            closed += 1;
        }
    }
    assert!((1..4).contains(&closed), "{closed} idle connections closed");
    // Each closed one was counted as it went (before its socket closed).
    let d = dropped.read();
    assert!(
        (closed as u64..4).contains(&d.evicted),
        "{closed} closed: {d:?}"
    );
    assert_eq!((d.busy, d.timeout), (0, 0), "{d:?}");
    let mut got = Vec::new();
    let newest = timeout(Duration::from_millis(200), idle[3].read_to_end(&mut got)).await;
    assert!(newest.is_err(), "the newest idle connection is still open");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503() {
    let config = ServerConfig {
        max_connections: 1,
        // Also how long a newcomer waits for a served connection to be
        // answered before it is refused (crate::evict::take_slot_patiently).
        read_timeout: Duration::from_secs(1),
        linger: Duration::from_secs(30),
        ..ServerConfig::default()
    };
    let dropped = Arc::clone(&config.dropped);
    // The only slot waits for a snapshot the agent is slow to give: the one
    // state a connection cannot be evicted in (answered ones make room, see
    // answered_connections_make_room); a newcomer waits `read_timeout` for
    // it to be answered, then is refused.
    let stuck = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let snapshot: SnapshotFn = {
        let (stuck, calls) = (Arc::clone(&stuck), Arc::clone(&calls));
        Arc::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            while stuck.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Snapshot::default()
        })
    };
    let server = Server::start(config, snapshot);
    let mut a = TcpStream::connect(server.addr).await.expect("connect");
    a.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .expect("send");
    // The snapshot started: a's head was read, it waits for the rendering.
    let deadline = Instant::now() + PATIENCE;
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no snapshot for a");
        sleep(Duration::from_millis(10)).await;
    }

    let r = get(server.addr, "/metrics").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.body, b"shield-agent metrics: too many connections\n");

    // Refusals are capped too, at as many again: refused clients that stay
    // connected hold theirs (the server lingers for their close), and once
    // two do, the next client is closed without a word. The first refusal
    // above may still hold one for a moment, so count rather than assume.
    let mut refused = Vec::new();
    loop {
        let mut c = TcpStream::connect(server.addr).await.expect("connect");
        let _ = c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let mut got = Vec::new();
        let _ = timeout(PATIENCE, c.read_to_end(&mut got))
            .await
            .expect("closed in time");
        if got.is_empty() {
            break;
        }
        assert_eq!(parse_reply(&got).status, 503);
        refused.push(c);
        assert!(refused.len() <= 1, "{} refusals lingering", refused.len());
    }
    // The first refusal, these, and the one closed without a word; the
    // connection being served waits for its rendering, so nothing to evict.
    let d = dropped.read();
    assert!(d.busy >= refused.len() as u64 + 2, "{d:?}");
    assert_eq!(d.evicted, 0, "{d:?}");
    drop(refused);

    // A freed slot is usable again.
    stuck.store(false, Ordering::SeqCst);
    drop(a);
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Until the server has seen c and d go, refusals may still be full
        // and a try closed without a reply.
        let status = try_get(server.addr, "/metrics").await.map(|r| r.status);
        if status == Some(200) {
            break;
        }
        assert!(matches!(status, None | Some(503)), "{status:?}");
        assert!(Instant::now() < deadline, "the slot was never freed");
        sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_connections_make_room() {
    let config = ServerConfig {
        max_connections: 2,
        linger: Duration::from_secs(30),
        ..ServerConfig::default()
    };
    let dropped = Arc::clone(&config.dropped);
    let server = Server::start(config, fixed(Snapshot::default()));
    // Both slots answered and lingering: the clients never close.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(server.addr).await.expect("connect");
        c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .expect("send");
        let mut got = Vec::new();
        timeout(PATIENCE, c.read_to_end(&mut got))
            .await
            .expect("a reply in time")
            .expect("read reply");
        assert_eq!(parse_reply(&got).status, 200);
        held.push(c);
    }
    // Each newcomer takes the slot of the oldest answered one; their
    // replies were out, so nothing counts as dropped.
    for _ in 0..5 {
        assert_eq!(get(server.addr, "/metrics").await.status, 200);
    }
    let d = dropped.read();
    assert_eq!((d.busy, d.evicted), (0, 0), "{d:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped() {
    // Far more than a loopback connection buffers when nobody reads.
    let feeds = (0..40_000)
        .map(|i| FeedMetrics {
            name: format!("feed-{i:05}"),
            entries: i,
            ..FeedMetrics::default()
        })
        .collect();
    let snap = Snapshot {
        feeds,
        ..Snapshot::default()
    };
    let full = render(&snap).len();
    assert!(full > 8 << 20, "{full}");
    let config = ServerConfig {
        max_connections: 1,
        // Long enough that the first refusal below surely falls inside it:
        // one local connect and read take milliseconds, and a loaded 2-core
        // host leaves 10 s of room.
        write_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    };
    let server_dropped = Arc::clone(&config.dropped);
    let server = Server::start(config, fixed(snap));

    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stuck = socket.connect(server.addr).await.expect("connect");
    stuck
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .expect("send");
    // Until its head is read, `stuck` is a waiting connection that a new
    // one may evict; once it is being served, it holds its slot. The first
    // bytes of its reply say it is: a fixed pause may end before that on a
    // loaded host.
    let mut first = [0u8; 16];
    timeout(PATIENCE, stuck.read_exact(&mut first))
        .await
        .expect("the reply starts in time")
        .expect("read the start of the reply");
    assert!(first.starts_with(b"HTTP/1.1 200"), "{first:?}");

    // Answered, `stuck` no longer holds its slot against a newcomer: it is
    // evicted (counted, as its reply was not out) and the newcomer served.
    let dropped = Arc::clone(&server_dropped);
    assert_eq!(get(server.addr, "/").await.status, 200);
    // Counted by `stuck`'s own task, which may run after the newcomer's.
    let deadline = Instant::now() + PATIENCE;
    while dropped.read().evicted == 0 {
        assert!(Instant::now() < deadline, "{:?}", dropped.read());
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dropped.read().evicted, 1, "{:?}", dropped.read());

    // What `stuck` can still read is a cut-off reply.
    let mut got = Vec::new();
    let _ = timeout(PATIENCE, stuck.read_to_end(&mut got)).await;
    assert!(got.len() < full, "{} of {full} bytes", got.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_snapshot_is_a_500_not_a_crash() {
    let first = Arc::new(AtomicBool::new(true));
    let snapshot: SnapshotFn = Arc::new(move || {
        if first.swap(false, Ordering::Relaxed) {
            panic!("poisoned agent state (deliberate, in a test)");
        }
        Snapshot::default()
    });
    let server = Server::start(ServerConfig::default(), snapshot);
    assert_eq!(get(server.addr, "/metrics").await.status, 500);
    let r = get(server.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(parse_exposition(&String::from_utf8_lossy(&r.body)).is_ok());
    server.stop().await;
}

/// A scrape after a change shows the change: one scrape after another each
/// gets a snapshot of its own, however close together; only a client
/// hammering the endpoint is answered from the last one, and then it costs
/// a few snapshots, not one per request.
#[tokio::test]
async fn each_scrape_sees_a_fresh_snapshot_unless_the_endpoint_is_hammered() {
    let snap = sample_snapshot();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let snapshot: SnapshotFn = Arc::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        snap.clone()
    });
    // An hour: every request below falls inside one `max_age`.
    let config = ServerConfig {
        max_age: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let server = Server::start(config, snapshot);
    for i in 1..=3 {
        assert_eq!(get(server.addr, "/metrics").await.status, 200);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            i,
            "scrape {i}: its own snapshot"
        );
    }
    // Hammered: past four snapshots within max_age, the last is shared.
    for _ in 0..50 {
        assert_eq!(get(server.addr, "/metrics").await.status, 200);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "a loop costs four snapshots"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_listener() {
    let server = Server::start(ServerConfig::default(), fixed(Snapshot::default()));
    let addr = server.addr;
    assert_eq!(get(addr, "/metrics").await.status, 200);
    server.stop().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn bind_explains_a_taken_port() {
    let first = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = first.local_addr().expect("addr");
    let err = bind(addr).expect_err("second bind");
    assert!(matches!(err, MetricsError::AddrInUse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "metrics_listen {addr}: address in use — another shield-agent, or set metrics_listen"
        )
    );
    let err = bind("192.0.2.1:9964".parse().expect("addr")).expect_err("not ours");
    assert!(
        err.to_string()
            .starts_with("metrics_listen 192.0.2.1:9964: no such address on this host"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_agent_gets_503_and_one_blocked_thread() {
    let stuck = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let snapshot: SnapshotFn = {
        let (stuck, calls) = (Arc::clone(&stuck), Arc::clone(&calls));
        Arc::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            // The agent's state lock, held by something slow.
            while stuck.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            sample_snapshot()
        })
    };
    let config = ServerConfig {
        // Waited out three times below; and once unstuck, a rendering of
        // the small sample snapshot takes well under a millisecond, so 1 s
        // is ample room for a loaded host to schedule it.
        render_timeout: Duration::from_secs(1),
        // Every request wants a snapshot no older than itself here.
        max_age: Duration::ZERO,
        ..ServerConfig::default()
    };
    let server = Server::start(config, snapshot);
    for _ in 0..3 {
        assert_eq!(get(server.addr, "/metrics").await.status, 503);
    }
    // Later scrapes waited for the first, stuck snapshot.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Other pages do not need a snapshot.
    assert_eq!(get(server.addr, "/").await.status, 200);

    stuck.store(false, Ordering::SeqCst);
    let r = get(server.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, render(&sample_snapshot()).as_bytes());
    // The stuck snapshot predates this request, so it took a fresh one.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    server.stop().await;
}
