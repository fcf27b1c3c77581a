//! The `/metrics` endpoint: a deliberately small HTTP/1.1 server, one
//! request per connection, that a hostile or broken client cannot use to
//! hold up scrapes, exhaust the agent, or make it panic.
//!
//! Limits, each from [`ServerConfig`]: a request head has `read_timeout`
//! from accept to arrive whole and `max_head_bytes` to fit in (431 past
//! that); at most `max_connections` are served at once (503 to the rest);
//! a reply has `write_timeout` to be taken by the client. Snapshots are
//! taken off the async workers, one at a time. A request gets a snapshot
//! taken after it arrived, unless the endpoint is hammered (more than a few
//! renderings within `max_age`): then it shares the last rendering, so a
//! local client looping complete requests costs the agent a few snapshots
//! a second, not one per request. When every slot is taken,
//! a newcomer evicts first the oldest connection already answered (its
//! client still reading or not closing), then (once every connection
//! accepted has been read once) the oldest still waiting for its request
//! head; only connections waiting for a rendering (shared, and
//! when hammered at most a few a second) cannot be evicted.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::Poll,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    task::JoinSet,
    time::timeout,
};
use tracing::{debug, warn};

use crate::evict::{Parked, Serving, WaitQueue, take_slot_patiently};

use super::{
    http::{self, Request, Route},
    render::{CONTENT_TYPE, render},
    snapshot::{ControlDropped, Snapshot},
};

/// Builds a snapshot of the agent's state. Called on a blocking thread, so
/// it may take a `std::sync::Mutex`; a panic in it is answered with 500.
pub type SnapshotFn = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// The default `metrics_listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9964";

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections served at once. As many again are answered 503 and
    /// closed; past that, connections are closed without a reply.
    pub max_connections: usize,
    /// Largest request head (request line and headers) accepted; 431 past it.
    pub max_head_bytes: usize,
    /// Time from accept for the whole request head to arrive; then the
    /// connection is closed without a reply.
    pub read_timeout: Duration,
    /// Time for the client to take the reply.
    pub write_timeout: Duration,
    /// Time for a snapshot and its rendering; 503 past it.
    pub render_timeout: Duration,
    /// While the endpoint is hammered (`BUSY_RENDERS` renderings within
    /// this long), a rendering whose snapshot started this long before a
    /// request is still good for it; otherwise a request waits for a
    /// snapshot taken after it arrived.
    pub max_age: Duration,
    /// After replying, how long to wait for the client to close, discarding
    /// anything it still sends. Closing with unread input makes the kernel
    /// reset the connection, which can destroy the reply before the client
    /// reads it (a 431 to a client still sending its oversized head).
    pub linger: Duration,
    /// After shutdown, how long in-flight requests get to finish.
    pub shutdown_grace: Duration,
    /// Connections refused or cut, for the agent's own metrics.
    pub dropped: Arc<DropCounters>,
}

/// Connections the endpoint refused or cut before answering them, by
/// reason; the agent exports them as
/// `shield_metrics_connections_dropped_total{reason}`.
#[derive(Debug, Default)]
pub struct DropCounters {
    /// Over the cap with no waiting connection to evict: a 503, or closed
    /// without one when the refusals are at their cap too.
    busy: AtomicU64,
    /// Closed, still without a complete request, to make room.
    evicted: AtomicU64,
    /// No complete request head within `read_timeout`.
    timeout: AtomicU64,
    /// A request head over `max_head_bytes` (answered 431).
    oversized: AtomicU64,
}

impl DropCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn read(&self) -> ControlDropped {
        ControlDropped {
            busy: self.busy.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            timeout: self.timeout.load(Ordering::Relaxed),
            oversized: self.oversized.load(Ordering::Relaxed),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_connections: 64,
            max_head_bytes: 8 * 1024,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            render_timeout: Duration::from_secs(10),
            // Prometheus scrapes every 15 s or so: a body up to 1 s old
            // is as good as new to it, and caps the snapshots taken under
            // the agent's lock at one a second whoever asks.
            max_age: Duration::from_secs(1),
            linger: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            dropped: Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics_listen {addr}: address in use — another shield-agent, or set metrics_listen")]
    AddrInUse { addr: SocketAddr },
    #[error(
        "metrics_listen {addr}: no such address on this host — set metrics_listen to a local address"
    )]
    AddrNotAvailable { addr: SocketAddr },
    #[error(
        "metrics_listen {addr}: permission denied — ports below 1024 need root or CAP_NET_BIND_SERVICE; set metrics_listen"
    )]
    PermissionDenied { addr: SocketAddr },
    #[error("metrics_listen {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
}

