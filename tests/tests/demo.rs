//! `cargo xtask demo`, run for real (short), and interrupted with Ctrl-C
//! (SIGINT to its process group, as a terminal sends it): both times it
//! must leave no namespace, pin or process behind.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use shield_tests::agent::binary;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What a demo may leave: namespaces, pin directories and processes that
/// carry its name.
fn demo_traces() -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for l in String::from_utf8_lossy(&netns.stdout).lines() {
        if l.starts_with("shield-demo-") {
            seen.insert(format!("netns {l}"));
        }
    }
    for e in fs::read_dir("/sys/fs/bpf").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("shield-demo-") {
            seen.insert(format!("pins {name}"));
        }
    }
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("shield-demo-") && !cmdline.contains("xtask") {
                seen.insert(format!(
                    "process {}: {cmdline}",
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    seen
}

fn demo(duration: &str) -> Command {
    let bins = binary("shield-agent").parent().unwrap().to_path_buf();
    let mut cmd = Command::new("cargo");
    cmd.args(["xtask", "demo", "--duration", duration, "--bin-dir"])
        .arg(bins)
        .current_dir(workspace())
        .stdin(Stdio::null());
    cmd
}

#[test]
fn the_demo_shows_the_drops_and_leaves_nothing_behind() {
    let before = demo_traces();
    let out = demo("6").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed ({}):\n{err}",
        out.status
    );
    for expected in [
        "t=  1s",
        "t=  6s",
        "legit client: 100.0% delivered",
        "feed: 100.0% dropped at XDP",
        "nothing left behind",
    ] {
        assert!(
            err.contains(expected),
            "no `{expected}` in the demo's output:\n{err}"
        );
    }
    // The flood was dropped by rate limiting, as the live view said.
    assert!(
        err.contains("ratelimit"),
        "no ratelimit drops shown:\n{err}"
    );
    let after = demo_traces();
    let left: Vec<&String> = after.difference(&before).collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}

#[test]
fn ctrl_c_stops_the_demo_and_cleans_up() {
    let before = demo_traces();
    let mut child = demo("60")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        // Its own process group, so the SIGINT below reaches cargo, xtask
        // and everything they started, like Ctrl-C in a terminal.
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Interrupt it in the middle of the attack.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the demo never reached its live view");
        if line.starts_with("t=  2s") {
            break;
        }
    }
    // SAFETY: kill(2) of the process group we created.
    unsafe { libc::kill(-pgid, libc::SIGINT) };
    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert!(
        !status.success(),
        "an interrupted demo must not report success:\n{err}"
    );
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("nothing left behind"), "{err}");
    let after = demo_traces();
    let left: Vec<&String> = after.difference(&before).collect();
    assert!(left.is_empty(), "the interrupted demo left {left:?}");
}
