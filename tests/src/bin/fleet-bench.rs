//! `fleet-bench`: shield as a CrowdSec bouncer, against a real LAPI
//! (Debian's crowdsec 1.4.6, as in the tests). Needs root. `cargo xtask
//! bench --only fleet` runs it after building the agent; by hand:
//!
//! ```text
//! cargo build --release -p shield-user --bins
//! cargo run --release -p shield-tests --bin fleet-bench -- [--decisions N] [--rounds N] [--write FILE]
//! ```
//!
//! - **`fleet.lapi_100k_apply_s`**: N decisions (100k) imported into the
//!   LAPI with `cscli decisions import`; then a fresh `shield-agent` polling
//!   it is timed from READY until all N are bans (`shield_bans_active`). Next
//!   to it: the LAPI's own answer (the `startup=true` page fetched and
//!   parsed by shield's client, no agent), and the agent's apply after the
//!   page arrived (its log's `apply_ms`: diff, map writes, journal).
//! - **`fleet.propagation_ms`**: two agents on two veth labs, A pushing its
//!   autobans, B polling every `poll`; a flood on A becomes an autoban, and
//!   the time from A's ban list showing it to B's ban list showing it is
//!   measured, once per round with a new source address.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use shield_tests::{
    agent::{AgentHome, metric, scrape},
    benchout::{Results, loadavg, median, write_section},
    flow::Flows,
    lab::Lab,
    lapi::{self, BOUNCER_KEY, Lapi},
};
use shield_user::{
    config::{CrowdsecConfig, DecisionScope},
    crowdsec,
};

const USAGE: &str = "usage: fleet-bench [--decisions N] [--rounds N] [--quick] [--write FILE] [--json FILE] [--command TEXT]";
/// The marked section of docs/BENCHMARKS.md this bench rewrites.
const SECTION: &str = "fleetbench";
const POLL_SECS: u64 = 1;