/// Binds the metrics listener, non-blocking so that
/// [`tokio::net::TcpListener::from_std`] can take it. Separate from
/// [`serve`] so the agent fails at start-up, before it touches the data
/// plane, when the port is taken.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    let classify = |source: io::Error| match source.kind() {
        io::ErrorKind::AddrInUse => MetricsError::AddrInUse { addr },
        io::ErrorKind::AddrNotAvailable => MetricsError::AddrNotAvailable { addr },
        io::ErrorKind::PermissionDenied => MetricsError::PermissionDenied { addr },
        _ => MetricsError::Io { addr, source },
    };
    // std sets SO_REUSEADDR on Unix, so a restart does not trip over the
    // previous agent's connections in TIME_WAIT.
    let listener = std::net::TcpListener::bind(addr).map_err(classify)?;
    listener.set_nonblocking(true).map_err(classify)?;
    Ok(listener)
}

/// Serves with the default [`ServerConfig`] until `shutdown` completes.
pub async fn serve<S>(listener: TcpListener, snapshot: SnapshotFn, shutdown: S)
where
    S: Future<Output = ()>,
{
    serve_with(listener, snapshot, shutdown, ServerConfig::default()).await;
}

/// Serves until `shutdown` completes, then stops accepting and gives
/// in-flight requests [`ServerConfig::shutdown_grace`] to finish. Returns
/// nothing: accept errors (out of file descriptors, say) are logged and
/// retried, since the agent must keep running without its metrics.
pub async fn serve_with<S>(
    listener: TcpListener,
    snapshot: SnapshotFn,
    shutdown: S,
    config: ServerConfig,
) where
    S: Future<Output = ()>,
{
    let ctx = Arc::new(Ctx {
        renderer: Renderer {
            snapshot,
            max_age: config.max_age,
            render_timeout: config.render_timeout,
            state: Arc::default(),
        },
        config,
        waiting: WaitQueue::default(),
        answered: WaitQueue::default(),
        serving: Serving::default(),
    });
    // Semaphore::new panics past MAX_PERMITS; no cap that high is meant.
    let cap = ctx.config.max_connections.min(Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(cap));
    let refusals = Arc::new(Semaphore::new(cap));
    let mut busy = BusyLog::default();
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                // Every slot taken: the oldest connection already answered
                // hands its slot over, else the one that has waited longest
                // for its request head (crate::evict), so neither idle nor
                // looping local clients can keep Prometheus out. While
                // connections accepted are still unread, the newcomer waits
                // for their tasks before it evicts one still waiting: a
                // burst of accepts must close neither a scrape whose request
                // is already in its buffer nor one whose client was a
                // moment slow to write it.
                Ok((stream, _)) => match take_slot_patiently(
                    &slots,
                    &ctx.waiting,
                    &ctx.answered,
                    &ctx.serving,
                    ctx.config.read_timeout,
                ).await {
                    Some(permit) => {
                        let parked = ctx.waiting.park_unread(permit);
                        let ctx = Arc::clone(&ctx);
                        tasks.spawn(async move { connection(stream, parked, &ctx).await });
                    }
                    None => {
                        DropCounters::bump(&ctx.config.dropped.busy);
                        busy.refused(ctx.config.max_connections);
                        match Arc::clone(&refusals).try_acquire_owned() {
                            Ok(permit) => {
                                let cfg = ctx.config.clone();
                                tasks.spawn(async move {
                                    refuse_busy(stream, &cfg).await;
                                    drop(permit);
                                });
                            }
                            // A flood: not even a refusal, just close.
                            Err(_) => drop(stream),
                        }
                    }
                },
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let grace = ctx.config.shutdown_grace;
    let _ = timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}

