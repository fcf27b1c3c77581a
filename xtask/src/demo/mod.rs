//! `cargo xtask demo`: the shield on a lab network of its own, attacked for
//! `--duration` seconds, shown live from the agent's own counters, summed
//! up against what the server actually received, then removed without a
//! trace (also on failure and on Ctrl-C).

mod lab;
mod signals;
mod traffic;
mod view;

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{cmd, setup};
use lab::Lab;
use traffic::{Receiver, Stream};
use view::{Ctl, Live, Stats, num, pct};

#[derive(Args)]
pub struct DemoArgs {
    /// How long the attack runs, in seconds (autoban needs more than 5).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    duration: u64,
    /// Use the binaries in DIR instead of building release ones (tests).
    #[arg(long, hide = true)]
    bin_dir: Option<std::path::PathBuf>,
}

fn step(title: &str) {
    eprintln!("\n\x1b[1m==> {title}\x1b[0m");
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    signals::install()?;
    setup::run()?;
    let bin = match &args.bin_dir {
        Some(dir) => cmd::root().join(dir),
        None => {
            step("building shield-agent and shieldctl (release)");
            cmd::cargo(&["build", "--release", "--package", "shield-user", "--bins"])?;
            cmd::target_dir().join("release")
        }
    };
    if signals::stopped() {
        bail!("interrupted");
    }
    let mut lab = Lab::create(&bin.join("shield-agent"))?;
    let mut result = demo(&mut lab, args, &bin.join("shieldctl"));
    // Ctrl-C reaches every process of the terminal's group: a shieldctl or
    // the agent may fail first; the cause is the interruption.
    if signals::stopped() {
        result = Err(anyhow::anyhow!("interrupted"));
    }
    step("cleaning up: agent stopped, shield detached, namespaces, pins and files removed");
    let cleanup = lab.teardown();
    match (&result, &cleanup) {
        (_, Ok(())) => eprintln!("nothing left behind"),
        (_, Err(e)) => eprintln!("{e}"),
    }
    result.and(cleanup)
}

