//! The control socket end to end: a real Unix socket in a temp dir, the
//! real server and client, and the real `shieldctl` binary (run as another
//! user through setpriv where the test is about credentials).
//!
//! The tests run as root (the server's peer checks need a non-root peer to
//! mean anything, and making one needs root).

use std::{
    io::{Read, Write},
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        net::UnixStream,
    },
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use shield_user::control::{
    Client, ClientError, ControlSocket, ErrorKind, Reply, Request, Response, ServerConfig,
    ServerError, frame,
    protocol::{self, FeedsSummary, StatusInfo, Totals},
    server::{Handler, Peer, handler_fn, lookup_group},
};
use tokio::sync::oneshot;

fn status_reply(peer: Peer) -> Reply {
    Reply::Status(StatusInfo {
        version: "test".into(),
        uptime_secs: 1,
        pid: peer.pid.unwrap_or(0) as u32,
        program_id: Some(1),
        dry_run: false,
        interfaces: vec![],
        feeds: FeedsSummary::default(),
        totals: Totals::default(),
        bans_active: 0,
        health: Default::default(),
        crowdsec: None,
    })
}

/// A handler with one behaviour per request type the tests need.
fn test_handler() -> Arc<dyn Handler> {
    handler_fn(|req, peer: Peer| async move {
        match req {
            Request::Status => Response::Ok(status_reply(peer)),
            Request::Stats => Response::done(format!("uid {} gid {}", peer.uid, peer.gid)),
            Request::BanDel { net } => {
                Response::error(ErrorKind::NotFound, format!("no ban for {net}"))
            }
            Request::Reload => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Response::done("reloaded")
            }
            // Far longer than any client in these tests waits for it.
            Request::FeedsList => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Response::done("listed")
            }
            Request::Detach => panic!("handler bug"),
            Request::Top { n } => Response::Ok(Reply::Bans(
                (0..n)
                    .map(|i| protocol::BanRow {
                        net: shield_user::net::Cidr::host(std::net::IpAddr::from(i.to_be_bytes())),
                        origin: protocol::BanOrigin::Feed,
                        reason: Some("x".repeat(1000)),
                        expires_in_secs: None,
                    })
                    .collect(),
            )),
            _ => Response::error(ErrorKind::Unsupported, "not in the test handler"),
        }
    })
}

struct TestServer {
    dir: tempfile::TempDir,
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    fn start(config: ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        // Other users (the setpriv tests) must be able to reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // A parent that does not exist yet: bind must create it.
        let path = dir.path().join("run").join("shield.sock");
        let sock = ControlSocket::bind(&path, config).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(sock.serve(test_handler(), async {
                let _ = stopped.await;
            }))
        });
        TestServer {
            dir,
            path,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.path).unwrap()
    }

    /// Stops the server and returns what `serve` returned.
    fn stop(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Timeouts no test means to reach (those that do set their own): on a
/// loaded host a client thread can stall between connect and its request.
fn patient() -> ServerConfig {
    ServerConfig {
        request_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(3600),
        ..ServerConfig::default()
    }
}

/// Reads one response frame from a raw stream.
fn read_response(s: &mut UnixStream) -> Response {
    let body = frame::read_frame(s, frame::MAX_RESPONSE_BYTES).unwrap();
    protocol::decode_response(&body).unwrap()
}

fn assert_closed(s: &mut UnixStream) {
    let mut b = [0u8; 1];
    // Generous: a close the server owes within a second may come late on a
    // loaded host; "never" still fails.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("connection still open: {other:?}"),
    }
}

fn error_kind(r: Response) -> ErrorKind {
    match r {
        Response::Err(e) => e.kind,
        Response::Ok(r) => panic!("expected an error, got {r:?}"),
    }
}

#[test]
fn socket_is_created_with_mode_0660_in_a_new_0755_dir() {
    let srv = TestServer::start(ServerConfig {
        group: "nogroup".into(),
        ..patient()
    });
    let meta = std::fs::symlink_metadata(&srv.path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o660);
    assert_eq!(meta.uid(), 0);
    assert_eq!(Some(meta.gid()), lookup_group("nogroup").unwrap());
    let dir = std::fs::metadata(srv.path.parent().unwrap()).unwrap();
    assert_eq!(dir.mode() & 0o777, 0o755);
}

