//! The packet fuzzer: random and mutated frames through the real XDP
//! program (BPF_PROG_TEST_RUN) and through the host reference model
//! (`shield_common::model`), under random policies. Invariants:
//! - the program never returns XDP_ABORTED;
//! - every frame gets the model's action;
//! - the (verdict, reason) counters, packets and bytes, equal the model's
//!   after every batch, and add up to the frames sent;
//! - feed hits, live buckets, bucket creations and per-bucket drop counts
//!   equal the model's at the end of each round.
//!
//! Needs root. `SHIELD_PACKET_FUZZ_FRAMES` (default 200 000) and
//! `SHIELD_PACKET_FUZZ_SEED` change the budget and the seed; `cargo xtask
//! fuzz --packets N` runs a long one. `SHIELD_PACKET_FUZZ_EACH=1` compares
//! the counters after every frame, which pins a counter disagreement to
//! its frame.

use std::{collections::BTreeSet, time::Instant};

use shield_common::{
    maps::{BAN_FOREVER, BucketKey},
    model::{Model, frame},
    reason::{Reason, Verdict},
};
use shield_tests::{fuzzing::*, harness::*, packet::*};
use shield_user::clock::monotonic_ns;

/// Frames per policy: each round loads a fresh program with fresh maps.
const ROUND: usize = 20_000;
/// Counters are compared every this many frames.
const BATCH: usize = 512;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Tally {
    frames: u64,
    rounds: u64,
    by_reason: std::collections::BTreeMap<(Verdict, Reason), u64>,
}

/// Compares the program's counters with the model's.
fn same_counters(h: &Harness, m: &Model, context: &dyn Fn() -> String) {
    let got = h.dp.counters().unwrap();
    for (v, r, c) in got.iter() {
        let want = m.counters[shield_common::reason::counter_index(v, r) as usize];
        assert_eq!(
            (c.packets, c.bytes),
            (want.packets, want.bytes),
            "counter {v:?}/{r:?} (packets, bytes): kernel against model; {}",
            context()
        );
    }
}

/// One frame through both; panics on any disagreement in the action.
fn step(
    h: &mut Harness,
    m: &mut Model,
    f: &[u8],
    context: &dyn Fn() -> String,
) -> (Verdict, Reason) {
    let (v, r) = m.judge(f);
    let action = h.run(f);
    assert_ne!(action, XDP_ABORTED, "XDP_ABORTED; {}", context());
    let want = if v == Verdict::Drop {
        XDP_DROP
    } else {
        XDP_PASS
    };
    assert_eq!(
        action,
        want,
        "the model says {v:?}/{r:?} (parsed as {:?}); {}",
        frame::parse(f),
        context()
    );
    (v, r)
}

/// End-of-round state: feed hits and buckets.
fn same_state(h: &Harness, m: &Model, context: &dyn Fn() -> String) {
    for id in 1..=5 {
        assert_eq!(
            h.dp.feed_hits(id).unwrap(),
            m.feed_hits.get(&id).copied().unwrap_or(0),
            "hits of feed {id}; {}",
            context()
        );
    }
    let keys: BTreeSet<BucketKey> = h.dp.bucket_keys().unwrap().into_iter().collect();
    let want: BTreeSet<BucketKey> = m.buckets.keys().copied().collect();
    assert_eq!(keys, want, "live buckets; {}", context());
    assert_eq!(
        h.dp.buckets_created().unwrap(),
        m.buckets.len() as u64,
        "buckets created; {}",
        context()
    );
    for (k, b) in &m.buckets {
        let got = h.dp.bucket(k).unwrap().expect("listed above");
        assert_eq!(got.drops, b.drops, "drops of bucket {k:?}; {}", context());
    }
}

/// One policy's run: the program, the model and how far it got.
struct Round {
    seed: u64,
    round: u64,
    each: bool,
    h: Harness,
    m: Model,
    sent: usize,
}

impl Round {
    fn check(&mut self, f: &[u8], tally: &mut Tally) {
        let (seed, round, sent) = (self.seed, self.round, self.sent);
        let policy = &self.m.policy.clone();
        let ctx = || {
            format!(
                "seed {seed} round {round} frame {sent}: {}\npolicy: {policy:?}",
                hex(f)
            )
        };
        let vr = step(&mut self.h, &mut self.m, f, &ctx);
        *tally.by_reason.entry(vr).or_default() += 1;
        self.sent += 1;
        if self.each || self.sent.is_multiple_of(BATCH) {
            let ctx = || {
                format!(
                    "seed {seed} round {round}, within the {BATCH} frames up to frame {sent} \
                     (SHIELD_PACKET_FUZZ_EACH=1 finds the frame)"
                )
            };
            same_counters(&self.h, &self.m, &ctx);
        }
    }
}

