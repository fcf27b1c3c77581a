//! `shieldctl`: the operator's CLI for shield-agent. Everything but the
//! process plumbing lives in `shield_user::control`.

use std::{
    io::{self, Write},
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Parser as _;
use shield_user::control::{
    Client, Response,
    cli::Cli,
    render::{render, render_error},
};

/// Usage errors exit 2 like clap's own; runtime errors 1.
const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let req = match cli.request() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shieldctl: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(&cli, &req) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shieldctl: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn run(cli: &Cli, req: &shield_user::control::Request) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&cli.socket)?;
    client.set_timeout(cli.timeout())?;
    match client.request(req)? {
        Response::Ok(reply) => {
            let text = if cli.json {
                let mut s = serde_json::to_string_pretty(&reply).context("encoding the reply")?;
                s.push('\n');
                s
            } else {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                render(&reply, now)
            };
            print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Response::Err(err) => {
            if cli.json {
                let mut s = serde_json::to_string_pretty(&err).context("encoding the error")?;
                s.push('\n');
                print(&s)?;
            }
            eprintln!("shieldctl: {}", render_error(&err));
            Ok(ExitCode::from(EXIT_RUNTIME))
        }
    }
}

/// `println!` panics when stdout is a closed pipe (`shieldctl top | head`);
/// a closed pipe just means the reader has had enough.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