#[test]
fn serves_requests_and_passes_the_peer() {
    let srv = TestServer::start(patient());
    let mut c = srv.client();
    match c.request(&Request::Status).unwrap() {
        Response::Ok(Reply::Status(s)) => assert_eq!(s.pid, std::process::id()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.request(&Request::Stats).unwrap(),
        Response::done("uid 0 gid 0")
    );
}

#[test]
fn handler_errors_keep_the_connection_and_panics_become_internal() {
    let srv = TestServer::start(patient());
    let mut c = srv.client();
    let net = "192.0.2.1".parse().unwrap();
    assert_eq!(
        error_kind(c.request(&Request::BanDel { net }).unwrap()),
        ErrorKind::NotFound
    );
    assert_eq!(
        error_kind(c.request(&Request::Detach).unwrap()),
        ErrorKind::Internal
    );
    // Same connection, still served.
    assert!(matches!(
        c.request(&Request::Status).unwrap(),
        Response::Ok(Reply::Status(_))
    ));
}

#[test]
fn two_hundred_concurrent_clients_are_all_answered() {
    let srv = TestServer::start(patient());
    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let path = srv.path.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let mut c = Client::connect(&path)?;
                // Half of them hold the connection through a slow request,
                // so the server really has many at once.
                let req = if i % 2 == 0 {
                    Request::Reload
                } else {
                    Request::Status
                };
                let first = c.request(&req)?;
                let second = c.request(&Request::Status)?;
                Ok::<_, ClientError>((first, second))
            })
        })
        .collect();
    for h in handles {
        let (first, second) = h.join().unwrap().unwrap();
        assert!(matches!(first, Response::Ok(_)), "{first:?}");
        assert!(
            matches!(second, Response::Ok(Reply::Status(_))),
            "{second:?}"
        );
    }
}

