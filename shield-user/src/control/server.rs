//! The agent's side of the control socket: bind safely, check who is
//! calling, and hand each request to a [`Handler`] without letting one slow
//! or hostile client hold up the agent or anyone else.

use std::{
    ffi::CString,
    fmt,
    io::{self, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::timeout,
};
use tracing::{debug, info, warn};

use crate::evict::{Parked, WaitQueue};

use super::{
    frame::{
        FrameError, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, read_frame_async, write_frame_async,
    },
    protocol::{ErrorKind, Request, Response, decode_request, encode_response},
};

/// Who is on the other end of a connection, from `SO_PEERCRED` (the
/// credentials at `connect` time, which the peer cannot forge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// `None` when the peer is in another PID namespace.
    pub pid: Option<i32>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {} gid {}", self.uid, self.gid)?;
        if let Some(pid) = self.pid {
            write!(f, " pid {pid}")?;
        }
        Ok(())
    }
}

pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// What the agent does with an authorised request. Called once per
/// request; requests on one connection are handled one at a time, requests
/// on different connections concurrently. A panic in `handle` is caught
/// and answered with `internal`.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request, peer: Peer) -> HandlerFuture<'_>;
}

/// Adapts an async closure into a [`Handler`].
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(Request, Peer) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    Arc::new(FnHandler(f))
}

struct FnHandler<F>(F);

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Request, Peer) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn handle(&self, req: Request, peer: Peer) -> HandlerFuture<'_> {
        Box::pin((self.0)(req, peer))
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Members of this group may use the socket besides root.
    pub group: String,
    /// The socket file's mode.
    pub mode: u32,
    /// Connections served at once; more are answered `busy` and closed.
    pub max_connections: usize,
    /// Time to deliver a complete request frame, starting at accept (for
    /// the first request) or at its first byte (for later ones).
    pub request_timeout: Duration,
    /// How long a connection may sit between requests.
    pub idle_timeout: Duration,
    /// Time to deliver a reply to a client that has stopped reading.
    pub write_timeout: Duration,
    /// After shutdown, how long in-flight requests get to finish.
    pub shutdown_grace: Duration,
    /// Requests answered, by outcome, for the agent's metrics.
    pub counters: Arc<RequestCounters>,
}

/// Requests by outcome: `ok`, `error` (answered with an error, including
/// malformed requests), `denied` (the peer may not use the socket); and
/// connections refused or cut before a request was served.
#[derive(Debug, Default)]
pub struct RequestCounters {
    pub ok: std::sync::atomic::AtomicU64,
    pub error: std::sync::atomic::AtomicU64,
    pub denied: std::sync::atomic::AtomicU64,
    /// Over the cap with no waiting connection to evict.
    pub busy: std::sync::atomic::AtomicU64,
    /// Closed to make room for a new connection.
    pub evicted: std::sync::atomic::AtomicU64,
    /// No complete request in time.
    pub timeout: std::sync::atomic::AtomicU64,
    /// A request frame over the size limit.
    pub oversized: std::sync::atomic::AtomicU64,
}

impl RequestCounters {
    fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (ok, error, denied) now.
    pub fn read(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.ok.load(Relaxed),
            self.error.load(Relaxed),
            self.denied.load(Relaxed),
        )
    }

    /// (busy, evicted, timeout, oversized) now.
    pub fn read_dropped(&self) -> (u64, u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.busy.load(Relaxed),
            self.evicted.load(Relaxed),
            self.timeout.load(Relaxed),
            self.oversized.load(Relaxed),
        )
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            group: CONTROL_GROUP.into(),
            mode: 0o660,
            max_connections: 256,
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
            counters: Arc::default(),
        }
    }
}

/// The group whose members may use the control socket.
pub const CONTROL_GROUP: &str = "shield";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another shield-agent is running on {}", path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ServerError + 'a {
    move |source| ServerError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A bound control socket, ready to [`serve`](ControlSocket::serve).
///
/// Binding is separate from serving so the agent can fail at start-up
/// (another agent running, bad path) before it touches the data plane.
#[derive(Debug)]
pub struct ControlSocket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    /// (dev, ino) of the socket file we created, so shutdown removes our
    /// file and never a successor's.
    ident: (u64, u64),
    gid: Option<u32>,
    config: ServerConfig,
}

