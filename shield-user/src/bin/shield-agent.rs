//! shield-agent: loads shield's XDP program, keeps its maps in line with the
//! config, and leaves enforcement in place when it exits.

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use std::sync::{Arc, Mutex};

use clap::Parser;

use shield_user::{
    agent::{
        self, Agent, AgentOptions,
        cli::{Cli, Command, LogFormat},
        lock, tick, writer,
    },
    clock, config,
    control::{ControlSocket, ServerConfig, ServerError, handler_fn},
    systemd,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::Notify,
};

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("shield-agent: {msg}");
            ExitCode::from(code)
        }
    }
}

/// An exit code and the sentence that explains it.
struct Failure(u8, String);

impl From<agent::AgentError> for Failure {
    fn from(e: agent::AgentError) -> Self {
        Failure(e.exit_code() as u8, e.to_string())
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return check_config(file);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Failure(
            1,
            "needs root (CAP_BPF and CAP_NET_ADMIN) to load XDP programs; run it as root or through the shield-agent systemd unit".into(),
        ));
    }
    if cli.detach {
        return detach(&cli);
    }
    let object = match &cli.bpf_object {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| Failure(2, format!("--bpf-object {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let opts = AgentOptions {
        config_path: cli.config.clone(),
        ifaces: cli.ifaces.clone(),
        dry_run: cli.dry_run,
        object,
    };
    // The socket first: a second agent must fail before touching the maps.
    let cfg = agent::load_config(&opts, clock::kernel_clock_tick_ns())?;
    let server_config = ServerConfig::default();
    let requests = server_config.counters.clone();
    let socket = ControlSocket::bind(&cfg.control_socket, server_config).map_err(|e| {
        let code = match e {
            ServerError::AlreadyRunning { .. } | ServerError::NotASocket { .. } => 2,
            ServerError::Io { .. } => 1,
        };
        Failure(code, format!("control socket: {e}"))
    })?;
    let metrics_listener =
        shield_user::metrics::bind(cfg.metrics_listen).map_err(|e| Failure(2, e.to_string()))?;
    raise_fd_limit();
    let agent = Agent::start(opts, cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(1, format!("starting the event loop: {e}")))?;
    let result = rt.block_on(main_loop(agent, socket, metrics_listener, requests));
    // A feed download may still be running on a blocking thread; exiting
    // must not wait for its timeout (systemd would SIGKILL us meanwhile).
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Lifts the soft open-file limit to the hard one: every control or
/// metrics connection costs an fd, and the 1024 a shell hands out is
/// little next to the map fds and the connection caps.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("cannot raise RLIMIT_NOFILE");
            }
        }
    }
}

fn check_config(file: &std::path::Path) -> Result<(), Failure> {
    let tick = clock::kernel_clock_tick_ns();
    match config::load(file, tick) {
        Ok(cfg) => {
            for w in agent::unsupported(&cfg) {
                println!("{}: warning: {w}", file.display());
            }
            for w in agent::config_file_warnings(file, &cfg) {
                println!("{}: warning: {w}", file.display());
            }
            println!("{}: ok", file.display());
            Ok(())
        }
        Err(errs) => {
            for e in &errs.errors {
                println!("{e}");
            }
            Err(Failure(
                2,
                format!("{}: {} error(s)", file.display(), errs.errors.len()),
            ))
        }
    }
}

fn detach(cli: &Cli) -> Result<(), Failure> {
    let tick = clock::kernel_clock_tick_ns();
    let pin_dir = match &cli.config {
        Some(p) => {
            config::load(p, tick)
                .map_err(|e| {
                    Failure(
                        2,
                        format!("{e}\n(fix the config: --detach reads pin_dir from it)"),
                    )
                })?
                .pin_dir
        }
        None => config::default_policy(tick).pin_dir,
    };
    let removed = agent::detach(&pin_dir)?;
    if removed.links.is_empty() && removed.maps == 0 {
        println!("nothing to detach under {}", pin_dir.display());
    } else {
        println!(
            "detached from {} interface(s) [{}] and removed {} pinned map(s) under {}",
            removed.links.len(),
            removed.links.join(", "),
            removed.maps,
            pin_dir.display()
        );
    }
    Ok(())
}

