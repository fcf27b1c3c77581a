//! Private shield instances (maps created for this process, nothing
//! attached) filled to a given size, and the probe frames they are judged
//! on.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use shield_common::{
    gcra::{Gcra, NANOS_PER_SEC},
    maps::*,
};
use shield_tests::packet::{Pkt, TCP_ACK};
use shield_user::{
    dataplane::{Dataplane, LoadOptions, bucket_key},
    net::Cidr,
};

/// Feed hosts count up from here (100.64.0.0/10): never a probe's source.
const HOST_BASE: u32 = 0x6440_0000;
/// Feed prefixes: prefix `i` sits alone in the 4096-address block
/// 44.0.0.0 + i × 4096, with a length from /20 to /28.
const NET_BASE: u32 = 0x2c00_0000;
/// Tracked sources count up from 10.0.0.0.
const SOURCE_BASE: u32 = 0x0a00_0000;
/// Sources in this /24 are in tier 1, limited to one packet per second.
pub const LIMITED_NET: &str = "198.51.100.0/24";
pub const ALLOWED_NET: &str = "203.0.113.0/24";
pub const BANNED_NET: &str = "198.18.0.0/15";

/// A feed of `size` entries shaped like real ones: nine in ten are /32
/// hosts (the exact hash map), one in ten a prefix (the LPM trie).
#[derive(Clone, Copy)]
pub struct Feed {
    pub hosts: u32,
    pub nets: u32,
}

impl Feed {
    pub fn mixed(size: u32) -> Feed {
        let nets = (size / 10).max(1);
        Feed {
            hosts: size - nets,
            nets,
        }
    }

    fn net(i: u32) -> Cidr {
        let len = 20 + (i % 9) as u8;
        Cidr::new(IpAddr::V4(Ipv4Addr::from(NET_BASE + (i << 12))), len).unwrap()
    }

    /// An address inside the last prefix: a lookup that misses the exact
    /// map and walks the trie to a match.
    pub fn net_hit(&self) -> Ipv4Addr {
        Ipv4Addr::from(NET_BASE + ((self.nets - 1) << 12) + 1)
    }

    /// The last host entry: found in the exact map.
    pub fn host_hit(&self) -> Ipv4Addr {
        Ipv4Addr::from(HOST_BASE + self.hosts - 1)
    }
}

/// The `i`-th tracked source.
pub fn source(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(SOURCE_BASE + i)
}

/// A shield instance with `feed` and `sources` tracked buckets, limits the
/// clean probe stays under, one allowlisted and one banned prefix, and the
/// one-packet-per-second tier of [`LIMITED_NET`]. Returns it with the
/// time the fill took.
pub fn instance(feed: Feed, sources: u32) -> (Dataplane, f64) {
    let t = Instant::now();
    let mut dp = Dataplane::load(&LoadOptions::default()).expect("load the XDP program");
    fill_feed(&mut dp, feed);
    add_sources(&mut dp, 0, sources);
    // Generous limits: the probe passes every check and is counted clean.
    dp.set_limits(
        0,
        0,
        &Limits {
            packets: Gcra::new(1_000_000_000, NANOS_PER_SEC, 1_000_000_000),
            syns: Gcra::new(1_000, NANOS_PER_SEC, 1_000),
        },
    )
    .unwrap();
    dp.set_limits(
        1,
        0,
        &Limits {
            packets: Gcra::new(1, NANOS_PER_SEC, 1),
            syns: Gcra::UNLIMITED,
        },
    )
    .unwrap();
    dp.set_source_class(
        LIMITED_NET.parse().unwrap(),
        &SourceClass {
            tier: 1,
            ..Default::default()
        },
    )
    .unwrap();
    dp.set_source_class(
        ALLOWED_NET.parse().unwrap(),
        &SourceClass {
            flags: SRC_ALLOWED,
            ..Default::default()
        },
    )
    .unwrap();
    dp.set_ban(BANNED_NET.parse().unwrap(), &Ban::new(BAN_FOREVER, 1))
        .unwrap();
    (dp, t.elapsed().as_secs_f64())
}

fn fill_feed(dp: &mut Dataplane, feed: Feed) {
    let e = FeedEntry { feed_id: 1 };
    let hosts: Vec<[u8; 4]> = (0..feed.hosts)
        .map(|i| Ipv4Addr::from(HOST_BASE + i).octets())
        .collect();
    dp.set_feed_hosts(&hosts, &e).expect("feed hosts");
    for i in 0..feed.nets {
        dp.set_feed_entry(Feed::net(i), &e).expect("feed prefix");
    }
}

/// Tracks sources `from..to` (one bucket each, as a live source has).
pub fn add_sources(dp: &mut Dataplane, from: u32, to: u32) {
    let mask = shield_common::addr::v6_mask(64);
    let b = Bucket {
        pkt_tat: 1,
        syn_tat: 1,
        last_event_ns: 0,
        drops: 0,
    };
    for i in from..to {
        dp.set_bucket(&bucket_key(IpAddr::V4(source(i)), 0, 0, &mask), &b)
            .expect("bucket");
    }
}

/// A veth pair that keeps programs attached (natively) while test runs
/// drive them; deleted, with the attachments, on drop.
///
/// Why: every BPF_PROG_TEST_RUN of an XDP program that is not attached
/// anywhere installs it in the kernel's XDP dispatcher and takes it out
/// again (`bpf_prog_change_xdp`), which patches kernel text: on these
/// loaded VMs about 25 ms per call. A test run with a million repeats
/// hides that (and the kernel's own timing excludes it), but single runs
/// and paced runs cannot. Attached, the program stays in the dispatcher.
pub struct Holder {
    dev: String,
}

impl Holder {
    /// Attaches `a` to one end of a new veth pair and `b` (if any) to the
    /// other.
    pub fn attach(tag: &str, a: &mut Xdp, b: Option<&mut Xdp>) -> Holder {
        let dev = format!("sh{tag}{}", std::process::id() % 100_000);
        let peer = format!("{dev}p");
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .expect("ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &dev])
            .output();
        ip(&["link", "add", &dev, "type", "veth", "peer", "name", &peer]);
        let h = Holder { dev };
        // No IPv6 link-local address, so no neighbour discovery or MLD
        // packet of the host's own ever reaches the programs' counters.
        for d in [&h.dev, &peer] {
            ip(&["link", "set", d, "addrgenmode", "none"]);
            ip(&["link", "set", d, "up"]);
        }
        a.attach(&h.dev, XdpMode::Driver)
            .expect("attach to the holder veth");
        if let Some(b) = b {
            b.attach(&peer, XdpMode::Driver)
                .expect("attach to the holder veth");
        }
        h
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.dev])
            .output();
    }
}

/// A TCP ACK to port 443 from `src`.
pub fn probe(src: &str) -> Vec<u8> {
    Pkt::tcp(src, 443, TCP_ACK).build()
}

/// Average ns per run of `prog` on `frame` over `repeat` runs, as the
/// kernel measures it (BPF_PROG_TEST_RUN through aya).
pub fn ns_per_packet(prog: &Xdp, frame: &[u8], repeat: u32) -> f64 {
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    r.duration.as_nanos() as f64
}

/// The program's verdict on one `frame` (XDP_DROP 1, XDP_PASS 2).
pub fn verdict(prog: &Xdp, frame: &[u8]) -> u32 {
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat: 1,
        ..Default::default()
    })
    .expect("BPF_PROG_TEST_RUN")
    .return_value
}
