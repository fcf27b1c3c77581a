//! `shield-bench`: the data plane measured through BPF_PROG_TEST_RUN, side
//! by side in one run. Needs root. `cargo xtask bench` runs it; by hand:
//!
//! ```text
//! cargo run --release -p shield-tests --bin shield-bench -- [--quick] [--write FILE] [--json FILE]
//! ```
//!
//! - **packets:** per-packet cost of shield's pipeline (aya's `TestRun`)
//!   against an empty XDP program and xdp-filter (through `bpftool prog
//!   run`, the same syscall), cases interleaved round by round;
//! - **rate:** admitted over allowed for one source at ten times its limit,
//!   on one CPU and on two at once;
//! - **scaling:** per-packet cost against feed size and against the number
//!   of tracked sources (with the LRU bucket map full), as tables and PNG
//!   plots.

mod load;
mod packets;
mod plot;
mod rate;
mod scaling;
mod xdpfilter;

use std::{fs, path::PathBuf};

use shield_tests::benchout::{self, Results};

const USAGE: &str = "usage: shield-bench [--quick] [--repeat N] [--rounds N] [--only packets|rate|scaling] [--write FILE] [--json FILE] [--plots DIR] [--command TEXT]";

struct Args {
    quick: bool,
    repeat: Option<u32>,
    rounds: Option<u32>,
    only: Option<String>,
    write: Option<PathBuf>,
    json: Option<PathBuf>,
    plots: Option<PathBuf>,
    command: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        repeat: None,
        rounds: None,
        only: None,
        write: None,
        json: None,
        plots: None,
        command: None,
    };
    a.quick = benchout::parse_args(USAGE, |k, v| {
        let num = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{k} takes a positive number, not {v:?}"))
        };
        match k {
            "--repeat" => a.repeat = Some(num(&v)?),
            "--rounds" => a.rounds = Some(num(&v)?),
            "--only" => a.only = Some(v),
            "--write" => a.write = Some(v.into()),
            "--json" => a.json = Some(v.into()),
            "--plots" => a.plots = Some(v.into()),
            "--command" => a.command = Some(v),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("shield-bench needs root: it loads XDP programs");
        return std::process::ExitCode::FAILURE;
    }
    let part = |p: &str| a.only.as_deref().is_none_or(|o| o == p);
    let dir = std::env::temp_dir().join(format!("shield-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let command = a.command.clone().unwrap_or_else(|| {
        format!(
            "cargo run --release -p shield-tests --bin shield-bench --{}",
            if a.quick { " --quick" } else { "" }
        )
    });
    let mut results = Results::default();
    let mut sections: Vec<(&str, String)> = Vec::new();
    let head = |what: &str| {
        format!(
            "Measured by `{command}` on kernel {}, {} ({what}). Load average at the start: {}.\n\n",
            benchout::kernel(),
            benchout::machine(),
            benchout::loadavg()
        )
    };

    if part("packets") {
        let p = packets::Params {
            repeat: a
                .repeat
                .unwrap_or(if a.quick { 1_000_000 } else { 2_000_000 }),
            rounds: a.rounds.unwrap_or(if a.quick { 5 } else { 11 }),
            filter_addresses: 1_000,
        };
        let md = head("per-packet cost") + &packets::run(&p, &dir, &mut results);
        println!("{md}");
        sections.push(("bench", md));
    }
    if part("rate") {
        let md = head("rate accuracy") + &rate::run(if a.quick { 2.0 } else { 3.0 }, &mut results);
        println!("{md}");
        sections.push(("ratebench", md));
    }
    if part("scaling") {
        let plots = a.plots.clone().unwrap_or_else(|| dir.clone());
        let p = scaling::Params {
            quick: a.quick,
            repeat: if a.quick { 500_000 } else { 1_000_000 },
            rounds: if a.quick { 3 } else { 5 },
        };
        let md = head("scaling") + &scaling::run(&p, &plots, &mut results);
        println!("{md}");
        sections.push(("scalebench", md));
    }

    if let Some(path) = &a.write {
        for (name, md) in &sections {
            if let Err(e) = benchout::write_section(path, name, md) {
                eprintln!("{e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &a.json
        && let Err(e) = results.write_json(path)
    {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    let _ = fs::remove_dir_all(&dir);
    std::process::ExitCode::SUCCESS
}
