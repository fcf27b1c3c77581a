//! The XDP program's log of its rare paths (shield-ebpf/src/rare.rs),
//! against the real kernel: off by default at no cost, and when asked
//! for, a rare path's record reaches the reader. Needs root.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use shield_common::{maps::Ban, reason::Reason};
use shield_tests::{agent::AgentHome, harness::*, lab::Lab, packet::*};
use shield_user::{
    dataplane::{Dataplane, KernelLogLevel, LoadOptions},
    net::Cidr,
};

/// Every record the reader hands over, as "LEVEL message".
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl log::Log for Captured {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", r.level(), r.args()));
    }
    fn flush(&self) {}
}

fn translated_len(dp: &mut Dataplane) -> u32 {
    dp.program()
        .unwrap()
        .info()
        .unwrap()
        .size_translated()
        .expect("the kernel reports the program's translated size")
}

/// aya-log's level is read-only data set before the program is verified,
/// so with the log off the verifier removes every logging branch as dead
/// code: the program the kernel runs is shorter than the one loaded with
/// its log on, and no instruction of the log runs per packet.
#[test]
fn a_program_loaded_with_its_log_off_carries_no_logging_code() {
    let mut off = Dataplane::load(&LoadOptions::default()).unwrap();
    let mut info = Dataplane::load(&LoadOptions {
        kernel_log: Some(KernelLogLevel::Info),
        ..LoadOptions::default()
    })
    .unwrap();
    let mut on = Dataplane::load(&LoadOptions {
        kernel_log: Some(KernelLogLevel::Debug),
        ..LoadOptions::default()
    })
    .unwrap();
    let (off_len, info_len, on_len) = (
        translated_len(&mut off),
        translated_len(&mut info),
        translated_len(&mut on),
    );
    eprintln!("translated bytes: log off {off_len}, at info {info_len}, at debug {on_len}");
    assert_eq!(
        off_len, info_len,
        "the rare paths log at debug: info leaves them out as off does"
    );
    assert!(
        off_len < on_len,
        "translated bytes: log off {off_len}, log at debug {on_len}"
    );
    assert!(
        off.take_kernel_log(Captured::default()).unwrap().is_none(),
        "a program loaded with its log off has no log to read"
    );
}

/// Nine nested expired CIDR bans over one address: the program looks
/// below each (`BAN_TRIE_LOOKUPS` = 8 times) and gives up, a rare path.
/// With its log at debug, the record reaches the reader; with it off, the
/// walk behaves the same and there is no log to read.
#[test]
fn an_exhausted_ban_trie_walk_is_logged_only_when_asked() {
    for level in [None, Some(KernelLogLevel::Debug)] {
        let mut h = Harness::with_options(&LoadOptions {
            kernel_log: level,
            ..LoadOptions::default()
        });
        exhaust_the_ban_walk(&mut h.dp, "10.9.0.1".parse().unwrap());
        let (_, _, reason) = h.judge(&Pkt::udp("10.9.0.1", 9999).build());
        assert_ne!(reason, Reason::Banned, "every ban over it has expired");
        let captured = Captured::default();
        let reader = h.dp.take_kernel_log(captured.clone()).unwrap();
        let Some(mut reader) = reader else {
            assert!(level.is_none());
            continue;
        };
        reader.flush();
        let lines = captured.0.lock().unwrap().clone();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("DEBUG the ban trie walk met 8 expired prefixes")),
            "{lines:?}"
        );
    }
}

/// Nine nested expired CIDR bans over `src` (a /23 to a /31) in `dp`'s
/// ban trie: a packet from it walks the trie to its end.
fn exhaust_the_ban_walk(dp: &mut Dataplane, src: IpAddr) {
    let expired = Ban {
        expires_ns: 1,
        ..Ban::default()
    };
    for len in 23..=31 {
        dp.set_ban(Cidr::truncating(src, len), &expired).unwrap();
    }
}

/// End to end through the agent: started with `shield::kernel=debug` in
/// its log filter, it forwards the program's record of a rare path into
/// its own log under that target; started with the default filter, the
/// same path leaves no trace there.
#[test]
fn the_agent_forwards_the_programs_log_only_when_its_filter_asks() {
    for filter in ["info", "info,shield::kernel=debug"] {
        let lab = Lab::new();
        let home = AgentHome::new();
        home.write_config(&home.base_config(&lab));
        let agent = home.start(&lab, &["--log-level", filter, "--log-format", "json"]);
        let mut pinned = Dataplane::load(&LoadOptions {
            pin_dir: Some(home.pin_dir.clone()),
            ..LoadOptions::default()
        })
        .expect("open the pinned maps");
        exhaust_the_ban_walk(&mut pinned, lab.client_v4);
        let received = lab.udp_through(lab.server_v4, 7400, 5);
        assert_eq!(received, 5, "expired bans block nothing");
        let wanted = "the ban trie walk met 8 expired prefixes";
        if filter == "info" {
            let logs = agent.logs();
            assert!(!logs.contains("shield::kernel"), "{logs}");
            continue;
        }
        // The agent reads the log ring as it is written; the records of
        // five packets that have all arrived are already in the ring.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent.logs().contains(wanted) {
            assert!(
                Instant::now() < deadline,
                "no kernel record in 30 s:\n{}",
                agent.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs = agent.logs();
        let line = logs.lines().find(|l| l.contains(wanted)).unwrap();
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["target"], "shield::kernel", "{line}");
        assert_eq!(record["level"], "DEBUG", "{line}");
        assert_eq!(record["module"], "shield::lists", "{line}");
        assert!(
            logs.contains("the XDP program's log is forwarded as shield::kernel"),
            "{logs}"
        );
    }
}