impl ControlSocket {
    /// Creates the parent directory if needed, clears a stale socket,
    /// binds, and sets mode and group.
    pub fn bind(path: &Path, config: ServerConfig) -> Result<ControlSocket, ServerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(io_err("create directory", dir))?;
        }
        clear_stale(path)?;
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                // Another agent won a race with our stale check.
                ServerError::AlreadyRunning {
                    path: path.to_path_buf(),
                }
            } else {
                io_err("bind", path)(e)
            }
        })?;
        // Until the chmod below the socket has the umask's mode. That window
        // is harmless: every connection's credentials are checked anyway.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.mode))
            .map_err(io_err("set the mode of", path))?;
        let gid = lookup_group(&config.group).map_err(io_err("look up the group for", path))?;
        match gid {
            Some(gid) => {
                if let Err(e) = std::os::unix::fs::chown(path, None, Some(gid)) {
                    warn!(
                        "cannot give {} to group {}: {e}; only root can use it",
                        path.display(),
                        config.group
                    );
                }
            }
            None => info!(
                "group `{}` does not exist; only root can use {}",
                config.group,
                path.display()
            ),
        }
        listener
            .set_nonblocking(true)
            .map_err(io_err("configure", path))?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err("stat", path))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            ident: (meta.dev(), meta.ino()),
            gid,
            config,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `shutdown` completes, then stops accepting, removes the
    /// socket file (if it is still ours), and gives in-flight requests
    /// [`ServerConfig::shutdown_grace`] to finish. Must run inside a tokio
    /// runtime.
    pub async fn serve<S>(self, handler: Arc<dyn Handler>, shutdown: S) -> io::Result<()>
    where
        S: Future<Output = ()>,
    {
        let ControlSocket {
            listener,
            path,
            ident,
            gid,
            config,
        } = self;
        let listener = UnixListener::from_std(listener)?;
        let ctx = Arc::new(Ctx {
            handler,
            gid,
            config,
            waiting: WaitQueue::default(),
        });
        let slots = Arc::new(Semaphore::new(ctx.config.max_connections));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        // Every slot taken: the connection that has waited
                        // longest for a request hands its slot over
                        // (crate::evict). Only when every slot is serving a
                        // request is the newcomer told `busy`.
                        let slot = crate::evict::take_slot(&slots, || ctx.evict_oldest());
                        match slot {
                            Some(permit) => {
                                let parked = ctx.waiting.park(permit);
                                let ctx = Arc::clone(&ctx);
                                tasks.spawn(async move { connection(stream, parked, &ctx).await });
                            }
                            None => {
                                RequestCounters::bump(&ctx.config.counters.busy);
                                refuse_busy(stream, ctx.config.max_connections);
                            }
                        }
                    }
                    Err(e) => {
                        // EMFILE and friends: the agent must keep running, so
                        // back off briefly instead of spinning or failing.
                        warn!("control socket accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        remove_if_ours(&path, ident);
        let grace = ctx.config.shutdown_grace;
        let _ = timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
        Ok(())
    }
}

/// Binds `path` with the default [`ServerConfig`] and serves until
/// `shutdown` completes.
pub async fn serve<S>(
    path: &Path,
    handler: Arc<dyn Handler>,
    shutdown: S,
) -> Result<(), ServerError>
where
    S: Future<Output = ()>,
{
    ControlSocket::bind(path, ServerConfig::default())?
        .serve(handler, shutdown)
        .await
        .map_err(io_err("serve", path))
}

struct Ctx {
    handler: Arc<dyn Handler>,
    gid: Option<u32>,
    config: ServerConfig,
    waiting: WaitQueue<OwnedSemaphorePermit>,
}

impl Ctx {
    /// Closes the connection that has waited longest for a request (see
    /// [`crate::evict`]) and takes its slot; `None` if none waits.
    fn evict_oldest(&self) -> Option<OwnedSemaphorePermit> {
        let slot = self.waiting.evict_oldest();
        if slot.is_some() {
            RequestCounters::bump(&self.config.counters.evicted);
        }
        slot
    }
}

/// Removes a leftover socket file, but only when nothing answers on it: a
/// crashed agent leaves one behind, a running agent must not lose its own.
fn clear_stale(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ServerError::AlreadyRunning {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            debug!("removing stale control socket {}", path.display());
            std::fs::remove_file(path).map_err(io_err("remove stale socket", path))
        }
        Err(e) => Err(io_err("probe existing socket", path)(e)),
    }
}

fn remove_if_ours(path: &Path, ident: (u64, u64)) {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && (meta.dev(), meta.ino()) == ident
        && let Err(e) = std::fs::remove_file(path)
    {
        warn!("cannot remove control socket {}: {e}", path.display());
    }
}

