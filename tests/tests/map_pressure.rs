//! Map pressure: floods of unique spoofed sources fill the LRU bucket map
//! (`BUCKETS`) through the real program (BPF_PROG_TEST_RUN). What must hold:
//! - established legitimate sources keep passing within their limits;
//! - memory is bounded: the map never holds more than its capacity;
//! - evictions are visible: `BUCKETS_CREATED` (exported by the agent as
//!   `shield_buckets_created_total`) minus the live entries;
//! - an evicted bucket comes back as a fresh, full bucket: eviction can
//!   forgive a rate-limited source one burst, never ban anyone.
//!
//! Needs root. Each test runs its own private maps.

use std::{net::IpAddr, time::Instant};

use shield_common::{
    gcra::{Gcra, NANOS_PER_SEC},
    maps::{BUCKET_CAPACITY, Limits, MAP_BUCKETS},
    reason::{Reason, Verdict},
};
use shield_tests::{harness::*, packet::*};
use shield_user::dataplane::LoadOptions;

/// A UDP frame whose IPv4 source the flood rewrites in place.
struct Spoofer {
    frame: Vec<u8>,
}

/// Offset of the IPv4 source address in an untagged frame.
const SRC_AT: usize = 14 + 12;

impl Spoofer {
    fn new() -> Spoofer {
        Spoofer {
            frame: Pkt::udp("100.64.0.0", 443).build(),
        }
    }

    /// The `i`-th spoofed source: unique for every `i` below 2^22, all in
    /// 100.64.0.0/10, which no legitimate source below uses.
    fn frame(&mut self, i: u32) -> &[u8] {
        let a = 0x6440_0000u32 | (i & 0x003f_ffff);
        self.frame[SRC_AT..SRC_AT + 4].copy_from_slice(&a.to_be_bytes());
        &self.frame
    }
}

fn limit(h: &mut Harness, per_sec: u64, per_ns: u64, burst: u64) {
    let l = Limits {
        packets: Gcra::new(per_sec, per_ns, burst),
        syns: Gcra::UNLIMITED,
    };
    h.dp.set_limits(0, 0, &l).unwrap();
}

fn live_buckets(h: &Harness) -> usize {
    h.dp.bucket_keys().unwrap().len()
}