#[test]
fn a_silent_client_blocks_nobody_and_is_cut_off() {
    // Only the request timeout is short: every other timer is an hour.
    let srv = TestServer::start(ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..patient()
    });
    let start = Instant::now();
    let mut silent = UnixStream::connect(&srv.path).unwrap();
    // A client that sends half a header and stalls is no better.
    let mut stalled = UnixStream::connect(&srv.path).unwrap();
    stalled.write_all(&[0, 0]).unwrap();
    // Others are served while both sit there.
    for _ in 0..5 {
        assert!(matches!(
            srv.client().request(&Request::Status).unwrap(),
            Response::Ok(_)
        ));
    }
    for s in [&mut silent, &mut stalled] {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        match read_response(s) {
            // The 300 ms request timeout, by its own account: no other
            // timer could have fired within the hour.
            Response::Err(e) => {
                assert_eq!(e.kind, ErrorKind::Timeout, "{e:?}");
                assert!(e.message.contains("within 0.3s"), "{e:?}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_closed(s);
    }
    // Not before its time: the timer starts at accept, after `start`, and
    // a loaded host only makes it later.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "cut off after {took:?}");
}

#[test]
fn connections_may_idle_between_requests_up_to_the_idle_limit() {
    let srv = TestServer::start(ServerConfig {
        request_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(3600),
        ..ServerConfig::default()
    });
    let mut c = srv.client();
    assert!(matches!(
        c.request(&Request::Status).unwrap(),
        Response::Ok(_)
    ));
    // Longer than the request timeout (a sleep lasts at least this long),
    // and however long a loaded host makes it, well inside the idle limit.
    thread::sleep(Duration::from_millis(600));
    assert!(matches!(
        c.request(&Request::Status).unwrap(),
        Response::Ok(_)
    ));

    let srv = TestServer::start(ServerConfig {
        idle_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    });
    let mut s = UnixStream::connect(&srv.path).unwrap();
    let status = protocol::encode_request(&Request::Status).unwrap();
    frame::write_frame(&mut s, &status, frame::MAX_REQUEST_BYTES).unwrap();
    assert!(matches!(read_response(&mut s), Response::Ok(_)));
    // The server closes it on its own. Waiting for that close, not for a
    // fixed time: a request sent after a sleep races the server's idle
    // timer on a loaded host, and a request that arrives first is served.
    assert_closed(&mut s);
}

#[test]
fn the_client_gives_up_after_its_timeout() {
    let srv = TestServer::start(patient());
    let mut c = srv.client();
    c.set_timeout(Duration::from_millis(50)).unwrap();
    // The test handler takes a minute over a feeds list.
    match c.request(&Request::FeedsList) {
        Err(e @ ClientError::Timeout { .. }) => {
            assert!(e.to_string().contains("did not answer within 0.05s"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_4gib_length_prefix_gets_too_large_and_the_server_goes_on() {
    let srv = TestServer::start(patient());
    let mut s = UnixStream::connect(&srv.path).unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    s.write_all(b"{\"version\":1").unwrap();
    assert_eq!(error_kind(read_response(&mut s)), ErrorKind::TooLarge);
    assert_closed(&mut s);
    // One byte over the request cap is refused too.
    let mut s = UnixStream::connect(&srv.path).unwrap();
    let len = u32::try_from(frame::MAX_REQUEST_BYTES + 1).unwrap();
    s.write_all(&len.to_be_bytes()).unwrap();
    assert_eq!(error_kind(read_response(&mut s)), ErrorKind::TooLarge);
    assert!(matches!(
        srv.client().request(&Request::Status).unwrap(),
        Response::Ok(_)
    ));
}

#[test]
fn bad_frames_get_typed_errors_then_the_connection_closes() {
    let srv = TestServer::start(patient());
    for (body, kind) in [
        (&b"\x00\xffnot json"[..], ErrorKind::BadRequest),
        (
            br#"{"version":1,"request":{"type":"ban_add","net":"10.1.2.3/8"}}"#,
            ErrorKind::BadRequest,
        ),
        (
            br#"{"version":2,"request":{"type":"status"}}"#,
            ErrorKind::VersionMismatch,
        ),
        (
            br#"{"version":1,"request":{"type":"warp_drive"}}"#,
            ErrorKind::Unsupported,
        ),
    ] {
        let mut s = UnixStream::connect(&srv.path).unwrap();
        frame::write_frame(&mut s, body, frame::MAX_REQUEST_BYTES).unwrap();
        let resp = read_response(&mut s);
        assert_eq!(error_kind(resp), kind, "{}", String::from_utf8_lossy(body));
        assert_closed(&mut s);
    }
    assert!(matches!(
        srv.client().request(&Request::Status).unwrap(),
        Response::Ok(_)
    ));
}

#[test]
fn over_the_cap_idle_connections_make_room_and_only_serving_ones_mean_busy() {
    let srv = TestServer::start(ServerConfig {
        max_connections: 2,
        request_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    });
    // Both slots held by connections that never send a request: a client
    // with a request gets in, and the oldest idle one is closed.
    // The server accepts in connect order and parks each connection in line
    // at accept, so the holders are the oldest whether or not their tasks
    // have run by the time the next client arrives.
    let mut holders: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(&srv.path).unwrap())
        .collect();
    for _ in 0..3 {
        assert!(matches!(
            srv.client().request(&Request::Status).unwrap(),
            Response::Ok(_)
        ));
    }
    // Told at once; 30 s is room for a loaded host to run its task.
    holders[0]
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    let _ = holders[0].read_to_end(&mut got);
    assert!(
        String::from_utf8_lossy(&got).contains("make room"),
        "the oldest idle connection is told why: {got:?}"
    );
    drop(holders);

    // Both slots serving requests: nobody to evict, so `busy`. Until the
    // server has read the slow requests their connections are idle and
    // evictable, so try again until it has.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slow: Vec<_> = (0..2)
            .map(|_| {
                let c = srv.client();
                thread::spawn(move || {
                    let mut c = c;
                    c.request(&Request::Reload).unwrap()
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(60));
        let resp = srv.client().request(&Request::Status).unwrap();
        for t in slow {
            let _ = t.join();
        }
        if let Response::Err(e) = &resp {
            assert_eq!(e.kind, ErrorKind::Busy);
            assert!(e.message.contains("retry"), "{}", e.message);
            break;
        }
        assert!(Instant::now() < deadline, "never busy");
    }
    // And once they are done, the next client is served.
    assert!(matches!(
        srv.client().request(&Request::Status).unwrap(),
        Response::Ok(_)
    ));
}

#[test]
fn big_replies_arrive_whole() {
    let srv = TestServer::start(patient());
    // ~1 KiB per row: 20k rows is ~20 MiB, under the 32 MiB cap.
    match srv.client().request(&Request::Top { n: 20_000 }).unwrap() {
        Response::Ok(Reply::Bans(rows)) => assert_eq!(rows.len(), 20_000),
        other => panic!("{other:?}"),
    }
    // Over the cap the agent says so instead of sending it.
    assert_eq!(
        error_kind(srv.client().request(&Request::Top { n: 40_000 }).unwrap()),
        ErrorKind::TooLarge
    );
}

#[test]
fn stale_sockets_are_replaced_live_ones_and_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shield.sock");

    // A crashed agent's leftover: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let sock = ControlSocket::bind(&path, ServerConfig::default()).unwrap();

    // While it listens, a second agent must not steal the path.
    match ControlSocket::bind(&path, ServerConfig::default()) {
        Err(e @ ServerError::AlreadyRunning { .. }) => assert_eq!(
            e.to_string(),
            format!("another shield-agent is running on {}", path.display())
        ),
        other => panic!("{other:?}"),
    }
    drop(sock);

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "precious").unwrap();
    assert!(matches!(
        ControlSocket::bind(&file, ServerConfig::default()),
        Err(ServerError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
}

#[test]
fn shutdown_stops_serving_and_removes_the_socket() {
    let mut srv = TestServer::start(patient());
    assert!(srv.path.exists());
    srv.stop().unwrap();
    assert!(!srv.path.exists());
    match Client::connect(&srv.path) {
        Err(e @ ClientError::NotRunning { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("is shield-agent running?"), "{msg}");
            assert!(msg.contains(&srv.path.display().to_string()), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stale_socket_reads_as_agent_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shield.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(matches!(
        Client::connect(&path),
        Err(ClientError::NotRunning { .. })
    ));
}

#[test]
fn group_lookup() {
    assert_eq!(lookup_group("root").unwrap(), Some(0));
    assert_eq!(lookup_group("no-such-group-shield-test").unwrap(), None);
    assert!(lookup_group("bad\0name").is_err());
}

// ---- the real shieldctl binary ----

/// The binary, copied where any user can run it (the target dir may not be
/// reachable by uid 65534).
fn shieldctl_in(dir: &Path) -> PathBuf {
    let dst = dir.join("shieldctl");
    if !dst.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_shieldctl"), &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dst
}

fn shieldctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shieldctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("SHIELD_SOCKET")
        .output()
        .unwrap()
}

/// Runs shieldctl as uid 65534 with the given primary gid and
/// supplementary groups.
fn shieldctl_as_nobody(srv: &TestServer, gid: u32, groups: &[u32], args: &[&str]) -> Output {
    let bin = shieldctl_in(srv.dir.path());
    let mut cmd = Command::new("setpriv");
    cmd.arg("--reuid=65534").arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg(bin)
        .arg("--socket")
        .arg(&srv.path)
        .args(args)
        .env_remove("SHIELD_SOCKET")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_peer_outside_the_group_is_denied_by_the_server() {
    let config = ServerConfig {
        group: "nogroup".into(),
        ..patient()
    };
    let counters = config.counters.clone();
    let srv = TestServer::start(config);
    // Open the file up so the connection reaches the server's own check.
    std::fs::set_permissions(&srv.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = shieldctl_as_nobody(&srv, 65533, &[], &["--json", "status"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "permission denied: uid 65534 is not root and not in group `nogroup`; add the user to group nogroup"
        ),
        "{stderr}"
    );
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["kind"], "denied");
    assert_eq!(
        counters.read(),
        (0, 0, 1),
        "counted as denied, nothing else"
    );
}

#[test]
fn group_members_may_act_by_primary_or_supplementary_group() {
    let srv = TestServer::start(ServerConfig {
        group: "nogroup".into(),
        ..patient()
    });
    // The socket keeps its 0660 root:nogroup mode: the kernel and the
    // server must both let these in.
    let primary = shieldctl_as_nobody(&srv, 65534, &[], &["stats"]);
    assert_eq!(primary.status.code(), Some(0), "{}", text(&primary.stderr));
    assert_eq!(text(&primary.stdout), "uid 65534 gid 65534\n");
    let supplementary = shieldctl_as_nobody(&srv, 65533, &[65534], &["stats"]);
    assert_eq!(
        supplementary.status.code(),
        Some(0),
        "{}",
        text(&supplementary.stderr)
    );
    assert_eq!(text(&supplementary.stdout), "uid 65534 gid 65533\n");
}

#[test]
fn without_the_group_on_the_host_only_root_may_act() {
    let srv = TestServer::start(ServerConfig {
        group: "no-such-group-shield-test".into(),
        ..patient()
    });
    std::fs::set_permissions(&srv.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = shieldctl_as_nobody(&srv, 65534, &[], &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("group `no-such-group-shield-test` does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_socket_mode_keeps_others_out_with_a_helpful_message() {
    let srv = TestServer::start(ServerConfig {
        group: "nogroup".into(),
        ..patient()
    });
    let out = shieldctl_as_nobody(&srv, 65533, &[], &["status"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("permission denied on"), "{stderr}");
    assert!(stderr.contains("group `shield`"), "{stderr}");
}

#[test]
fn shieldctl_prints_json_and_tables_and_exits_by_outcome() {
    let srv = TestServer::start(patient());

    let out = shieldctl(&srv.path, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "status");
    assert_eq!(v["data"]["version"], "test");

    let out = shieldctl(&srv.path, &["status"]);
    assert!(
        text(&out.stdout).contains("shield-agent test"),
        "{}",
        text(&out.stdout)
    );

    // An agent-side error: exit 1, message on stderr.
    let out = shieldctl(&srv.path, &["ban", "del", "192.0.2.0/24"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "shieldctl: shield-agent: no ban for 192.0.2.0/24\n"
    );

    // The socket from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_shieldctl"))
        .arg("stats")
        .env("SHIELD_SOCKET", &srv.path)
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "uid 0 gid 0\n");
}

#[test]
fn shieldctl_usage_errors_exit_2_without_contacting_the_agent() {
    // No agent at this path: a usage error must be reported as such, not
    // as "agent down".
    let nowhere = Path::new("/nonexistent/shield.sock");
    for (args, needle) in [
        (&["frobnicate"][..], "unrecognized subcommand"),
        (&["ban", "add", "10.1.2.3/8"], "did you mean `10.0.0.0/8`?"),
        (&["ban", "add", "192.0.2.1", "--ttl", "0s"], "is zero"),
        (
            &["ban", "add", "192.0.2.1", "--ttl", "400d"],
            "longer than 365d",
        ),
        (
            &["limits", "set", "default", "--packets", "lots"],
            "not a rate",
        ),
        (&["detach"], "--yes"),
        (
            &["check", "192.0.2.1", "--proto", "icmp", "--port", "7"],
            "ICMP has no ports",
        ),
    ] {
        let out = shieldctl(nowhere, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let out = shieldctl(nowhere, &["ban", "add", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("Examples:"));
}

#[test]
fn shieldctl_reports_an_absent_agent_with_exit_1() {
    let out = shieldctl(Path::new("/nonexistent/shield.sock"), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "shieldctl: cannot reach shield-agent at /nonexistent/shield.sock: is shield-agent running? (systemctl status shield-agent)\n"
    );
}