/// The group's gid, `None` if there is no such group. Goes through NSS
/// (`getgrnam_r`) so LDAP or sssd groups work like /etc/group ones.
pub fn lookup_group(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: an all-zero `group` is a valid value of a plain C struct.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, `buf.len()` is the
        // buffer's real size, and nothing is read from `grp` but the gid.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some(grp.gr_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            // Some NSS modules report "no such group" as an error code.
            libc::ENOENT | libc::ESRCH => return Ok(None),
            rc => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

/// The peer's supplementary groups at `connect` time (`SO_PEERGROUPS`,
/// Linux 4.13; older kernels cannot run shield's XDP links anyway).
fn peer_groups(stream: &UnixStream) -> io::Result<Vec<u32>> {
    let fd = stream.as_raw_fd();
    let size = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * size)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `groups` is valid for `len` bytes and outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / size);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        let needed = len as usize / size;
        // ERANGE reports the size needed; NGROUPS_MAX is 65536.
        if err.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() && needed <= 65_536 {
            groups.resize(needed, 0);
            continue;
        }
        return Err(err);
    }
}

/// Root, or a member (primary or supplementary) of the control group.
fn authorize(stream: &UnixStream, peer: &Peer, ctx: &Ctx) -> Result<(), String> {
    if peer.uid == 0 {
        return Ok(());
    }
    let group = &ctx.config.group;
    let Some(gid) = ctx.gid else {
        return Err(format!(
            "permission denied: uid {} is not root and group `{group}` does not exist on this host; run as root or create the group and restart shield-agent",
            peer.uid
        ));
    };
    if peer.gid == gid {
        return Ok(());
    }
    match peer_groups(stream) {
        Ok(groups) if groups.contains(&gid) => Ok(()),
        Ok(_) => Err(format!(
            "permission denied: uid {} is not root and not in group `{group}`; add the user to group {group}",
            peer.uid
        )),
        Err(e) => {
            warn!("cannot read the groups of control client {peer}: {e}");
            Err(format!(
                "permission denied: cannot verify that uid {} is in group `{group}`",
                peer.uid
            ))
        }
    }
}

fn encode_or_internal(resp: &Response) -> Vec<u8> {
    let body = match encode_response(resp) {
        Ok(b) => b,
        Err(e) => {
            warn!("cannot encode a control reply: {e}");
            return fallback(ErrorKind::Internal, "the agent could not encode its reply");
        }
    };
    if body.len() > MAX_RESPONSE_BYTES {
        return fallback(
            ErrorKind::TooLarge,
            &format!(
                "the reply is {} bytes, over the {MAX_RESPONSE_BYTES}-byte limit; ask for less (e.g. a smaller `top -n`)",
                body.len()
            ),
        );
    }
    body
}

fn fallback(kind: ErrorKind, message: &str) -> Vec<u8> {
    // A bare error always encodes; the empty body is a last resort that the
    // client reports as a protocol error rather than hanging.
    encode_response(&Response::error(kind, message)).unwrap_or_default()
}

/// Over the connection cap: answer without a task and without waiting.
/// A fresh socket's send buffer has room for a small frame, so a
/// non-blocking write either goes through whole or not at all. The write
/// goes through the std socket because tokio's `try_write` refuses until
/// the reactor has seen the new socket become writable, which on a busy
/// host can be after this returns.
fn refuse_busy(stream: UnixStream, cap: usize) {
    debug!("control socket: {cap} connections busy with requests; refusing one");
    let frame = busy_frame(&format!(
        "shield-agent is serving {cap} control requests already; retry shortly"
    ));
    if let Ok(std) = stream.into_std() {
        let _ = (&std).write(&frame);
    }
}

