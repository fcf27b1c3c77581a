//! Runs the real XDP program through BPF_PROG_TEST_RUN against maps the test
//! fills itself.

use aya::{TestRunOptions, programs::TestRun as _};
use shield_common::{
    gcra::{Gcra, NANOS_PER_SEC},
    maps::*,
    reason::{Reason, Verdict},
};
use shield_user::{
    dataplane::{Counters, Dataplane, LoadOptions},
    net::Cidr,
};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub struct Harness {
    pub dp: Dataplane,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A freshly loaded program with private, empty maps.
    pub fn new() -> Harness {
        Harness::with_options(&LoadOptions::default())
    }

    /// As [`Harness::new`], with map capacities overridden.
    pub fn with_options(opts: &LoadOptions) -> Harness {
        let dp = Dataplane::load(opts).expect("load the XDP program");
        Harness { dp }
    }

    /// Runs one frame and returns the XDP action.
    pub fn run(&mut self, frame: &[u8]) -> u32 {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        self.dp
            .program()
            .unwrap()
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN")
            .return_value
    }

    /// Runs one frame and returns (action, the one counter slot that moved).
    pub fn judge(&mut self, frame: &[u8]) -> (u32, Verdict, Reason) {
        let before = self.dp.counters().unwrap();
        let action = self.run(frame);
        let after = self.dp.counters().unwrap();
        let moved = moved(&before, &after);
        assert_eq!(
            moved.len(),
            1,
            "exactly one counter must move per packet, got {moved:?}"
        );
        let (v, r) = moved[0];
        let expect = if v == Verdict::Drop {
            XDP_DROP
        } else {
            XDP_PASS
        };
        assert_eq!(
            action, expect,
            "action {action} disagrees with counted verdict {v:?}/{r:?}"
        );
        let b = after.get(v, r).bytes - before.get(v, r).bytes;
        assert_eq!(b, frame.len() as u64, "bytes counted");
        (action, v, r)
    }

    pub fn set_flags(&mut self, flags: u32) {
        let mut c = self.dp.config().unwrap();
        c.flags = flags;
        self.dp.set_config(&c).unwrap();
    }

    pub fn allow(&mut self, net: &str) {
        let class = SourceClass {
            flags: SRC_ALLOWED,
            ..Default::default()
        };
        self.dp.set_source_class(cidr(net), &class).unwrap();
    }

    pub fn ban(&mut self, net: &str, expires_ns: u64) {
        self.dp
            .set_ban(cidr(net), &Ban::new(expires_ns, BAN_ORIGIN_MANUAL))
            .unwrap();
    }

    pub fn feed(&mut self, net: &str, feed_id: u32) {
        self.dp
            .set_feed_entry(cidr(net), &FeedEntry { feed_id })
            .unwrap();
    }

    /// Packet limit for (tier, class): `per_sec` with `burst`.
    pub fn packet_limit(&mut self, tier: u16, class: u16, per_sec: u64, burst: u64) {
        let l = Limits {
            packets: Gcra::new(per_sec, NANOS_PER_SEC, burst),
            syns: Gcra::UNLIMITED,
        };
        self.dp.set_limits(tier, class, &l).unwrap();
    }

    pub fn syn_limit(&mut self, tier: u16, class: u16, per_sec: u64, burst: u64) {
        let l = Limits {
            packets: Gcra::UNLIMITED,
            syns: Gcra::new(per_sec, NANOS_PER_SEC, burst),
        };
        self.dp.set_limits(tier, class, &l).unwrap();
    }
}

pub fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

/// The (verdict, reason) slots whose packet count changed.
pub fn moved(before: &Counters, after: &Counters) -> Vec<(Verdict, Reason)> {
    after
        .iter()
        .filter(|(v, r, c)| c.packets != before.get(*v, *r).packets)
        .map(|(v, r, _)| (v, r))
        .collect()
}