fn demo(lab: &mut Lab, args: &DemoArgs, shieldctl: &Path) -> anyhow::Result<()> {
    let server = lab.server_ns();
    step("lab: three network namespaces (legitimate client, attacker, server) and four veth pairs");
    for l in &lab::LINKS {
        eprintln!(
            "   {:<30} {:<9} {:<12} <-> {server} {:<9} {}",
            lab.namespace(l.role),
            l.client_if,
            lab::dotted(l.client_addr),
            l.server_if,
            lab::dotted(l.server_addr),
        );
    }

    step("shield-agent on the server: the embedded default policy plus a demo feed");
    let feed = cmd::root().join("xtask/demo/feed.txt");
    fs::write(
        lab.config_path(),
        format!(
            "# Where things go, and the demo feed; every policy key not\n\
             # written here is the embedded default.\n\
             interfaces = [{}]\n\
             pin_dir = \"{}\"\n\
             state_dir = \"{}\"\n\
             control_socket = \"{}\"\n\
             metrics_listen = \"127.0.0.1:0\"\n\
             \n\
             [[feed]]\n\
             name = \"demo\"\n\
             path = \"{}\"\n",
            lab::LINKS
                .iter()
                .map(|l| format!("\"{}\"", l.server_if))
                .collect::<Vec<_>>()
                .join(", "),
            lab.pin_dir.display(),
            lab.dir.join("state").display(),
            lab.socket().display(),
            feed.display(),
        ),
    )?;
    eprint!("{}", fs::read_to_string(lab.config_path())?);
    let log = fs::File::create(lab.dir.join("agent.log"))?;
    let agent_bin = shieldctl.with_file_name("shield-agent");
    lab.agent = Some(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{server}"))
            .arg(&agent_bin)
            .arg("--config")
            .arg(lab.config_path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting shield-agent")?,
    );
    let ctl = Ctl {
        bin: shieldctl.to_path_buf(),
        socket: lab.socket(),
    };
    wait_ready(lab, &ctl)?;
    ctl.show(&["limits"])?;
    ctl.show(&["feeds", "list"])?;

    step(&format!(
        "traffic for {} s: a legitimate client, a UDP flood from one address, a SYN flood \
         spoofed from {} addresses of a /24, and traffic from a range the feed lists",
        args.duration,
        traffic::SPOOF_SOURCES
    ));
    for s in Stream::ALL {
        eprintln!(
            "   {:<18} {:<17} {:>7} packets/s",
            s.label(),
            s.source(),
            num(u64::from(s.rate()))
        );
    }
    eprintln!(
        "   the default policy allows 5,000 packets/s and 100 new connections/s per source; \
         a source over its limit for 5 s is banned (autoban)\n"
    );
    let receiver = Receiver::start(lab)?;
    let base = Stats::read(&ctl)?;
    let stop_legit = Arc::new(AtomicBool::new(false));
    let legit = traffic::legit_client(lab, stop_legit.clone());
    for s in [Stream::Flood, Stream::Spoofed, Stream::Feed] {
        traffic::start_trafgen(lab, s)?;
    }
    let started = Instant::now();
    let mut live = Live::new(base.clone());
    let mut interrupted = false;
    let mut last = started;
    for t in 1..=args.duration {
        // Once per second; at least 0.8 s apart when a sample came late.
        let due = (started + Duration::from_secs(t)).max(last + Duration::from_millis(800));
        if !signals::sleep(due.saturating_duration_since(Instant::now())) {
            interrupted = true;
            break;
        }
        live.tick(&ctl, t)?;
        last = Instant::now();
    }
    stop_legit.store(true, std::sync::atomic::Ordering::SeqCst);
    let legit_sent = legit
        .join()
        .map_err(|_| anyhow::anyhow!("the legitimate client panicked"))??;
    lab.stop_procs();
    let elapsed = started.elapsed();
    // Let the last packets in flight arrive before the receiver stops.
    std::thread::sleep(Duration::from_millis(300));
    let received = receiver.finish()?;
    if interrupted {
        bail!("interrupted after {} s", elapsed.as_secs());
    }
    let shield = Stats::read(&ctl)?.since(&base);

    // What went out on each attack link, from the veth's own counters: the
    // packets handed to the server side, and those the veth dropped because
    // the server side's ring was full (lost before shield saw them).
    let mut sent = [legit_sent, 0, 0, 0];
    let mut wire_loss = 0;
    for (i, s) in Stream::ALL.into_iter().enumerate().skip(1) {
        let (tx, dropped) = lab.tx_counters(s.link())?;
        sent[i] = tx + dropped;
        wire_loss += dropped;
    }

    step(&format!("summary of {:.0} s", elapsed.as_secs_f64()));
    eprintln!(
        "   {:<18} {:<17} {:>11} {:>16} {:>9}",
        "traffic", "source", "sent", "reached server", "dropped"
    );
    for (i, s) in Stream::ALL.into_iter().enumerate() {
        let got = received.get(s);
        eprintln!(
            "   {:<18} {:<17} {:>11} {:>16} {:>9}",
            s.label(),
            s.source(),
            num(sent[i]),
            num(got),
            pct(sent[i].saturating_sub(got), sent[i])
        );
    }
    let drops: Vec<String> = shield
        .reasons("drop")
        .iter()
        .map(|(r, n)| format!("{r} {}", num(*n)))
        .collect();
    eprintln!(
        "\n   shield's own counters: dropped {} ({}); passed {}",
        num(shield.total("drop")),
        drops.join(", "),
        num(shield.total("pass"))
    );
    eprintln!("   autobans: {}", live.autobans());

    // The agent's counters against the receiver's: every attack packet sent
    // either reached the server, was dropped by shield, or was lost in the
    // veth (its ring full under the flood).
    let attack_sent: u64 = sent[1..].iter().sum();
    let attack_reached: u64 = [Stream::Flood, Stream::Spoofed, Stream::Feed]
        .iter()
        .map(|s| received.get(*s))
        .sum();
    let accounted = attack_reached + shield.total("drop") + wire_loss;
    let gap = attack_sent.abs_diff(accounted);
    eprintln!(
        "   check: attack packets sent {} = reached the server {} + dropped by shield {} + lost in the veth {} (off by {})",
        num(attack_sent),
        num(attack_reached),
        num(shield.total("drop")),
        num(wire_loss),
        num(gap)
    );
    let flood_sent = sent[1] + sent[2];
    let flood_dropped_xdp = shield.get("drop", "ratelimit")
        + shield.get("drop", "synlimit")
        + shield.get("drop", "banned");
    eprintln!(
        "\n\x1b[1m   legit client: {} delivered; floods: {} dropped at XDP; feed: {} dropped at XDP\x1b[0m",
        pct(received.get(Stream::Legit), sent[0]),
        pct(flood_dropped_xdp, flood_sent),
        pct(shield.get("drop", "feed"), sent[3]),
    );

    step("the autobans, and why the flooder is dropped now");
    ctl.show_head(&["ban", "list"], 6)?;
    ctl.show(&[
        "check",
        &lab::dotted(traffic::FLOODER),
        "--proto",
        "udp",
        "--port",
        "8080",
    ])?;

    if received.get(Stream::Legit) != sent[0] {
        bail!(
            "the legitimate client sent {} packets but the server received {}",
            sent[0],
            received.get(Stream::Legit)
        );
    }
    if received.get(Stream::Feed) != 0 {
        bail!(
            "{} packets from the feed-listed range reached the server",
            received.get(Stream::Feed)
        );
    }
    // 1 %: the raw-socket receiver may miss a few packets on a loaded host.
    if gap * 100 > attack_sent {
        bail!("shield's counters and the receiver disagree by {gap} packets (see the check above)");
    }
    Ok(())
}

fn wait_ready(lab: &mut Lab, ctl: &Ctl) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut up = false;
    while Instant::now() < deadline && !signals::stopped() {
        if let Some(status) = lab.agent.as_mut().and_then(|a| a.try_wait().ok().flatten()) {
            let log = fs::read_to_string(lab.dir.join("agent.log")).unwrap_or_default();
            bail!("shield-agent exited ({status}); its log:\n{log}");
        }
        if !up {
            up = ctl.up();
        }
        // The demo feed is read right after start; traffic waits for it.
        if up
            && let Ok(feeds) = ctl.json(&["feeds", "list"])
            && feeds
                .as_array()
                .and_then(|f| f.first())
                .and_then(|f| f.get("entries"))
                .and_then(serde_json::Value::as_u64)
                .is_some_and(|n| n > 0)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if signals::stopped() {
        bail!("interrupted");
    }
    let log = fs::read_to_string(lab.dir.join("agent.log")).unwrap_or_default();
    bail!("shield-agent was not ready with its feed within 30 s; its log:\n{log}")
}