#[test]
fn legitimate_sources_keep_passing_while_a_million_spoofed_sources_fill_the_map() {
    let mut h = Harness::new();
    // 10 000 packets/s with a burst of 100 per source. Every spoofed source
    // sends one packet and legitimate ones far below the rate: none of them
    // may ever be dropped.
    limit(&mut h, 10_000, NANOS_PER_SEC, 100);
    let legit: Vec<(&str, Vec<u8>)> = [
        "198.51.100.7",
        "198.51.100.8",
        "203.0.113.20",
        "192.0.2.33",
        "2001:db8:1:2::7",
        "2001:db8:9::1",
    ]
    .into_iter()
    .map(|s| (s, Pkt::tcp(s, 443, TCP_ACK).build()))
    .collect();
    // Established: each has a bucket before the flood starts.
    for (s, f) in &legit {
        assert_eq!(h.judge(f).2, Reason::Clean, "{s}");
    }

    let spoofed: u32 = 1 << 20; // 1 048 576, four times the map
    let every = 1024;
    let mut spoofer = Spoofer::new();
    let started = Instant::now();
    let mut legit_sent = legit.len() as u64;
    for i in 0..spoofed {
        let action = h.run(spoofer.frame(i));
        assert_eq!(action, XDP_PASS, "spoofed source {i} within its burst");
        if i % every == 0 {
            for (s, f) in &legit {
                assert_eq!(h.run(f), XDP_PASS, "{s} dropped after {i} spoofed sources");
                legit_sent += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();

    let c = h.dp.counters().unwrap();
    let total = u64::from(spoofed) + legit_sent;
    assert_eq!(c.packets(Verdict::Pass, Reason::Clean), total);
    assert_eq!(c.total_packets(), total, "nothing dropped");

    // Bounded: the map holds at most its capacity, however many sources.
    let live = live_buckets(&h);
    assert!(
        live as u64 <= u64::from(BUCKET_CAPACITY),
        "{live} buckets in a map of {BUCKET_CAPACITY}"
    );
    // Every source got a bucket once; all but the live ones were evicted.
    let created = h.dp.buckets_created().unwrap();
    let sources = u64::from(spoofed) + legit.len() as u64;
    assert_eq!(created, sources, "one bucket created per source");
    let evicted = created - live as u64;
    assert!(
        evicted >= sources - u64::from(BUCKET_CAPACITY),
        "{evicted} evicted of {created} created, {live} live"
    );
    // The LRU keeps the buckets of sources that keep sending.
    for (s, _) in &legit {
        let key = h.dp.bucket_key(s.parse::<IpAddr>().unwrap(), 0, 0).unwrap();
        assert!(
            h.dp.bucket(&key).unwrap().is_some(),
            "{s}'s bucket was evicted although it kept sending"
        );
    }
    eprintln!(
        "map pressure: {spoofed} spoofed sources + {legit_sent} legitimate packets in {secs:.1} s \
         ({:.0} frames/s); {created} buckets created, {live} live (capacity {BUCKET_CAPACITY}), \
         {evicted} evicted; no legitimate packet dropped",
        total as f64 / secs
    );
}

#[test]
fn an_evicted_bucket_is_a_fresh_bucket_never_a_ban() {
    // A small map so the flood that evicts is quick; the LRU behaves the
    // same at any size.
    let capacity = 65_536u32;
    let mut h = Harness::with_options(&LoadOptions {
        capacities: vec![(MAP_BUCKETS, capacity)],
        ..LoadOptions::default()
    });
    // One packet per hour, a burst of 5: a source over it stays over it for
    // the whole test, whatever the clock does.
    let burst = 5;
    limit(&mut h, 1, 3600 * NANOS_PER_SEC, burst);
    let src = "198.51.100.7";
    let frame = Pkt::udp(src, 53).build();
    let key = h.dp.bucket_key(src.parse().unwrap(), 0, 0).unwrap();

    let send_until_limited = |h: &mut Harness| {
        for n in 0..burst {
            assert_eq!(
                h.judge(&frame),
                (XDP_PASS, Verdict::Pass, Reason::Clean),
                "packet {n} of the burst"
            );
        }
        assert_eq!(
            h.judge(&frame),
            (XDP_DROP, Verdict::Drop, Reason::Ratelimit),
            "over the burst"
        );
    };
    send_until_limited(&mut h);
    let before = h.dp.bucket(&key).unwrap().expect("the source has a bucket");
    assert_eq!(before.drops, 1);

    // The source goes quiet while spoofed sources push its bucket out.
    let mut spoofer = Spoofer::new();
    for i in 0..4 * capacity {
        assert_eq!(h.run(spoofer.frame(i)), XDP_PASS);
    }
    assert!(
        h.dp.bucket(&key).unwrap().is_none(),
        "the quiet source's bucket should have been evicted"
    );
    assert!(live_buckets(&h) <= capacity as usize);

    // Back: a fresh bucket, so a full burst again and then the limit, as
    // for any new source. Eviction never makes a ban: bans live in their
    // own maps, which only the agent writes.
    send_until_limited(&mut h);
    let after = h.dp.bucket(&key).unwrap().expect("a new bucket");
    assert_eq!(after.drops, 1, "the drop count restarted with the bucket");
    assert!(h.dp.ban_entries().unwrap().is_empty());
    let c = h.dp.counters().unwrap();
    assert_eq!(c.packets(Verdict::Drop, Reason::Banned), 0);
    assert_eq!(c.packets(Verdict::Drop, Reason::Ratelimit), 2);
}
