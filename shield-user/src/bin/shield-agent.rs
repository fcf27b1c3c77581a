//! shield-agent: loads shield's XDP program, keeps its maps in line with the
//! config, and leaves enforcement in place when it exits.

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use clap::Parser;

use shield_user::{
    agent::{
        self, Agent, AgentOptions,
        cli::{Cli, Command, LogFormat},
    },
    clock, config,
    control::{ControlSocket, ServerConfig, ServerError},
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
    let result = rt
        .block_on(agent::daemon::run(
            agent,
            socket,
            metrics_listener,
            requests,
        ))
        .map_err(Failure::from);
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