fn busy_frame(message: &str) -> Vec<u8> {
    let body = fallback(ErrorKind::Busy, message);
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

async fn send(stream: &mut UnixStream, resp: &Response, ctx: &Ctx) -> bool {
    let body = encode_or_internal(resp);
    matches!(
        timeout(
            ctx.config.write_timeout,
            write_frame_async(stream, &body, MAX_RESPONSE_BYTES)
        )
        .await,
        Ok(Ok(()))
    )
}

/// What waiting for the next request on a connection brought.
enum Next {
    Body(Vec<u8>),
    /// Closed, idle too long, or a broken frame: end quietly.
    Done,
    TooLarge {
        len: u64,
        max: usize,
    },
    TimedOut,
}

/// Waits for the next request: for a first request, the request timeout
/// runs from accept; for later ones, the idle limit runs until the first
/// byte and the request timeout from there.
async fn next_request(
    reader: &mut BufReader<UnixStream>,
    first: bool,
    ctx: &Ctx,
    peer: &Peer,
) -> Next {
    if !first {
        match timeout(ctx.config.idle_timeout, reader.fill_buf()).await {
            Ok(Ok(buf)) if !buf.is_empty() => {}
            Ok(_) => return Next::Done,
            Err(_) => {
                debug!("control client {peer} idle; closing");
                return Next::Done;
            }
        }
    }
    match timeout(
        ctx.config.request_timeout,
        read_frame_async(reader, MAX_REQUEST_BYTES),
    )
    .await
    {
        Ok(Ok(body)) => Next::Body(body),
        Ok(Err(FrameError::TooLarge { len, max })) => Next::TooLarge { len, max },
        Ok(Err(FrameError::Closed)) => Next::Done,
        Ok(Err(e)) => {
            debug!("control client {peer}: {e}");
            Next::Done
        }
        Err(_) => Next::TimedOut,
    }
}

/// Serves one connection. Errors raised here (timeouts, bad frames,
/// denial) are answered and end the connection; errors the handler returns
/// are ordinary replies and the connection stays open.
async fn connection(stream: UnixStream, parked: Parked, ctx: &Ctx) {
    // The first wait stands in line from accept; later ones from the end
    // of the previous request. Taken before anything can return, so the
    // entry leaves the queue with the connection.
    let mut first_wait = Some(ctx.waiting.ticket(parked));
    let mut slot: Option<OwnedSemaphorePermit> = None;
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        },
        Err(e) => {
            warn!("control socket: cannot read peer credentials: {e}");
            return;
        }
    };
    let authorized = authorize(&stream, &peer, ctx);
    // Buffered so the wait for a next request (the idle limit) can end at
    // its first byte without consuming it; the request itself then gets
    // the shorter request timeout.
    let mut reader = BufReader::new(stream);
    let mut first = true;
    loop {
        let ticket = match (first_wait.take(), slot.take()) {
            (Some(ticket), _) => ticket,
            (None, Some(parked)) => ctx.waiting.wait(parked),
            (None, None) => return,
        };
        let read = tokio::select! {
            () = ticket.evicted() => None,
            r = next_request(&mut reader, first, ctx, &peer) => Some(r),
        };
        // Evicted just as the request completed: the slot is gone.
        slot = ticket.done();
        let read = read.filter(|_| slot.is_some());
        first = false;
        let stream = reader.get_mut();
        let Some(read) = read else {
            debug!("control client {peer} evicted to make room");
            let msg = "closed to make room for another client: no complete request yet";
            // Its slot is already the newcomer's; the write timeout bounds
            // how long a peer that does not read can keep this task.
            send(stream, &Response::error(ErrorKind::Busy, msg), ctx).await;
            return;
        };
        let body = match read {
            Next::Body(body) => body,
            Next::Done => return,
            Next::TooLarge { len, max } => {
                RequestCounters::bump(&ctx.config.counters.oversized);
                debug!("control client {peer} sent a {len}-byte frame; closing");
                let msg = format!("request frame of {len} bytes exceeds the {max}-byte limit");
                send(stream, &Response::error(ErrorKind::TooLarge, msg), ctx).await;
                return;
            }
            Next::TimedOut => {
                RequestCounters::bump(&ctx.config.counters.timeout);
                debug!("control client {peer} sent no complete request in time; closing");
                let msg = format!(
                    "no complete request within {}s; closing",
                    ctx.config.request_timeout.as_secs_f64()
                );
                send(stream, &Response::error(ErrorKind::Timeout, msg), ctx).await;
                return;
            }
        };
        // Denial comes after reading the request: the client gets its answer
        // instead of a broken pipe on its write.
        if let Err(msg) = &authorized {
            RequestCounters::bump(&ctx.config.counters.denied);
            warn!("control client {peer} denied");
            send(stream, &Response::error(ErrorKind::Denied, msg), ctx).await;
            return;
        }
        let req = match decode_request(&body) {
            Ok(r) => r,
            Err(e) => {
                RequestCounters::bump(&ctx.config.counters.error);
                debug!("control client {peer}: {e}");
                send(stream, &Response::error(e.kind(), e.to_string()), ctx).await;
                return;
            }
        };
        debug!("control request from {peer}: {req:?}");
        let handler = Arc::clone(&ctx.handler);
        // A task of its own so a panicking handler becomes an `internal`
        // reply instead of a silently dropped connection.
        let resp = match tokio::spawn(async move { handler.handle(req, peer).await }).await {
            Ok(r) => r,
            Err(e) => {
                warn!("control handler failed: {e}");
                Response::error(
                    ErrorKind::Internal,
                    "shield-agent failed while handling the request; see its log",
                )
            }
        };
        RequestCounters::bump(match resp {
            Response::Ok(_) => &ctx.config.counters.ok,
            Response::Err(_) => &ctx.config.counters.error,
        });
        if !send(stream, &resp, ctx).await {
            debug!("control client {peer} did not take its reply; closing");
            return;
        }
    }
}