async fn main_loop(
    agent: Agent,
    socket: ControlSocket,
    metrics_listener: std::net::TcpListener,
    requests: Arc<shield_user::control::RequestCounters>,
) -> Result<(), Failure> {
    let mut agent_ref = agent;
    let ring = agent_ref
        .take_events()
        .map_err(|e| Failure(1, format!("flood events: {e}")))?;
    let agent = Arc::new(Mutex::new(agent_ref));
    let exit = Arc::new(Notify::new());
    let handler = {
        let (agent, exit) = (agent.clone(), exit.clone());
        handler_fn(move |req, peer| {
            let (agent, exit) = (agent.clone(), exit.clone());
            async move { agent::serve::serve(&agent, &exit, req, &peer).await }
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
            .map_err(|e| Failure(1, format!("metrics listener: {e}")))?;
        let agent = agent.clone();
        let config = shield_user::metrics::ServerConfig::default();
        let metrics_dropped = config.dropped.clone();
        let snapshot: shield_user::metrics::SnapshotFn = Arc::new(move || {
            let mut s = lock(&agent).metrics_snapshot();
            let (ok, error, denied) = requests.read();
            s.control_requests = Some(shield_user::metrics::ControlRequests { ok, error, denied });
            let (busy, evicted, timeout, oversized) = requests.read_dropped();
            s.health.control_dropped = Some(shield_user::metrics::ControlDropped {
                busy,
                evicted,
                timeout,
                oversized,
            });
            s.health.metrics_dropped = Some(metrics_dropped.read());
            s
        });
        tokio::spawn(shield_user::metrics::serve_with(
            listener,
            snapshot,
            stop_future(stopped.clone()),
            config,
        ))
    };
    tokio::spawn(agent::crowdsec::poll_loop(agent.clone()));
    tokio::spawn(agent::crowdsec::push_loop(agent.clone()));
    tokio::spawn(agent::crowdsec::spool_write_loop(agent.clone()));
    tokio::spawn(writer::write_loop(agent.clone()));
    tokio::spawn(agent::links::watch_loop(agent.clone()));
    let ticker = tokio::spawn(tick::tick_loop(agent.clone()));
    let result = event_loop(agent.clone(), ring, &exit).await;
    // Between two slices: the maps and the book agree there.
    ticker.abort();
    // Autobans spooled, bans and offences since the last writes: on disk
    // before exit.
    agent::crowdsec::spool_flush(&agent).await;
    writer::flush(&agent).await;
    let _ = stop_serving.send(true);
    let _ = server.await;
    let _ = metrics.await;
    result
}

/// `shieldctl feeds refresh [NAME] [--force]`: one feed or all, in turn.
/// Flood events read per wake of the ring buffer, then applied under one
/// hold of the lock (about 0.1 ms per event in a debug build).
const EVENTS_PER_WAKE: usize = 512;

async fn event_loop(
    agent_arc: Arc<Mutex<Agent>>,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    exit: &Notify,
) -> Result<(), Failure> {
    let agent: &Mutex<Agent> = &agent_arc;
    let sig = |k| signal(k).map_err(|e| Failure(1, format!("installing signal handlers: {e}")));
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
    .map_err(|e| Failure(1, format!("polling flood events: {}", e.into_parts().1)))?;

    let status = lock(agent).status_line();
    tracing::info!("{status}");
    systemd::notify(&format!("READY=1\nSTATUS={status}"));

    loop {
        tokio::select! {
            _ = hup.recv() => {
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
                let status = lock(agent).status_line();
                systemd::notify(&format!("READY=1\nSTATUS={status}"));
            }
            guard = ring.readable_mut() => {
                if let Ok(mut guard) = guard {
                    let rb = guard.get_inner_mut();
                    // Read first, then applied under one hold of the lock;
                    // bounded, so a flood of events cannot starve signals
                    // or hold the lock long.
                    let mut drained = false;
                    let mut records = Vec::with_capacity(EVENTS_PER_WAKE);
                    for _ in 0..EVENTS_PER_WAKE {
                        let Some(item) = rb.next() else {
                            drained = true;
                            break;
                        };
                        records.push(item.to_vec());
                    }
                    {
                        let mut a = lock(agent);
                        for bytes in &records {
                            a.on_event(bytes);
                        }
                    }
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
