//! The running agent: its tasks started around one shared [`Agent`], and
//! the event loop that owns signals, the watchdog and the flood-event ring
//! (docs/ARCHITECTURE.md, "The agent's tasks"). The binary only parses
//! the command line, binds the sockets, builds the runtime and calls
//! [`run`].

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::Notify,
};

use super::{Agent, AgentError, crowdsec, kernel_log, links, lock, serve, tick, writer};
use crate::{
    control::{ControlSocket, RequestCounters, handler_fn},
    metrics::{self, ControlDropped, ControlRequests, SnapshotFn},
    systemd,
};

/// Flood events read per wake of the ring buffer, then applied under one
/// hold of the lock (about 0.1 ms per event in a debug build).
const EVENTS_PER_WAKE: usize = 512;

/// Runs the agent until SIGTERM, SIGINT or `shieldctl detach`: the control
/// server, the metrics server, the tick, the writer, CrowdSec's loops and
/// the link watch as tasks, the event loop here. On the way out, what is
/// spooled or unsaved is written first; enforcement stays pinned.
pub async fn run(
    mut agent: Agent,
    socket: ControlSocket,
    metrics_listener: std::net::TcpListener,
    requests: Arc<RequestCounters>,
) -> Result<(), AgentError> {
    let ring = agent.take_events()?;
    // The program's rare paths, when the log filter asked for them at
    // load (agent/kernel_log.rs).
    match agent.dp.take_kernel_log(kernel_log::ToTracing) {
        Ok(Some(reader)) => {
            tracing::info!("the XDP program's log is forwarded as shield::kernel");
            tokio::spawn(kernel_log::forward(reader));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}; shield::kernel stays silent"),
    }
    let agent = Arc::new(Mutex::new(agent));
    let exit = Arc::new(Notify::new());
    let handler = {
        let (agent, exit) = (agent.clone(), exit.clone());
        handler_fn(move |req, peer| {
            let (agent, exit) = (agent.clone(), exit.clone());
            async move { serve::serve(&agent, &exit, req, &peer).await }
        })
    };
    // A watch, not a Notify: a server that has not polled its shutdown
    // future yet still sees the flag.
    let (stop_serving, stopped) = tokio::sync::watch::channel(false);
    let stop_future = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(socket.serve(handler, stop_future(stopped.clone())));
    let metrics = {
        let listener = tokio::net::TcpListener::from_std(metrics_listener)
            .map_err(|e| AgentError::Runtime("the metrics listener", e))?;
        let config = metrics::ServerConfig::default();
        let snapshot = snapshot_fn(agent.clone(), requests, config.dropped.clone());
        tokio::spawn(metrics::serve_with(
            listener,
            snapshot,
            stop_future(stopped.clone()),
            config,
        ))
    };
    tokio::spawn(crowdsec::poll_loop(agent.clone()));
    tokio::spawn(crowdsec::push_loop(agent.clone()));
    tokio::spawn(crowdsec::spool_write_loop(agent.clone()));
    tokio::spawn(writer::write_loop(agent.clone()));
    tokio::spawn(links::watch_loop(agent.clone()));
    let ticker = tokio::spawn(tick::tick_loop(agent.clone()));
    let result = event_loop(&agent, ring, &exit).await;
    // Between two slices: the maps and the book agree there.
    ticker.abort();
    // Autobans spooled, bans and offences since the last writes: on disk
    // before exit.
    crowdsec::spool_flush(&agent).await;
    writer::flush(&agent).await;
    let _ = stop_serving.send(true);
    let _ = server.await;
    let _ = metrics.await;
    result
}

/// What a scrape reads: the agent's own figures, and the servers' counts
/// of requests and of connections they turned away.
fn snapshot_fn(
    agent: Arc<Mutex<Agent>>,
    requests: Arc<RequestCounters>,
    metrics_dropped: Arc<metrics::DropCounters>,
) -> SnapshotFn {
    Arc::new(move || {
        let mut s = lock(&agent).metrics_snapshot();
        let (ok, error, denied) = requests.read();
        s.control_requests = Some(ControlRequests { ok, error, denied });
        let (busy, evicted, timeout, oversized) = requests.read_dropped();
        s.health.control_dropped = Some(ControlDropped {
            busy,
            evicted,
            timeout,
            oversized,
        });
        s.health.metrics_dropped = Some(metrics_dropped.read());
        s
    })
}

/// Signals, the watchdog, `shieldctl detach` and flood events, until one
/// of them says stop.
async fn event_loop(
    agent: &Mutex<Agent>,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    exit: &Notify,
) -> Result<(), AgentError> {
    let sig = |k| signal(k).map_err(|e| AgentError::Runtime("installing signal handlers", e));
    let mut hup = sig(SignalKind::hangup())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let watchdog = systemd::watchdog_interval();
    let mut dog = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
    // for as long as it lives, which is as long as the AsyncFd that owns it.
    let mut ring = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
    }
    .map_err(|e| AgentError::Runtime("polling flood events", e.into_parts().1))?;

    let status = lock(agent).status_line();
    tracing::info!("{status}");
    systemd::notify(&format!("READY=1\nSTATUS={status}"));

    loop {
        tokio::select! {
            _ = hup.recv() => reload(agent),
            guard = ring.readable_mut() => {
                if let Ok(mut guard) = guard {
                    let drained = apply_events(agent, guard.get_inner_mut());
                    // Readiness is cleared only once the ring is empty: the
                    // kernel wakes a reader only for a record written into
                    // an empty ring, so events left behind here would never
                    // be announced again and reading would stop for good.
                    if drained {
                        guard.clear_ready();
                    } else {
                        drop(guard);
                        // More is waiting: the other tasks (the tick,
                        // requests) get their turn before the next batch.
                        tokio::task::yield_now().await;
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = exit.notified() => break,
            _ = dog.tick(), if watchdog.is_some() => systemd::notify("WATCHDOG=1"),
        }
    }
    systemd::notify("STOPPING=1");
    if lock(agent).is_detached() {
        tracing::info!("detached on request; exiting");
    } else {
        tracing::info!("exiting; enforcement stays pinned (shield-agent --detach removes it)");
    }
    Ok(())
}

/// SIGHUP: the config read again and applied, or refused whole.
fn reload(agent: &Mutex<Agent>) {
    systemd::notify("RELOADING=1");
    let reloaded = lock(agent).reload();
    match reloaded {
        Ok(r) => {
            for w in &r.warnings {
                tracing::warn!("{w}");
            }
            tracing::info!(changes = r.changes, attached = ?r.attached, detached = ?r.detached, "reloaded");
        }
        Err(e) => tracing::error!("reload refused, the running policy is unchanged:\n{e}"),
    }
    let status = {
        let a = lock(agent);
        // policy-ids.json follows the reloaded policy, written off the lock.
        a.write_lane().wake();
        a.status_line()
    };
    systemd::notify(&format!("READY=1\nSTATUS={status}"));
}

/// Up to [`EVENTS_PER_WAKE`] records read first, then applied under one
/// hold of the lock: bounded, so a flood of events can neither starve
/// signals nor hold the lock long. Whether the ring is now empty.
fn apply_events(agent: &Mutex<Agent>, rb: &mut aya::maps::RingBuf<aya::maps::MapData>) -> bool {
    let mut drained = false;
    let mut records = Vec::with_capacity(EVENTS_PER_WAKE);
    for _ in 0..EVENTS_PER_WAKE {
        let Some(item) = rb.next() else {
            drained = true;
            break;
        };
        records.push(item.to_vec());
    }
    let mut a = lock(agent);
    for bytes in &records {
        a.on_event(bytes);
    }
    drained
}