struct Ctx {
    renderer: Renderer,
    config: ServerConfig,
    /// Connections still waiting for their request head.
    waiting: WaitQueue<OwnedSemaphorePermit>,
    /// Connections answered, sending the reply or lingering: the first to
    /// make room, as what they asked for is already theirs.
    answered: WaitQueue<OwnedSemaphorePermit>,
    /// Connections between the two: a request read, its reply not ready
    /// (waiting for a rendering). Never evicted; a newcomer waits for them.
    serving: Serving,
}

/// Takes snapshots one at a time and lets requests share them.
struct Renderer {
    snapshot: SnapshotFn,
    max_age: Duration,
    render_timeout: Duration,
    /// A std mutex, never held across an await: deciding whether a request
    /// can be answered at once and starting a rendering are one step, so a
    /// burst of requests as the last rendering ages starts one rendering
    /// and waits for none.
    state: Arc<std::sync::Mutex<RenderState>>,
}

/// The outcome of a rendering: `None` while under way, `Some(None)` if the
/// snapshot function panicked.
type Outcome = Option<Option<Arc<str>>>;

#[derive(Default)]
struct RenderState {
    /// The last rendering, and when its snapshot was started.
    last: Option<(Instant, Arc<str>)>,
    /// When the last [`BUSY_RENDERS`] renderings were started, oldest first.
    starts: std::collections::VecDeque<Instant>,
    /// A rendering under way, when it was started, and where its outcome
    /// shows. It runs in a task of its own, so it stays here when every
    /// request waiting for it times out and the next request waits for the
    /// same one: an agent whose lock is stuck ties up one blocking thread,
    /// not one per scrape.
    pending: Option<(Instant, watch::Receiver<Outcome>)>,
}

/// Renderings within one `max_age` beyond which the endpoint counts as
/// hammered and answers from its last rendering. Below it every request
/// gets a snapshot taken after it arrived, so a scrape right after a change
/// shows the change; a loop of requests costs at most this many snapshots
/// per `max_age`.
const BUSY_RENDERS: usize = 4;

impl RenderState {
    /// True when [`BUSY_RENDERS`] renderings started at or after `since`.
    fn busy(&self, since: Instant) -> bool {
        self.starts.len() >= BUSY_RENDERS && self.starts.front().is_some_and(|t| *t >= since)
    }
}

fn lock(state: &std::sync::Mutex<RenderState>) -> std::sync::MutexGuard<'_, RenderState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Renderer {
    /// A rendering whose snapshot was started after `asked`, unless the
    /// endpoint is hammered ([`BUSY_RENDERS`] renderings within `max_age`):
    /// then one started no earlier than `max_age` before `asked` will do,
    /// so a burst of scrapes, a slow agent lock or a client looping
    /// requests costs a few snapshots a second, not one each. While
    /// another request's rendering is under way (for less than
    /// `render_timeout`), the last one is answered at once if it was at
    /// most twice `max_age` old when the new one started: connections
    /// waiting for a rendering cannot be evicted, and a loop of requests
    /// must not fill every slot with them while the agent's lock is busy.
    /// A stuck agent still shows as 503s once `render_timeout` has passed.
    /// `None` if the snapshot function panicked.
    async fn fresh(&self, asked: Instant) -> Option<Arc<str>> {
        let oldest = asked.checked_sub(self.max_age).unwrap_or(asked);
        let recent = asked.checked_sub(self.render_timeout).unwrap_or(asked);
        loop {
            let mut outcome = {
                let mut st = lock(&self.state);
                let st = &mut *st;
                let busy = st.busy(oldest);
                match (&st.last, &st.pending) {
                    (Some((started, body)), _)
                        if *started >= asked || (busy && *started >= oldest) =>
                    {
                        return Some(Arc::clone(body));
                    }
                    (Some((last, body)), Some((started, _)))
                        if *started >= recent
                            && *last >= started.checked_sub(self.max_age * 2).unwrap_or(*last) =>
                    {
                        return Some(Arc::clone(body));
                    }
                    (_, Some((_, outcome))) => outcome.clone(),
                    (_, None) => self.start(st),
                }
            };
            let done = outcome.wait_for(Option::is_some).await.ok()?.clone();
            // The new rendering is in `last` now; the loop returns it, or
            // starts another if it was started before the request came.
            done.flatten()?;
        }
    }

    /// Starts a rendering in a task of its own; it stores its outcome in
    /// `state` before telling the requests waiting for it.
    fn start(&self, st: &mut RenderState) -> watch::Receiver<Outcome> {
        let (tell, outcome) = watch::channel(None);
        let started = Instant::now();
        st.pending = Some((started, outcome.clone()));
        st.starts.push_back(started);
        if st.starts.len() > BUSY_RENDERS {
            st.starts.pop_front();
        }
        let f = Arc::clone(&self.snapshot);
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            // A blocking thread: the agent's closure takes a std mutex that
            // its other work may hold for a while, which must not stall the
            // async workers. A panic comes back as a JoinError.
            let body: Option<Arc<str>> = tokio::task::spawn_blocking(move || render(&f()))
                .await
                .ok()
                .map(Into::into);
            {
                let mut st = lock(&state);
                st.pending = None;
                if let Some(body) = &body {
                    st.last = Some((started, Arc::clone(body)));
                }
            }
            let _ = tell.send(Some(body));
        });
        outcome
    }
}

