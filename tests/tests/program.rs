//! The XDP program under BPF_PROG_TEST_RUN: crafted frames against maps the
//! test fills. Needs root (CAP_BPF); `cargo xtask test` runs it.

use shield_common::{
    maps::*,
    reason::{Reason, Verdict},
};
use shield_tests::{harness::*, packet::*};

#[test]
fn loads_and_passes_clean_traffic() {
    let mut h = Harness::new();
    assert_eq!(h.judge(&Pkt::syn("198.51.100.1", 443).build()), (XDP_PASS, Verdict::Pass, Reason::Clean));
}