struct Args {
    decisions: usize,
    rounds: u32,
    write: Option<PathBuf>,
    json: Option<PathBuf>,
    command: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        decisions: 100_000,
        rounds: 5,
        write: None,
        json: None,
        command: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value\n{USAGE}"));
        match k.as_str() {
            "--decisions" => a.decisions = v()?.parse().map_err(|e| format!("--decisions: {e}"))?,
            "--rounds" => a.rounds = v()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--write" => a.write = Some(PathBuf::from(v()?)),
            "--json" => a.json = Some(PathBuf::from(v()?)),
            // `cargo xtask bench --quick`: enough rounds for a median.
            "--quick" => a.rounds = 2,
            "--command" => a.command = Some(v()?),
            _ => return Err(USAGE.to_string()),
        }
    }
    if a.decisions == 0 || a.rounds == 0 {
        return Err("--decisions and --rounds must be at least 1".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("fleet-bench needs root (network namespaces, XDP)");
        return ExitCode::from(1);
    }
    let load_before = loadavg();
    let apply = bench_apply(args.decisions, args.rounds.min(3));
    let prop = bench_propagation(args.rounds);
    let report = report(&args, &apply, &prop, &load_before);
    print!("{report}");
    if let Some(path) = &args.json {
        let mut r = Results::default();
        r.push("fleet.lapi_100k_apply_s", median(&apply.end_to_end_s), "s");
        r.push("fleet.propagation_ms", median(&prop.ms), "ms");
        if let Err(e) = r.write_json(path) {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    }
    if let Some(path) = &args.write {
        if let Err(e) = write_section(path, SECTION, &report) {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
        eprintln!("fleet-bench: wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

/// The median, with the smallest and largest value beside it.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let finite = v.iter().copied().filter(|x| x.is_finite());
    (
        median(v),
        finite.clone().fold(f64::NAN, f64::min),
        finite.fold(f64::NAN, f64::max),
    )
}

fn cell(v: &[f64], unit: &str, digits: usize) -> String {
    let (m, lo, hi) = spread(v);
    format!("{m:.digits$} {unit} ({lo:.digits$}–{hi:.digits$})")
}

fn crowdsec_section(home: &AgentHome, url: &str, key: &str, extra: &str) -> String {
    lapi::crowdsec_section(home, url, key, &format!("{POLL_SECS}s"), extra)
}

struct Apply {
    decisions: usize,
    import_s: f64,
    lapi_answer_s: Vec<f64>,
    page_bytes: usize,
    end_to_end_s: Vec<f64>,
    agent_apply_ms: Vec<f64>,
    enforced: bool,
}

fn bench_apply(n: usize, rounds: u32) -> Apply {
    let lab = Lab::new();
    let lapi = Lapi::start(Some(&lab.server_ns), Ipv4Addr::LOCALHOST);
    // The lab's client is one of the N, so enforcement can be checked
    // with real traffic; the rest are distinct addresses in 100.64/10.
    let addrs = (1..n as u32).map(|i| IpAddr::from(Ipv4Addr::from(0x6440_0000u32 + i)));
    eprintln!("fleet-bench: importing {n} decisions into the LAPI (cscli decisions import)");
    let import_s = lapi
        .import_bans(std::iter::once(lab.client_v4).chain(addrs), "4h")
        .as_secs_f64();

    // The LAPI's own answer, through shield's client, without an agent.
    let key = lapi::secret_file(lapi.path(), "bench.key", BOUNCER_KEY);
    let cfg = CrowdsecConfig {
        lapi_url: lapi.url(),
        api_key_file: Some(key),
        poll: Duration::from_secs(POLL_SECS),
        scopes: vec![DecisionScope::Ip, DecisionScope::Range],
        types: vec!["ban".into()],
        origins: vec![],
        ca_file: None,
        cert_file: None,
        key_file: None,
        machine_id: None,
        password_file: None,
        max_addresses: shield_user::config::DEFAULT_MAX_ADDRESSES,
        max_decisions: 200_000,
    };
    let mut lapi_answer_s = Vec::new();
    let mut page_bytes = 0;
    for _ in 0..3 {
        let (ns, cfg) = (lab.server_ns.clone(), cfg.clone());
        let (secs, bytes, got) = thread::spawn(move || {
            Lab::enter(&ns);
            let client = crowdsec::Lapi::new(&cfg).expect("client");
            let t = Instant::now();
            let page = client.stream(true, "ip,range", "").expect("stream");
            (t.elapsed().as_secs_f64(), page.bytes, page.new.len())
        })
        .join()
        .unwrap();
        assert_eq!(got, n, "the LAPI returned {got} of {n} decisions");
        lapi_answer_s.push(secs);
        page_bytes = bytes;
    }

    let mut end_to_end_s = Vec::new();
    let mut agent_apply_ms = Vec::new();
    let mut enforced = true;
    for round in 0..rounds {
        eprintln!("fleet-bench: apply round {}", round + 1);
        let home = AgentHome::new();
        let cs = crowdsec_section(&home, &lapi.url(), BOUNCER_KEY, "");
        home.write_config(&format!("{}{cs}", home.base_config(&lab)));
        let agent = home.start(&lab, &[]);
        let t = Instant::now();
        let deadline = t + Duration::from_secs(120);
        loop {
            let m = scrape(&lab.server_ns, 9964);
            if metric(&m, "shield_bans_active").is_some_and(|b| b as usize >= n) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not applied in 120 s:\n{}",
                agent.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
        end_to_end_s.push(t.elapsed().as_secs_f64());
        let logs = agent.logs();
        if let Some(ms) = logs
            .lines()
            .filter(|l| l.contains("CrowdSec decisions applied"))
            .find_map(|l| {
                let rest = &l[l.find("apply_ms=")? + 9..];
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
        {
            agent_apply_ms.push(ms);
        }
        enforced &= lab.udp_through(lab.server_v4, 7400, 5) == 0;
        agent.stop();
    }
    Apply {
        decisions: n,
        import_s,
        lapi_answer_s,
        page_bytes,
        end_to_end_s,
        agent_apply_ms,
        enforced,
    }
}

struct Propagation {
    ms: Vec<f64>,
}

fn bans(home: &AgentHome) -> Vec<serde_json::Value> {
    let out = home.ctl(&["--json", "ban", "list"]);
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["data"].as_array().cloned())
        .unwrap_or_default()
}

fn holds(home: &AgentHome, net: &str, origin: &str) -> bool {
    bans(home)
        .iter()
        .any(|r| r["net"] == net && r["origin"] == origin)
}

fn bench_propagation(rounds: u32) -> Propagation {
    let (a, b, lapi) = lapi::linked_labs();
    let (home_a, home_b, agent_a, agent_b) = lapi::start_pair(
        &lapi,
        (&a, &b),
        "bench",
        &format!("{POLL_SECS}s"),
        "after = \"1s\"\nttl = \"10m\"\n",
    );

    let mut ms = Vec::new();
    for round in 0..rounds {
        eprintln!("fleet-bench: propagation round {}", round + 1);
        let src = a.add_client_v4(100 + round as u8);
        let net = format!("{src}/32");
        let flood = Flows::start(&a, 7400, &[src], Duration::from_micros(500));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !holds(&home_a, &net, "autoban") {
            assert!(Instant::now() < deadline, "no autoban on A");
        }
        let t = Instant::now();
        flood.stop();
        while !holds(&home_b, &net, "crowdsec") {
            assert!(
                Instant::now() < deadline,
                "not propagated to B:\n{}\nA:\n{}\nLAPI:\n{}",
                agent_b.logs(),
                agent_a.logs(),
                lapi.logs()
            );
        }
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        // Let A's push of this round settle before the next flood starts.
        thread::sleep(Duration::from_millis(300));
    }
    Propagation { ms }
}

fn report(args: &Args, a: &Apply, p: &Propagation, load_before: &str) -> String {
    let mut o = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let _ = writeln!(
        o,
        "Measured by `{}` on kernel {}, {cpus} CPUs, against CrowdSec 1.4.6 (Debian's package, `crowdsec -no-cs`, sqlite with WAL) in a network namespace. Poll interval {POLL_SECS} s. Load average {load_before} at the start and {} at the end (the machine was shared with other builds and tests).\n",
        args.command.as_deref().unwrap_or("fleet-bench"),
        kernel.trim(),
        loadavg()
    );
    let e2e = median(&a.end_to_end_s);
    let prop = spread(&p.ms);
    let _ = writeln!(o, "| measurement | median (min–max) |\n|---|---:|");
    let _ = writeln!(
        o,
        "| `fleet.lapi_100k_apply_s`: {} decisions, agent READY → all enforced ({} rounds, a fresh agent each) | {} |",
        a.decisions,
        a.end_to_end_s.len(),
        cell(&a.end_to_end_s, "s", 2)
    );
    let _ = writeln!(
        o,
        "| of which the LAPI's answer: `GET /v1/decisions/stream?startup=true` fetched and parsed by shield's client, no agent ({:.1} MiB) | {} |",
        a.page_bytes as f64 / 1_048_576.0,
        cell(&a.lapi_answer_s, "s", 2)
    );
    let _ = writeln!(
        o,
        "| of which shield's apply once the page arrived (the agent's `apply_ms`: decision book, diff, {} ban-map writes, journal) | {} |",
        a.decisions,
        cell(&a.agent_apply_ms, "ms", 0)
    );
    let _ = writeln!(
        o,
        "| `fleet.propagation_ms`: autoban on A → ban on B through the LAPI ({} rounds) | {} |",
        p.ms.len(),
        cell(&p.ms, "ms", 0)
    );
    let _ = writeln!(
        o,
        "\nSetup, not a target: `cscli decisions import` of the {} decisions took {:.1} s. Traffic from one of the imported addresses was {} after each apply round.\n",
        a.decisions,
        a.import_s,
        if a.enforced { "dropped" } else { "NOT dropped" }
    );
    let _ = writeln!(o, "| target | measured | |\n|---|---|---|");
    let _ = writeln!(
        o,
        "| 100k decisions from a real LAPI applied in ≤ 2 s | end to end {e2e:.2} s, of which the LAPI's answer {:.2} s and shield's apply {:.0} ms | {} |",
        median(&a.lapi_answer_s),
        median(&a.agent_apply_ms),
        if e2e <= 2.0 {
            "met"
        } else {
            "not met end to end"
        }
    );
    let budget = POLL_SECS as f64 * 1e3 + 500.0;
    let _ = writeln!(
        o,
        "| autoban enforced on another instance in ≤ poll + 500 ms ({budget:.0} ms) | median {:.0} ms, worst {:.0} ms | {} |",
        prop.0,
        prop.2,
        if prop.2 <= budget {
            "met"
        } else if prop.0 <= budget {
            "met at the median, not in the worst round"
        } else {
            "not met"
        }
    );
    o
}