fn run_round(seed: u64, round: u64, frames: usize, each: bool, tally: &mut Tally) {
    let mut rng = Rng::new(seed ^ round.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let pool = Pool::new(&mut rng);
    let policy = policy(&mut rng, &pool);
    let mut h = Harness::new();
    load(&mut h, &policy);
    let m = Model::new(policy, monotonic_ns());
    let mut r = Round {
        seed,
        round,
        each,
        h,
        m,
        sent: 0,
    };

    // A few frames cut at every length: the parser's bounds checks one by
    // one.
    for _ in 0..4 {
        let b = build(&mut rng, &pool);
        for cut in MIN_FRAME..=b.frame.len() {
            r.check(&b.frame[..cut], tally);
        }
    }
    while r.sent < frames {
        let f = frame(&mut rng, &pool);
        r.check(&f, tally);
    }
    let ctx = || format!("seed {seed} round {round}, end of round");
    same_counters(&r.h, &r.m, &ctx);
    assert_eq!(
        r.h.dp.counters().unwrap().total_packets(),
        r.sent as u64,
        "the counters add up to the frames sent; {}",
        ctx()
    );
    same_state(&r.h, &r.m, &ctx);
    tally.frames += r.sent as u64;
    tally.rounds += 1;
}

#[test]
fn the_program_agrees_with_the_model() {
    let total = env_u64("SHIELD_PACKET_FUZZ_FRAMES", 200_000);
    let seed = env_u64("SHIELD_PACKET_FUZZ_SEED", 0x5eed_0009);
    let each = std::env::var_os("SHIELD_PACKET_FUZZ_EACH").is_some();
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut round = 0;
    while tally.frames < total {
        let n = ROUND.min((total - tally.frames) as usize).max(1);
        run_round(seed, round, n, each, &mut tally);
        round += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "packet fuzz: seed {seed:#x}: {} frames in {} rounds (policies), {secs:.1} s, {:.0} frames/s; no disagreement",
        tally.frames,
        tally.rounds,
        tally.frames as f64 / secs
    );
    for ((v, r), n) in &tally.by_reason {
        eprintln!("  {:<10} {:<10} {n}", v.name(), r.name());
    }
    // A fuzzer whose frames never reach a step tests nothing there. Small
    // budgets (a few policies) may miss the rarer ones by chance.
    if total < 200_000 {
        return;
    }
    for r in Reason::ALL {
        let seen: u64 = tally
            .by_reason
            .iter()
            .filter(|((_, rr), _)| *rr == r)
            .map(|(_, n)| n)
            .sum();
        assert!(
            seen > 0,
            "no frame ended as {r:?}: the generator misses a step"
        );
    }
}

/// Frames the fuzzer found the program and the model disagreeing on, kept
/// as fixed cases: each must get the model's answer, through both.
#[test]
fn regressions() {
    shadowed_bans();
    let mut h = Harness::new();
    let mut m = Model::new(
        shield_common::model::Policy {
            ipv6_prefix: 64,
            ..Default::default()
        },
        monotonic_ns(),
    );
    let src = "2001:db8:1:2::7";
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        (
            "six extension headers, then UDP",
            (0..6)
                .fold(Pkt::udp(src, 53), |p, _| p.ext(Ext::DestOpts))
                .build(),
            Reason::Clean,
        ),
        (
            "a seventh extension header is past the bound, even a non-first fragment",
            (0..6)
                .fold(Pkt::udp(src, 53), |p, _| p.ext(Ext::DestOpts))
                .ext(Ext::Fragment {
                    offset: 100,
                    more: false,
                })
                .build(),
            Reason::Malformed,
        ),
        (
            "a non-first fragment header outside the payload (payload length 0)",
            {
                let mut f = Pkt::udp(src, 53)
                    .ext(Ext::Fragment {
                        offset: 100,
                        more: false,
                    })
                    .build();
                f[14 + 4] = 0;
                f[14 + 5] = 0;
                f
            },
            Reason::Malformed,
        ),
    ];
    for (what, f, want) in cases {
        let (v, r) = m.judge(&f);
        assert_eq!(r, want, "model: {what}");
        let (_, kv, kr) = h.judge(&f);
        assert_eq!((kv, kr), (v, r), "program: {what}");
    }
}

/// An expired CIDR ban must not hide an active broader one: the trie
/// answers with the longest match only, and that one has expired.
fn shadowed_bans() {
    let mut h = Harness::new();
    let mut p = shield_common::model::Policy {
        ipv6_prefix: 64,
        ..Default::default()
    };
    let bans = [
        ("203.0.113.0/24", BAN_FOREVER),
        ("203.0.113.0/26", 1),
        ("203.0.113.0/28", 1),
        ("2001:db8:aa00::/40", BAN_FOREVER),
        ("2001:db8:aa00::/48", 1),
    ];
    for (net, expires) in bans {
        h.ban(net, expires);
        let c = shield_tests::harness::cidr(net);
        p.bans.insert(shield_tests::fuzzing::net(&c), expires);
    }
    let mut m = Model::new(p, monotonic_ns());
    for src in ["203.0.113.1", "203.0.113.100", "2001:db8:aa00::1"] {
        let f = Pkt::udp(src, 53).build();
        assert_eq!(m.judge(&f).1, Reason::Banned, "model: {src}");
        assert_eq!(h.judge(&f).2, Reason::Banned, "program: {src}");
    }
    assert_eq!(
        h.judge(&Pkt::udp("203.0.114.1", 53).build()).2,
        Reason::Clean
    );
}