/// Serves one connection: one request, one reply, then close.
async fn connection(mut stream: TcpStream, parked: Parked, ctx: &Ctx) {
    // In line since accept (crate::evict); the ticket releases the entry
    // when this connection ends.
    let ticket = ctx.waiting.ticket(parked);
    let cfg = &ctx.config;
    // The reply goes out as head then body; without Nagle the body's last
    // segment is not held back waiting for the ACK of the head.
    let _ = stream.set_nodelay(true);
    let head = {
        let read = timeout(cfg.read_timeout, read_head(&mut stream, cfg.max_head_bytes));
        tokio::pin!(read);
        // A first look before the connection can be evicted: a request
        // already here is read whatever the accept loop does meanwhile
        // (crate::evict).
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx).map(Some))).await;
        match first {
            Poll::Ready(h) => h,
            Poll::Pending => {
                ticket.arm();
                tokio::select! {
                    () = ticket.evicted() => None,
                    h = &mut read => Some(h),
                }
            }
        }
    };
    // Counted as served from before it leaves the waiting queue until it
    // is in the answered one: a newcomer always finds it in one of the
    // three (crate::evict::take_slot_patiently).
    let served = ctx.serving.enter();
    // Held until the reply is out (or the connection is evicted once
    // answered); gone if evicted as the head completed.
    let Some(slot) = ticket.done() else {
        DropCounters::bump(&cfg.dropped.evicted);
        debug!("metrics: closed a connection with no request yet to make room");
        return;
    };
    let Some(head) = head else { return };
    let reply = match head {
        Err(_) => {
            DropCounters::bump(&cfg.dropped.timeout);
            debug!("metrics: no complete request within {:?}", cfg.read_timeout);
            return;
        }
        Ok(Err(e)) => {
            debug!("metrics: reading a request: {e}");
            return;
        }
        Ok(Ok(Head::Closed)) => return,
        Ok(Ok(Head::TooLarge)) => {
            DropCounters::bump(&cfg.dropped.oversized);
            plain(
                "431 Request Header Fields Too Large",
                &format!("request head over {} bytes\n", cfg.max_head_bytes),
                false,
            )
        }
        Ok(Ok(Head::Complete(head))) => answer(&head, ctx).await,
    };
    // Answered: from here on the connection is the first to make room.
    let answered = ctx.answered.wait(slot);
    drop(served);
    let mut written = false;
    let send = async {
        let sent = timeout(cfg.write_timeout, async {
            stream.write_all(reply.head.as_bytes()).await?;
            if let Some(body) = &reply.body {
                stream.write_all(body.as_bytes()).await?;
            }
            stream.shutdown().await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            debug!("metrics: client did not take the reply");
            return;
        }
        written = true;
        linger(&mut stream, cfg.linger).await;
    };
    tokio::select! {
        () = answered.evicted() => {
            // Closed while lingering is no loss: the reply is out.
            if !written {
                DropCounters::bump(&cfg.dropped.evicted);
                debug!("metrics: closed a connection still taking its reply to make room");
            }
        }
        () = send => {}
    }
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed before completing a head.
    Closed,
}

async fn read_head(stream: &mut TcpStream, max: usize) -> io::Result<Head> {
    let mut buf = vec![0u8; max];
    let mut len = 0;
    loop {
        let Some(room) = buf.get_mut(len..).filter(|r| !r.is_empty()) else {
            return Ok(Head::TooLarge);
        };
        let n = stream.read(room).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        let searched = len;
        len += n;
        let filled = buf.get(..len).unwrap_or_default();
        if let Some(end) = http::head_len(filled, searched) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
    }
}

