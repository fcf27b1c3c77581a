//! `shieldctl`'s command line, as clap derive definitions (so xtask can
//! generate completions and the man page from [`command`]), and its mapping
//! to protocol requests with the checks that belong on the client side.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};

use super::{
    client::{DEFAULT_SOCKET, DEFAULT_TIMEOUT},
    protocol::{CheckProto, MAX_TOP_N, Request},
    units::{RateSpec, UnitError, parse_ttl},
};
use crate::net::Cidr;

const ABOUT: &str = "Control shield-agent, the XDP traffic shield";

const EXAMPLES: &str = "\
Examples:
  shieldctl status
  shieldctl top -n 10
  shieldctl ban add 203.0.113.0/24 --ttl 1h --reason scraper
  shieldctl check 198.51.100.7 --proto tcp --port 443
  shieldctl --json ban list | jq '.data[].net'

Exit status: 0 ok, 1 runtime error (agent unreachable or it refused the
request), 2 usage error.";

#[derive(Debug, Parser)]
#[command(name = "shieldctl", version, about = ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    /// The agent's control socket
    #[arg(
        long,
        global = true,
        env = "SHIELD_SOCKET",
        default_value = DEFAULT_SOCKET,
        value_name = "PATH"
    )]
    pub socket: PathBuf,

    /// Print the agent's reply as JSON (a stable format, see
    /// docs/control-protocol.md)
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// The agent, its program and interfaces, feeds and totals at a glance
    #[command(
        after_help = "Example:\n  shieldctl status\n  shieldctl status --json | jq .data.dry_run"
    )]
    Status,

    /// Packet and byte counters by verdict and reason
    #[command(after_help = "Example:\n  shieldctl stats")]
    Stats,

    /// The busiest sources right now, with their tier, class and state
    #[command(after_help = "Example:\n  shieldctl top -n 50")]
    Top {
        /// How many sources to show
        #[arg(short = 'n', default_value_t = 20, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_TOP_N)))]
        n: u32,
    },

    /// Ban addresses or networks (dropped before feeds, ACLs and limits)
    #[command(subcommand)]
    Ban(BanCmd),

    /// Addresses and networks that always pass
    #[command(subcommand)]
    Allow(AllowCmd),

    /// Threat feeds: their state, and refreshing them now
    #[command(subcommand)]
    Feeds(FeedsCmd),

    /// Effective rate limits per tier and class, and runtime overrides
    #[command(after_help = "\
Examples:
  shieldctl limits
  shieldctl limits set partners --packets 20000/s --for 1h")]
    Limits(LimitsArgs),

    /// Re-read the config file and apply it
    #[command(after_help = "Example:\n  shieldctl reload")]
    Reload,

    /// Turn dry run on (drops are counted as would_drop, not done) or off
    #[command(after_help = "Example:\n  shieldctl dry-run on")]
    DryRun {
        #[arg(value_enum)]
        state: OnOff,
    },

    /// Remove the XDP programs, links and pins: enforcement STOPS
    #[command(after_help = "\
Example:
  shieldctl detach --yes

shield-agent attaches again when it restarts.")]
    Detach {
        /// Confirm that enforcement should stop
        #[arg(long)]
        yes: bool,
    },

    /// Explain what the shield would do with traffic from ADDR
    #[command(after_help = "\
Examples:
  shieldctl check 198.51.100.7
  shieldctl check 2001:db8::7 --proto tcp --port 443

