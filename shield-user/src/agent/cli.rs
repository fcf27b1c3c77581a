//! shield-agent's command line, here rather than in the binary so xtask can
//! generate the man page and shell completions from it.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

const LONG_ABOUT: &str = "\
shield-agent loads shield's XDP program onto your interfaces, compiles its
config into BPF maps, and keeps them current. Enforcement lives in the
kernel and is pinned under pin_dir (default /sys/fs/bpf/shield): stopping,
restarting or killing the agent leaves it running, and a restarted agent
adopts it without resetting bans, buckets or feed entries.

Signals: SIGHUP reloads the config (an invalid config leaves the running
policy untouched); SIGTERM/SIGINT exit and leave enforcement in place.
Run under systemd with Type=notify: READY=1 is sent once enforcing, and the
watchdog (WatchdogSec=) is pinged from the main loop.

Exit codes: 0 ok, 1 runtime error, 2 usage or config error.";

const AFTER_HELP: &str = "\
Examples:
  shield-agent --iface eth0                      # embedded default policy
  shield-agent --config /etc/shield/shield.toml  # your policy
  shield-agent check-config /etc/shield/shield.toml
  shield-agent --config /etc/shield/shield.toml --detach   # remove everything";

#[derive(Parser, Debug)]
#[command(name = "shield-agent", version, about = "shield's XDP traffic shield daemon", long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// The config file (TOML). Without it the embedded default policy runs,
    /// which needs --iface.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Protect this interface (repeatable). Replaces the config's `interfaces`.
    #[arg(long = "iface", short = 'i', value_name = "IF")]
    pub ifaces: Vec<String>,

    /// Count what would be dropped (as `would_drop`) but pass everything.
    #[arg(long)]
    pub dry_run: bool,

    /// Remove shield from every interface and delete its pins (the ban
    /// journal in state_dir is kept), then exit.
    #[arg(long)]
    pub detach: bool,

    /// Log format: `text` (human-readable) or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info`, `debug`, `shield_user=debug` (RUST_LOG also
    /// works). `info,shield::kernel=debug` also shows the XDP program's log
    /// of its rare paths (off by default; read once, at start; see
    /// docs/OPERATIONS.md, "Kernel log").
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,

    /// Load this XDP object instead of the built-in one (upgrade drills and
    /// tests: it replaces the running program atomically, like an upgrade).
    #[arg(long, value_name = "FILE")]
    pub bpf_object: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a config file and list every error with its line and column
    /// (exit 2 when there is any).
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The clap definition, for man pages and completions.
pub fn command() -> clap::Command {
    Cli::command()
}