async fn answer(head: &[u8], ctx: &Ctx) -> Reply {
    let (route, head_only) = match http::parse(head) {
        Request::Route { route, head } => (route, head),
        Request::MethodNotAllowed => {
            return reply(
                "405 Method Not Allowed",
                "text/plain; charset=utf-8",
                "Allow: GET, HEAD\r\n",
                "only GET and HEAD\n".into(),
                false,
            );
        }
        Request::VersionNotSupported => {
            return plain(
                "505 HTTP Version Not Supported",
                "HTTP/1.0 or HTTP/1.1 only\n",
                false,
            );
        }
        Request::Bad => return plain("400 Bad Request", "not an HTTP/1.x request\n", false),
    };
    match route {
        Route::Index => reply(
            "200 OK",
            "text/html; charset=utf-8",
            "",
            INDEX_HTML.into(),
            head_only,
        ),
        Route::NotFound => plain(
            "404 Not Found",
            "not found; metrics are at /metrics\n",
            head_only,
        ),
        Route::Metrics => {
            let asked = Instant::now();
            match timeout(ctx.config.render_timeout, ctx.renderer.fresh(asked)).await {
                Ok(Some(body)) => reply("200 OK", CONTENT_TYPE, "", body, head_only),
                Ok(None) => {
                    warn!("metrics: building the snapshot panicked");
                    plain(
                        "500 Internal Server Error",
                        "shield-agent could not build its metrics; see its log\n",
                        head_only,
                    )
                }
                Err(_) => {
                    warn!(
                        "metrics: no snapshot within {:?}; is the agent stuck?",
                        ctx.config.render_timeout
                    );
                    plain(
                        "503 Service Unavailable",
                        "shield-agent did not produce its metrics in time\n",
                        head_only,
                    )
                }
            }
        }
    }
}

const INDEX_HTML: &str = "<!DOCTYPE html>\n<html><head><title>shield-agent</title></head>\n<body><h1>shield-agent</h1><p>Prometheus metrics are at <a href=\"/metrics\">/metrics</a>.</p></body></html>\n";

fn plain(status: &str, body: &str, head_only: bool) -> Reply {
    reply(
        status,
        "text/plain; charset=utf-8",
        "",
        body.into(),
        head_only,
    )
}

struct Reply {
    head: String,
    /// Shared with other requests for the same rendering rather than
    /// copied: a big exposition times 64 connections adds up.
    body: Option<Arc<str>>,
}

/// A whole reply. `extra` is further header lines, each ending in CRLF.
fn reply(status: &str, content_type: &str, extra: &str, body: Arc<str>, head_only: bool) -> Reply {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{extra}\r\n",
        body.len()
    );
    Reply {
        head,
        body: (!head_only).then_some(body),
    }
}

/// Waits for the client to close, discarding what it sends, for at most
/// `limit` and 64 KiB; see [`ServerConfig::linger`].
async fn linger(stream: &mut TcpStream, limit: Duration) {
    let _ = timeout(limit, async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while total < 64 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 43\r\nConnection: close\r\nRetry-After: 1\r\n\r\nshield-agent metrics: too many connections\n";

/// Over the connection cap: a 503 without reading the request or taking a
/// snapshot. It still lingers, because the request usually arrives after
/// the accept, and arriving at a closed socket it would make the kernel
/// reset the connection, which the client may see instead of the 503.
async fn refuse_busy(mut stream: TcpStream, cfg: &ServerConfig) {
    let sent = timeout(cfg.write_timeout, async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(sent, Ok(Ok(()))) {
        linger(&mut stream, cfg.linger).await;
    }
}

/// Logs refusals at most once a minute: a client hammering a full server
/// must not flood the journal.
#[derive(Default)]
struct BusyLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl BusyLog {
    fn refused(&mut self, cap: usize) {
        self.unlogged += 1;
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        warn!(
            "metrics: {cap} connections already open; refused {} since the last report",
            self.unlogged
        );
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_reply_length_is_right() {
        let text = std::str::from_utf8(BUSY).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