--port without --proto means TCP.")]
    Check {
        /// The source address
        addr: IpAddr,
        /// The protocol of the traffic
        #[arg(long, value_enum)]
        proto: Option<ProtoArg>,
        /// The destination port
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BanCmd {
    /// Ban an address or network
    #[command(after_help = "\
Examples:
  shieldctl ban add 203.0.113.7
  shieldctl ban add 203.0.113.0/24 --ttl 1h30m --reason 'credential stuffing'

Without --ttl the ban lasts until `ban del`.")]
    Add {
        /// ADDR or ADDR/LEN, host bits clear
        #[arg(value_name = "ADDR[/LEN]")]
        net: Cidr,
        /// How long the ban lasts (e.g. 10m, 1h30m, 7d; at most 365d)
        #[arg(long, value_parser = ttl_arg, value_name = "D")]
        ttl: Option<Duration>,
        /// Why, for `ban list` and the logs
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Lift a ban
    #[command(after_help = "Example:\n  shieldctl ban del 203.0.113.0/24")]
    Del {
        #[arg(value_name = "ADDR[/LEN]")]
        net: Cidr,
    },
    /// Active bans with their origin and time left
    #[command(after_help = "Example:\n  shieldctl ban list")]
    List,
}

#[derive(Debug, Subcommand)]
pub enum AllowCmd {
    /// Always pass an address or network (until the agent restarts; put
    /// permanent entries in the config)
    #[command(after_help = "Example:\n  shieldctl allow add 192.0.2.0/24")]
    Add {
        #[arg(value_name = "ADDR[/LEN]")]
        net: Cidr,
    },
    /// Remove a runtime allow entry
    #[command(after_help = "Example:\n  shieldctl allow del 192.0.2.0/24")]
    Del {
        #[arg(value_name = "ADDR[/LEN]")]
        net: Cidr,
    },
    /// Allow entries from the config and from `allow add`
    #[command(after_help = "Example:\n  shieldctl allow list")]
    List,
}

#[derive(Debug, Subcommand)]
pub enum FeedsCmd {
    /// Each feed's entries, rejects, last refresh and errors
    #[command(after_help = "Example:\n  shieldctl feeds list")]
    List,
    /// Refresh one feed, or all, now (a refresh already running is joined)
    #[command(after_help = "\
Examples:
  shieldctl feeds refresh
  shieldctl feeds refresh spamhaus-drop --force")]
    Refresh {
        /// The feed's name (all feeds when omitted)
        name: Option<String>,
        /// Apply a held refresh: one that drops more than half the entries
        /// or more than doubles the space the feed covers (never one over
        /// the feed's max_addresses)
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct LimitsArgs {
    #[command(subcommand)]
    pub action: Option<LimitsCmd>,
}

#[derive(Debug, Subcommand)]
pub enum LimitsCmd {
    /// Override a tier's, port rule's or the default limits at run time
    #[command(
        group(ArgGroup::new("limit").required(true).multiple(true)
            .args(["packets", "packet_burst", "connections", "connection_burst"])),
        after_help = "\
Examples:
  shieldctl limits set default --packets 500/s --packet-burst 1000 --for 30m
  shieldctl limits set ssh --connections 2/min --persist

Rates are N/s, N/min, N/h or `unlimited`. Without --for the override lasts
until the agent restarts (or, with --persist, until removed from the state)."
    )]
    Set {
        /// A tier name, a port rule name, or `default`
        target: String,
        /// Packets per source
        #[arg(long, value_name = "RATE")]
        packets: Option<RateSpec>,
        /// Packets a source may send at once above the rate
        #[arg(long, value_name = "N")]
        packet_burst: Option<u64>,
        /// New TCP connections (SYNs) per source
        #[arg(long, value_name = "RATE")]
        connections: Option<RateSpec>,
        /// New connections a source may open at once above the rate
        #[arg(long, value_name = "N")]
        connection_burst: Option<u64>,
        /// Expire the override after D (e.g. 30m, 2h; at most 365d)
        #[arg(long = "for", value_parser = ttl_arg, value_name = "D")]
        for_: Option<Duration>,
        /// Keep the override across agent restarts
        #[arg(long)]
        persist: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    Tcp,
    Udp,
    Icmp,
}

impl From<ProtoArg> for CheckProto {
    fn from(p: ProtoArg) -> CheckProto {
        match p {
            ProtoArg::Tcp => CheckProto::Tcp,
            ProtoArg::Udp => CheckProto::Udp,
            ProtoArg::Icmp => CheckProto::Icmp,
        }
    }
}

fn ttl_arg(s: &str) -> Result<Duration, UnitError> {
    parse_ttl(s)
}

/// The clap command, for completions and the man page.
pub fn command() -> clap::Command {
    Cli::command()
}

/// A command line that clap accepted but that is still wrong; exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Cli {
    /// The request this command line asks for.
    pub fn request(&self) -> Result<Request, UsageError> {
        Ok(match &self.command {
            Cmd::Status => Request::Status,
            Cmd::Stats => Request::Stats,
            Cmd::Top { n } => Request::Top { n: *n },
            Cmd::Ban(BanCmd::Add { net, ttl, reason }) => Request::BanAdd {
                net: *net,
                ttl_secs: ttl.map(|d| d.as_secs()),
                reason: reason.clone().filter(|r| !r.trim().is_empty()),
            },
            Cmd::Ban(BanCmd::Del { net }) => Request::BanDel { net: *net },
            Cmd::Ban(BanCmd::List) => Request::BanList,
            Cmd::Allow(AllowCmd::Add { net }) => Request::AllowAdd { net: *net },
            Cmd::Allow(AllowCmd::Del { net }) => Request::AllowDel { net: *net },
            Cmd::Allow(AllowCmd::List) => Request::AllowList,
            Cmd::Feeds(FeedsCmd::List) => Request::FeedsList,
            Cmd::Feeds(FeedsCmd::Refresh { name, force }) => Request::FeedsRefresh {
                name: name.clone(),
                force: *force,
            },
            Cmd::Limits(LimitsArgs { action: None }) => Request::Limits,
            Cmd::Limits(LimitsArgs {
                action:
                    Some(LimitsCmd::Set {
                        target,
                        packets,
                        packet_burst,
                        connections,
                        connection_burst,
                        for_,
                        persist,
                    }),
            }) => {
                if target.trim().is_empty() {
                    return Err(UsageError(
                        "limits set: TARGET is empty; name a tier, a port rule or `default`".into(),
                    ));
                }
                Request::LimitsSet {
                    target: target.trim().to_string(),
                    packets: *packets,
                    packet_burst: *packet_burst,
                    connections: *connections,
                    connection_burst: *connection_burst,
                    for_secs: for_.map(|d| d.as_secs()),
                    persist: *persist,
                }
            }
            Cmd::Reload => Request::Reload,
            Cmd::DryRun { state } => Request::DryRun {
                on: *state == OnOff::On,
            },
            Cmd::Detach { yes: false } => {
                return Err(UsageError(
                    "detach removes every shield XDP program, link and pinned map: \
                     enforcement stops until shield-agent attaches again. \
                     Re-run with --yes to confirm."
                        .into(),
                ));
            }
            Cmd::Detach { yes: true } => Request::Detach,
            Cmd::Check { addr, proto, port } => {
                let proto = match (proto, port) {
                    (Some(ProtoArg::Icmp), Some(_)) => {
                        return Err(UsageError("check: ICMP has no ports; drop --port".into()));
                    }
                    (None, Some(_)) => Some(CheckProto::Tcp),
                    (p, _) => p.map(CheckProto::from),
                };
                Request::Check {
                    addr: *addr,
                    proto,
                    port: *port,
                }
            }
        })
    }

    /// How long to wait for the agent: longer for commands that download
    /// or rebuild maps.
    pub fn timeout(&self) -> Duration {
        match self.command {
            Cmd::Feeds(FeedsCmd::Refresh { .. }) | Cmd::Reload | Cmd::Detach { .. } => {
                Duration::from_secs(120)
            }
            _ => DEFAULT_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind as ClapKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shieldctl").chain(args.iter().copied()))
    }

    fn req(args: &[&str]) -> Request {
        parse(args).unwrap().request().unwrap()
    }

    #[test]
    fn the_command_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn commands_map_to_requests() {
        assert_eq!(req(&["status"]), Request::Status);
        assert_eq!(req(&["top"]), Request::Top { n: 20 });
        assert_eq!(req(&["top", "-n", "5"]), Request::Top { n: 5 });
        assert_eq!(
            req(&[
                "ban",
                "add",
                "203.0.113.0/24",
                "--ttl",
                "1h30m",
                "--reason",
                "scan"
            ]),
            Request::BanAdd {
                net: "203.0.113.0/24".parse().unwrap(),
                ttl_secs: Some(5400),
                reason: Some("scan".into()),
            }
        );
        assert_eq!(
            req(&["ban", "del", "2001:db8::1"]),
            Request::BanDel {
                net: "2001:db8::1/128".parse().unwrap()
            }
        );
        assert_eq!(req(&["allow", "list"]), Request::AllowList);
        assert_eq!(
            req(&["feeds", "refresh", "drop", "--force"]),
            Request::FeedsRefresh {
                name: Some("drop".into()),
                force: true
            }
        );
        assert_eq!(req(&["limits"]), Request::Limits);
        assert_eq!(
            req(&[
                "limits",
                "set",
                "ssh",
                "--connections",
                "2/min",
                "--for",
                "30m",
                "--persist"
            ]),
            Request::LimitsSet {
                target: "ssh".into(),
                packets: None,
                packet_burst: None,
                connections: Some("2/min".parse().unwrap()),
                connection_burst: None,
                for_secs: Some(1800),
                persist: true,
            }
        );
        assert_eq!(req(&["dry-run", "off"]), Request::DryRun { on: false });
        assert_eq!(req(&["detach", "--yes"]), Request::Detach);
        assert_eq!(
            req(&["check", "198.51.100.7", "--port", "443"]),
            Request::Check {
                addr: "198.51.100.7".parse().unwrap(),
                proto: Some(CheckProto::Tcp),
                port: Some(443),
            }
        );
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = parse(&["ban", "list", "--json", "--socket", "/tmp/x.sock"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        let cli = parse(&["--json", "status"]).unwrap();
        assert!(cli.json);
    }

    #[test]
    fn host_bits_are_a_usage_error_with_a_suggestion() {
        let e = parse(&["ban", "add", "10.1.2.3/8"]).unwrap_err();
        assert_eq!(e.kind(), ClapKind::ValueValidation);
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("did you mean `10.0.0.0/8`"), "{e}");
        assert!(parse(&["allow", "add", "2001:db8::1/32"]).is_err());
        assert!(parse(&["ban", "add", "example.com"]).is_err());
    }

    #[test]
    fn bad_ttls_are_refused() {
        for bad in ["0s", "0h", "366d", "10", "1x", ""] {
            let e = parse(&["ban", "add", "192.0.2.1", "--ttl", bad]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        let e = parse(&["ban", "add", "192.0.2.1", "--ttl", "0s"]).unwrap_err();
        assert!(e.to_string().contains("is zero"), "{e}");
        assert!(parse(&["limits", "set", "x", "--packets", "5/s", "--for", "0m"]).is_err());
    }

    #[test]
    fn limits_set_needs_a_limit_and_valid_rates() {
        let e = parse(&["limits", "set", "default"]).unwrap_err();
        assert_eq!(e.kind(), ClapKind::MissingRequiredArgument);
        assert!(parse(&["limits", "set", "default", "--packets", "0/s"]).is_err());
        assert!(parse(&["limits", "set", "default", "--packets", "fast"]).is_err());
        assert!(parse(&["limits", "set", "default", "--packet-burst", "-1"]).is_err());
        let r = req(&["limits", "set", "default", "--packets", "unlimited"]);
        assert!(matches!(
            r,
            Request::LimitsSet {
                packets: Some(RateSpec::Unlimited),
                ..
            }
        ));
        let cli = parse(&["limits", "set", " ", "--packet-burst", "5"]).unwrap();
        assert!(cli.request().is_err());
    }

    #[test]
    fn usage_errors_exit_2() {
        for args in [
            &["frobnicate"][..],
            &[],
            &["top", "-n", "0"],
            &["top", "-n", "10001"],
            &["dry-run", "maybe"],
            &["check", "10.0.0.0/8"],
            &["check", "10.0.0.1", "--proto", "sctp"],
            &["check", "10.0.0.1", "--port", "70000"],
            &["ban"],
            &["ban", "add"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn refusals_after_parsing() {
        let e = parse(&["detach"]).unwrap().request().unwrap_err();
        assert!(e.0.contains("--yes"), "{e}");
        let e = parse(&["check", "10.0.0.1", "--proto", "icmp", "--port", "1"])
            .unwrap()
            .request()
            .unwrap_err();
        assert!(e.0.contains("ICMP"), "{e}");
    }

    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str) {
            let name = format!("{path} {}", cmd.get_name());
            if cmd.get_subcommands().next().is_none() || cmd.get_name() == "limits" {
                let help = cmd
                    .get_after_help()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                assert!(help.contains("shieldctl"), "`{name}` has no example");
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &name);
                }
            }
        }
        walk(&command(), "");
    }

    #[test]
    fn slow_commands_get_longer_timeouts() {
        assert_eq!(parse(&["status"]).unwrap().timeout(), DEFAULT_TIMEOUT);
        assert!(parse(&["feeds", "refresh"]).unwrap().timeout() > DEFAULT_TIMEOUT);
    }
}
